"""Merton jump diffusion."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddm.library.market.paths import simulate, with_start


def merton(key, s0, mu, sigma, lam, jump_mean, jump_std, dt: float, n_steps: int, n_paths: int):
    """Prices ``[n_paths, n_steps + 1]`` under dS/S = (μ − λk) dt + σ dW + (J − 1) dN, N a
    Poisson process of intensity λ, log J ~ N(m, s²), k = E[J − 1] = exp(m + s²/2) − 1, so that
    E[S_t] = S₀e^{μt}.

    Each step draws the number of jumps n ~ Poisson(λdt) and adds their total log size
    n·m + √n·s·z (exact for a sum of n normals); the diffusion step is exact too. Prices are
    differentiable in μ, σ, m, s and S₀; λ enters through the compensator only (the jump
    counts are integers).

    >>> import jax
    >>> merton(jax.random.key(0), 100.0, 0.0, 0.2, 1.0, -0.1, 0.15, 1 / 365, 30, 10).shape
    (10, 31)
    """
    f = jnp.result_type(float)
    s0, mu, sigma, lam, m, s = (
        jnp.asarray(a, f) for a in (s0, mu, sigma, lam, jump_mean, jump_std)
    )
    k = jnp.exp(m + 0.5 * s**2) - 1.0
    drift = (mu - lam * k - 0.5 * sigma**2) * dt
    vol = sigma * jnp.sqrt(dt)
    rate = jax.lax.stop_gradient(lam * dt)

    def step(log_s, key_t):
        kz, kn, kj = jax.random.split(key_t, 3)
        n = jax.random.poisson(kn, rate).astype(f)
        jump = n * m + jnp.sqrt(n) * s * jax.random.normal(kj, (), f)
        log_s = log_s + drift + vol * jax.random.normal(kz, (), f) + jump
        return log_s, log_s

    _, logs = simulate(step, jnp.log(s0), key, n_paths, n_steps)
    return with_start(s0, jnp.exp(logs))
