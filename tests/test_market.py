"""Market simulators: moments against closed forms, reproducibility, pathwise gradients.

Moments are checked within 4 Monte Carlo standard errors (a false alarm ~1 in 16 000 per check,
and the keys are fixed, so a pass is deterministic); gradients in float64.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from ddm.library.market import gbm, heston, merton, regime

pytestmark = pytest.mark.usefixtures("float64")

KEY = jax.random.key(7)
DT = 1 / 365


def within(samples, expected, k=4.0):
    samples = np.asarray(samples)
    se = samples.std(ddof=1) / math.sqrt(samples.size)
    assert abs(samples.mean() - expected) <= k * se, (samples.mean(), expected, se)


def test_gbm_terminal_moments_and_correlation():
    corr = np.array([[1.0, 0.6], [0.6, 1.0]])
    mu, sigma, n = np.array([0.05, -0.02]), np.array([0.2, 0.35]), 60
    p = gbm(KEY, [100.0, 50.0], mu, sigma, DT, n, 20_000, corr=corr)
    assert p.shape == (20_000, n + 1, 2)
    T = n * DT
    for a, s0 in enumerate((100.0, 50.0)):
        within(p[:, -1, a], s0 * math.exp(mu[a] * T))
        log_ret = np.log(np.asarray(p[:, -1, a]) / s0)
        assert abs(log_ret.var() / (sigma[a] ** 2 * T) - 1) < 0.05
    steps = np.diff(np.log(np.asarray(p)), axis=1).reshape(-1, 2)
    assert abs(np.corrcoef(steps.T)[0, 1] - 0.6) < 0.01


def test_same_key_same_bits_and_paths_do_not_depend_on_how_many_are_drawn():
    a = gbm(KEY, 100.0, 0.0, 0.2, DT, 30, 64)
    b = gbm(KEY, 100.0, 0.0, 0.2, DT, 30, 64)
    c = gbm(KEY, 100.0, 0.0, 0.2, DT, 30, 16)
    assert np.array_equal(a, b)
    assert np.array_equal(a[:16], c)
    assert not np.array_equal(a, gbm(jax.random.key(8), 100.0, 0.0, 0.2, DT, 30, 64))


def test_heston_mean_price_and_mean_variance():
    kappa, theta, v0, n = 2.0, 0.04, 0.09, 90
    s, v = heston(KEY, 100.0, v0, kappa, theta, 0.4, -0.7, DT, n, 20_000, mu=0.03)
    T = n * DT
    within(s[:, -1], 100.0 * math.exp(0.03 * T))
    within(v[:, -1], theta + (v0 - theta) * math.exp(-kappa * T))
    # leverage: returns and variance changes are negatively correlated
    dlog = np.diff(np.log(np.asarray(s)), axis=1).ravel()
    dv = np.diff(np.asarray(v), axis=1).ravel()
    assert np.corrcoef(dlog, dv)[0, 1] < -0.5


def test_merton_mean_is_compensated_and_jumps_fatten_the_tails():
    n = 60
    p = merton(KEY, 100.0, 0.02, 0.15, 5.0, -0.05, 0.1, DT, n, 20_000)
    within(p[:, -1], 100.0 * math.exp(0.02 * n * DT))
    steps = np.diff(np.log(np.asarray(p)), axis=1).ravel()
    kurtosis = ((steps - steps.mean()) ** 4).mean() / steps.var() ** 2
    assert kurtosis > 4.0  # a pure diffusion gives 3


def test_regime_chain_spends_the_stationary_share_in_each_regime_with_its_volatility():
    P = np.array([[0.98, 0.02], [0.06, 0.94]])
    sigma = np.array([0.1, 0.5])
    s, r = regime(KEY, 100.0, np.zeros(2), sigma, P, 0, DT, 500, 400)
    stationary = np.array([P[1, 0], P[0, 1]]) / (P[0, 1] + P[1, 0])  # [0.75, 0.25]
    share = np.bincount(np.asarray(r[:, 100:]).ravel(), minlength=2) / r[:, 100:].size
    assert np.allclose(share, stationary, atol=0.03)
    steps = np.diff(np.log(np.asarray(s)), axis=1)
    regimes = np.asarray(r[:, 1:])  # the regime each step used
    for k in range(2):
        assert abs(steps[regimes == k].std() / (sigma[k] * math.sqrt(DT)) - 1) < 0.03


def test_pathwise_vega_of_a_call_matches_black_scholes():
    """d/dσ of a Monte Carlo call price through the simulator ≈ the Black–Scholes vega."""
    S0, K, n, T = 100.0, 100.0, 30, 30 * DT

    def price(sigma):
        p = gbm(KEY, S0, 0.0, sigma, DT, n, 50_000)
        return jnp.mean(jnp.maximum(p[:, -1, 0] - K, 0.0))

    sigma = 0.2
    d1 = (math.log(S0 / K) + 0.5 * sigma**2 * T) / (sigma * math.sqrt(T))
    vega = S0 * norm.pdf(d1) * math.sqrt(T)
    assert abs(float(jax.grad(price)(sigma)) / vega - 1) < 0.03


def test_heston_and_merton_are_differentiable_in_their_parameters():
    def heston_mean(p):
        s, _ = heston(KEY, 100.0, p[0], p[1], p[2], p[3], p[4], DT, 20, 256)
        return jnp.mean(jnp.maximum(s[:, -1] - 100.0, 0.0))

    g = jax.grad(heston_mean)(jnp.array([0.04, 1.5, 0.04, 0.5, -0.7]))
    assert np.all(np.isfinite(g)) and g[0] > 0  # more initial variance, dearer call

    def merton_mean(p):
        return jnp.mean(merton(KEY, 100.0, p[0], p[1], 1.0, p[2], p[3], DT, 20, 256)[:, -1])

    g = jax.grad(merton_mean)(jnp.array([0.05, 0.2, -0.1, 0.15]))
    assert np.all(np.isfinite(g))
    # E[S_T] = S0 exp(μT) whatever the jumps: d/dμ ≈ T·S0, d/dm and d/ds ≈ 0 on average
    assert abs(float(g[0]) / (20 * DT * 100.0) - 1) < 0.05


# --- trading mechanics, replay ---------------------------------------------------------------

from ddm.library.market import (  # noqa: E402
    block_bootstrap,
    hybrid,
    prices_from_log_returns,
    trading,  # noqa: E402
)


def test_trading_pnl_counts_gains_costs_and_financing():
    p = jnp.array([100.0, 102.0, 99.0, 101.0])
    h = jnp.array([0.5, 0.6, 0.2])
    gains = 0.5 * 2 + 0.6 * -3 + 0.2 * 2
    cost = 0.01 * (0.5 * 100 + 0.1 * 102 + 0.4 * 99) + 0.1 * (0.25 * 100 + 0.01 * 102 + 0.16 * 99)
    financing = 0.05 * 0.1 * (0.5 * 100 + 0.6 * 102 + 0.2 * 99)
    got = trading.trading_pnl(p, h, proportional=0.01, quadratic=0.1, rate=0.05, dt=0.1)
    assert float(got) == pytest.approx(gains - cost - financing, rel=1e-12)
    assert float(trading.turnover(h)) == pytest.approx(0.5 + 0.1 + 0.4)
    # differentiable in the positions and the cost rate
    g = jax.grad(lambda h, c: trading.trading_pnl(p, h, proportional=c), argnums=(0, 1))(h, 0.01)
    assert np.all(np.isfinite(g[0])) and float(g[1]) == pytest.approx(-(50 + 10.2 + 39.6))


def test_delta_hedge_error_matches_derman_kamal():
    """The Black–Scholes delta hedge of a short call, rebalanced N = 30 times: the std of its
    P&L ≈ sqrt(π/4)·σ·vega/sqrt(N) (Derman & Kamal), within 5 %."""
    S0 = K = 100.0
    sigma, N = 0.2, 30
    T = N / 365
    dt = T / N
    p = gbm(KEY, S0, 0.0, sigma, dt, N, 100_000)[..., 0]
    tau = T - dt * jnp.arange(N)
    d1 = (jnp.log(p[:, :-1] / K) + 0.5 * sigma**2 * tau) / (sigma * jnp.sqrt(tau))
    delta = jax.scipy.stats.norm.cdf(d1)
    d1_0 = 0.5 * sigma * math.sqrt(T)
    premium = S0 * (norm.cdf(d1_0) - norm.cdf(d1_0 - sigma * math.sqrt(T)))
    pnl = jax.vmap(
        lambda s, h: trading.hedged_short_option_pnl(
            s, h, lambda x: trading.call_payoff(x, K), premium
        )
    )(p, delta)
    vega = S0 * norm.pdf(d1_0) * math.sqrt(T)
    expected = math.sqrt(math.pi / 4) * sigma * vega / math.sqrt(N)
    assert abs(float(jnp.std(pnl)) / expected - 1) < 0.05
    assert abs(float(jnp.mean(pnl))) < 0.02  # fair premium: no drift in the hedged book


def test_block_bootstrap_replays_real_blocks_and_mixes_by_regime():
    r = jnp.asarray(np.arange(40.0).reshape(20, 2))  # row t is (2t, 2t + 1): traceable
    paths = block_bootstrap(KEY, r, 10, 50, 4)
    assert paths.shape == (50, 10, 2)
    rows = np.asarray(paths[..., 0]) / 2
    steps = np.diff(rows, axis=1)
    inside = np.ones_like(steps, bool)
    inside[:, 3::4] = False  # block boundaries after 4 steps
    assert np.all(steps[inside] == 1)  # consecutive real days within a block
    assert np.array_equal(np.asarray(paths[..., 1]), np.asarray(paths[..., 0]) + 1)
    assert np.array_equal(paths, block_bootstrap(KEY, r, 10, 50, 4))
    prices = prices_from_log_returns(100.0, jnp.zeros((3, 5, 2)))
    assert prices.shape == (3, 6, 2) and np.allclose(np.asarray(prices), 100.0, rtol=1e-14)
    regimes = jnp.array([[0, 1, 1, 0]])
    mixed = hybrid(regimes, jnp.ones((1, 4, 1)), jnp.zeros((1, 4, 1)), [False, True])
    assert np.array_equal(np.asarray(mixed[0, :, 0]), [0, 1, 1, 0])
