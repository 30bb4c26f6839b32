"""Typed experiment configs: YAML files are small diffs from these defaults.

The types, bounds and allowed values are declared once, on pydantic models (``TrainSettings``
in ``train``, ``ExperimentConfig`` here), in strict mode; pydantic's first error becomes one line
that names the key and what is allowed.  ``key=value`` overrides on the command line are parsed
as YAML (``depths=[20,56]``, ``wandb.mode=offline``).  Everything here runs before Ray or a GPU
is touched, so a mistake costs seconds, not a cluster.
"""
from __future__ import annotations

import itertools
import os
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional

import yaml
from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator

from .blocks import get_block, import_block_modules, list_blocks
from .models import valid_depth
from .storage import is_uri
from .train import AXES, Number, Settings, TrainConfig, TrainSettings, trial_key

__all__ = ["ConfigError", "WandbSettings", "ExperimentConfig", "load_experiment", "find_experiment",
           "IDENTITY_EXEMPT", "trial_configs", "trial_groups", "AXIS_KEYS"]


class ConfigError(ValueError):
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


class ExperimentConfig(TrainSettings):
    """An ablation grid: block x depth x lr x seed, every trial with the same settings."""

    name: Annotated[str, BeforeValidator(_name)] = "default"
    blocks: Axis(str) = Field(default_factory=list_blocks)
    depths: Axis(Annotated[int, Field(ge=8, le=MAX_DEPTH)]) = Field(default_factory=lambda: [20, 56])
    lrs: Axis(Annotated[Number, Field(gt=0, le=MAX_LR)]) = Field(default_factory=lambda: [0.05, 0.1])
    seeds: Axis(int) = Field(default_factory=lambda: [0, 1])
    # Local directory or a URI (s3://...) shared by all nodes; $ABLATE_STORAGE_PATH sets the default.
    storage_path: str = Field(default_factory=lambda: os.environ.get("ABLATE_STORAGE_PATH", "results"))
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
    # Per trial (Tune's num_to_keep: each checkpoint then snapshots Tune's state).
    checkpoints_to_keep: Annotated[int, Field(gt=0, le=100)] = 1
    target_acc: Annotated[Number, Field(gt=0, le=1)] = 0.9  # "epochs to target" in the ablation table
    wandb: WandbSettings = Field(default_factory=WandbSettings)

    # Domain rules belong to their modules: the block registry, the model's depths.
    @field_validator("blocks")
    @classmethod
    def _known_blocks(cls, blocks: List[str]) -> List[str]:
        for b in blocks:
            get_block(b)
        return _distinct(blocks)

    @field_validator("depths")
    @classmethod
    def _resnet_depths(cls, depths: List[int]) -> List[int]:
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
        return path

    @model_validator(mode="after")
    def _within_epochs(self) -> "ExperimentConfig":
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
        return self

    @property
    def experiment_dir(self) -> str:
        """Where the experiment lives: Tune's state, the trials, the identity file."""
        if is_uri(self.storage_path):
            return self.storage_path.rstrip("/") + "/" + self.name
        return os.path.join(os.path.abspath(self.storage_path), self.name)

    @property
    def output_dir(self) -> str:
        """Where the CSVs and the report are written: the experiment, or a local mirror of a URI."""
        return os.path.abspath(os.path.join("results", self.name)) if is_uri(self.storage_path) else self.experiment_dir

    def train_settings(self) -> Dict[str, Any]:
        """What every trial of the grid shares: its ``TrainSettings``."""
        return {k: getattr(self, k) for k in TrainSettings.model_fields}

    def axes(self) -> Dict[str, list]:
        """The grid: each axis (``train.AXES``) with its values."""
        return {a: getattr(self, k) for a, k in AXIS_KEYS.items()}


# Settings that may change when an experiment is resumed (they do not change any result).
IDENTITY_EXEMPT = {"storage_path", "cpus_per_trial", "gpus_per_trial", "trials_per_gpu",
                   "max_concurrent_trials", "max_failures", "wandb", "data_dir", "threads", "device",
                   "checkpoint_period_s", "checkpoints_to_keep", "provenance"}
AXIS_KEYS = dict(zip(AXES, ("blocks", "depths", "lrs", "seeds")))  # a trial's axis -> the experiment's key


def _distinct(values: list) -> list:
    if len(set(values)) != len(values):
        raise ValueError(f"repeats a value: {_short(values)}")
    return values


# --- pydantic's errors, as one line that names the key and what is allowed -------------------

