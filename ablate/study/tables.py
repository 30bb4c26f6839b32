"""From trial histories to the answer: history.csv, trials.csv and the ablation table.

Pure pandas: used by the grid at its end and by ``ablate.report`` on a finished directory.
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from ablate.spec.axes import AXES, axis_names
from ablate.spec.settings import METRIC_KEYS
from ablate.spec.status import Status
from ablate.storage import HISTORY_FILE, TIMING_FILE, TRIALS_FILE

__all__ = [
    "record_timing",
    "summarise_history",
    "history_table",
    "trials_table",
    "write_csvs",
    "read_csvs",
    "read_table",
    "TEXT_COLUMNS",
]

# The metrics that follow a history row's axes, trial id and epoch; the per-epoch LR metric is epoch_lr
# (lr is the axis).
METRIC_COLUMNS = [("epoch_lr" if m == "lr" else m) for m in METRIC_KEYS if m != "epoch"]


def history_columns(axes: List[str]) -> List[str]:
    """history.csv's leading columns, whatever order the trials reported in (a resume never reorders)."""
    return [*axes, "trial_id", "epoch", *METRIC_COLUMNS]


def history_table(histories: Dict[str, List[Dict[str, Any]]], points: Dict[str, Dict[str, Any]]) -> pd.DataFrame:
    """history.csv from each grid point's epochs (``histories``: trial id -> its epochs in order, each once;
    ``points``: trial id -> its axes), built as one frame; the per-epoch LR metric is ``epoch_lr``."""
    # Column by column (no row dicts: the table, not a second copy of every epoch, is what memory holds); a
    # metric some trials lack (a block's learned scalars) is missing (NaN) in the others' rows.
    axes = axis_names(next(iter(points.values()))) if points else list(AXES)
    cols: Dict[str, list] = {a: [] for a in axes}
    cols["trial_id"] = []
    n = 0
    for i, hist in histories.items():
        p = points[i]
        for a in axes:
            cols[a].extend([p[a]] * len(hist))
        cols["trial_id"].extend([i] * len(hist))
        # A record's History hands over whole columns; other histories (lists of dicts) go row by row.
        parts = (
            [(k, hist.column(k)) for k in hist.keys]
            if getattr(hist, "uniform", lambda: False)()
            else [(k, [h.get(k, np.nan) for h in hist]) for k in dict.fromkeys(k for h in hist for k in h)]
        )
        for k, values in parts:
            col = cols.get("epoch_lr" if k == "lr" else k)
            if col is None:
                col = cols["epoch_lr" if k == "lr" else k] = [np.nan] * n
            col.extend(values)
        n += len(hist)
        for col in cols.values():
            if len(col) < n:
                col.extend([np.nan] * (n - len(col)))
    if not n:
        return pd.DataFrame(columns=[*axes, "trial_id", "epoch"])
    hist = pd.DataFrame(cols)
    hist["epoch"] = hist["epoch"].astype(int)
    lead = history_columns(axes)
    cols = [c for c in lead if c in hist.columns] + sorted(c for c in hist.columns if c not in lead)
    return hist[cols].sort_values([*axes, "epoch"]).reset_index(drop=True)


def summarise_history(history: List[Dict[str, Any]], target_acc: float) -> Dict[str, Any]:
    """Final/best metrics of one trial's history (the W&B summary and a trials.csv row)."""
    if not history:
        return {
            "epochs_done": 0,
            "final_val_acc": float("nan"),
            "best_val_acc": float("nan"),
            "epochs_to_target": None,
            "diverged": False,
            "train_seconds": 0.0,
            "auc_val_acc": float("nan"),
        }
    accs = [h["val_acc"] for h in history]
    reached = [h["epoch"] for h in history if h["val_acc"] >= target_acc]
    return {
        "epochs_done": len(history),
        "final_val_acc": accs[-1],
        "best_val_acc": max(accs),
        "final_train_loss": history[-1]["train_loss"],
        "epochs_to_target": reached[0] if reached else None,
        "diverged": bool(history[-1].get("diverged", False)),
        "train_seconds": float(sum(h["epoch_seconds"] for h in history)),
        # Area under the val-acc curve, normalised by epochs: rewards converging early.
        "auc_val_acc": float(sum(accs) / len(accs)),
    }


