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
    d1 = (math.log(S0 / K) + 0.5 * sigma ** 2 * T) / (sigma * math.sqrt(T))
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
