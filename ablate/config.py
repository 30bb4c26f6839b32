"""Typed experiment configs: YAML files are small diffs from these defaults.

The types, bounds and allowed values are declared once, on pydantic models (``TrainSettings``
in ``train``, ``ExperimentConfig`` here), in strict mode; pydantic's first error becomes one line
that names the key and what is allowed.  ``key=value`` overrides on the command line are parsed
as YAML (``depths=[20,56]``, ``wandb.mode=offline``).  Everything here runs before Ray or a GPU
is touched, so a mistake costs seconds, not a cluster.
"""
from __future__ import annotations

import math
import os
import re
import reprlib
import sys
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from .axes import AXES, BASELINE, GRID, PAIR, expand, fused_key, sweepable
from .messages import AblateError, first_line, message
from .settings import NO_RESULT, Number, Settings, TrainConfig, TrainSettings
from .storage import is_uri, local_mirror

# The block registry and the models import torch: only validating a config (or importing a user's blocks)
# needs them, never reading an experiment back (the study, the tables, the report).


def list_blocks() -> List[str]:
    from .blocks import list_blocks as registered

    return registered()


def import_block_modules(names, search_path: Optional[str] = None) -> None:
    if names:
        from .blocks import import_block_modules as imported

        imported(names, search_path)

__all__ = ["ConfigError", "WandbSettings", "ExperimentConfig", "load_experiment", "find_experiment",
           "trial_configs", "trial_groups", "point_config", "CompareSettings"]


class ConfigError(AblateError, ValueError):
    """A bad experiment: the message names the key and what is allowed."""


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def _short(value: Any) -> str:
    """A value in an error message: bounded, so a hostile document cannot make the message huge."""
    return _REPR.repr(value)


