"""Lowering a sequential node: its body becomes the step function of one ``jax.lax.scan``.

The step evaluates the body's values (only those the new carry needs) with the placeholders
bound to the step index and the carry, and the captured outer values taken from the enclosing
environment — closed over, so their gradients flow through ``lax.scan``'s own rule. Declarative
nodes inside the body return their solver infos per step; they come out stacked ``[N, ...]``,
by the nested node's id, beside the scan's value.
Random ops in the body draw from ``fold_in(fold_in(key, scan id), t)``: fresh noise per step.
"""

from __future__ import annotations

from ddm.compiler.binding import resolve as resolve_dim
from ddm.library.lazy import jax, jnp
from ddm.library.precision import resolve_dtype


def scan_node(low, v, env, params, inputs, dims, batched, key=None):
    """``(stacked carries, infos)`` of scan node ``v`` for one sample: the carries ``[N, …]``
    and, by value id, the solver infos of the declarative nodes in its body, stacked over the
    steps (``key``: the sample's JAX key for random ops in the body, or ``None``)."""
    spec = v.attr("scan")
    values = low.graph.values
    steps = resolve_dim(spec.length, dims, v.span)
    shape = tuple(resolve_dim(d, dims, v.span) for d in spec.carry_type.shape)
    dtype = resolve_dtype(spec.carry_type.dtype, low.x64)
    init = jnp.broadcast_to(jnp.asarray(env[v.inputs[0]], dtype), shape)
    outer = {i: env[i] for i in v.inputs[1:]}
    body = range(*spec.body)
    need = _needed(values, spec, body)
    body_key = None if key is None else jax.random.fold_in(key, v.id)

    def step(carry, t):
        local = dict(outer)
        local[spec.index] = t
        local[spec.carry] = carry
        step_key = None if body_key is None else jax.random.fold_in(body_key, t)
        infos = low.run(need, local, params, inputs, dims, batched, step_key)
        new = jnp.broadcast_to(jnp.asarray(local[spec.result], dtype), shape)
        return new, (new, infos)

    _, (stacked, infos) = jax.lax.scan(step, init, jnp.arange(steps, dtype=jnp.int32))
    return stacked, infos


def _needed(values, spec, body) -> list[int]:
    """Body values the new carry depends on, in order (the placeholders are bound per step)."""
    need, stack = set(), [spec.result]
    while stack:
        i = stack.pop()
        if i in need or i not in body or i in (spec.index, spec.carry):
            continue
        need.add(i)
        stack.extend(values[i].inputs)
    return sorted(need)
