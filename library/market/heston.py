"""Heston stochastic volatility."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddm.library.market.paths import simulate, with_start


def heston(key, s0, v0, kappa, theta, xi, rho, dt: float, n_steps: int, n_paths: int, mu=0.0):
    """``(prices, variances)``, each ``[n_paths, n_steps + 1]``, under
    dS/S = μ dt + √v dW₁,  dv = κ(θ − v) dt + ξ√v dW₂,  Corr(dW₁, dW₂) = ρ.

    Discretised with the full-truncation Euler scheme (Lord, Koekkoek & van Dijk 2010): v⁺ =
    max(v, 0) in the drift and diffusion, the price in logs, log S ← log S + (μ − v⁺/2)dt +
    √(v⁺dt)·z₁, v ← v + κ(θ − v⁺)dt + ξ√(v⁺dt)·z₂, z₂ = ρz₁ + √(1 − ρ²)z⊥. Its bias in E[v] and
    E[S] is O(dt); the returned variance may dip below 0 (the scheme's state), v⁺ never does.

    >>> import jax
    >>> s, v = heston(jax.random.key(0), 100.0, 0.04, 1.5, 0.04, 0.5, -0.7, 1 / 365, 30, 100)
    >>> s.shape, v.shape
    ((100, 31), (100, 31))
    """
    f = jnp.result_type(float)
    s0, v0, kappa, theta, xi, rho, mu = (
        jnp.asarray(a, f) for a in (s0, v0, kappa, theta, xi, rho, mu)
    )
    root = jnp.sqrt(1.0 - rho**2)

    def step(state, k):
        log_s, v = state
        z1, zp = jax.random.normal(k, (2,), f)
        z2 = rho * z1 + root * zp
        vp = jnp.maximum(v, 0.0)
        log_s = log_s + (mu - 0.5 * vp) * dt + jnp.sqrt(vp * dt) * z1
        v = v + kappa * (theta - vp) * dt + xi * jnp.sqrt(vp * dt) * z2
        return (log_s, v), (log_s, v)

    _, (logs, vs) = simulate(step, (jnp.log(s0), v0), key, n_paths, n_steps)
    return with_start(s0, jnp.exp(logs)), with_start(v0, vs)
