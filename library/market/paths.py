"""The loop every model shares: one key per path, one per step, ``scan`` over time."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax


def simulate(step: Callable, state0, key, n_paths: int, n_steps: int):
    """Stack ``step``'s outputs over ``n_steps`` steps for each of ``n_paths`` paths.

    ``step(state, key_t) -> (state, out)``; returns ``(final_states, outs)`` with a leading
    path axis and, for ``outs``, a time axis after it.
    """

    def one_path(i):
        path_key = jax.random.fold_in(key, i)

        def body(state, t):
            return step(state, jax.random.fold_in(path_key, t))

        return lax.scan(body, state0, jnp.arange(n_steps))

    return jax.vmap(one_path)(jnp.arange(n_paths))


def with_start(start, steps):
    """``[paths, n_steps, …]`` values after each step, with the start value prepended."""
    first = jnp.broadcast_to(start, (steps.shape[0],) + jnp.shape(start))
    return jnp.concatenate([first[:, None], steps], axis=1)
