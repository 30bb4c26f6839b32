"""The report's words: a verdict sentence per compared value, the power notes, the effect and stable-LR
tables, and an --until-resolved study's anytime-valid story (no torch, no Ray; the statistics are in
``ablate.stats``, ``ablate.sequential`` and ``ablate.rounds``)."""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import pandas as pd

from .axes import PAIR
from .stats import ALPHA, POWER, Question, finished, value_text

__all__ = ["verdicts", "power_notes", "effects_table", "stable_table", "sequential", "pts", "lrs_text"]


def pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def lrs_text(lrs) -> str:
    return ", ".join(f"{lr:g}" for lr in lrs) or "none"


def verdicts(fx: pd.DataFrame, stable: pd.DataFrame, q: Optional[Question] = None) -> List[str]:
    """One sentence per compared value: in which context cells it helps or hurts, converges faster or slower,
    and where it widens or narrows the stable LR range; the rest said as unresolved."""
    q = q or Question()
    lines = []
    values = list(dict.fromkeys(list(fx[q.subject]) if len(fx) else []) | dict.fromkeys(
        [b for b in stable[q.subject] if b != q.reference] if len(stable) else []))
    cells = f"{q.words()} points"
    for value in values:
        parts = []
        g = fx[fx[q.subject] == value] if len(fx) else fx
        for key, good, bad, what in (("final", "helps", "hurts", "final acc"),
                                     ("auc", "converges faster", "converges slower", "AUC")):
            for verdict, word in (("helps", good), ("hurts", bad)):
                hits = g[g[f"{key}_verdict"] == verdict] if len(g) else g
                if len(hits):
                    where = "; ".join(
                        f"{q.where(r)}: {what} {pts(r[f'{key}_delta'])} points "
                        f"[{pts(r[f'{key}_ci_low'])}, {pts(r[f'{key}_ci_high'])}] (adjusted p {_p(r[f'{key}_p_adj'])})"
                        for r in hits.to_dict("records"))
                    parts.append(f"{word} at {where}")
        s = stable[stable[q.subject] == value] if len(stable) else stable
        base = ({tuple(r[c] for c in q.cells): r["stable"] for r in stable.to_dict("records")
                 if r[q.subject] == q.reference} if len(stable) else {})
        for r in s.to_dict("records"):
            if r["vs_baseline"] in ("widens", "narrows", "shifts"):
                parts.append(f"{r['vs_baseline']} the stable LR range at {q.where(r, q.cells)}: trains at lr "
                             f"{lrs_text(r['stable'])} ({q.who(q.reference)}: {lrs_text(base.get(tuple(r[c] for c in q.cells), []))})")
        resolved = int(g["final_verdict"].isin(["helps", "hurts"]).sum()) if len(g) else 0
        rest = len(g) - resolved
        if rest:
            parts.append(f"final acc not resolved at the other {rest} of {len(g)} {cells}" if resolved
                         else f"no significant difference in final acc at any of its {len(g)} {cells}")
        lines.append(f"{q.who(value)}: " + ("; ".join(parts) if parts else
                                           f"nothing to compare (no finished {q.who(q.reference)} trial in its cells)") + ".")
    return lines


def power_notes(trials: pd.DataFrame, fx: pd.DataFrame, q: Optional[Question] = None) -> List[str]:
    """What the statistics can and cannot say, in words."""
    from scipy import stats

    q = q or Question()
    done = finished(trials)
    n = int(done.groupby([q.subject, *q.context])[PAIR].nunique().min()) if len(done) else 0
    m = int(fx[["final_p", "auc_p"]].notna().to_numpy().sum()) if len(fx) else 0
    notes = [f"Every comparison is a {q.subject} against {q.who(q.reference)} at the same {q.words()}, paired by seed, with the paired t-test's 95% interval (scipy; "
             f"fixed-n: valid for the seeds the grid was planned with, not when seeds are added after looking); "
             f"p-values are adjusted for the {m} comparisons of this report (final acc and AUC) by Benjamini-Hochberg, "
             f"false discovery rate {ALPHA:.0%}."]
    if n < 2:
        notes.append("With one seed there is no spread: no interval, no verdict. Run at least 3 seeds.")
    elif n <= 3:
        notes.append(f"With {n} seeds each interval is +-t({n - 1}) = {stats.t.ppf(1 - ALPHA / 2, n - 1):.1f} standard "
                     "errors wide: the study is underpowered, and \"not resolved\" means the data cannot tell, "
                     "not that there is no effect.")
    if len(fx):
        need = fx["final_seeds_needed"].replace(math.inf, float("nan")).dropna()
        if len(need):
            notes.append(f"Seeds needed to resolve the final-acc differences observed but not resolved (paired "
                         f"t-test, {POWER:.0%} power, from their measured spread): median {need.median():.0f}, "
                         f"{int((need <= 5).sum())} of {len(need)} within 5 seeds (column \"seeds needed\").")
    notes.append(f"The best-LR table picks each {q.subject}'s LR on the same final accuracy it then compares, so its "
                 f"differences are optimistic; the effects at every {q.words()} involve no selection.")
    return notes


