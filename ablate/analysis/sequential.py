"""Statistics that stay valid while a study looks at them after every added seed (optional stopping), and
that do not rest on the seed-to-seed differences being Gaussian.

A fixed-n paired t-test (and Benjamini-Hochberg over many of them) is valid only when the number of
seeds was fixed in advance: re-read after every added seed, it says "helps" or "hurts" far more
often than its 5% when nothing differs (``tests/unit/analysis/test_sequential.py`` measures it).  Here, for the
paired differences ``d_1, d_2, ...`` of one comparison (a variant against its reference, per seed):

- **Two e-processes, the smaller one counts.**
  1. The t-type mixture Bayes factor of Lindon, Ham, Tingley and Bojinov, *Anytime-Valid Linear Models
     and Regression Adjusted Causal Inference in Randomized Experiments* (2022, arXiv:2210.08589), for a
     mean with unknown variance (the right-Haar prior on the variance, a ``N(mu0, sigma^2 / PHI)``
     mixture over the mean)::

         BF_n(mu0) = sqrt(PHI / (PHI + n)) * ((1 + t^2 / nu) / (1 + PHI / (PHI + n) * t^2 / nu)) ** ((nu + 1) / 2)

     with ``t = (mean - mu0) / (sd / sqrt(n))`` and ``nu = n - 1``: a test martingale when the
     differences are Gaussian, whatever their variance.  Powerful, but only that: with skewed differences
     (a variant that now and then lands far off) it says "hurts" far more often than 5% when nothing
     differs: 42% and 81% of studies for lognormal differences of skewness 3 and 6 at 28 comparisons
     (``tests/unit/analysis/test_sequential.py`` simulates it; docs/benchmarks.md).
  2. A sequential sign-flip test of symmetry about ``mu0`` (the game-theoretic sign test of Ramdas,
     Grunwald, Vovk and Shafer, *Game-Theoretic Statistics and Safe Anytime-Valid Inference*, Statistical
     Science 2023, section 4; the bet sized by the predictable plug-in of Waudby-Smith and Ramdas,
     *Estimating means of bounded random variables by betting*, JRSS-B 2024)::

         K_n(mu0) = prod_i (1 + lambda_i * sign(x_i) * w_i),   x_i = d_i - mu0,
         w_i = min(1, |x_i| / mean(|x_1|..|x_{i-1}|)),   lambda_i = clip(S_{i-1} / (Q_{i-1} + BET_PRIOR), +-BET_CAP)

     (``S``, ``Q``: running sums of ``sign(x) w`` and its square).  When the pair's two runs are
     exchangeable (an A/A, or any variant that changes nothing) each sign is a fair coin given its size
     and the past, so ``K_n`` is a test martingale with no assumption on the shape: heavy tails, runs at
     chance accuracy, bimodal outcomes.  Its price: it can grow at most by about ``1 + BET_CAP`` a seed
     (``cap``), so it decides nothing before ``min_decisive_seeds`` seeds.
  ``K_n`` is a product of bets in sequence: a comparison's differences are read in the order the study
  added them (``rounds.chronology``: what a later round adds comes after what an earlier look saw).
  ``min(BF_n, K_n)`` is an e-process whenever *either* assumption holds (it is below the valid one), so by
  Ville's inequality ``P(exists n: min >= 1/alpha) <= alpha`` for Gaussian differences of any variance
  and for symmetric ones of any shape.  Skewed differences with a zero mean satisfy neither exactly; the
  simulation in ``tests/unit/analysis/test_sequential.py`` shows the false discovery rate within 5% for lognormal
  differences of skewness 3 at any number of comparisons, and of skewness 6 at 28 comparisons (0.7%, the
  t-mixture alone 81%); with 1-4 comparisons, skewness 6 reaches 10-14% (the t-mixture alone 19-33%).
  The A/A study on digits measured |skewness| < 1 (docs/benchmarks.md).
- **Confidence sequence**: ``{mu0: min(BF_n(mu0), K_n(mu0)) < 1/alpha}``, the union of the two sequences
  (valid whenever either is), reported as its hull: ``interval``.  Its sign half assumes differences
  symmetric about their *true* mean (two exchangeable runs give that only for a mean of 0), so an
  "equivalent" rests on Gaussian or symmetric differences, as the separations do.
- **One family**: "helps"/"hurts" of every comparison and both metrics (final accuracy and AUC) are one
  e-BH (Wang and Ramdas, *False discovery rate control with e-values*, JRSS-B 2022): the ``k`` largest
  e-values are discoveries for the largest ``k`` with ``e_(k) >= M / (alpha k)``, over all ``M``
  e-values; it controls the false discovery rate at ``alpha`` under any dependence (final accuracy and AUC
  are strongly dependent), at stopping times too.
- **Equivalence** ("no difference larger than the margin"), its own family: a comparison's confidence
  sequence at level ``alpha / M`` (Bonferroni over the same ``M``) lies within +- the margin, so every
  such claim of the report holds at once with probability ``1 - alpha``.

``PHI`` sets the effect sizes the mixture expects: a ``N(0, sigma^2 / PHI)`` prior on the mean difference,
so ``0.1`` expects effects of about three standard deviations of the seed-to-seed differences.  Any fixed
value keeps the guarantees.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np
from scipy import stats

__all__ = [
    "PHI",
    "BET_CAP",
    "BET_PRIOR",
    "e_value",
    "half_width",
    "sign_paths",
    "e_values",
    "interval",
    "confidence_sequence",
    "e_bh",
    "judge_family",
    "cap",
    "min_decisive_seeds",
    "closes_at",
    "resolvable",
    "METHOD",
]

PHI = 0.1
# The sign bet's largest stake: a seed against the trend costs at most 90% of the wealth (a smaller stake
# would need more seeds for the first decision; a larger one loses nearly everything to one outlier).
BET_CAP = 0.9
# The plug-in's prior weight: after one agreeing seed the stake is 1/1.4 = 0.71.  0.4 is the largest value
# with which a decision at level 1/20 is possible at 6 seeds (``min_decisive_seeds``).
BET_PRIOR = 0.4
# A forecast's quantile: "seeds needed" is where 80% of simulated continuations have closed (the power
# the fixed-n path's seeds-needed uses); the effect and spread are taken at their 90% bounds each, so that
# both are cautious at once in at least 80% of studies.
FORECAST_POWER = 0.8
CAUTION = 0.9
METHOD = (
    "the smaller of Lindon et al.'s t-mixture e-value (valid for Gaussian differences) and a sequential "
    "sign-flip test (valid for differences symmetric about zero, as between two exchangeable runs, "
    "whatever their shape)"
)


def e_value(n, mean, sd, mu0: float = 0.0, phi: float = PHI):
    """Lindon et al.'s t-mixture Bayes factor against ``mu = mu0`` after ``n`` paired differences (array-friendly);
    1 where it is undefined (fewer than 2 seeds); with no spread, its limit (largest where the mean is off ``mu0``)."""
    n, mean, sd = np.asarray(n, float), np.asarray(mean, float), np.asarray(sd, float)
    mu0 = np.asarray(mu0, float)
    nu = n - 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        t2 = (mean - mu0) ** 2 / (sd**2 / n)
        r = phi / (phi + n)
        bf = np.sqrt(r) * ((1 + t2 / nu) / (1 + r * t2 / nu)) ** ((nu + 1) / 2)
        limit = r ** (-nu / 2)  # t -> infinity: identical differences away from mu0
    ok = (n >= 2) & np.isfinite(sd) & np.isfinite(mean)
    bf = np.where(ok & (sd > 0), bf, np.where(ok & (sd == 0) & (mean != mu0), limit, 1.0))
    return bf


def half_width(n, sd, alpha: float, phi: float = PHI):
    """The t-mixture confidence sequence's half-width at ``n`` (closed form: ``BF_n(mu0) < 1/alpha`` solved for
    ``mu0``); infinite where the sequence is still unbounded."""
    n, sd = np.asarray(n, float), np.asarray(sd, float)
    nu = n - 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = phi / (phi + n)
        k = ((1 / alpha) ** 2 / r) ** (1 / (nu + 1))
        u = (k - 1) / (1 - k * r)  # the largest t^2 / nu inside the sequence
        w = np.sqrt(nu * u) * sd / np.sqrt(n)
    return np.where((n >= 2) & (k * r < 1) & np.isfinite(sd), w, np.inf)


def sign_paths(x: np.ndarray) -> np.ndarray:
    """The sign-flip bet's wealth after each of the differences ``x`` (already less ``mu0``) along the last axis."""
    x = np.asarray(x, float)
    n = x.shape[-1]
    ax = np.abs(x)
    lead = x.shape[:-1] + (1,)
    past = np.concatenate([np.zeros(lead), np.cumsum(ax, -1)[..., :-1]], -1)
    count = np.arange(n, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(count > 0, past / np.maximum(count, 1), np.nan)
        w = np.where(np.isnan(scale) | (scale <= 0), (ax > 0).astype(float), np.minimum(1.0, ax / scale))
    z = np.sign(x) * w
    s = np.concatenate([np.zeros(lead), np.cumsum(z, -1)[..., :-1]], -1)
    q = np.concatenate([np.zeros(lead), np.cumsum(z * z, -1)[..., :-1]], -1)
    lam = np.clip(s / (q + BET_PRIOR), -BET_CAP, BET_CAP)
    return np.cumprod(1 + lam * z, -1)


def _moments(d: np.ndarray):
    """Running n, mean and sd along the last axis."""
    n = np.arange(1, d.shape[-1] + 1, dtype=float)
    mean = d.cumsum(-1) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.maximum((d**2).cumsum(-1) - n * mean**2, 0) / (n - 1))
        sd = np.where(sd < 1e-12 * np.maximum(np.abs(mean), 1e-300), 0.0, sd)  # identical values: no spread
    return n, mean, sd


