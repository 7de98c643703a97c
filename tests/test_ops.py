"""Every op's shape rule agrees with its JAX implementation.

For each op in ``OPS``, hypothesis draws valid argument types (concrete int dims, 1..5 per axis)
and static arguments with the strategy of the op's ``family``; the test then checks that the
rule's output type (shape and dtype) is exactly what ``op.impl`` returns on random arrays of
those types. An op whose family has no strategy fails ``test_every_family_has_a_strategy``.

Runs with float64 off: the rule's ``f32`` is float32, ``i32`` int32, ``bool`` bool.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddm.library import OPS
from ddm.library.types import DtypeError, ShapeError, TensorType

NP_DTYPE = {"f32": np.float32, "i32": np.int32, "bool": np.bool_}
NUM = ("f32", "i32")
ANY = ("f32", "i32", "bool")
CASTS = ("f32", "f64", "i32", "bool")


@pytest.fixture(autouse=True, scope="module")
def _x64_off():
    """This module's dtypes assume float64 is off; restore whatever was set before."""
    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", False)
    yield
    jax.config.update("jax_enable_x64", before)


# --- cases ---------------------------------------------------------------------------------------


@dataclass
class Case:
    """One call: the tensor arguments in ``params`` order (a ``tensors`` argument is a tuple of
    types, an omitted optional tensor ``None``) and the static arguments by name."""

    args: tuple
    static: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        def fmt(a):
            if a is None:
                return "None"
            if isinstance(a, tuple):
                return "[" + ", ".join(fmt(x) for x in a) + "]"
            return f"{a.dtype}{list(a.shape)}"

        return f"Case({', '.join(fmt(a) for a in self.args)}; {self.static})"


def defaults(op) -> dict:
    return {
        a.name: a.default
        for a in op.params
        if a.kind not in ("tensor", "tensors") and not a.required
    }


def T(dtype: str, shape) -> TensorType:
    return TensorType(dtype, tuple(shape))


DIM = st.integers(1, 5)


def shapes(min_rank=0, max_rank=4):
    return st.lists(DIM, min_size=min_rank, max_size=max_rank).map(tuple)


@st.composite
def broadcast_to(draw, shape):
    """A shape that broadcasts to ``shape``: some leading axes dropped, some sizes set to 1."""
    drop = draw(st.integers(0, len(shape)))
    kept = shape[drop:]
    return tuple(1 if draw(st.booleans()) else d for d in kept)


@st.composite
def axis_of(draw, rank):
    """An int axis of a tensor of ``rank`` (rank >= 1), negative or not."""
    return draw(st.integers(-rank, rank - 1))


