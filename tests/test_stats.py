"""Statistics for experiments (ddm.runtime.stats): each function against a library's values
(scipy) or a textbook's worked example, determinism from an explicit seed, and a clear
ValueError for constant data, a single episode or NaN."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from ddm.runtime import stats


def _exact(n, mean, sd, rng):
    """n normal draws shifted and scaled to this sample mean and sample sd (ddof = 1) exactly:
    the raw data behind a worked example that reports only summary statistics."""
    x = rng.normal(size=n)
    return mean + sd * (x - x.mean()) / x.std(ddof=1)


@pytest.fixture
def pairs():
    """Two methods on the same 60 episodes: a beats b by 0.25 on average, correlated noise."""
    rng = np.random.default_rng(20240613)
    common = rng.normal(size=60)
    a = common + 0.25 + 0.8 * rng.normal(size=60)
    b = common + 0.8 * rng.normal(size=60)
    return a, b


# --------------------------------------------------------------------------- Sharpe


@pytest.mark.parametrize("periods", [1, 252])
def test_sharpe_is_the_languages_sharpe_op(periods):
    import ddm

    r = np.random.default_rng(0).normal(0.001, 0.02, size=8).astype(np.float32)
    prog = ddm.loads(
        f"dim N = 8\ninput r: f32[N]\nnode s = sharpe(r, periods={periods})\noutput s\n"
    )
    expected = float(prog.apply({}, r=r)["s"])
    assert stats.sharpe(r, periods=periods) == pytest.approx(expected, rel=1e-5)


def test_sharpe_is_mean_over_population_sd_and_finite_on_constant_returns():
    r = np.array([0.01, 0.03, -0.01, 0.05])
    assert stats.sharpe(r) == pytest.approx(r.mean() / r.std(ddof=0), rel=1e-9)
    assert stats.sharpe([0.0, 0.0, 0.0]) == 0.0
    assert stats.sharpe(np.full(5, 0.01)) == pytest.approx(0.01 / 1e-6)  # eps = 1e-12 under √
    batch = np.stack([r, 2 * r + 1])
    np.testing.assert_allclose(stats.sharpe(batch), [stats.sharpe(r), stats.sharpe(2 * r + 1)])


# --------------------------------------------------------------------------- bootstrap


def _scipy_paired(a, b, stat, seed, resamples, method):
    return sps.bootstrap(
        (a, b),
        lambda x, y, axis: stat(x, axis=axis) - stat(y, axis=axis),
        paired=True,
        n_resamples=resamples,
        method=method,
        confidence_level=0.95,
        rng=np.random.default_rng(seed),
    )


@pytest.mark.parametrize("stat", [np.mean, stats.sharpe, np.median], ids=lambda f: f.__name__)
def test_paired_bootstrap_is_scipys_bootstrap_of_the_difference(pairs, stat):
    """The same seed draws the same resamples as scipy.stats.bootstrap(paired=True): the
    distribution is identical, and so are the percentile and BCa intervals and the std."""
    a, b = pairs
    ours = stats.paired_bootstrap(a, b, stat, seed=11, resamples=4000)
    pct = _scipy_paired(a, b, stat, 11, 4000, "percentile")
    bca = _scipy_paired(a, b, stat, 11, 4000, "BCa")
    np.testing.assert_array_equal(ours.distribution, pct.bootstrap_distribution)
    assert ours.estimate == pytest.approx(float(stat(a) - stat(b)), rel=1e-12)
    np.testing.assert_allclose(ours.percentile, pct.confidence_interval, rtol=1e-12)
    assert ours.bca is not None
    np.testing.assert_allclose(ours.bca, bca.confidence_interval, rtol=1e-10)
    assert ours.std == pytest.approx(pct.standard_error, rel=1e-12)


def test_the_bootstrap_in_several_batches_is_scipys_with_the_same_batch(pairs):
    a, b = pairs
    ours = stats.paired_bootstrap(a, b, seed=5, resamples=1000, batch=300)
    theirs = sps.bootstrap(
        (a, b),
        lambda x, y, axis: x.mean(axis) - y.mean(axis),
        paired=True,
        n_resamples=1000,
        batch=300,
        method="BCa",
        rng=np.random.default_rng(5),
    )
    np.testing.assert_array_equal(ours.distribution, theirs.bootstrap_distribution)
    np.testing.assert_allclose(ours.bca, theirs.confidence_interval, rtol=1e-10)


def test_the_p_value_counts_the_resamples_across_zero_with_the_plus_one_correction(pairs):
    a, b = pairs
    r = stats.paired_bootstrap(a, b, seed=3, resamples=2000)
    assert r.estimate > 0
    k = np.count_nonzero(r.distribution <= 0)
    assert r.p_value == pytest.approx(min(1.0, 2 * (k + 1) / 2001))
    flipped = stats.paired_bootstrap(b, a, seed=3, resamples=2000)  # the mirror image
    np.testing.assert_array_equal(flipped.distribution, -r.distribution)
    assert flipped.p_value == r.p_value
    # every episode better: no resample reaches 0, so p is the smallest possible, 2/(B + 1)
    better = stats.paired_bootstrap(b + 1 + np.abs(a), b, seed=3, resamples=999)
    assert better.p_value == pytest.approx(2 / 1000)


def test_the_p_value_agrees_with_the_paired_t_test_on_normal_data():
    """Not the same test, but for normal differences both measure how far 0 is in the tail."""
    rng = np.random.default_rng(8)
    d = rng.normal(0.2, 1.0, size=200)
    ours = stats.paired_bootstrap(d, np.zeros_like(d), seed=1, resamples=20_000, bca=False)
    t = sps.ttest_rel(d, np.zeros_like(d)).pvalue
    assert 0.5 * t < ours.p_value < 2 * t, (ours.p_value, t)


def test_the_same_seed_gives_the_same_bits_and_another_seed_others(pairs):
    a, b = pairs
    one = stats.paired_bootstrap(a, b, stats.sharpe, seed=42, resamples=500)
    two = stats.paired_bootstrap(a, b, stats.sharpe, seed=42, resamples=500)
    assert one == two
    assert one.distribution.tobytes() == two.distribution.tobytes()
    other = stats.paired_bootstrap(a, b, stats.sharpe, seed=43, resamples=500)
    assert not np.array_equal(one.distribution, other.distribution)


def test_a_jax_key_seeds_the_bootstrap_by_its_key_data(pairs):
    import jax

    a, b = pairs
    typed = stats.paired_bootstrap(a, b, seed=jax.random.key(9), resamples=300)
    raw = stats.paired_bootstrap(a, b, seed=jax.random.PRNGKey(9), resamples=300)
    again = stats.paired_bootstrap(a, b, seed=jax.random.key(9), resamples=300)
    assert typed == raw == again
    assert typed != stats.paired_bootstrap(a, b, seed=jax.random.key(10), resamples=300)


def test_a_statistic_without_axis_is_called_per_resample(pairs):
    a, b = pairs
    vec = stats.bootstrap(lambda x, y, axis=-1: np.mean(x - y, axis=axis), (a, b), seed=2,
                          resamples=300)  # fmt: skip
    loop = stats.bootstrap(lambda x, y: float(np.mean(x - y)), (a, b), seed=2, resamples=300)
    np.testing.assert_allclose(loop.distribution, vec.distribution, rtol=1e-12)
    np.testing.assert_allclose(loop.bca, vec.bca, rtol=1e-10)


def test_the_bootstrap_result_as_plain_numbers(pairs):
    import json

    a, b = pairs
    d = stats.paired_bootstrap(a, b, seed=0, resamples=200).as_dict()
    assert set(d) == {"estimate", "percentile", "bca", "std", "p_value", "resamples", "confidence"}
    json.dumps(d)


def test_constant_differences_give_a_degenerate_interval_and_no_bca():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    same = stats.paired_bootstrap(a, a, seed=0, resamples=100)
    assert (same.estimate, same.percentile, same.bca, same.std, same.p_value) == (
        0.0,
        (0.0, 0.0),
        None,
        0.0,
        1.0,
    )
    shifted = stats.paired_bootstrap(a + 1, a, seed=0, resamples=100)
    assert shifted.estimate == 1.0 and shifted.percentile == (1.0, 1.0) and shifted.bca is None
    assert shifted.p_value == pytest.approx(2 / 101)


# --------------------------------------------------------------------------- Hedges' g


def test_hedges_g_on_borensteins_worked_example():
    """Borenstein, Hedges, Higgins & Rothstein, *Introduction to Meta-Analysis* (Wiley 2009),
    §4 "Computing d and g from studies that use independent groups": X̄₁ = 103.00,
    X̄₂ = 100.00, S₁ = 5.5, S₂ = 4.5, n₁ = n₂ = 50 give S_within = 5.0249, d = 0.5970,
    J = 1 − 3/(4·98 − 1) = 0.9923 and g = 0.5924."""
    rng = np.random.default_rng(1)
    a, b = _exact(50, 103.0, 5.5, rng), _exact(50, 100.0, 4.5, rng)
    assert stats.hedges_g(a, b, exact=False) == pytest.approx(0.5924, abs=5e-5)
    assert stats.hedges_correction(98, exact=False) == pytest.approx(0.9923, abs=5e-5)
    d = stats.hedges_g(a, b) / stats.hedges_correction(98)
    assert d == pytest.approx(0.5970, abs=5e-5)
    assert stats.hedges_g(a, b) == pytest.approx(0.5924, abs=5e-5)  # the exact J, same to 4 dp
    assert stats.hedges_g(b, a) == -stats.hedges_g(a, b)


def test_paired_hedges_g_on_lakens_worked_example():
    """Lakens (2013), "Calculating and reporting effect sizes…", Frontiers in Psychology 4:863,
    Table 1: ten people rate two movies; the paired t-test gives t(9) = 4.74 and Cohen's
    d_z = 1.50 (mean difference 1.0 over its sd 0.667); g_z = J(9)·d_z."""
    movie1 = np.array([9, 7, 8, 9, 8, 9, 9, 10, 9, 9], float)
    movie2 = np.array([9, 6, 7, 8, 7, 9, 8, 8, 8, 7], float)
    d_z = stats.hedges_g(movie1, movie2, paired=True) / stats.hedges_correction(9)
    assert d_z == pytest.approx(1.50, abs=5e-3)
    assert d_z * math.sqrt(10) == pytest.approx(4.74, abs=5e-3)
    assert d_z * math.sqrt(10) == pytest.approx(sps.ttest_rel(movie1, movie2).statistic)
    assert stats.hedges_g(movie1, movie2, paired=True, exact=False) == pytest.approx(
        1.5 * (1 - 3 / 35)
    )


def test_hedges_g_is_the_t_statistic_rescaled():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.4, 1, size=23), rng.normal(0, 1.3, size=31)
    t = sps.ttest_ind(a, b).statistic  # pooled variance
    g = stats.hedges_g(a, b)
    assert g / stats.hedges_correction(52) == pytest.approx(t * math.sqrt(1 / 23 + 1 / 31))


def test_the_exact_correction_makes_d_unbiased():
    """Hedges (1981): d = (difference)/s with s² ~ σ² χ²_m / m, so E[d] = δ · √m · E[1/χ_m] and
    J(m) = 1 / (√m · E[1/χ_m]), here from scipy's χ distribution. The approximation
    1 − 3/(4m − 1) is within 4e-4 (relative) from m = 10 and 1e-4 from m = 20."""
    for m in (2, 3, 5, 10, 20, 50, 98):
        mean_inverse_chi = sps.chi(m).expect(lambda x: 1 / x)
        assert stats.hedges_correction(m) == pytest.approx(1 / (math.sqrt(m) * mean_inverse_chi))
        gap = stats.hedges_correction(m, exact=False) / stats.hedges_correction(m) - 1
        assert 0 < gap < (4e-4 if m >= 10 else 0.02) and (m < 20 or gap < 1e-4)
    assert stats.hedges_correction(10) == pytest.approx(0.9227, abs=5e-5)
    assert stats.hedges_correction(10, exact=False) == pytest.approx(1 - 3 / 39)


@pytest.mark.parametrize("paired", [True, False], ids=["paired", "independent"])
def test_the_hedges_g_interval_is_scipys_bootstrap_of_g(pairs, paired):
    a, b = pairs
    b = b if paired else b[:45]  # independent groups may differ in size
    ours = stats.hedges_g_ci(a, b, paired, seed=6, resamples=3000)
    theirs = sps.bootstrap(
        (a, b),
        lambda x, y, axis: stats._g(x, y, paired=paired, exact=True, axis=axis),
        paired=paired,
        n_resamples=3000,
        method="BCa",
        rng=np.random.default_rng(6),
    )
    assert ours.estimate == stats.hedges_g(a, b, paired)
    np.testing.assert_array_equal(ours.distribution, theirs.bootstrap_distribution)
    np.testing.assert_allclose(ours.bca, theirs.confidence_interval, rtol=1e-10)
    assert ours.percentile[0] < ours.estimate < ours.percentile[1]


# --------------------------------------------------------------------------- Benjamini–Hochberg

# Benjamini & Hochberg (1995), J. R. Statist. Soc. B 57(1), §4: fifteen p-values from a study
# of myocardial infarction treatments. At q = 0.05 the procedure rejects the four smallest
# (p ≤ 0.0095): p₍₅₎ = 0.0201 > 5·0.05/15. Adjusted values by the textbook formula (statsmodels'
# fdr_bh gives the same): min over j ≥ i of 15·p₍ⱼ₎/j.
BH_P = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240,
        0.4262, 0.5719, 0.6528, 0.7590, 1.0000]  # fmt: skip
BH_ADJUSTED = [0.0015, 0.003, 0.0095, 0.035625, 0.0603, 15 * 0.0298 / 7, 15 * 0.0298 / 7,
               0.0645, 0.0765, 0.486, 15 * 0.4262 / 11, 0.714875, 15 * 0.6528 / 13,
               15 * 0.7590 / 14, 1.0]  # fmt: skip


def test_benjamini_hochberg_on_the_papers_example_in_any_order():
    order = np.random.default_rng(0).permutation(15)
    r = stats.benjamini_hochberg(np.array(BH_P)[order], q=0.05)
    np.testing.assert_allclose(r.adjusted, np.array(BH_ADJUSTED)[order], rtol=1e-12)
    np.testing.assert_array_equal(r.rejected, order < 4)


def _step_up(p, q):
    """The textbook procedure: reject H₍₁₎…H₍ₖ₎ for the largest k with p₍ₖ₎ ≤ k q / m."""
    m = len(p)
    order = np.argsort(p)
    passing = [k for k in range(1, m + 1) if p[order[k - 1]] <= k * q / m]
    rejected = np.zeros(m, bool)
    rejected[order[: max(passing, default=0)]] = True
    return rejected


@pytest.mark.parametrize("seed", range(20))
def test_benjamini_hochberg_rejects_what_the_step_up_procedure_rejects(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(size=30), rng.uniform(0, 0.01, size=rng.integers(0, 10))])
    for q in (0.01, 0.05, 0.2):
        r = stats.benjamini_hochberg(p, q)
        np.testing.assert_array_equal(r.rejected, _step_up(p, q))
        assert np.all(r.adjusted >= p) and np.all(r.adjusted <= 1)


def test_benjamini_hochberg_of_nothing_is_nothing():
    r = stats.benjamini_hochberg([])
    assert r.adjusted.size == 0 and r.rejected.size == 0


# --------------------------------------------------------------------------- power


def test_147_pairs_give_95_percent_power_at_effect_0_3():
    """G*Power 3.1, "t tests – Means: difference between two dependent means (matched pairs)",
    a priori: d_z = 0.3, α = 0.05 two-tailed, power 0.95 → total sample size 147, actual
    power 0.9509 (the research plan's pre-registration, §5.2)."""
    assert stats.samples_for_power(0.3, power=0.95, alpha=0.05) == 147
    assert stats.power(0.3, 147) == pytest.approx(0.9509, abs=5e-5)
    assert stats.power(0.3, 146) < 0.95 <= stats.power(0.3, 147)


def test_power_matches_cohens_table_for_two_groups():
    """Cohen (1988), Statistical Power Analysis, Table 2.4.1: d = 0.5, α = 0.05 two-tailed,
    power 0.80 → n = 64 per group (G*Power: actual power 0.8015)."""
    assert stats.samples_for_power(0.5, power=0.8, paired=False) == 64
    assert stats.power(0.5, 64, paired=False) == pytest.approx(0.8015, abs=5e-5)
    assert stats.samples_for_power(0.3, power=0.95, paired=False) == 290
    assert stats.samples_for_power(0.5, power=0.8) == 34  # paired


def test_power_is_symmetric_in_the_effect_and_alpha_at_no_effect():
    assert stats.power(-0.3, 50) == stats.power(0.3, 50)
    assert stats.power(0.0, 50) == pytest.approx(0.05, abs=1e-12)
    assert stats.samples_for_power(-0.3) == 147


def test_power_against_a_simulation_of_the_t_test():
    """The noncentral t against 20 000 simulated paired t-tests (a 3.5-sigma band)."""
    rng = np.random.default_rng(12)
    n, d, sims = 40, 0.4, 20_000
    diffs = rng.normal(d, 1.0, size=(sims, n))
    p = sps.ttest_1samp(diffs, 0.0, axis=1).pvalue
    simulated = np.mean(p < 0.05)
    exact = stats.power(d, n)
    assert abs(simulated - exact) < 3.5 * math.sqrt(exact * (1 - exact) / sims)


# --------------------------------------------------------------------------- regimes


def test_the_regimes_split_100_episodes_25_50_20_5_by_volatility():
    vol = np.random.default_rng(3).lognormal(size=100)
    regime = stats.volatility_regimes(vol)
    assert np.bincount(regime).tolist() == [25, 50, 20, 5]
    order = np.argsort(vol)
    assert np.all(np.diff(regime[order]) >= 0)  # higher volatility, never a lower regime


def test_tied_volatilities_share_a_regime():
    assert stats.volatility_regimes(np.full(10, 0.2)).tolist() == [1] * 10
    regime = stats.volatility_regimes([0.1, 0.2, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9])
    assert len(set(regime[1:5])) == 1 and len(set(regime[5:])) == 1


def test_regime_sharpes_group_the_episodes_by_volatility():
    rng = np.random.default_rng(5)
    pnl, vol = rng.normal(0.1, 1, size=200), rng.uniform(size=200)
    order = np.argsort(vol)
    expected = [stats.sharpe(chunk) for chunk in np.split(pnl[order], 20)]
    np.testing.assert_allclose(stats.regime_sharpes(pnl, vol, 20), expected, rtol=1e-12)


def test_conditional_sharpe_is_the_median_of_the_worst_fifth_over_the_median():
    rng = np.random.default_rng(7)
    pnl, vol = rng.normal(0.3, 1, size=400), rng.uniform(size=400)
    s = np.sort(stats.regime_sharpes(pnl, vol, 20))
    expected = np.median(s[:4]) / np.median(s)
    assert stats.conditional_sharpe(pnl, vol) == pytest.approx(expected, rel=1e-12)
    assert stats.conditional_sharpe(pnl, np.ones(400)) == 1.0  # one regime: it is the median
    assert math.isnan(stats.conditional_sharpe(pnl - 5, vol))  # median Sharpe ≤ 0: undefined


def test_the_conditional_sharpe_has_a_bootstrap_interval():
    """docs/statistics.md §7: a statistic without ``axis`` is evaluated per paired resample."""
    rng = np.random.default_rng(9)
    vol = rng.uniform(0.1, 0.5, size=200)
    pnl = rng.normal(1.0, 0.5 + vol)  # noisier in the volatile regimes
    r = stats.bootstrap(stats.conditional_sharpe, (pnl, vol), seed=4, resamples=200, bca=False)
    assert r.estimate == stats.conditional_sharpe(pnl, vol)
    assert r.percentile[0] < r.estimate < r.percentile[1] <= 1.0


# --------------------------------------------------------------------------- user mistakes


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: stats.paired_bootstrap([1.0], [2.0], seed=0), "a has 1 value.*at least 2"),
        (
            lambda: stats.paired_bootstrap([1.0, np.nan, 3.0], [1, 2, 3], seed=0),
            "a has 1 non-finite value.*index 1",
        ),  # fmt: skip
        (lambda: stats.paired_bootstrap([1.0, 2.0], [1.0, 2.0, 3.0], seed=0), "same episodes"),
        (lambda: stats.paired_bootstrap([1.0, 2.0], [1.0, 2.0], seed=None), "explicit int"),
        (lambda: stats.paired_bootstrap([1.0, 2.0], [1.0, 2.0], seed=1.5), "explicit int"),
        (
            lambda: stats.paired_bootstrap([1.0, 2.0], [1.0, 2.0], seed=0, confidence=95),
            "confidence must be in",
        ),  # fmt: skip
        (lambda: stats.hedges_g([1.0, 1.0, 1.0], [2.0, 2.0, 2.0]), "standard deviation is 0"),
        (
            lambda: stats.hedges_g([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], paired=True),
            "differences a − b are constant",
        ),  # fmt: skip
        (lambda: stats.hedges_g([1.0], [2.0, 3.0]), "a has 1 value"),
        (lambda: stats.hedges_g([1.0, 2.0], [np.inf, 3.0]), "b has 1 non-finite"),
        (lambda: stats.benjamini_hochberg([0.01, np.nan]), "pvalues must be in"),
        (lambda: stats.benjamini_hochberg([0.01, 1.2]), "index 1: 1.2"),
        (lambda: stats.power(0.3, 1), "n must be an int ≥ 2"),
        (lambda: stats.power(np.nan, 10), "effect must be finite"),
        (lambda: stats.samples_for_power(0.0), "effect is 0"),
        (lambda: stats.volatility_regimes([0.1, np.nan]), "realised_vol has 1 non-finite"),
        (lambda: stats.volatility_regimes([0.1, 0.2], edges=(0.5, 0.25)), "strictly increasing"),
        (lambda: stats.conditional_sharpe(np.ones(30), np.ones(30)), "30 episodes cannot fill"),
        (lambda: stats.sharpe([0.1, np.nan]), "non-finite"),
        (lambda: stats.sharpe([]), "empty"),
    ],
)
def test_a_mistake_is_a_value_error_that_names_it(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_statistic_undefined_on_some_resamples_is_named():
    # three equal values in six: some resamples of the group are constant, g divides by 0
    with pytest.raises(ValueError, match="resampled statistics are not finite"):
        stats.hedges_g_ci([1.0, 1.0, 1.0], [1.0, 1.0, 2.0], seed=0, resamples=2000)


def test_power_far_in_the_tail_is_finite():
    # scipy's noncentral t gives NaN at a noncentrality of ~19 (4096 pairs at effect 0.3):
    # the normal limit takes over there, and power stays monotone in n
    values = [stats.power(0.3, n) for n in (1000, 4096, 100_000)]
    assert all(np.isfinite(values)) and values == sorted(values)
    assert values[-1] == pytest.approx(1.0)
    assert stats.power(0.01, 100_000) == pytest.approx(0.885, abs=0.002)
