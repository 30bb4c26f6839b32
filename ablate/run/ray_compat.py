"""Ray's and Tune's internals that ablate relies on, fenced in one place (no public API does these jobs).

Each is pinned to the Ray versions ``pyproject.toml`` admits (``ray[tune]>=2.50,<2.61``, tested on ``TESTED``);
``tests/unit/run/test_vendor_seams.py`` checks every one against the installed Ray, so an upgrade that moves
one fails there, loudly, before a grid runs:

- **A trial's storage** (``trial_storage``): Tune's ``StorageContext`` of the running trial: the working
  directory Tune syncs to the experiment's storage (``sync_artifacts``), and the trial's directory there, with
  its pyarrow filesystem.  ``tune.get_context().get_trial_dir()`` is not it: in Ray 2.60 that is the driver's
  staging directory for an actor's first trial, which only a living driver syncs.
- **The autoscaler's node types** (``autoscaler_node_groups``): the cluster config the autoscaler reports to
  the GCS (what Ray Train and Data read for their own resource checks).
- **Tune's stop request** (``tune_stop_handoff``): while ``Tuner.fit`` runs, Tune stops gracefully on SIGUSR1
  (its trials stop at their next report) unless ``TUNE_DISABLE_SIGINT_HANDLER`` turns its SIGINT handler off.
- **Tune's checkpoint log line** (``STORAGE_LOGGER``): one "Checkpoint successfully created" per checkpoint.
- **A local Ray's idle workers** (``LOCAL_SYSTEM_CONFIG``): the raylet's ``prestart_worker_first_driver``, set
  through ``ray.init``'s ``_system_config`` (Ray's GCS exits on a key it does not know: a rename fails every
  local grid at its start, loudly).
- **Ray's stop of a worker** (``quiet_worker``): a worker's SIGTERM handler (``ray._private.worker``) raises
  ``SystemExit`` (a stopped trial, ``KeyboardInterrupt``); where it lands inside a finalizer (a weakref
  callback) or an exit hook (W&B's teardown), Python prints "Exception ignored in" with a traceback, which Ray
  forwards to the grid's terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Callable, Dict, List, NamedTuple, Optional

__all__ = [
    "TESTED",
    "STORAGE_LOGGER",
    "TrialStorage",
    "trial_storage",
    "quiet_checkpoint_logs",
    "quiet_worker",
    "LOCAL_SYSTEM_CONFIG",
    "autoscaler_node_groups",
    "tune_stop_handoff",
]

TESTED = "2.60.0"  # the Ray these seams were last checked on (tests/unit/run/test_vendor_seams.py)
STORAGE_LOGGER = "ray.train._internal.storage"
# A local Ray starts one idle worker per CPU when its first driver registers, for jobs without a runtime env; a
# grid's job has one (the workers' setup hook, users' block modules), so none of them ever runs a trial: on the
# 2-core machine 2 idle processes, ~1.7 CPU-s of every grid (measured 2026-12-08); on a 32-core workstation 32
# processes and their memory.  Workers start when a trial asks for one, as they do on a cluster.
LOCAL_SYSTEM_CONFIG = {"prestart_worker_first_driver": False}


class TrialStorage(NamedTuple):
    """Where a running Tune trial's files are: ``working_dir`` on this node (synced to the storage), and the
    trial's directory ``path`` in the experiment's storage, on the pyarrow filesystem ``fs``."""

    working_dir: str
    fs: object
    path: str


def trial_storage(ctx) -> TrialStorage:
    """The running trial's storage, from its ``tune.get_context()`` (Tune's ``StorageContext``)."""
    store = ctx.get_storage()
    return TrialStorage(store.trial_working_directory, store.storage_filesystem, store.trial_fs_path)


def quiet_checkpoint_logs() -> None:
    """One "Checkpoint successfully created" line per checkpoint per trial drowns the output; and each storage
    call that failed is logged with its traceback (a bucket that does not answer: one per retry, on every
    restore), which the trial's own error says once, after Tune's retries: neither reaches the terminal.  In
    every worker at its start (``quiet_worker``): a restore logs before the trial runs."""
    logging.getLogger(STORAGE_LOGGER).setLevel(logging.CRITICAL)


def _drop_a_stop_in_a_finalizer(unraisable) -> None:
    """``sys.unraisablehook`` of a Ray worker: Ray's stop (SIGTERM -> ``SystemExit``; Ctrl-C) raised inside a
    finalizer is the worker ending as asked, not an error to print; anything else goes to Python's hook."""
    if isinstance(unraisable.exc_value, (SystemExit, KeyboardInterrupt)):
        return
    sys.__unraisablehook__(unraisable)


def quiet_worker() -> None:
    """Every Ray worker's ``worker_process_setup_hook`` (``cluster.connect``), and each trial's start: Tune's
    checkpoint lines and storage tracebacks kept off the terminal (``quiet_checkpoint_logs``), and Ray's stop
    of the worker not printed as a traceback where it interrupts a finalizer (seen in CI: "Exception ignored
    in: <function WeakSet.__init__.<locals>._remove>" ... ``SystemExit: 1`` from Ray's ``sigterm_handler``,
    when Tune ended a failed trial's actor; and "in atexit callback" from W&B's teardown on Ctrl-C)."""
    quiet_checkpoint_logs()
    sys.unraisablehook = _drop_a_stop_in_a_finalizer


def autoscaler_node_groups() -> Optional[List[Dict[str, float]]]:
    """The resources of each node group the cluster's autoscaler reported to the GCS it can start (max_count
    not 0); None where no autoscaler reported any (or the record cannot be read)."""
    from ray._private.state import state  # here: the driver imports Ray only once it starts it

    try:
        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 -- no GCS record (a local Ray): the launcher's file is read instead
        return None
    if config is None or not config.node_group_configs:
        return None
    return [{k: float(v) for k, v in g.resources.items()} for g in config.node_group_configs if g.max_count != 0]


def tune_stop_handoff() -> Callable[[], bool]:
    """The driver's way to stop a running Tune gracefully on a signal: a callable that sends Tune its stop request
    and says whether Tune was listening.

    Tune's own SIGINT handler is turned off (the driver's handles SIGINT, SIGTERM and SIGHUP alike).  Tune leaves
    its SIGUSR1 handler installed after its run ends (Ray 2.60's ``tune.run`` never restores it), bound to that
    run's finished stop event: a signal before the next Tune run listens (an --until-resolved round being set up)
    would be handed to it, said to stop the trials, and the round would train to its end; so it is reset here.
    """
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    def handoff() -> bool:
        if not callable(signal.getsignal(signal.SIGUSR1)):  # Tune is not listening (yet, or any more)
            return False
        os.kill(os.getpid(), signal.SIGUSR1)
        return True

    return handoff
