"""Typed experiment configs: YAML files are small diffs from these defaults.

The types, bounds and allowed values are declared once, on pydantic models (``TrainSettings``
in ``ablate.spec.settings``, ``ExperimentConfig`` here), in strict mode; pydantic's first error becomes one
line that names the key and what is allowed.  A file and its ``key=value`` overrides are read into
one by ``ablate.spec.experiment_file``.
"""

from __future__ import annotations

import math
import os
import re
import typing
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import (
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ablate.errors import ConfigError
from ablate.formatting import short, value_text
from ablate.models.registry import check_block, list_blocks, valid_depth
from ablate.spec.axes import AXES, BASELINE, GRID, PAIR, expand, fused_key, label_digits
from ablate.spec.messages import message
from ablate.spec.settings import NO_RESULT, SWEEPABLE, Number, Settings, TrainSettings, as_it_acts
from ablate.spec.trial import TrainConfig
from ablate.storage import is_uri, local_mirror

__all__ = [
    "ConfigError",
    "WandbSettings",
    "ExperimentConfig",
    "trial_configs",
    "trial_groups",
    "point_config",
    "CompareSettings",
]


MAX_AXIS, MAX_LR, MAX_DEPTH = 1000, 1000.0, 1202  # 1202: He et al.'s deepest CIFAR ResNet
MAX_TRIALS = 100_000  # the grid (the product of its axes): far beyond a study, within what a driver holds
MAX_SEED = 2**31 - 1


def _name(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value  # name=2024


def Axis(item: Any) -> Any:
    """A grid axis: 1 to MAX_AXIS distinct values."""
    return Annotated[List[item], Field(min_length=1, max_length=MAX_AXIS)]


class WandbSettings(Settings):
    project: str = "ablate"
    entity: Optional[str] = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online with an API key, else offline
    tags: List[str] = Field(default_factory=list)
    init_timeout: Annotated[Number, Field(gt=0, le=3600)] = 60.0  # seconds before W&B falls back to offline


class CompareSettings(Settings):
    """What the report compares: each value of ``axis`` against ``reference``, paired by seed, within every
    cell of the other axes (the context).  The default asks the project's question: each block against
    the baseline at every depth and LR."""

    axis: str = "block"
    reference: Optional[Union[str, int, float, bool]] = None  # None: baseline (the block axis only)


class ExperimentConfig(TrainSettings):
    """An ablation grid: block x depth x lr x seed (x any swept setting); every trial with the same settings."""

    name: Annotated[str, BeforeValidator(_name), Field(max_length=100)] = "default"
    blocks: Axis(str) = Field(default_factory=list_blocks)
    depths: Axis(Annotated[int, Field(ge=8, le=MAX_DEPTH)]) = Field(default_factory=lambda: [20, 56])
    lrs: Axis(Annotated[Number, Field(gt=0, le=MAX_LR)]) = Field(default_factory=lambda: [0.05, 0.1])
    # Seeds within every generator's range (torch, numpy, scikit-learn: 32 bits).
    seeds: Axis(Annotated[int, Field(ge=0, le=MAX_SEED)]) = Field(default_factory=lambda: [0, 1])
    # Local directory or a URI (s3://...) shared by all nodes; $ABLATE_STORAGE_PATH sets the default
    # (checked like a value given here: an empty one is an error, not the current directory).
    storage_path: str = Field(
        default_factory=lambda: os.environ.get("ABLATE_STORAGE_PATH", "results"), validate_default=True
    )
    cpus_per_trial: Annotated[Number, Field(ge=0.01, le=1024)] = 1.0
    # None: 1/trials_per_gpu where the cluster has (or can add) GPUs, else 0; a fraction packs trials.
    gpus_per_trial: Optional[Annotated[Number, Field(ge=0, le=8)]] = None
    trials_per_gpu: Annotated[int, Field(gt=0, le=64)] = 4  # packing measured in docs/benchmarks.md
    max_concurrent_trials: Annotated[int, Field(ge=0, le=100_000)] = 0  # 0: as many as the resources allow
    scheduler: Literal["fifo", "asha"] = "fifo"  # fifo (fair convergence comparison) | asha (early stopping)
    asha_grace_period: Annotated[int, Field(gt=0, le=10_000)] = 5
    asha_reduction_factor: Annotated[int, Field(ge=2, le=100)] = 3
    # Modules with the user's own @register_block classes (e.g. my_blocks beside the experiment file),
    # imported here and in every trial, on every node (shipped with Ray's runtime env, py_modules).
    block_modules: List[str] = Field(default_factory=list)
    # Grid points that differ only in lr and seed train as one model, up to this many (ablate.train.fused);
    # 1: a model per trial.  1 by default: on CPU fusing was slower (docs/benchmarks.md); on GPUs
    # it is not measured yet.
    fuse_trials: Annotated[int, Field(ge=1, le=64)] = 1
    max_failures: Annotated[int, Field(ge=0, le=100)] = 3  # retries per trial, each from its last checkpoint
    # A checkpoint per this much training (and at the end); 0: every epoch.
    checkpoint_period_s: Annotated[Number, Field(ge=0, le=86_400)] = 30.0
    # Per trial, pruned by the trial itself: two, so a newest one cut short (a full disk) has an older beside it.
    checkpoints_to_keep: Annotated[int, Field(gt=0, le=100)] = 2
    target_acc: Annotated[Number, Field(gt=0, le=1)] = 0.9  # "epochs to target" in the ablation table
    wandb: WandbSettings = Field(default_factory=WandbSettings)
    # More axes: any setting that changes a result, with its values (``sweep: {weight_decay: [0, 5e-4]}``);
    # each value is checked by that setting's own type and bounds.
    sweep: Dict[str, Annotated[List[Any], Field(min_length=1, max_length=MAX_AXIS)]] = Field(default_factory=dict)
    compare: CompareSettings = Field(default_factory=CompareSettings)
    # --until-resolved: at most this many seeds per comparison, and the difference (in accuracy points)
    # within which a comparison is "equivalent" (no difference larger than it).
    max_seeds: Annotated[int, Field(ge=2, le=1000)] = 12
    equivalence_margin: Annotated[Number, Field(gt=0, le=100)] = 1.0

    # Domain rules belong to their modules: the block registry, the model's depths.
    @field_validator("blocks")
    @classmethod
    def _known_blocks(cls, blocks: List[str]) -> List[str]:
        for b in blocks:  # the registry knows every name without torch
            check_block(b)
        return _distinct(blocks)

    @field_validator("depths")
    @classmethod
    def _resnet_depths(cls, depths: List[int]) -> List[int]:
        for d in depths:
            if not valid_depth(d):
                raise ValueError(
                    f"{d} is not a CIFAR ResNet depth; valid depths are 6n+2 (8, 14, 20, 26, 32, 44, 56, 110, ...)"
                )
        return _distinct(depths)

    @field_validator("lrs", "seeds")
    @classmethod
    def _distinct_values(cls, values: list) -> list:
        return _distinct(values)

    @field_validator("name")
    @classmethod
    def _directory_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"{short(name)} must be letters, digits, '_', '.', '-' (it names a directory)")
        return name

    @field_validator("storage_path")
    @classmethod
    def _storage_given(cls, path: str) -> str:
        if not path.strip():
            raise ValueError(
                "must not be empty; allowed: a directory (default results) or a URI such as s3://bucket/path"
            )
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/(?!/)", path) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:[^/\\]", path):
            raise ValueError(
                f"{short(path)} looks like a URI without its '//'; allowed: a directory, or a URI such "
                "as s3://bucket/path or file:///path"
            )
        return path if is_uri(path) else os.path.expanduser(path)

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, sweep: Dict[str, List[Any]], info: ValidationInfo) -> Dict[str, List[Any]]:
        out = {}
        dataset, schedule = info.data.get("dataset"), info.data.get("schedule")
        for key, values in sweep.items():
            if key in AXES or key in {a.key for a in GRID}:
                grid_key = next(a.key for a in GRID if key in (a.name, a.key))
                raise ValueError(f"{key!r} is a grid axis already: give its values as {grid_key}: [...]")
            if key not in TrainSettings.model_fields:
                why = "changes no result" if key in NO_RESULT or key in cls.model_fields else "is not a setting"
                raise ValueError(
                    f"{key!r} {why}; allowed: a setting that changes a result ({', '.join(axis_settings())})"
                )
            if key in NO_RESULT:
                raise ValueError(
                    f"{key!r} changes no result, so sweeping it compares nothing; allowed: a setting "
                    "that changes a result"
                )
            if key in NOT_AN_AXIS or _listed(key):
                why = NOT_AN_AXIS.get(key, "holds a list per trial (an axis holds one value per trial)")
                raise ValueError(
                    f"{key!r} {why}, so it cannot be an axis; allowed: one of {', '.join(axis_settings())}"
                )
            schedules = sweep.get("schedule", [schedule])
            if key in STEP_ONLY and "step" not in schedules:
                raise ValueError(
                    f"{key!r} acts only under schedule step (schedule is {short(schedules)[1:-1]}), so its "
                    "values would train alike; allowed: schedule step, or another setting"
                )
            checked = []
            for v in values:
                try:
                    checked.append(getattr(TrainSettings.model_validate({key: v}), key))
                except ValidationError as e:
                    why = message({**e.errors(include_url=False)[0], "loc": (key,)}, TrainSettings, short, MAX_AXIS)
                    raise ValueError(why.removeprefix("key ")) from None
            # Read as they act (null crop_pad is the dataset's own): two values that act alike are one point.
            acting = [as_it_acts(key, v, dataset) for v in checked]
            for j, v in enumerate(acting):
                i = acting.index(v)
                if i < j:
                    alike = (
                        ""
                        if checked[i] == checked[j]
                        else f" ({' and '.join(_yaml_text(checked[k]) for k in (i, j))} both act as "
                        f"{_yaml_text(v)} here)"
                    )
                    raise ValueError(f"sweep.{key} repeats a value: {short(values)}{alike}; give each value once")
            out[key] = acting
        return out

    @model_validator(mode="after")
    def _within_epochs(self) -> "ExperimentConfig":
        n = math.prod(len(v) for v in self.axes().values())
        if n > MAX_TRIALS:
            raise ValueError(f"the grid has {n:,} trials ({' x '.join(self.axes())}); allowed: at most {MAX_TRIALS:,}")
        self._rules()
        ruled = {k: v for k, v in self.sweep.items() if k in _RULED}
        for point in expand(ruled):  # every point's settings obey the same rules (each combination of them)
            try:
                self.model_copy(update=point)._rules()
            except ValueError as e:
                at = ", ".join(f"sweep.{k} = {short(v)}" for k, v in point.items())
                raise ValueError(f"with {at}: {e}") from None
        self._check_compare()
        return self

    def _check_compare(self) -> None:
        """The question must be one the grid can answer: its axis has two values or more, one of them the
        reference (read with the axis's own type: 5e-4 is 0.0005).  The default question (each block against
        baseline) is checked where the grid has several blocks: one block is a study that compares nothing."""
        compare, axes = self.compare, self.axes()
        if compare.axis not in axes or compare.axis == PAIR:
            raise ValueError(
                f"compare.axis {compare.axis!r}: allowed: an axis of the grid other than {PAIR} "
                f"({', '.join(a for a in axes if a != PAIR)})"
            )
        values = axes[compare.axis]
        if compare.reference is None and compare.axis != "block":
            raise ValueError(
                f"compare.reference: which value of {compare.axis} the others are compared against; "
                f"allowed: one of {short(values)}"
            )
        explicit = "compare" in self.model_fields_set
        if not explicit and len(values) < 2:
            return
        if len(values) < 2:
            raise ValueError(
                f"compare.axis {compare.axis!r} has one value ({short(values[0])}): nothing to compare it "
                f"against; allowed: an axis with two values or more "
                f"({', '.join(a for a, v in axes.items() if a != PAIR and len(v) > 1) or 'none here'})"
            )
        if compare.reference is None:
            if BASELINE not in values:
                raise ValueError(
                    f"compare: the default question compares each block against {BASELINE}, which is "
                    f"not in blocks {short(values)}; allowed: add {BASELINE} to blocks, or name the "
                    f"reference: compare={{axis: block, reference: {values[0]}}}"
                )
            return
        reference = self._axis_value(compare.axis, compare.reference)
        if reference is _NO_VALUE or reference not in values:
            raise ValueError(
                f"compare.reference {short(compare.reference)} is not a value of {compare.axis}; "
                f"allowed: one of {short(values)}"
            )
        self.compare = CompareSettings(axis=compare.axis, reference=reference)

    def _axis_value(self, axis: str, value: Any) -> Any:
        """``value`` read as the values of ``axis`` are read (its setting's own type); ``_NO_VALUE`` if it is none."""
        try:
            if axis in self.sweep:
                return as_it_acts(axis, getattr(TrainSettings.model_validate({axis: value}), axis), self.dataset)
            key = next(a.key for a in GRID if a.name == axis)
            return TypeAdapter(type(self).model_fields[key].annotation).validate_python([value], strict=True)[0]
        except ValidationError:
            return _NO_VALUE

    def _rules(self) -> None:
        """What must hold between settings (of the experiment, and of each point of a sweep: ``_RULED``)."""
        if self.scheduler == "asha" and self.asha_grace_period > self.epochs:
            raise ValueError(
                f"key 'asha_grace_period' is {self.asha_grace_period} but 'epochs' is {self.epochs}; "
                "allowed: 1 to epochs"
            )
        if self.scheduler == "asha" and self.fuse_trials > 1:
            raise ValueError(
                f"key 'scheduler' is asha but 'fuse_trials' is {self.fuse_trials}: ASHA stops trials one "
                "by one, a fused group trains its members together; allowed: scheduler fifo, or "
                "fuse_trials 1"
            )
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"key 'warmup_epochs' is {self.warmup_epochs:g} but 'epochs' is {self.epochs}; allowed: 0 to epochs"
            )

    @property
    def experiment_dir(self) -> str:
        """Where the experiment lives: Tune's state, the trials, the identity file."""
        if is_uri(self.storage_path):
            return self.storage_path.rstrip("/") + "/" + self.name
        return os.path.join(os.path.abspath(self.storage_path), self.name)

    @property
    def output_dir(self) -> str:
        """Where the CSVs and the report are written: the experiment, or a local mirror of a URI's.

        A mirror is ``results/<name>@<hash of the URI>``: never a local experiment's folder (a name
        has no '@') and never another URI experiment's."""
        return local_mirror(self.experiment_dir) if is_uri(self.storage_path) else self.experiment_dir

    def train_settings(self) -> Dict[str, Any]:
        """What every trial of the grid shares: its ``TrainSettings``."""
        return {k: getattr(self, k) for k in TrainSettings.model_fields}

    def axes(self) -> Dict[str, list]:
        """The grid: each axis (``ablate.spec.axes``: the four, then the swept settings) with its values."""
        return {**{a.name: getattr(self, a.key) for a in GRID}, **self.sweep}

    def base(self) -> Dict[str, Any]:
        """The experiment's own value of each swept setting, as it acts (as the sweep's values are read): a
        point with it keeps the id it had before the setting was swept (``ablate.spec.axes.trial_key``)."""
        return {k: as_it_acts(k, getattr(self, k), self.dataset) for k in self.sweep}

    def setting_text(self, key: str) -> str:
        """A setting in words: its value, or a swept one's values ("2/10"): each point has its own."""
        return "/".join(map(value_text, self.sweep[key])) if key in self.sweep else value_text(getattr(self, key))

    def digits(self) -> Dict[str, int]:
        """The significant digits each axis's values are named with (``ablate.spec.axes.label_digits``)."""
        return label_digits(self.axes())

    def subject(self) -> Tuple[str, Any]:
        """What the report compares: (axis, reference value), the reference as the axis's values are (parsed
        with its own type when the experiment was read)."""
        axis, ref = self.compare.axis, self.compare.reference
        if ref is None:
            return axis, BASELINE
        values = self.axes()[axis]
        return axis, next((v for v in values if v == ref or str(v) == str(ref)), ref)

    def question_text(self) -> str:
        """The question in words: "each block against baseline", "each weight_decay against weight_decay 0.0005"."""
        axis, ref = self.subject()
        return f"each {axis} against {ref if axis == 'block' else f'{axis} {value_text(ref)}'}"


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"repeats a value: {short(values)}")
    return values