def trials_table(
    histories,
    statuses: Dict[str, str],
    expected: List[Dict[str, Any]],
    target_acc: float,
    epochs: int,
    interrupted: bool = False,
    running: bool = False,
) -> pd.DataFrame:
    """One row per trial of the grid (also those that never reported), with its status.

    ``histories``: trial id -> its epochs in order (or a history table with a ``trial_id`` column).

    ``expected`` are the grid's points with their ``trial_id``; ``statuses`` says what became of
    the trials that ran (``TERMINATED``, ``ERROR``, or ``STOPPED_EARLY`` where the scheduler said so,
    by trial id).  A finished trial that diverged is ``DIVERGED``; one cut short before its last
    epoch (``epochs``, or the point's own where epochs is swept) is ``INTERRUPTED`` (by Ctrl-C) or ``STOPPED_EARLY``;
    a trial that never started is ``NOT_STARTED``, or ``INTERRUPTED`` when the run was.  Tables of an experiment that
    a run is training now (``running``) call its unfinished trials ``RUNNING``.
    """
    if isinstance(histories, pd.DataFrame):
        histories = (
            {i: g.sort_values("epoch").to_dict("records") for i, g in histories.groupby("trial_id", sort=False)}
            if len(histories)
            else {}
        )
    rows = []
    for point in expected:
        hist = list(histories.get(point["trial_id"], []))  # one trial's epochs as dicts, for as long as its row takes
        row = {
            **{a: point[a] for a in axis_names(point)},
            "trial_id": point["trial_id"],
            "status": Status(statuses.get(point["trial_id"], Status.NOT_STARTED)),
        }
        row.update(summarise_history(hist, target_acc))
        if row["status"] == Status.TERMINATED and row["diverged"]:
            row["status"] = Status.DIVERGED
        elif row["status"] == Status.TERMINATED and row["epochs_done"] < point.get("epochs", epochs):
            row["status"] = Status.RUNNING if running else Status.INTERRUPTED if interrupted else Status.STOPPED_EARLY
        elif row["status"] == Status.NOT_STARTED and interrupted:
            row["status"] = Status.INTERRUPTED
        row["status"] = row["status"].value  # the table holds the plain name
        rows.append(row)
    return pd.DataFrame(rows)


# Columns that hold text, whatever it looks like: a block named NA, None or nan stays a name.
TEXT_COLUMNS = ("block", "trial_id", "status", "node")
# What the report reads of each table, and the columns that no row may leave empty.
COLUMNS = {
    HISTORY_FILE: ((*AXES, "trial_id", "epoch", "train_loss", "val_acc"), (*AXES, "trial_id", "epoch")),
    TRIALS_FILE: (
        (
            *AXES,
            "trial_id",
            "status",
            "epochs_done",
            "final_val_acc",
            "best_val_acc",
            "epochs_to_target",
            "diverged",
            "train_seconds",
            "auc_val_acc",
        ),
        (*AXES, "trial_id", "status", "epochs_done", "diverged"),
    ),
}


def csv_text(df: pd.DataFrame) -> str:
    return df.to_csv(index=False)


def write_csvs(exp_dir: str, history: pd.DataFrame, trials: pd.DataFrame, only_changed: bool = False) -> None:
    """Write both tables (with ``only_changed``, leave a file that already holds the same text)."""
    for name, df in ((HISTORY_FILE, history), (TRIALS_FILE, trials)):
        path, text = os.path.join(exp_dir, name), csv_text(df)
        if only_changed and os.path.isfile(path):
            with open(path) as f:
                if f.read() == text:
                    continue
        with open(path, "w") as f:
            f.write(text)


