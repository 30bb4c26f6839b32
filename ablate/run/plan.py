"""The plan of a grid, before anything runs: trials, resources, compute and GPU-hours (``--dry-run``)."""

from __future__ import annotations

import math
import os
import time
from typing import Optional

from ablate.formatting import duration
from ablate.spec.axes import GRID, context_of
from ablate.spec.config import ExperimentConfig, trial_configs, trial_groups
from ablate.spec.question import Question
from ablate.spec.settings import CLASSES, IMAGE_SHAPES, TRAIN_SIZES
from ablate.study.tables import read_csvs

__all__ = ["plan_text", "concurrency", "gpu_img_s", "gpu_hours", "estimate_cpu_wall", "MEASURED_GPU", "FP32_TFLOPS"]

# Aggregate training images/s of ONE H100 with 4 trials packed on it (fp32, channels_last, CUDA
# graphs, batch 128), measured in docs/benchmarks.md; other depths scale by depth from the nearest.
MEASURED_GPU = "H100"
GPU_IMG_S_PER_GPU = {20: 65_700, 56: 18_500}
# Other GPUs are NOT measured: their GPU-hours are scaled from the H100 by peak dense FP32
# throughput (TFLOP/s, vendor data sheets), a rough guide for small, launch-bound nets.
FP32_TFLOPS = {
    "H100": 67.0,
    "H200": 67.0,
    "A100": 19.5,
    "A10G": 31.2,
    "L4": 30.3,
    "L40S": 91.6,
    "T4": 8.1,
    "V100": 15.7,
}


def gpu_img_s(depth: int) -> float:
    near = min(GPU_IMG_S_PER_GPU, key=lambda d: abs(d - depth))
    return GPU_IMG_S_PER_GPU[near] * near / depth


# Measured on the default grid (docs/benchmarks.md, "The first run"): a whole epoch (train, eval) over
# what the probe's training steps predict, with trials side by side on every core; Ray's and W&B's
# cost per group (start, reports, checkpoints); Ray's start, the data, the tables and the report, once.
EPOCH_OVER_PROBE = 1.05
PER_TRIAL_S = 0.6
FIXED_S = 15.0


