"""The report page: which trick helps at which depth and LR (or which value of any compared axis helps in which
cell of the others), from an experiment's tables and identity alone.

``Page.of(...)`` computes the analysis once (``findings.Analysis``) and lays it out as sections; ``write`` renders
them as ``report.html`` (one self-contained page, figures embedded) and ``report.md`` (the same verdicts and
tables).  Reading the tables is the caller's (``ablate.run.report``): this module never touches storage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import jinja2
import pandas as pd

import ablate.analysis.figures as figures
from ablate.analysis.findings import (
    Analysis,
    answer_lines,
    effects_table,
    power_notes,
    sequential,
    stable_table,
    verdicts,
)
from ablate.analysis.stats import finished
from ablate.analysis.table import ablation_table, best_lr_frame, pipe_table
from ablate.formatting import value_text
from ablate.spec.question import Question
from ablate.spec.status import Status
from ablate.storage import HISTORY_FILE, REPORT_HTML, REPORT_MD, TRIALS_FILE

__all__ = ["Page", "Section"]


def provenance(exp_dir: str, meta: Dict, trials: pd.DataFrame, q: Question) -> pd.DataFrame:
    prov = meta.get("provenance") or {}
    sweep = meta.get("sweep") or {}
    m = {
        **meta,
        **{k: f"swept ({', '.join(map(value_text, v))})" for k, v in sweep.items()},
    }  # a swept setting: its values
    recipe = (
        f"SGD, momentum {m.get('momentum')}{' (Nesterov)' if m.get('nesterov') is True else ''}, weight decay "
        f"{m.get('weight_decay')}, {m.get('schedule')} schedule"
        + (f" (x{m.get('lr_decay')} at {m.get('milestones')} of training)" if m.get("schedule") == "step" else "")
        + f", warm-up {m.get('warmup_epochs')} epochs, label smoothing {m.get('label_smoothing')}, "
        f"{m.get('epochs')} epochs, batch {m.get('batch_size')}, shortcut option {m.get('shortcut')}"
    )
    wb = meta.get("wandb") or {}
    rows = [
        (
            "experiment",
            f"{meta.get('name', os.path.basename(os.path.normpath(exp_dir)))}: {len(trials)} trials = "
            + " x ".join(f"{trials[a].nunique()} {a}" for a in q.axes),
        ),
        ("question", f"each {q.subject} against {q.who(q.reference)}, paired by seed, at every {q.words()}"),
        ("dataset", str(meta.get("dataset", "?"))),
        ("recipe", recipe),
        (
            "grid",
            f"blocks {', '.join(map(str, meta.get('blocks', [])))}; depths {meta.get('depths')}; "
            f"lrs {meta.get('lrs')}; seeds {meta.get('seeds')}" + "".join(f"; {k} {v}" for k, v in sweep.items()),
        ),
        ("code", f"commit {prov.get('git_commit') or 'unknown'}"),
        ("versions", ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items()) or "unknown"),
        ("run", f"started {prov.get('started', '?')}; report written {pd.Timestamp.now():%Y-%m-%d %H:%M}"),
        (
            "data files",
            f"{os.path.join(exp_dir, HISTORY_FILE)} (one row per trial and epoch), "
            f"{os.path.join(exp_dir, TRIALS_FILE)} (one row per trial)",
        ),
        (
            "W&B",
            f"project {wb.get('project', 'ablate')}, group {meta.get('name', '?')}"
            + (f", entity {wb['entity']}" if wb.get("entity") else "")
            + "; one run per trial, named block-dDEPTH-lrLR-sSEED"
            + "".join(f"-{k}VALUE" for k in sweep),
        ),
    ]
    return pd.DataFrame(rows, columns=["", "value"])


@dataclass
class Section:
    title: str
    paragraphs: List[str] = field(default_factory=list)
    bullets: List[str] = field(default_factory=list)
    table: Optional[pd.DataFrame] = None
    image: Optional[str] = None
    caption: str = ""
    css: str = ""  # "text": a table of words, left-aligned


def sections(exp_dir: str, history: pd.DataFrame, trials: pd.DataFrame, meta: Dict) -> tuple:
    """The report's content, once, for both the page and the Markdown: (name, sections, analysis, verdict lines)."""
    q = Question.of_tables(meta, trials)
    target = float(meta.get("target_acc", 0.9))
    a = Analysis.of(trials, meta, q)
    fx, stable = a.fx, a.stable
    table = ablation_table(trials, q.subject, q.reference, q.context)
    lines = verdicts(fx, stable, q)
    cells = q.words()
    rounds = meta.get("until_resolved") or {}
    story = None
    how_sure = power_notes(trials, fx, q)
    if a.judged is not None:  # an --until-resolved study: its verdicts are the anytime-valid ones
        lines, how_sure, story = sequential(trials, meta, q, a.judged)
    glance = a.cells
    out = [
        Section(
            "The answer at a glance",
            paragraphs=[
                f"Final val acc of each {q.subject} against {q.who(q.reference)} in every {cells}: "
                + (
                    "anytime-valid verdicts (helps / hurts / same: no difference larger than "
                    f"{float(meta.get('equivalence_margin', 1.0)):g} points / open / void)"
                    if a.judged is not None
                    else "fixed-n verdicts (helps / hurts at a false discovery rate of 5%; open: not resolved; "
                    "void: not tested)"
                )
                + ", with the difference and its 95% interval in points."
            ],
            image=figures.answer_matrix(glance, q.who, q.who(q.reference)) if len(glance) else None,
            bullets=answer_lines(q, glance) if len(glance) else ["(nothing to compare)"],
            caption="Blue: helps; orange: hurts; grey: same; white: open; hatched: void.",
        ),
        Section("Provenance", table=provenance(exp_dir, meta, trials, q), css="text"),
        Section(
            "Verdicts",
            paragraphs=[
                *(
                    [
                        f"{'Interim' if not rounds.get('final') else 'Final'}: round {rounds.get('round')}, "
                        f"{rounds.get('resolved')} of {rounds.get('total')} comparisons resolved "
                        f"(--until-resolved, max_seeds {meta.get('max_seeds')})."
                    ]
                    if rounds.get("round")
                    else [
                        "Seeds were added by ablate.compare (looking at this experiment's results): the "
                        "verdicts are the anytime-valid ones."
                    ]
                    if rounds
                    else []
                ),
                f"Each {q.subject} against {q.who(q.reference)} at every {cells} (final val acc: ends better; AUC = "
                "mean val acc over epochs: converges faster), and its stable LR range.",
            ],
            bullets=lines or ["(nothing to compare)"],
        ),
        Section("How sure", bullets=how_sure),
        *(
            [
                Section(
                    "How each verdict was reached",
                    paragraphs=[
                        "Per comparison: the seeds it used, its anytime-valid 95% interval (valid however often "
                        "the study looked), its e-value, and for what stays open the seeds the forecast says would "
                        "close it."
                    ],
                    table=story,
                )
            ]
            if story is not None
            else []
        ),
        Section(
            "Stable LR range",
            paragraphs=[
                f"The LRs at which a {q.subject} trains without collapse or divergence: no seed diverged and every "
                f"seed ends at least halfway to the best mean final accuracy any {q.subject} reached at that "
                f"{q.words(q.cells)}."
            ],
            table=stable_table(stable, q) if len(stable) else None,
            css="text",
        ),
        Section(
            f"Effects at every {cells} (vs {q.who(q.reference)}, paired by seed)"
            + (": fixed-n, for reference only (not valid after seeds were added by looking)" if rounds else ""),
            table=effects_table(fx, q) if len(fx) else None,
        ),
        Section(
            f"Each {q.subject} at its best LR",
            paragraphs=[
                f"Mean +- std over seeds; epochs to {100 * target:.0f}% val acc; every column refers to the trials "
                "at that best LR. The LR is picked on final accuracy: differences here are optimistic (unadjusted)."
            ],
            table=best_lr_frame(table, target, q.subject, value_text(q.reference)) if not table.empty else None,
        ),
    ]
    fin = finished(history.merge(trials[[*q.axes, "status"]], on=q.axes)) if len(history) else history
    if len(fin):
        out += [
            Section(
                "Convergence: validation accuracy",
                image=figures.curves(fin, "val_acc", "val acc (%)", True, q.subject, q.reference, q.cells),
                caption=f"Mean over seeds, band +-1 std; a panel per {q.words(q.cells)} (rows) "
                f"and LR (columns); {q.who(q.reference)} black and dashed.",
            ),
            Section(
                "Convergence: training loss",
                image=figures.curves(fin, "train_loss", "train loss", False, q.subject, q.reference, q.cells, log=True),
                caption="Mean over seeds (log scale).",
            ),
            Section(
                "LR sensitivity",
                image=figures.lr_sensitivity(finished(trials), q.subject, q.reference, q.cells),
                caption="Final val acc, mean +- std over seeds, at each tested LR.",
            ),
        ]
        g = figures.gates(fin, q.context)
        if g:
            out.append(
                Section(
                    "Learned gate scalars",
                    image=g,
                    caption=f"Absolute values, mean over a stage's blocks and the seeds, per {q.words()}.",
                )
            )
    diverged = trials[trials["diverged"].astype(bool)]
    if len(diverged):
        out.append(
            Section(
                "Diverged trials",
                bullets=[f"{q.trial(r)} (epoch {r['epochs_done']})" for r in diverged.to_dict("records")],
            )
        )
    failed = trials[~trials["status"].isin(Status.finished())]
    if len(failed):
        out.append(
            Section(
                "Unfinished trials (not counted)",
                bullets=[f"{q.trial(r)}: {r['status']}" for r in failed.to_dict("records")],
            )
        )
    name = meta.get("name", os.path.basename(os.path.normpath(exp_dir)))
    return name, out, a, lines


