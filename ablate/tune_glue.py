"""All of ablate's Ray: the Tune trial function, the Tuner that runs the grid, the cluster it runs on.

The trial follows the Ray Tune function-API pattern: ``param_space`` holds only what is searched
(the grid's axes), the constants ride in ``tune.with_parameters`` (settings, metadata, data);
build from config, restore from ``tune.get_checkpoint()``, loop epochs (in ``ablate.train``),
``tune.report(metrics, checkpoint=...)``.  What leaves this module is plain: a history table and
the trials' statuses.  Everything else in ablate runs without Ray.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd
import torch
import yaml

from .blocks import import_block_modules
from .config import ExperimentConfig, trial_configs, trial_groups
from .data import Dataset, load_dataset
from .fused import build_group, train_group
from .results import history_table, summarise_history
from .storage import STATE_FILE
from .tracking import finish_runs, logged_steps, start_trial_run
from .train import AXES, TrainConfig, train, trial_key, trial_name

__all__ = ["run_trial", "run_grid", "trial_resources", "connect", "cluster_capacity", "Capacity", "ClusterError",
           "load_state", "experiment_parts", "can_restore", "GROW_PREFIX"]

METRIC_COLUMNS = {"epoch": "epoch", "val_acc": "val_acc", "train_loss": "train_loss"}


def members(config: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The grid points of a Tune trial's config: one, or a fused trial's members."""
    if "members" in config:
        pairs = [dict(kv.split("=") for kv in m.split(",")) for m in config["members"].split("; ")]
        return [{"block": config["block"], "depth": config["depth"], "lr": float(p["lr"]), "seed": int(p["seed"])}
                for p in pairs]
    return [{a: config[a] for a in AXES}]


def _encode_members(group: List[TrainConfig]) -> str:
    """A fused trial's (lr, seed) pairs as one Tune value, ``lr=0.1,seed=0; lr=0.05,seed=1``: a string,
    since Tune's search algorithms split nested values into paths of their own."""
    return "; ".join(f"lr={t.lr!r},seed={t.seed}" for t in group)


