"""Order statistics: ``sort``, ``argsort``, ``rank``, ``quantile`` and ``soft_rank``.

What they mean follows NumPy and SciPy, so a result can be checked against them:

- ``sort(x, axis)`` is ``np.sort`` (``descending=true`` reverses it). Its values are a
  permutation of ``x``'s, so the gradient flows: each sorted entry's adjoint goes back to the
  entry it came from.
- ``argsort(x, axis)`` is ``np.argsort(x, kind="stable")``: ties keep their order of
  appearance (also when ``descending``). ``i32``, no gradient.
- ``rank(x, axis, method)`` is ``scipy.stats.rankdata(x, method, axis)``: **1-based**, ties
  ``"average"`` by default (a float), or ``"min"``, ``"max"``, ``"dense"``, ``"ordinal"``
  (``i32``). ``rank(x, method="ordinal") - 1`` is ``argsort(argsort(x))``, the 0-based
  position in sorted order. Piecewise constant in ``x``: no gradient.
- ``quantile(x, q, axis)`` is ``np.quantile(x, q, axis)`` with its default linear
  interpolation: with ``x`` sorted, ``(n − 1)·q = i + f`` gives ``x₍ᵢ₎ + f·(x₍ᵢ₊₁₎ − x₍ᵢ₎)``.
  A literal level ``q`` reduces ``axis``; a literal list of levels prepends an axis of their
  count. Differentiable in ``x`` (the two neighbours' weights are ``1 − f`` and ``f``).
- ``soft_rank(x, temperature, axis)``, the relaxation of ``rank``: ``½ + Σⱼ σ((xᵢ − xⱼ)/τ)``.
  As ``τ → 0`` it tends to ``rank(x)``'s average ranks (a tie's pairs count ½ each); it costs
  ``n²`` along the axis.

NaNs sort last, as in NumPy. Inside ``loss`` and ``metric`` a per-sample value is its batch
(``f32[batch]``), so ``quantile(pnl, 0.05)`` is the batch's 5 % quantile.

>>> import jax.numpy as jnp
>>> _rank(jnp.array([0.3, -1.0, 0.3, 2.0])).tolist()
[2.5, 1.0, 2.5, 4.0]
>>> float(_quantile(jnp.array([1.0, 2.0, 3.0, 4.0]), 0.25))
1.75
"""

from __future__ import annotations

from ddm.library.axes import normalize_axes, normalize_axis
from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, NoGrad, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, promote

RANK_METHODS = ("average", "min", "max", "dense", "ordinal")


def _along_axis(x: TensorType, name: str, axis: int) -> None:
    """``x`` has numbers and an ``axis`` to order along."""
    if x.ndim == 0:
        raise ShapeError(
            f"{name} orders along an axis, got a scalar {x}",
            arg=0,
            hint="give it a vector, e.g. f32[N]; in loss and metric a per-sample scalar is "
            "its batch",
        )
    if x.dtype == "bool":
        raise DtypeError(f"{name} expects numbers, got {x}", arg=0, hint="cast with f32(...) first")
    normalize_axis(axis, x.ndim, name)


# --- sort, argsort, rank -------------------------------------------------------------------------


def _sort_rule(types, static):
    (x,) = types
    _along_axis(x, "sort", static["axis"])
    return TensorType(x.dtype, x.shape)


def _sort(x, axis=-1, descending=False):
    """``x: [..., N, ...]`` → the same shape, sorted along ``axis``."""
    return jnp.sort(x, axis=axis, descending=descending)


def _argsort_rule(types, static):
    (x,) = types
    _along_axis(x, "argsort", static["axis"])
    return TensorType("i32", x.shape)


def _argsort(x, axis=-1, descending=False):
    """``x: [..., N, ...]`` → ``i32`` indices that sort it along ``axis`` (stable)."""
    return jnp.argsort(x, axis=axis, stable=True, descending=descending).astype(jnp.int32)


def _rank_rule(types, static):
    (x,) = types
    _along_axis(x, "rank", static["axis"])
    if static["method"] == "average":
        return TensorType(x.dtype if x.is_float else "f32", x.shape)
    return TensorType("i32", x.shape)


def _rank(x, axis=-1, method="average"):
    """1-based ranks along ``axis``, ties resolved by ``method`` as in scipy's rankdata."""
    x = jnp.asarray(x)
    axis = axis % x.ndim
    order = jnp.argsort(x, axis=axis, stable=True)
    inverse = jnp.argsort(order, axis=axis)  # each entry's 0-based position in sorted order
    if method == "ordinal":
        return (inverse + 1).astype(jnp.int32)
    # In sorted order, runs of equal values share a rank: a run starts where the value changes
    # and ends where the next one does. NaN != NaN, so each NaN is its own run (last).
    s = jnp.take_along_axis(x, order, axis=axis)
    n = x.shape[axis]
    pos = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)

    def cut(a, lo, hi):
        return jax.lax.slice_in_dim(a, lo, hi, axis=axis)

    edge = jnp.ones_like(cut(s, 0, 1), dtype=bool)
    changes = cut(s, 1, n) != cut(s, 0, n - 1)
    starts = jnp.concatenate([edge, changes], axis=axis)
    ends = jnp.concatenate([changes, edge], axis=axis)
    if method == "dense":
        sorted_rank = jnp.cumsum(starts.astype(jnp.int32), axis=axis)
    else:  # the first and the last position of each entry's run
        lo = jax.lax.cummax(jnp.where(starts, pos, 0), axis=axis)
        hi = jax.lax.cummin(jnp.where(ends, pos, n - 1), axis=axis, reverse=True)
        sorted_rank = {"min": lo + 1, "max": hi + 1, "average": (lo + hi) / 2 + 1}[method]
    out = jnp.take_along_axis(sorted_rank, inverse, axis=axis)
    if method == "average":
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32
        return out.astype(dtype)
    return out.astype(jnp.int32)


