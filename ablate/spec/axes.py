"""The grid, declared once: its axes as data, and a grid point's key, name and stable id.  No torch here.

A grid point is a mapping from each axis's name to one of its values: the four axes every study has
(``GRID``: block, depth, lr, seed) and any setting the experiment sweeps (``sweep: {weight_decay:
[0, 5e-4]}``), in that order.  The config's expansion of the grid, the study, the records, Tune, W&B,
the CSVs, the plan, the fused grouping and every grouping of the analysis take their axes from here,
so an axis cannot be forgotten anywhere: a fifth one is simply one more entry.

A point's stable id (its CSV ``trial_id``, its W&B run id) hashes the experiment's id and the point's
key.  The key of a four-axis point is what it always was, and a swept setting enters the key only
where its value differs from the experiment's own value of that setting (its *base*): a setting that
was fixed and becomes an axis on ``--resume`` keeps its finished points' ids.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from ablate.formatting import g
from ablate.spec.settings import SWEEPABLE

__all__ = [
    "Axis",
    "GRID",
    "AXES",
    "PAIR",
    "LR",
    "BASELINE",
    "axis_names",
    "trial_key",
    "trial_name",
    "trial_id",
    "expand",
    "context_of",
    "fused_key",
    "fusable",
    "label_digits",
]


def label_digits(axes: Mapping[str, Sequence[Any]]) -> Dict[str, int]:
    """The significant digits that name each axis's values apart: ``%g``'s 6 (every name written before stays
    as it was), more only for an axis whose floats agree in their first 6 (``0.1`` and ``0.1000001``)."""
    out = {}
    for name, values in axes.items():
        floats = {v for v in values if isinstance(v, float)}
        digits = 6
        while digits < 17 and len({g(v, digits) for v in floats}) < len(floats):
            digits += 1
        if digits > 6:
            out[name] = digits
    return out


@dataclass(frozen=True)
class Axis:
    """One axis of the grid.

    ``name``: a point's key, the CSV column, the W&B config key (a swept setting's own name);
    ``key``: the experiment key that lists its values; ``cast``: how a value is read back (a CSV cell,
    Tune's config); ``prefix``: how a value prints in a trial's name; ``fusable``: the members of one
    fused group may differ in it; ``grows``: ``--resume`` may add values to it.
    """

    name: str
    key: str
    cast: Callable[[Any], Any]
    prefix: str
    fusable: bool = False
    grows: bool = True

    def label(self, value: Any, digits: int = 6) -> str:
        return f"{self.prefix}{g(self.cast(value), digits)}"


# The four axes of every study (the only place they are spelled together).  Seed pairs the comparisons;
# lr and seed may differ within a fused group (per-member optimiser groups and data orders).
GRID: Tuple[Axis, ...] = (
    Axis("block", "blocks", str, ""),
    Axis("depth", "depths", int, "d"),
    Axis("lr", "lrs", float, "lr", fusable=True),
    Axis("seed", "seeds", int, "s", fusable=True),
)
AXES: Tuple[str, ...] = tuple(a.name for a in GRID)
PAIR = "seed"  # the axis whose values pair a comparison (the same initialisation and data order)
LR = "lr"  # the axis along which the best-LR table and the stable LR range look (not a context cell of theirs)
BASELINE = "baseline"  # the default comparison's reference: He et al.'s block


def sweep_axis(name: str, cast: Callable[[Any], Any] = lambda v: v) -> Axis:
    """The axis of a swept setting: named by the setting, printed ``-name<value>`` in a trial's name."""
    return Axis(name, f"sweep.{name}", cast, f"{name}")


def axis_names(point: Mapping[str, Any]) -> List[str]:
    """The axes of a point (or of a CSV row, or Tune's trial config): the four, then the swept settings it
    carries, in its order; any other key (a trial id, a status, a metric) is not an axis."""
    return [*AXES, *(k for k in point if k in SWEEPABLE)]


def trial_key(point: Mapping[str, Any], base: Optional[Mapping[str, Any]] = None) -> tuple:
    """A point's identity from any mapping with its axes (a config, Tune's trial config, a CSV row).

    The four axes as they always were; a swept setting as ``(name, value)`` where its value is not the
    experiment's ``base`` value of that setting."""
    base = base or {}
    extra = tuple((k, point[k]) for k in axis_names(point)[len(AXES) :] if k not in base or point[k] != base[k])
    return tuple(a.cast(point[a.name]) for a in GRID) + extra


def trial_name(point: Mapping[str, Any], digits: Optional[Mapping[str, int]] = None) -> str:
    """A point's name: its group's Tune trial name and directory prefix (a fused group's first member's), its W&B
    run name (every axis's value, each with its axis's ``digits``: ``label_digits``, 6 where not given)."""
    names, digits = axis_names(point), digits or {}
    return "-".join(
        [
            *(a.label(point[a.name], digits.get(a.name, 6)) for a in GRID),
            *(f"{k}{g(point[k], digits.get(k, 6))}" for k in names[len(AXES) :]),
        ]
    )


def trial_id(experiment_id: str, point: Mapping[str, Any], base: Optional[Mapping[str, Any]] = None) -> str:
    """A point's stable id within one experiment (its rows in the CSVs, its W&B run id): the same
    in every run and resume of the experiment, whichever Tune run trains it; another experiment
    of the same name (another ``experiment_id``) never shares it."""
    return hashlib.sha1(f"{experiment_id}/{trial_key(point, base)}".encode()).hexdigest()[:12]


def expand(axes: Mapping[str, Sequence[Any]]) -> Iterator[Dict[str, Any]]:
    """Every point of the grid ``{axis name: values}``, in a stable order (``itertools.product``)."""
    names = list(axes)
    for values in itertools.product(*axes.values()):
        yield dict(zip(names, values))


def context_of(names: Sequence[str], subject: str) -> List[str]:
    """The axes a comparison of ``subject``'s values is made within: every axis but it and the pairing one."""
    return [n for n in names if n not in (subject, PAIR)]


def fusable() -> Tuple[str, ...]:
    """The axes in which the members of one fused group may differ (``Axis.fusable``)."""
    return tuple(a.name for a in GRID if a.fusable)


def fused_key(point: Mapping[str, Any]) -> tuple:
    """What the members of one fused group share: every axis that fusion cannot vary per member."""
    return tuple(point[n] for n in axis_names(point) if n not in fusable())


def axes_of(table) -> List[str]:
    """A table's axes: its columns before ``trial_id`` (history.csv and trials.csv lead with them)."""
    cols = list(table.columns)
    return cols[: cols.index("trial_id")] if "trial_id" in cols else [c for c in AXES if c in cols]
