"""From trial histories to the answer: history.csv, trials.csv and the ablation table.

Pure pandas: used by the grid at its end and by ``ablate.report`` on a finished directory.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from .stats import BASELINE, axes_of, finished, paired, plain, verdict
from .storage import HISTORY_FILE, TIMING_FILE, TRIALS_FILE
from .axes import AXES, PAIR, axis_names, context_of, value_label
from .settings import METRIC_KEYS

__all__ = ["answer", "record_timing", "summarise_history", "history_table", "trials_table", "ablation_table", "format_table", "best_lr_frame",
           "pipe_table", "write_csvs",
           "read_csvs", "read_table", "TEXT_COLUMNS", "STATUSES"]

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
        parts = ([(k, hist.column(k)) for k in hist.keys] if getattr(hist, "uniform", lambda: False)()
                 else [(k, [h.get(k, np.nan) for h in hist]) for k in dict.fromkeys(k for h in hist for k in h)])
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
        return {"epochs_done": 0, "final_val_acc": float("nan"), "best_val_acc": float("nan"),
                "epochs_to_target": None, "diverged": False, "train_seconds": 0.0, "auc_val_acc": float("nan")}
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


def trials_table(histories, statuses: Dict[str, str], expected: List[Dict[str, Any]],
                 target_acc: float, epochs: int, interrupted: bool = False, running: bool = False) -> pd.DataFrame:
    """One row per trial of the grid (also those that never reported), with its status.

    ``histories``: trial id -> its epochs in order (or a history table with a ``trial_id`` column).

    ``expected`` are the grid's points with their ``trial_id``; ``statuses`` says what became of
    the trials that ran (``TERMINATED``, ``ERROR``, or ``STOPPED_EARLY`` where the scheduler said so,
    by trial id).  A finished trial that diverged is ``DIVERGED``; one cut short before its last
    epoch (``epochs``, or the point's own where epochs is swept) is ``INTERRUPTED`` (by Ctrl-C) or ``STOPPED_EARLY``; a trial that never started is
    ``NOT_STARTED``, or ``INTERRUPTED`` when the run was.  Tables of an experiment that a run is
    training now (``running``) call its unfinished trials ``RUNNING``.
    """
    if isinstance(histories, pd.DataFrame):
        histories = ({i: g.sort_values("epoch").to_dict("records") for i, g in histories.groupby("trial_id", sort=False)}
                     if len(histories) else {})
    rows = []
    for point in expected:
        hist = list(histories.get(point["trial_id"], []))  # one trial's epochs as dicts, for as long as its row takes
        row = {**{a: point[a] for a in axis_names(point)}, "trial_id": point["trial_id"],
               "status": statuses.get(point["trial_id"], "NOT_STARTED")}
        row.update(summarise_history(hist, target_acc))
        if row["status"] == "TERMINATED" and row["diverged"]:
            row["status"] = "DIVERGED"
        elif row["status"] == "TERMINATED" and row["epochs_done"] < point.get("epochs", epochs):
            row["status"] = "RUNNING" if running else "INTERRUPTED" if interrupted else "STOPPED_EARLY"
        elif row["status"] == "NOT_STARTED" and interrupted:
            row["status"] = "INTERRUPTED"
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(trials: pd.DataFrame, subject: str = "block", reference: Any = BASELINE,
                   context: Optional[List[str]] = None) -> pd.DataFrame:
    """Per value of ``subject`` and cell of the context (its axes but ``lr``), at that value's best LR (by
    mean final val acc over seeds).

    Only finished trials count: an interrupted, errored or early-stopped trial's last epoch is
    not its result.  The best LR is chosen on the final accuracy it is then judged on, so the
    differences here are optimistic; ``stats.effects`` compares at every LR, with no selection.
    Every column of a row (counts too) refers to the same trials: that value's, at its best LR.
    """
    trials = finished(trials)
    cells = [c for c in (context_of(axes_of(trials), subject) if context is None else context) if c != "lr"]
    rows = []
    for key, g in trials.groupby([subject, *cells], sort=False):
        by_lr = g.groupby("lr")["final_val_acc"].mean()
        lr = float(by_lr.fillna(-1).idxmax())
        s = g[g["lr"] == lr].sort_values(PAIR)
        reached = s["epochs_to_target"].dropna()
        rows.append({
            subject: key[0], **{c: plain(v) for c, v in zip(cells, key[1:])}, "best_lr": lr, "seeds": len(s),
            "final_acc_mean": s["final_val_acc"].mean(), "final_acc_std": s["final_val_acc"].std(ddof=1),
            "best_acc_mean": s["best_val_acc"].mean(), "best_acc_std": s["best_val_acc"].std(ddof=1),
            "auc_mean": s["auc_val_acc"].mean(),
            "epochs_to_target": reached.mean() if len(reached) else float("nan"),
            "reached_target": f"{len(reached)}/{len(s)}",
            "diverged": int(s["diverged"].astype(bool).sum()),
            "_finals": dict(zip(s[PAIR], s["final_val_acc"])),
            "_aucs": dict(zip(s[PAIR], s["auc_val_acc"])),
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Differences from the reference at its own best LR in the same cell, paired by seed, with 95%
    # t-intervals (unadjusted: the LR was selected), by the one verdict rule (``stats.verdict``):
    # final val acc ("ends better") and the area under the val-acc curve ("converges faster").
    refs = {tuple(r[c] for c in cells): r for r in table.to_dict("records") if r[subject] == reference}
    for key, prefix, name, verdict_col in (("_finals", "delta", "delta_vs_baseline", "verdict"),
                                           ("_aucs", "auc_delta", "auc_delta_vs_baseline", "auc_verdict")):
        cols: Dict[str, list] = {name: [], f"{prefix}_ci_low": [], f"{prefix}_ci_high": [], verdict_col: []}
        for r in table.to_dict("records"):
            ref = refs.get(tuple(r[c] for c in cells))
            if r[subject] == reference or ref is None:
                res = (float("nan"), float("nan"), float("nan"), "")
            else:
                pairs = [seed for seed in r[key] if seed in ref[key]]
                p = paired(np.array([r[key][x] for x in pairs]), np.array([ref[key][x] for x in pairs]))
                res = (p["mean"], p["ci_low"], p["ci_high"], verdict(p["n"], p["p"], p["p"], p["mean"]))
            for c, v in zip(cols, res):
                cols[c].append(v)
        for c, v in cols.items():
            table[c] = v
    return table.drop(columns=["_finals", "_aucs"])


def _pm(mean: float, std: float) -> str:
    if pd.isna(mean):
        return "n/a"
    return f"{100 * mean:5.1f} +- {100 * std:4.1f}" if not pd.isna(std) else f"{100 * mean:5.1f}"


def best_lr_frame(table: pd.DataFrame, target_acc: float, subject: str = "block", reference: Any = BASELINE) -> pd.DataFrame:
    """The best-LR table as it is shown (the terminal, report.html and report.md render this one frame)."""
    if table.empty:
        return pd.DataFrame()
    cells = [c for c in table.columns[1:table.columns.get_loc("best_lr")]]
    rows = []
    for r in table.sort_values([*cells, subject]).to_dict("records"):
        ett = "never" if pd.isna(r["epochs_to_target"]) else f"{r['epochs_to_target']:.1f}"
        d = "-"
        if not pd.isna(r["delta_vs_baseline"]):
            d = f"{100 * r['delta_vs_baseline']:+.1f}"
            if not pd.isna(r["delta_ci_low"]):
                d += f" [{100 * r['delta_ci_low']:+.1f}, {100 * r['delta_ci_high']:+.1f}]"
        rows.append({subject: r[subject], **{c: r[c] for c in cells}, "best lr": value_label(r["best_lr"]),
                     "final val acc %": _pm(r["final_acc_mean"], r["final_acc_std"]),
                     "best val acc %": _pm(r["best_acc_mean"], r["best_acc_std"]), "AUC %": f"{100 * r['auc_mean']:.1f}",
                     f"epochs to {100 * target_acc:.0f}%": f"{ett} ({r['reached_target']})", "diverged": r["diverged"],
                     f"vs {reference} (95% CI)": d, "verdict": r["verdict"]})
    return pd.DataFrame(rows)


def pipe_table(frame: pd.DataFrame) -> str:
    """A frame as a Markdown (pipe) table: the report's Markdown and the terminal."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def format_table(table: pd.DataFrame, target_acc: float, subject: str = "block", reference: Any = BASELINE) -> str:
    """The ablation table as text (also Markdown)."""
    if table.empty:
        return "(no finished trials)"
    return pipe_table(best_lr_frame(table, target_acc, subject, reference))


