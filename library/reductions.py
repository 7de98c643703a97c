"""Reductions with an ``axis`` (int, list of ints, or omitted for all) and ``keepdims``;
softmax and friends along one axis."""

from __future__ import annotations

from ddm.library.axes import normalize_axes, normalize_axis
from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, Op
from ddm.library.types import DtypeError, ShapeError, TensorType

AXES = (Arg("x"), Arg("axis", "axes", None), Arg("keepdims", "bool", False))


def reduce_rule(name, float_out):
    def rule(types, static):
        (x,) = types
        if x.dtype == "bool" and name not in ("sum",):
            raise DtypeError(
                f"{name} expects numbers, got {x}", arg=0, hint="cast with f32(...) first"
            )
        axes = normalize_axes(static["axis"], x.ndim, name)
        if static["keepdims"]:
            shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
        else:
            shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
        dtype = x.dtype
        if float_out and not x.is_float:
            dtype = "f32"
        if dtype == "bool":
            dtype = "i32"
        return TensorType(dtype, shape)

    return rule


def _reduce(name, fn, doc, float_out=False):
    def impl(x, axis=None, keepdims=False):
        return fn(x, axis=None if axis is None else _tup(axis), keepdims=keepdims)

    return Op(name, AXES, reduce_rule(name, float_out), impl, doc, family="reduce")


def _tup(axis):
    return tuple(axis) if isinstance(axis, (list, tuple)) else axis


def _var_rule(types, static):
    return reduce_rule("var", True)(types, static)


def _var(x, axis=None, keepdims=False, ddof=0):
    return jnp.var(x, axis=None if axis is None else _tup(axis), keepdims=keepdims, ddof=ddof)


def _std(x, axis=None, keepdims=False, ddof=0):
    return jnp.std(x, axis=None if axis is None else _tup(axis), keepdims=keepdims, ddof=ddof)


def _along_rule(name):
    def rule(types, static):
        (x,) = types
        if x.ndim == 0:
            raise ShapeError(f"{name} needs at least one axis, got a scalar {x}", arg=0)
        normalize_axis(static["axis"], x.ndim, name)
        if not x.is_float:
            raise DtypeError(f"{name} expects floats, got {x}", arg=0)
        return x

    return rule


VAR_ARGS = AXES + (Arg("ddof", "int", 0),)

OPS = (
    _reduce(
        "sum",
        lambda x, axis, keepdims: jnp.sum(x, axis=axis, keepdims=keepdims),
        "Sum over axis (all axes when omitted).",
    ),
    _reduce(
        "mean",
        lambda x, axis, keepdims: jnp.mean(x, axis=axis, keepdims=keepdims),
        "Arithmetic mean over axis.",
        float_out=True,
    ),
    _reduce(
        "max",
        lambda x, axis, keepdims: jnp.max(x, axis=axis, keepdims=keepdims),
        "Maximum over axis.",
    ),
    _reduce(
        "min",
        lambda x, axis, keepdims: jnp.min(x, axis=axis, keepdims=keepdims),
        "Minimum over axis.",
    ),
    _reduce(
        "prod",
        lambda x, axis, keepdims: jnp.prod(x, axis=axis, keepdims=keepdims),
        "Product over axis.",
    ),
    _reduce(
        "logsumexp",
        lambda x, axis, keepdims: jax.scipy.special.logsumexp(x, axis=axis, keepdims=keepdims),
        "log(sum(exp(x))) over axis, overflow-safe.",
        float_out=True,
    ),
    Op(
        "var",
        VAR_ARGS,
        _var_rule,
        _var,
        "Variance over axis (ddof=0: population).",
        family="reduce",
    ),
    Op(
        "std",
        VAR_ARGS,
        _var_rule,
        _std,
        "Standard deviation over axis (ddof=0: population).",
        family="reduce",
    ),
    Op(
        "softmax",
        (Arg("x"), Arg("axis", "int", -1)),
        _along_rule("softmax"),
        lambda x, axis=-1: jax.nn.softmax(x, axis=axis),
        "exp(x) / sum(exp(x)) along axis.",
        family="along",
    ),
    Op(
        "log_softmax",
        (Arg("x"), Arg("axis", "int", -1)),
        _along_rule("log_softmax"),
        lambda x, axis=-1: jax.nn.log_softmax(x, axis=axis),
        "log(softmax(x)) along axis.",
        family="along",
    ),
    Op(
        "cumsum",
        (Arg("x"), Arg("axis", "int", -1)),
        _along_rule("cumsum"),
        lambda x, axis=-1: jnp.cumsum(x, axis=axis),
        "Running sum along axis.",
        family="along",
    ),
)
