"""``python -m ablate.report EXPERIMENT_DIR [--wandb-report]``: which trick helps at which depth.

Reads ``history.csv`` and ``trials.csv`` (nothing else, so it works offline and after the fact)
and writes ``report.html`` (self-contained, plots embedded as PNG) and ``report.md`` (the same
tables).  ``--wandb-report`` also builds a W&B Report of the experiment's runs.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import os
import re
import sys
from typing import Dict, List, Optional

import pandas as pd
import yaml

from .results import ablation_table, format_table, read_csvs

__all__ = ["write_report", "verdicts", "build_wandb_report", "main"]


def _meta(exp_dir: str) -> Dict:
    p = os.path.join(exp_dir, "ablate_experiment.yaml")
    return (yaml.safe_load(open(p)) or {}) if os.path.exists(p) else {}


def _best_lr_rows(history: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    best = table[["block", "depth", "best_lr"]].rename(columns={"best_lr": "lr"})
    return history.merge(best, on=["block", "depth", "lr"])


def _plt():
    """matplotlib's pyplot on the headless Agg backend (reports are written on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["text.parse_math"] = False  # a "$" in a (user's) block name is text, not TeX

    return plt


def _fig_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _curves(hist: pd.DataFrame, metric: str, title: str) -> str:
    plt = _plt()

    depths = sorted(hist["depth"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 3.6), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        sub = hist[hist["depth"] == depth]
        for block, g in sub.groupby("block"):
            stats = g.groupby("epoch")[metric].agg(["mean", "std"]).fillna(0)
            lr = g["lr"].iloc[0]
            ax.plot(stats.index, stats["mean"], label=f"{block} (lr {lr:g})")
            ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
        ax.set_title(f"ResNet-{depth}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        if metric == "train_loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return _fig_png(fig)


def _lr_sensitivity(trials: pd.DataFrame) -> str:
    plt = _plt()

    depths = sorted(trials["depth"].unique())
    fig, axes = plt.subplots(1, len(depths), figsize=(5 * len(depths), 3.4), squeeze=False)
    for ax, depth in zip(axes[0], depths):
        for block, g in trials[trials["depth"] == depth].groupby("block"):
            s = g.groupby("lr")["final_val_acc"].agg(["mean", "std"]).fillna(0)
            ax.errorbar(s.index, s["mean"], yerr=s["std"], marker="o", capsize=3, label=block)
        ax.set_xscale("log")
        ax.set_title(f"ResNet-{depth}: final val acc vs LR")
        ax.set_xlabel("learning rate")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    return _fig_png(fig)


def _scalars(hist: pd.DataFrame) -> Optional[str]:
    cols = [c for c in hist.columns if re.fullmatch(r"\w+_stage\d", c) and hist[c].notna().any()]
    if not cols:
        return None
    plt = _plt()

    gated = hist[hist[cols].notna().any(axis=1)]
    keys = sorted({(b, d) for b, d in zip(gated["block"], gated["depth"])})
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.3 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.axis("off")
    for ax, (block, depth) in zip(axes.flat, keys):
        g = gated[(gated["block"] == block) & (gated["depth"] == depth)]
        for c in cols:
            if g[c].notna().any():
                m = g.groupby("epoch")[c].mean()
                ax.plot(m.index, m.values, label=c)
        ax.set_title(f"{block}, ResNet-{depth}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Learned gate scalars (mean over blocks of a stage, over seeds)")
    return _fig_png(fig)


def _say(g: pd.DataFrame, verdict_col: str, delta_col: str) -> str:
    parts: Dict[str, List[str]] = {}
    for _, r in g.sort_values("depth").iterrows():
        v = r[verdict_col] or "no baseline to compare"
        d = f"{r['depth']}"
        if v in ("helps", "hurts"):
            d += f" ({100 * r[delta_col]:+.1f} pts)"
        parts.setdefault(v, []).append(d)
    order = ["helps", "hurts", "no significant difference", "no spread across seeds", "too few seeds",
             "no baseline to compare"]
    return "; ".join(f"{v} at depth {', '.join(parts[v])}" for v in order if v in parts)


def verdicts(table: pd.DataFrame, baseline: str = "baseline") -> List[str]:
    """One line per trick: helps, hurts or no significant difference, and at which depths --
    for the final accuracy (ends better) and for the area under the curve (converges faster)."""
    lines = []
    for block, g in table[table["block"] != baseline].groupby("block", sort=False):
        lines.append(f"{block}: final acc: {_say(g, 'verdict', 'delta_vs_baseline')}. "
                     f"Convergence (AUC): {_say(g, 'auc_verdict', 'auc_delta_vs_baseline')}.")
    return lines


REQUIRED = {"history.csv": ("block", "depth", "lr", "seed", "epoch", "val_acc", "train_loss"),
            "trials.csv": ("block", "depth", "lr", "seed", "status", "final_val_acc", "diverged")}


def check_csvs(exp_dir: str) -> None:
    """Refuse empty, cut-short or foreign CSVs with one line, rather than a report of NaNs."""
    for name, cols in REQUIRED.items():
        path = os.path.join(exp_dir, name)
        try:
            df = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is empty or not a CSV ({e.__class__.__name__}); rerun the grid "
                             "with --resume to rewrite it") from None
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{path} lacks the columns {', '.join(missing)}: not written by ablate.grid")
        if df.empty:
            raise ValueError(f"{path} has no rows: no trial has reported yet")
        cut = df[list(cols)].isna().any(axis=1) if name == "history.csv" else pd.Series(False, index=df.index)
        if cut.any():
            raise ValueError(f"{path} is cut short (row {int(cut.idxmax()) + 2} is incomplete); rerun the grid "
                             "with --resume to rewrite it")


def write_report(exp_dir: str) -> str:
    """Write report.html and report.md into ``exp_dir``; return the HTML path."""
    history, trials = read_csvs(exp_dir)
    meta = _meta(exp_dir)
    target = float(meta.get("target_acc", 0.9))
    name = meta.get("name", os.path.basename(os.path.normpath(exp_dir)))
    table = ablation_table(trials)
    text_table = format_table(table, target)
    lines = verdicts(table) if not table.empty else []
    diverged = trials[trials["diverged"].astype(bool)]
    failed = trials[trials["status"].isin(["ERROR", "NOT_STARTED"])]
    n_seeds = trials["seed"].nunique()

    md = [f"# Ablation report: {name}", "",
          f"{len(trials)} trials: {trials['block'].nunique()} blocks x {trials['depth'].nunique()} depths x "
          f"{trials['lr'].nunique()} lrs x {n_seeds} seeds; dataset {meta.get('dataset', '?')}, "
          f"{meta.get('epochs', '?')} epochs.", "",
          "## Verdict per trick (vs baseline at each block's best LR, paired by seed, 95% t-interval)", ""]
    md += [f"- {line}" for line in lines] or ["- (no trick to compare)"]
    md += ["", f"## Ablation table (each block at its best LR; mean +- std over {n_seeds} seeds)", "",
           "AUC = mean val acc over all epochs (higher = converged earlier); vs baseline = final val acc "
           "difference in points, paired by seed, with its 95% t-interval.", "", text_table, ""]
    if len(diverged):
        md += ["## Diverged trials", ""] + [f"- {r.block} d{r.depth} lr {r.lr:g} seed {r.seed} "
                                            f"(epoch {r.epochs_done})" for r in diverged.itertuples()] + [""]
    if len(failed):
        md += ["## Failed or missing trials", ""] + [f"- {r.block} d{r.depth} lr {r.lr:g} seed {r.seed}: "
                                                     f"{r.status}" for r in failed.itertuples()] + [""]
    with open(os.path.join(exp_dir, "report.md"), "w") as f:
        f.write("\n".join(md))

    figs = []
    if not table.empty and len(history):
        best = _best_lr_rows(history, table)
        figs.append(("Convergence: validation accuracy (best LR per block; band = +-1 std over seeds)",
                     _curves(best, "val_acc", "val acc vs epoch")))
        figs.append(("Convergence: training loss", _curves(best, "train_loss", "train loss vs epoch")))
        figs.append(("LR sensitivity", _lr_sensitivity(trials)))
        sc = _scalars(best)
        if sc:
            figs.append(("Learned scalars of the gated blocks", sc))
    body = _md_to_html("\n".join(md).splitlines())
    for title, png in figs:
        body += f"<h2>{html.escape(title)}</h2>\n<img alt='{html.escape(title)}' src='data:image/png;base64,{png}'/>\n"
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>ablate: {html.escape(name)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "td:first-child{text-align:left}img{max-width:100%}</style></head><body>\n"
            f"{body}</body></html>\n")
    path = os.path.join(exp_dir, "report.html")
    with open(path, "w") as f:
        f.write(page)
    return path


def _md_to_html(md: List[str]) -> str:
    """Just enough Markdown (headings, bullets, pipe tables) for our own report."""
    out, in_list, in_table = [], False, False
    for line in md:
        if in_list and not line.startswith("- "):
            out.append("</ul>"); in_list = False
        if in_table and not line.startswith("|"):
            out.append("</table>"); in_table = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            if not in_list:
                out.append("<ul>"); in_list = True
            out.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if all(set(c) <= {"-"} for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>"); in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
        elif line:
            out.append(f"<p>{html.escape(line)}</p>")
    if in_list:
        out.append("</ul>")
    if in_table:
        out.append("</table>")
    return "\n".join(out) + "\n"


def build_wandb_report(project: str, entity: str, group: str, lines: List[str], blocks: List[str]):
    """A W&B Report object for one experiment (no network needed until ``.save()``)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    runset = wr.Runset(entity=entity, project=project, name=group,
                       filters=[expr.Config("experiment") == group], groupby=["block"])
    curves = wr.PanelGrid(runsets=[runset], panels=[
        wr.LinePlot(title="val acc by block (mean +- std over runs)", x="epoch", y=["val_acc"],
                    groupby="block", groupby_aggfunc="mean", groupby_rangefunc="stddev"),
        wr.LinePlot(title="train loss by block", x="epoch", y=["train_loss"], log_y=True,
                    groupby="block", groupby_aggfunc="mean", groupby_rangefunc="stddev"),
    ])
    parallel = wr.PanelGrid(runsets=[runset], panels=[wr.ParallelCoordinatesPlot(
        title="block / depth / lr vs final val acc",
        columns=[wr.ParallelCoordinatesPlotColumn(metric=wr.Config("block")),
                 wr.ParallelCoordinatesPlotColumn(metric=wr.Config("depth")),
                 wr.ParallelCoordinatesPlotColumn(metric=wr.Config("lr"), log=True),
                 wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("final_val_acc"))])])
    table = wr.PanelGrid(runsets=[runset], panels=[wr.RunComparer(diff_only="split")])
    return wr.Report(
        project=project, entity=entity, title=f"ablate: {group}",
        description=f"Residual-connection tricks vs baseline ({', '.join(blocks)})",
        blocks=[wr.H1("Verdict per trick"), wr.UnorderedList(items=lines or ["(none)"]),
                wr.H1("Convergence"), curves, wr.H1("Block, depth and LR against val acc"), parallel,
                wr.H1("Runs"), table],
    )


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ablate.report", description=__doc__.splitlines()[0])
    p.add_argument("experiment_dir")
    p.add_argument("--wandb-report", action="store_true", help="also save a W&B Report (needs an API key)")
    args = p.parse_args(argv)
    for f in ("history.csv", "trials.csv"):
        if not os.path.isfile(os.path.join(args.experiment_dir, f)):
            print(f"ablate.report: error: {args.experiment_dir} has no {f}; "
                  "give the directory that python -m ablate.grid printed last", file=sys.stderr)
            return 2
    try:
        check_csvs(args.experiment_dir)
    except ValueError as e:
        print(f"ablate.report: error: {e}", file=sys.stderr)
        return 2
    path = write_report(args.experiment_dir)
    print(f"report: {path}")
    if args.wandb_report:
        from .tracking import has_api_key

        if not has_api_key():
            print("ablate.report: error: --wandb-report needs WANDB_API_KEY (or `wandb login`)", file=sys.stderr)
            return 2
        _, trials = read_csvs(args.experiment_dir)
        meta = _meta(args.experiment_dir)
        table = ablation_table(trials)
        entity = (meta.get("wandb") or {}).get("entity") or os.environ.get("WANDB_ENTITY") or _default_entity()
        report = build_wandb_report((meta.get("wandb") or {}).get("project", "ablate"), entity,
                                    meta.get("name", os.path.basename(args.experiment_dir)), verdicts(table),
                                    sorted(trials["block"].unique()))
        report.save()
        print(f"W&B report: {report.url}")
    return 0


def _default_entity() -> str:
    import wandb

    return wandb.Api().default_entity


if __name__ == "__main__":
    sys.exit(main())
