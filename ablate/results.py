"""From trial histories to the answer: history.csv, trials.csv and the ablation table.

Pure pandas: used by the grid at its end and by ``ablate.report`` on a finished directory.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np
import pandas as pd

from .stats import finished, paired
from .storage import HISTORY_FILE, TRIALS_FILE
from .axes import AXES
from .settings import METRIC_KEYS

__all__ = ["summarise_history", "history_table", "trials_table", "ablation_table", "format_table", "write_csvs",
           "read_csvs", "read_table", "TEXT_COLUMNS", "STATUSES"]

# history.csv's leading columns, whatever order the trials reported in (a resume never reorders);
# the per-epoch LR metric is epoch_lr (lr is the axis).
HISTORY_COLUMNS = [*AXES, "trial_id", "epoch", *(("epoch_lr" if m == "lr" else m) for m in METRIC_KEYS if m != "epoch")]


def history_table(histories: Dict[str, List[Dict[str, Any]]], points: Dict[str, Dict[str, Any]]) -> pd.DataFrame:
    """history.csv from each grid point's epochs (``histories``: trial id -> its epochs in order, each once;
    ``points``: trial id -> its axes), built as one frame; the per-epoch LR metric is ``epoch_lr``."""
    # Column by column (no row dicts: the table, not a second copy of every epoch, is what memory holds); a
    # metric some trials lack (a block's learned scalars) is missing (NaN) in the others' rows.
    cols: Dict[str, list] = {a: [] for a in AXES}
    cols["trial_id"] = []
    n = 0
    for i, hist in histories.items():
        p = points[i]
        for a in AXES:
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
        return pd.DataFrame(columns=[*AXES, "trial_id", "epoch"])
    hist = pd.DataFrame(cols)
    hist["epoch"] = hist["epoch"].astype(int)
    cols = [c for c in HISTORY_COLUMNS if c in hist.columns] + sorted(c for c in hist.columns if c not in HISTORY_COLUMNS)
    return hist[cols].sort_values([*AXES, "epoch"]).reset_index(drop=True)


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
    epoch is ``INTERRUPTED`` (by Ctrl-C) or ``STOPPED_EARLY``; a trial that never started is
    ``NOT_STARTED``, or ``INTERRUPTED`` when the run was.  Tables of an experiment that a run is
    training now (``running``) call its unfinished trials ``RUNNING``.
    """
    if isinstance(histories, pd.DataFrame):
        histories = ({i: g.sort_values("epoch").to_dict("records") for i, g in histories.groupby("trial_id", sort=False)}
                     if len(histories) else {})
    rows = []
    for point in expected:
        hist = list(histories.get(point["trial_id"], []))  # one trial's epochs as dicts, for as long as its row takes
        row = {**{a: point[a] for a in AXES}, "trial_id": point["trial_id"],
               "status": statuses.get(point["trial_id"], "NOT_STARTED")}
        row.update(summarise_history(hist, target_acc))
        if row["status"] == "TERMINATED" and row["diverged"]:
            row["status"] = "DIVERGED"
        elif row["status"] == "TERMINATED" and row["epochs_done"] < epochs:
            row["status"] = "RUNNING" if running else "INTERRUPTED" if interrupted else "STOPPED_EARLY"
        elif row["status"] == "NOT_STARTED" and interrupted:
            row["status"] = "INTERRUPTED"
        rows.append(row)
    return pd.DataFrame(rows)


