"""Elementwise operations: maths functions, arithmetic and logic operators, where, clip, casts.

Shapes follow NumPy broadcasting over symbolic dims; the result dtype follows
:func:`ddm.library.types.promote` (weak literals yield, f32 and f64 never mix silently).
"""

from __future__ import annotations

from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, NoGrad, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, broadcast_shapes, promote

X = (Arg("x"),)
XY = (Arg("x"), Arg("y"))


def _float_result(t: TensorType, name: str, arg: int = 0) -> TensorType:
    if t.dtype == "bool":
        raise DtypeError(
            f"{name} expects a number, got {t}", arg=arg, hint="cast with f32(...) first"
        )
    return TensorType(t.dtype if t.is_float else "f32", t.shape, t.weak)


def unary_float_rule(name):
    def rule(types, static):
        return _float_result(types[0], name)

    return rule


def broadcast_rule(verb, result_dtype=None):
    def rule(types, static):
        a, b = types
        shape = broadcast_shapes(a.shape, b.shape)
        if shape is None:
            raise ShapeError(f"cannot {verb} {a} and {b}: shapes do not broadcast")
        if result_dtype == "bool":
            if (a.dtype == "bool") != (b.dtype == "bool") and not (a.weak or b.weak):
                raise DtypeError(f"cannot {verb} {a} and {b}", arg=None)
            return TensorType("bool", shape)
        dtype = promote(a, b, verb)
        if result_dtype == "float" and dtype not in ("f32", "f64"):
            dtype = "f32"
        return TensorType(dtype, shape, a.weak and b.weak)

    return rule


def logical_rule(verb):
    def rule(types, static):
        for i, t in enumerate(types):
            if t.dtype != "bool":
                raise DtypeError(
                    f"'{verb}' expects bool operands, got {t}",
                    arg=i,
                    hint="compare first, e.g. x > 0",
                )
        if len(types) == 1:
            return types[0]
        shape = broadcast_shapes(types[0].shape, types[1].shape)
        if shape is None:
            raise ShapeError(
                f"cannot combine {types[0]} and {types[1]} with '{verb}': shapes do not broadcast"
            )
        return TensorType("bool", shape)

    return rule


def _unary(name, fn, doc):
    return Op(name, X, unary_float_rule(name), lambda x: fn(_to_float(x)), doc, family="unary")


def _to_float(x):
    # The rules give an integer argument's result the working float: compute in it (sigmoid
    # refuses ints; square, relu and pow would otherwise stay integer).
    if isinstance(x, (bool, int)):
        return float(x)
    if isinstance(x, float) or jnp.issubdtype(jnp.result_type(x), jnp.floating):
        return x
    return jnp.asarray(x).astype(float)


def _sigmoid(x):
    return jax.nn.sigmoid(x)


UNARY = (
    _unary("exp", lambda x: jnp.exp(x), "e to the power x, elementwise."),
    _unary("log", lambda x: jnp.log(x), "Natural logarithm, elementwise."),
    _unary("log1p", lambda x: jnp.log1p(x), "log(1 + x), accurate near 0."),
    _unary("expm1", lambda x: jnp.expm1(x), "exp(x) - 1, accurate near 0."),
    _unary("sqrt", lambda x: jnp.sqrt(x), "Square root, elementwise."),
    _unary("square", lambda x: jnp.square(x), "x squared, elementwise."),
    _unary("tanh", lambda x: jnp.tanh(x), "Hyperbolic tangent."),
    _unary("sin", lambda x: jnp.sin(x), "Sine."),
    _unary("cos", lambda x: jnp.cos(x), "Cosine."),
    _unary("sigmoid", _sigmoid, "Logistic function 1 / (1 + exp(-x))."),
    _unary("relu", lambda x: jax.nn.relu(x), "max(x, 0)."),
    _unary("softplus", lambda x: jax.nn.softplus(x), "log(1 + exp(x)), overflow-safe."),
    _unary("log_sigmoid", lambda x: jax.nn.log_sigmoid(x), "log(sigmoid(x)), overflow-safe."),
    _unary("gelu", lambda x: jax.nn.gelu(x), "Gaussian error linear unit."),
    _unary("elu", lambda x: jax.nn.elu(x), "Exponential linear unit."),
    _unary("erf", lambda x: jax.scipy.special.erf(x), "Error function."),
    _unary("norm_cdf", lambda x: jax.scipy.stats.norm.cdf(x), "Standard normal CDF."),
    Op(
        "abs",
        X,
        lambda t, s: _number(t[0], "abs"),
        lambda x: jnp.abs(x),
        "Absolute value.",
        family="unary",
    ),
    Op(
        "stop_gradient",
        X,
        lambda t, s: t[0],
        lambda x: jax.lax.stop_gradient(x),
        "x, with no gradient flowing back through it (a state read, not a parameter).",
        family="unary",
        no_grad=NoGrad(("x",), "stop_gradient"),
    ),
    Op(
        "sign",
        X,
        lambda t, s: _number(t[0], "sign"),
        lambda x: jnp.sign(x),
        "Sign (-1, 0 or 1).",
        family="unary",
        no_grad=NoGrad(("x",), "sign"),
    ),
    Op(
        "neg",
        X,
        lambda t, s: _number(t[0], "negate"),
        lambda x: -x,
        "Negation; what unary '-' means.",
        family="unary",
    ),
)


def _number(t: TensorType, verb: str) -> TensorType:
    if t.dtype == "bool":
        raise DtypeError(f"cannot {verb} {t}", arg=0, hint="cast with f32(...) first")
    return t


