"""One trial: the settings every point of a grid shares, with one point's values (no torch).

What a Tune trial builds a model from, what the trainer reads, and what a W&B run's config holds.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from pydantic import PrivateAttr

from ablate.spec.axes import AXES, axis_names, trial_key, trial_name
from ablate.spec.settings import Number, TrainSettings

__all__ = ["TrainConfig"]


class TrainConfig(TrainSettings):
    """One trial: the settings plus one point of the grid (the four axes, and the swept settings'
    values, which are its settings' own)."""

    block: str = "baseline"
    depth: int = 20
    lr: Number = 0.1
    seed: int = 0
    # The experiment's swept settings and their base values (ablate.spec.axes): what this point's key holds.
    _swept: Tuple[str, ...] = PrivateAttr(default=())
    _base: Dict[str, Any] = PrivateAttr(default_factory=dict)
    _digits: Dict[str, int] = PrivateAttr(default_factory=dict)  # its name's digits per axis (axes.label_digits)

    def on_grid(self, swept: Tuple[str, ...], base: Dict[str, Any], digits: Optional[Dict[str, int]] = None):
        self._swept, self._base, self._digits = tuple(swept), dict(base), dict(digits or {})
        return self

    @classmethod
    def of_point(
        cls,
        settings: Dict[str, Any],
        point: Dict[str, Any],
        base: Optional[Dict[str, Any]] = None,
        digits: Optional[Dict[str, int]] = None,
    ):
        """A grid point's trial: the shared settings, with the point's values (its swept settings too)."""
        swept = tuple(axis_names(point)[len(AXES) :])
        return cls(**{**settings, **point}).on_grid(swept, base if base is not None else {}, digits)

    @property
    def point(self) -> Dict[str, Any]:
        return {a: getattr(self, a) for a in (*AXES, *self._swept)}

    @property
    def key(self) -> tuple:
        return trial_key(self.point, self._base)

    @property
    def name(self) -> str:
        return trial_name(self.point, self._digits)

    def to_dict(self) -> Dict:
        return self.model_dump()
