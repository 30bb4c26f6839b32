"""The anytime-valid statistics (ablate/sequential.py), by simulation: looking after every added seed keeps
false "helps/hurts" at or below 5% where the fixed-n t-test, re-read the same way, exceeds it."""
import numpy as np
from scipy import stats

from ablate.sequential import confidence_sequence, e_bh, e_value, forecast_seeds, half_width, verdicts

ALPHA, MAX_SEEDS, STUDIES = 0.05, 12, 4000


def _peeks(rng, mu=0.0, k=1):
    """Paired differences of ``STUDIES`` studies x ``k`` comparisons x ``MAX_SEEDS`` seeds, and the running
    n, mean and sd at every look n = 2..MAX_SEEDS."""
    d = rng.normal(mu, 1.0, size=(STUDIES, k, MAX_SEEDS))
    n = np.arange(1, MAX_SEEDS + 1)
    mean = d.cumsum(-1) / n
    sq = (d ** 2).cumsum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sd = np.sqrt((sq - n * mean ** 2) / (n - 1))
    return n[1:], mean[..., 1:], sd[..., 1:]


def test_one_comparison_peeked_after_every_seed_stays_within_alpha_and_the_t_test_does_not():
    n, mean, sd = _peeks(np.random.default_rng(0))
    e = e_value(n, mean, sd)
    anytime = (e >= 1 / ALPHA).any(axis=-1).mean()
    p = 2 * stats.t.sf(np.abs(mean / (sd / np.sqrt(n))), n - 1)
    fixed_n_reread = (p < ALPHA).any(axis=-1).mean()
    assert anytime <= ALPHA, anytime
    assert fixed_n_reread > ALPHA, fixed_n_reread  # about 0.2 over 11 looks: why it is not used while adding seeds


def test_many_comparisons_with_e_bh_peeked_after_every_seed_stay_within_alpha_and_bh_on_t_tests_does_not():
    k = 8
    n, mean, sd = _peeks(np.random.default_rng(1), k=k)
    e = e_value(n, mean, sd)  # studies x k x looks
    p = 2 * stats.t.sf(np.abs(mean / (sd / np.sqrt(n))), n - 1)
    e_any = np.zeros(STUDIES, bool)
    bh_any = np.zeros(STUDIES, bool)
    for look in range(e.shape[-1]):
        for s in range(STUDIES):
            e_any[s] |= e_bh(e[s, :, look], ALPHA).any()
        bh_any |= (stats.false_discovery_control(p[:, :, look], axis=1, method="bh") < ALPHA).any(axis=1)
    assert e_any.mean() <= ALPHA, e_any.mean()  # every discovery here is false: the FDR is this rate
    assert bh_any.mean() > ALPHA, bh_any.mean()


def test_the_confidence_sequence_covers_the_truth_at_every_look_at_once():
    mu = 0.3
    n, mean, sd = _peeks(np.random.default_rng(2), mu=mu)
    w = half_width(n, sd, ALPHA)
    missed = (np.abs(mean - mu) >= w).any(axis=-1).mean()
    assert missed <= ALPHA, missed
    # The closed form is the inversion: at the interval's edge the e-value is exactly 1/alpha.
    c = confidence_sequence([0.5, 1.5, 1.0, 2.0, 0.0, 1.0], ALPHA)
    assert np.isclose(e_value(6, c["mean"], c["sd"], mu0=c["high"]), 1 / ALPHA)


def test_verdicts_separate_declare_equivalence_or_stay_open_and_the_forecast_closes():
    rng = np.random.default_rng(3)
    clear = rng.normal(10.0, 1.0, 12)
    tiny = rng.normal(0.0, 0.05, 12)
    noisy = rng.normal(0.5, 5.0, 4)
    got = [v["verdict"] for v in verdicts([clear, tiny, noisy], ALPHA, margin=1.0)]
    assert got == ["helps", "equivalent", "open"]
    assert e_bh([100.0, 1.0, 0.5], ALPHA).tolist() == [True, False, False]
    n = forecast_seeds(mean=1.0, sd=1.0, n=4, k=3, alpha=ALPHA, margin=0.5)
    assert 5 <= n < 100
