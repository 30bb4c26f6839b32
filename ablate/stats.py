"""Statistics for the ablation: every trick against baseline at every depth and LR, on scipy.

Paired by seed (a seed fixes a trial's initialisation and data order), with the paired t-test's
95% interval (``scipy.stats.ttest_rel``), Benjamini-Hochberg control of the false discovery rate
across all comparisons of a report (``scipy.stats.false_discovery_control``), and, where a
difference is not resolved, the seeds a paired t-test would need to resolve it (80% power).
"""
from __future__ import annotations

import math
from typing import Dict

import numpy as np
import pandas as pd
from scipy import stats

ALPHA, POWER = 0.05, 0.8
METRICS = {"final_val_acc": "final acc", "auc_val_acc": "convergence (AUC)"}


def paired(a: np.ndarray, b: np.ndarray) -> Dict[str, float]:
    """Mean of ``a - b`` with its 95% interval and two-sided p-value (paired t-test)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    n = len(d)
    out = {"n": n, "mean": float(d.mean()) if n else math.nan, "sd": float(d.std(ddof=1)) if n > 1 else math.nan,
           "ci_low": math.nan, "ci_high": math.nan, "p": math.nan}
    if n < 2 or out["sd"] == 0 or not np.isfinite(out["sd"]):
        return out
    res = stats.ttest_rel(a, b)
    ci = res.confidence_interval(1 - ALPHA)
    out.update(ci_low=float(ci.low), ci_high=float(ci.high), p=float(res.pvalue))
    return out


def seeds_needed(mean: float, sd: float, limit: int = 1000) -> float:
    """Seeds a two-sided paired t-test needs to detect ``mean`` at level ALPHA with POWER, given ``sd``."""
    if not (np.isfinite(mean) and np.isfinite(sd)) or sd <= 0 or mean == 0:
        return math.nan
    effect = abs(mean) / sd
    for n in range(2, limit + 1):
        df = n - 1
        t = stats.t.ppf(1 - ALPHA / 2, df)
        nc = effect * math.sqrt(n)
        power = stats.nct.sf(t, df, nc) + stats.nct.cdf(-t, df, nc)
        if power >= POWER:
            return float(n)
    return math.inf


FINISHED = ("TERMINATED", "DIVERGED")  # statuses whose final accuracy is an outcome


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    return trials[trials["status"].isin(FINISHED)] if "status" in trials else trials


def effects(trials: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """Every (block, depth, lr) against ``baseline`` at the same depth and LR, paired by seed.

    No LR is selected, so nothing here is judged on the figure it was chosen by.  Adjusted
    p-values control the false discovery rate over every comparison of the table (both metrics).
    """
    fin = finished(trials)
    base = fin[fin["block"] == baseline]
    rows = []
    for (block, depth, lr), g in fin[fin["block"] != baseline].groupby(["block", "depth", "lr"], sort=False):
        b = base[(base["depth"] == depth) & (base["lr"] == lr)]
        m = g.merge(b, on="seed", suffixes=("", "_base"))
        if m.empty:
            continue
        row = {"block": block, "depth": int(depth), "lr": float(lr), "seeds": len(m)}
        for metric, key in (("final_val_acc", "final"), ("auc_val_acc", "auc")):
            r = paired(m[metric].to_numpy(), m[f"{metric}_base"].to_numpy())
            row.update({f"{key}_block": m[metric].mean(), f"{key}_base": m[f"{metric}_base"].mean(),
                        f"{key}_delta": r["mean"], f"{key}_ci_low": r["ci_low"], f"{key}_ci_high": r["ci_high"],
                        f"{key}_p": r["p"], f"{key}_sd": r["sd"]})
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    ps = pd.concat([table["final_p"], table["auc_p"]], ignore_index=True)
    adj = pd.Series(np.nan, index=ps.index)
    ok = ps.notna()
    if ok.any():
        adj[ok] = stats.false_discovery_control(ps[ok].to_numpy(), method="bh")
    table["final_p_adj"], table["auc_p_adj"] = adj[: len(table)].to_numpy(), adj[len(table):].to_numpy()
    for key in ("final", "auc"):
        table[f"{key}_verdict"] = [_verdict(r, key) for r in table.to_dict("records")]
        table[f"{key}_seeds_needed"] = [_needed(r, key) for r in table.to_dict("records")]
    return table.sort_values(["depth", "lr", "block"]).reset_index(drop=True)


def _needed(r: Dict, key: str) -> float:
    """Seeds to resolve an unresolved difference: never fewer than one more than it had (those did not
    resolve it; with the multiple-comparison adjustment the power formula alone can say fewer)."""
    if r[f"{key}_verdict"] in ("helps", "hurts"):
        return math.nan
    n = seeds_needed(r[f"{key}_delta"], r[f"{key}_sd"])
    return max(n, r["seeds"] + 1) if math.isfinite(n) else n


def _verdict(r: Dict, key: str) -> str:
    if r["seeds"] < 2:
        return "too few seeds"
    if not np.isfinite(r[f"{key}_p"]):
        return "no spread across seeds"  # identical differences on every seed prove nothing
    if r[f"{key}_p_adj"] < ALPHA:
        return "helps" if r[f"{key}_delta"] > 0 else "hurts"
    return "no significant difference"


def stable_lrs(trials: pd.DataFrame, baseline: str = "baseline") -> pd.DataFrame:
    """Per block and depth: the LRs at which it trains without collapse or divergence.

    Stable at an LR: no seed diverged, and every seed ends at least halfway to the best mean
    final accuracy any block reached at that depth (so a net stuck near chance is not stable).
    Compared with the baseline's stable LRs at the same depth: widens, narrows, shifts or same.
    """
    fin = finished(trials)
    rows = []
    for depth, gd in fin.groupby("depth"):
        floor = 0.5 * gd.groupby(["block", "lr"])["final_val_acc"].mean().max()
        for block, gb in gd.groupby("block", sort=False):
            good = [float(lr) for lr, g in gb.groupby("lr")
                    if not g["diverged"].astype(bool).any() and (g["final_val_acc"] >= floor).all()]
            rows.append({"block": block, "depth": int(depth), "tested": sorted(gb["lr"].unique().tolist()),
                         "stable": sorted(good), "floor": floor})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    base = {r["depth"]: set(r["stable"]) for r in rows if r["block"] == baseline}
    out = []
    for r in rows:
        b = base.get(r["depth"])
        if r["block"] == baseline or b is None:
            out.append("")
            continue
        gained, lost = set(r["stable"]) - b, b - set(r["stable"])
        out.append("widens" if gained and not lost else "narrows" if lost and not gained
                   else "shifts" if gained else "same")
    table["vs_baseline"] = out
    return table
