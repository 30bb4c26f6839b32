"""All of ablate's Ray glue: the Tune trial function and the Tuner that runs the grid.

The trial follows the Ray Tune function-API pattern: build from config, restore from
``tune.get_checkpoint()``, loop epochs (in ``ablate.train``), ``tune.report(metrics,
checkpoint=...)`` after each one.  Everything else in ablate runs without Ray.
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import fields
from typing import Any, Dict, Optional

import torch

from .config import ExperimentConfig, to_dict
from .data import Dataset, load_dataset
from .results import summarise_history
from .tracking import run_name, start_trial_run
from .train import TrainConfig, TrainSettings, train

__all__ = ["run_trial", "run_grid", "trial_resources"]

STATE_FILE = "state.pt"
PARAM_COLUMNS = ["block", "depth", "lr", "seed"]
METRIC_COLUMNS = {"epoch": "epoch", "val_acc": "val_acc", "train_loss": "train_loss"}


def run_trial(config: Dict[str, Any], data: Optional[Dataset] = None) -> None:
    """One Tune trial: one (block, depth, lr, seed), resumed from its checkpoint if it has one."""
    import ray
    from ray import tune

    # One "Checkpoint successfully created" line per epoch per trial drowns Tune's table.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    cfg = TrainConfig.from_dict(config)
    meta = config["meta"]
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)
    ctx = tune.get_context()
    hook = os.environ.get("ABLATE_TRIAL_HOOK_DIR")  # tests: where trials announce their pid
    if hook:
        with open(os.path.join(hook, f"{run_name(cfg.block, cfg.depth, cfg.lr, cfg.seed)}.pid"), "w") as f:
            f.write(str(os.getpid()))
    wb = meta["wandb"]
    run = start_trial_run(
        {**cfg.to_dict(), "experiment": meta["experiment"], "git_commit": meta.get("git_commit")},
        project=wb["project"], group=meta["experiment"], name=run_name(cfg.block, cfg.depth, cfg.lr, cfg.seed),
        run_id=ctx.get_trial_id(), mode=wb["mode"], directory=meta["wandb_dir"] or os.getcwd(),
        tags=[cfg.block, f"d{cfg.depth}", cfg.dataset, *wb.get("tags", [])], entity=wb.get("entity"),
        init_timeout=wb.get("init_timeout", 60.0),
    )

    if state is not None:
        run.replay(state["history"])
    node = ray.get_runtime_context().get_node_id()[:12]  # which node ran each epoch (history.csv)

    def on_epoch(metrics: Dict[str, Any], get_state) -> None:
        # Checkpoint and metrics travel together, so a restore never repeats or skips an epoch.
        with tempfile.TemporaryDirectory() as d:
            torch.save(get_state(), os.path.join(d, STATE_FILE))
            tune.report({**metrics, "node": node, "time": time.time()},
                        checkpoint=tune.Checkpoint.from_directory(d))
        run.log(metrics, step=metrics["epoch"])

    out = train(cfg, data, on_epoch=on_epoch, state=state)
    run.finish(summarise_history(out["history"], meta["target_acc"]))


def trial_resources(cfg: ExperimentConfig, cluster_gpus: float) -> Dict[str, float]:
    """CPUs and (fractional) GPUs per trial: several small trials share one GPU."""
    gpus = cfg.gpus_per_trial
    if gpus is None:
        gpus = 1.0 / cfg.trials_per_gpu if cluster_gpus > 0 else 0.0
    return {"cpu": cfg.cpus_per_trial, "gpu": gpus}


def _param_space(cfg: ExperimentConfig, meta: Dict[str, Any], device: str) -> Dict[str, Any]:
    from ray import tune

    space: Dict[str, Any] = {f.name: getattr(cfg, f.name) for f in fields(TrainSettings)}
    space.update(
        block=tune.grid_search(cfg.blocks), depth=tune.grid_search(cfg.depths),
        lr=tune.grid_search(cfg.lrs), seed=tune.grid_search(cfg.seeds),
        threads=cfg.threads or max(1, int(cfg.cpus_per_trial)), device=device, meta=meta,
    )
    return space


def run_grid(cfg: ExperimentConfig, exp_dir: str, *, storage_path: str, resume: bool,
             address: Optional[str], wandb_mode: str, wandb_dir: Optional[str],
             git_commit: Optional[str], data: Optional[Dataset] = None):
    """Run (or resume) the grid with Ray Tune; return the ``ResultGrid``."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic table honours our columns
    # A checkpoint every epoch with num_to_keep=1 forces a state snapshot each time: intended
    # (nothing is lost), so the warning about it is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if address:
        ray.init(address=address, log_to_driver=True)
    elif not ray.is_initialized():
        # Local mode: this machine's CPUs and GPUs; no dashboard (and never off localhost).
        ray.init(include_dashboard=False, dashboard_host="127.0.0.1", log_to_driver=True)
    cluster_gpus = ray.cluster_resources().get("GPU", 0.0)
    res = trial_resources(cfg, cluster_gpus)
    if res["gpu"] > 0 and cluster_gpus == 0:
        raise RuntimeError("gpus_per_trial > 0 but the Ray cluster has no GPU")
    # device=cpu with a GPU fraction is allowed: it schedules like a GPU trial (tests fake GPUs).
    device = cfg.device if cfg.device != "auto" else ("cuda" if res["gpu"] > 0 else "cpu")

    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir)  # once, in the driver; shared by object store
    meta = {"experiment": cfg.name, "target_acc": cfg.target_acc, "git_commit": git_commit,
            "wandb": {**to_dict(cfg)["wandb"], "mode": wandb_mode}, "wandb_dir": wandb_dir}
    trainable = tune.with_resources(tune.with_parameters(run_trial, data=data), res)

    reporter = tune.CLIReporter(parameter_columns=PARAM_COLUMNS, metric_columns=METRIC_COLUMNS,
                                max_report_frequency=30, sort_by_metric=False)
    if resume:
        tuner = tune.Tuner.restore(exp_dir, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True, param_space=_param_space(cfg, meta, device))
    else:
        if cfg.scheduler == "asha":
            scheduler = ASHAScheduler(time_attr="epoch", metric="val_acc", mode="max", max_t=cfg.epochs,
                                      grace_period=cfg.asha_grace_period,
                                      reduction_factor=cfg.asha_reduction_factor)
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            param_space=_param_space(cfg, meta, device),
            tune_config=tune.TuneConfig(
                scheduler=scheduler, max_concurrent_trials=cfg.max_concurrent_trials or None,
                trial_name_creator=_trial_name, trial_dirname_creator=_trial_dirname,
                # Reuse trial processes: a new one per trial (Python + torch + Ray imports) cost
                # more than a digits trial's whole training (docs/benchmarks.md).
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=cfg.name, storage_path=storage_path,
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                progress_reporter=reporter, verbose=1,
            ),
        )
    return tuner.fit()


def _trial_name(trial) -> str:
    c = trial.config
    return run_name(c["block"], c["depth"], c["lr"], c["seed"])


def _trial_dirname(trial) -> str:
    return f"{_trial_name(trial)}_{trial.trial_id}"
