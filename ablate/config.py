"""Typed experiment configs: YAML files are small diffs from these defaults.

Unknown keys and wrong types are errors that name the key; ``key=value`` overrides on the
command line are parsed as YAML (``depths=[20,56]``, ``wandb.mode=offline``).  Everything here
runs before Ray or a GPU is touched, so a mistake costs seconds, not a cluster.
"""
from __future__ import annotations

import dataclasses
import os
import re
import reprlib
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from .blocks import import_block_modules, list_blocks
from .data import DATASETS
from .models import valid_depth
from .train import TrainConfig, TrainSettings

__all__ = ["ConfigError", "WandbSettings", "ExperimentConfig", "load_experiment", "find_experiment",
           "IDENTITY_EXEMPT", "trial_configs"]


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


@dataclass
class WandbSettings:
    project: str = "ablate"
    entity: Optional[str] = None
    mode: str = "auto"          # auto (online with an API key, else offline) | online | offline | disabled
    tags: List[str] = field(default_factory=list)
    init_timeout: float = 60.0  # seconds before giving up on W&B and falling back to offline


@dataclass
class ExperimentConfig(TrainSettings):
    """An ablation grid: block x depth x lr x seed, every trial with the same settings."""

    name: str = "default"
    blocks: List[str] = field(default_factory=list_blocks)
    depths: List[int] = field(default_factory=lambda: [20, 56])
    lrs: List[float] = field(default_factory=lambda: [0.05, 0.1])
    seeds: List[int] = field(default_factory=lambda: [0, 1])
    # Local directory or a URI (s3://...) shared by all nodes; $ABLATE_STORAGE_PATH sets the default.
    storage_path: str = field(default_factory=lambda: os.environ.get("ABLATE_STORAGE_PATH", "results"))
    cpus_per_trial: float = 1.0
    gpus_per_trial: Optional[float] = None  # None: 1/trials_per_gpu where the cluster has GPUs, else 0
    trials_per_gpu: int = 4             # packing measured in docs/benchmarks.md
    max_concurrent_trials: int = 0      # 0: as many as the resources allow
    scheduler: str = "fifo"             # fifo (fair convergence comparison) | asha (early stopping)
    asha_grace_period: int = 5
    asha_reduction_factor: int = 3
    # Modules with the user's own @register_block classes (e.g. my_blocks beside the experiment file),
    # imported here and in every trial, on every node (shipped with Ray's runtime env, py_modules).
    block_modules: List[str] = field(default_factory=list)
    max_failures: int = 3               # retries per trial, each from its last checkpoint
    checkpoint_period_s: float = 30.0   # a checkpoint per this much training (and at the end); 0: every epoch
    checkpoints_to_keep: int = 1        # per trial (Tune's num_to_keep: each checkpoint then snapshots Tune's state)
    target_acc: float = 0.9             # "epochs to target" in the ablation table
    wandb: WandbSettings = field(default_factory=WandbSettings)


# Settings that may change when an experiment is resumed (they do not change any result).
IDENTITY_EXEMPT = {"storage_path", "cpus_per_trial", "gpus_per_trial", "trials_per_gpu",
                   "max_concurrent_trials", "max_failures", "wandb", "data_dir", "threads", "device",
                   "checkpoint_period_s", "checkpoints_to_keep", "provenance"}

