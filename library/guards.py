"""Guardrails' operations: how far a decision breaks a hard limit, and how it is brought back.

A ``guard`` (docs/language.md § Guardrails) compiles to these: :func:`guard_excess` measures a
limit ``lhs <= rhs`` (the largest ``lhs − rhs`` over its elements, > 0 when broken), the
projections put the decision on the limit's boundary (the nearest point of the allowed set in
the Euclidean norm) and :func:`guard_reject` replaces a breaking decision by its fallback.

>>> import jax.numpy as jnp
>>> float(_excess(jnp.array([0.5, 1.5]), 1.0))
0.5
>>> [float(x) + 0.0 for x in _project_l1(jnp.array([3.0, -1.0]), 2.0)]
[2.0, 0.0]
"""

from __future__ import annotations

from ddm.library.lazy import jnp
from ddm.library.op import Arg, NoGrad, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, broadcast_shapes

# a limit is met when its excess is at most this, relative to the bound: float32 projections
# land on the boundary up to rounding
TOLERANCE = 1e-5


def _float(t: TensorType, name: str, arg: int) -> None:
    if not t.is_float:
        raise DtypeError(
            f"{name} expects a float tensor, got {t}", arg=arg, hint="cast with f32(...) first"
        )


def _scalar(t: TensorType, name: str, what: str, arg: int) -> None:
    if t.shape:
        raise ShapeError(f"{name}'s {what} must be a scalar, got {t}", arg=arg)


def _excess_rule(types, static):
    lhs, rhs = types
    _float(lhs, "guard_excess", 0)
    if broadcast_shapes(lhs.shape, rhs.shape) is None:
        raise ShapeError(f"cannot compare {lhs} with {rhs}: shapes do not broadcast", arg=1)
    return TensorType(lhs.dtype, ())


def _excess(lhs, rhs):
    return jnp.max(jnp.asarray(lhs) - rhs)


def _violated(excess, bound):
    return excess > TOLERANCE * jnp.maximum(1.0, jnp.max(jnp.abs(bound)))


def _violated_rule(types, static):
    excess, bound = types
    _scalar(excess, "guard_violated", "excess", 0)
    return TensorType(excess.dtype if excess.is_float else "f32", ())


def _radius_rule(name):
    def rule(types, static):
        x, radius = types
        _float(x, name, 0)
        _scalar(radius, name, "radius", 1)
        return TensorType(x.dtype, x.shape)

    return rule


def _project_l1(x, radius):
    """The nearest point of {‖v‖₁ ≤ r}: soft-thresholding at the θ that makes ‖v‖₁ = r
    (the sort-based algorithm of Duchi et al., 2008); ``x`` itself when inside."""
    flat = jnp.ravel(x)
    a = jnp.abs(flat)
    u = jnp.sort(a)[::-1]
    k = jnp.arange(1, u.size + 1, dtype=u.dtype)
    css = jnp.cumsum(u)
    # the largest entry always stays in the support (ρ ≥ 1), so radius 0 gives θ = max|x|: 0
    fits = (u * k > css - radius) | (k == 1)
    rho = jnp.max(jnp.where(fits, k, 0))
    theta = (jnp.sum(jnp.where(k <= rho, u, 0)) - radius) / jnp.maximum(rho, 1)
    shrunk = jnp.sign(flat) * jnp.maximum(a - jnp.maximum(theta, 0), 0)
    inside = jnp.sum(a) <= radius
    return jnp.reshape(jnp.where(inside, flat, shrunk), jnp.shape(x))


def _project_l2(x, radius):
    sq = jnp.sum(x * x)
    # the norm's gradient is undefined at 0, where nothing is scaled: keep it finite there
    n = jnp.sqrt(jnp.where(sq > 0, sq, 1.0))
    return x * jnp.where(sq > 0, jnp.minimum(1.0, radius / n), 1.0)


def _keep_rule(types, static):
    (x,) = types
    _float(x, "keep_largest", 0)
    if static["k"] < 0:
        raise ShapeError(f"keep_largest keeps k ≥ 0 elements, got k = {static['k']}")
    return TensorType(x.dtype, x.shape)


def _keep_largest(x, k):
    """``x`` with all but its ``k`` largest-magnitude elements set to zero (ties: the first)."""
    flat = jnp.ravel(x)
    if k >= flat.size:
        return x
    order = jnp.argsort(-jnp.abs(flat), stable=True)
    keep = jnp.zeros(flat.shape, bool).at[order[:k]].set(True)
    return jnp.reshape(jnp.where(keep, flat, 0), jnp.shape(x))


def _nonzero_rule(types, static):
    (x,) = types
    _float(x, "nonzero", 0)
    return TensorType(x.dtype, ())


def _nonzero(x, tol):
    return jnp.sum((jnp.abs(x) > tol).astype(jnp.result_type(x)))


def _reject_rule(types, static):
    x, excess, bound, fallback = types
    _float(x, "guard_reject", 0)
    _scalar(excess, "guard_reject", "excess", 1)
    if broadcast_shapes(x.shape, fallback.shape) != tuple(x.shape):
        raise ShapeError(f"the fallback {fallback} does not broadcast to the decision {x}", arg=3)
    return TensorType(x.dtype, x.shape)


def _reject(x, excess, bound, fallback):
    return jnp.where(_violated(excess, bound), jnp.broadcast_to(fallback, jnp.shape(x)), x)


OPS = (
    Op(
        "guard_excess",
        (Arg("lhs"), Arg("rhs")),
        _excess_rule,
        _excess,
        "How far the limit lhs <= rhs is broken: max(lhs − rhs) over the elements (≤ 0 when "
        "it holds). What a guard measures before and after it acts.",
        family="guard",
    ),
    Op(
        "guard_violated",
        (Arg("excess"), Arg("bound")),
        _violated_rule,
        lambda e, b: _violated(e, b).astype(jnp.result_type(e)),
        "1.0 where a guard's excess passes the tolerance (1e-5 relative to the bound), else "
        "0.0: one check, counted in the compliance report.",
        family="guard",
        no_grad=NoGrad(("excess", "bound"), "guard"),
    ),
    Op(
        "project_l1",
        (Arg("x"), Arg("radius")),
        _radius_rule("project_l1"),
        _project_l1,
        "The nearest point of the L1 ball sum(abs(v)) <= radius (gross exposure, turnover).",
        family="guard",
    ),
    Op(
        "project_l2",
        (Arg("x"), Arg("radius")),
        _radius_rule("project_l2"),
        _project_l2,
        "The nearest point of the ball norm(v) <= radius: x scaled down when outside.",
        family="guard",
    ),
    Op(
        "keep_largest",
        (Arg("x"), Arg("k", "int")),
        _keep_rule,
        _keep_largest,
        "x with all but its k largest-magnitude elements set to 0: the nearest point with at "
        "most k nonzeros (trade frequency).",
        family="guard",
    ),
    Op(
        "nonzero",
        (Arg("x"), Arg("tol", "float", 1e-6)),
        _nonzero_rule,
        _nonzero,
        "How many elements have |x| > tol, as a float (no gradient): e.g. the number of "
        "trades in a rebalance.",
        family="guard",
        no_grad=NoGrad(("x",), "count"),
    ),
    Op(
        "guard_reject",
        (Arg("x"), Arg("excess"), Arg("bound"), Arg("fallback")),
        _reject_rule,
        _reject,
        "The decision x, or the fallback (broadcast to x) where the excess breaks "
        "the limit: what action reject does.",
        family="guard",
        # the excess and the bound only decide which of x and the fallback is taken
        no_grad=NoGrad(("excess", "bound"), "guard"),
    ),
)
