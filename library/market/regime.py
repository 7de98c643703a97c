"""Markov regime-switching volatility."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddm.library.market.paths import simulate, with_start


def regime(key, s0, mu, sigma, transition, start: int, dt: float, n_steps: int, n_paths: int):
    """``(prices, regimes)``: ``[n_paths, n_steps + 1]`` prices and int32 regimes, where a
    Markov chain with one-step ``transition[i, j] = P(next = j | now = i)`` picks the regime and
    each step is a GBM step with that regime's ``mu[r]``, ``sigma[r]`` (exact, as in
    :func:`~ddm.library.market.gbm.gbm`). The regime moves first: step t uses the regime after t
    transitions from ``start``.

    >>> import jax, jax.numpy as jnp
    >>> P = jnp.array([[0.99, 0.01], [0.05, 0.95]])
    >>> s, r = regime(jax.random.key(0), 100.0, jnp.zeros(2), jnp.array([0.1, 0.4]), P, 0,
    ...               1 / 365, 30, 10)
    >>> s.shape, r.dtype
    ((10, 31), dtype('int32'))
    """
    f = jnp.result_type(float)
    s0 = jnp.asarray(s0, f)
    mu, sigma = jnp.asarray(mu, f), jnp.asarray(sigma, f)
    logits = jnp.log(jnp.asarray(transition, f))

    def step(state, k):
        log_s, r = state
        kr, kz = jax.random.split(k)
        r = jax.random.categorical(kr, logits[r]).astype(jnp.int32)
        log_s = (
            log_s
            + (mu[r] - 0.5 * sigma[r] ** 2) * dt
            + sigma[r] * jnp.sqrt(dt) * jax.random.normal(kz, (), f)
        )
        return (log_s, r), (log_s, r)

    r0 = jnp.asarray(start, jnp.int32)
    _, (logs, rs) = simulate(step, (jnp.log(s0), r0), key, n_paths, n_steps)
    return with_start(s0, jnp.exp(logs)), with_start(r0, rs)
