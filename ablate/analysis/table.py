"""The ablation table: each compared value at its best LR per context cell, paired with the reference there
(pandas, no torch); the terminal's answer and the page's best-LR table render it."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from ablate.analysis.stats import BASELINE, axes_of, finished, paired, plain, verdict
from ablate.formatting import pm, value_text
from ablate.spec.axes import LR, PAIR, context_of

__all__ = ["ablation_table", "best_lr_frame", "format_table", "pipe_table", "summary_line", "answer"]


def ablation_table(
    trials: pd.DataFrame, subject: str = "block", reference: Any = BASELINE, context: Optional[List[str]] = None
) -> pd.DataFrame:
    """Per value of ``subject`` and cell of the context (its axes but ``lr``), at that value's best LR (by
    mean final val acc over seeds).

    Only finished trials count: an interrupted, errored or early-stopped trial's last epoch is
    not its result.  The best LR is chosen on the final accuracy it is then judged on, so the
    differences here are optimistic; ``stats.effects`` compares at every LR, with no selection.
    Every column of a row (counts too) refers to the same trials: that value's, at its best LR.
    """
    trials = finished(trials)
    cells = [c for c in (context_of(axes_of(trials), subject) if context is None else context) if c != LR]
    rows = []
    for key, g in trials.groupby([subject, *cells], sort=False):
        by_lr = g.groupby(LR)["final_val_acc"].mean()
        lr = float(by_lr.fillna(-1).idxmax())
        s = g[g[LR] == lr].sort_values(PAIR)
        reached = s["epochs_to_target"].dropna()
        rows.append(
            {
                subject: key[0],
                **{c: plain(v) for c, v in zip(cells, key[1:])},
                "best_lr": lr,
                "seeds": len(s),
                "final_acc_mean": s["final_val_acc"].mean(),
                "final_acc_std": s["final_val_acc"].std(ddof=1),
                "best_acc_mean": s["best_val_acc"].mean(),
                "best_acc_std": s["best_val_acc"].std(ddof=1),
                "auc_mean": s["auc_val_acc"].mean(),
                "epochs_to_target": reached.mean() if len(reached) else float("nan"),
                "reached_target": f"{len(reached)}/{len(s)}",
                "diverged": int(s["diverged"].astype(bool).sum()),
                "_finals": dict(zip(s[PAIR], s["final_val_acc"])),
                "_aucs": dict(zip(s[PAIR], s["auc_val_acc"])),
            }
        )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # Differences from the reference at its own best LR in the same cell, paired by seed, with 95%
    # t-intervals (unadjusted: the LR was selected), by the one verdict rule (``stats.verdict``):
    # final val acc ("ends better") and the area under the val-acc curve ("converges faster").
    refs = {tuple(r[c] for c in cells): r for r in table.to_dict("records") if r[subject] == reference}
    for key, prefix, name, verdict_col in (
        ("_finals", "delta", "delta_vs_baseline", "verdict"),
        ("_aucs", "auc_delta", "auc_delta_vs_baseline", "auc_verdict"),
    ):
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


def best_lr_frame(
    table: pd.DataFrame, target_acc: float, subject: str = "block", reference: Any = BASELINE
) -> pd.DataFrame:
    """The best-LR table as it is shown (the terminal, report.html and report.md render this one frame)."""
    if table.empty:
        return pd.DataFrame()
    cells = [c for c in table.columns[1 : table.columns.get_loc("best_lr")]]
    rows = []
    for r in table.sort_values([*cells, subject]).to_dict("records"):
        ett = "never" if pd.isna(r["epochs_to_target"]) else f"{r['epochs_to_target']:.1f}"
        d = "-"
        if not pd.isna(r["delta_vs_baseline"]):
            d = f"{100 * r['delta_vs_baseline']:+.1f}"
            if not pd.isna(r["delta_ci_low"]):
                d += f" [{100 * r['delta_ci_low']:+.1f}, {100 * r['delta_ci_high']:+.1f}]"
        rows.append(
            {
                subject: r[subject],
                **{c: r[c] for c in cells},
                "best lr": value_text(r["best_lr"]),
                "final val acc %": pm(r["final_acc_mean"], r["final_acc_std"]),
                "best val acc %": pm(r["best_acc_mean"], r["best_acc_std"]),
                "AUC %": f"{100 * r['auc_mean']:.1f}",
                f"epochs to {100 * target_acc:.0f}%": f"{ett} ({r['reached_target']})",
                "diverged": r["diverged"],
                f"vs {reference} (95% CI)": d,
                "verdict": r["verdict"],
            }
        )
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


def summary_line(trials: pd.DataFrame) -> str:
    counts = trials["status"].value_counts().to_dict()
    return ", ".join(f"{v} {k.lower()}" for k, v in sorted(counts.items()))


def answer(cfg, trials: pd.DataFrame, wall: float) -> str:
    """What a finished run prints: the ablation table at each subject's best LR, and the trials in a line."""
    subject, reference = cfg.subject()
    table = ablation_table(trials, subject, reference, context_of(list(cfg.axes()), subject))
    return (
        f"Ablation table ({cfg.name}, {cfg.dataset}, {cfg.setting_text('epochs')} epochs; at each {subject}'s "
        "best lr; mean +- std "
        f"over {len(cfg.seeds)} seeds):\n{format_table(table, cfg.target_acc, subject, reference)}\n\n"
        f"trials: {summary_line(trials)}; wall {wall:.0f} s; time in training {trials['train_seconds'].sum():.0f} s "
        "(sum over trials)"
    )
