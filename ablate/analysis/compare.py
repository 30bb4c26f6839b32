"""Did my change change the result? (``python -m ablate.compare BEFORE AFTER``, the judging: ``ablate.run.compare``
reads the two experiments and grows them)

Two experiments (a run on main and a run on a branch; before and after a torch upgrade, a rewritten block,
another augmentation) as one paired study: every trial of AFTER is paired with the trial of BEFORE at the
same point (every axis and the seed: the same initialisation and data order), and each *cell* (a point
without its seed: block x depth x lr x any swept setting) is judged on final accuracy and AUC with the
report's own statistics (``ablate.analysis.sequential``: anytime-valid, one family, an equivalence margin):

- **same**: within +-``--margin`` points (default 0.5) on both metrics;
- **changed**: a difference, with its interval;
- **open**: the seeds cannot tell yet; **void**: a metric is missing.

The comparison is an ordinary question of ablate's (``ablate.analysis.rounds``): its subject is the *side* (AFTER
against the reference BEFORE), its context every axis but the seed.  Exit codes, for CI: 0 every cell
same, 1 a cell changed, 3 open cells remain (none changed), 2 bad input, 4 a growth failed.  ``--until-resolved``
adds seeds where a cell is open, to both experiments, each grown through its own records by ``python -m ablate.grid
--resume`` (one writer per experiment), until every cell closes or ``--max-seeds``.
"""

from __future__ import annotations

import html
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import pandas as pd

import ablate.analysis.figures as figures
from ablate.analysis.rounds import chronology, judge, seed_pool, tried_seeds
from ablate.analysis.table import pipe_table
from ablate.errors import UsageError
from ablate.formatting import pts, value_text
from ablate.spec.axes import PAIR, axes_of
from ablate.spec.question import Question
from ablate.spec.settings import NO_RESULT, TrainSettings, as_it_acts
from ablate.storage import COMPARE_HTML, COMPARE_MD

__all__ = [
    "Side",
    "check",
    "paired_table",
    "question",
    "compare",
    "cell_verdict",
    "exit_code",
    "rows",
    "summary",
    "write_pages",
    "EXIT_SAME",
    "EXIT_CHANGED",
    "EXIT_OPEN",
    "SIDE",
    "BEFORE",
    "AFTER",
]

EXIT_SAME, EXIT_CHANGED, EXIT_OPEN = 0, 1, 3  # 2: bad input; 4: a growth failed (``ablate.errors.GrowthFailed``)
SIDE, BEFORE, AFTER = "side", "before", "after"


@dataclass
class Side:
    """One experiment of the pair, read as the report reads it (``ablate.run.compare.read_side``)."""

    where: str  # as given (a directory or a URI)
    local: str  # where its tables are on this machine
    trials: pd.DataFrame
    meta: Dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or os.path.basename(self.where))

    def provenance(self) -> str:
        prov = self.meta.get("provenance") or {}
        versions = ", ".join(f"{k} {v}" for k, v in (prov.get("versions") or {}).items())
        commit = prov.get("git_commit") or "unknown"
        return f"{self.name} ({self.where}): commit {commit}; {versions or 'versions unknown'}"


# The settings of the two identities that are not compared: what changes no result, what the axes already pair,
# and the experiment's own bookkeeping.
AXIS_KEYS = ("blocks", "depths", "lrs", "seeds", "sweep", "block_modules")


def result_settings(meta: Dict[str, Any]) -> Dict[str, Any]:
    """The settings of an identity that change a result, as they act (the axes are paired, not compared)."""
    dataset = meta.get("dataset")
    return {
        k: as_it_acts(k, meta.get(k), dataset)
        for k in TrainSettings.model_fields
        if k not in NO_RESULT and k not in AXIS_KEYS and k in meta
    }


def differing(before: Side, after: Side) -> Dict[str, Tuple[Any, Any]]:
    b, a = result_settings(before.meta), result_settings(after.meta)
    return {k: (b.get(k), a.get(k)) for k in sorted(set(b) | set(a)) if b.get(k) != a.get(k)}