def run_trial(config: Dict[str, Any], settings: Dict[str, Any], meta: Dict[str, Any],
              data: Optional[Dataset] = None, env: Optional[Dict[str, str]] = None) -> None:
    """One Tune trial: one grid point (block, depth, lr, seed), or a fused trial's members (one
    block and depth, several lr and seed: ``ablate.fused``), resumed from its checkpoint if any.

    ``settings`` (every other training setting), ``meta`` (experiment name, W&B settings,
    checkpoint period, ...) and ``env`` (the driver's W&B key and server) arrive through
    ``tune.with_parameters``: in memory, by the object store.  Not a runtime-env variable: Ray's
    runtime-env agent writes those to its log in plain text.
    """
    os.environ.update(env or {})
    import_block_modules(meta["block_modules"])  # a user's blocks, shipped by py_modules
    import ray
    from ray import tune

    # One "Checkpoint successfully created" line per epoch per trial drowns Tune's table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    fused = "members" in config
    cfgs = [TrainConfig(**settings, **p) for p in members(config)]
    state: Optional[Dict[str, Any]] = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        try:
            with checkpoint.as_directory() as d:
                state = load_state(os.path.join(d, STATE_FILE))
        except CheckpointLost as e:  # deleted or cut short (a full disk): this trial starts over
            warnings.warn(f"{e}; the trial starts again from epoch 1")
    ctx = tune.get_context()
    hook = os.environ.get("ABLATE_TRIAL_HOOK_DIR")  # tests: where trials announce their pid
    if hook:
        with open(os.path.join(hook, f"{_config_name(config)}.pid"), "w") as f:
            f.write(str(os.getpid()))
    group = build_group(cfgs, data, state) if fused else None
    wb = meta["wandb"]
    ids = [member_id(ctx.get_trial_id(), i) for i in range(len(cfgs))] if fused else [ctx.get_trial_id()]
    runs = [start_trial_run(
        {**cfg.to_dict(), "experiment": meta["experiment"], "git_commit": meta.get("git_commit")},
        project=wb["project"], group=meta["experiment"], name=cfg.name,
        # The trial's own directory: Tune syncs it (sync_artifacts) to the experiment's storage, so
        # an offline run outlives the (autoscaled) worker that wrote it.
        run_id=run_id, mode=wb["mode"], directory=ctx.get_trial_dir(),
        tags=[cfg.block, f"d{cfg.depth}", cfg.dataset, *wb.get("tags", [])], entity=wb.get("entity"),
        init_timeout=wb.get("init_timeout", 60.0),
    ) for cfg, run_id in zip(cfgs, ids)]

    if state is not None:
        import pyarrow.fs as pafs

        store = ctx.get_storage()
        histories = group.histories if fused else [state["history"]]
        for run, run_id, history in zip(runs, ids, histories):
            if run.mode == "offline":  # what this run's earlier processes already wrote (synced or local)
                run.logged = logged_steps(run_id, [(pafs.LocalFileSystem(), ctx.get_trial_dir()),
                                                   (store.storage_filesystem, store.trial_fs_path)])
            run.replay(history)
    # Which node ran each epoch (history.csv): the whole id, since ids can share long prefixes.
    node = ray.get_runtime_context().get_node_id()

    period, last_checkpoint = meta["checkpoint_period_s"], time.monotonic()
    epochs = cfgs[0].epochs
    reports: List[Dict[str, Any]] = list(state[RECORD]["reports"]) if state and RECORD in state else []

    def on_epoch(metrics, get_state) -> None:
        nonlocal last_checkpoint
        per_member = metrics if fused else [metrics]
        if fused:  # Tune flattens this to members/<i>/<metric>; _tables turns it back into trials
            result = {"epoch": max(m["epoch"] for m in per_member if m),
                      "members": {str(i): m for i, m in enumerate(per_member) if m}}
        else:
            result = dict(metrics)
        result.update(node=node, time=time.time())
        reports.append(result)
        final = all(m is None or m["epoch"] >= epochs or m["diverged"] for m in per_member)
        # A checkpoint every `checkpoint_period_s` of training and at the end, not every epoch:
        # each one is an upload, and with num_to_keep Tune snapshots (and syncs) the whole
        # experiment's state every num_to_keep of them (docs/benchmarks.md).  A restore repeats
        # at most that much training; history.csv keeps each epoch's last report.
        if final or time.monotonic() - last_checkpoint >= period:
            # The checkpoint also holds the trial's record (its Tune config and id, what it reported,
            # whether it is done): a full disk can cut short the files Tune rewrites (result.json, its
            # experiment state), never a checkpoint once written, so --resume still knows what finished.
            record = {"trial_id": ctx.get_trial_id(), "config": dict(config), "reports": reports, "done": final}
            with tempfile.TemporaryDirectory() as d:
                torch.save({**get_state(), RECORD: record}, os.path.join(d, STATE_FILE))
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(d))
            last_checkpoint = time.monotonic()
        else:
            tune.report(result)
        for run, m in zip(runs, per_member):
            if m is not None:
                run.log_once(m, step=m["epoch"])

    outs = train_group(group, on_epoch) if fused else [train(cfgs[0], data, on_epoch=on_epoch, state=state)]
    finish_runs(runs, [summarise_history(out["history"], meta["target_acc"]) for out in outs])


def member_id(trial_id: str, index: int) -> str:
    """A fused trial's member: its id in history.csv, trials.csv and W&B."""
    return f"{trial_id}-{index}"


RECORD = "trial_record"  # the key of a trial's record in its checkpoint (run_trial, _finished_from_files)


class CheckpointLost(Exception):
    """A checkpoint that is gone or unreadable (not a refused one)."""


def load_state(path: str) -> Dict[str, Any]:
    """A trial's checkpoint: tensors, numbers, strings, lists and dicts only (never code).

    ``weights_only=True`` refuses any other pickled object, so a tampered ``state.pt`` cannot
    run code on resume: that is an error naming the path.  A missing or truncated file is
    ``CheckpointLost``: the trial starts over.
    """
    import pickle

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


