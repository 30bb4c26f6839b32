"""Statistics for the ablation: every value of the compared axis against its reference in every cell of the
others (by default each trick against baseline at every depth and LR), on scipy.

Paired by seed (a seed fixes a trial's initialisation and data order), with the paired t-test's
95% interval (``scipy.stats.ttest_rel``), Benjamini-Hochberg control of the false discovery rate
across all comparisons of a report (``scipy.stats.false_discovery_control``), and, where a
difference is not resolved, the seeds a paired t-test would need to resolve it (80% power).
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd
from scipy import stats

from ablate.formatting import value_text
from ablate.spec.axes import BASELINE, LR, PAIR, axes_of, context_of
from ablate.spec.status import Status

ALPHA, POWER = 0.05, 0.8
# A forecast's caution: the effect's and the spread's bounds at 90% each (both hold in >= 80% of studies).
CAUTION = 0.9
METRICS = {"final_val_acc": "final acc", "auc_val_acc": "convergence (AUC)"}


def paired(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """Mean of ``a - b`` with its 95% interval and two-sided p-value (paired t-test)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    out = {
        "n": n,
        "mean": float(d.mean()) if n else math.nan,
        "sd": float(d.std(ddof=1)) if n > 1 else math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "p": math.nan,
    }
    if n < 2 or not np.isfinite(out["sd"]):
        return out
    if out["sd"] <= 1e-12 * max(abs(out["mean"]), 1e-300):
        # Identical differences (accuracies are discrete: ties happen): t is infinite, but all that the seeds
        # show is n signs that agree, so the p-value is the exact sign test's, 2^(1-n) (two-sided), not 0.
        off = out["mean"] != 0
        out.update(sd=0.0, ci_low=out["mean"], ci_high=out["mean"], p=min(1.0, 2.0 ** (1 - n)) if off else 1.0)
        return out
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(1 - ALPHA)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p=float(res.pvalue))
    return out


def seeds_needed(mean: float, sd: float, n: int = 0, level: float = ALPHA, limit: int = 1000) -> float:
    """Seeds a two-sided paired t-test needs to detect the difference with POWER at ``level`` (the level its
    verdict would need: BH's for the next discovery), at a cautious effect and spread when ``n`` seeds
    measured them: the mean's 90% bound nearer zero and the sd's 90% upper bound, so that both hold at once
    in at least 80% of studies and the number is at least the true need there
    (``tests/unit/analysis/test_sequential.py``); ``inf`` when that bound of the effect is 0 (the data cannot tell)."""
    if not (np.isfinite(mean) and np.isfinite(sd)) or sd <= 0 or mean == 0:
        return math.nan
    if n >= 2:
        mean = max(0.0, abs(mean) - stats.t.ppf(CAUTION, n - 1) * sd / math.sqrt(n))
        sd = sd * math.sqrt((n - 1) / stats.chi2.ppf(1 - CAUTION, n - 1))
        if mean <= 0:
            return math.inf
    ks = np.arange(2, limit + 1)
    t = stats.t.ppf(1 - level / 2, ks - 1)
    nc = abs(mean) / sd * np.sqrt(ks)
    power = stats.nct.sf(t, ks - 1, nc) + stats.nct.cdf(-t, ks - 1, nc)
    hit = np.nonzero(power >= POWER)[0]
    return float(ks[hit[0]]) if len(hit) else math.inf


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"].isin(Status.finished())] if "status" in trials else trials