BINARY = (
    Op(
        "add",
        XY,
        broadcast_rule("add"),
        lambda x, y: x + y,
        "x + y, broadcasting.",
        family="binary",
    ),
    Op(
        "sub",
        XY,
        broadcast_rule("subtract"),
        lambda x, y: x - y,
        "x - y, broadcasting.",
        family="binary",
    ),
    Op(
        "mul",
        XY,
        broadcast_rule("multiply"),
        lambda x, y: x * y,
        "x * y, broadcasting.",
        family="binary",
    ),
    Op(
        "div",
        XY,
        broadcast_rule("divide", "float"),
        lambda x, y: jnp.true_divide(x, y),
        "x / y (true division: integers give f32), broadcasting.",
        family="binary",
    ),
    Op(
        "pow",
        XY,
        broadcast_rule("raise", "float"),
        lambda x, y: jnp.power(_to_float(x), y),
        "x ** y, broadcasting.",
        family="binary",
    ),
    Op(
        "maximum",
        XY,
        broadcast_rule("take the maximum of"),
        lambda x, y: jnp.maximum(x, y),
        "Elementwise maximum, broadcasting.",
        family="binary",
    ),
    Op(
        "minimum",
        XY,
        broadcast_rule("take the minimum of"),
        lambda x, y: jnp.minimum(x, y),
        "Elementwise minimum, broadcasting.",
        family="binary",
    ),
)


def _cmp(name, sym, fn):
    return Op(
        name,
        XY,
        broadcast_rule(f"compare ('{sym}')", "bool"),
        fn,
        f"x {sym} y elementwise → bool.",
        family="compare",
        extra={"symbol": sym},
        no_grad=NoGrad(("x", "y"), "comparison"),
    )


COMPARE = (
    _cmp("eq", "==", lambda x, y: x == y),
    _cmp("ne", "!=", lambda x, y: x != y),
    _cmp("lt", "<", lambda x, y: x < y),
    _cmp("le", "<=", lambda x, y: x <= y),
    _cmp("gt", ">", lambda x, y: x > y),
    _cmp("ge", ">=", lambda x, y: x >= y),
    Op(
        "logical_and",
        XY,
        logical_rule("and"),
        lambda x, y: jnp.logical_and(x, y),
        "Elementwise logical and of bools; what 'and' means.",
        family="logical",
        extra={"symbol": "and"},
        no_grad=NoGrad(("x", "y"), "logical"),
    ),
    Op(
        "logical_or",
        XY,
        logical_rule("or"),
        lambda x, y: jnp.logical_or(x, y),
        "Elementwise logical or of bools; what 'or' means.",
        family="logical",
        extra={"symbol": "or"},
        no_grad=NoGrad(("x", "y"), "logical"),
    ),
    Op(
        "logical_not",
        X,
        logical_rule("not"),
        lambda x: jnp.logical_not(x),
        "Elementwise logical not; what 'not' means.",
        family="logical",
        extra={"symbol": "not"},
        no_grad=NoGrad(("x",), "logical"),
    ),
)


def _where_rule(types, static):
    c, a, b = types
    if c.dtype != "bool":
        raise DtypeError(
            f"where's condition must be bool, got {c}",
            arg=0,
            hint="compare first, e.g. where(x > 0, x, 0)",
        )
    shape = broadcast_shapes(a.shape, b.shape)
    if shape is None:
        raise ShapeError(f"where's branches do not broadcast: {a} and {b}", arg=2)
    shape2 = broadcast_shapes(c.shape, shape)
    if shape2 is None:
        raise ShapeError(
            f"where's condition {c} does not broadcast with its branches "
            f"{TensorType(a.dtype, shape)}",
            arg=0,
        )
    if a.dtype == "bool" and b.dtype == "bool":
        return TensorType("bool", shape2)
    return TensorType(promote(a, b, "select between"), shape2)


def _clip_rule(types, static):
    x, lo, hi = types
    for i, bound in ((1, lo), (2, hi)):
        if broadcast_shapes(x.shape, bound.shape) != tuple(x.shape):
            raise ShapeError(f"clip bound {bound} does not broadcast to {x}", arg=i)
        promote(x, bound, "clip")
    return _number(x, "clip")


def _clip(x, lo, hi):
    # The rule keeps x's dtype; jnp.clip would promote an integer x to float bounds' dtype.
    out = jnp.clip(x, lo, hi)
    return out if isinstance(x, (int, float)) else out.astype(jnp.result_type(x))


def _cast(dtype):
    # Lowering converts every value to the concrete dtype its IR type names, so the cast's
    # implementation is the identity; the rule is what changes the type. A cast to an integer
    # or bool is piecewise constant: no gradient flows back through it.
    def rule(types, static):
        return TensorType(dtype, types[0].shape)

    no_grad = NoGrad(("x",), "cast") if dtype in ("i32", "bool") else None
    return Op(dtype, X, rule, lambda x: x, f"Cast to {dtype}.", family="unary", no_grad=no_grad)


SELECT = (
    Op(
        "where",
        (Arg("cond"), Arg("x"), Arg("y")),
        _where_rule,
        lambda c, x, y: jnp.where(c, x, y),
        "x where cond holds, else y; broadcasting.",
        family="where",
        no_grad=NoGrad(("cond",), "condition"),
    ),
    Op(
        "clip",
        (Arg("x"), Arg("lo"), Arg("hi")),
        _clip_rule,
        _clip,
        "x limited to [lo, hi]; the bounds broadcast to x.",
        family="clip",
    ),
    _cast("f32"),
    _cast("f64"),
    _cast("i32"),
    _cast("bool"),
)

OPS = UNARY + BINARY + COMPARE + SELECT
