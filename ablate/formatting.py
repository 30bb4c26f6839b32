"""Values in words, once: how a value, a difference in points, a p-value, a duration and a user's input are
written wherever ablate writes them (a trial's name, the tables, the report, the terminal, an error line).

No torch, no pandas: the floor every layer may use.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any, Iterable

__all__ = ["g", "value_text", "short", "pts", "p_text", "pm", "lrs_text", "duration"]


def g(value: Any, digits: int = 6) -> str:
    """A value as a name holds it: ``%g`` with ``digits`` significant digits for a float, ``str`` otherwise."""
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def value_text(value: Any) -> str:
    """A value in words where no axis is at hand (the report): ``%g``, or every digit where ``%g`` would lose one
    (so 0.1 and 0.1000001 stay distinct wherever they are written)."""
    return g(value) if not isinstance(value, float) or float(g(value)) == value else repr(value)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def short(value: Any) -> str:
    """A user's value in an error message: bounded, so a hostile document cannot make the message huge."""
    return _REPR.repr(value)


def pts(x: float) -> str:
    """An accuracy difference (a fraction) in signed points: ``0.012`` -> ``+1.2``."""
    return f"{100 * x:+.1f}"


def p_text(p: float) -> str:
    """A p-value as the tables show it: empty where there is none, ``< 0.001`` below that."""
    return "" if not math.isfinite(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def pm(mean: float, std: float) -> str:
    """An accuracy's mean +- std over seeds, in percent (``n/a`` where nothing finished)."""
    if mean != mean:  # NaN
        return "n/a"
    return f"{100 * mean:5.1f} +- {100 * std:4.1f}" if std == std else f"{100 * mean:5.1f}"


def lrs_text(lrs: Iterable[float]) -> str:
    return ", ".join(f"{lr:g}" for lr in lrs) or "none"


def duration(seconds: float) -> str:
    """``95`` -> ``1:35``; ``3725`` -> ``1:02:05``."""
    s = int(max(0, seconds) + 0.5)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"
