"""Statistics that stay valid while a study looks at them after every added seed (optional stopping).

A fixed-n paired t-test (and Benjamini-Hochberg over many of them) is valid only when the number of
seeds was fixed in advance: re-read after every added seed, it says "helps" or "hurts" far more
often than its 5% when nothing differs (``tests/test_sequential.py`` measures it).  Here, for the
paired differences ``d_1, d_2, ...`` of one comparison (a variant against its reference, per seed):

- **E-value / confidence sequence**: the t-type mixture Bayes factor of Lindon, Ham, Tingley and
  Bojinov, *Anytime-Valid Linear Models and Regression Adjusted Causal Inference in Randomized
  Experiments* (2022, arXiv:2210.08589), for a mean with unknown variance (Gaussian errors, the
  right-Haar prior on the variance, a ``N(mu0, sigma^2 / PHI)`` mixture over the mean)::

      BF_n(mu0) = sqrt(PHI / (PHI + n)) * ((1 + t^2 / nu) / (1 + PHI / (PHI + n) * t^2 / nu)) ** ((nu + 1) / 2)

  with ``t = (mean - mu0) / (sd / sqrt(n))`` and ``nu = n - 1``.  Under ``mu = mu0`` it is a
  nonnegative martingale with mean 1, whatever the variance, so by Ville's inequality
  ``P(exists n: BF_n >= 1/alpha) <= alpha``: an e-value at any stopping time.  Inverting it gives a
  confidence sequence (an interval valid at every n at once) in closed form (``half_width``).
- **Many comparisons**: e-BH (Wang and Ramdas, *False discovery rate control with e-values*, JRSS-B
  2022): the ``k`` largest e-values are discoveries for the largest ``k`` with ``e_(k) >= K / (alpha k)``;
  it controls the false discovery rate under any dependence, and with e-values read at stopping times.
- **Equivalence** ("no difference larger than the margin"): the confidence sequence at level
  ``alpha / K`` (Bonferroni over the report's K comparisons: valid under optional stopping too,
  since each sequence is uniform in n) lies within +- the margin.

``PHI`` sets the effect sizes the mixture expects: a ``N(0, sigma^2 / PHI)`` prior on the mean difference,
so ``0.1`` expects effects of about three standard deviations of the seed-to-seed differences, the size
of what an ablation looks for (a trick that breaks or rescues training).  Any fixed value keeps the
guarantees; it moves where the test is most powerful, and bounds the e-value at ``n`` seeds by
``(1 + n / PHI) ** ((n - 1) / 2)``: with ``PHI = 1`` it is at most 4 at 3 seeds, so no comparison could
be decided at a grid's usual first look; with ``0.1`` a large effect can be (simulated in
``tests/test_sequential.py``: the same 5% error under no effect).
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np

__all__ = ["PHI", "e_value", "half_width", "confidence_sequence", "e_bh", "verdicts", "forecast_seeds"]

PHI = 0.1


def e_value(n, mean, sd, mu0: float = 0.0, phi: float = PHI):
    """Lindon et al.'s t-mixture Bayes factor against ``mu = mu0`` after ``n`` paired differences (array-friendly);
    1 where it is undefined (fewer than 2 seeds, or no spread)."""
    n, mean, sd = np.asarray(n, float), np.asarray(mean, float), np.asarray(sd, float)
    nu = n - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        t2 = (mean - mu0) ** 2 / (sd ** 2 / n)
        r = phi / (phi + n)
        bf = np.sqrt(r) * ((1 + t2 / nu) / (1 + r * t2 / nu)) ** ((nu + 1) / 2)
    ok = (n >= 2) & (sd > 0) & np.isfinite(sd) & np.isfinite(mean)
    return np.where(ok, bf, 1.0)


def half_width(n, sd, alpha: float, phi: float = PHI):
    """The confidence sequence's half-width at ``n`` (closed form: ``BF_n(mu0) < 1/alpha`` solved for
    ``mu0``); infinite where the sequence is still unbounded."""
    n, sd = np.asarray(n, float), np.asarray(sd, float)
    nu = n - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        r = phi / (phi + n)
        k = ((1 / alpha) ** 2 / r) ** (1 / (nu + 1))
        u = (k - 1) / (1 - k * r)  # the largest t^2 / nu inside the sequence
        w = np.sqrt(nu * u) * sd / np.sqrt(n)
    return np.where((n >= 2) & (k * r < 1) & np.isfinite(sd), w, np.inf)


def confidence_sequence(d: Sequence[float], alpha: float) -> Dict[str, float]:
    """Mean, interval (valid at every n at once), e-value against 0 and n of the differences ``d``."""
    d = np.asarray(d, float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    w = float(half_width(n, sd, alpha)) if n > 1 else math.inf
    return {"n": n, "mean": mean, "sd": sd, "low": mean - w, "high": mean + w, "e": float(e_value(n, mean, sd))}


def e_bh(e: Sequence[float], alpha: float) -> np.ndarray:
    """Wang and Ramdas's e-BH: which of the e-values ``e`` are discoveries at FDR level ``alpha``."""
    e = np.asarray(e, float)
    k_total = len(e)
    if not k_total:
        return np.zeros(0, bool)
    order = np.argsort(-e)
    ranked = e[order]
    ks = np.arange(1, k_total + 1)
    passing = np.nonzero(ranked >= k_total / (alpha * ks))[0]
    out = np.zeros(k_total, bool)
    if len(passing):
        out[order[: passing.max() + 1]] = True
    return out


def verdicts(diffs: List[Sequence[float]], alpha: float, margin: float) -> List[Dict]:
    """Each comparison's verdict from its paired differences: ``helps``/``hurts`` (separated: e-BH over
    all of them), ``equivalent`` (within +- ``margin``, Bonferroni), or ``open``; with its interval."""
    k = len(diffs)
    cs = [confidence_sequence(d, alpha) for d in diffs]
    found = e_bh([c["e"] for c in cs], alpha)
    out = []
    for c, separated, d in zip(cs, found, diffs):
        eq = confidence_sequence(d, alpha / max(k, 1))
        if separated and c["n"] >= 2:
            verdict = "helps" if c["mean"] > 0 else "hurts"
        elif eq["n"] >= 2 and -margin < eq["low"] and eq["high"] < margin:
            verdict = "equivalent"
        else:
            verdict = "open"
        out.append({**c, "verdict": verdict, "eq_low": eq["low"], "eq_high": eq["high"]})
    return out


def forecast_seeds(mean: float, sd: float, n: int, k: int, alpha: float, margin: float, limit: int = 1000) -> float:
    """Seeds after which the comparison would close if its mean and spread stay as they are: its
    equivalence interval inside +- ``margin``, or its interval clear of 0 (at the strictest e-BH level,
    ``alpha / k``); ``inf`` if neither within ``limit``.  Never fewer than ``n + 1``."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or sd <= 0:
        return float(n + 1)
    ns = np.arange(max(2, n + 1), limit + 1)
    sep = half_width(ns, sd, alpha / max(k, 1)) < abs(mean)
    eq = abs(mean) + half_width(ns, sd, alpha / max(k, 1)) < margin
    hit = np.nonzero(sep | eq)[0]
    return float(ns[hit[0]]) if len(hit) else math.inf