def _markdown(name: str, secs: List[Section]) -> str:
    md = [f"# Ablation report: {name}", ""]
    for s in secs:
        md += [f"## {s.title}", ""]
        md += [p + "\n" for p in s.paragraphs]
        md += [f"- {b}" for b in s.bullets] + ([""] if s.bullets else [])
        if s.table is not None:
            md += [pipe_table(s.table), ""]
        if s.image:
            md += [f"(figure in report.html: {s.caption})", ""]
    return "\n".join(md)


@dataclass
class Page:
    """An experiment's report: its sections, and the analysis they show (computed once: the W&B Report reads the
    same ``analysis`` and verdict ``lines``)."""

    name: str
    sections: List[Section]
    analysis: Analysis
    lines: List[str]

    @classmethod
    def of(cls, exp_dir: str, history: pd.DataFrame, trials: pd.DataFrame, meta: Dict) -> "Page":
        return cls(*sections(exp_dir, history, trials, meta))

    def write(self, exp_dir: str) -> str:
        """Write report.html and report.md into ``exp_dir``; return the HTML path."""
        with open(os.path.join(exp_dir, REPORT_MD), "w") as f:
            f.write(_markdown(self.name, self.sections))
        env = jinja2.Environment(loader=jinja2.PackageLoader("ablate.analysis", "templates"), autoescape=True)
        path = os.path.join(exp_dir, REPORT_HTML)
        with open(path, "w") as f:
            f.write(env.get_template("report.html.j2").render(name=self.name, sections=self.sections))
        return path
