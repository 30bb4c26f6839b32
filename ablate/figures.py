"""The report's figures, from the CSVs alone: each a PNG (base64) a reader can read at once.

Accuracy in %, one colour per block in every figure, the baseline black and dashed, legends
outside the data (one shared legend per figure), LR axes ticked at the tested LRs, and figures
wide enough for the page.
"""
from __future__ import annotations

import base64
import io
import re
from typing import Dict, List, Optional

import pandas as pd

BASELINE = "baseline"


def _plt():
    """matplotlib's pyplot on the headless Agg backend (reports are written on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def styles(blocks: List[str]) -> Dict[str, dict]:
    """The same colour for a block in every figure; the baseline black and dashed."""
    import matplotlib

    palette = matplotlib.colormaps["tab10"].colors
    others = [b for b in blocks if b != BASELINE]
    out = {b: {"color": palette[i % len(palette)], "linestyle": "-", "linewidth": 1.4} for i, b in enumerate(others)}
    out[BASELINE] = {"color": "black", "linestyle": "--", "linewidth": 2.0}
    return out


def _legend(fig, axes, blocks: List[str]) -> None:
    """One legend for the figure, to the right of the panels, in the blocks' order."""
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    order = [b for b in blocks if b in handles]
    fig.legend([handles[b] for b in order], [_text(b) for b in order], loc="outside right upper", title="block",
               fontsize=9)


def _grid(nrows: int, ncols: int, height: float = 3.2, sharey="row"):
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH_IN, 0.6 + height * nrows), squeeze=False,
                             sharex=True, sharey=sharey, layout="constrained")
    for ax in axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig, axes


def curves(history: pd.DataFrame, metric: str, ylabel: str, percent: bool, log: bool = False) -> str:
    """``metric`` per epoch: a panel per depth (rows) and LR (columns), mean over seeds, +-1 std band."""
    blocks = sorted(history["block"].unique(), key=lambda b: (b != BASELINE, b))
    sty = styles(blocks)
    depths, lrs = sorted(history["depth"].unique()), sorted(history["lr"].unique())
    fig, axes = _grid(len(depths), len(lrs))
    scale = 100.0 if percent else 1.0
    for i, depth in enumerate(depths):
        for j, lr in enumerate(lrs):
            ax = axes[i][j]
            sub = history[(history["depth"] == depth) & (history["lr"] == lr)]
            for block in blocks:
                g = sub[sub["block"] == block]
                if g.empty:
                    continue
                s = g.groupby("epoch")[metric].agg(["mean", "std"]).fillna(0) * scale
                ax.plot(s.index, s["mean"], label=block, **sty[block])
                ax.fill_between(s.index, s["mean"] - s["std"], s["mean"] + s["std"], color=sty[block]["color"],
                                alpha=0.12, linewidth=0)
            ax.set_title(f"ResNet-{depth}, lr {lr:g}", fontsize=10)
            if log:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            if i == len(depths) - 1:
                ax.set_xlabel("epoch")
            if j == 0:
                ax.set_ylabel(ylabel)
    _legend(fig, axes.flat, blocks)
    return _png(fig)


def lr_sensitivity(trials: pd.DataFrame) -> str:
    """Final val acc (%) against LR, a panel per depth; ticks at the tested LRs."""
    blocks = sorted(trials["block"].unique(), key=lambda b: (b != BASELINE, b))
    sty = styles(blocks)
    depths, lrs = sorted(trials["depth"].unique()), sorted(trials["lr"].unique())
    fig, axes = _grid(1, len(depths), height=3.6)
    for j, depth in enumerate(depths):
        ax = axes[0][j]
        for block in blocks:
            g = trials[(trials["depth"] == depth) & (trials["block"] == block)]
            if g.empty:
                continue
            s = g.groupby("lr")["final_val_acc"].agg(["mean", "std"]).fillna(0) * 100
            ax.errorbar(s.index, s["mean"], yerr=s["std"], marker="o", capsize=3, label=block, **sty[block])
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{lr:g}" for lr in lrs])
        ax.minorticks_off()
        ax.set_title(f"ResNet-{depth}", fontsize=10)
        ax.set_xlabel("learning rate (tested values)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final val acc (%)")
    _legend(fig, axes.flat, blocks)
    return _png(fig)


def gates(history: pd.DataFrame) -> Optional[str]:
    """Learned gate scalars per stage: a row per gated block, a column per (depth, LR).

    Absolute values, averaged over a stage's blocks and the seeds: signed gates of opposite
    sign would otherwise cancel out.
    """
    cols = sorted(c for c in history.columns if re.fullmatch(r"\w+_stage\d", c) and history[c].notna().any())
    if not cols:
        return None
    gated = history[history[cols].notna().any(axis=1)]
    blocks = sorted(gated["block"].unique())
    keys = sorted({(d, lr) for d, lr in zip(gated["depth"], gated["lr"])})
    fig, axes = _grid(len(blocks), len(keys), height=2.6, sharey=False)
    stage_style = {}
    for i, block in enumerate(blocks):
        for j, (depth, lr) in enumerate(keys):
            ax = axes[i][j]
            g = gated[(gated["block"] == block) & (gated["depth"] == depth) & (gated["lr"] == lr)]
            for c in cols:
                if g[c].notna().any():
                    stage = c.rsplit("_", 1)[1]
                    m = g.groupby("epoch")[c].apply(lambda v: v.abs().mean())
                    line, = ax.plot(m.index, m.values, label=f"{c.rsplit('_', 1)[0]} {stage}",
                                    **stage_style.get(stage, {}))
                    stage_style.setdefault(stage, {"color": line.get_color()})
            ax.set_title(f"{_text(block)}: ResNet-{depth}, lr {lr:g}", fontsize=9)
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