# The swept settings that ``_rules`` reads: a sweep of them is checked at every combination of their values.
_RULED = frozenset({"epochs", "warmup_epochs"})
# Settings that change a result but cannot be an axis, and why.
NOT_AN_AXIS = {
    # One experiment trains on one data set (the driver loads it once, for every trial); and a crop_pad or
    # flip left unset means that data set's own.
    "dataset": "is the data every trial trains on (one data set per experiment: run one experiment per dataset, "
    "each with its own name=)",
    # The memory layout: the same training, faster or slower (docs/benchmarks.md).
    "channels_last": "changes the speed, not what is learned (it compares a run with itself)",
}
STEP_ONLY = frozenset({"lr_decay", "milestones"})  # read by the step schedule alone (ablate.train.recipe.lr_lambda)
_NO_VALUE = object()


def _listed(key: str) -> bool:
    """Whether a setting holds a list (``milestones``): a list per trial is no axis value."""
    return typing.get_origin(TrainSettings.model_fields[key].annotation) is list


def axis_settings() -> List[str]:
    """The settings a sweep may name: those that change a result and can be an axis."""
    return sorted(k for k in SWEEPABLE if k not in NOT_AN_AXIS and not _listed(k))


def _yaml_text(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else short(value)


def validated(model: type, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(message(e.errors(include_url=False)[0], model, short, MAX_AXIS)) from None


def to_dict(cfg: ExperimentConfig) -> Dict[str, Any]:
    return cfg.model_dump()


def point_config(cfg: ExperimentConfig, point: Dict[str, Any], digits: Optional[Dict[str, int]] = None) -> TrainConfig:
    """A grid point's trial: the experiment's settings, with the point's values (its swept settings too,
    as they act: a point an --until-resolved round wrote down before they were read so)."""
    point = {k: as_it_acts(k, v, cfg.dataset) if k in cfg.sweep else v for k, v in point.items()}
    return TrainConfig.of_point(cfg.train_settings(), point, cfg.base(), cfg.digits() if digits is None else digits)


def trial_configs(cfg: ExperimentConfig) -> List[TrainConfig]:
    """Every trial of the grid, in a stable order: the one expansion of the grid (its swept values are read
    as they act already: ``point_config``'s, without its per-point work)."""
    settings, base, digits = cfg.train_settings(), cfg.base(), cfg.digits()
    return [TrainConfig.of_point(settings, p, base, digits) for p in expand(cfg.axes())]


def trial_groups(cfg: ExperimentConfig, points: Optional[List[Dict[str, Any]]] = None) -> List[List[TrainConfig]]:
    """The grid's trials (or those of ``points``) in groups of up to ``fuse_trials`` that share every axis
    fusion cannot vary per member (all but lr and seed): each group trains as one fused model."""
    by_model: Dict[tuple, List[TrainConfig]] = {}
    digits = cfg.digits()
    trials = trial_configs(cfg) if points is None else [point_config(cfg, p, digits) for p in points]
    for t in trials:
        by_model.setdefault(fused_key(t.point), []).append(t)
    n = cfg.fuse_trials
    return [ts[i : i + n] for ts in by_model.values() for i in range(0, len(ts), n)]
