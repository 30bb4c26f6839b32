"""The report's figures, from the CSVs alone: each a PNG (base64) a reader can read at once.

Accuracy in %, one colour per block in every figure, the baseline black and dashed, legends
outside the data (one shared legend per figure), LR axes ticked at the tested LRs, and figures
wide enough for the page.
"""

from __future__ import annotations

import base64
import io
import math
import re
from typing import Dict, List, Optional

import pandas as pd

from ablate.analysis.stats import BASELINE, cell_title
from ablate.spec.axes import AXES, LR, context_of


def _plt():
    """matplotlib's pyplot on the headless Agg backend (reports are written on servers)."""
    import matplotlib  # ~0.5 s, only where a page is drawn; the backend is set before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the backend is chosen

    return plt


def _text(s: str) -> str:
    """A (user's) block name as plain text: a "$" would start matplotlib's mathtext."""
    return str(s).replace("$", r"\$")


WIDTH_IN = 13.0  # every figure spans the page: 1,300 px at 100 dpi


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def styles(values: List, reference=BASELINE) -> Dict[str, dict]:
    """The same colour for a value (a block) in every figure; the reference black and dashed."""
    import matplotlib  # loaded by _plt already where a figure is drawn

    palette = matplotlib.colormaps["tab10"].colors
    others = [b for b in values if b != reference]
    out = {b: {"color": palette[i % len(palette)], "linestyle": "-", "linewidth": 1.4} for i, b in enumerate(others)}
    out[reference] = {"color": "black", "linestyle": "--", "linewidth": 2.0}
    return out


def _legend(fig, axes, values: List, title: str = "block") -> None:
    """One legend for the figure, to the right of the panels, in the values' order."""
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    order = [_text(b) for b in values if _text(b) in handles]
    fig.legend([handles[b] for b in order], order, loc="outside right upper", title=title, fontsize=9)


def _ordered(values, reference) -> List:
    return sorted(values, key=lambda b: (b != reference, str(b)))


def _cells(frame: pd.DataFrame, cells: List[str]) -> List[tuple]:
    """The context cells a figure has a row (or a panel) for, in order."""
    if not cells:
        return [()]
    return sorted({tuple(r) for r in frame[cells].itertuples(index=False, name=None)})


def _in_cell(frame: pd.DataFrame, cells: List[str], cell: tuple) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for c, v in zip(cells, cell):
        mask &= frame[c] == v
    return frame[mask]


def _title(cells: List[str], cell: tuple) -> str:
    return cell_title(cells, cell)


def _grid(nrows: int, ncols: int, height: float = 3.2, sharey="row"):
    from matplotlib.ticker import MaxNLocator  # as _plt: only where a page is drawn

    plt = _plt()
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(WIDTH_IN, 0.6 + height * nrows),
        squeeze=False,
        sharex=True,
        sharey=sharey,
        layout="constrained",
    )
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def curves(
    history: pd.DataFrame,
    metric: str,
    ylabel: str,
    percent: bool,
    subject: str = "block",
    reference=BASELINE,
    cells: Optional[List[str]] = None,
    log: bool = False,
) -> str:
    """``metric`` per epoch: a panel per context cell (rows: every axis but the subject, lr and seed; by
    default the depth) and LR (columns), a line per value of ``subject``, mean over seeds, +-1 std band."""
    cells = ["depth"] if cells is None else list(cells)
    values = _ordered(history[subject].unique(), reference)
    sty = styles(values, reference)
    rows, lrs = _cells(history, cells), sorted(history[LR].unique())
    fig, axes = _grid(len(rows), len(lrs))
    scale = 100.0 if percent else 1.0
    for i, cell in enumerate(rows):
        in_cell = _in_cell(history, cells, cell)
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            sub = in_cell[in_cell[LR] == lr]
            for value in values:
                g = sub[sub[subject] == value]
                if g.empty:
                    continue
                s = g.groupby("epoch")[metric].agg(["mean", "std"]).fillna(0) * scale
                ax.plot(s.index, s["mean"], label=_text(value), **sty[value])
                ax.fill_between(
                    s.index,
                    s["mean"] - s["std"],
                    s["mean"] + s["std"],
                    color=sty[value]["color"],
                    alpha=0.12,
                    linewidth=0,
                )
            ax.set_title(f"{_title(cells, cell)}, lr {lr:g}", fontsize=10)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if i == len(rows) - 1:
                ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel(ylabel)
    _legend(fig, axes.flat, values, subject)
    return _png(fig)


