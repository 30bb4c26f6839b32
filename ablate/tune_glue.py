"""All of ablate's Ray Tune: the trial function, and one Tune run over a list of trials.

The trial follows the Ray Tune function-API pattern: ``param_space`` holds only what is searched
(which trial), the constants ride in ``tune.with_parameters`` (the trials' members, settings,
metadata, data); build, restore from a checkpoint, loop epochs (``ablate.fused.train_group``),
``tune.report(metrics, checkpoint=...)``.  Every trial is a group of one or more members (grid
points that train together).  Tune schedules, retries (``FailureConfig``), syncs artifacts and
stores checkpoints; what finished is in each trial's own record (``ablate.records``), never in
Tune's experiment state, which ablate does not read back.
"""
from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional

from . import storage
from .blocks import import_block_modules
from .config import ExperimentConfig
from .data import Dataset
from .fused import build_group, train_group
from .records import RUN_KEYS, loggable, make_record, write_checkpoint, write_stopped
from .results import summarise_history
from .storage import RECORD_FILE, STATE_FILE, filesystem
from .study import Trial
from .tracking import finish_runs, logged_steps, start_trial_run
from .train import TrainConfig

__all__ = ["run_trial", "run_grid", "load_state", "CheckpointLost"]


class CheckpointLost(Exception):
    """A checkpoint that is gone or unreadable (not a refused one)."""


def load_state(path: str) -> Dict[str, Any]:
    """A trial's trainer state: tensors, numbers, strings, lists and dicts only (never code).

    ``weights_only=True`` refuses any other pickled object, so a tampered ``state.pt`` cannot
    run code on resume: that is an error naming the path.  A missing or truncated file is
    ``CheckpointLost``.
    """
    import pickle

    import torch

    def first_line(e: BaseException) -> str:
        return (str(e).splitlines() or [""])[0][:160]

    if not os.path.isfile(path):
        raise CheckpointLost(f"checkpoint {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RuntimeError(f"checkpoint {path} holds objects other than tensors and plain values; refused "
                           f"(storage is trusted: see README). {first_line(e)}") from None
    except (EOFError, RuntimeError, OSError) as e:
        raise CheckpointLost(f"checkpoint {path} is unreadable ({e.__class__.__name__}: {first_line(e)})") from None


def _restore(candidates) -> tuple:
    """(state, record) of the first candidate checkpoint that loads, newest first; (None, None) if none."""
    import json

    for checkpoint in candidates:
        try:
            with checkpoint.as_directory() as d:
                with open(os.path.join(d, RECORD_FILE)) as f:
                    record = json.load(f)
                return load_state(os.path.join(d, STATE_FILE)), record
        except (CheckpointLost, OSError, ValueError) as e:  # cut short or deleted: an older one may be whole
            warnings.warn(f"{str(e)[:200]}; trying an older checkpoint, else the trial starts again from epoch 1")
    return None, None