def effects(
    trials: pd.DataFrame, subject: str = "block", reference: Any = BASELINE, context: Optional[List[str]] = None
) -> pd.DataFrame:
    """Every value of ``subject`` against ``reference`` in every cell of the ``context`` axes (default: every
    axis but the subject and the seed), paired by seed.

    No LR is selected, so nothing here is judged on the figure it was chosen by.  Adjusted
    p-values control the false discovery rate over every comparison of the table (both metrics).
    """
    fin = finished(trials)
    context = context_of(axes_of(trials), subject) if context is None else list(context)
    is_ref = fin[subject] == reference
    base = fin[is_ref]
    rows = []
    for key, g in fin[~is_ref].groupby([subject, *context], sort=False):
        m = g.merge(base, on=[*context, PAIR], suffixes=("", "_base"))
        if m.empty:
            continue
        row = {
            subject: key[0],
            **{c: plain(v) for c, v in zip(context, key[1:])},
            "seeds": len(m),
            "void": missing(m, key[0], reference),
        }
        for metric, short in (("final_val_acc", "final"), ("auc_val_acc", "auc")):
            r = paired(m[metric].to_numpy(), m[f"{metric}_base"].to_numpy())
            row.update(
                {
                    f"{short}_block": m[metric].mean(),
                    f"{short}_base": m[f"{metric}_base"].mean(),
                    f"{short}_delta": r["mean"],
                    f"{short}_ci_low": r["ci_low"],
                    f"{short}_ci_high": r["ci_high"],
                    f"{short}_p": r["p"],
                    f"{short}_sd": r["sd"],
                }
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    for key in ("final", "auc"):  # a void comparison is not tested: no p-value joins the family
        table.loc[table["void"] != "", f"{key}_p"] = np.nan
    ps = pd.concat([table["final_p"], table["auc_p"]], ignore_index=True)
    adj = pd.Series(np.nan, index=ps.index)
    ok = ps.notna()
    if ok.any():
        adj[ok] = stats.false_discovery_control(ps[ok].to_numpy(), method="bh")
    table["final_p_adj"], table["auc_p_adj"] = adj[: len(table)].to_numpy(), adj[len(table) :].to_numpy()
    # BH's level for the next discovery of the family: what an unresolved difference's seeds-needed must reach.
    found = int((adj[ok] < ALPHA).sum())
    level = ALPHA * (found + 1) / max(int(ok.sum()), 1)
    for key in ("final", "auc"):
        table[f"{key}_verdict"] = [
            verdict(r["seeds"], r[f"{key}_p"], r[f"{key}_p_adj"], r[f"{key}_delta"], r["void"])
            for r in table.to_dict("records")
        ]
        table[f"{key}_seeds_needed"] = [_needed(r, key, level) for r in table.to_dict("records")]
    return table.sort_values([*context, subject]).reset_index(drop=True)


def missing(m: pd.DataFrame, value: Any, reference: Any, suffix: str = "_base") -> str:
    """Why a comparison cannot be tested ("final acc missing (baseline, seed 2)"), or "" when it can: ``m`` is its
    pairs, the reference's columns with ``suffix``."""
    if not len(m):
        return f"no paired seed ({reference} lacks every seed of {value})"
    for metric, words in (("final_val_acc", "final acc"), ("auc_val_acc", "AUC")):
        for col, side in ((metric, value), (f"{metric}{suffix}", reference)):
            bad = m[m[col].isna()]
            if len(bad):
                return f"{words} missing ({side}, seed {', '.join(str(int(s)) for s in sorted(bad[PAIR]))})"
    return ""


def plain(v: Any) -> Any:
    """A pandas/numpy scalar as the Python value it holds (ints stay ints in the text)."""
    return v.item() if hasattr(v, "item") else v


def _needed(r: Dict, key: str, level: float) -> float:
    """Seeds to resolve an unresolved difference, at the family's level for its discovery and a cautious effect:
    never fewer than one more than it had (those did not resolve it)."""
    if r[f"{key}_verdict"] in ("helps", "hurts") or r["void"] or r["seeds"] < 2:
        return math.nan
    n = seeds_needed(r[f"{key}_delta"], r[f"{key}_sd"], r["seeds"], level)
    return max(n, r["seeds"] + 1) if math.isfinite(n) else n


def verdict(n: int, p: float, p_adj: float, delta: float, void: str = "") -> str:
    """The one verdict rule (fixed-n): helps or hurts where the (adjusted) p-value is below ALPHA; "void: why"
    where a metric is missing, "not tested: why" where no test can be made."""
    if void:
        return f"void: {void}"
    if n < 2:
        return f"not tested: {n} paired seed" + ("" if n == 1 else "s")
    if not np.isfinite(p):
        return "not tested: no paired difference"
    if p_adj < ALPHA:
        return "helps" if delta > 0 else "hurts"
    return "no significant difference"


def stable_lrs(
    trials: pd.DataFrame, subject: str = "block", reference: Any = BASELINE, context: Optional[List[str]] = None
) -> pd.DataFrame:
    """Per value of ``subject`` and cell of the context (its axes but ``lr``): the LRs at which it trains
    without collapse or divergence.

    Stable at an LR: no seed diverged, and every seed ends at least halfway to the best mean
    final accuracy any value reached in that cell (so a net stuck near chance is not stable).
    Compared with the reference's stable LRs in the same cell: widens, narrows, shifts or same.
    """
    fin = finished(trials)
    cells = [c for c in (context_of(axes_of(trials), subject) if context is None else context) if c != LR]
    rows = []
    for key, gd in fin.groupby(cells, sort=True) if cells else [((), fin)]:
        key = key if isinstance(key, tuple) else (key,)
        floor = 0.5 * gd.groupby([subject, LR])["final_val_acc"].mean().max()
        for value, gb in gd.groupby(subject, sort=False):
            good = [
                float(lr)
                for lr, g in gb.groupby(LR)
                if not g["diverged"].astype(bool).any() and (g["final_val_acc"] >= floor).all()
            ]
            rows.append(
                {
                    subject: value,
                    **{c: plain(v) for c, v in zip(cells, key)},
                    "tested": sorted(gb[LR].unique().tolist()),
                    "stable": sorted(good),
                    "floor": floor,
                }
            )
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    base = {tuple(r[c] for c in cells): set(r["stable"]) for r in rows if r[subject] == reference}
    out = []
    for r in rows:
        b = base.get(tuple(r[c] for c in cells))
        if r[subject] == reference or b is None:
            out.append("")
            continue
        gained, lost = set(r["stable"]) - b, b - set(r["stable"])
        out.append(
            "widens" if gained and not lost else "narrows" if lost and not gained else "shifts" if gained else "same"
        )
    table["vs_baseline"] = out
    return table


def cell_title(names: List[str], cell) -> str:
    """A context cell in words (figures, the W&B Report): "ResNet-56" for a depth, "name value" otherwise."""
    return (
        ", ".join(f"ResNet-{v}" if c == "depth" else f"{c} {value_text(v)}" for c, v in zip(names, cell))
        or "all trials"
    )