def e_values(d: Sequence[float], mu0=0.0) -> np.ndarray:
    """The comparison's e-value against each ``mu0``: the smaller of the two e-processes after all of ``d``."""
    d = np.asarray(d, float)
    mu0 = np.atleast_1d(np.asarray(mu0, float))
    if len(d) < 2:
        return np.ones(len(mu0))
    n, mean, sd = len(d), float(d.mean()), float(d.std(ddof=1))
    if sd < 1e-12 * max(abs(mean), 1e-300):
        sd = 0.0
    t = e_value(n, mean, sd, mu0)
    s = sign_paths(d[None, :] - mu0[:, None])[:, -1]
    return np.minimum(t, s)


def cap(n: int) -> float:
    """The largest value the sign bet reaches after ``n`` seeds (every one agreeing, at full size)."""
    return float(sign_paths(np.ones(max(int(n), 1)))[-1]) if n >= 1 else 1.0


def min_decisive_seeds(alpha: float) -> int:
    """The fewest seeds at which any comparison can be decided at all (its e-value reaching ``1/alpha``, the
    e-BH level when every comparison is decided): below it nothing can be resolved."""
    for n in range(2, 1000):
        if min(cap(n), float(e_value(n, 1.0, 0.0))) >= 1 / alpha:
            return n
    return 1000