class ClusterError(ValueError):
    """What the grid asks of the Ray cluster it can never get: exit 2 before any trial."""


@dataclass
class Capacity:
    """What the Ray cluster has now, and what its autoscaler can add (node shapes)."""

    gpus_now: float
    shapes: List[Dict[str, float]]      # resources of every live node and every node type it can add
    autoscaler: Optional[str] = None    # where the autoscaler's node types were read, if anywhere

    @property
    def gpu_possible(self) -> bool:
        return self.gpus_now > 0 or any(s.get("GPU", 0) > 0 for s in self.shapes)


def autoscaler_node_types() -> Tuple[List[Dict[str, float]], Optional[str]]:
    """Resources of the worker node types the cluster's autoscaler can start (none: [], None).

    Ray records the autoscaler's node groups in the GCS where the autoscaler reports them
    (``get_max_resources_from_cluster_config`` reads the same record for Ray Train and Data);
    the cluster launcher's autoscaler (``ray up``) reads its node types from
    ``~/ray_bootstrap_config.yaml`` on the head, where the grid's driver runs.
    """
    from ray._private.state import state

    try:
        config = state.get_cluster_config()
    except Exception:
        config = None
    if config is not None and config.node_group_configs:
        return ([{k: float(v) for k, v in g.resources.items()} for g in config.node_group_configs
                 if g.max_count != 0], "the GCS cluster config")
    path = os.path.expanduser("~/ray_bootstrap_config.yaml")
    try:
        with open(path) as f:
            launcher = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return [], None
    head = launcher.get("head_node_type")
    types = launcher.get("available_node_types") or {}
    shapes = [{k: float(v) for k, v in (t.get("resources") or {}).items()} for name, t in types.items()
              if name != head and int(t.get("max_workers", launcher.get("max_workers", 0)) or 0) > 0]
    return shapes, path


def cluster_capacity() -> Capacity:
    import ray

    shapes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    scalable, source = autoscaler_node_types()
    return Capacity(gpus_now=ray.cluster_resources().get("GPU", 0.0), shapes=shapes + scalable,
                    autoscaler=source)


def trial_resources(cfg: ExperimentConfig, cap: Capacity) -> Dict[str, float]:
    """CPUs and (fractional) GPUs per trial, from what the cluster has or its autoscaler can add.

    An explicit ``gpus_per_trial`` always wins; unset, trials take ``1/trials_per_gpu`` GPU where
    a GPU exists or can be added (the trials then wait for the autoscaler), else none.  A request
    no node of the cluster, present or addable, could ever hold is a ``ClusterError``.
    """
    gpus = cfg.gpus_per_trial
    if gpus is None:
        gpus = 1.0 / cfg.trials_per_gpu if cap.gpu_possible else 0.0
    if gpus > 0 and not cap.gpu_possible:
        raise ClusterError(f"key 'gpus_per_trial' is {gpus:g} but the Ray cluster has no GPU and its autoscaler "
                           "can add none; allowed here: 0, or leave it unset (trials then run on CPUs)")
    if not any(s.get("CPU", 0) >= cfg.cpus_per_trial and s.get("GPU", 0) >= gpus for s in cap.shapes):
        most = max((s.get("CPU", 0) for s in cap.shapes if s.get("GPU", 0) >= gpus), default=0)
        raise ClusterError(f"key 'cpus_per_trial' is {cfg.cpus_per_trial:g} but no node of the Ray cluster "
                           f"(nor any its autoscaler can add) has that many CPUs beside {gpus:g} GPU; "
                           f"allowed here: up to {most:g}")
    return {"cpu": cfg.cpus_per_trial, "gpu": gpus}