# --- quantile ------------------------------------------------------------------------------------


def _quantile_rule(types, static):
    (x,) = types
    if not x.is_float:
        raise DtypeError(
            f"quantile expects floats, got {x}", arg=0, hint="cast with f32(...) first"
        )
    axes = normalize_axes(static["axis"], x.ndim, "quantile")
    if static["keepdims"]:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    q = static["q"]
    levels = (len(q),) if isinstance(q, tuple) else ()
    return TensorType(x.dtype, levels + shape)


def _quantile(x, q, axis=None, keepdims=False):
    """``np.quantile(x, q, axis, keepdims)``, linear interpolation: ``q`` a level in [0, 1]
    (``axis`` reduced) or a tuple of levels (an axis of ``len(q)`` prepended)."""
    x = jnp.asarray(x)
    axis = tuple(axis) if isinstance(axis, (list, tuple)) else axis
    # a scalar has no axis to keep (jnp.quantile would make it [1]; np.quantile does not)
    keepdims = keepdims and x.ndim > 0
    return jnp.quantile(x, jnp.asarray(q, x.dtype), axis=axis, keepdims=keepdims)


# --- the relaxation: soft_rank -------------------------------------------------------------------


def _soft_rank_rule(types, static):
    x, tau = types
    _along_axis(x, "soft_rank", static["axis"])
    if tau.dtype == "bool":
        raise DtypeError(f"soft_rank's temperature must be a number, got {tau}", arg=1)
    if tau.ndim != 0:
        raise ShapeError(
            f"soft_rank's temperature must be a scalar, got {tau}",
            arg=1,
            hint="e.g. param tau: f32 = 0.1 positive",
        )
    dtype = promote(TensorType(x.dtype, ()), tau, "divide")
    return TensorType(dtype if dtype in ("f32", "f64") else "f32", x.shape)


def _soft_rank(x, temperature=1.0, axis=-1):
    """``½ + Σⱼ σ((xᵢ − xⱼ) / τ)`` along ``axis``: pairs ``[..., N, N]`` summed over ``j``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    tau = jnp.asarray(temperature)
    if not jnp.issubdtype(tau.dtype, jnp.floating):
        tau = tau.astype(x.dtype)
    z = jnp.moveaxis(x, axis, -1)
    pairs = jax.nn.sigmoid((z[..., :, None] - z[..., None, :]) / tau)
    return jnp.moveaxis(0.5 + jnp.sum(pairs, axis=-1), -1, axis)


ALONG = (Arg("x"), Arg("axis", "int", -1))

OPS = (
    Op(
        "sort",
        ALONG + (Arg("descending", "bool", False),),
        _sort_rule,
        _sort,
        "x sorted along axis (np.sort; descending=true from the largest). The values are "
        "x's, permuted: the gradient flows back to the entries they came from.",
        family="order",
    ),
    Op(
        "argsort",
        ALONG + (Arg("descending", "bool", False),),
        _argsort_rule,
        _argsort,
        "i32 indices that sort x along axis (np.argsort, stable: ties keep their order; "
        "descending=true from the largest). No gradient.",
        family="order",
        no_grad=NoGrad(("x",), "order"),
    ),
    Op(
        "rank",
        ALONG + (Arg("method", "str", "average", choices=RANK_METHODS),),
        _rank_rule,
        _rank,
        "1-based ranks along axis, as scipy.stats.rankdata: ties share their average rank "
        '(a float), or method="min", "max", "dense", "ordinal" (i32). rank(x, '
        'method="ordinal") - 1 is argsort(argsort(x)). No gradient: train soft_rank.',
        family="order",
        no_grad=NoGrad(("x",), "order"),
    ),
    Op(
        "quantile",
        (
            Arg("x"),
            Arg("q", "probs"),
            Arg("axis", "axes", None),
            Arg("keepdims", "bool", False),
        ),
        _quantile_rule,
        _quantile,
        "np.quantile with linear interpolation: q a literal level in [0, 1] reduces axis (all "
        "axes when omitted); a literal list of levels prepends an axis of their count. "
        "Differentiable in x. In loss/metric, quantile(pnl, 0.05) is the batch's 5 % quantile.",
        family="quantile",
    ),
    Op(
        "soft_rank",
        (Arg("x"), Arg("temperature", "tensor", 1.0), Arg("axis", "int", -1)),
        _soft_rank_rule,
        _soft_rank,
        "The relaxation of rank: ½ + Σⱼ sigmoid((xᵢ − xⱼ) / temperature) along axis, which "
        "tends to rank(x)'s average ranks as temperature → 0. temperature (> 0) is a scalar "
        "and may be a positive param; costs n² along the axis.",
        family="soft_rank",
        extra={"nonnegative": ("temperature",)},
    ),
)