def _schema(model: type, loc: tuple) -> Dict[str, Any]:
    """The JSON schema pydantic derives for the key at ``loc`` (list indices step into the items):
    its allowed values (``enum``), bounds (``minimum``, ``exclusiveMaximum``, ...) and keys."""
    root = model.model_json_schema()

    def resolve(node: Dict[str, Any]) -> Dict[str, Any]:
        while "$ref" in node or "anyOf" in node:  # a nested model; Optional[...]
            node = root["$defs"][node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else \
                next(a for a in node["anyOf"] if a.get("type") != "null")
        return node

    node = resolve(root)
    for part in loc:
        node = resolve(node["items"] if isinstance(part, int) else node["properties"][part])
    return node


def _range(node: Dict[str, Any]) -> str:
    # JSON schema's names, or pydantic's own where a validator keeps it from mapping them.
    lo, hi = node.get("minimum", node.get("ge")), node.get("maximum", node.get("le"))
    if lo is not None and hi is not None:
        return f"{lo:g} to {hi:g}"
    bounds = [(">=", lo), (">", node.get("exclusiveMinimum", node.get("gt"))), ("<=", hi),
              ("<", node.get("exclusiveMaximum", node.get("lt")))]
    return " and ".join(f"{op} {v:g}" for op, v in bounds if v is not None)


_KINDS = {"int": "an integer", "float": "a number", "bool": "a bool", "string": "a string", "list": "a list"}


def _message(err: Dict[str, Any], model: type) -> str:
    """One pydantic error as a line: the key, what is wrong, what is allowed."""
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    key = ".".join(p for p in loc if isinstance(p, str))  # a list's own key, for rules on its values
    got = f"got {type(value).__name__} {_short(value)}"
    if kind == "extra_forbidden":
        return f"unknown key '{path}'; valid keys: {', '.join(sorted(_schema(model, loc[:-1])['properties']))}"
    if kind == "value_error":  # a domain rule: its own words
        text = str(err["ctx"]["error"])
        return text if not loc else f"key '{key}': {text}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"key '{path}' must be a mapping of {', '.join(_schema(model, loc)['properties'])}, {got}"
    if kind == "literal_error":
        return f"key '{path}' is {_short(value)}; allowed: {', '.join(map(str, _schema(model, loc)['enum']))}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        what = f"key '{key}' holds {_short(value)}" if key != path else f"key '{key}' is {_short(value)}"
        return f"{what}; allowed: {_range(_schema(model, loc))}"
    if kind == "finite_number":
        return f"key '{key}' holds {_short(value)}; allowed: a finite number"
    if kind == "too_short":
        return f"axis '{path}' is empty; give at least one value"
    if kind == "too_long":
        return f"axis '{path}' has {len(value)} values; allowed: at most {MAX_AXIS}"
    stem = kind.split("_")[0]
    if stem in _KINDS:
        return f"key '{path}' must be {_KINDS[stem]}, {got}"
    return f"key '{path}': {err['msg']} ({got})"


def _validate(model: type, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_message(e.errors(include_url=False)[0], model)) from None


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
                          f"({str(e).splitlines()[0]}); write lists as [a,b] and quote odd strings") from None
    return key, value


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
        raise ConfigError(f"{p}: malformed YAML: {str(e).splitlines()[0]} ({e.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: an experiment must be a mapping of keys to values, got {type(data).__name__}")
    for item in overrides or []:
        key, value = parse_override(item)
        _nested_update(data, key, value)
    # A user's blocks first, so that "every registered block" and the block-name check know them.
    modules = _validate(_Modules, data).block_modules
    try:
        import_block_modules(modules, search_path=str(p.resolve().parent))
    except Exception as e:  # the user's module failed to import: one line, not its traceback
        raise ConfigError(f"key 'block_modules': cannot import {_short(modules)} ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); allowed: importable module names, "
                          "e.g. a my_blocks.py beside the experiment file") from None
    return _validate(ExperimentConfig, data)


def to_dict(cfg: ExperimentConfig) -> Dict[str, Any]:
    return cfg.model_dump()


# Keys that may gain values on --resume: the experiment grows, its finished trials stay.
GROWABLE = ("blocks", "depths", "lrs", "seeds", "block_modules")


def growth(saved: Dict[str, Any], now: Dict[str, Any]) -> tuple:
    """Compare two identities: (keys that differ in a way no resume allows, {axis: values added}).

    An axis (or ``block_modules``) may gain values; any other difference, or a value removed,
    is a different experiment.
    """
    refused, added = [], {}
    for k in sorted(set(saved) | set(now)):
        a, b = saved.get(k), now.get(k)
        if a == b:
            continue
        if k in GROWABLE and isinstance(a, list) and isinstance(b, list) and all(v in b for v in a):
            added[k] = [v for v in b if v not in a]
        else:
            refused.append(k)
    return refused, added


def identity(cfg) -> Dict[str, Any]:
    """What makes two experiments the same one (compared on ``--resume``); a config or its dict."""
    d = cfg if isinstance(cfg, dict) else to_dict(cfg)
    return {k: v for k, v in d.items() if k not in IDENTITY_EXEMPT}


def trial_configs(cfg: ExperimentConfig) -> List[TrainConfig]:
    """Every trial of the grid, in a stable order: the one expansion of the grid."""
    settings, axes = cfg.train_settings(), cfg.axes()
    return [TrainConfig(**settings, **dict(zip(axes, point)))
            for point in itertools.product(*axes.values())]


def trial_groups(cfg: ExperimentConfig, points: Optional[List[Dict[str, Any]]] = None) -> List[List[TrainConfig]]:
    """The grid's trials (or those of ``points``) in groups of up to ``fuse_trials`` that share block
    and depth: each group trains as one fused model."""
    by_model: Dict[tuple, List[TrainConfig]] = {}
    trials = trial_configs(cfg)
    if points is not None:
        wanted = {trial_key(p) for p in points}
        trials = [t for t in trials if t.key in wanted]
    for t in trials:
        by_model.setdefault((t.block, t.depth), []).append(t)
    n = cfg.fuse_trials
    return [ts[i:i + n] for ts in by_model.values() for i in range(0, len(ts), n)]
