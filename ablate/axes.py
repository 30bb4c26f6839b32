"""A grid point's identity: the grid's axes, a point's key, name and stable id.  No torch here.

Used by the config's expansion of the grid, the study, the records, Tune, W&B, the CSVs and the
report alike: the one place that says what a trial is.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping

__all__ = ["AXES", "trial_key", "trial_name", "trial_id"]

# The grid's axes: a trial is one point (block, depth, lr, seed); every other setting is shared.
AXES = ("block", "depth", "lr", "seed")


def trial_key(point: Mapping[str, Any]) -> tuple:
    """A trial's identity from any mapping with the axes (a config, Tune's trial config, a CSV row)."""
    return (str(point["block"]), int(point["depth"]), float(point["lr"]), int(point["seed"]))


def trial_name(point: Mapping[str, Any]) -> str:
    """A trial's name: its Tune trial name and directory prefix, its W&B run name."""
    return f"{point['block']}-d{int(point['depth'])}-lr{float(point['lr']):g}-s{int(point['seed'])}"


def trial_id(experiment_id: str, point: Mapping[str, Any]) -> str:
    """A trial's stable id within one experiment (its rows in the CSVs, its W&B run id): the same
    in every run and resume of the experiment, whichever Tune run trains it; another experiment
    of the same name (another ``experiment_id``) never shares it."""
    return hashlib.sha1(f"{experiment_id}/{trial_key(point)}".encode()).hexdigest()[:12]