def connect(address: Optional[str], block_modules: List[str] = ()) -> Capacity:
    """Join (or start) Ray and read what it can give.

    A user's block modules (imported in this driver already) travel to every node with the
    job's runtime env (``py_modules``: Ray uploads them once; every worker gets them on its path).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no job metadata leaves the cluster
    import ray

    runtime_env = {"py_modules": [_module_path(m) for m in block_modules]} if block_modules else None
    if address:
        ray.init(address=address, log_to_driver=True, runtime_env=runtime_env)
    elif not ray.is_initialized():
        # Local mode: this machine's CPUs and GPUs; no dashboard (and never off localhost).
        ray.init(include_dashboard=False, dashboard_host="127.0.0.1", log_to_driver=True, runtime_env=runtime_env)
    return cluster_capacity()


def _module_path(name: str) -> str:
    """The file (single-file module) or directory (package) of an imported module, for ``py_modules``."""
    import sys

    module = sys.modules[name.split(".")[0]]
    return module.__path__[0] if hasattr(module, "__path__") else module.__file__


def _param_space(cfg: ExperimentConfig, grid: bool) -> Dict[str, Any]:
    """What Tune searches: the grid's axes, as grid searches; with ``fuse_trials`` > 1, block x depth
    x the groups of (lr, seed) that train together (``members``).

    A part that grows the experiment has no grid: its points come from the search algorithm
    (whose points' keys must exist in the space).
    """
    from ray import tune

    if cfg.fuse_trials == 1:
        space = cfg.axes()
    else:
        first = (cfg.blocks[0], cfg.depths[0])  # every block and depth has the same (lr, seed) groups
        space = {"block": cfg.blocks, "depth": cfg.depths,
                 "members": [_encode_members(g) for g in trial_groups(cfg) if (g[0].block, g[0].depth) == first]}
    return {k: tune.grid_search(v) if grid else None for k, v in space.items()}


def _search_points(cfg: ExperimentConfig, points: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Grid points as Tune configs: themselves, or fused into groups."""
    if cfg.fuse_trials == 1:
        return points
    return [{"block": g[0].block, "depth": g[0].depth, "members": _encode_members(g)}
            for g in trial_groups(cfg, points)]


def can_restore(exp_dir: str) -> bool:
    """Whether Tune holds a restorable experiment at ``exp_dir``."""
    from ray.tune import Tuner

    return Tuner.can_restore(exp_dir)


GROW_PREFIX = "grow-"


def experiment_parts(exp_dir: str) -> List[str]:
    """The Tune experiments of one ablate experiment: the first, then each growth, in order."""
    from .storage import join, list_dirs

    grown = sorted((d for d in list_dirs(exp_dir) if d.startswith(GROW_PREFIX)), key=lambda d: int(d[len(GROW_PREFIX):]))
    return [exp_dir] + [join(exp_dir, d) for d in grown if can_restore(join(exp_dir, d))]


def _state_readable(part: str) -> bool:
    """Whether the newest of each state file Tune restores ``part`` from is whole: a full disk cuts
    them short, and Tune then starts the part over.  The experiment state is JSON; the search
    algorithm's (``.json`` too, by name) is a pickle, walked opcode by opcode, never loaded."""
    import json
    import pickletools

    from .storage import list_files, read_bytes

    newest: Dict[str, str] = {}
    for f in sorted(list_files(part)):  # <kind>-<date>.json: the newest sorts last, as Tune picks it
        for kind in ("experiment_state-", "basic-variant-state-"):
            if f.startswith(kind) and f.endswith(".json"):
                newest[kind] = f
    try:
        for kind, f in newest.items():
            data = read_bytes(f"{part.rstrip('/')}/{f}")
            if kind == "experiment_state-":
                json.loads(data)
            else:
                for _ in pickletools.genops(data):  # ValueError if cut before its STOP
                    pass
        return True
    except (ValueError, OSError):
        return False


@dataclass
class _Salvaged:
    """A finished trial read back from its last checkpoint's record: what ``_tables`` reads of a Tune ``Result``."""
    config: Dict[str, Any]
    metrics_dataframe: pd.DataFrame
    error: None = None


def _finished_from_files(part: str) -> List[_Salvaged]:
    """The trials of ``part`` that finished (every epoch, or diverged), read from the record in their
    newest readable checkpoint when Tune's state of the part is lost (``run_trial`` writes it)."""
    from ray.tune import Checkpoint

    from .storage import join, list_dirs

    kept = []
    for name in list_dirs(part):
        for ckpt in sorted((c for c in list_dirs(join(part, name)) if c.startswith("checkpoint_")), reverse=True):
            try:
                with Checkpoint(join(part, name, ckpt)).as_directory() as d:
                    record = load_state(os.path.join(d, STATE_FILE)).get(RECORD)
            except (CheckpointLost, OSError):  # cut short too: an older one may be whole
                continue
            if record and record["done"]:
                # Tune flattens nested metrics with "/": a fused trial's members/<i>/<metric>
                df = pd.json_normalize(record["reports"], sep="/").assign(trial_id=record["trial_id"])
                kept.append(_Salvaged(record["config"], df))
            break
    return kept


def run_grid(cfg: ExperimentConfig, exp_dir: str, *, storage_path: str, resume: bool,
             resources: Dict[str, float], wandb_mode: str, git_commit: Optional[str],
             env: Optional[Dict[str, str]] = None, data: Optional[Dataset] = None
             ) -> Tuple[pd.DataFrame, Dict[tuple, str]]:
    """Run (or resume, or grow) the grid with Ray Tune on the Ray that ``connect`` joined.

    Returns the history of every trial that reported (one row per trial and epoch) and the
    status of every trial that ran (``TERMINATED`` or ``ERROR``, by ``trial_key``).  A resume
    restores every part of the experiment (``Tuner.restore``: finished trials are not rerun),
    then runs the grid's points that no part holds (more values on an axis) as one more part,
    ``<experiment>/grow-K``: the finished trials' files, checkpoints and W&B runs are never touched.
    """
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table honours our columns
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    res = resources
    # device=cpu with a GPU fraction is allowed: it schedules like a GPU trial (tests fake GPUs).
    device = cfg.device if cfg.device != "auto" else ("cuda" if res["gpu"] > 0 else "cpu")
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir)  # once, in the driver; shared by object store
    settings = cfg.train_settings()
    settings.update(threads=cfg.threads or max(1, int(cfg.cpus_per_trial)), device=device)
    meta = {"experiment": cfg.name, "target_acc": cfg.target_acc, "git_commit": git_commit,
            "checkpoint_period_s": cfg.checkpoint_period_s, "block_modules": list(cfg.block_modules),
            "wandb": {**cfg.wandb.model_dump(), "mode": wandb_mode}}
    # Trials run in processes of other (autoscaled) nodes, which never see the driver's
    # environment: what W&B needs of it travels with the data.
    trainable = tune.with_resources(tune.with_parameters(run_trial, settings=settings, meta=meta, data=data,
                                                         env=env or {}), res)

    def new_tuner(name: str, storage: str, points: Optional[List[Dict[str, Any]]]):
        if cfg.scheduler == "asha":
            scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=cfg.epochs,
                                      grace_period=cfg.asha_grace_period,
                                      reduction_factor=cfg.asha_reduction_factor)
        else:
            scheduler = FIFOScheduler()
        search = {} if points is None else {"search_alg": BasicVariantGenerator(points_to_evaluate=points),
                                            "num_samples": len(points)}
        return tune.Tuner(
            trainable,
            param_space=_param_space(cfg, grid=points is None),
            tune_config=tune.TuneConfig(
                scheduler=scheduler, max_concurrent_trials=cfg.max_concurrent_trials or None,
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname,
                # Reuse trial processes: a new one per trial (Python + torch + Ray imports) cost
                # more than a digits trial's whole training (docs/benchmarks.md).
                reuse_actors=True, **search,
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                # Each trial's directory (its W&B offline run) goes to the experiment's storage.
                sync_config=tune.SyncConfig(sync_artifacts=True),
                # With num_to_keep, Tune snapshots its experiment state at every checkpoint: a driver
                # that dies right after a trial finished still knows that trial finished.
                checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
                progress_reporter=tune.CLIReporter(parameter_columns=list(AXES) if cfg.fuse_trials == 1 else
                                                   ["block", "depth", "members"], metric_columns=METRIC_COLUMNS,
                                                   max_report_frequency=30, sort_by_metric=False),
                verbose=1,
            ),
        )

    if not resume:
        return _tables(new_tuner(cfg.name, storage_path, None).fit())
    results: List[Any] = []
    parts = experiment_parts(exp_dir)
    for part in parts:  # each as it was started (its own points and settings)
        if not _state_readable(part):  # cut short by a full disk: Tune would start the part over
            kept = _finished_from_files(part)
            print(f"ablate.grid: notice: Tune's state in {part} is unreadable (a full disk?); its {len(kept)} "
                  "finished trials are kept from their own files, the others run again", flush=True)
            results += kept
            continue
        tuner = tune.Tuner.restore(part, trainable=trainable, resume_unfinished=True, resume_errored=True)
        results += list(tuner.fit())
    have = {trial_key(p) for r in results if r.config for p in members(r.config)}
    missing = [t.point for t in trial_configs(cfg) if t.key not in have]
    if missing:
        print(f"ablate.grid: growing the experiment by {len(missing)} trials into "
              f"{GROW_PREFIX}{len(parts)}", flush=True)
        results += list(new_tuner(f"{GROW_PREFIX}{len(parts)}", exp_dir, _search_points(cfg, missing)).fit())
    return _tables(results)


