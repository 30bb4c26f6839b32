"""A member's history as the tables read it: the epochs of a record, kept as columns (no torch, no Ray).

A finished study of 10,000 trials x 30 epochs holds 300,000 history rows: as columns (``History``)
they cost a list per metric, not a dict per row, and the tables take them whole (docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Sequence, Tuple

import numpy as np

__all__ = ["History"]


class History(Sequence):
    """A member's epochs as columns (one array per metric): what a record's history holds, in a tenth of
    the memory of one dict per epoch, so a listing of 10,000 trials is bounded by the size of its table.

    Reads back exactly as written: an index or iteration gives each epoch's dict with the same keys and
    values (floats, ints, bools as such; text and mixed columns are kept as they are).  Epochs whose keys
    differ from the first's are kept as dicts.
    """

    __slots__ = ("keys", "columns", "_rows")

    def __init__(self, rows: List[Dict[str, Any]]):
        self.keys: Tuple[str, ...] = tuple(rows[0]) if rows else ()
        self._rows = None
        self.columns: Dict[str, Any] = {}
        if any(tuple(r) != self.keys for r in rows):
            self._rows = list(rows)
            return
        for k in self.keys:
            values = [r[k] for r in rows]
            kinds = {type(v) for v in values}
            dtype = {float: np.float64, int: np.int64, bool: np.bool_}.get(kinds.pop()) if len(kinds) == 1 else None
            self.columns[k] = np.array(values, dtype=dtype) if dtype is not None else tuple(values)

    def __len__(self) -> int:
        if self._rows is not None:
            return len(self._rows)
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def column(self, key: str) -> list:
        """One metric of every epoch, as Python values."""
        c = self.columns[key]
        return c.tolist() if hasattr(c, "tolist") else list(c)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        if self._rows is not None:
            return iter(self._rows)
        return (dict(zip(self.keys, values)) for values in zip(*(self.column(k) for k in self.keys)))

    def __getitem__(self, i):
        if self._rows is not None:
            return self._rows[i]
        if isinstance(i, slice):
            return list(self)[i]
        return dict(zip(self.keys, (c[i].item() if hasattr(c[i], "item") else c[i] for c in self.columns.values())))

    def uniform(self) -> bool:
        """Whether its epochs are columns (else they are dicts of different keys)."""
        return self._rows is None
