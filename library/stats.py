"""Statistics of windows and features: covariance with shrinkage, z-scores."""

from __future__ import annotations

from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, broadcast_shapes


def _cov_rule(types, static):
    r, shrink = types
    if r.ndim != 2:
        raise ShapeError(f"cov takes a window of observations [T, N], got {r}", arg=0)
    if not r.is_float:
        raise DtypeError(f"cov expects floats, got {r}", arg=0)
    if shrink.ndim != 0:
        raise ShapeError(f"cov's shrink must be a scalar, got {shrink}", arg=1)
    return TensorType(r.dtype, (r.shape[1], r.shape[1]))


def _cov(r, shrink):
    # Sample covariance (ddof = 1) shrunk towards (tr S / N)·I: S_δ = (1 − δ) S + δ (tr S / N) I.
    t, n = r.shape
    centred = r - jnp.mean(r, axis=0, keepdims=True)
    s = centred.T @ centred / (t - 1)
    target = jnp.trace(s) / n * jnp.eye(n, dtype=s.dtype)
    return (1 - shrink) * s + shrink * target


def _zscore_rule(types, static):
    x, mean, std = types
    if not x.is_float:
        raise DtypeError(f"zscore expects floats, got {x}", arg=0)
    if static["stats"] == "batch":
        if mean is not None or std is not None:
            raise ShapeError(
                'zscore(stats="batch") computes its own mean and std; drop mean= and std=',
                arg=1 if mean is not None else 2,
            )
        return x
    if mean is None or std is None:
        raise ShapeError(
            'zscore needs fixed statistics mean= and std=, or stats="batch" to use the batch\'s',
            arg=None,
            hint='zscore(x, mean=[...], std=[...]) or zscore(x, stats="batch")',
        )
    for i, t in ((1, mean), (2, std)):
        if broadcast_shapes(x.shape, t.shape) != tuple(x.shape):
            raise ShapeError(
                f"zscore's {('mean', 'std')[i - 1]} {t} does not broadcast to {x}", arg=i
            )
    return x


def _zscore(x, mean=None, std=None, stats="fixed", eps=1e-8):
    if stats == "batch":
        # Per-sample code under vmap(axis_name="batch"): collectives see the whole batch.
        mean = jax.lax.pmean(x, "batch")
        std = jnp.sqrt(jax.lax.pmean(jnp.square(x - mean), "batch"))
    # fixed statistics: the shape rule has required both mean= and std=
    assert mean is not None and std is not None
    return (x - mean) / (std + eps)


OPS = (
    Op(
        "cov",
        (Arg("R"), Arg("shrink", "tensor", 0.0)),
        _cov_rule,
        _cov,
        "Sample covariance (ddof = 1) of a window R: [T, N] → [N, N], shrunk towards "
        "(tr S / N)·I by shrink ∈ [0, 1] (may be a param).",
        family="cov",
    ),
    Op(
        "zscore",
        (
            Arg("x"),
            Arg("mean", "tensor", None),
            Arg("std", "tensor", None),
            Arg("stats", "str", "fixed", choices=("fixed", "batch")),
            Arg("eps", "float", 1e-8),
        ),
        _zscore_rule,
        _zscore,
        "(x − mean) / (std + eps). Fixed statistics: zscore(x, mean=m, std=s). Batch "
        'statistics: zscore(x, stats="batch") (needs a batch: apply_batch, loss, --run).',
        family="zscore",
        extra={"needs_batch": lambda static: static.get("stats") == "batch"},
    ),
)
