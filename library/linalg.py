"""Linear algebra: dot, matmul (``@``), quad, outer, transpose, eye, trace, diag, solve."""

from __future__ import annotations

from ddm.library.lazy import jnp
from ddm.library.op import Arg, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, broadcast_shapes, promote


def _floats(name, *types):
    for i, t in enumerate(types):
        if t.dtype == "bool":
            raise DtypeError(f"{name} expects numbers, got {t}", arg=i)


def _dot_rule(types, static):
    a, b = types
    _floats("dot", a, b)
    if a.ndim != 1 or b.ndim != 1:
        bad = 0 if a.ndim != 1 else 1
        raise ShapeError(
            f"dot takes two vectors, got {a} and {b}", arg=bad, hint="use '@' for matrix products"
        )
    if a.shape[0] != b.shape[0]:
        raise ShapeError(f"dot of vectors of different lengths: {a} and {b}")
    return TensorType(promote(a, b, "take the dot product of"), ())


def matmul_type(a: TensorType, b: TensorType) -> TensorType:
    """NumPy ``matmul``: vectors are promoted and the promoted axis dropped again."""
    _floats("matmul", a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(
            f"'@' needs at least vectors, got {a} and {b}",
            arg=0 if a.ndim == 0 else 1,
            hint="use '*' to scale",
        )
    inner_a = a.shape[-1]
    inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if inner_a != inner_b:
        raise ShapeError(
            f"cannot multiply {a} @ {b}: inner dimensions {inner_a} and {inner_b} differ"
        )
    dtype = promote(a, b, "multiply")
    a_batch = a.shape[:-2]
    b_batch = b.shape[:-2]
    batch = broadcast_shapes(a_batch, b_batch)
    if batch is None:
        raise ShapeError(f"cannot multiply {a} @ {b}: batch dimensions do not broadcast")
    rows = (a.shape[-2],) if a.ndim >= 2 else ()
    cols = (b.shape[-1],) if b.ndim >= 2 else ()
    return TensorType(dtype, batch + rows + cols)


def _quad_rule(types, static):
    v, m = types
    _floats("quad", v, m)
    if v.ndim != 1:
        raise ShapeError(f"quad(v, M) takes a vector v, got {v}", arg=0)
    if m.ndim != 2 or m.shape[0] != v.shape[0] or m.shape[1] != v.shape[0]:
        raise ShapeError(
            f"quad(v, M) needs M of shape [{v.shape[0]}, {v.shape[0]}] for v: {v}, got {m}", arg=1
        )
    return TensorType(promote(v, m, "form a quadratic of"), ())


def _outer_rule(types, static):
    a, b = types
    _floats("outer", a, b)
    if a.ndim != 1 or b.ndim != 1:
        raise ShapeError(f"outer takes two vectors, got {a} and {b}", arg=0 if a.ndim != 1 else 1)
    return TensorType(promote(a, b, "take the outer product of"), (a.shape[0], b.shape[0]))


def _transpose_rule(types, static):
    (x,) = types
    axes = static["axes"]
    if axes is None:
        return x.with_shape(tuple(reversed(x.shape)))
    if isinstance(axes, int):  # an `axes` argument may be one int
        axes = (axes,)
    if any(not -x.ndim <= a < x.ndim for a in axes) or sorted(a % x.ndim for a in axes) != list(
        range(x.ndim)
    ):
        raise ShapeError(
            f"transpose axes {list(axes)} are not a permutation of the {x.ndim} axes of {x}", arg=0
        )
    return x.with_shape(tuple(x.shape[a] for a in axes))


def _square(name, m: TensorType, arg=0):
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ShapeError(f"{name} needs a square matrix, got {m}", arg=arg)


def _solve_rule(types, static):
    a, b = types
    _floats("solve", a, b)
    _square("solve(A, b)", a)
    if b.ndim not in (1, 2) or b.shape[0] != a.shape[0]:
        raise ShapeError(
            f"solve(A, b) needs b of shape [{a.shape[0]}] or [{a.shape[0]}, K] for A: {a}, got {b}",
            arg=1,
        )
    dtype = promote(a, b, "solve with")
    if dtype not in ("f32", "f64"):
        dtype = "f32"
    return TensorType(dtype, b.shape)


def _trace_rule(types, static):
    _square("trace", types[0])
    return TensorType("i32" if types[0].dtype == "bool" else types[0].dtype, ())  # as sum


def _diag_rule(types, static):
    (x,) = types
    if x.ndim == 1:
        return x.with_shape((x.shape[0], x.shape[0]))
    _square("diag", x)
    return x.with_shape((x.shape[0],))


def _eye_rule(types, static):
    n = static["n"]
    return TensorType("f32", (n, n))


def _norm_rule(types, static):
    (x,) = types
    _floats("norm", x)
    if x.ndim != 1:
        raise ShapeError(
            f"norm takes a vector, got {x}",
            arg=0,
            hint="use sqrt(sum(x ** 2, axis=...)) for other shapes",
        )
    return TensorType(x.dtype if x.is_float else "f32", ())


def _solve(a, b):
    return jnp.linalg.solve(a, b)


OPS = (
    Op(
        "dot",
        (Arg("a"), Arg("b")),
        _dot_rule,
        lambda a, b: jnp.dot(a, b),
        "Inner product of two vectors of equal length → scalar.",
        family="dot",
    ),
    Op(
        "matmul",
        (Arg("a"), Arg("b")),
        lambda t, s: matmul_type(*t),
        lambda a, b: a @ b,
        "Matrix product, NumPy rules; what '@' means.",
        family="matmul",
    ),
    Op(
        "quad",
        (Arg("v"), Arg("M")),
        _quad_rule,
        lambda v, m: v @ m @ v,
        "Quadratic form vᵀ M v for v: [N], M: [N, N] → scalar.",
        family="quad",
    ),
    Op(
        "outer",
        (Arg("a"), Arg("b")),
        _outer_rule,
        lambda a, b: jnp.outer(a, b),
        "Outer product of a: [N] and b: [M] → [N, M].",
        family="outer",
    ),
    Op(
        "transpose",
        (Arg("x"), Arg("axes", "axes", None)),
        _transpose_rule,
        lambda x, axes=None: jnp.transpose(x, (axes,) if isinstance(axes, int) else axes),
        "Axes reversed, or permuted by axes.",
        family="transpose",
    ),
    Op(
        "eye",
        (Arg("n", "dim"),),
        _eye_rule,
        lambda n: jnp.eye(n),
        "Identity matrix [n, n].",
        family="eye",
    ),
    Op(
        "trace",
        (Arg("M"),),
        _trace_rule,
        lambda m: jnp.trace(m),
        "Sum of the diagonal.",
        family="square",
    ),
    Op(
        "diag",
        (Arg("x"),),
        _diag_rule,
        lambda x: jnp.diag(x),
        "Vector → diagonal matrix; square matrix → its diagonal.",
        family="diag",
    ),
    Op(
        "norm",
        (Arg("x"),),
        _norm_rule,
        lambda x: jnp.sqrt(jnp.sum(x * x)),
        "Euclidean norm of a vector.",
        family="vector",
    ),
    Op(
        "solve",
        (Arg("A"), Arg("b")),
        _solve_rule,
        _solve,
        "x with A x = b (A: [N, N], b: [N] or [N, K]); differentiable. The closed-form "
        "declarative step: x = argmin ½xᵀAx − bᵀx for symmetric positive-definite A.",
        family="solve",
        kind="declarative",
    ),
)