def interval(d: Sequence[float], alpha: float) -> tuple:
    """The hull of the confidence sequence at level ``alpha`` (the union of the t-mixture's and the sign test's):
    ``(low, high)``, infinite on a side not yet bounded."""
    d = np.asarray(d, float)
    n = len(d)
    if n < 2:
        return -math.inf, math.inf
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd < 1e-12 * max(abs(mean), 1e-300):
        sd = 0.0
    w = float(half_width(n, sd, alpha))
    low, high = mean - w, mean + w
    if cap(n) < 1 / alpha:  # the sign test cannot exclude anything yet
        return -math.inf, math.inf
    span = max(float(d.max() - d.min()), abs(mean), 1e-9)
    out = span * np.geomspace(1e-3, 1e4, 200)
    grid = np.unique(np.concatenate([d.min() - out[::-1], np.linspace(d.min(), d.max(), 64), d.max() + out]))
    inside = sign_paths(d[None, :] - grid[:, None])[:, -1] < 1 / alpha
    if inside.any():
        idx = np.nonzero(inside)[0]
        # The grid point beyond the outermost one inside: the edge lies between them (conservative).
        s_low = grid[idx[0] - 1] if idx[0] > 0 else -math.inf
        s_high = grid[idx[-1] + 1] if idx[-1] + 1 < len(grid) else math.inf
        low, high = min(low, s_low), max(high, s_high)
    return float(low), float(high)


def confidence_sequence(d: Sequence[float], alpha: float) -> Dict[str, float]:
    """Mean, interval (valid at every n at once), e-value against 0 and n of the differences ``d``."""
    d = np.asarray(d, float)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    low, high = interval(d, alpha)
    return {"n": n, "mean": mean, "sd": sd, "low": low, "high": high, "e": float(e_values(d, 0.0)[0])}


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


def judge_family(diffs: Dict[str, List[Sequence[float]]], alpha: float, margin: float) -> Dict[str, List[Dict]]:
    """Every comparison's verdict, per metric, from its paired differences, as one family.

    ``helps``/``hurts``: an e-BH discovery over every non-void comparison of every metric; ``equivalent``:
    its sequence at ``alpha / M`` (M: the same count) within +- ``margin``; ``void``: a difference is missing
    (NaN: a metric the trials lack), so it is not tested at all; else ``open``.  Each with its mean, sd,
    interval at ``alpha``, e-value, and ``level``: the e-value its next discovery would need."""
    flat = [(metric, i, np.asarray(d, float)) for metric, ds in diffs.items() for i, d in enumerate(ds)]
    tested = [(metric, i, d) for metric, i, d in flat if len(d) and np.isfinite(d).all()]
    m_total = max(len(tested), 1)
    e = np.array([float(e_values(d, 0.0)[0]) for _, _, d in tested])
    found = e_bh(e, alpha)
    discoveries = int(found.sum())
    out: Dict[str, List[Dict]] = {metric: [None] * len(ds) for metric, ds in diffs.items()}
    for metric, i, d in flat:
        if not (len(d) and np.isfinite(d).all()):
            out[metric][i] = {
                "n": len(d),
                "mean": math.nan,
                "sd": math.nan,
                "low": math.nan,
                "high": math.nan,
                "e": math.nan,
                "verdict": "void",
                "eq_low": math.nan,
                "eq_high": math.nan,
                "level": math.nan,
            }
    for (metric, i, d), e_i, separated in zip(tested, e, found):
        n = len(d)
        mean = float(d.mean())
        sd = float(d.std(ddof=1)) if n > 1 else math.nan
        low, high = interval(d, alpha)
        eq_low, eq_high = interval(d, alpha / m_total)
        if separated and n >= 2:
            verdict = "helps" if mean > 0 else "hurts"
        elif n >= 2 and -margin < eq_low and eq_high < margin:
            verdict = "equivalent"
        else:
            verdict = "open"
        out[metric][i] = {
            "n": n,
            "mean": mean,
            "sd": sd,
            "low": low,
            "high": high,
            "e": float(e_i),
            "verdict": verdict,
            "eq_low": eq_low,
            "eq_high": eq_high,
            "level": m_total / (alpha * (discoveries + (0 if separated else 1))),
        }
    return out


