"""Hard choices: ``argmax`` picks the index of the largest entry, ``one_hot`` encodes an index.

Together they are the decision rule ``one_hot(argmax(scores), K)``: pick a regime, an action, a
class. Both are piecewise constant in their arguments, so no gradient flows back through them
(``no_grad``; the gradient-flow lint of ``ddmc check`` names them). What trains is their
relaxation, ``gumbel_softmax(scores, temperature)`` or ``softmax(scores)``
(:mod:`ddm.library.relaxations`).

>>> import jax.numpy as jnp
>>> int(_argmax(jnp.array([0.1, 2.0, -1.0])))
1
>>> _one_hot(jnp.array(1), 3).tolist()
[0.0, 1.0, 0.0]
"""

from __future__ import annotations

from ddm.library.axes import normalize_axis
from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, NoGrad, Op
from ddm.library.types import DtypeError, ShapeError, TensorType


def _argmax_rule(types, static):
    (x,) = types
    if x.ndim == 0:
        raise ShapeError(
            f"argmax picks along an axis, got a scalar {x}",
            arg=0,
            hint="give one score per choice, e.g. f32[K]",
        )
    if x.dtype == "bool":
        raise DtypeError(f"argmax expects numbers, got {x}", arg=0, hint="cast with f32(...) first")
    axis = normalize_axis(static["axis"], x.ndim, "argmax")
    return TensorType("i32", tuple(d for i, d in enumerate(x.shape) if i != axis))


def _argmax(x, axis=-1):
    """``x: [..., K, ...]`` → the index of the largest entry along ``axis`` (the first on
    ties), that axis dropped."""
    return jnp.argmax(x, axis=axis).astype(jnp.int32)


def _one_hot_rule(types, static):
    (i,) = types
    if i.dtype != "i32":
        raise DtypeError(
            f"one_hot encodes integer indices, got {i}",
            arg=0,
            hint="an index comes from argmax(...) or i32(...)",
        )
    k = static["K"]
    if isinstance(k, int) and k < 1:
        raise ShapeError(f"one_hot needs at least one class, got K = {k}")
    return TensorType("f32", tuple(i.shape) + (k,))


def _one_hot(i, K):
    """``i: [...]`` integer indices → ``[..., K]``: 1.0 at each index, 0.0 elsewhere (a row
    of zeros for an index outside 0 … K − 1)."""
    return jax.nn.one_hot(i, K)


OPS = (
    Op(
        "argmax",
        (Arg("x"), Arg("axis", "int", -1)),
        _argmax_rule,
        _argmax,
        "Index (i32) of the largest entry along axis (the first on ties), that axis dropped: "
        "a hard decision rule, no gradient. Train its relaxation: gumbel_softmax(x, "
        "temperature) or softmax(x).",
        family="argmax",
        no_grad=NoGrad(("x",), "decision"),
    ),
    Op(
        "one_hot",
        (Arg("i"), Arg("K", "dim")),
        _one_hot_rule,
        _one_hot,
        "i: [...] (i32) → f32[..., K], 1.0 at each index and 0.0 elsewhere (zeros for an "
        "index outside 0 … K − 1): one_hot(argmax(scores), K) is a hard choice, no gradient.",
        family="one_hot",
        no_grad=NoGrad(("i",), "decision"),
    ),
)