def ablation_table(trials: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """Per block x depth, at that block's best LR (by mean final val acc over seeds).

    Only finished trials count: an interrupted, errored or early-stopped trial's last epoch is
    not its result.  The best LR is chosen on the final accuracy it is then judged on, so the
    differences here are optimistic; ``stats.effects`` compares at every LR, with no selection.
    Every column of a row (counts too) refers to the same trials: that block's, at its best LR.
    """
    trials = finished(trials)
    rows = []
    for (block, depth), g in trials.groupby(["block", "depth"], sort=False):
        by_lr = g.groupby("lr")["final_val_acc"].mean()
        lr = float(by_lr.fillna(-1).idxmax())
        s = g[g["lr"] == lr].sort_values("seed")
        reached = s["epochs_to_target"].dropna()
        rows.append({
            "block": block, "depth": int(depth), "best_lr": lr, "seeds": len(s),
            "final_acc_mean": s["final_val_acc"].mean(), "final_acc_std": s["final_val_acc"].std(ddof=1),
            "best_acc_mean": s["best_val_acc"].mean(), "best_acc_std": s["best_val_acc"].std(ddof=1),
            "auc_mean": s["auc_val_acc"].mean(),
            "epochs_to_target": reached.mean() if len(reached) else float("nan"),
            "reached_target": f"{len(reached)}/{len(s)}",
            "diverged": int(s["diverged"].astype(bool).sum()),
            "_finals": dict(zip(s["seed"], s["final_val_acc"])),
            "_aucs": dict(zip(s["seed"], s["auc_val_acc"])),
        })
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Differences from the baseline at its own best LR, paired by seed, with 95% t-intervals:
    # final val acc ("ends better") and the area under the val-acc curve ("converges faster").
    for key, prefix in (("_finals", "delta"), ("_aucs", "auc_delta")):
        cols = {c: [] for c in ("", "_ci_low", "_ci_high", "_verdict")}
        for _, r in table.iterrows():
            base = table[(table["block"] == baseline) & (table["depth"] == r["depth"])]
            if r["block"] == baseline or base.empty:
                res = (float("nan"), float("nan"), float("nan"), "")
            else:
                res = _paired(r[key], base.iloc[0][key])
            for c, v in zip(cols, res):
                cols[c].append(v)
        name = "delta_vs_baseline" if prefix == "delta" else "auc_delta_vs_baseline"
        table[name] = cols[""]
        table[f"{prefix}_ci_low"] = cols["_ci_low"]
        table[f"{prefix}_ci_high"] = cols["_ci_high"]
        table["verdict" if prefix == "delta" else "auc_verdict"] = cols["_verdict"]
    return table.drop(columns=["_finals", "_aucs"])


def _paired(values: Dict, base: Dict) -> tuple:
    """(mean difference, 95% CI low, high, verdict) of ``values - base`` paired by seed."""
    seeds = [s for s in values if s in base]
    r = paired(np.array([values[s] for s in seeds]), np.array([base[s] for s in seeds]))
    if r["n"] < 2:
        verdict = "too few seeds"
    elif not np.isfinite(r["p"]):  # identical differences on every seed: a zero-width interval proves nothing
        verdict = "no spread across seeds"
    elif r["ci_low"] > 0:
        verdict = "helps"
    elif r["ci_high"] < 0:
        verdict = "hurts"
    else:
        verdict = "no significant difference"
    return r["mean"], r["ci_low"], r["ci_high"], verdict


def _pm(mean: float, std: float) -> str:
    if mean != mean:
        return "n/a"
    return f"{100 * mean:5.1f} +- {100 * std:4.1f}" if std == std else f"{100 * mean:5.1f}"


def format_table(table: pd.DataFrame, target_acc: float) -> str:
    """The ablation table as text (also Markdown-compatible)."""
    if table.empty:
        return "(no finished trials)"
    head = (f"| block | depth | best lr | final val acc % | best val acc % | AUC % | epochs to {100 * target_acc:.0f}% "
            f"| diverged | vs baseline (95% CI) | verdict |")
    lines = [head, "|" + "---|" * 10]
    for _, r in table.sort_values(["depth", "block"]).iterrows():
        ett = "never" if r["epochs_to_target"] != r["epochs_to_target"] else f"{r['epochs_to_target']:.1f}"
        ett += f" ({r['reached_target']})"
        if r["delta_vs_baseline"] == r["delta_vs_baseline"]:
            d = f"{100 * r['delta_vs_baseline']:+.1f}"
            if r["delta_ci_low"] == r["delta_ci_low"]:
                d += f" [{100 * r['delta_ci_low']:+.1f}, {100 * r['delta_ci_high']:+.1f}]"
        else:
            d = "-"
        lines.append(f"| {r['block']} | {r['depth']} | {r['best_lr']:g} | "
                     f"{_pm(r['final_acc_mean'], r['final_acc_std'])} | {_pm(r['best_acc_mean'], r['best_acc_std'])} | "
                     f"{100 * r['auc_mean']:.1f} | {ett} | {r['diverged']} | {d} | {r['verdict']} |")
    return "\n".join(lines)


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
