"""All of ablate's W&B: one run per trial, started inside the trial, never a cost to a result;
the key's way to the trials; what an offline run already holds; the W&B Report.

Why ``wandb.init`` in the trial and not Ray's ``WandbLoggerCallback``: the callback runs one
logging actor per trial from the driver and, in Ray 2.60, crashed the whole Tuner (``KeyError`` in
``_signal_logging_actor_stop``) on a 4-trial offline grid on 2 CPUs; in the trial's own process a
W&B fault can only ever reach this module, which swallows it.  (Ray's ``setup_wandb`` is this
same ``wandb.init`` plus defaults read from the Tune context, which the trial passes itself.)

The API key comes only from the environment (``WANDB_API_KEY``) or ``wandb login`` on the machine
that runs the grid, and reaches the trials (on any node) in memory, with their parameters; it is
never put into a config, a file, a log line or a result.
"""

from __future__ import annotations

import atexit
import os
import warnings
from typing import Any, Dict, List, Optional

from requests.utils import get_netrc_auth

from ablate.run.wandb_log import logged_steps
from ablate.storage import RUN_PREFIX, is_uri
from ablate.study.records import loggable

__all__ = [
    "resolve_mode",
    "TrialRun",
    "start_trial_run",
    "start_runs",
    "finish_runs",
    "has_api_key",
    "driver_api_key",
    "trial_env",
]


