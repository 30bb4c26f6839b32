"""The report's comparison as a W&B Report (``wandb_workspaces``), and ``ablate.compare``'s: built here from the
analysis, saved with the configured entity; nothing leaves this process until ``.save()``."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional

from ablate.analysis.stats import cell_title
from ablate.analysis.table import ablation_table
from ablate.spec.axes import LR
from ablate.spec.question import Question

__all__ = ["build_wandb_report", "build_compare_report", "save_wandb_report"]


def build_wandb_report(
    meta: Dict[str, Any], trials, lines: List[str], entity: str, q: Question, glance: Optional[List[str]] = None
):
    """The report page's comparison as a W&B Report (nothing leaves this process until ``.save()``).

    A section per context cell (by default per depth) with each compared value at its best LR (mean +-
    std over seeds, grouped by the compared axis), the LR-sensitivity view (final val acc against LR),
    and the run table.  ``q``: the report's ``Question``.
    """
    # wandb_workspaces (~1 s) only where a W&B Report is built.
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    group = meta.get("name", "ablate")
    project = (meta.get("wandb") or {}).get("project", "ablate")
    in_group = expr.Config("experiment") == group
    best = ablation_table(trials, q.subject, q.reference, q.context)
    # The answer at a glance first, as on the page: one line per compared value and cell (verdict, difference).
    blocks = [
        wr.H1("The answer at a glance"),
        wr.MarkdownBlock(text="```\n" + "\n".join(glance or ["(nothing to compare)"]) + "\n```"),
        wr.H1("Verdicts"),
        wr.UnorderedList(items=lines or ["(nothing to compare)"]),
    ]
    for cell, g in best.groupby(q.cells, sort=True) if q.cells else [((), best)]:
        cell = cell if isinstance(cell, tuple) else (cell,)
        where = [expr.Config(c) == _native(v) for c, v in zip(q.cells, cell)]
        title = cell_title(q.cells, cell) if q.cells else group
        picks = [
            expr.And(expr.Config(q.subject) == _native(r[q.subject]), expr.Config(LR) == float(r["best_lr"]))
            for r in g.to_dict("records")
        ]
        runs = wr.Runset(
            entity=entity,
            project=project,
            name=f"{title} at best LR",
            filters=expr.And(in_group, *where, expr.Or(*picks)),
            groupby=[q.subject],
        )
        blocks += [
            wr.H1(f"{title}: each {q.subject} at its best LR (mean +- std over seeds)"),
            wr.PanelGrid(
                runsets=[runs],
                panels=[
                    wr.LinePlot(
                        title=f"{title}: val acc",
                        x="epoch",
                        y=["val_acc"],
                        groupby=q.subject,
                        groupby_aggfunc="mean",
                        groupby_rangefunc="stddev",
                        legend_position="east",
                    ),
                    wr.LinePlot(
                        title=f"{title}: train loss",
                        x="epoch",
                        y=["train_loss"],
                        log_y=True,
                        groupby=q.subject,
                        groupby_aggfunc="mean",
                        groupby_rangefunc="stddev",
                        legend_position="east",
                    ),
                ],
            ),
        ]
    everything = wr.Runset(entity=entity, project=project, name=group, filters=[in_group], groupby=[q.subject])
    blocks += [
        wr.H1("LR sensitivity: final val acc against LR"),
        wr.PanelGrid(
            runsets=[everything],
            panels=[
                wr.ScatterPlot(
                    title="final val acc vs lr (every trial)",
                    x=wr.Config(LR),
                    y=wr.SummaryMetric("final_val_acc"),
                    log_x=True,
                ),
                wr.ParallelCoordinatesPlot(
                    title=f"{' / '.join(q.axes)} vs final val acc",
                    columns=[
                        *(
                            wr.ParallelCoordinatesPlotColumn(metric=wr.Config(a), log=a == LR)
                            for a in q.axes
                            if a != "seed"
                        ),
                        wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric("final_val_acc")),
                    ],
                ),
            ],
        ),
        wr.H1("Runs"),
        wr.PanelGrid(runsets=[everything], panels=[wr.RunComparer(diff_only="split")]),
    ]
    return wr.Report(
        project=project,
        entity=entity,
        title=f"ablate: {group}",
        description=f"Each {q.subject} against {q.reference}, at every {q.words()}",
        blocks=blocks,
    )


def _native(v):
    return v.item() if hasattr(v, "item") else v


def build_compare_report(before: Dict[str, Any], after: Dict[str, Any], lines: List[str], entity: str):
    """``ablate.compare``'s answer as a W&B Report: the per-cell verdicts, then the two experiments' groups side by
    side (val acc and train loss per epoch, mean +- std over seeds, one line per experiment)."""
    # wandb_workspaces (~1 s) only where a W&B Report is built.
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    project = (after.get("wandb") or {}).get("project", "ablate")
    groups = [str(before.get("name", "before")), str(after.get("name", "after"))]
    runs = [
        wr.Runset(entity=entity, project=project, name=g, filters=[expr.Config("experiment") == g], groupby=["block"])
        for g in groups
    ]
    return wr.Report(
        project=project,
        entity=entity,
        title=f"ablate.compare: {groups[1]} against {groups[0]}",
        description="Did the change change the result? Paired by point and seed.",
        blocks=[
            wr.H1("Per cell: same / changed / open"),
            wr.MarkdownBlock(text="```\n" + "\n".join(lines) + "\n```"),
            wr.H1("The two experiments"),
            wr.PanelGrid(
                runsets=runs,
                panels=[
                    wr.LinePlot(
                        title="val acc",
                        x="epoch",
                        y=["val_acc"],
                        groupby="block",
                        groupby_aggfunc="mean",
                        groupby_rangefunc="stddev",
                    ),
                    wr.LinePlot(
                        title="train loss",
                        x="epoch",
                        y=["train_loss"],
                        log_y=True,
                        groupby="block",
                        groupby_aggfunc="mean",
                        groupby_rangefunc="stddev",
                    ),
                ],
            ),
            wr.H1("Runs"),
            wr.PanelGrid(runsets=runs, panels=[wr.RunComparer(diff_only="split")]),
        ],
    )


def save_wandb_report(
    meta: Dict[str, Any], trials, lines: List[str], q: Question, glance: Optional[List[str]] = None
) -> str:
    """Save the W&B Report with the configured (or default) entity; return its URL."""
    import wandb  # ~1 s: only where a report is saved

    entity = (meta.get("wandb") or {}).get("entity") or os.environ.get("WANDB_ENTITY") or wandb.Api().default_entity
    report = build_wandb_report(meta, trials, lines, entity, q, glance)
    report.save()
    return report.url
