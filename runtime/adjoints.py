"""The loss's adjoint at the program's values: ‖∂L/∂value‖ and its statistics, per value.

A value's adjoint is measured with a *tap*: zeros added to the value (the compiled product's
``values(..., taps=…)``), whose gradient is exactly ∂L/∂value — one backward pass gives every
value's adjoint at once. What ``ddmc render --grads`` colours the backward edges with, and what
``diagnostics = "full"`` logs per node.

>>> import ddm, jax.numpy as jnp
>>> prog = ddm.loads("input x: f32\\nparam a: f32 = 3.0\\nnode y = a * x\\noutput y\\n"
...                  "loss = mean(y ** 2)")
>>> norms = grad_norms(prog.product, {"a": jnp.float32(3.0)}, {"x": jnp.array([1.0, 1.0])})
>>> {prog.node_label(i): round(n, 3) for i, n in norms.items() if prog.graph.values[i].name}
{'y': 4.243}
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ddm.compiler.ir import gradient_path
from ddm.compiler.product import Product
from ddm.dsl.diagnostics import DataDiagnostic
from ddm.library.lazy import jax, jnp


def ids(product: Product) -> list[int]:
    """The values measured: on the gradient path, outside scan bodies and problem bodies,
    neither static nor weak (values inside a scan's body are measured through the scan, those
    of an argmin's problem through its solution)."""
    g = product.graph
    inside = g.in_bodies()
    return sorted(
        i
        for i in gradient_path(g)
        if i not in inside
        and g.values[i].stage != "static"
        and g.values[i].op != "lift"
        and not g.values[i].type.weak
    )


def zero_taps(product: Product, params, batch, vids, key=None) -> dict:
    """Zeros shaped like the values ``vids`` over ``batch``: taps whose gradient is the loss's
    adjoint there. Only their shapes are traced; no forward pass runs for them."""
    vids = tuple(vids)
    shapes = jax.eval_shape(lambda: product.values(params, batch, vids, None, key)[0])
    return {i: jnp.zeros(shapes[i].shape, shapes[i].dtype) for i in vids}


def stats(product: Product, params, batch, key=None) -> dict[int, dict[str, Any]]:
    """Per value of :func:`ids` (traceable), statistics of g = ∂loss/∂value over the batch:
    ``norm``, the ``mean``, ``std`` and ``sparsity`` (share of entries ≤ 1e-6 of the largest)
    of its entries and, for a per-sample value, ``snr`` across the samples:
    ‖mean gᵢ‖² / mean ‖gᵢ − ḡ‖² (how much the samples agree on the direction)."""
    g = product.graph
    if g.loss is None:
        raise DataDiagnostic(None, f"{g.file} declares no loss")
    vids = ids(product)
    zeros = zero_taps(product, params, batch, vids, key)

    def loss(taps):
        return product.values(params, batch, (g.loss,), taps, key)[0][g.loss]

    grads = jax.grad(loss)(zeros)
    out = {}
    for i in vids:
        flat = jnp.ravel(grads[i])
        peak = jnp.max(jnp.abs(flat)) if flat.size else 0.0
        entry = {
            "norm": jnp.sqrt(jnp.sum(jnp.square(flat))),
            "mean": jnp.mean(flat),
            "std": jnp.std(flat),
            "sparsity": jnp.mean(jnp.abs(flat) <= 1e-6 * peak),
        }
        if g.values[i].stage == "sample" and grads[i].ndim >= 1 and grads[i].shape[0] > 1:
            per = jnp.reshape(grads[i], (grads[i].shape[0], -1))
            centre = jnp.mean(per, axis=0)
            noise = jnp.mean(jnp.sum((per - centre) ** 2, axis=1))
            entry["snr"] = jnp.sum(centre**2) / jnp.maximum(noise, 1e-30)
        out[i] = entry
    return out


def grad_norms(product: Product, params, batch: Mapping[str, Any]) -> dict[int, float]:
    """‖∂loss/∂value‖ over ``batch`` for every value of :func:`ids`, by value id. Sample
    values count over the whole batch: the norm of the ``[B, …]`` adjoint."""
    norms = jax.jit(lambda p, b: {i: s["norm"] for i, s in stats(product, p, b).items()})(
        params, batch
    )
    return {i: float(np.asarray(n, np.float64)) for i, n in norms.items()}