def read_table(path: str) -> pd.DataFrame:
    """A table as ablate wrote it: text columns as text (never NaN), numbers as numbers (NaN where a
    diverged trial's loss was not finite); ``ValueError`` with one line for anything else."""
    with open(path, newline="") as f:
        text = f.read()
    if not text.strip():
        raise ValueError(f"{path} is empty")
    rows = list(csv.reader(text.splitlines()))
    cut = next((i for i, r in enumerate(rows[1:], 2) if len(r) != len(rows[0])), None)
    if cut is not None or not text.endswith("\n"):
        raise ValueError(f"{path} is cut short (line {cut or len(rows)} is incomplete)")
    name = os.path.basename(path)
    used, required = COLUMNS.get(name, ((), ()))
    missing = [c for c in used if c not in rows[0]]
    if missing:
        raise ValueError(f"{path} lacks the columns {', '.join(missing)}: not a {name} written by ablate.grid")
    na = {c: ["", "nan", "NaN"] for c in rows[0] if c not in TEXT_COLUMNS}
    df = pd.read_csv(path, keep_default_na=False, na_values=na, dtype={c: str for c in TEXT_COLUMNS if c in rows[0]})
    for c in used:
        if c not in TEXT_COLUMNS and c != "diverged" and not pd.api.types.is_numeric_dtype(df[c]):
            raise ValueError(f"{path}: column {c} holds text where numbers belong: not as ablate.grid wrote it")
    empty = [c for c in required if (df[c] == "").any() or df[c].isna().any()]
    if empty:
        raise ValueError(f"{path}: column {empty[0]} has empty cells: not as ablate.grid wrote it")
    if name == TRIALS_FILE and not df["status"].isin(Status.names()).all():
        raise ValueError(
            f"{path}: unknown status {sorted(set(df['status']) - set(Status.names()))[0]!r}; allowed: "
            f"{', '.join(Status.names())}"
        )
    if "diverged" in df:
        df["diverged"] = df["diverged"].astype(str).str.lower().isin(("true", "1", "1.0"))
    return df


def read_csvs(exp_dir: str) -> tuple:
    return read_table(os.path.join(exp_dir, HISTORY_FILE)), read_table(os.path.join(exp_dir, TRIALS_FILE))


def record_timing(out_dir: str, trials: pd.DataFrame, wall: float, concurrency: Optional[int], resumed: bool) -> None:
    """``grid_timing.json`` (read by ``python -m ablate.bench --grid``) describes the first run; a
    resume is appended under ``resumes``, so a short resume never passes for the grid's wall."""
    timing = {
        "wall_s": wall,
        "train_seconds": float(trials["train_seconds"].sum()),
        "trials": len(trials),
        "concurrency": concurrency,
    }
    path = os.path.join(out_dir, TIMING_FILE)
    if resumed and os.path.exists(path):
        try:
            with open(path) as f:
                first = json.load(f)
            first.setdefault("resumes", []).append(timing)
            timing = first
        except (OSError, ValueError, AttributeError):  # cut short: the first run's wall is lost, not this one's
            timing = {**timing, "resumed": True}
    with open(path, "w") as f:
        json.dump(timing, f)


def _epochs(history) -> list:
    return history.column("epoch") if getattr(history, "uniform", lambda: False)() else [h["epoch"] for h in history]


def _lines(path: str) -> int:
    """The lines of a text file whose last line is whole (``ValueError`` if it is cut), read in a stream."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    if last != b"\n":
        raise ValueError(f"{path} is cut short")
    return n


def statuses(listing, points: Dict[str, Dict[str, Any]], errored: set) -> Dict[str, Status]:
    """What the records say became of each point: done, stopped by the scheduler, errored, on record (cut short)
    or never started."""
    out = {}
    for i in points:
        m = listing.member(i)
        out[i] = (
            Status.TERMINATED
            if m is not None and m["done"]
            else Status.STOPPED_EARLY
            if i in listing.stopped
            else Status.ERROR
            if i in errored
            else Status.TERMINATED
            if m is not None
            else Status.NOT_STARTED
        )
    return out


def tables_of(
    listing,
    points: Dict[str, Dict[str, Any]],
    errored: set,
    target_acc: float,
    epochs: int,
    interrupted: bool,
    running: bool = False,
) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """history.csv and trials.csv of ``points`` (trial id -> point) from a study's records (``listing``)."""
    histories = listing.histories(points)
    expected = [{**p, "trial_id": i} for i, p in points.items()]
    return (
        history_table(histories, points),
        trials_table(histories, statuses(listing, points, errored), expected, target_acc, epochs, interrupted, running),
    )


def current(out_dir: str, listing, points: Dict[str, Dict[str, Any]]) -> bool:
    """Whether the tables in ``out_dir`` are whole and newer than every record: each file ends its last line,
    holds a row per grid point (``trials.csv``) and per epoch on record (``history.csv``), and was written
    after the newest record.  Counted in a stream, never parsed: bounded memory at any size."""
    rows = {
        TRIALS_FILE: len(points),
        HISTORY_FILE: sum(len(set(_epochs(m["history"]))) for m in map(listing.member, points) if m is not None),
    }
    for name, n in rows.items():
        path = os.path.join(out_dir, name)
        try:
            if os.stat(path).st_mtime_ns < listing.newest_write_ns or _lines(path) != n + 1:
                return False
        except (OSError, ValueError):
            return False
    return True