def _closed(paths: np.ndarray, start: int, level: float, alpha_eq: float, margin: float) -> np.ndarray:
    """Whether each simulated path (sims x N) has closed by each n in ``start..N`` (separated at ``level``, or
    equivalent: its mean inside the margin and both margins excluded at ``alpha_eq``, the edge test)."""
    n, mean, sd = _moments(paths)
    sep = np.minimum(e_value(n, mean, sd, 0.0), sign_paths(paths)) >= level
    eq = np.abs(mean) < margin
    for edge in (margin, -margin):
        eq &= np.minimum(e_value(n, mean, sd, edge), sign_paths(paths - edge)) >= 1 / alpha_eq
    closed = (sep | eq)[:, start - 1 :]
    return np.maximum.accumulate(closed, axis=1)


def closes_at(
    d: Sequence[float],
    level: float,
    alpha_eq: float,
    margin: float,
    favourable: bool = False,
    limit: int = 200,
    sims: int = 120,
) -> float:
    """Seeds after which the comparison closes in 80% of simulated continuations (``inf``: not within ``limit``).

    The continuations are Gaussian at a *cautious* effect and spread (the mean's 90% bound nearer zero, the
    sd's 90% upper bound: the forecast is at least the true need in at least 80% of studies, as
    ``tests/unit/analysis/test_sequential.py`` checks), or, with ``favourable``, at the optimistic ones (the bound
    farther from zero, the sd's 90% lower bound): what even a lucky study would need (futility)."""
    d = np.asarray(d, float)
    n = len(d)
    if n < 2 or not np.isfinite(d).all():
        return math.nan
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if n >= limit:
        return math.inf
    q = stats.chi2.ppf(CAUTION if favourable else 1 - CAUTION, n - 1)
    spread = max(sd * math.sqrt((n - 1) / q), 1e-12)
    shift = float(stats.t.ppf(CAUTION, n - 1)) * sd / math.sqrt(n)
    effect = math.copysign(abs(mean) + shift if favourable else max(0.0, abs(mean) - shift), mean)
    rng = np.random.default_rng(20261204)  # the same forecast for the same data: a report rebuilt says the same
    paths = np.concatenate([np.broadcast_to(d, (sims, n)), rng.normal(effect, spread, (sims, limit - n))], 1)
    share = _closed(paths, n + 1, level, alpha_eq, margin).mean(0)
    hit = np.nonzero(share >= FORECAST_POWER)[0]
    return float(n + 1 + hit[0]) if len(hit) else math.inf


def resolvable(m_total: int, first: int, max_seeds: int, round_seeds: int, alpha: float, sims: int = 400) -> float:
    """The smallest true difference, in standard deviations of the paired differences, that a lone comparison
    separates with 80% chance by ``max_seeds`` (looking after ``first`` seeds, then every ``round_seeds``) at
    the e-BH level of one discovery among ``m_total``: what the study can resolve (``inf``: nothing)."""
    max_seeds = max(max_seeds, first)  # a grid that already holds more seeds looks once, at its own
    looks = sorted({min(max(first, 2) + k * round_seeds, max_seeds) for k in range(max_seeds + 1)})
    if not looks or max_seeds < 2:
        return math.inf
    deltas = np.arange(0.25, 20.01, 0.25)
    rng = np.random.default_rng(20261204)
    z = rng.normal(size=(sims, max_seeds))
    for delta in deltas:
        paths = z + delta
        n, mean, sd = _moments(paths)
        e = np.minimum(e_value(n, mean, sd, 0.0), sign_paths(paths))
        hit = (e[:, [n_ - 1 for n_ in looks]] >= m_total / alpha).any(1).mean()
        if hit >= FORECAST_POWER:
            return float(delta)
    return math.inf