# Columns that hold text, whatever it looks like: a block named NA, None or nan stays a name.
TEXT_COLUMNS = ("block", "trial_id", "status", "node")
# What the report reads of each table, and the columns that no row may leave empty.
COLUMNS = {HISTORY_FILE: ((*AXES, "trial_id", "epoch", "train_loss", "val_acc"), (*AXES, "trial_id", "epoch")),
           TRIALS_FILE: ((*AXES, "trial_id", "status", "epochs_done", "final_val_acc", "best_val_acc",
                          "epochs_to_target", "diverged", "train_seconds", "auc_val_acc"),
                         (*AXES, "trial_id", "status", "epochs_done", "diverged"))}
STATUSES = ("TERMINATED", "DIVERGED", "INTERRUPTED", "STOPPED_EARLY", "NOT_STARTED", "ERROR", "RUNNING")


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
    import csv

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
    if name == TRIALS_FILE and not df["status"].isin(STATUSES).all():
        raise ValueError(f"{path}: unknown status {sorted(set(df['status']) - set(STATUSES))[0]!r}; allowed: "
                         f"{', '.join(STATUSES)}")
    if "diverged" in df:
        df["diverged"] = df["diverged"].astype(str).str.lower().isin(("true", "1", "1.0"))
    return df


def read_csvs(exp_dir: str) -> tuple:
    return read_table(os.path.join(exp_dir, HISTORY_FILE)), read_table(os.path.join(exp_dir, TRIALS_FILE))


def summary_line(trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts().to_dict()
    return ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))


def record_timing(out_dir: str, trials: pd.DataFrame, wall: float, concurrency: Optional[int], resumed: bool) -> None:
    """``grid_timing.json`` (read by ``python -m ablate.bench --grid``) describes the first run; a
    resume is appended under ``resumes``, so a short resume never passes for the grid's wall."""
    timing = {"wall_s": wall, "train_seconds": float(trials["train_seconds"].sum()), "trials": len(trials),
              "concurrency": concurrency}
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


def answer(cfg, trials: pd.DataFrame, wall: float) -> str:
    """What a finished run prints: the ablation table at each subject's best LR, and the trials in a line."""
    subject, reference = cfg.subject()
    table = ablation_table(trials, subject, reference, context_of(list(cfg.axes()), subject))
    return (f"Ablation table ({cfg.name}, {cfg.dataset}, {cfg.setting_text('epochs')} epochs; at each {subject}'s best lr; mean +- std "
            f"over {len(cfg.seeds)} seeds):\n{format_table(table, cfg.target_acc, subject, reference)}\n\n"
            f"trials: {summary_line(trials)}; wall {wall:.0f} s; time in training {trials['train_seconds'].sum():.0f} s "
            "(sum over trials)")