MAX_DOCUMENT_BYTES = 256 * 1024   # an experiment file is a few hundred bytes
MAX_ALIASES = 100                 # YAML anchors/aliases: enough for reuse, too few for a "billion laughs"


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys and alias bombs."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_ALIASES:
                raise ConfigError(f"more than {MAX_ALIASES} YAML aliases (*name); write the values out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key {_short(key)} is given twice (line {key_node.start_mark.line + 1}); "
                                  "give each key once")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


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
    storage_path: str = Field(default_factory=lambda: os.environ.get("ABLATE_STORAGE_PATH", "results"),
                              validate_default=True)
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
    # Grid points that differ only in lr and seed train as one model, up to this many (ablate.fused);
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
        from .blocks import get_block

        for b in blocks:
            get_block(b)
        return _distinct(blocks)

    @field_validator("depths")
    @classmethod
    def _resnet_depths(cls, depths: List[int]) -> List[int]:
        from .models import valid_depth

        for d in depths:
            if not valid_depth(d):
                raise ValueError(f"{d} is not a CIFAR ResNet depth; valid depths are 6n+2 "
                                 "(8, 14, 20, 26, 32, 44, 56, 110, ...)")
        return _distinct(depths)

    @field_validator("lrs", "seeds")
    @classmethod
    def _distinct_values(cls, values: list) -> list:
        return _distinct(values)

    @field_validator("name")
    @classmethod
    def _directory_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise ValueError(f"{_short(name)} must be letters, digits, '_', '.', '-' (it names a directory)")
        return name

    @field_validator("storage_path")
    @classmethod
    def _storage_given(cls, path: str) -> str:
        if not path.strip():
            raise ValueError("must not be empty; allowed: a directory (default results) or a URI such as s3://bucket/path")
        if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/(?!/)", path) or re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:[^/\\]", path):
            raise ValueError(f"{_short(path)} looks like a URI without its '//'; allowed: a directory, or a URI such "
                             "as s3://bucket/path or file:///path")
        return path if is_uri(path) else os.path.expanduser(path)

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, sweep: Dict[str, List[Any]]) -> Dict[str, List[Any]]:
        out = {}
        for key, values in sweep.items():
            if key in AXES or key in {a.key for a in GRID}:
                grid_key = next(a.key for a in GRID if key in (a.name, a.key))
                raise ValueError(f"{key!r} is a grid axis already: give its values as {grid_key}: [...]")
            if key not in TrainSettings.model_fields:
                known = sorted(sweepable())
                why = ("changes no result" if key in NO_RESULT or key in cls.model_fields else "is not a setting")
                raise ValueError(f"{key!r} {why}; allowed: a setting that changes a result ({', '.join(known)})")
            if key in NO_RESULT:
                raise ValueError(f"{key!r} changes no result, so sweeping it compares nothing; allowed: a setting "
                                 "that changes a result")
            checked = []
            for v in values:
                try:
                    checked.append(getattr(TrainSettings.model_validate({key: v}), key))
                except ValidationError as e:
                    why = message({**e.errors(include_url=False)[0], "loc": (key,)}, TrainSettings, _short, MAX_AXIS)
                    raise ValueError(why.removeprefix("key ")) from None
            out[key] = _distinct(checked)
        return out

    @model_validator(mode="after")
    def _within_epochs(self) -> "ExperimentConfig":
        n = math.prod(len(v) for v in self.axes().values())
        if n > MAX_TRIALS:
            raise ValueError(f"the grid has {n:,} trials ({' x '.join(self.axes())}); allowed: at most {MAX_TRIALS:,}")
        self._rules()
        for key, values in self.sweep.items():  # every point's settings obey the same rules
            for v in values:
                try:
                    self.model_copy(update={key: v})._rules()
                except ValueError as e:
                    raise ValueError(f"with sweep.{key} = {_short(v)}: {e}") from None
        compare = self.compare
        if compare.axis not in self.axes() or compare.axis == PAIR:
            raise ValueError(f"compare.axis {compare.axis!r}: allowed: an axis of the grid other than {PAIR} "
                             f"({', '.join(a for a in self.axes() if a != PAIR)})")
        if compare.reference is None and compare.axis != "block":
            raise ValueError(f"compare.reference: which value of {compare.axis} the others are compared against; "
                             f"allowed: one of {_short(self.axes()[compare.axis])}")
        return self

    def _rules(self) -> None:
        """What must hold between settings (of the experiment, and of each point of a sweep)."""
        if self.scheduler == "asha" and self.asha_grace_period > self.epochs:
            raise ValueError(f"key 'asha_grace_period' is {self.asha_grace_period} but 'epochs' is {self.epochs}; "
                             "allowed: 1 to epochs")
        if self.scheduler == "asha" and self.fuse_trials > 1:
            raise ValueError(f"key 'scheduler' is asha but 'fuse_trials' is {self.fuse_trials}: ASHA stops trials one "
                             "by one, a fused trial trains its members together; allowed: scheduler fifo, or "
                             "fuse_trials 1")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"key 'warmup_epochs' is {self.warmup_epochs:g} but 'epochs' is {self.epochs}; "
                             "allowed: 0 to epochs")

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
        """The grid: each axis (``ablate.axes``: the four, then the swept settings) with its values."""
        return {**{a.name: getattr(self, a.key) for a in GRID}, **self.sweep}

    def base(self) -> Dict[str, Any]:
        """The experiment's own value of each swept setting: a point with it keeps the id it had before
        the setting was swept (``ablate.axes.trial_key``)."""
        return {k: getattr(self, k) for k in self.sweep}

    def subject(self) -> Tuple[str, Any]:
        """What the report compares: (axis, reference value), the reference cast as the axis's values are."""
        axis, ref = self.compare.axis, self.compare.reference
        if ref is None:
            return axis, BASELINE
        values = self.axes()[axis]
        return axis, next((v for v in values if str(v) == str(ref) or v == ref), ref)


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"repeats a value: {_short(values)}")
    return values


