"""A trial's typed settings, and the facts about the datasets they are checked against: no torch here.

Read by the experiment config, the study, the tables and the report (which never train, and so
never pay torch's import), and by the trainer.  Types, bounds and allowed values are declared once,
on pydantic models in strict mode.
"""

from __future__ import annotations

from typing import Annotated, Any, List, Literal, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

__all__ = [
    "Number",
    "Settings",
    "TrainSettings",
    "NO_RESULT",
    "SWEEPABLE",
    "METRIC_KEYS",
    "DATASETS",
    "TRAIN_SIZES",
    "IMAGE_SHAPES",
    "CLASSES",
    "AUGMENT",
    "as_it_acts",
    "sweep_as_it_acts",
]

# What the trainer reports of every epoch (a history row; the tables' columns).
METRIC_KEYS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "epoch_seconds",
    "images_per_second",
    "diverged",
)

DATASETS = ("digits", "synthetic", "cifar10", "cifar100")
# Training images per dataset (the dry run's compute estimate), without loading them; a test
# holds these to what the loaders return.
TRAIN_SIZES = {"digits": 1438, "synthetic": 2048, "cifar10": 50_000, "cifar100": 50_000}
# Each dataset's image shape (C, H, W) and classes, without loading it (the plan's time estimate).
IMAGE_SHAPES = {"digits": (1, 8, 8), "synthetic": (3, 32, 32), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
CLASSES = {"digits": 10, "synthetic": 10, "cifar10": 10, "cifar100": 100}
# Each dataset's own augmentation (pad-and-crop pixels, horizontal flips): what crop_pad/flip None mean.
# Digits must not be flipped (a mirrored 2 is no 2) and are 8 pixels wide (a 1-pixel crop).
AUGMENT = {"digits": (1, False), "synthetic": (4, True), "cifar10": (4, True), "cifar100": (4, True)}


def _number(value: Any) -> Any:
    """YAML 1.1 reads 5e-4 (no dot) as a string; users write it so."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


# A float setting: ints widen, numeric strings parse, booleans, NaN and infinities are refused.
Number = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]


class Settings(BaseModel):
    """Typed settings (pydantic, strict): a wrong type is an error, never a silent coercion."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=False)


class TrainSettings(Settings):
    """Every training setting except the grid axes (block, depth, lr, seed).

    Each bound is far beyond anything a real study uses: a value outside it is a typo, not a plan.
    """

    dataset: Literal[DATASETS] = "digits"
    data_dir: str = "data"  # where torchvision downloads CIFAR
    epochs: Annotated[int, Field(gt=0, le=10_000)] = 10
    batch_size: Annotated[int, Field(gt=0, le=65_536)] = 128  # He et al. 2016
    momentum: Annotated[Number, Field(ge=0, le=0.999)] = 0.9
    nesterov: bool = False
    weight_decay: Annotated[Number, Field(ge=0, le=0.1)] = 1e-4  # He et al. 2016
    schedule: Literal["step", "cosine", "constant"] = "step"
    # Fractions of training at which the step schedule decays the LR.
    milestones: List[Annotated[Number, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.5, 0.75])
    lr_decay: Annotated[Number, Field(ge=0, le=1)] = 0.1  # step schedule: LR x lr_decay at each milestone
    # Linear warm-up (He et al. use 0.01 for ResNet-110's first ~400 iterations).
    warmup_epochs: Annotated[Number, Field(ge=0, le=10_000)] = 0.0
    label_smoothing: Annotated[Number, Field(ge=0, le=0.99)] = 0.0
    shortcut: Literal["A", "B"] = "B"  # B: 1x1 conv + BN (reference); A: zero-pad (He et al. CIFAR)
    zero_init_last: bool = False  # call every block's zero_init_last() hook
    conv_bias: bool = False  # bias before BN is redundant (BN subtracts the mean)
    crop_pad: Optional[Annotated[int, Field(ge=0, le=64)]] = None  # None: the dataset's default (4 CIFAR, 1 digits)
    flip: Optional[bool] = None  # None: the dataset's default (no flips for digits)
    eval_batch_size: Annotated[int, Field(gt=0, le=65_536)] = 1024  # no gradients: large batches are cheap
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Speed settings (none changes the recipe); defaults = the fastest measured, docs/benchmarks.md.
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto (= fp32: bf16 was no faster at batch 128)
    # None: on; measured faster on CUDA and on the CPU (1.2-1.3x for digits nets, docs/benchmarks.md).
    channels_last: Optional[bool] = None
    compile: Optional[bool] = None  # torch.compile the model; None: on CUDA only
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "reduce-overhead"
    threads: Annotated[int, Field(ge=0, le=1024)] = 0  # torch CPU threads; 0 leaves torch's default
    # Diverged when train loss > factor x ln(classes), or non-finite.
    diverge_factor: Annotated[Number, Field(ge=1, le=1e6)] = 5.0


# Settings that change no result: they may differ between runs of one experiment, and are never an axis.
NO_RESULT = frozenset(
    {
        "name",
        "storage_path",
        "cpus_per_trial",
        "gpus_per_trial",
        "trials_per_gpu",
        "max_concurrent_trials",
        "max_failures",
        "wandb",
        "data_dir",
        "threads",
        "device",
        "checkpoint_period_s",
        "checkpoints_to_keep",
        "target_acc",
        "eval_batch_size",
        "compile",
        "compile_mode",
        "provenance",
        "experiment_id",
        "compare",
        "max_seeds",
        "equivalence_margin",
        "until_resolved",
    }
)
# The settings that may be an axis of the grid: those that change a result (the config refuses the few that
# still cannot be one, ``ablate.spec.config.NOT_AN_AXIS``).
SWEEPABLE = frozenset(k for k in TrainSettings.model_fields if k not in NO_RESULT)


def as_it_acts(key: str, value: Any, dataset: Any) -> Any:
    """A setting's value as it acts: a default that means a value is that value (``precision: auto`` is fp32;
    ``crop_pad``/``flip`` unset are the dataset's own, ``channels_last`` unset is on).  The identity compares
    settings so, and a sweep's values are read so (two values that act alike are one)."""
    if value is None or value == "auto":
        crop, flip = AUGMENT.get(dataset, (None, None))
        return {"precision": "fp32", "crop_pad": crop, "flip": flip, "channels_last": True}.get(key, value)
    return value


def sweep_as_it_acts(sweep: Any, dataset: Any) -> Any:
    """A sweep's values as they act (``as_it_acts``): how an experiment written before they were read so reads now."""
    if not isinstance(sweep, dict):
        return sweep
    return {k: [as_it_acts(k, v, dataset) for v in vs] if isinstance(vs, list) else vs for k, vs in sweep.items()}
