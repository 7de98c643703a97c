"""Correlated geometric Brownian motion."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddm.library.market.paths import simulate, with_start


def gbm(key, s0, mu, sigma, dt: float, n_steps: int, n_paths: int, corr=None):
    """Prices ``[n_paths, n_steps + 1, A]`` of A assets under dS/S = μ dt + σ dW, Corr(dW) = C.

    Steps are exact: S ← S·exp((μ − σ²/2)dt + σ√dt·(Lz)ᵢ) with C = LLᵀ, z standard normal.
    ``s0, mu, sigma``: scalars or ``[A]``; ``corr``: ``[A, A]`` (identity when None).

    >>> import jax
    >>> p = gbm(jax.random.key(0), 100.0, 0.0, 0.2, 1 / 365, 30, 1000)
    >>> p.shape
    (1000, 31, 1)
    """
    s0, mu, sigma = (
        jnp.atleast_1d(jnp.asarray(a, dtype=jnp.result_type(float))) for a in (s0, mu, sigma)
    )
    n = max(s0.shape[0], mu.shape[0], sigma.shape[0])
    s0, mu, sigma = (jnp.broadcast_to(a, (n,)) for a in (s0, mu, sigma))
    chol = (
        jnp.eye(n, dtype=s0.dtype)
        if corr is None
        else jnp.linalg.cholesky(jnp.asarray(corr, s0.dtype))
    )
    drift = (mu - 0.5 * sigma**2) * dt
    vol = sigma * jnp.sqrt(dt)

    def step(log_s, k):
        z = chol @ jax.random.normal(k, (n,), s0.dtype)
        log_s = log_s + drift + vol * z
        return log_s, log_s

    _, logs = simulate(step, jnp.log(s0), key, n_paths, n_steps)
    return with_start(s0, jnp.exp(logs))