def lr_sensitivity(
    trials: pd.DataFrame, subject: str = "block", reference=BASELINE, cells: Optional[List[str]] = None
) -> str:
    """Final val acc (%) against LR, a panel per context cell (by default per depth); ticks at the tested LRs."""
    cells = ["depth"] if cells is None else list(cells)
    values = _ordered(trials[subject].unique(), reference)
    sty = styles(values, reference)
    panels, lrs = _cells(trials, cells), sorted(trials[LR].unique())
    per_row = 4
    n_rows = -(-len(panels) // per_row)
    fig, axes = _grid(n_rows, min(per_row, len(panels)), height=3.6)
    for k, cell in enumerate(panels):
        ax = axes[k // per_row][k % per_row]
        in_cell = _in_cell(trials, cells, cell)
        for value in values:
            g = in_cell[in_cell[subject] == value]
            if g.empty:
                continue
            s = g.groupby(LR)["final_val_acc"].agg(["mean", "std"]).fillna(0) * 100
            ax.errorbar(s.index, s["mean"], yerr=s["std"], marker="o", capsize=3, label=_text(value), **sty[value])
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        ax.minorticks_off()
        ax.set_title(_title(cells, cell), fontsize=10)
        ax.set_xlabel("learning rate (tested values)")
        ax.grid(alpha=0.3)
    for k in range(len(panels), n_rows * min(per_row, len(panels))):
        axes[k // per_row][k % per_row].set_visible(False)
    for row in axes:
        row[0].set_ylabel("final val acc (%)")
    _legend(fig, axes.flat, values, subject)
    return _png(fig)


def gates(history: pd.DataFrame, context: Optional[List[str]] = None) -> Optional[str]:
    """Learned gate scalars per stage: a row per gated block, a column per context cell (by default per
    depth and LR).

    Absolute values, averaged over a stage's blocks and the seeds: signed gates of opposite
    sign would otherwise cancel out.
    """
    cols = sorted(c for c in history.columns if re.fullmatch(r"\w+_stage\d", c) and history[c].notna().any())
    if not cols:
        return None
    gated = history[history[cols].notna().any(axis=1)]
    context = [c for c in (context_of(AXES, "block") if context is None else context) if c != "block"]
    blocks = sorted(gated["block"].unique())
    keys = _cells(gated, context)
    fig, axes = _grid(len(blocks), len(keys), height=2.6, sharey=False)
    stage_style = {}
    for i, block in enumerate(blocks):
        for j, cell in enumerate(keys):
            ax = axes[i][j]
            g = _in_cell(gated[gated["block"] == block], context, cell)
            for c in cols:
                if g[c].notna().any():
                    stage = c.rsplit("_", 1)[1]
                    m = g.groupby("epoch")[c].apply(lambda v: v.abs().mean())
                    (line,) = ax.plot(
                        m.index, m.values, label=f"{c.rsplit('_', 1)[0]} {stage}", **stage_style.get(stage, {})
                    )
                    stage_style.setdefault(stage, {"color": line.get_color()})
            ax.set_title(f"{_text(block)}: {_title(context, cell)}", fontsize=9)
            ax.grid(alpha=0.3)
            if i == len(blocks) - 1:
                ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel("|gate| (mean over blocks)")
    handles = {}
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, title="scalar, stage")
    return _png(fig)


# Verdict colours of the answer at a glance (colour-blind safe: blue/orange, with words in every cell).
VERDICT_COLOURS = {"helps": "#4477AA", "hurts": "#EE7733", "same": "#BBBBBB", "open": "#FFFFFF", "void": "#DDDDDD"}


def answer_matrix(cells: pd.DataFrame, who, reference_words: str) -> Optional[str]:
    """The answer at a glance: a matrix of compared values (rows) x context cells (columns), each cell coloured
    by its final-acc verdict and labelled with it and the difference [interval] in points."""
    if not len(cells):
        return None
    plt = _plt()
    values = list(dict.fromkeys(cells["value"]))
    columns = list(dict.fromkeys(cells["cell"]))
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 0.9 + 0.62 * len(values)))  # every figure spans the page
    fig.subplots_adjust(left=0.02, right=0.995)  # the value labels sit left of it: the tight box keeps them
    by = {(r["value"], r["cell"]): r for r in cells.to_dict("records")}
    for i, value in enumerate(values):
        for j, col in enumerate(columns):
            r = by.get((value, col))
            verdict = r["verdict"] if r else "void"
            ax.add_patch(
                plt.Rectangle(
                    (j, i),
                    1,
                    1,
                    facecolor=VERDICT_COLOURS[verdict],
                    edgecolor="#666666",
                    hatch="//" if verdict == "void" else None,
                )
            )
            text = f"{verdict}\n{r['label']}" if r else "(no pair)"
            ax.text(
                j + 0.5,
                i + 0.5,
                _text(text[:60]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if verdict in ("helps", "hurts") else "black",
            )
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(values), 0)
    ax.set_xticks(
        [j + 0.5 for j in range(len(columns))], [_text(c) for c in columns], fontsize=8, rotation=20, ha="right"
    )
    ax.set_yticks([i + 0.5 for i in range(len(values))], [_text(who(v)) for v in values], fontsize=9)
    ax.tick_params(length=0)
    ax.set_title(
        _text(f"Final val acc against {reference_words}: verdict and difference [interval], points"), fontsize=10
    )
    for side in ax.spines.values():
        side.set_visible(False)
    return _png(fig)


