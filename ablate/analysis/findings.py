"""The report's words: a verdict sentence per compared value, the power notes, the effect and stable-LR
tables, and an --until-resolved study's anytime-valid story (no torch, no Ray; the statistics are in
``ablate.analysis.stats``, ``ablate.analysis.sequential`` and ``ablate.analysis.rounds``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional

import pandas as pd
from scipy import stats

from ablate.analysis.rounds import judge, order_of
from ablate.analysis.sequential import METHOD, cap, resolvable
from ablate.analysis.stats import ALPHA, POWER, effects, finished, stable_lrs
from ablate.formatting import lrs_text, p_text, pts, value_text
from ablate.spec.axes import PAIR
from ablate.spec.question import Question

__all__ = [
    "verdicts",
    "power_notes",
    "effects_table",
    "stable_table",
    "sequential",
    "pts",
    "lrs_text",
    "Analysis",
    "answer_cells",
    "answer_lines",
    "power_sentence",
]


def verdicts(fx: pd.DataFrame, stable: pd.DataFrame, q: Question) -> List[str]:
    """One sentence per compared value: in which context cells it helps or hurts, converges faster or slower,
    and where it widens or narrows the stable LR range; the rest said as unresolved."""
    lines = []
    values = list(
        dict.fromkeys(list(fx[q.subject]) if len(fx) else [])
        | dict.fromkeys([b for b in stable[q.subject] if b != q.reference] if len(stable) else [])
    )
    cells = f"{q.words()} points"
    for value in values:
        parts = []
        g = fx[fx[q.subject] == value] if len(fx) else fx
        for key, good, bad, what in (
            ("final", "helps", "hurts", "final acc"),
            ("auc", "converges faster", "converges slower", "AUC"),
        ):
            for verdict, word in (("helps", good), ("hurts", bad)):
                hits = g[g[f"{key}_verdict"] == verdict] if len(g) else g
                if len(hits):
                    where = "; ".join(
                        f"{q.where(r)}: {what} {pts(r[f'{key}_delta'])} points "
                        f"[{pts(r[f'{key}_ci_low'])}, {pts(r[f'{key}_ci_high'])}] "
                        f"(adjusted p {p_text(r[f'{key}_p_adj'])})"
                        for r in hits.to_dict("records")
                    )
                    parts.append(f"{word} at {where}")
        s = stable[stable[q.subject] == value] if len(stable) else stable
        base = (
            {
                tuple(r[c] for c in q.cells): r["stable"]
                for r in stable.to_dict("records")
                if r[q.subject] == q.reference
            }
            if len(stable)
            else {}
        )
        for r in s.to_dict("records"):
            if r["vs_baseline"] in ("widens", "narrows", "shifts"):
                parts.append(
                    f"{r['vs_baseline']} the stable LR range at {q.where(r, q.cells)}: trains at lr "
                    f"{lrs_text(r['stable'])} ({q.who(q.reference)}: "
                    f"{lrs_text(base.get(tuple(r[c] for c in q.cells), []))})"
                )
        resolved = int(g["final_verdict"].isin(["helps", "hurts"]).sum()) if len(g) else 0
        untested = g[g["final_verdict"].str.startswith(("void", "not tested"))] if len(g) else g
        rest = len(g) - resolved - len(untested)
        if rest:
            parts.append(
                f"final acc not resolved at the other {rest} of {len(g)} {cells}"
                if resolved
                else f"no significant difference in final acc at {'any' if not len(untested) else rest} of "
                f"its {len(g)} {cells}"
            )
        for why, hits in untested.groupby("final_verdict", sort=False) if len(untested) else []:
            parts.append(f"{why} at {'; '.join(q.where(r) for r in hits.to_dict('records'))}")
        lines.append(
            f"{q.who(value)}: "
            + (
                "; ".join(parts)
                if parts
                else f"nothing to compare (no finished {q.who(q.reference)} trial in its cells)"
            )
            + "."
        )
    return lines


def power_notes(trials: pd.DataFrame, fx: pd.DataFrame, q: Question) -> List[str]:
    """What the statistics can and cannot say, in words."""
    done = finished(trials)
    n = int(done.groupby([q.subject, *q.context])[PAIR].nunique().min()) if len(done) else 0
    m = int(fx[["final_p", "auc_p"]].notna().to_numpy().sum()) if len(fx) else 0
    notes = [
        f"Every comparison is a {q.subject} against {q.who(q.reference)} at the same {q.words()}, paired by seed, "
        "with the paired t-test's 95% interval (scipy; "
        f"fixed-n: valid for the seeds the grid was planned with, not when seeds are added after looking); "
        f"p-values are adjusted for the {m} comparisons of this report (final acc and AUC) by Benjamini-Hochberg, "
        f"false discovery rate {ALPHA:.0%}."
    ]
    if n < 2:
        notes.append("With one seed there is no spread: no interval, no verdict. Run at least 3 seeds.")
    elif n <= 3:
        notes.append(
            f"With {n} seeds each interval is +-t({n - 1}) = {stats.t.ppf(1 - ALPHA / 2, n - 1):.1f} standard "
            'errors wide: the study is underpowered, and "not resolved" means the data cannot tell, '
            "not that there is no effect."
        )
    if len(fx):
        need = fx["final_seeds_needed"].replace(math.inf, float("nan")).dropna()
        if len(need):
            notes.append(
                f"Seeds needed to resolve the final-acc differences observed but not resolved (paired "
                f"t-test, {POWER:.0%} power at the family's Benjamini-Hochberg level for the next discovery, "
                "for a cautious effect: the difference's 90% bound nearer zero and the spread's 90% upper "
                f"bound): median {need.median():.0f}, {int((need <= 5).sum())} of {len(need)} within 5 seeds "
                '(column "seeds needed"; empty where the cautious effect is zero: the data cannot tell).'
            )
    notes.append(
        f"The best-LR table picks each {q.subject}'s LR on the same final accuracy it then compares, so its "
        f"differences are optimistic; the effects at every {q.words()} involve no selection."
    )
    return notes


def effects_table(fx: pd.DataFrame, q: Question) -> pd.DataFrame:
    rows = []
    for r in fx.to_dict("records"):
        rows.append(
            {
                q.subject: r[q.subject],
                **{c: value_text(r[c]) for c in q.context},
                "seeds": r["seeds"],
                f"final acc % ({q.subject})": f"{100 * r['final_block']:.1f}",
                f"final acc % ({value_text(q.reference)})": f"{100 * r['final_base']:.1f}",
                "difference, points [95% CI]": _ci(r, "final"),
                "adjusted p": p_text(r["final_p_adj"]),
                "verdict": r["final_verdict"],
                "AUC difference [95% CI]": _ci(r, "auc"),
                "AUC verdict": r["auc_verdict"].replace("helps", "faster").replace("hurts", "slower"),
                "seeds needed": "" if not math.isfinite(r["final_seeds_needed"]) else f"{r['final_seeds_needed']:.0f}",
            }
        )
    return pd.DataFrame(rows)


def _ci(r: Dict, key: str) -> str:
    if not math.isfinite(r[f"{key}_ci_low"]):
        return pts(r[f"{key}_delta"])
    return f"{pts(r[f'{key}_delta'])} [{pts(r[f'{key}_ci_low'])}, {pts(r[f'{key}_ci_high'])}]"


def stable_table(stable: pd.DataFrame, q: Question) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                **{c: value_text(r[c]) for c in q.cells},
                q.subject: r[q.subject],
                "stable at lr": lrs_text(r["stable"]),
                "tested lrs": lrs_text(r["tested"]),
                f"vs {value_text(q.reference)}": r["vs_baseline"],
            }
            for r in stable.sort_values([*q.cells, q.subject]).to_dict("records")
        ]
    )


def sequential(trials: pd.DataFrame, meta: Dict, q: Question, judged: Optional[pd.DataFrame] = None) -> tuple:
    """An --until-resolved study's verdict sentences, method notes and per-comparison story (its anytime-valid
    statistics, ``ablate.analysis.rounds``)."""
    margin = float(meta.get("equivalence_margin", 1.0))
    max_seeds = int(meta.get("max_seeds", 12))
    if judged is None:
        judged = Analysis.of(trials, meta, q).judged
    words = {
        "helps": "helps",
        "hurts": "hurts",
        "equivalent": f"no difference larger than {margin:g} points",
        "open": "not resolved",
        "void": "void",
    }
    lines, rows = [], []
    for value, g in judged.groupby(q.subject, sort=False) if len(judged) else []:
        parts = []
        for verdict in ("helps", "hurts", "equivalent", "open", "void"):
            hits = g[g["final_verdict"] == verdict]
            if len(hits):
                parts.append(
                    f"{words[verdict]} at "
                    + "; ".join(
                        f"{q.where(r)} ({_story_numbers(r)})" if verdict != "void" else f"{q.where(r)} ({r['void']})"
                        for r in hits.to_dict("records")
                    )
                )
        lines.append(f"{q.who(value)}: final acc " + "; ".join(parts) + ".")
    m_total = int((judged[["final_verdict", "auc_verdict"]] != "void").to_numpy().sum()) if len(judged) else 0
    need = resolvable(max(m_total, 1), int(judged["n"].min()), max_seeds, 3, ALPHA) if len(judged) else math.inf
    for r in judged.to_dict("records") if len(judged) else []:
        rows.append(
            {
                q.subject: r[q.subject],
                **{c: value_text(r[c]) for c in q.context},
                "seeds": r["n"],
                "final acc: verdict": words[r["final_verdict"]] + (f": {r['void']}" if r["void"] else ""),
                "difference, points [anytime 95%]": _interval_text(r, "final"),
                "e-value": "" if r["final_verdict"] == "void" else f"{r['final_e']:.3g}",
                "AUC: verdict": words[r["auc_verdict"]],
                "to close it": _to_close(r, max_seeds, need),
            }
        )
    notes = [
        f"Method: each comparison's paired differences (by seed) are judged by {METHOD}; each is an e-process, "
        "valid however often the study looked and added seeds, and the smaller of the two is valid when either "
        "assumption holds. Skewed differences with no true effect fit neither exactly; simulated with the "
        "round rule (tests/unit/analysis/test_sequential.py), their false discovery rate stays within 5% at 28 "
        "comparisons, "
        "and reaches 10-14% with 1-4 comparisons and strongly skewed differences (skewness 6; the A/A study "
        "on digits measured |skewness| < 1).",
        f'One family: "helps"/"hurts" for final acc and AUC together ({m_total} e-values) are e-BH discoveries '
        f"(Wang and Ramdas 2022) at a false discovery rate of {ALPHA:.0%} over the whole family.",
        f'"No difference larger than {margin:g} points" (equivalence), a family of its own: the comparison\'s '
        f"confidence sequence at level {ALPHA:.0%}/{max(m_total, 1)} (Bonferroni over the same e-values) lies within "
        f"+-{margin:g} points, so every such claim holds at once with 95% confidence.",
    ]
    if len(judged):
        first = int(judged["n"].min())
        need_all = resolvable(1, first, max_seeds, 3, ALPHA)
        sd = float(judged["final_sd"].replace([math.inf], math.nan).median())
        notes.append(
            power_sentence(
                need, max(m_total, 1), max_seeds, sd, "the median spread of this study's paired differences", need_all
            )
        )
    notes.append(
        '"Not resolved": the interval still spans both a difference and the margin. "Cannot be resolved '
        'within max_seeds": even a favourable forecast (the effect at its 90% bound farther from zero) needs '
        "more seeds than max_seeds allows, so the study spent none on it; the forecasts take the effect at "
        "its 90% bound nearer zero and the spread at its 90% upper bound (cautious)."
    )
    return lines, notes, pd.DataFrame(rows)


def power_sentence(
    need: float, m_total: int, max_seeds: int, sd: float, spread_words: str, need_all: float = math.nan
) -> str:
    """What a study can resolve, in words: the smallest difference a lone comparison separates with 80% chance
    (at the family's strictest e-BH level), and the same when every comparison differs at once (its loosest)."""

    def size(x: float) -> str:
        points = f" ({100 * x * sd:.1f} points)" if math.isfinite(sd) else ""
        return f"{x:g} standard deviations of the paired differences{points}"

    head = f"Power: {m_total} e-values in the family (final acc and AUC), max_seeds {max_seeds}"
    if math.isfinite(need):
        lone = f"a lone difference is separated with {POWER:.0%} chance from {size(need)}"
    else:
        n = next((k for k in range(2, 1000) if cap(k) >= m_total / ALPHA), 1000)
        lone = (
            f"a lone difference cannot be separated at any size (the sign test reaches the family's level "
            f"{m_total / ALPHA:g} only from {n} seeds: max_seeds {n} or more can)"
        )
    every = f"; when every comparison differs at once, from {size(need_all)}" if math.isfinite(need_all) else ""
    spread = f" Points at {spread_words}, {100 * sd:.1f} points." if math.isfinite(sd) else ""
    return f"{head}: {lone}{every}.{spread}"


def _story_numbers(r: Dict) -> str:
    return f"{_interval_text(r, 'final')}, {r['n']} seeds"


def _interval_text(r: Dict, key: str) -> str:
    if r[f"{key}_verdict"] == "void":
        return ""
    low, high = r[f"{key}_low"], r[f"{key}_high"]
    edges = f"[{pts(low) if math.isfinite(low) else '-inf'}, {pts(high) if math.isfinite(high) else '+inf'}]"
    return f"{pts(r[f'{key}_mean'])} points {edges}"


def _to_close(r: Dict, max_seeds: int, need: float = math.inf) -> str:
    """What would close an open comparison: the cautious forecast, or why nothing can; and the smallest
    difference its spread lets the study separate by max_seeds (a lone one, 80% chance)."""
    if r["final_verdict"] != "open":
        return ""
    sd = r.get("final_sd", math.nan)
    power = (
        f"; at its spread the study separates a lone difference from {100 * need * sd:.1f} points"
        if math.isfinite(need) and math.isfinite(sd)
        else ""
    )
    if r.get("futile"):
        fav = r.get("favourable", math.inf)
        return (
            f"cannot be resolved within max_seeds {max_seeds}: would need "
            + (f"~{fav:.0f}" if math.isfinite(fav) else "more than 200")
            + " (a favourable forecast)"
            + power
        )
    fc = r.get("forecast", math.nan)
    if not math.isfinite(fc):
        return ("more than 200 seeds (cautious forecast)" if fc == math.inf else "") + power
    return f"~{int(fc - r['n'])} more seeds (cautious forecast)" + power


# The answer at a glance: one verdict class per compared value and context cell.
CLASSES = ("helps", "hurts", "same", "open", "void")


def answer_cells(q: Question, fx: pd.DataFrame, judged: Optional[pd.DataFrame]) -> pd.DataFrame:
    """A row per compared value x context cell: ``value``, ``cell`` (the cell in words), ``verdict`` (one of
    ``CLASSES``: "same" is equivalent, or no significant difference in the fixed-n path) and ``label`` (the
    final-acc difference and its interval, in points).  From the anytime-valid verdicts when there are."""
    rows = []
    if judged is not None and len(judged):
        for r in judged.to_dict("records"):
            v = r["final_verdict"]
            label = r["void"] if v == "void" else _interval_text(r, "final").replace(" points", "")
            if v == "open" and r.get("futile"):
                label += "; cannot close within max_seeds"
            rows.append(
                {"value": r[q.subject], "cell": q.where(r), "verdict": {"equivalent": "same"}.get(v, v), "label": label}
            )
    elif len(fx):
        for r in fx.to_dict("records"):
            v = r["final_verdict"]
            klass = v if v in ("helps", "hurts") else "void" if v.startswith(("void", "not tested")) else "open"
            rows.append(
                {
                    "value": r[q.subject],
                    "cell": q.where(r),
                    "verdict": klass,
                    "label": v if klass == "void" else _ci(r, "final"),
                }
            )
    return pd.DataFrame(rows, columns=["value", "cell", "verdict", "label"])


def answer_lines(q: Question, cells: pd.DataFrame) -> List[str]:
    """The answer, one line per compared value and cell (the terminal's last table, the W&B Report)."""
    words = {"helps": "helps", "hurts": "hurts", "same": "same", "open": "open", "void": "void"}
    width = max([len(str(q.who(v))) for v in cells["value"]] + [1]) if len(cells) else 1
    cw = max([len(c) for c in cells["cell"]] + [1]) if len(cells) else 1
    return [
        f"{str(q.who(r['value'])):<{width}}  {r['cell']:<{cw}}  {words[r['verdict']]:<5}  {r['label']}"
        for r in cells.to_dict("records")
    ]


@dataclass
class Analysis:
    """The whole analysis of one experiment, computed once for the page, the Markdown, the terminal and the W&B
    Report: the fixed-n effects and stable LR ranges, and for an --until-resolved study its anytime-valid
    judgement (``judged``), which then gives the verdicts."""

    q: Question
    meta: Dict
    trials: pd.DataFrame
    fx: pd.DataFrame
    stable: pd.DataFrame
    judged: Optional[pd.DataFrame] = None

    @classmethod
    def of(cls, trials: pd.DataFrame, meta: Dict, q: Question) -> "Analysis":
        fx = effects(trials, q.subject, q.reference, q.context)
        stable = stable_lrs(trials, q.subject, q.reference, q.context)
        judged = None
        rounds = meta.get("until_resolved")
        if rounds:
            order, unseen = order_of(rounds if isinstance(rounds, dict) else {}, q)
            judged = judge(
                trials,
                q,
                float(meta.get("equivalence_margin", 1.0)),
                int(meta.get("max_seeds", 12)),
                order=order,
                unseen=unseen,
            )
        return cls(q, meta, trials, fx, stable, judged)

    @property
    def cells(self) -> pd.DataFrame:
        return answer_cells(self.q, self.fx, self.judged)

    def answer_text(self) -> str:
        """The terminal's last table: one line per compared value and cell."""
        how = "anytime-valid" if self.judged is not None else "fixed-n"
        lines = answer_lines(self.q, self.cells)
        return (
            f"The answer (final val acc, each {self.q.subject} against {self.q.who(self.q.reference)}, per "
            f"{self.q.words()}; {how}: verdict, difference [interval] in points):\n"
            + ("\n".join(f"  {line}" for line in lines) if lines else "  (nothing to compare)")
        )