_ALLOWED = {
    "schedule": ("step", "cosine", "constant"),
    "shortcut": ("A", "B"),
    "precision": ("auto", "fp32", "bf16"),
    "device": ("auto", "cpu", "cuda"),
    "scheduler": ("fifo", "asha"),
    "dataset": DATASETS,
    "compile_mode": ("default", "reduce-overhead", "max-autotune-no-cudagraphs"),
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, List):
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return f"{_type_name(args[0])} or null"
    return getattr(tp, "__name__", str(tp))


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to float)."""
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(key, value, args[0])
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(f"key '{key}' must be a {_type_name(tp)}, got {type(value).__name__} {_short(value)}")
        (inner,) = typing.get_args(tp)
        return [_coerce(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string; users write it so
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"key '{key}' must be a number, got {type(value).__name__} {_short(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"key '{key}' must be an integer, got {type(value).__name__} {_short(value)}")
        return value
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # name=2024
    if tp in (bool, str):
        if not isinstance(value, tp):
            raise ConfigError(f"key '{key}' must be a {tp.__name__}, got {type(value).__name__} {_short(value)}")
        return value
    raise ConfigError(f"key '{key}' has an unsupported type {tp}")  # pragma: no cover


def _build(cls, data: Dict[str, Any], prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown key '{full}'; valid keys: {', '.join(sorted(names))}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ConfigError(f"key '{full}' must be a mapping of {', '.join(f.name for f in fields(tp))}")
            kwargs[key] = _build(tp, value, prefix=f"{full}.")
        else:
            kwargs[key] = _coerce(full, value, tp)
    return cls(**kwargs)


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
    modules = _coerce("block_modules", data.get("block_modules", []), List[str])
    try:
        import_block_modules(modules, search_path=str(p.resolve().parent))
    except Exception as e:  # the user's module failed to import: one line, not its traceback
        raise ConfigError(f"key 'block_modules': cannot import {_short(modules)} ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}); allowed: importable module names, "
                          "e.g. a my_blocks.py beside the experiment file") from None
    cfg = _build(ExperimentConfig, data)
    validate(cfg)
    return cfg


# Ranges beyond which a value is a typo, not a study (each far above anything published).
BOUNDS = {
    "epochs": (1, 10_000), "batch_size": (1, 65_536), "eval_batch_size": (1, 65_536),
    "momentum": (0.0, 0.999), "weight_decay": (0.0, 0.1), "lr_decay": (0.0, 1.0),
    "warmup_epochs": (0.0, 10_000), "label_smoothing": (0.0, 0.99), "cpus_per_trial": (0.01, 1024),
    "trials_per_gpu": (1, 64), "max_failures": (0, 100), "max_concurrent_trials": (0, 100_000),
    "asha_grace_period": (1, 10_000), "asha_reduction_factor": (2, 100), "diverge_factor": (1.0, 1e6),
    "threads": (0, 1024),
}
MAX_AXIS, MAX_LR, MAX_DEPTH = 1000, 1000.0, 1202  # 1202: He et al.'s deepest CIFAR ResNet


def validate(cfg: ExperimentConfig) -> None:
    for key, allowed in _ALLOWED.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"key '{key}' is {_short(getattr(cfg, key))}; allowed: {', '.join(allowed)}")
    for axis in ("blocks", "depths", "lrs", "seeds"):
        values = getattr(cfg, axis)
        if not values:
            raise ConfigError(f"axis '{axis}' is empty; give at least one value")
        if len(set(values)) != len(values):
            raise ConfigError(f"axis '{axis}' repeats a value: {values}")
    valid = list_blocks()
    for b in cfg.blocks:
        if b not in valid:
            raise ConfigError(f"key 'blocks': unknown block {_short(b)}; valid blocks: {', '.join(valid)}")
    for d in cfg.depths:
        if not valid_depth(d):
            raise ConfigError(f"key 'depths': {d} is not a CIFAR ResNet depth; valid depths are 6n+2 "
                              "(8, 14, 20, 26, 32, 44, 56, 110, ...)")
    for lr in cfg.lrs:
        if not lr > 0 or lr != lr or lr == float("inf"):
            raise ConfigError(f"key 'lrs': learning rate {lr} must be a finite number > 0")
    positive = ("epochs", "batch_size", "eval_batch_size", "trials_per_gpu", "asha_grace_period",
                "checkpoints_to_keep")
    for key in positive:
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"key '{key}' must be > 0, got {getattr(cfg, key)}")
    if cfg.cpus_per_trial <= 0:
        raise ConfigError(f"key 'cpus_per_trial' must be > 0, got {cfg.cpus_per_trial}")
    if cfg.gpus_per_trial is not None and not 0 <= cfg.gpus_per_trial <= 8:
        raise ConfigError(f"key 'gpus_per_trial' must be between 0 and 8 (a fraction packs trials), "
                          f"got {cfg.gpus_per_trial}")
    if not 0 <= cfg.checkpoint_period_s <= 86_400:
        raise ConfigError(f"key 'checkpoint_period_s' must be between 0 (every epoch) and 86400, "
                          f"got {cfg.checkpoint_period_s}")
    if cfg.max_concurrent_trials < 0 or cfg.max_failures < 0:
        raise ConfigError("keys 'max_concurrent_trials' and 'max_failures' must be >= 0")
    if not 0 < cfg.target_acc <= 1:
        raise ConfigError(f"key 'target_acc' must be in (0, 1], got {cfg.target_acc}")
    if not all(0 < m < 1 for m in cfg.milestones):
        raise ConfigError(f"key 'milestones' must be fractions of training in (0, 1), got {cfg.milestones}")
    for key, (low, high) in BOUNDS.items():  # beyond what any real study needs: a typo, not a plan
        v = getattr(cfg, key)
        if not low <= v <= high:
            raise ConfigError(f"key '{key}' is {_short(v)}; allowed: {low:g} to {high:g}")
    for axis in ("blocks", "depths", "lrs", "seeds"):
        if len(getattr(cfg, axis)) > MAX_AXIS:
            raise ConfigError(f"axis '{axis}' has {len(getattr(cfg, axis))} values; allowed: at most {MAX_AXIS}")
    if max(cfg.lrs) > MAX_LR:
        raise ConfigError(f"key 'lrs': learning rate {max(cfg.lrs):g} is above {MAX_LR:g}; allowed: 0 < lr <= {MAX_LR:g}")
    if max(cfg.depths) > MAX_DEPTH:
        raise ConfigError(f"key 'depths': {max(cfg.depths)} is deeper than {MAX_DEPTH}; allowed: 6n+2 up to {MAX_DEPTH}")
    if cfg.scheduler == "asha" and cfg.asha_grace_period > cfg.epochs:
        raise ConfigError(f"key 'asha_grace_period' is {cfg.asha_grace_period} but 'epochs' is {cfg.epochs}; "
                          "allowed: 1 to epochs")
    if cfg.warmup_epochs > cfg.epochs:
        raise ConfigError(f"key 'warmup_epochs' is {cfg.warmup_epochs:g} but 'epochs' is {cfg.epochs}; allowed: 0 to epochs")
    if not cfg.storage_path.strip():
        raise ConfigError("key 'storage_path' is empty; allowed: a directory (default results) or a URI such as "
                          "s3://bucket/path")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", cfg.name):
        raise ConfigError(f"key 'name' {_short(cfg.name)} must be letters, digits, '_', '.', '-' (it names a directory)")
    if cfg.wandb.mode not in ("auto", "online", "offline", "disabled"):
        raise ConfigError(f"key 'wandb.mode' is {_short(cfg.wandb.mode)}; allowed: auto, online, offline, disabled")


def to_dict(cfg: ExperimentConfig) -> Dict[str, Any]:
    return dataclasses.asdict(cfg)


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
    """Every trial of the grid, in a stable order."""
    settings = {f.name: getattr(cfg, f.name) for f in fields(TrainSettings)}
    return [TrainConfig(block=b, depth=d, lr=lr, seed=s, **settings)
            for b in cfg.blocks for d in cfg.depths for lr in cfg.lrs for s in cfg.seeds]
