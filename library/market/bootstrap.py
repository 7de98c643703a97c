"""Historical replay: paths built from blocks of real returns, and the research plan's hybrid
fidelity mixing of replayed and synthetic steps by regime."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def block_bootstrap(key, log_returns, n_steps: int, n_paths: int, block: int):
    """Log-return paths ``[n_paths, n_steps, A]`` glued from blocks of ``block`` consecutive
    rows of ``log_returns [T, A]`` (moving-block bootstrap: start dates uniform over the
    ``T − block + 1`` possible ones, blocks independent). Keeps the short-range dependence and
    the cross-section of real days within a block; path ``i`` uses ``fold_in(key, i)``.

    >>> import jax, jax.numpy as jnp
    >>> r = jnp.arange(20.0).reshape(10, 2)
    >>> block_bootstrap(jax.random.key(0), r, 6, 3, 3).shape
    (3, 6, 2)
    """
    log_returns = jnp.asarray(log_returns)
    if log_returns.ndim == 1:
        log_returns = log_returns[:, None]
    T = log_returns.shape[0]
    if not 1 <= block <= T:
        raise ValueError(f"block must be between 1 and the {T} rows of data, got {block}")
    n_blocks = -(-n_steps // block)

    def one(i):
        starts = jax.random.randint(jax.random.fold_in(key, i), (n_blocks,), 0, T - block + 1)
        rows = (starts[:, None] + jnp.arange(block)[None, :]).reshape(-1)[:n_steps]
        return log_returns[rows]

    return jax.vmap(one)(jnp.arange(n_paths))


def prices_from_log_returns(s0, log_returns):
    """``[n_paths, n_steps + 1, A]`` prices starting at ``s0`` from ``[n_paths, n_steps, A]``."""
    logs = jnp.log(jnp.asarray(s0, log_returns.dtype)) + jnp.cumsum(log_returns, axis=1)
    start = jnp.broadcast_to(jnp.log(jnp.asarray(s0, log_returns.dtype)), logs[:, :1].shape)
    return jnp.exp(jnp.concatenate([start, logs], axis=1))


def hybrid(regimes, replayed, synthetic, use_history):
    """Per step, the replayed or the synthetic log-return, as the regime of that step says:
    ``use_history[r]`` (bool per regime) picks history. ``regimes [P, N]`` (int), returns
    ``[P, N, A]``; gradients reach the synthetic steps that are used."""
    pick = jnp.asarray(use_history)[regimes][..., None]
    return jnp.where(pick, replayed, synthetic)
