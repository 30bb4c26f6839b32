"""Errors as one line: a pydantic validation error as the key, what is wrong and what is allowed.

The allowed values and bounds come from the JSON schema pydantic derives from the models, so
they are declared once, on the models (``ablate.spec.settings``, ``ablate.spec.config``).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable, Dict

__all__ = ["message"]


def _schema(model: type, loc: tuple) -> Dict[str, Any]:
    """The JSON schema pydantic derives for the key at ``loc`` (list indices step into the items):
    its allowed values (``enum``), bounds (``minimum``, ``exclusiveMaximum``, ...) and keys."""
    root = model.model_json_schema()

    def resolve(node: Dict[str, Any]) -> Dict[str, Any]:
        while "$ref" in node or "anyOf" in node:  # a nested model; Optional[...]
            node = (
                root["$defs"][node["$ref"].rsplit("/", 1)[-1]]
                if "$ref" in node
                else next(a for a in node["anyOf"] if a.get("type") != "null")
            )
        return node

    node = resolve(root)
    for part in loc:
        node = resolve(node["items"] if isinstance(part, int) else node["properties"][part])
    return node


def _range(node: Dict[str, Any]) -> str:
    # JSON schema's names, or pydantic's own where a validator keeps it from mapping them.
    def num(v: Any) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    lo, hi = node.get("minimum", node.get("ge")), node.get("maximum", node.get("le"))
    if lo is not None and hi is not None:
        return f"{num(lo)} to {num(hi)}"
    bounds = [
        (">=", lo),
        (">", node.get("exclusiveMinimum", node.get("gt"))),
        ("<=", hi),
        ("<", node.get("exclusiveMaximum", node.get("lt"))),
    ]
    return " and ".join(f"{op} {num(v)}" for op, v in bounds if v is not None)


_KINDS = {"int": "an integer", "float": "a number", "bool": "a bool", "string": "a string", "list": "a list"}


def message(err: Dict[str, Any], model: type, short: Callable[[Any], str], max_axis: int) -> str:
    """One pydantic error as a line: the key, what is wrong, what is allowed (``short`` bounds a value)."""
    loc, kind, value = tuple(err["loc"]), err["type"], err.get("input")
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    key = ".".join(p for p in loc if isinstance(p, str))  # a list's own key, for rules on its values
    got = f"got {type(value).__name__} {short(value)}"
    if kind == "extra_forbidden":
        keys = sorted(_schema(model, loc[:-1])["properties"])
        if len(", ".join(keys)) <= 300:
            return f"unknown key '{path}'; valid keys: {', '.join(keys)}"

        close = difflib.get_close_matches(str(loc[-1]), keys, n=5, cutoff=0.5)
        return (
            f"unknown key '{path}'; "
            + (f"did you mean {', '.join(close)}? " if close else "")
            + f"({len(keys)} valid keys, each in the README's Experiments section)"
        )
    if kind == "value_error":  # a domain rule: its own words
        text = str(err["ctx"]["error"])
        return text if not loc else f"key '{key}': {text}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        keys = _schema(model, loc).get("properties")  # a Dict field has none: its keys are the user's
        return (
            f"key '{path}' must be a mapping"
            + (f" of {', '.join(keys)}" if keys else " (key: value, ...)")
            + f", {got}"
        )
    if kind == "literal_error":
        return f"key '{path}' is {short(value)}; allowed: {', '.join(map(str, _schema(model, loc)['enum']))}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        what = f"key '{key}' holds {short(value)}" if key != path else f"key '{key}' is {short(value)}"
        return f"{what}; allowed: {_range(_schema(model, loc))}"
    if kind == "finite_number":
        return f"key '{key}' holds {short(value)}; allowed: a finite number"
    if kind in ("string_too_short", "string_too_long") or kind in ("too_short", "too_long") and isinstance(value, str):
        lo, hi = _schema(model, loc).get("minLength"), _schema(model, loc).get("maxLength")
        allowed = (
            f"{lo} to {hi}"
            if lo is not None and hi is not None
            else f"at most {hi}"
            if hi is not None
            else f"at least {lo}"
        )
        return f"key '{path}' is {len(value)} characters long; allowed: {allowed} characters"
    if kind == "too_short":
        return f"axis '{path}' is empty; give at least one value"
    if kind == "too_long":
        return f"axis '{path}' has {len(value)} values; allowed: at most {max_axis}"
    stem = kind.split("_")[0]
    if stem in _KINDS:
        return f"key '{path}' must be {_KINDS[stem]}, {got}"
    return f"key '{path}': {err['msg']} ({got})"
