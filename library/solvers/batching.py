"""Loop carries batched from the start, for tracing time under ``vmap``.

JAX batches a ``lax.while_loop`` by finding which carries are batched: a pass over the loop's
body per promotion until nothing changes, then the batched body once more. A carry that starts
unbatched — an iteration counter, a mask of zeros, a status set before any data is read —
costs a further pass, and nested loops multiply the passes (an interior point's iterations
inside its certifying trips). Tied to the batched data, every leaf is batched at once.
The solvers call :func:`batched_like` only on loops whose condition reads per-instance values
(a status), which are run with a batched condition anyway: nothing changes at run time.

>>> import jax, jax.numpy as jnp
>>> batched_like((jnp.zeros((), jnp.int32), jnp.ones(2)), jnp.arange(3.0))[0]
Array(0, dtype=int32)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def batched_like(carry, data):
    """``carry`` unchanged, every leaf passed through a select on a value of ``data`` (both
    branches the leaf: XLA removes it), so that under ``vmap`` each leaf is batched when
    ``data`` is. Measured: tracing a vmapped long-only ``qp`` (n = 10, batch 1024) forward
    0.64 → 0.38 s, forward+backward 1.16 → 0.58 s; the metrics of examples/hedge_longonly.ddm
    (two such nodes among the rest) 1.36–1.56 → 1.23–1.37 s."""
    flat = jnp.ravel(data)
    if flat.size == 0:
        return carry
    first = flat[0]
    tie = first == first  # False only at a NaN, and either branch is the leaf
    return jax.tree_util.tree_map(lambda a: jnp.where(tie, a, a), carry)