def _validate(model: type, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(message(e.errors(include_url=False)[0], model, _short, MAX_AXIS)) from None


class _Modules(Settings, extra="ignore"):
    """``block_modules`` alone: read (and imported) before the rest, which may name their blocks."""

    block_modules: List[str] = Field(default_factory=list)


def _nested_update(base: Dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    d = base
    for p in parts[:-1]:
        d = d.setdefault(p, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override '{dotted}': '{p}' is not a mapping")
    d[parts[-1]] = value


def parse_override(item: str) -> tuple:
    if "=" not in item:
        raise ConfigError(f"override {_short(item)} must look like key=value (for example epochs=5 or depths=[20,56])")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {_short(item)} has no key")
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {_short(key)}: cannot parse value {_short(raw)} "
                          f"({first_line(e)}); write lists as [a,b] and quote odd strings") from None
    return key, value


def _raw_scalar(text: str, key: str, value: Any) -> Any:
    """A top-level key's value as written in the document (its scalar's own text), else ``value``."""
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError:
        return value
    for k, v in getattr(node, "value", []) if isinstance(node, yaml.MappingNode) else []:
        if getattr(k, "value", None) == key and isinstance(v, yaml.ScalarNode) and v.tag != "tag:yaml.org,2002:null":
            return v.value
    return value


def find_experiment(path: Optional[str]) -> Path:
    """The experiment file: ``path``, or the embedded ``experiments/default.yaml``."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"experiment file {_short(path)} does not exist (ship yours under experiments/)")
        return p
    for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
        p = root / "experiments" / "default.yaml"
        if p.is_file():
            return p
    raise ConfigError("no experiment named and experiments/default.yaml not found")


def load_experiment(path: Optional[str] = None, overrides: Optional[List[str]] = None) -> ExperimentConfig:
    """Load an experiment file (or the default), apply ``key=value`` overrides, validate."""
    p = find_experiment(path)
    raw = p.read_bytes()
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise ConfigError(f"{p}: {len(raw):,} bytes; an experiment file may have at most {MAX_DOCUMENT_BYTES:,}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text (binary, or another encoding such as UTF-16); "
                          "save it as UTF-8 YAML") from None
    try:
        data = _yaml(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: malformed YAML: {first_line(e)} ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: an experiment must be a mapping of keys to values, got {type(data).__name__}")
    if "name" in data:  # the name as typed (YAML would read 1.10 as 1.1 and 010 as 8)
        data["name"] = _raw_scalar(text, "name", data["name"])
    for item in overrides or []:
        key, value = parse_override(item)
        if key == "name" and "=" in item and not isinstance(value, (list, dict)):
            value = item.split("=", 1)[1].strip()
        _nested_update(data, key, value)
    sweep = data.get("sweep")
    for key in sweep if isinstance(sweep, dict) else ():
        if key in data and key in TrainSettings.model_fields and key not in NO_RESULT:  # others: refused below
            raise ConfigError(f"key {_short(key)} is both set ({_short(data[key])}) and swept (sweep.{key}); give it "
                              "once: as a setting (one value) or in sweep (several)")
    # A user's blocks first, so that "every registered block" and the block-name check know them.
    modules = _validate(_Modules, data).block_modules
    try:
        import_block_modules(modules, search_path=str(p.resolve().parent))
    except (Exception, SystemExit) as e:  # the user's module failed (or exited) on import: one line
        raise ConfigError(f"key 'block_modules': cannot import {_short(modules)} ({e.__class__.__name__}: "
                          f"{first_line(e)}); allowed: importable module names, "
                          "e.g. a my_blocks.py beside the experiment file") from None
    for name in modules:  # what Ray ships to every node is a module's file (py_modules)
        module = sys.modules.get(name.split(".")[0])
        if module is not None and not hasattr(module, "__path__") and not getattr(module, "__file__", None):
            raise ConfigError(f"key 'block_modules': {_short(name)} is built into Python (it has no file to ship to "
                              "the trials); allowed: your own modules, e.g. a my_blocks.py beside the experiment file")
    return _validate(ExperimentConfig, data)


def to_dict(cfg: ExperimentConfig) -> Dict[str, Any]:
    return cfg.model_dump()


def point_config(cfg: ExperimentConfig, point: Dict[str, Any]) -> TrainConfig:
    """A grid point's trial: the experiment's settings, with the point's values (its swept settings too)."""
    return TrainConfig.of_point(cfg.train_settings(), point, cfg.base())


def trial_configs(cfg: ExperimentConfig) -> List[TrainConfig]:
    """Every trial of the grid, in a stable order: the one expansion of the grid."""
    return [point_config(cfg, p) for p in expand(cfg.axes())]


def trial_groups(cfg: ExperimentConfig, points: Optional[List[Dict[str, Any]]] = None) -> List[List[TrainConfig]]:
    """The grid's trials (or those of ``points``) in groups of up to ``fuse_trials`` that share every axis
    fusion cannot vary per member (all but lr and seed): each group trains as one fused model."""
    by_model: Dict[tuple, List[TrainConfig]] = {}
    trials = trial_configs(cfg) if points is None else [point_config(cfg, p) for p in points]
    for t in trials:
        by_model.setdefault(fused_key(t.point), []).append(t)
    n = cfg.fuse_trials
    return [ts[i:i + n] for ts in by_model.values() for i in range(0, len(ts), n)]
