"""The anytime-valid statistics (ablate/sequential.py), by simulation: looking after every added seed keeps
false "helps/hurts" at or below 5% where the fixed-n t-test, re-read the same way, exceeds it; and the
shipped method stays within 5% for the shapes real runs give (heavy tails, skew, runs at chance, the A/A
study's own differences), where the t-mixture alone does not.  The power table beside it is printed
(``pytest -s``): the price of that validity."""

import math

import numpy as np
import pandas as pd
from scipy import stats

from ablate.analysis.rounds import ROUND_SEEDS
from ablate.analysis.sequential import (
    _closed,
    _moments,
    cap,
    closes_at,
    confidence_sequence,
    e_bh,
    e_value,
    e_values,
    half_width,
    interval,
    judge_family,
    min_decisive_seeds,
    resolvable,
    sign_paths,
)
from ablate.analysis.stats import seeds_needed

from helpers.cli import FIXTURES

ALPHA, MAX_SEEDS, STUDIES = 0.05, 12, 4000

AA = FIXTURES / "aa_differences.csv"


def _peeks(rng, mu=0.0, k=1):
    """Paired differences of ``STUDIES`` studies x ``k`` comparisons x ``MAX_SEEDS`` seeds, and the running
    n, mean and sd at every look n = 2..MAX_SEEDS."""
    d = rng.normal(mu, 1.0, size=(STUDIES, k, MAX_SEEDS))
    n, mean, sd = _moments(d)
    return n[1:], mean[..., 1:], sd[..., 1:]


def test_one_comparison_peeked_after_every_seed_stays_within_alpha_and_the_t_test_does_not():
    n, mean, sd = _peeks(np.random.default_rng(0))
    e = e_value(n, mean, sd)
    anytime = (e >= 1 / ALPHA).any(axis=-1).mean()
    p = 2 * stats.t.sf(np.abs(mean / (sd / np.sqrt(n))), n - 1)
    fixed_n_reread = (p < ALPHA).any(axis=-1).mean()
    assert anytime <= ALPHA, anytime
    assert fixed_n_reread > ALPHA, fixed_n_reread  # about 0.2 over 11 looks: why it is not used while adding seeds


def test_the_confidence_sequence_covers_the_truth_at_every_look_at_once():
    mu = 0.3
    n, mean, sd = _peeks(np.random.default_rng(2), mu=mu)
    w = half_width(n, sd, ALPHA)
    missed = (np.abs(mean - mu) >= w).any(axis=-1).mean()
    assert missed <= ALPHA, missed
    # The closed form is the inversion: at the interval's edge the t-mixture's e-value is exactly 1/alpha.
    d = [0.5, 1.5, 1.0, 2.0, 0.0, 1.0, 1.2, 0.7]
    m, s = np.mean(d), np.std(d, ddof=1)
    edge = m + float(half_width(len(d), s, ALPHA))
    assert np.isclose(e_value(len(d), m, s, mu0=edge), 1 / ALPHA)
    # The shipped interval is the union's hull: it holds the t-mixture's, and every value outside it is
    # rejected by both e-processes.
    low, high = interval(d, ALPHA)
    assert low <= m - float(half_width(len(d), s, ALPHA)) and high >= edge
    assert (e_values(d, [low - 1e-9, high + 1e-9]) >= 1 / ALPHA).all()


def test_the_sign_test_is_exact_for_symmetric_differences_of_any_shape():
    """Ville: under symmetry the sign bet's wealth ever reaching 1/alpha has chance <= alpha, for shapes where
    the Gaussian assumption is far off (Cauchy, two points, runs at chance)."""
    rng = np.random.default_rng(5)
    for draw in (
        lambda s: rng.standard_cauchy(s),
        lambda s: rng.choice([-1.0, 1.0], s),
        lambda s: np.where(rng.random(s) < 0.1, 80.0, 1.0) * rng.choice([-1.0, 1.0], s),
    ):
        wealth = sign_paths(draw((STUDIES, 30)))
        assert (wealth >= 1 / ALPHA).any(-1).mean() <= ALPHA


def test_identical_differences_are_decided_and_a_missing_metric_is_void():
    got = judge_family(
        {"final": [np.full(8, 0.05), [0.1, np.nan, 0.2]], "auc": [np.full(8, 0.05), [0.0, 0.1, 0.0]]},
        ALPHA,
        margin=0.01,
    )
    assert [v["verdict"] for v in got["final"]] == ["helps", "void"]
    low, high = got["auc"][0]["low"], got["auc"][0]["high"]
    assert got["auc"][0]["verdict"] == "helps" and low <= 0.05 <= high and high - low < 1e-3
    assert got["final"][1]["n"] == 3 and math.isnan(got["final"][1]["e"])