def check(before: Side, after: Side, named: List[str]) -> Tuple[List[str], Dict[str, Tuple[Any, Any]]]:
    """The axes the two share (refused: other axes, or settings that change a result and differ unnamed)."""
    unknown = [k for k in named if k not in TrainSettings.model_fields]
    if unknown:
        raise UsageError(
            f"--differs {','.join(unknown)}: not a setting; allowed: settings that change a result, "
            "such as epochs, weight_decay, precision, dataset"
        )
    axes_b, axes_a = axes_of(before.trials), axes_of(after.trials)
    if axes_b != axes_a:
        raise UsageError(
            f"the two experiments have other axes ({', '.join(axes_b)} against {', '.join(axes_a)}): "
            "points cannot be paired; compare experiments of the same grid (axes may hold other values)"
        )
    diff = differing(before, after)
    unnamed = {k: v for k, v in diff.items() if k not in named}
    if unnamed:
        said = "; ".join(
            f"{k} {value_text(b)} in {before.name} but {value_text(a)} in {after.name}"
            for k, (b, a) in list(unnamed.items())[:4]
        )
        raise UsageError(
            f"settings that change a result differ: {said}; if that is the change under test, name it "
            f"with --differs {','.join(unnamed)}"
        )
    return axes_b, diff


def paired_table(before: Side, after: Side, axes: List[str]) -> Tuple[pd.DataFrame, Dict[str, int]]:
    """Both experiments' trials as one table with a ``side`` axis, and what each side lacks of the other."""
    keys = [a for a in axes]
    b = before.trials.assign(**{SIDE: BEFORE})
    a = after.trials.assign(**{SIDE: AFTER})
    pts_b = {tuple(_same(v) for v in r) for r in b[keys].itertuples(index=False)}
    pts_a = {tuple(_same(v) for v in r) for r in a[keys].itertuples(index=False)}
    lacks = {before.name: len(pts_a - pts_b), after.name: len(pts_b - pts_a)}
    if not pts_a & pts_b:
        raise UsageError(
            f"{before.name} and {after.name} share no point (the same value of every axis and the same "
            f"seed): nothing can be paired; {after.name} has {len(pts_a)} points, {before.name} "
            f"{len(pts_b)}"
        )
    both = pd.concat([b, a], ignore_index=True)
    cols = [*axes, SIDE] + [c for c in both.columns if c not in axes and c != SIDE]
    return both[cols], lacks


def _same(v: Any) -> Any:
    """A value as both sides' tables hold it alike (a CSV reads 0 as int on one side and 0.0 on the other)."""
    v = v.item() if hasattr(v, "item") else v
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def question(axes: List[str]) -> Question:
    return Question(SIDE, BEFORE, [*axes, SIDE], [a for a in axes if a != PAIR])


def compare(
    before: Side,
    after: Side,
    margin: float,
    max_seeds: int,
    named: List[str],
    seen: Optional[List[Dict[str, Any]]] = None,
):
    """The paired judgement: (judged rows per cell, the question, what each side lacks, the settings that differ,
    both sides as one table, the seed pool); each cell judged on both metrics, its bound counting points tried,
    its pairs read in the order the comparison's looks first saw them (``seen``)."""
    axes, diff = check(before, after, named)
    both, lacks = paired_table(before, after, axes)
    q = question(axes)
    pool = seed_pool(sorted({int(s) for s in both[PAIR]}), max_seeds)
    tried = {k: len(v) for k, v in tried_seeds(both.to_dict("records"), q, pool).items()}
    seen = seen or []
    judged = judge(
        both, q, margin, max_seeds, tried, drive=("final", "auc"), order=chronology(seen, q), unseen=len(seen) + 1
    )
    if not len(judged):
        raise UsageError(f"no finished trial of {before.name} pairs with one of {after.name}: nothing to compare")
    return judged, q, lacks, diff, both, pool


def cell_verdict(r: Dict[str, Any]) -> str:
    """A cell's verdict on both metrics: changed (either separated), same (both equivalent), void, or open."""
    v = (r["final_verdict"], r["auc_verdict"])
    if any(x in ("helps", "hurts") for x in v):
        return "changed"
    if all(x == "equivalent" for x in v):
        return "same"
    if "void" in v:
        return "void"
    return "open"


