"""Where a non-finite loss comes from: the first node whose value holds NaN or Inf.

>>> import ddm, jax.numpy as jnp
>>> prog = ddm.loads("input x: f32\\nnode r = log(x)\\nnode y = r * 2\\noutput y\\n"
...                  "loss = mean(y)")
>>> nodes(prog.product, {}, {"x": jnp.array([1.0, -1.0])})
['r', 'y', 'loss']
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ddm.compiler.product import Product
from ddm.dsl.diagnostics import DataDiagnostic, DdmError


def nodes(product: Product, params, batch: Mapping[str, Any]) -> list[str]:
    """Names of the nodes whose values on ``batch`` hold NaN or Inf, in program order, then
    ``"loss"`` if the loss is not finite."""
    g = product.graph
    named = sorted(g.nodes.items(), key=lambda kv: kv[1])
    roots = tuple([vid for _, vid in named] + ([g.loss] if g.loss is not None else []))
    values, _ = product.values(params, batch, roots)

    def bad(a) -> bool:
        a = np.asarray(a)
        return a.dtype.kind in "fc" and not np.all(np.isfinite(a))

    out = [name for name, vid in named if bad(values[vid])]
    if g.loss is not None and bad(values[g.loss]):
        out.append("loss")
    return out


def training_stop(product: Product, params, batch, step: int, last_checkpoint) -> DdmError:
    """The stop for a non-finite loss or gradient at ``step``, located at the first node whose
    value on that step's batch is NaN or Inf (``params``: the last good ones;
    ``last_checkpoint``: ``[(step, path)]`` of the newest checkpoint, or empty)."""
    names = nodes(product, params, batch)
    g = product.graph
    saved = (
        f"; the last checkpoint is {last_checkpoint[0][1]} (step {last_checkpoint[0][0]})"
        if last_checkpoint
        else ""
    )
    where = None
    if names:
        first = names[0]
        what = (
            f"the loss became non-finite at step {step}: the first non-finite value is "
            f"node '{first}'"
            if first != "loss"
            else f"the loss became non-finite at step {step}: every node before it is finite"
        )
        vid = g.nodes[first] if first != "loss" else g.loss
        assert vid is not None  # a non-finite loss is only reported when there is one
        where = g.values[vid].span
    else:
        what = (
            f"the gradient became non-finite at step {step} (every forward value is "
            "finite: the NaN arises in the backward pass)"
        )
    err = DataDiagnostic(
        where,
        f"{what}; training stopped with the params of step {step - 1}{saved}",
        hint="lower the learning rate, set clip_norm, or guard the operation "
        "(log of a non-positive value, division by zero)",
    )
    return product.locate(err)
