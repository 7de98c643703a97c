"""Classical baselines (ddm.runtime.baselines.classical), in the examples' conventions: the
Whalley–Wilmott band is pfhedge's, closes onto the delta as the cost vanishes and beats the delta
hedge at a 1 % cost (and the DP optimum beats both); the minimum-variance portfolio is the
examples' ``w_mv`` and satisfies the QP's optimality conditions; volatility targeting reaches its
target on the window it was estimated from. The figures are in docs/baselines.md."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from ddm.runtime.baselines import classical as cl
from ddm.runtime.baselines import dp_hedge as dp

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
N_PATHS = 20_000
SEED = 20261204
Z = 3.0  # a Monte Carlo comparison passes within Z standard errors
# the DP grid of tests/test_dp_hedge.py: within 2e-4 of the default one
FAST = dp.Grid(n_price=201, n_hedge=101, n_quad=20)


@pytest.fixture(scope="module")
def paths():
    return dp.sample_paths(N_PATHS, seed=SEED)


def risk(paths, hedges, market):
    return dp.entropic_risk(dp.pnl(paths, hedges, market.cost, market.strike, market.premium))


def turnover(hedges):
    return float(np.mean(np.sum(np.abs(np.diff(hedges, axis=1, prepend=0.0)), axis=1)))


# --- hedging -----------------------------------------------------------------------------------


def test_the_delta_policy_is_dp_hedges_delta(paths):
    m = dp.Market(sigma=0.2, cost=0.01)
    np.testing.assert_array_equal(cl.bs_delta_policy(paths, m), dp.delta_hedges(paths, 0.2))


def test_gamma_is_the_derivative_of_delta():
    s, h = np.array([90.0, 97.0, 100.0, 104.0]), 1e-3
    for t in (0, 15, 29):
        fd = (dp.bs_delta(s + h, t, 0.2) - dp.bs_delta(s - h, t, 0.2)) / (2 * h)
        np.testing.assert_allclose(cl.bs_gamma(s, t, 0.2), fd, rtol=1e-5, atol=1e-9)


def test_the_band_is_pfhedges_whalley_wilmott():
    """pfhedge.nn.WhalleyWilmott's docstring example: strike 1, τ = 0.1, σ = 0.2, cost 1e-5,
    a = 1, previous hedge 0.5, at log-moneyness −0.05 … 0.05 (printed to 4 decimals)."""
    logm = np.array([-0.05, -0.01, 0.0, 0.01, 0.05])
    # one year in 10 rebalances: date 9 is τ = 0.1 before maturity
    m = dp.Market(sigma=0.2, cost=1e-5, steps=10, days=365, s0=1.0, strike=1.0)
    paths = np.repeat(np.exp(logm)[:, None], 11, axis=1)
    delta, half = cl.whalley_wilmott_band(paths, m)
    hedge = np.clip(0.5, delta[:, 9] - half[:, 9], delta[:, 9] + half[:, 9])
    np.testing.assert_allclose(hedge, [0.2946, 0.5, 0.5, 0.5, 0.7284], atol=5e-5)
    np.testing.assert_allclose(delta[:, 9], [0.2239, 0.4497, 0.5126, 0.5752, 0.7945], atol=5e-5)


def test_the_band_contains_the_delta_and_closes_onto_it_as_the_cost_vanishes(paths):
    m = dp.Market(sigma=0.2, cost=0.01)
    some = paths[:2000]
    delta, half = cl.whalley_wilmott_band(some, m)
    assert np.all(half > 0)
    hedges = cl.whalley_wilmott(some, m)
    assert np.all(np.abs(hedges - delta) <= half + 1e-12)  # the hedge never leaves the band
    widths = [np.max(cl.whalley_wilmott_band(some, m, cost=c)[1]) for c in (1e-2, 1e-4, 1e-6)]
    np.testing.assert_allclose(np.diff(np.log(widths)), np.log(1e-2) / 3)  # H ∝ c^(1/3)
    np.testing.assert_array_equal(cl.whalley_wilmott(some, m, cost=0.0), delta)
    # the largest gap is near maturity at the money, where Γ grows as 1/√τ
    gaps = [np.max(np.abs(cl.whalley_wilmott(some, m, cost=c) - delta)) for c in (1e-4, 1e-8)]
    assert gaps[1] < 0.01 < gaps[0]


def test_more_risk_aversion_narrows_the_band(paths):
    m = dp.Market(sigma=0.2, cost=0.01)
    _, loose = cl.whalley_wilmott_band(paths[:100], m, risk_aversion=1.0)
    _, tight = cl.whalley_wilmott_band(paths[:100], m, risk_aversion=8.0)
    np.testing.assert_allclose(tight, loose / 2)  # H ∝ λ^(−1/3)


@pytest.mark.parametrize("cost", [1e-3, 1e-2])
def test_the_band_beats_the_delta_hedge_and_the_dp_optimum_beats_the_band(paths, cost):
    """Figures at 20 000 paths (seed 20261204), ± one standard error: cost 1e-3: delta 0.2962 ±
    0.0032, WW 0.2674 ± 0.0044, ρ* 0.2379; cost 1e-2: delta 2.5649 ± 0.0088, WW 1.3890 ±
    0.0104, ρ* 1.2109."""
    m = dp.Market(sigma=0.2, cost=cost)
    delta, ww = cl.bs_delta_policy(paths, m), cl.whalley_wilmott(paths, m)
    (r_delta, se_delta), (r_ww, se_ww) = risk(paths, delta, m), risk(paths, ww, m)
    assert r_ww < r_delta - Z * (se_delta + se_ww)
    assert turnover(ww) < turnover(delta)
    optimum = dp.solve(sigma=0.2, cost=cost, grid=FAST).risk
    assert optimum < r_ww - Z * se_ww  # an asymptotic band is not the optimum at these costs


def test_paths_of_the_wrong_length_are_refused():
    with pytest.raises(ValueError, match=r"\[n, 31\]"):
        cl.whalley_wilmott(np.ones((3, 30)), dp.Market(sigma=0.2, cost=0.01))


# --- portfolios --------------------------------------------------------------------------------


def windows(seed: int, days: int = 6, n: int = 20, w: int = 60) -> np.ndarray:
    """Windows [days, W, N] of a one-factor market whose assets' own volatilities span 0.5 %
    … 4 % a day: the long-only, capped minimum variance then has assets at 0 and at the cap."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(0.0, 0.01, (days, w, 1)) * rng.uniform(0.3, 1.5, (days, 1, n))
    return factor + rng.normal(size=(days, w, n)) * np.geomspace(0.005, 0.04, n)


