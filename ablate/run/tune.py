"""All of ablate's Ray Tune: the function a Tune trial runs, one Tune run over a list of groups.

Words: ablate's *trial* is one grid point; what Tune calls a trial trains one *group* (``ablate.study.Group``:
one grid point, or several fused).  ``run_group`` follows Ray Tune's function-API example
(``custom_func_checkpointing.py``): ``param_space`` holds only what is searched (which group), the constants ride
in ``tune.with_parameters`` (the groups, ``GroupConstants``, the data); restore from a checkpoint, build, loop
epochs (``ablate.train.train_group``), ``tune.report(metrics, checkpoint=...)``.  Tune schedules, retries
(``FailureConfig``), syncs artifacts and stores checkpoints; what finished is in each group's own record
(``ablate.study.records``), never in Tune's experiment state, which ablate does not read back.  The few Tune
internals this needs are in ``ablate.run.ray_compat``.

Imported only once a grid trains (the driver's ``_train``, and each Tune trial's process): Ray and torch at the
top here cost nothing earlier.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from ablate import storage
from ablate.models.registry import import_block_modules
from ablate.run.checkpoints import CheckpointLost, read_checkpoint, write_checkpoint
from ablate.run.ray_compat import quiet_worker, trial_storage, tune_stop_handoff
from ablate.run.tracking import finish_runs, start_runs
from ablate.spec.config import ExperimentConfig
from ablate.spec.trial import TrainConfig
from ablate.study.identity import git_commit
from ablate.study.records import RUN_KEYS, loggable, make_record, write_stopped
from ablate.study.study import Group
from ablate.study.tables import summarise_history
from ablate.train.data import Dataset
from ablate.train.loop import build_group, train_group

__all__ = ["run_group", "run_grid", "GroupConstants", "stop_handoff", "GROUP_KEY"]

GROUP_KEY = "group"  # the one key of a Tune trial's config (param_space): which group it trains


@dataclass(frozen=True)
class GroupConstants:
    """What every group of one Tune run shares, built once (``run_grid``) from the experiment."""

    experiment_name: str  # the experiment's name: the W&B group
    experiment_id: str  # its id: every record names it
    settings: Dict[str, Any]  # the training settings every point shares (a point's own values go on top)
    block_modules: Tuple[str, ...]  # a user's block modules, imported in every Tune trial's process
    wandb: Dict[str, Any]  # the experiment's W&B settings, with the mode resolved
    git_commit: Optional[str]
    target_acc: float
    checkpoint_period_s: float  # 0 under ASHA, which may stop a group after any epoch
    checkpoints_to_keep: int
    digits: Dict[str, int]  # each axis's digits in a W&B run's name (ablate.spec.axes.label_digits)

    @classmethod
    def of(cls, cfg: ExperimentConfig, experiment_id: str, wandb_mode: str, device: str) -> "GroupConstants":
        settings = {**cfg.train_settings(), "threads": cfg.threads or max(1, int(cfg.cpus_per_trial)), "device": device}
        return cls(
            cfg.name,
            experiment_id,
            settings,
            tuple(cfg.block_modules),
            {**cfg.wandb.model_dump(), "mode": wandb_mode},
            git_commit(),
            cfg.target_acc,
            0.0 if cfg.scheduler == "asha" else cfg.checkpoint_period_s,
            cfg.checkpoints_to_keep,
            cfg.digits(),
        )


def run_group(
    config: Dict[str, Any],
    groups: Dict[str, Group],
    const: GroupConstants,
    data: Optional[Dataset] = None,
    env: Optional[Dict[str, str]] = None,
) -> None:
    """What one Tune trial runs: one group of grid points, continued from the newest checkpoint that loads
    (Tune's own after a retry, else the study's, whichever run wrote it).

    A group whose record says done reports its history again and returns: no training, no W&B writes.
    ``env`` (the driver's W&B key and server) arrives in memory, with the parameters: not as a
    runtime-env variable, which Ray's runtime-env agent writes to its log in plain text.
    """
    os.environ.update(env or {})
    import_block_modules(const.block_modules)  # a user's blocks, shipped by py_modules
    group = groups[config[GROUP_KEY]]
    own = tune.get_checkpoint()
    state, record = _restore(([own] if own else []) + [tune.Checkpoint(p) for p in group.checkpoints])
    histories = [m["history"] for m in record["members"]] if record else [[] for _ in group.members]
    if record and all(m["done"] for m in record["members"]):
        return _report_again(histories)
    # A swept setting is the point's own (its epochs too: every member of a group has the same).
    cfgs = [TrainConfig.of_point(const.settings, m["point"], digits=const.digits) for m in group.members]
    members = build_group(cfgs, data, state, histories)
    epochs = _Epochs(const, group, members)
    outs = train_group(members, epochs)
    finish_runs(epochs.runs, [summarise_history(out["history"], const.target_acc) for out in outs])


def _restore(candidates) -> tuple:
    """(state, record) of the first candidate checkpoint that loads, newest first; (None, None) if none."""
    for checkpoint in candidates:
        try:
            with checkpoint.as_directory() as d:
                return read_checkpoint(d)
        except (CheckpointLost, OSError, ValueError) as e:  # cut short or deleted: an older one may be whole
            warnings.warn(
                f"{str(e)[:200]}; trying an older checkpoint, else the trial starts again from epoch 1", stacklevel=2
            )
    return None, None


def _report_again(histories: List[List[Dict[str, Any]]]) -> None:
    """A finished group's epochs, reported to Tune again (whatever made Tune start it costs no epoch)."""
    for epoch in range(max(len(h) for h in histories)):
        tune.report(_summary([h[epoch] if epoch < len(h) else None for h in histories]))


def _summary(metrics: List[Optional[Dict[str, Any]]]) -> Dict[str, Any]:
    """What Tune sees of a group's epoch (its table, ASHA, the progress line): a member's metrics, or
    the members' mean, and the node and time of the epoch."""
    live = [m for m in metrics if m is not None]
    return {
        "epoch": max(m["epoch"] for m in live),
        "val_acc": statistics.fmean(m["val_acc"] for m in live),
        "train_loss": statistics.fmean(m["train_loss"] for m in live),
        "diverged": sum(bool(m["diverged"]) for m in live),
        "members": len(metrics),
        **{k: live[0][k] for k in RUN_KEYS if k in live[0]},
    }


class _Epochs:
    """The trial's ``on_epoch``: each epoch to Tune (with a checkpoint every ``checkpoint_period_s`` of
    training and at the end) and to each member's W&B run, which it starts where earlier processes left it."""

    def __init__(self, const: GroupConstants, group: Group, members) -> None:
        quiet_worker()
        self.const, self.group, self.members = const, group, members
        # The directory Tune syncs to the experiment's storage (sync_artifacts), so an offline run outlives
        # the (autoscaled) worker that wrote it.
        self.store = trial_storage(tune.get_context())
        workdir = self.store.working_dir
        # This group's directories and its earlier ones: read only to continue a restored group's runs.
        written = (
            [(storage.local_fs(), workdir), (self.store.fs, self.store.path), *map(storage.filesystem, group.dirs)]
            if any(members.histories)
            else []
        )
        self.runs = start_runs(
            members.cfgs,
            [m["id"] for m in group.members],
            wandb=const.wandb,
            experiment=const.experiment_name,
            git_commit=const.git_commit,
            directory=workdir,
            histories=members.histories,
            written=written,
        )
        # Which node ran each epoch (history.csv): the whole id, since ids can share long prefixes.
        self.node = ray.get_runtime_context().get_node_id()
        self.last = time.monotonic()

    def __call__(self, metrics: List[Optional[Dict[str, Any]]], get_state) -> None:
        now = time.time()
        for m in metrics:
            if m is not None:
                m.update(node=self.node, time=now)  # the same dict the member's history holds
        done = self.members.done(self.members.cfgs[0].epochs)
        # A checkpoint every `checkpoint_period_s` of training and at the end, not every epoch: each
        # one is an upload.  A restore repeats at most that much training, never an epoch on record.
        if all(done) or time.monotonic() - self.last >= self.const.checkpoint_period_s:
            with tempfile.TemporaryDirectory() as d:
                write_checkpoint(
                    d,
                    get_state(),
                    make_record(
                        self.const.experiment_id, self.group.name, self.group.members, self.members.histories, done
                    ),
                )
                tune.report(_summary(metrics), checkpoint=tune.Checkpoint.from_directory(d))
            _prune(self.store, self.const.checkpoints_to_keep)
            self.last = time.monotonic()
        else:
            tune.report(_summary(metrics))
        for run, m in zip(self.runs, metrics):
            if m is not None:
                run.log_once(loggable(m), step=m["epoch"])


def _prune(store, keep: int) -> None:
    """Keep this group's newest ``keep`` checkpoints (each newer one is whole once Tune's report returns).

    ablate prunes rather than Tune's ``num_to_keep``, which snapshots Tune's whole experiment state
    at every checkpoint (a warning a minute on a grid of short trials) to keep that state in step:
    ablate never reads that state back.
    """
    try:
        names = sorted(
            e.base_name
            for e in storage.entries(store.fs, store.path, recursive=False)
            if e.is_dir and e.base_name.startswith("checkpoint_")
        )
        for name in names[:-keep]:
            storage.delete_dir(store.fs, f"{store.path}/{name}")
    except OSError as e:  # an old checkpoint left behind costs space, never a result
        warnings.warn(f"could not remove an old checkpoint ({e.__class__.__name__}: {str(e)[:160]})", stacklevel=2)


def _progress_callback(progress):
    """Tune's trial events (each trains a group), fed to the progress line (``ablate.run.progress``)."""

    class ProgressCallback(tune.Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            progress.start(trial.config[GROUP_KEY])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.result(trial.config[GROUP_KEY], result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.complete(trial.config[GROUP_KEY])

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.error(trial.config[GROUP_KEY])

        def on_step_end(self, iteration, trials, **info):
            progress.tick()

        def on_experiment_end(self, trials, **info):
            progress.close()

    return ProgressCallback()


def _group_dirname(t) -> str:
    """A Tune trial's directory in the run: its group's name, then Tune's id (unique per run)."""
    return f"{t.config[GROUP_KEY]}_{t.trial_id}"


def _asha(cfg: ExperimentConfig, run_dir: str, groups: Dict[str, Group], experiment_id: str):
    """Tune's ASHA, which also writes down each group it stops before its last epoch.

    The group cannot record that itself (Tune ends it at its next report, or ends its process), and
    without a note a later ``--resume`` would take a stopped group for an interrupted one and
    train it to the end.
    """

    class RecordingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            name = trial.config[GROUP_KEY]
            epochs = groups[name].epochs(cfg.epochs)  # the group's own (a swept epochs)
            if action == self.STOP and result.get("epoch", epochs) < epochs:
                epoch = result["epoch"]
                try:
                    write_stopped(
                        storage.join(run_dir, _group_dirname(trial)),
                        experiment_id,
                        name,
                        [m["id"] for m in groups[name].members],
                        epoch,
                    )
                except OSError as e:  # never fail the scheduler: the trial would only continue on --resume
                    warnings.warn(
                        f"could not record that ASHA stopped {name} ({e.__class__.__name__}: "
                        f"{str(e)[:160]}); a --resume will continue it",
                        stacklevel=2,
                    )
            return action

    return RecordingASHA(
        time_attr="epoch",
        metric="val_acc",
        mode="max",
        max_t=max(g.epochs(cfg.epochs) for g in groups.values()),
        grace_period=cfg.asha_grace_period,
        reduction_factor=cfg.asha_reduction_factor,
    )


def stop_handoff() -> Callable[[], bool]:
    """The driver's way to stop a running Tune gracefully on a signal (``ablate.run.signals``): Tune's own stop
    request (``ablate.run.ray_compat.tune_stop_handoff``); the callable says whether Tune took it."""
    return tune_stop_handoff()


def run_grid(
    cfg: ExperimentConfig,
    exp_dir: str,
    run_name: str,
    groups: List[Group],
    *,
    experiment_id: str,
    wandb_mode: str,
    resources: Dict[str, float],
    env: Optional[Dict[str, str]],
    data: Dataset,
    progress=None,
    verbose: bool = False,
) -> Dict[str, BaseException]:
    """Train ``groups`` as one Tune run, ``<exp_dir>/<run_name>``, on the Ray that ``cluster.connect`` joined.

    Returns the groups whose trial ended in an error (after ``max_failures`` retries): {name: that error}.
    What every trial trained is in its records.  ``progress`` (``ablate.run.progress.Progress``) gets
    every trial's events; ``verbose`` shows Tune's own status table as well.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table (--verbose) honours our columns
    # device=cpu with a GPU fraction is allowed: it schedules like a GPU trial (tests fake GPUs).
    device = cfg.device if cfg.device != "auto" else ("cuda" if resources["gpu"] > 0 else "cpu")
    const = GroupConstants.of(cfg, experiment_id, wandb_mode, device)
    # Trials run in processes of other (autoscaled) nodes, which never see the driver's
    # environment: what W&B needs of it travels with the data.
    by_name = {g.name: g for g in groups}
    trainable = tune.with_resources(
        tune.with_parameters(run_group, groups=by_name, const=const, data=data, env=env or {}), resources
    )
    scheduler = (
        _asha(cfg, storage.join(exp_dir, run_name), by_name, experiment_id)
        if cfg.scheduler == "asha"
        else FIFOScheduler()
    )
    tuner = tune.Tuner(
        trainable,
        param_space={GROUP_KEY: tune.grid_search([g.name for g in groups])},
        tune_config=tune.TuneConfig(
            scheduler=scheduler,
            max_concurrent_trials=cfg.max_concurrent_trials or None,
            trial_name_creator=lambda t: t.config[GROUP_KEY],
            trial_dirname_creator=_group_dirname,
            # Reuse trial processes: a new one per trial (Python + torch + Ray imports) cost
            # more than a digits trial's whole training (docs/benchmarks.md).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=run_name,
            storage_path=exp_dir,
            callbacks=[_progress_callback(progress)] if progress else [],
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
            # Each trial's directory (its W&B offline run) goes to the experiment's storage.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            progress_reporter=tune.CLIReporter(
                parameter_columns=[GROUP_KEY],
                metric_columns=["epoch", "val_acc", "train_loss"],
                max_report_frequency=30,
                sort_by_metric=False,
            ),
            verbose=1 if verbose else 0,
        ),
    )
    return {r.config[GROUP_KEY]: r.error for r in tuner.fit() if r.error is not None and r.config}