def effects_table(fx: pd.DataFrame, q: Optional[Question] = None) -> pd.DataFrame:
    q = q or Question()
    rows = []
    for r in fx.to_dict("records"):
        rows.append({
            q.subject: r[q.subject], **{c: value_text(r[c]) for c in q.context}, "seeds": r["seeds"],
            f"final acc % ({q.subject})": f"{100 * r['final_block']:.1f}",
            f"final acc % ({value_text(q.reference)})": f"{100 * r['final_base']:.1f}",
            "difference, points [95% CI]": _ci(r, "final"), "adjusted p": _p(r["final_p_adj"]),
            "verdict": r["final_verdict"], "AUC difference [95% CI]": _ci(r, "auc"),
            "AUC verdict": r["auc_verdict"].replace("helps", "faster").replace("hurts", "slower"),
            "seeds needed": "" if not math.isfinite(r["final_seeds_needed"]) else f"{r['final_seeds_needed']:.0f}",
        })
    return pd.DataFrame(rows)


def _ci(r: Dict, key: str) -> str:
    if not math.isfinite(r[f"{key}_ci_low"]):
        return pts(r[f"{key}_delta"])
    return f"{pts(r[f'{key}_delta'])} [{pts(r[f'{key}_ci_low'])}, {pts(r[f'{key}_ci_high'])}]"


def _p(p: float) -> str:
    return "" if not math.isfinite(p) else "< 0.001" if p < 0.001 else f"{p:.3f}"


def stable_table(stable: pd.DataFrame, q: Optional[Question] = None) -> pd.DataFrame:
    q = q or Question()
    return pd.DataFrame([{**{c: value_text(r[c]) for c in q.cells}, q.subject: r[q.subject], "stable at lr": lrs_text(r["stable"]),
                          "tested lrs": lrs_text(r["tested"]), f"vs {value_text(q.reference)}": r["vs_baseline"]}
                         for r in stable.sort_values([*q.cells, q.subject]).to_dict("records")])


def sequential(trials: pd.DataFrame, meta: Dict, q: Question) -> tuple:
    """An --until-resolved study's verdict sentences, method notes and per-comparison story (its anytime-valid
    statistics, ``ablate.rounds``)."""
    from .rounds import judge

    margin = float(meta.get("equivalence_margin", 1.0))
    judged = judge(trials, q, margin, int(meta.get("max_seeds", 12)))
    words = {"helps": "helps", "hurts": "hurts", "equivalent": f"no difference larger than {margin:g} points",
             "open": "not resolved"}
    lines, rows = [], []
    for value, g in (judged.groupby(q.subject, sort=False) if len(judged) else []):
        parts = []
        for verdict in ("helps", "hurts", "equivalent", "open"):
            hits = g[g["final_verdict"] == verdict]
            if len(hits):
                parts.append(f"{words[verdict]} at " + "; ".join(
                    f"{q.where(r)} ({pts(r['final_mean'])} points [{pts(r['final_low'])}, {pts(r['final_high'])}], "
                    f"{r['n']} seeds)" for r in hits.to_dict("records")))
        lines.append(f"{q.who(value)}: final acc " + "; ".join(parts) + ".")
    for r in judged.to_dict("records") if len(judged) else []:
        rows.append({q.subject: r[q.subject], **{c: value_text(r[c]) for c in q.context}, "seeds": r["n"],
                     "final acc: verdict": words[r["final_verdict"]],
                     "difference, points [anytime 95%]": f"{pts(r['final_mean'])} [{pts(r['final_low'])}, "
                                                         f"{pts(r['final_high'])}]",
                     "e-value": f"{r['final_e']:.3g}", "AUC: verdict": words[r["auc_verdict"]],
                     "to close it": ("" if r["final_verdict"] != "open" else
                                     f"~{int(r['forecast'] - r['n'])} more seeds" if math.isfinite(r["forecast"])
                                     else "more than 1000 seeds")})
    notes = [
        "Verdicts are anytime-valid: each comparison's paired differences (by seed) give Lindon et al.'s t-mixture "
        "e-value and confidence sequence (Anytime-Valid Linear Models, 2022), valid however often the study "
        "looked and added seeds; \"helps\"/\"hurts\" are e-BH discoveries over all comparisons (Wang and Ramdas "
        f"2022), false discovery rate {ALPHA:.0%}.",
        f"\"No difference larger than {margin:g} points\" (equivalence): the comparison's confidence sequence at "
        f"level {ALPHA:.0%}/{len(judged)} (Bonferroni over the report's comparisons) lies within +-{margin:g} points.",
        "\"Not resolved\" after max_seeds: the interval still spans both a difference and the margin; the last "
        "column says how many more seeds the forecast (the same spread, the same mean) needs to close it.",
    ]
    return lines, notes, pd.DataFrame(rows)