# Tune's own columns in a trial's metrics, which history.csv does not keep.
_TUNE_COLUMNS = {"timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration",
                 "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
                 "iterations_since_restore", "date", "experiment_tag", "trial_id"}


def _tables(results) -> Tuple[pd.DataFrame, Dict[tuple, str]]:
    """Tune ``Result``s as plain tables: the history of every trial (a fused trial's members each as
    a trial of their own), the status of every trial that ran."""
    frames, statuses = [], {}
    for r in results:
        if not r.config:  # a trial that never started
            continue
        points = members(r.config)
        for p in points:
            statuses[trial_key(p)] = "ERROR" if r.error is not None else "TERMINATED"
        df = r.metrics_dataframe
        if df is None or df.empty or "epoch" not in df:
            continue
        trial_id = str(df["trial_id"].iloc[-1])  # Tune fills it in every report (the salvage too)
        df = df[[c for c in df.columns if c not in _TUNE_COLUMNS and not c.startswith("config/")]]
        if "members" not in r.config:
            frames.append(_trial_frame(df, points[0], trial_id))
            continue
        shared = df[[c for c in df.columns if not c.startswith("members/") and c != "epoch"]]
        for i, p in enumerate(points):
            prefix = f"members/{i}/"
            own = df[[c for c in df.columns if c.startswith(prefix)]].rename(columns=lambda c: c[len(prefix):])
            if "epoch" in own:  # epochs this member reported (none after it diverged)
                keep = own["epoch"].notna()
                frames.append(_trial_frame(pd.concat([shared[keep], own[keep]], axis=1), p, member_id(trial_id, i)))
    return history_table(frames), statuses


def _trial_frame(df: pd.DataFrame, point: Dict[str, Any], trial_id: str) -> pd.DataFrame:
    # The per-epoch LR metric would clash with the lr axis: it becomes epoch_lr.
    return df.rename(columns={"lr": "epoch_lr"}).assign(**{a: point[a] for a in AXES}, trial_id=trial_id)


def _config_name(config: Dict[str, Any]) -> str:
    """A Tune trial's name: its point's, or a fused trial's first member's and how many more."""
    points = members(config)
    return trial_name(points[0]) + (f"+{len(points) - 1}" if len(points) > 1 else "")


def _trial_name(trial) -> str:
    return _config_name(trial.config)


def _trial_dirname(trial) -> str:
    return f"{_trial_name(trial)}_{trial.trial_id}"
