"""An experiment file read into its typed config: YAML that refuses duplicate keys and alias bombs,
``key=value`` overrides (parsed as YAML: ``depths=[20,56]``, ``wandb.mode=offline``), a user's block
modules imported before the rest is validated (so their blocks are known), then ``ExperimentConfig``.
Everything here runs before Ray or a GPU is touched, so a mistake costs seconds, not a cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from pydantic import Field

from ablate.errors import ConfigError, first_line
from ablate.formatting import short
from ablate.models.registry import import_block_modules
from ablate.spec.config import ExperimentConfig, axis_settings, validated
from ablate.spec.settings import Settings

__all__ = ["load_experiment", "find_experiment", "parse_override"]

MAX_DOCUMENT_BYTES = 256 * 1024  # an experiment file is a few hundred bytes
MAX_ALIASES = 100  # YAML anchors/aliases: enough for reuse, too few for a "billion laughs"


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
                raise ConfigError(
                    f"key {short(key)} is given twice (line {key_node.start_mark.line + 1}); give each key once"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


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
        raise ConfigError(f"override {short(item)} must look like key=value (for example epochs=5 or depths=[20,56])")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {short(item)} has no key")
    try:
        value = _yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(
            f"override {short(key)}: cannot parse value {short(raw)} "
            f"({first_line(e)}); write lists as [a,b] and quote odd strings"
        ) from None
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
            raise ConfigError(f"experiment file {short(path)} does not exist (ship yours under experiments/)")
        return p
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):  # the checkout: ablate/spec/ is two below
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
        raise ConfigError(
            f"{p}: not UTF-8 text (binary, or another encoding such as UTF-16); save it as UTF-8 YAML"
        ) from None
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
        if key in data and key in axis_settings():  # others cannot be an axis at all: refused below
            raise ConfigError(
                f"key {short(key)} is both set ({short(data[key])}) and swept (sweep.{key}); give it "
                "once: as a setting (one value) or in sweep (several)"
            )
    # A user's blocks first, so that "every registered block" and the block-name check know them.
    modules = validated(_Modules, data).block_modules
    try:
        import_block_modules(modules, search_path=str(p.resolve().parent))
    except (Exception, SystemExit) as e:  # the user's module failed (or exited) on import: one line
        raise ConfigError(
            f"key 'block_modules': cannot import {short(modules)} ({e.__class__.__name__}: "
            f"{first_line(e)}); allowed: importable module names, "
            "e.g. a my_blocks.py beside the experiment file"
        ) from None
    for name in modules:  # what Ray ships to every node is a module's file (py_modules)
        module = sys.modules.get(name.split(".")[0])
        if module is not None and not hasattr(module, "__path__") and not getattr(module, "__file__", None):
            raise ConfigError(
                f"key 'block_modules': {short(name)} is built into Python (it has no file to ship to "
                "the trials); allowed: your own modules, e.g. a my_blocks.py beside the experiment file"
            )
    return validated(ExperimentConfig, data)