def test_verdicts_separate_declare_equivalence_or_stay_open():
    rng = np.random.default_rng(3)
    clear = rng.normal(10.0, 1.0, 12)
    tiny = rng.normal(0.0, 0.05, 12)
    noisy = rng.normal(0.5, 5.0, 4)
    got = judge_family({"final": [clear, tiny, noisy]}, ALPHA, margin=1.0)["final"]
    assert [v["verdict"] for v in got] == ["helps", "equivalent", "open"]
    assert e_bh([100.0, 1.0, 0.5], ALPHA).tolist() == [True, False, False]


def test_nothing_is_decided_below_min_decisive_seeds():
    n = min_decisive_seeds(ALPHA)
    assert n == 6 and cap(n - 1) < 1 / ALPHA <= cap(n)
    assert math.isinf(resolvable(56, 3, n - 1, ROUND_SEEDS, ALPHA))


def _aa(rng, size):
    """The A/A study's final-acc differences (tests/fixtures/aa_differences.csv: baseline against a copy that
    differs only in its initial random stream), each cell's centred and scaled, resampled."""
    t = pd.read_csv(AA)
    t = t[t["metric"] == "final_val_acc"]
    z = t.groupby(["depth", "lr"])["difference_points"].transform(lambda d: (d - d.mean()) / d.std(ddof=1))
    return rng.choice(z.to_numpy(), size)


def _lognormal(sigma):
    def draw(rng, size):
        x = np.exp(sigma * rng.normal(size=size))
        m, v = math.exp(sigma**2 / 2), (math.exp(sigma**2) - 1) * math.exp(sigma**2)
        return (x - m) / math.sqrt(v)  # mean 0, sd 1, right-skewed

    return draw


def _chance(rng, size):
    """Both arms: 10% of runs at chance accuracy (0.1), the rest 0.95 +- 0.01; in units of the bulk's spread."""
    arm = lambda: np.where(rng.random(size) < 0.1, 0.1, 0.95 + 0.01 * rng.normal(size=size))  # noqa: E731
    return (arm() - arm()) / 0.01


SHAPES = {
    "Gaussian": lambda rng, size: rng.normal(size=size),
    "t(2.5)": lambda rng, size: rng.standard_t(2.5, size) / math.sqrt(5.0),
    "lognormal skew 3": _lognormal(0.72),  # skewness (e^s2 + 2) sqrt(e^s2 - 1) = 3.0
    "lognormal skew 6": _lognormal(0.99),  # 5.9
    "10% at chance": _chance,
    "A/A (measured)": _aa,
}


def _rounds(e, first=3, max_seeds=MAX_SEEDS, step=1, families=1):
    """The round rule on precomputed e-processes ``e`` (studies x metrics x K x seeds): look after ``first`` seeds,
    then give every comparison whose final acc is not separated ``step`` more seeds, up to ``max_seeds``.  One
    seed a round is the most looks the shipped rule can make (it adds 1 to ROUND_SEEDS a round); futility and
    equivalence only close comparisons sooner, so leaving them out can only add looks.  e-BH over
    ``families``: 1 = every metric in one family (shipped), 2 = one per metric (the method before).  The
    discoveries at the end, studies x metrics x K."""
    studies, metrics, k, _ = e.shape
    looks = sorted({min(first + i * step, max_seeds) for i in range(max_seeds)})
    found = np.zeros((studies, metrics, k), bool)
    for s in range(studies):
        n = np.full(k, first)
        closed = np.zeros(k, bool)
        for look in looks:
            n = np.where(closed, n, look)
            now = e[s][:, np.arange(k), n - 1]  # metrics x K
            if families == 1:
                f = e_bh(now.ravel(), ALPHA).reshape(metrics, k)
            else:
                f = np.stack([e_bh(now[m], ALPHA) for m in range(metrics)])
            closed = f[0]
        found[s] = f
    return found


def _e(d, method):
    """Each method's e-process along the seeds: the t-mixture alone (before), or the shipped minimum."""
    n, mean, sd = _moments(d)
    t = e_value(n, mean, sd)
    return t if method == "t-mixture" else np.minimum(t, sign_paths(d))