def paired_differences(judged: pd.DataFrame, q, margin_points: float) -> Optional[str]:
    """``ablate.compare``: each cell's paired difference (AFTER - BEFORE) with its anytime-valid interval, final acc
    and AUC side by side, the +-margin band shaded; an unbounded interval drawn to the panel's edge."""
    if not len(judged):
        return None
    plt = _plt()
    labels = [q.where(r) for r in judged.to_dict("records")]
    fig, axes = plt.subplots(1, 2, figsize=(WIDTH_IN, 1.2 + 0.35 * len(labels)), sharey=True)
    for ax, (key, title) in zip(axes, (("final", "final val acc"), ("auc", "AUC (convergence)"))):
        means = 100 * judged[f"{key}_mean"].to_numpy(float)
        finite = [100 * x for x in (*judged[f"{key}_low"], *judged[f"{key}_high"]) if math.isfinite(x)]
        span = max([abs(x) for x in finite + list(means[~pd.isna(means)])] + [2 * margin_points]) * 1.15
        for i, r in enumerate(judged.to_dict("records")):
            low, high = (100 * r[f"{key}_low"], 100 * r[f"{key}_high"])
            low, high = (
                max(low, -span) if math.isfinite(low) else -span,
                min(high, span) if math.isfinite(high) else span,
            )
            colour = {"helps": "#EE7733", "hurts": "#EE7733", "equivalent": "#4477AA"}.get(
                r[f"{key}_verdict"], "#777777"
            )
            ax.plot([low, high], [i, i], color=colour, linewidth=2)
            if math.isfinite(r[f"{key}_mean"]):
                ax.plot([100 * r[f"{key}_mean"]], [i], "o", color=colour)
        ax.axvspan(-margin_points, margin_points, color="#DDDDDD", zorder=0)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlim(-span, span)
        ax.set_title(f"{title}: after - before, points (band: +-{margin_points:g})", fontsize=10)
    axes[0].set_yticks(range(len(labels)), [_text(t) for t in labels], fontsize=8)
    axes[0].invert_yaxis()
    return _png(fig)