@st.composite
def axes_of(draw, rank):
    """``None``, an int, or a list of distinct axes (each maybe written negatively)."""
    if rank == 0:
        return draw(st.sampled_from([None, ()]))
    kind = draw(st.sampled_from(["none", "int", "list"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(axis_of(rank))
    picked = draw(st.lists(st.integers(0, rank - 1), unique=True, max_size=rank))
    return tuple(a - rank if draw(st.booleans()) else a for a in picked)


def numeric_pair():
    return st.tuples(st.sampled_from(NUM), st.sampled_from(NUM))


# --- one strategy per family ---------------------------------------------------------------------


@st.composite
def unary_case(draw, op):
    dtype = draw(st.sampled_from(ANY if op.name in CASTS else NUM))
    return Case((T(dtype, draw(shapes())),), defaults(op))


@st.composite
def binary_case(draw, op, dtypes=None):
    base = draw(shapes())
    a = draw(st.one_of(st.just(base), broadcast_to(base)))
    b = draw(st.one_of(st.just(base), broadcast_to(base)))
    if draw(st.booleans()):
        a, b = b, a
    da, db = dtypes if dtypes is not None else draw(numeric_pair())
    return Case((T(da, a), T(db, b)), defaults(op))


@st.composite
def compare_case(draw, op):
    dtypes = draw(st.one_of(numeric_pair(), st.just(("bool", "bool"))))
    return draw(binary_case(op, dtypes))


@st.composite
def logical_case(draw, op):
    if len(op.params) == 1:
        return Case((T("bool", draw(shapes())),), defaults(op))
    return draw(binary_case(op, ("bool", "bool")))


@st.composite
def where_case(draw, op):
    base = draw(shapes())
    c, x, y = (draw(st.one_of(st.just(base), broadcast_to(base))) for _ in range(3))
    dx, dy = draw(st.one_of(numeric_pair(), st.just(("bool", "bool"))))
    return Case((T("bool", c), T(dx, x), T(dy, y)), defaults(op))


@st.composite
def clip_case(draw, op):
    x = draw(shapes())
    lo, hi = draw(broadcast_to(x)), draw(broadcast_to(x))
    dx, dlo, dhi = (draw(st.sampled_from(NUM)) for _ in range(3))
    return Case((T(dx, x), T(dlo, lo), T(dhi, hi)), defaults(op))


@st.composite
def reduce_case(draw, op):
    x = draw(shapes())
    dtype = draw(st.sampled_from(ANY if op.name == "sum" else NUM))
    static = defaults(op)
    static["axis"] = draw(axes_of(len(x)))
    static["keepdims"] = draw(st.booleans())
    if "ddof" in static:
        static["ddof"] = draw(st.integers(0, 2))
    return Case((T(dtype, x),), static)


@st.composite
def along_case(draw, op):
    x = draw(shapes(1))
    static = defaults(op)
    static["axis"] = draw(axis_of(len(x)))
    return Case((T("f32", x),), static)


@st.composite
def dot_case(draw, op):
    n = draw(DIM)
    da, db = draw(numeric_pair())
    return Case((T(da, (n,)), T(db, (n,))), defaults(op))


@st.composite
def matmul_case(draw, op):
    n, k, m = draw(DIM), draw(DIM), draw(DIM)
    batch = draw(shapes(0, 2))
    a = (k,) if draw(st.booleans()) else draw(broadcast_to(batch)) + (n, k)
    b = (k,) if draw(st.booleans()) else draw(broadcast_to(batch)) + (k, m)
    da, db = draw(numeric_pair())
    return Case((T(da, a), T(db, b)), defaults(op))


@st.composite
def quad_case(draw, op):
    n = draw(DIM)
    dv, dm = draw(numeric_pair())
    return Case((T(dv, (n,)), T(dm, (n, n))), defaults(op))


@st.composite
def outer_case(draw, op):
    da, db = draw(numeric_pair())
    return Case((T(da, (draw(DIM),)), T(db, (draw(DIM),))), defaults(op))


@st.composite
def transpose_case(draw, op):
    x = draw(shapes())
    r = len(x)
    static = defaults(op)
    kind = draw(st.sampled_from(["none", "perm", "int"] if r == 1 else ["none", "perm"]))
    if kind == "perm":
        perm = draw(st.permutations(range(r)))
        static["axes"] = tuple(a - r if draw(st.booleans()) else a for a in perm)
    elif kind == "int":  # an `axes` argument may be written as one int
        static["axes"] = draw(st.sampled_from([0, -1]))
    return Case((T(draw(st.sampled_from(ANY)), x),), static)


@st.composite
def eye_case(draw, op):
    return Case((), {**defaults(op), "n": draw(DIM)})


@st.composite
def square_case(draw, op):
    n = draw(DIM)
    return Case((T(draw(st.sampled_from(ANY)), (n, n)),), defaults(op))


@st.composite
def diag_case(draw, op):
    n = draw(DIM)
    shape = draw(st.sampled_from([(n,), (n, n)]))
    return Case((T(draw(st.sampled_from(ANY)), shape),), defaults(op))


@st.composite
def path_case(draw, op):
    n = draw(st.integers(1, 8))
    # S, h, then the scalar cost and impact rates
    return Case((T("f32", (n + 1,)), T("f32", (n,)), T("f32", ()), T("f32", ())), defaults(op))


@st.composite
def vector_case(draw, op):
    static = defaults(op)
    if "periods" in static:
        static["periods"] = draw(st.sampled_from([1, 12, 252]))
    return Case((T(draw(st.sampled_from(NUM)), (draw(DIM),)),), static)


@st.composite
def solve_case(draw, op):
    n = draw(DIM)
    b = draw(st.sampled_from([(n,), (n, draw(DIM))]))
    da, db = draw(numeric_pair())
    return Case((T(da, (n, n)), T(db, b)), defaults(op))


def _join_dtypes(draw, count):
    if draw(st.booleans()):
        return ["bool"] * count
    return [draw(st.sampled_from(NUM)) for _ in range(count)]


@st.composite
def concat_case(draw, op):
    base = list(draw(shapes(1, 3)))
    static = defaults(op)
    static["axis"] = axis = draw(axis_of(len(base)))
    count = draw(st.integers(1, 4))
    items = []
    for dtype in _join_dtypes(draw, count):
        shape = list(base)
        shape[axis] = draw(DIM)
        items.append(T(dtype, shape))
    return Case((tuple(items),), static)


@st.composite
def stack_case(draw, op):
    shape = draw(shapes(0, 3))
    static = defaults(op)
    static["axis"] = draw(axis_of(len(shape) + 1))
    count = draw(st.integers(1, 4))
    return Case((tuple(T(d, shape) for d in _join_dtypes(draw, count)),), static)


def _factors(n):
    out, p = [], 2
    while n > 1:
        while n % p == 0:
            out.append(p)
            n //= p
        p += 1
    return out


@st.composite
def reshape_case(draw, op):
    x = draw(shapes())
    static = defaults(op)
    if any(a.name == "shape" for a in op.params):
        # the same elements regrouped into a random number of axes, maybe one written -1
        factors = draw(st.permutations(_factors(math.prod(x)) + [1] * draw(st.integers(0, 2))))
        rank = draw(st.integers(0, len(factors))) if factors else 0
        cuts = sorted(
            draw(
                st.lists(
                    st.integers(0, len(factors)),
                    min_size=max(rank - 1, 0),
                    max_size=max(rank - 1, 0),
                )
            )
        )
        if rank == 0:
            target = [] if not factors else [math.prod(factors)]
        else:
            bounds = [0] + cuts + [len(factors)]
            target = [math.prod(factors[i:j]) for i, j in zip(bounds, bounds[1:])]
        if target and draw(st.booleans()):
            target[draw(st.integers(0, len(target) - 1))] = -1
        static["shape"] = tuple(target)
    return Case((T(draw(st.sampled_from(ANY)), x),), static)


@st.composite
def fill_case(draw, op):
    return Case((), {**defaults(op), "shape": draw(shapes(0, 3))})


@st.composite
def cov_case(draw, op):
    t, n = draw(st.integers(2, 6)), draw(DIM)
    return Case((T("f32", (t, n)), T("f32", ())), defaults(op))


@st.composite
def zscore_case(draw, op):
    x = draw(shapes(0, 3))
    static = defaults(op)
    static["eps"] = draw(st.sampled_from([1e-8, 1e-3]))
    if draw(st.booleans()):
        static["stats"] = "batch"
        return Case((T("f32", x), None, None), static)
    static["stats"] = "fixed"
    return Case(
        (T("f32", x), T("f32", draw(broadcast_to(x))), T("f32", draw(broadcast_to(x)))), static
    )


@st.composite
def pair_case(draw, op):
    shape = draw(shapes(0, 3))
    da, db = draw(numeric_pair())
    return Case((T(da, shape), T(db, shape)), defaults(op))


@st.composite
def vector_pair_case(draw, op):
    n = draw(DIM)
    da, db = draw(numeric_pair())
    return Case((T(da, (n,)), T(db, (n,))), defaults(op))


@st.composite
def guard_case(draw, op):
    """A decision of any shape first; every other tensor argument (bound, radius, excess,
    fallback) a scalar."""
    x = T("f32", () if op.params[0].name == "excess" else draw(shapes()))
    tensors = [a for a in op.params if a.kind == "tensor"]
    static = defaults(op)
    if any(a.name == "k" for a in op.params):
        static["k"] = draw(st.integers(0, 4))
    return Case((x,) + tuple(T("f32", ()) for _ in tensors[1:]), static)


@st.composite
def gumbel_case(draw, op):
    """Logits of rank >= 1 (the regimes on the last axis) and a temperature broadcasting to
    them; ``hard`` either way."""
    logits = draw(shapes(1))
    static = {**defaults(op), "hard": draw(st.booleans())}
    return Case(
        (
            T(draw(st.sampled_from(NUM)), logits),
            T(draw(st.sampled_from(NUM)), draw(broadcast_to(logits))),
        ),
        static,
    )


@st.composite
def retrieval_case(draw, op):
    """A query [D], embeddings [K, D] and a prior [K]."""
    d, k = draw(DIM), draw(DIM)
    dq, de, dp = (draw(st.sampled_from(NUM)) for _ in range(3))
    return Case((T(dq, (d,)), T(de, (k, d)), T(dp, (k,))), defaults(op))


@st.composite
def argmax_case(draw, op):
    """Scores of rank >= 1 along any axis, negative or not."""
    x = draw(shapes(1))
    return Case(
        (T(draw(st.sampled_from(NUM)), x),), {**defaults(op), "axis": draw(axis_of(len(x)))}
    )


@st.composite
def one_hot_case(draw, op):
    """Integer indices of any shape and a class count K."""
    return Case((T("i32", draw(shapes(0, 3))),), {**defaults(op), "K": draw(DIM)})


@st.composite
def order_case(draw, op):
    """Numbers of rank >= 1 ordered along any axis: sorted either way, ranked by each method."""
    x = draw(shapes(1))
    static = {**defaults(op), "axis": draw(axis_of(len(x)))}
    if "descending" in static:
        static["descending"] = draw(st.booleans())
    if "method" in static:
        static["method"] = draw(st.sampled_from(op.params[-1].choices))
    return Case((T(draw(st.sampled_from(NUM)), x),), static)


@st.composite
def quantile_case(draw, op):
    """Floats of any rank, axes as for a reduction, one level in [0, 1] or a list of them."""
    x = draw(shapes())
    level = st.floats(0.0, 1.0)
    static = {
        **defaults(op),
        "axis": draw(axes_of(len(x))),
        "keepdims": draw(st.booleans()),
        "q": draw(st.one_of(level, st.lists(level, min_size=1, max_size=3).map(tuple))),
    }
    return Case((T("f32", x),), static)


@st.composite
def soft_rank_case(draw, op):
    """Numbers of rank >= 1 along any axis, and a scalar temperature."""
    x = draw(shapes(1))
    static = {**defaults(op), "axis": draw(axis_of(len(x)))}
    return Case((T(draw(st.sampled_from(NUM)), x), T(draw(st.sampled_from(NUM)), ())), static)


@st.composite
def simulator_case(draw, op):
    """A path id (i32 scalar), numeric parameters (scalars; per-state vectors [2] for
    regime_path's mu and sigma), a short grid and any output."""
    tensors = [a for a in op.params if a.kind == "tensor"][1:]
    per_state = ("mu", "sigma") if op.name == "regime_path" else ()
    args = tuple(
        T(draw(st.sampled_from(NUM)), (2,) if a.name in per_state else ()) for a in tensors
    )
    static = {**defaults(op), "steps": draw(st.integers(1, 5))}
    choices = {a.name: a.choices for a in op.params if a.kind == "str"}
    if "output" in choices:
        static["output"] = draw(st.sampled_from(choices["output"]))
    if "stay" in static:
        p = st.floats(0.0, 1.0)
        static["stay"] = draw(st.one_of(p, st.tuples(p, p)))
    return Case((T("i32", ()),) + args, static)


@st.composite
def mix_case(draw, op):
    """Replayed and simulated of one float shape, a regime over its leading axes."""
    shape = draw(shapes(1, 3))
    lead = shape[: draw(st.integers(1, len(shape)))]
    regime = T(draw(st.sampled_from(("i32", "bool"))), lead)
    static = {**defaults(op), "history": draw(st.integers(0, 1))}
    return Case((T("f32", shape), T("f32", shape), regime), static)


STRATEGIES = {
    "unary": unary_case,
    "binary": binary_case,
    "compare": compare_case,
    "logical": logical_case,
    "where": where_case,
    "clip": clip_case,
    "reduce": reduce_case,
    "along": along_case,
    "dot": dot_case,
    "matmul": matmul_case,
    "quad": quad_case,
    "outer": outer_case,
    "transpose": transpose_case,
    "eye": eye_case,
    "square": square_case,
    "diag": diag_case,
    "vector": vector_case,
    "path": path_case,
    "solve": solve_case,
    "concat": concat_case,
    "stack": stack_case,
    "reshape": reshape_case,
    "fill": fill_case,
    "cov": cov_case,
    "zscore": zscore_case,
    "pair": pair_case,
    "vector_pair": vector_pair_case,
    "guard": guard_case,
    "gumbel": gumbel_case,
    "retrieval": retrieval_case,
    "argmax": argmax_case,
    "one_hot": one_hot_case,
    "order": order_case,
    "quantile": quantile_case,
    "soft_rank": soft_rank_case,
    "simulator": simulator_case,
    "mix": mix_case,
}


# --- arrays --------------------------------------------------------------------------------------


def array(t: TensorType, rng: np.random.Generator, batch: tuple = ()):
    shape = batch + tuple(int(d) for d in t.shape)
    if t.dtype == "bool":
        value = rng.random(shape) < 0.5
    elif t.dtype == "i32":
        value = rng.integers(1, 4, shape)
    else:
        value = rng.uniform(0.1, 0.9, shape)
    if len(t.shape) == 2 and t.shape[0] == t.shape[1] and t.dtype != "bool":
        value = value + 3 * np.eye(int(t.shape[0]), dtype=value.dtype)  # solvable
    return value.astype(NP_DTYPE[t.dtype])  # NumPy: jit and eval_shape take it as it is


def arrays(args, rng, batch=()):
    out = []
    for a in args:
        if a is None:
            out.append(None)
        elif isinstance(a, tuple):
            out.append([array(t, rng, batch) for t in a])
        else:
            out.append(array(a, rng, batch))
    return out


def evaluate(op, case: Case, seed: int, concrete: bool):
    """The (shape, dtype) ``op.impl`` returns on random arrays of the case's types: computed
    (``concrete``: compiled with ``jax.jit``, as lowering runs it) or traced by
    ``jax.eval_shape``, which runs the same Python and JAX code without compiling it.
    Batch-statistics ops run under ``vmap(axis_name="batch")``, as lowering runs them; one
    sample's type is reported."""
    rng = np.random.default_rng(seed)

    def call(*xs):
        return op.impl(*xs, **case.static)

    batch = ()
    needs_batch = op.extra.get("needs_batch")
    if needs_batch and needs_batch(case.static):
        call, batch = jax.vmap(call, axis_name="batch"), (3,)
    xs = arrays(case.args, rng, batch)
    out = jax.jit(call)(*xs) if concrete else jax.eval_shape(call, *xs)
    return tuple(out.shape)[len(batch) :], np.dtype(out.dtype)


def check_case(name, case, seed, concrete):
    op = OPS[name]
    want = op.rule(case.args, case.static)
    assert isinstance(want, TensorType)
    assert all(isinstance(d, int) for d in want.shape), want
    assert not want.weak, "non-weak inputs must give a non-weak result"
    shape, dtype = evaluate(op, case, seed, concrete)
    assert shape == tuple(want.shape), f"{name}{case}: rule {want}, impl {shape}"
    if name in CASTS:
        # a cast's implementation is the identity: lowering converts every value to the dtype
        # its IR type names, so the rule alone changes the dtype
        assert want.dtype == name
        return
    assert dtype == np.dtype(NP_DTYPE[want.dtype]), f"{name}{case}: rule {want}, impl {dtype}"


# --- properties ----------------------------------------------------------------------------------


def test_every_family_has_a_strategy():
    missing = {f"{op.name} ({op.family})" for op in OPS.values() if op.family not in STRATEGIES}
    assert not missing, f"ops whose family has no property-test strategy: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(OPS))
@settings(max_examples=25, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_rule_matches_impl(name, data, seed):
    """25 drawn cases per op, the implementation traced (shapes and dtypes are exact)."""
    op = OPS[name]
    check_case(name, data.draw(STRATEGIES[op.family](op), label="case"), seed, concrete=False)


@pytest.mark.parametrize("name", sorted(OPS))
@settings(max_examples=4, deadline=None)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_rule_matches_impl_concretely(name, data, seed):
    """A few drawn cases per op, the implementation run on real arrays (compiling every new
    shape is what makes these slow; the traced test covers more cases)."""
    op = OPS[name]
    check_case(name, data.draw(STRATEGIES[op.family](op), label="case"), seed, concrete=True)


def test_binary_ops_broadcast_lower_rank_and_unit_axes():
    """Explicit broadcasting cases, beyond the drawn ones."""
    rng = np.random.default_rng(0)
    cases = [
        ((3, 1, 5), (4, 1)),
        ((2, 3), (3,)),
        ((), (2, 3)),
        ((1,), (4, 2)),
        ((5, 1, 1), (1, 2, 3)),
        ((2, 1, 3), (2, 4, 1)),
    ]
    for name in ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "lt", "eq"):
        op = OPS[name]
        for a, b in cases:
            for x, y in ((a, b), (b, a)):
                want = op.rule((T("f32", x), T("f32", y)), {})
                got = jax.eval_shape(op.impl, array(T("f32", x), rng), array(T("f32", y), rng))
                assert got.shape == tuple(want.shape) == np.broadcast_shapes(x, y)


# --- invalid shapes are refused by the rule ------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(a=shapes(1, 3), b=shapes(1, 3))
def test_binary_refuses_shapes_that_do_not_broadcast(a, b):
    try:
        np.broadcast_shapes(a, b)
        broadcasts = True
    except ValueError:
        broadcasts = False
    for name in ("add", "mul", "pow", "lt", "logical_and"):
        op = OPS[name]
        dtype = "bool" if op.family == "logical" else "f32"
        args = (T(dtype, a), T(dtype, b))
        if broadcasts:
            assert op.rule(args, {}).shape == np.broadcast_shapes(a, b)
        else:
            with pytest.raises(ShapeError):
                op.rule(args, {})


def test_where_and_clip_refuse_shapes_that_do_not_broadcast():
    with pytest.raises(ShapeError):
        OPS["where"].rule((T("bool", (2, 3)), T("f32", (4, 3)), T("f32", (3,))), {})
    with pytest.raises(ShapeError):
        OPS["where"].rule((T("bool", (2,)), T("f32", (4, 3)), T("f32", (3,))), {})
    with pytest.raises(ShapeError):  # bounds must broadcast *to* x, not widen it
        OPS["clip"].rule((T("f32", (3,)), T("f32", (2, 3)), T("f32", ())), {})


@pytest.mark.parametrize(
    "a,b", [((3,), (4,)), ((2, 3), (4, 5)), ((2, 3), (2,)), ((5, 2, 3), (5, 4, 2)), ((4,), (3, 2))]
)
def test_matmul_refuses_inner_mismatch(a, b):
    with pytest.raises(ShapeError):
        OPS["matmul"].rule((T("f32", a), T("f32", b)), {})


@pytest.mark.parametrize("a,b", [((2, 3, 4), (5, 4, 2)), ((2, 1, 2), (3, 2, 2))])
def test_matmul_refuses_batch_mismatch(a, b):
    with pytest.raises(ShapeError):
        OPS["matmul"].rule((T("f32", a), T("f32", b)), {})


@pytest.mark.parametrize(
    "a,b", [((2, 3), (2,)), ((3, 3), (2,)), ((3,), (3,)), ((3, 3, 3), (3,)), ((3, 3), (3, 2, 1))]
)
def test_solve_refuses_non_square_or_mismatched(a, b):
    with pytest.raises(ShapeError):
        OPS["solve"].rule((T("f32", a), T("f32", b)), {})


def test_other_shape_errors():
    r = OPS
    with pytest.raises(ShapeError):
        r["dot"].rule((T("f32", (3,)), T("f32", (4,))), {})
    with pytest.raises(ShapeError):
        r["quad"].rule((T("f32", (3,)), T("f32", (3, 2))), {})
    with pytest.raises(ShapeError):
        r["trace"].rule((T("f32", (3, 2)),), {})
    with pytest.raises(ShapeError):
        r["concat"].rule(((T("f32", (2, 3)), T("f32", (2, 4))),), {"axis": 0})
    with pytest.raises(ShapeError):
        r["stack"].rule(((T("f32", (2,)), T("f32", (3,))),), {"axis": 0})
    with pytest.raises(ShapeError):
        r["reshape"].rule((T("f32", (2, 3)),), {"shape": (4, -1)})
    with pytest.raises(ShapeError):
        r["reshape"].rule((T("f32", (2, 3)),), {"shape": (5,)})
    with pytest.raises(ShapeError):
        r["sum"].rule((T("f32", (2, 3)),), {"axis": 2, "keepdims": False})
    with pytest.raises(ShapeError):
        r["sum"].rule((T("f32", (2, 3)),), {"axis": (0, -2), "keepdims": False})
    with pytest.raises(ShapeError):
        r["softmax"].rule((T("f32", (2, 3)),), {"axis": -3})
    with pytest.raises(ShapeError):
        r["cov"].rule((T("f32", (4,)), T("f32", ())), {})
    with pytest.raises(ShapeError):
        r["bce"].rule((T("f32", (3,)), T("f32", (4,))), {"eps": 1e-7})
    with pytest.raises(ShapeError):
        r["zscore"].rule(
            (T("f32", (3,)), T("f32", (4,)), T("f32", (3,))), {"stats": "fixed", "eps": 1e-8}
        )


@pytest.mark.parametrize("axes", [(0, 3), (1, 2), (0,), (0, 0), (2,)])
def test_transpose_refuses_non_permutations(axes):
    with pytest.raises(ShapeError):
        OPS["transpose"].rule((T("f32", (2, 3)),), {"axes": axes})


def test_dtype_errors():
    with pytest.raises(DtypeError):
        OPS["add"].rule((T("bool", (2,)), T("f32", (2,))), {})
    with pytest.raises(DtypeError):
        OPS["logical_and"].rule((T("f32", (2,)), T("bool", (2,))), {})
    with pytest.raises(DtypeError):
        OPS["where"].rule((T("f32", (2,)), T("f32", (2,)), T("f32", (2,))), {})
    with pytest.raises(DtypeError):
        OPS["exp"].rule((T("bool", (2,)),), {})
    with pytest.raises(DtypeError):
        OPS["mean"].rule((T("bool", (2,)),), {"axis": None, "keepdims": False})
    with pytest.raises(DtypeError):
        OPS["add"].rule((T("f32", (2,)), T("f64", (2,))), {})


# --- regressions of bugs these properties found --------------------------------------------------


def test_float_results_of_integer_arguments_are_computed_in_float():
    """The rules give sigmoid/square/relu/pow of integers a float result; the implementations
    used to crash (sigmoid) or compute in integers (pow: 2 ** -1 was 0, not 0.5)."""
    two = np.array([2, -3], np.int32)
    assert np.allclose(OPS["pow"].impl(two, np.array([-1, 2], np.int32)), [0.5, 9.0])
    assert np.allclose(OPS["sigmoid"].impl(np.array(0, np.int32)), 0.5)
    assert OPS["square"].impl(two).dtype == np.float32
    assert np.allclose(OPS["relu"].impl(two), [2.0, 0.0])


def test_clip_keeps_the_dtype_of_x():
    out = OPS["clip"].impl(np.array([0, 5], np.int32), np.float32(0.5), np.float32(2.5))
    assert out.dtype == np.int32 and list(np.asarray(out)) == [0, 2]


def test_transpose_takes_an_int_axes_and_refuses_out_of_range_axes():
    x = np.arange(3.0, dtype=np.float32)
    assert OPS["transpose"].rule((T("f32", (3,)),), {"axes": 0}).shape == (3,)
    assert OPS["transpose"].impl(x, axes=-1).shape == (3,)
    with pytest.raises(ShapeError):
        OPS["transpose"].rule((T("f32", (3,)),), {"axes": 1})
    with pytest.raises(ShapeError):
        OPS["transpose"].rule((T("f32", ()),), {"axes": (0,)})


def test_trace_of_bool_counts_like_sum():
    assert OPS["trace"].rule((T("bool", (2, 2)),), {}).dtype == "i32"
