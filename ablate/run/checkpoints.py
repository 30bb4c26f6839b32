"""A checkpoint's files: the trainer's state (``state.pt``, torch) beside the group's record (``ablate_record.json``).

Written once into a fresh directory, the record last, naming the size of the state: whatever cuts the copy
short (a full disk, a broken upload) leaves a record that is missing, unparseable or names another size
(``ablate.study.records`` recognises it from the listing alone).
"""

from __future__ import annotations

import json
import os
import pickle
from typing import Any, Dict, Tuple

import torch

from ablate.errors import first_line
from ablate.storage import RECORD_FILE, STATE_FILE

__all__ = ["CheckpointLost", "load_state", "read_checkpoint", "write_checkpoint"]


class CheckpointLost(Exception):
    """A checkpoint that is gone or unreadable (not a refused one)."""


def load_state(path: str) -> Dict[str, Any]:
    """A trial's trainer state: tensors, numbers, strings, lists and dicts only (never code).

    ``weights_only=True`` refuses any other pickled object, so a tampered ``state.pt`` cannot
    run code on resume: that is an error naming the path.  A missing or truncated file is
    ``CheckpointLost``.
    """
    if not os.path.isfile(path):
        raise CheckpointLost(f"checkpoint {path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f"checkpoint {path} holds objects other than tensors and plain values; refused "
            f"(storage is trusted: see README). {first_line(e)}"
        ) from None
    except (EOFError, RuntimeError, OSError) as e:
        raise CheckpointLost(f"checkpoint {path} is unreadable ({e.__class__.__name__}: {first_line(e)})") from None


def read_checkpoint(directory: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(state, record) of a checkpoint directory; ``CheckpointLost``, ``OSError`` or ``ValueError`` where cut."""
    with open(os.path.join(directory, RECORD_FILE)) as f:
        record = json.load(f)
    return load_state(os.path.join(directory, STATE_FILE)), record


def write_checkpoint(directory: str, state: Dict[str, Any], record: Dict[str, Any]) -> None:
    """Write ``state`` (tensors and plain values) and ``record`` into a new checkpoint directory.

    The record goes last and names the size of the state: whatever cuts the copy short (a full disk,
    an upload that broke) leaves a record that is missing, unparseable, or names another size.
    """
    path = os.path.join(directory, STATE_FILE)
    torch.save(state, path)
    tmp = os.path.join(directory, RECORD_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({**record, "state_bytes": os.path.getsize(path)}, f, allow_nan=True)
    os.replace(tmp, os.path.join(directory, RECORD_FILE))