def _summary(metrics: List[Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    """What Tune sees of a trial's epoch (its table, ASHA, the progress line): a member's metrics, or
    the members' mean, and the node and time of the epoch."""
    live = [m for m in metrics if m is not None]
    return {"epoch": max(m["epoch"] for m in live), "val_acc": statistics.fmean(m["val_acc"] for m in live),
            "train_loss": statistics.fmean(m["train_loss"] for m in live),
            "diverged": sum(bool(m["diverged"]) for m in live), "members": len(metrics),
            **{k: live[0][k] for k in RUN_KEYS if k in live[0]}}


def run_trial(config: Dict[str, Any], trials: Dict[str, Trial], settings: Dict[str, Any], meta: Dict[str, Any],
              data: Optional[Dataset] = None, env: Optional[Dict[str, str]] = None) -> None:
    """One Tune trial: its members (one grid point, or a fused group), continued from the newest
    checkpoint that loads (Tune's own after a retry, else the study's, whichever run wrote it).

    A trial whose record says done reports its history again and returns: no training, no W&B
    writes, so whatever makes Tune start a trial again costs a process start, never an epoch.
    ``env`` (the driver's W&B key and server) arrives in memory, with the parameters: not as a
    runtime-env variable, which Ray's runtime-env agent writes to its log in plain text.
    """
    os.environ.update(env or {})
    import_block_modules(meta["block_modules"])  # a user's blocks, shipped by py_modules
    import ray
    from ray import tune

    # One "Checkpoint successfully created" line per checkpoint per trial drowns the output.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    trial = trials[config["trial"]]
    cfgs = [TrainConfig.of_point(settings, m["point"]) for m in trial.members]  # a swept setting is the point's
    own = tune.get_checkpoint()
    state, record = _restore([c for c in [own] if c is not None] + [tune.Checkpoint(p) for p in trial.checkpoints])
    histories = [m["history"] for m in record["members"]] if record else [[] for _ in cfgs]
    if record and all(m["done"] for m in record["members"]):
        for epoch in range(max(len(h) for h in histories)):
            tune.report(_summary([h[epoch] if epoch < len(h) else None for h in histories]))
        return
    group = build_group(cfgs, data, state, histories)
    ctx = tune.get_context()
    store = ctx.get_storage()
    # The directory Tune syncs to the experiment's storage (sync_artifacts), so an offline run outlives
    # the (autoscaled) worker that wrote it.  Not ctx.get_trial_dir(): in Ray 2.60 that is the driver's
    # staging directory for an actor's first trial (which only a living driver syncs) and this one after.
    workdir = store.trial_working_directory
    wb = meta["wandb"]
    runs = [start_trial_run(
        {**cfg.to_dict(), "experiment": meta["experiment"], "git_commit": meta.get("git_commit")},
        project=wb["project"], group=meta["experiment"], name=cfg.name, run_id=m["id"], mode=wb["mode"],
        directory=workdir, tags=[cfg.block, f"d{cfg.depth}", cfg.dataset, *wb.get("tags", [])],
        entity=wb.get("entity"), init_timeout=wb.get("init_timeout", 60.0),
    ) for cfg, m in zip(cfgs, trial.members)]
    if state is not None:
        import pyarrow.fs as pafs

        # this trial's directory (local, and in the storage), and its earlier ones
        where = [(pafs.LocalFileSystem(), workdir), (store.storage_filesystem, store.trial_fs_path),
                 *map(filesystem, trial.dirs)]
        for run, m, history in zip(runs, trial.members, group.histories):
            if run.mode == "offline":  # what this run's earlier processes already wrote (synced or local)
                run.logged = logged_steps(m["id"], where)
            run.replay([loggable(h) for h in history])
    # Which node ran each epoch (history.csv): the whole id, since ids can share long prefixes.
    node = ray.get_runtime_context().get_node_id()
    epochs, last = cfgs[0].epochs, time.monotonic()
    # ASHA may stop a trial after any epoch: each epoch is then on record.
    period = 0.0 if meta["scheduler"] == "asha" else meta["checkpoint_period_s"]

    def on_epoch(metrics: List[Optional[Dict[str, Any]]], get_state) -> None:
        nonlocal last
        now = time.time()
        for m in metrics:
            if m is not None:
                m.update(node=node, time=now)  # the same dict the member's history holds
        done = group.done(epochs)
        # A checkpoint every `checkpoint_period_s` of training and at the end, not every epoch: each
        # one is an upload.  A restore repeats at most that much training, never an epoch on record.
        if all(done) or time.monotonic() - last >= period:
            with tempfile.TemporaryDirectory() as d:
                write_checkpoint(d, get_state(), make_record(meta["experiment_id"], trial.name, trial.members,
                                                             group.histories, done))
                tune.report(_summary(metrics), checkpoint=tune.Checkpoint.from_directory(d))
            _prune(ctx, meta["checkpoints_to_keep"])
            last = time.monotonic()
        else:
            tune.report(_summary(metrics))
        for run, m in zip(runs, metrics):
            if m is not None:
                run.log_once(loggable(m), step=m["epoch"])

    outs = train_group(group, on_epoch)
    finish_runs(runs, [summarise_history(out["history"], meta["target_acc"]) for out in outs])


def _prune(ctx, keep: int) -> None:
    """Keep this trial's newest ``keep`` checkpoints (each newer one is whole once Tune's report returns).

    ablate prunes rather than Tune's ``num_to_keep``, which snapshots Tune's whole experiment state
    at every checkpoint (a warning a minute on a grid of short trials) to keep that state in step:
    ablate never reads that state back.
    """
    import pyarrow.fs as pafs

    store = ctx.get_storage()
    fs, path = store.storage_filesystem, store.trial_fs_path
    try:
        names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
                       if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
        for name in names[:-keep]:
            fs.delete_dir(f"{path}/{name}")
    except OSError as e:  # an old checkpoint left behind costs space, never a result
        warnings.warn(f"could not remove an old checkpoint ({e.__class__.__name__}: {str(e)[:160]})")


def _progress_callback(progress):
    """Tune's trial events, fed to the progress line (``ablate.progress``)."""
    from ray import tune

    class ProgressCallback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            progress.start(trial.config["trial"])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.result(trial.config["trial"], result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.complete(trial.config["trial"])

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.error(trial.config["trial"])

        def on_step_end(self, iteration, trials, **info):
            progress.tick()

        def on_experiment_end(self, trials, **info):
            progress.close()

    return ProgressCallback()


def _trial_dirname(t) -> str:
    """A Tune trial's directory in the run: the ablate trial's name, then Tune's id (unique per run)."""
    return f"{t.config['trial']}_{t.trial_id}"


def _asha(cfg: ExperimentConfig, run_dir: str, trials: Dict[str, Trial], experiment_id: str):
    """Tune's ASHA, which also writes down each trial it stops before its last epoch.

    The trial cannot record that itself (Tune ends it at its next report, or ends its process), and
    without a note a later ``--resume`` would take a stopped trial for an interrupted one and
    train it to the end.
    """
    from ray.tune.schedulers import ASHAScheduler

    class RecordingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            epoch = result.get("epoch", cfg.epochs)
            if action == self.STOP and epoch < cfg.epochs:
                name = trial.config["trial"]
                try:
                    write_stopped(storage.join(run_dir, _trial_dirname(trial)), experiment_id, name,
                                  [m["id"] for m in trials[name].members], epoch)
                except OSError as e:  # never fail the scheduler: the trial would only continue on --resume
                    warnings.warn(f"could not record that ASHA stopped {name} ({e.__class__.__name__}: "
                                  f"{str(e)[:160]}); a --resume will continue it")
            return action

    return RecordingASHA(time_attr="epoch", metric="val_acc", mode="max", max_t=cfg.epochs,
                         grace_period=cfg.asha_grace_period, reduction_factor=cfg.asha_reduction_factor)


def run_grid(cfg: ExperimentConfig, exp_dir: str, part: str, trials: List[Trial], *, resources: Dict[str, float],
             meta: Dict[str, Any], env: Optional[Dict[str, str]], data: Dataset, progress=None,
             verbose: bool = False) -> set:
    """Train ``trials`` as one Tune run, ``<exp_dir>/<part>``, on the Ray that ``cluster.connect`` joined.

    Returns the names of the trials that ended in an error (after ``max_failures`` retries).  What
    every trial trained is in its records.  ``progress`` (``ablate.progress.Progress``) gets every
    trial's events; ``verbose`` shows Tune's own status table as well.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table (--verbose) honours our columns
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler

    # device=cpu with a GPU fraction is allowed: it schedules like a GPU trial (tests fake GPUs).
    device = cfg.device if cfg.device != "auto" else ("cuda" if resources["gpu"] > 0 else "cpu")
    settings = {**cfg.train_settings(), "threads": cfg.threads or max(1, int(cfg.cpus_per_trial)), "device": device}
    meta = {**meta, "experiment": cfg.name, "target_acc": cfg.target_acc, "scheduler": cfg.scheduler,
            "checkpoint_period_s": cfg.checkpoint_period_s, "checkpoints_to_keep": cfg.checkpoints_to_keep,
            "block_modules": list(cfg.block_modules)}
    # Trials run in processes of other (autoscaled) nodes, which never see the driver's
    # environment: what W&B needs of it travels with the data.
    by_name = {t.name: t for t in trials}
    trainable = tune.with_resources(tune.with_parameters(run_trial, trials=by_name,
                                                         settings=settings, meta=meta, data=data, env=env or {}),
                                    resources)
    scheduler = (_asha(cfg, storage.join(exp_dir, part), by_name, meta["experiment_id"])
                 if cfg.scheduler == "asha" else FIFOScheduler())
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search([t.name for t in trials])},
        tune_config=tune.TuneConfig(
            scheduler=scheduler, max_concurrent_trials=cfg.max_concurrent_trials or None,
            trial_name_creator=lambda t: t.config["trial"],
            trial_dirname_creator=_trial_dirname,
            # Reuse trial processes: a new one per trial (Python + torch + Ray imports) cost
            # more than a digits trial's whole training (docs/benchmarks.md).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=part, storage_path=exp_dir, callbacks=[_progress_callback(progress)] if progress else [],
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            # Each trial's directory (its W&B offline run) goes to the experiment's storage.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            progress_reporter=tune.CLIReporter(parameter_columns=["trial"], metric_columns=["epoch", "val_acc",
                                                                                          "train_loss"],
                                               max_report_frequency=30, sort_by_metric=False),
            verbose=1 if verbose else 0,
        ),
    )
    return {r.config["trial"] for r in tuner.fit() if r.error is not None and r.config}