def driver_api_key() -> Optional[str]:
    """The key of the machine that runs the grid: ``WANDB_API_KEY``, else ``wandb login``'s.

    ``wandb login`` keeps the key in the netrc file (``~/.netrc``, or ``$NETRC``) under the W&B
    host (``WANDB_BASE_URL``, default api.wandb.ai); read there with the netrc lookup wandb itself
    uses (requests'), not through ``wandb.api``, which wandb 0.31 deprecates.  Returned only to be
    handed to the trials in memory (``trial_env``); never printed or written.
    """
    if os.environ.get("WANDB_API_KEY"):
        return os.environ["WANDB_API_KEY"]
    try:
        auth = get_netrc_auth(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
        return auth[1] if auth and auth[1] else None
    except Exception:  # an unreadable netrc: no key
        return None


def has_api_key() -> bool:
    return bool(driver_api_key())


# What a trial needs of the driver's W&B environment.  Ray starts trial processes from the
# raylets of (possibly autoscaled) nodes, not from the driver, so these travel with the trial's
# parameters (in memory, never in a runtime env, whose agent logs its variables).
_FORWARDED = ("WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_INIT_TIMEOUT")


def trial_env(mode: str) -> Dict[str, str]:
    """Environment variables every trial process needs for W&B in ``mode``."""
    if mode != "online":
        return {}
    env = {k: os.environ[k] for k in _FORWARDED if os.environ.get(k)}
    key = driver_api_key()
    if key:
        env["WANDB_API_KEY"] = key
    return env


# W&B's own variable, as W&B reads it (``dryrun`` is its old word for offline, ``run`` for online).
_WANDB_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


def resolve_mode(mode: str) -> str:
    """The W&B mode of a run: the experiment's ``wandb.mode`` where it names one; for ``auto`` (the default),
    W&B's own ``WANDB_MODE`` where it is set (a user's ``WANDB_MODE=offline`` stays offline, key or not),
    else ``online`` where an API key is configured and ``offline`` where none is."""
    if mode != "auto":
        return mode
    env = _WANDB_MODES.get(os.environ.get("WANDB_MODE", "").strip().lower())
    if env:
        return env
    return "online" if has_api_key() else "offline"


class TrialRun:
    """A W&B run that never raises: the first failure warns once and turns logging off."""

    def __init__(self, run: Any = None, mode: str = "disabled") -> None:
        self.run, self.mode = run, mode
        self.logged: set = set()  # steps earlier processes of this (offline) run already wrote

    def _guard(self, what: str, fn) -> None:
        if self.run is None:
            return
        try:
            fn()
        except Exception as e:  # W&B must never cost a result
            warnings.warn(
                f"W&B {what} failed ({e.__class__.__name__}: {e}); training goes on without W&B", stacklevel=2
            )
            self.run = None

    def log(self, metrics: Dict[str, Any], step: int) -> None:
        self._guard("log", lambda: self.run.log(metrics, step=step))

    def log_once(self, metrics: Dict[str, Any], step: int) -> None:
        """Log ``step`` unless an earlier process of this run already wrote it."""
        if step not in self.logged:
            self.log(metrics, step=step)
            self.logged.add(step)

    def replay(self, history) -> None:
        """Log the epochs a restored checkpoint holds that this W&B run has not seen.

        A trial killed with SIGKILL loses what W&B had buffered (an offline run file can be
        left empty), while the checkpoint holds every finished epoch.  A resumed online run
        knows its last step (``run.step``); W&B drops steps below it, so only newer epochs go.
        Offline, the earlier processes' run files say which steps they hold (``logged``).
        """
        if self.run is None:
            return
        first = int(getattr(self.run, "step", 0) or 0)
        for h in history:
            if h["epoch"] >= first:
                self.log_once(h, step=h["epoch"])

    def finish(self, summary: Dict[str, Any]) -> None:
        def _fin():
            for k, v in summary.items():
                self.run.summary[k] = v
            self.run.finish()
            _OPEN.discard(id(self.run))

        self._guard("finish", _fin)


def finish_runs(runs: List[TrialRun], summaries: List[Dict[str, Any]]) -> None:
    """Finish a trial's runs (a fused group has one per member), then close W&B's service now, not
    in an atexit hook Ray may cut short."""
    for run, summary in zip(runs, summaries):
        run.finish(summary)
    if any(r.mode != "disabled" for r in runs):
        _quiet_teardown()


# Runs this process has open: a fused group's members share the W&B service, which a failed
# start must then not tear down under the others.
_OPEN: set = set()


def _quiet_teardown() -> None:
    try:
        import wandb  # loaded already where a run was started

        wandb.teardown()
    except Exception:  # the service is gone: nothing left to flush
        pass


def start_trial_run(
    config: Dict[str, Any],
    *,
    project: str,
    group: str,
    name: str,
    run_id: str,
    mode: str,
    directory: str,
    tags=(),
    entity: Optional[str] = None,
    init_timeout: float = 60.0,
) -> TrialRun:
    """Start (or resume, same ``run_id``) the trial's W&B run; fall back to offline, then to none."""
    if mode == "disabled":
        return TrialRun()
    import wandb  # ~1 s: only in a trial that logs (mode not disabled)

    attempts = [mode] if mode == "offline" else [mode, "offline"]
    for m in attempts:
        try:
            os.makedirs(directory, exist_ok=True)
            os.environ["WANDB_MODE"] = m  # no key needed offline
            os.environ.setdefault("WANDB_SILENT", "true")
            run = wandb.init(
                config=config,
                project=project,
                group=group,
                name=name,
                id=run_id,
                resume="allow",
                # create_new: a fused group's members have a run each, open at once, in one process.
                reinit="create_new",
                allow_val_change=True,
                job_type="trial",
                tags=list(tags),
                entity=entity,
                dir=directory,
                mode=m,
                settings=wandb.Settings(init_timeout=init_timeout, console="off", x_disable_stats=True),
            )
            # step = epoch: let W&B plot against "epoch" too.
            run.define_metric("*", step_metric="epoch")
            # Ours last, so it runs first at exit: when Tune stops a trial (Ctrl-C on the grid)
            # the W&B service may be gone already, and wandb's own exit hook would print a
            # traceback into the grid's output; this one tears down quietly and unhooks it.
            atexit.unregister(_quiet_teardown)
            atexit.register(_quiet_teardown)
            _OPEN.add(id(run))
            return TrialRun(run, m)
        except Exception as e:
            nxt = "falling back to offline" if m != attempts[-1] else "training goes on without W&B"
            warnings.warn(f"W&B init ({m}) failed ({e.__class__.__name__}: {str(e)[:200]}); {nxt}", stacklevel=2)
            if not _OPEN:  # the failed run still holds its id in the W&B service: start the next try clean
                _quiet_teardown()
    return TrialRun()


def start_runs(
    cfgs,
    member_ids: List[str],
    *,
    wandb: Dict[str, Any],
    experiment: str,
    git_commit: Optional[str],
    directory: str,
    histories: List[List[Dict[str, Any]]],
    written=(),
) -> List[TrialRun]:
    """A W&B run per member of a trial (``cfgs``: their ``TrainConfig``), each continued where earlier
    processes left it: the epochs on record (``histories``) logged again, but not those an offline run
    already holds in ``written`` (``(pyarrow filesystem, path)`` pairs: the directories this trial's
    earlier processes wrote)."""
    runs = [
        start_trial_run(
            {**cfg.to_dict(), "experiment": experiment, "git_commit": git_commit},
            project=wandb["project"],
            group=experiment,
            name=cfg.name,
            run_id=run_id,
            mode=wandb["mode"],
            directory=directory,
            tags=[cfg.block, f"d{cfg.depth}", cfg.dataset, *wandb.get("tags", [])],
            entity=wandb.get("entity"),
            init_timeout=wandb.get("init_timeout", 60.0),
        )
        for cfg, run_id in zip(cfgs, member_ids)
    ]
    for run, run_id, history in zip(runs, member_ids, histories):
        if not history:
            continue
        if run.mode == "offline":  # what this run's earlier processes already wrote (synced or local)
            run.logged = logged_steps(run_id, written)
        run.replay([loggable(h) for h in history])
    return runs


def sync_hint(exp_dir: str) -> str:
    """How to upload a grid's offline runs: they are in each trial's own directory of the experiment's storage."""
    where = f"<a download of {exp_dir}>" if is_uri(exp_dir) else exp_dir
    return f"W&B offline runs: upload with  wandb sync {where}/{RUN_PREFIX}*/*/wandb/offline-run-*"