def exit_code(judged: pd.DataFrame) -> int:
    verdicts = [cell_verdict(r) for r in judged.to_dict("records")]
    if "changed" in verdicts:
        return EXIT_CHANGED
    return EXIT_SAME if all(v == "same" for v in verdicts) else EXIT_OPEN


def _metric_text(r: Dict[str, Any], key: str) -> str:
    v = r[f"{key}_verdict"]
    if v == "void":
        return "void"
    low, high = r[f"{key}_low"], r[f"{key}_high"]
    edge = lambda x: pts(x) if math.isfinite(x) else ("-inf" if x < 0 else "+inf")  # noqa: E731
    word = {"helps": "changed", "hurts": "changed", "equivalent": "same"}.get(v, "open")
    return f"{word} {pts(r[f'{key}_mean'])} [{edge(low)}, {edge(high)}]"


def rows(judged: pd.DataFrame, q: Question) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "cell": q.where(r),
                "seeds": r["n"],
                "verdict": cell_verdict(r),
                "final acc, points [anytime 95%]": _metric_text(r, "final"),
                "AUC, points [anytime 95%]": _metric_text(r, "auc"),
            }
            for r in judged.to_dict("records")
        ]
    )


def summary(
    before: Side,
    after: Side,
    judged: pd.DataFrame,
    q: Question,
    lacks: Dict[str, int],
    diff: Dict[str, Tuple[Any, Any]],
    margin: float,
) -> List[str]:
    code = exit_code(judged)
    counts = pd.Series([cell_verdict(r) for r in judged.to_dict("records")]).value_counts().to_dict()
    overall = {EXIT_SAME: "same", EXIT_CHANGED: "changed", EXIT_OPEN: "open"}[code]
    lines = [f"before: {before.provenance()}", f"after:  {after.provenance()}"]
    if diff:
        lines.append(
            "differs (named): " + "; ".join(f"{k} {value_text(b)} -> {value_text(a)}" for k, (b, a) in diff.items())
        )
    for name, n in lacks.items():
        if n:
            lines.append(f"{name} lacks {n} points the other holds (not compared)")
    lines.append(
        f"overall: {overall} ({', '.join(f'{n} {v}' for v, n in sorted(counts.items()))} of {len(judged)} "
        f"cells; same = within +-{margin:g} points on final acc and AUC, anytime-valid, one family at 5%)"
    )
    return lines


def write_pages(
    out: str, before: Side, after: Side, judged: pd.DataFrame, q: Question, head: List[str], margin: float
) -> Tuple[str, str]:
    """compare.md and compare.html (one self-contained page: the per-cell differences with their intervals)."""
    table = rows(judged, q)
    md = [
        f"# Did the change change the result? {after.name} against {before.name}",
        "",
        *[f"- {h}" for h in head],
        "",
        pipe_table(table),
        "",
    ]
    os.makedirs(out, exist_ok=True)
    md_path, html_path = os.path.join(out, COMPARE_MD), os.path.join(out, COMPARE_HTML)
    with open(md_path, "w") as f:
        f.write("\n".join(md))
    png = figures.paired_differences(judged, q, margin)
    body = "".join(f"<li>{html.escape(h)}</li>" for h in head)
    with open(html_path, "w") as f:
        f.write(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(after.name)} against "
            f"{html.escape(before.name)}</title><style>body{{font-family:sans-serif;max-width:1300px;margin:auto}}"
            "td,th{padding:2px 8px;border-bottom:1px solid #ddd}</style></head><body>"
            f"<h1>Did the change change the result? {html.escape(after.name)} against {html.escape(before.name)}</h1>"
            f"<ul>{body}</ul>"
            + (f"<img alt='per-cell paired differences' src='data:image/png;base64,{png}'>" if png else "")
            + table.to_html(index=False, escape=True)
            + "</body></html>"
        )
    return md_path, html_path