def test_false_discoveries_stay_within_5_percent_for_the_shapes_real_runs_give_and_the_price_is_printed():
    """K=28 comparisons (7 values x 4 cells), final acc and AUC, no effect anywhere: the false discovery rate
    of the shipped method (the smaller of the two e-processes, one family) is <= 5% for every shape; the
    t-mixture alone (per metric, as before) is not for skewed ones.  Then the power (3 seeds a round), same
    generator."""
    rng = np.random.default_rng(2026)
    k, studies = 28, 300
    rates = {}
    for name, draw in SHAPES.items():
        d = draw(rng, (studies, 2, k, MAX_SEEDS))
        for method, families in (("t-mixture", 2), ("shipped", 1)):
            found = _rounds(_e(d, method), families=families)
            rates[name, method] = float(found.any(axis=(1, 2)).mean())  # every discovery is false: FDR = P(any)
    print(
        "\nfalse discovery rate, K=28, no effect, a look after every seed from 3 to 12 (the most any round rule makes):"
    )
    for name in SHAPES:
        print(f"  {name:18s}  t-mixture alone {rates[name, 't-mixture']:6.1%}   shipped {rates[name, 'shipped']:6.1%}")
    for name in SHAPES:
        assert rates[name, "shipped"] <= ALPHA, (name, rates[name, "shipped"])
    assert rates["lognormal skew 6", "t-mixture"] > 2 * ALPHA  # what the old method did with skewed differences

    print("power (share of the real differences found), K=28 of which 7 differ by delta sd, Gaussian:")
    for max_seeds in (8, 12, 16):
        cells = []
        for delta in (1.0, 2.0, 3.0):
            d = rng.normal(size=(150, 2, k, max_seeds))
            d[:, :, :7] += delta
            row = []
            for method, families in (("t-mixture", 2), ("shipped", 1)):
                found = _rounds(_e(d, method), max_seeds=max_seeds, step=ROUND_SEEDS, families=families)
                row.append(found[:, 0, :7].mean())
            cells.append(f"{delta:g} sd: {row[0]:4.0%} -> {row[1]:4.0%}")
        print(f"  max_seeds {max_seeds:2d}: " + "   ".join(cells))


def test_one_skewed_comparison_peeked_after_every_seed():
    """A lone comparison, looked at after every seed to 12 (the hardest case: the e-BH level is only 1/alpha).
    Skewness 3: within 5%.  Skewness 6 (an extreme stress shape; the A/A study measured |skewness| < 1) is
    outside both assumptions: about 10%, half the t-mixture's 18% (what docs/benchmarks.md states)."""
    rng = np.random.default_rng(8)
    rate = {}
    for sigma in (0.72, 0.99):
        d = _lognormal(sigma)(rng, (STUDIES, MAX_SEEDS))
        rate[sigma] = [float((_e(d, m)[:, 1:] >= 1 / ALPHA).any(-1).mean()) for m in ("shipped", "t-mixture")]
    assert rate[0.72][0] <= ALPHA + 0.01 and rate[0.72][1] > ALPHA, rate
    assert rate[0.99][0] <= 0.6 * rate[0.99][1], rate


def test_forecasts_are_at_least_the_true_need_in_80_percent_of_studies():
    """The round forecast (sequential) and the fixed-n seeds-needed, from 3 seeds, against the true need at the
    true effect and spread (the seeds at which 80% of studies have closed)."""
    rng = np.random.default_rng(11)
    level, alpha_eq, margin = 56 / ALPHA, ALPHA / 56, 0.01  # a lone comparison among 28, both metrics
    for delta in (1.5, 3.0):
        share = _closed(rng.normal(delta, 1.0, (400, 200)), 2, level, alpha_eq, margin).mean(0)
        true_need = 2 + int(np.nonzero(share >= 0.8)[0][0])
        got = [closes_at(rng.normal(delta, 1.0, 3), level, alpha_eq, margin, sims=60) for _ in range(50)]
        assert np.mean([g >= true_need for g in got]) >= 0.8, (delta, true_need, sorted(got)[:10])
        fixed_true = seeds_needed(delta, 1.0, 0, ALPHA / 28)
        fixed = [
            seeds_needed(*(lambda x: (x.mean(), x.std(ddof=1)))(rng.normal(delta, 1.0, 3)), 3, ALPHA / 28)
            for _ in range(100)
        ]
        assert np.mean([f >= fixed_true for f in fixed]) >= 0.8, (delta, fixed_true)


def test_confidence_sequence_dict_names_its_parts():
    c = confidence_sequence([0.5, 1.5, 1.0, 2.0, 0.0, 1.0], ALPHA)
    assert set(c) == {"n", "mean", "sd", "low", "high", "e"} and c["low"] < c["mean"] < c["high"]