def test_equal_weight_earns_the_mean_return():
    r_next = np.random.default_rng(0).normal(size=(5, 7))
    np.testing.assert_allclose(r_next @ cl.equal_weight(7), r_next.mean(axis=1))
    with pytest.raises(ValueError):
        cl.equal_weight(0)


def test_the_covariance_is_the_librarys_cov():
    import jax.numpy as jnp

    from ddm.library.stats import _cov

    R = windows(1)[0]
    library = np.asarray(_cov(jnp.asarray(R, jnp.float32), 0.1)) + 1e-6 * np.eye(20)
    np.testing.assert_allclose(cl.covariance(R), library, rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(cl.covariance(R, shrink=0.0, ridge=0.0), np.cov(R.T), rtol=1e-12)


def test_budget_only_minimum_variance_is_the_closed_form():
    R = windows(2)
    inverse = np.linalg.inv(cl.covariance(R))
    want = inverse.sum(axis=-1) / inverse.sum(axis=(-2, -1))[:, None]  # Σ⁻¹1 / 1ᵀΣ⁻¹1
    np.testing.assert_allclose(cl.minimum_variance(R), want, rtol=1e-9)


def kkt_residuals(w, sigma, lower, upper):
    """(stationarity, worst multiplier sign) of min wᵀΣw s.t. Σw = 1, lower ≤ w ≤ upper: with
    g = Σw, free assets share one value of g (−μ); an asset at its lower bound has g ≥ it, one
    at its upper bound g ≤ it."""
    g = sigma @ w
    at_lower, at_upper = np.isclose(w, lower, atol=1e-12), np.isclose(w, upper, atol=1e-12)
    free = ~(at_lower | at_upper)
    level = g[free].mean()
    stationarity = np.max(np.abs(g[free] - level))
    sign = min(np.min(g[at_lower] - level, initial=0.0), np.min(level - g[at_upper], initial=0.0))
    return stationarity / level, sign / level


@pytest.mark.parametrize("long_only, cap", [(True, None), (True, 0.2), (False, 0.1)])
def test_bounded_minimum_variance_is_optimal(long_only, cap):
    R = windows(3)
    w = cl.minimum_variance(R, long_only=long_only, cap=cap)
    lower, upper = (0.0 if long_only else -np.inf), (np.inf if cap is None else cap)
    assert w.shape == (6, 20)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(w >= lower) and np.all(w <= upper)
    for day, sigma in zip(w, cl.covariance(R)):
        stationarity, sign = kkt_residuals(day, sigma, lower, upper)
        assert stationarity < 1e-9 and sign > -1e-9
    # a bound that binds nowhere changes nothing
    np.testing.assert_allclose(cl.minimum_variance(R, cap=1.0), cl.minimum_variance(R), atol=1e-12)


def test_an_infeasible_cap_is_refused():
    with pytest.raises(ValueError, match="cannot sum to 1"):
        cl.minimum_variance(windows(4)[0], long_only=True, cap=0.04)


@pytest.mark.parametrize(
    "example, bounds", [("hedge_longonly", dict(long_only=True, cap=0.2)), ("hedge", {})]
)
def test_minimum_variance_is_the_examples_w_mv(example, bounds):
    """The program's own ``w_mv`` node (an argmin: the interior point for the long-only, capped
    one, the KKT solve for the budget), made an output; its params do not enter it."""
    import jax

    import ddm

    path = EXAMPLES / f"{example}.ddm"
    text = path.read_text(encoding="utf-8")
    assert text.count("output w, pnl\n") == 1
    prog = ddm.loads(text.replace("output w, pnl\n", "output w, pnl, w_mv\n"), str(path))
    R = windows(7)
    ours = cl.minimum_variance(R, **bounds)
    if bounds:  # the windows make both bounds bind
        assert np.sum(ours < 1e-12) >= 6 * 3 and np.sum(ours > 0.2 - 1e-12) >= 6
    w_mv = prog.apply_batch(
        prog.init(jax.random.key(0)), x=np.zeros((6, 60)), R=R, r_next=np.zeros((6, 20))
    )["w_mv"]
    np.testing.assert_allclose(np.asarray(w_mv), ours, atol=1e-5)


def test_volatility_targeting_reaches_the_target_on_its_window():
    R = windows(5)
    w = cl.volatility_target(R, target=0.10)
    realised = np.std(np.einsum("dtn,dn->dt", R, w), axis=1, ddof=1) * np.sqrt(252)
    np.testing.assert_allclose(realised, 0.10, rtol=1e-12)
    assert np.all(w.sum(axis=1) < 1)  # the rest is cash
    # any base portfolio, any covariance estimate: the same direction, the target volatility
    base = cl.minimum_variance(R, long_only=True)
    scaled = cl.volatility_target(R, target=0.05, weights=base, shrink=0.1)
    np.testing.assert_allclose(scaled / scaled.sum(axis=1, keepdims=True), base, rtol=1e-12)
    vol = np.sqrt(252 * np.einsum("di,dij,dj->d", scaled, cl.covariance(R, 0.1, 0.0), scaled))
    np.testing.assert_allclose(vol, 0.05, rtol=1e-12)


def test_volatility_targeting_respects_its_cap_in_a_calm_window():
    calm = windows(6) / 20  # about 1 % a year: the target would need 10× leverage
    w = cl.volatility_target(calm, target=0.10, cap=1.5)
    np.testing.assert_allclose(np.abs(w).sum(axis=1), 1.5)
    realised = np.std(np.einsum("dtn,dn->dt", calm, w), axis=1, ddof=1) * np.sqrt(252)
    assert np.all(realised < 0.10)