def _step_seconds(cfg: ExperimentConfig, depth: int, steps: int = 3) -> float:
    """One training step of a ``depth`` net at the grid's batch on this CPU, one thread: the probe."""
    # torch only for the probe: a dry run of a CIFAR grid or a finished study never pays it.
    import torch
    import torch.nn.functional as F

    from ablate.models.resnet import create_model  # torch, as above

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cfg.cpus_per_trial)))
    try:
        torch.manual_seed(0)
        fmt = torch.contiguous_format if cfg.channels_last is False else torch.channels_last  # as the trainer
        model = create_model("baseline", depth, CLASSES[cfg.dataset], IMAGE_SHAPES[cfg.dataset][0], cfg.shortcut).to(
            memory_format=fmt
        )
        # SGD with momentum by hand: torch.optim's first optimizer imports torch._dynamo, 2.2 s of every grid's
        # start on a 2-core machine (measured 2026-12-08), for an update that is a rounding error of a step.
        params = [p for p in model.parameters() if p.requires_grad]
        bufs = [torch.zeros_like(p) for p in params]
        x = torch.randn(cfg.batch_size, *IMAGE_SHAPES[cfg.dataset]).to(memory_format=fmt)
        y = torch.randint(0, CLASSES[cfg.dataset], (cfg.batch_size,))
        times = []
        for _ in range(steps + 1):  # the first warms up
            t0 = time.perf_counter()
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            with torch.no_grad():  # as torch.optim.SGD's loop on CPU
                for p, b in zip(params, bufs):
                    p.add_(b.mul_(0.9).add_(p.grad), alpha=-0.01)
            times.append(time.perf_counter() - t0)
        return sorted(times[1:])[len(times[1:]) // 2]
    finally:
        torch.set_num_threads(threads)


def gpu_hours(cfg: ExperimentConfig) -> float:
    """GPU-hours of the grid on the measured GPU (``MEASURED_GPU``) at its measured packed throughput."""
    return sum(TRAIN_SIZES[cfg.dataset] * t.epochs / gpu_img_s(t.depth) for t in trial_configs(cfg)) / 3600


def estimate_cpu_wall(cfg: ExperimentConfig, conc: int, step_seconds=_step_seconds) -> float:
    """Seconds a local CPU run of the grid should take: a probe step per depth, times the steps,
    over the trials that run at once, plus the fixed costs; an estimate (the blocks differ a little)."""
    step = {d: step_seconds(cfg, d) * EPOCH_OVER_PROBE for d in cfg.depths}  # at the experiment's batch

    def epoch(t) -> float:  # a point's own batch (a step costs as its images) and its own epochs (a sweep)
        return step[t.depth] * t.batch_size / cfg.batch_size * -(-TRAIN_SIZES[cfg.dataset] // t.batch_size)

    train = sum(epoch(t) * t.epochs + PER_TRIAL_S for t in trial_configs(cfg))
    return FIXED_S + train / max(1, conc)


def concurrency(cfg: ExperimentConfig, address: Optional[str]) -> Optional[int]:
    """Trials that run at once in local mode (CPU-bound here); None on a cluster."""
    if address:
        return None
    c = max(1, int((os.cpu_count() or 1) // cfg.cpus_per_trial))
    return min(c, cfg.max_concurrent_trials) if cfg.max_concurrent_trials else c


def plan_text(cfg: ExperimentConfig, address: Optional[str], gpu_type: str = MEASURED_GPU) -> str:
    trials = trial_configs(cfg)
    n = len(trials)
    images = TRAIN_SIZES.get(cfg.dataset, 0) * sum(t.epochs for t in trials)  # each point's own epochs (a sweep)
    per = cfg.setting_text("epochs")
    gpu = (
        cfg.gpus_per_trial
        if cfg.gpus_per_trial is not None
        else f"1/{cfg.trials_per_gpu} where the cluster has GPUs, else 0"
    )
    c = concurrency(cfg, address)
    conc = "as the cluster allows" if c is None else f"{c} (local: {os.cpu_count()} CPUs)"
    axes = cfg.axes()
    keys = {a.name: a.key for a in GRID}  # as the experiment names them: 8 blocks x 2 depths x ...
    subject, reference = cfg.subject()
    lines = [
        f"experiment {cfg.name}: {n} trials = " + " x ".join(f"{len(v)} {keys.get(k, k)}" for k, v in axes.items()),
        f"  blocks: {', '.join(cfg.blocks)}",
        "  " + "   ".join(f"{keys.get(k, k)}: {v}" for k, v in axes.items() if k != "block"),
        f"  compared: each {subject} against {reference}, paired by seed, within every "
        + (" x ".join(context_of(list(axes), subject)) or "point")
        + " cell",
        f"  dataset {cfg.dataset}, {per} epochs, batch {cfg.setting_text('batch_size')}, "
        f"{cfg.setting_text('schedule')} schedule, "
        f"scheduler {cfg.scheduler}",
        f"  resources per group: {cfg.cpus_per_trial:g} CPU, GPU {gpu}; concurrent groups: {conc}",
        *(
            [
                f"  fused groups: {len(trial_groups(cfg))} groups (Tune trials), each up to {cfg.fuse_trials} grid "
                "points that differ only in lr and seed trained as one model"
            ]
            if cfg.fuse_trials > 1
            else []
        ),
        f"  compute: {n} trials x {per} epochs x {TRAIN_SIZES.get(cfg.dataset, '?')} images = "
        f"{images:,} training images",
    ]
    if cfg.dataset.startswith("cifar"):
        hours = gpu_hours(cfg)
        if gpu_type == MEASURED_GPU:
            lines.append(
                f"  GPU-hours: ~{hours:.0f} on {gpu_type} (measured there: 4 trials packed per GPU, docs/benchmarks.md)"
            )
        else:
            scale = FP32_TFLOPS[MEASURED_GPU] / FP32_TFLOPS[gpu_type]
            lines.append(
                f"  GPU-hours: ~{hours * scale:.0f} on {gpu_type}, an ESTIMATE: the {MEASURED_GPU} measurement "
                f"(~{hours:.0f}) scaled by peak FP32 throughput ({FP32_TFLOPS[MEASURED_GPU]:g}/"
                f"{FP32_TFLOPS[gpu_type]:g} TFLOP/s); not measured on {gpu_type}"
            )
    # On this machine's CPU, for the small images it is meant for (a CIFAR probe costs a minute; CIFAR
    # studies are priced in GPU-hours below).
    if c is not None and cfg.dataset == "digits" and (cfg.device == "cpu" or cfg.device == "auto" and not _cuda()):
        lines.append(
            f"  time: ~{duration(estimate_cpu_wall(cfg, c))} here, an ESTIMATE (a probe step per depth on "
            "this CPU; docs/benchmarks.md)"
        )
    lines.append(f"  results: {cfg.experiment_dir}")
    return "\n".join(lines)


def _cuda() -> bool:
    import torch  # only where the plan must know whether this machine trains on a GPU

    return torch.cuda.is_available()


# The spread assumed before a study has measured its own: the median sd of the final-acc paired differences in
# the A/A study on digits (docs/benchmarks.md "What paired differences look like").
ASSUMED_SPREAD_POINTS = 2.0


def comparisons(cfg: ExperimentConfig) -> int:
    """How many comparisons the study's question makes: each value of the compared axis but the reference, in
    every cell of the context."""
    axes = cfg.axes()
    subject, _ = cfg.subject()
    cells = math.prod(len(v) for k, v in axes.items() if k not in (subject, "seed"))
    return max(0, len(axes[subject]) - 1) * cells


def power_text(cfg: ExperimentConfig, spread_points: Optional[float] = None) -> str:
    """What an --until-resolved study can resolve, before a seed is spent: the smallest difference a lone
    comparison separates with 80% chance by max_seeds, for its family (both metrics) at its e-BH level."""
    # scipy and the forecasts only for --until-resolved's power line.
    from ablate.analysis.findings import power_sentence
    from ablate.analysis.rounds import ROUND_SEEDS
    from ablate.analysis.sequential import resolvable
    from ablate.analysis.stats import ALPHA

    k = comparisons(cfg)
    m_total = max(1, 2 * k)
    need = resolvable(m_total, len(cfg.seeds), cfg.max_seeds, ROUND_SEEDS, ALPHA)
    need_all = resolvable(1, len(cfg.seeds), cfg.max_seeds, ROUND_SEEDS, ALPHA)
    measured = spread_points is not None
    sd = (spread_points if measured else ASSUMED_SPREAD_POINTS) / 100.0
    words = (
        "the spread this study has seen"
        if measured
        else "an assumed spread (the A/A study's on digits, docs/benchmarks.md; yours may differ)"
    )
    return (
        f"  power: {k} comparisons, "
        + power_sentence(need, m_total, cfg.max_seeds, sd, words, need_all)[len("Power: ") :]
    )


def measured_spread(cfg: ExperimentConfig) -> Optional[float]:
    """The median spread (sd, in points) of the final-acc paired differences an experiment's tables hold, or
    None where it holds none yet (a new study: the assumed spread is used, and said so)."""
    from ablate.analysis.stats import effects  # scipy: only on --resume --until-resolved

    try:
        _, trials = read_csvs(cfg.output_dir)
    except (OSError, ValueError):
        return None
    q = Question.of_config(cfg)
    try:
        sd = effects(trials, q.subject, q.reference, q.context)["final_sd"].dropna()
    except KeyError:  # tables of another question: nothing measured for this one
        return None
    sd = sd[sd > 0]
    return float(100 * sd.median()) if len(sd) and math.isfinite(sd.median()) else None


def until_resolved_text(cfg: ExperimentConfig, address: Optional[str], gpu_type: str = MEASURED_GPU) -> str:
    """--until-resolved's worst case: every comparison open until it has ``max_seeds`` seeds."""
    seeds = list(cfg.seeds)
    seeds += [s for s in range(len(seeds) + cfg.max_seeds) if s not in seeds][: max(0, cfg.max_seeds - len(seeds))]
    worst = cfg.model_copy(update={"seeds": seeds})
    n, now = len(trial_configs(worst)), len(trial_configs(cfg))
    line = (
        f"  --until-resolved: {now} trials first; at worst {n} (every comparison open until max_seeds = "
        f"{cfg.max_seeds}), equivalence margin {cfg.equivalence_margin:g} points"
    )
    c = concurrency(cfg, address)
    if cfg.dataset.startswith("cifar"):
        line += f"; worst case ~{gpu_hours(worst):.0f} GPU-hours on {MEASURED_GPU}"
    elif c is not None and cfg.dataset == "digits" and (cfg.device == "cpu" or cfg.device == "auto" and not _cuda()):
        line += f"; worst case ~{duration(estimate_cpu_wall(worst, c))} here (an ESTIMATE)"
    return line + "\n" + power_text(cfg, measured_spread(cfg))


def dry_run_text(study, address: Optional[str], gpu_type: str, until_resolved: bool) -> str:
    """``--dry-run``: the plan; with ``--until-resolved`` its worst case; with ``--resume`` what the experiment's
    identity says a resume would add."""
    if study.resume:
        study.check()  # first: the question a resume keeps (or is asked anew) is the plan's
    lines = [plan_text(study.cfg, address, gpu_type)]
    if until_resolved:
        lines.append(until_resolved_text(study.cfg, address, gpu_type))
    if study.resume:
        lines.append(study.growth_text() if study.added else "resume: no axis grows; unfinished trials continue")
        lines += [study.asked] if study.asked else []
    return "\n".join(lines)
