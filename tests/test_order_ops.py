"""Order statistics: ``sort``, ``argsort``, ``rank``, ``quantile`` and the relaxation
``soft_rank``.

Specifications:

- shape rules: ``sort`` keeps its input's type, ``argsort`` gives ``i32`` of the same shape,
  ``rank`` a float (average ranks) or ``i32`` (the other tie methods); ``quantile`` with one
  level reduces its axes, with a list of levels prepends an axis of their count;
- values: NumPy's and SciPy's — ``np.sort``, ``np.argsort(kind="stable")``,
  ``scipy.stats.rankdata`` (1-based, every tie method), ``np.quantile`` (linear
  interpolation) — along any axis;
- gradients (float64, against central finite differences): ``sort`` and ``quantile`` pass one
  to the values they pick, ``soft_rank`` to its input and its temperature; ``argsort`` and
  ``rank`` pass none, and the gradient-flow lint says so with the relaxation as hint;
- at the batch level, inside ``metric`` and ``loss``, a per-sample value is its batch:
  ``quantile(pnl, 0.9)`` is the batch's quantile, and a volatility regime's Sharpe is written
  with a mask from ``quantile``;
- a bad call is a located diagnostic: a level outside [0, 1] or not a literal, an axis out of
  range, a quantile of integers, an unknown tie method.

Float64 for the whole module: gradients are compared with finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats

import ddm
from ddm.library import OPS
from ddm.library.lazy import jax, jnp

from conftest import column_of, compile_error, fd_grad, type_of

pytestmark = pytest.mark.usefixtures("float64")

RNG = np.random.default_rng(7)
X = RNG.normal(size=(4, 6))  # distinct values: no ties
TIES = np.array([[0.3, -1.0, 0.3, 2.0, 0.3, -1.0], [1.0, 1.0, 1.0, 1.0, 0.0, 5.0]])


def impl(name, *args, **static):
    return np.asarray(OPS[name].impl(*args, **static))


# --- shape rules ---------------------------------------------------------------------------------


def test_shape_rules_of_good_calls():
    prog = ddm.loads("""dim T = 5
dim K = 3
input x: f32[T, K]
input n: i32[T]
node s = sort(x)
node s0 = sort(x, axis=0, descending=true)
node a = argsort(x, axis=0)
node r = rank(x)
node ri = rank(n, method="min")
node q = quantile(x, 0.5)
node qk = quantile(x, 0.5, axis=0)
node qs = quantile(x, [0.1, 0.5, 0.9], axis=-1)
node qkeep = quantile(x, [0.25, 0.75], axis=[0, 1], keepdims=true)
node sr = soft_rank(x, 0.1, axis=0)
node srn = soft_rank(n)
output s, s0, a, r, ri, q, qk, qs, qkeep, sr, srn
""")
    assert type_of(prog, "s") == "f32[T, K]"
    assert type_of(prog, "s0") == "f32[T, K]"
    assert type_of(prog, "a") == "i32[T, K]"
    assert type_of(prog, "r") == "f32[T, K]"  # average ranks: halves on ties
    assert type_of(prog, "ri") == "i32[T]"
    assert type_of(prog, "q") == "f32"
    assert type_of(prog, "qk") == "f32[K]"
    assert type_of(prog, "qs") == "f32[3, T]"  # the levels' axis first, as in np.quantile
    assert type_of(prog, "qkeep") == "f32[2, 1, 1]"
    assert type_of(prog, "sr") == "f32[T, K]"
    assert type_of(prog, "srn") == "f32[T]"


def test_a_program_computes_what_numpy_does():
    prog = ddm.loads("""dim N = 6
input x: f32[N]
node s = sort(x, descending=true)
node a = argsort(x)
node pos = rank(x, method="ordinal") - 1
node q = quantile(x, [0.0, 0.3, 1.0])
node top = quantile(x, 1)
output s, a, pos, q, top
""")
    x = X[0]
    out = prog.apply({}, x=x)
    np.testing.assert_allclose(out["s"], np.sort(x)[::-1], rtol=1e-6)
    assert np.asarray(out["a"]).tolist() == np.argsort(x, kind="stable").tolist()
    assert np.asarray(out["pos"]).tolist() == np.argsort(np.argsort(x)).tolist()
    np.testing.assert_allclose(out["q"], np.quantile(x, [0.0, 0.3, 1.0]), rtol=1e-6)
    np.testing.assert_allclose(out["top"], x.max(), rtol=1e-6)  # an integer level is a level


# --- values --------------------------------------------------------------------------------------


@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
def test_sort_and_argsort_are_numpys_along_any_axis(axis):
    for x in (X, TIES, TIES.astype(np.int32)):
        np.testing.assert_array_equal(impl("sort", x, axis=axis), np.sort(x, axis=axis))
        np.testing.assert_array_equal(
            impl("sort", x, axis=axis, descending=True), -np.sort(-x, axis=axis)
        )
        got = impl("argsort", x, axis=axis)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, np.argsort(x, axis=axis, kind="stable"))
        # descending: the largest first, ties still in their order of appearance
        np.testing.assert_array_equal(
            impl("argsort", x, axis=axis, descending=True),
            np.argsort(-x, axis=axis, kind="stable"),
        )


@pytest.mark.parametrize("method", ["average", "min", "max", "dense", "ordinal"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_rank_is_scipys_rankdata(method, axis):
    for x in (X, TIES, TIES.astype(np.int32), np.full((2, 3), 4.0), X[:, :1]):
        got = impl("rank", x, axis=axis, method=method)
        want = scipy.stats.rankdata(x, method=method, axis=axis)
        np.testing.assert_array_equal(got, want)
        average = np.float64 if x.dtype == np.float64 else np.float32  # integers: f32
        assert got.dtype == (average if method == "average" else np.int32)


def test_ordinal_rank_minus_one_is_argsort_of_argsort():
    for x in (X, TIES):
        np.testing.assert_array_equal(
            impl("rank", x, method="ordinal") - 1, np.argsort(np.argsort(x, kind="stable"))
        )


@pytest.mark.parametrize(
    "q", [0.0, 0.05, 0.25, 0.5, 0.9, 1.0, (0.05,), (0.0, 0.25, 0.5, 0.75, 1.0)]
)
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (-1, True), ((0, 1), True)])
def test_quantile_is_numpys_with_linear_interpolation(q, axis, keepdims):
    for x in (X, TIES):
        got = impl("quantile", x, q, axis=axis, keepdims=keepdims)
        want = np.quantile(x, q, axis=axis, keepdims=keepdims)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_quantile_of_a_scalar_is_the_scalar():
    assert impl("quantile", np.float64(2.5), 0.3).shape == ()
    assert impl("quantile", np.float64(2.5), (0.3, 0.7), keepdims=True).tolist() == [2.5, 2.5]


def test_soft_rank_tends_to_the_average_ranks():
    for x in (X, TIES):
        want = scipy.stats.rankdata(x, axis=-1)
        np.testing.assert_allclose(impl("soft_rank", x, 1e-6), want, atol=1e-9)
        np.testing.assert_allclose(
            impl("soft_rank", x, 1e-6, axis=0), scipy.stats.rankdata(x, axis=0), atol=1e-9
        )
        # a large temperature pulls every rank towards the middle, (n + 1) / 2
        soft = impl("soft_rank", x, 1e6)
        np.testing.assert_allclose(soft, (x.shape[-1] + 1) / 2, atol=1e-5)
        # the ranks always sum to n (n + 1) / 2, whatever the temperature
        n = x.shape[-1]
        np.testing.assert_allclose(impl("soft_rank", x, 0.3).sum(-1), n * (n + 1) / 2, rtol=1e-12)


# --- gradients -----------------------------------------------------------------------------------


def _check_grad(f, x, rtol=1e-6, atol=1e-8):
    got = np.asarray(jax.grad(f)(jnp.asarray(x)))
    want = fd_grad(f, jnp.asarray(x)).reshape(np.shape(x))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return got


@pytest.mark.parametrize("axis,desc", [(-1, False), (0, True)])
def test_sort_passes_the_gradient_back_to_the_entries_it_moved(axis, desc):
    w = RNG.normal(size=X.shape)
    got = _check_grad(lambda x: jnp.sum(w * OPS["sort"].impl(x, axis, desc)), X)
    # a permutation: the gradient is w, permuted back
    order = np.argsort(-X if desc else X, axis=axis, kind="stable")
    back = np.empty_like(w)
    np.put_along_axis(back, order, w, axis=axis)
    np.testing.assert_allclose(got, back, rtol=1e-12)


@pytest.mark.parametrize("q,axis", [(0.3, None), (0.9, 0), ((0.05, 0.5, 0.95), -1), (1.0, 1)])
def test_quantile_is_differentiable_in_x(q, axis):
    w = RNG.normal(size=np.shape(np.quantile(X, q, axis=axis)))
    got = _check_grad(lambda x: jnp.sum(w * OPS["quantile"].impl(x, q, axis)), X)
    assert np.any(got != 0)


def test_quantile_interpolates_between_its_two_neighbours():
    # n = 5, q = 0.3: (n - 1) q = 1.2, so 0.8 of the 2nd smallest and 0.2 of the 3rd
    x = np.array([4.0, 0.0, 3.0, 1.0, 2.0])
    got = np.asarray(jax.grad(lambda v: OPS["quantile"].impl(v, 0.3))(jnp.asarray(x)))
    np.testing.assert_allclose(got, [0.0, 0.0, 0.0, 0.8, 0.2], rtol=1e-12)


def test_soft_rank_is_differentiable_in_x_and_the_temperature():
    w = RNG.normal(size=X.shape)
    _check_grad(lambda x: jnp.sum(w * OPS["soft_rank"].impl(x, 0.7)), X)
    _check_grad(lambda x: jnp.sum(w * OPS["soft_rank"].impl(x, 0.7, axis=0)), X)
    _check_grad(lambda t: jnp.sum(w * OPS["soft_rank"].impl(jnp.asarray(X), t)), np.float64(0.7))


@pytest.mark.parametrize("name", ["argsort", "rank"])
def test_argsort_and_rank_pass_no_gradient(name):
    # i32 or piecewise constant: what reaches x through them is exactly zero
    def f(x):
        return jnp.sum(jnp.asarray(OPS[name].impl(x), x.dtype) * jnp.arange(6.0))

    assert np.all(np.asarray(jax.grad(f)(jnp.asarray(X))) == 0)
    assert OPS[name].no_grad is not None and OPS[name].no_grad.reason == "order"


def test_a_loss_through_quantile_trains_its_param():
    prog = ddm.loads(
        """input x: f32
param scale: f32 = 1.5
param shift: f32 = 0.2
node pnl = scale * x + shift
loss = -quantile(pnl, 0.1) + 0.01 * scale ** 2
""",
        x64=True,
    )
    assert prog.warnings == ()
    batch = {"x": RNG.normal(size=17)}
    params = prog.init(jax.random.key(0))
    got = np.concatenate(
        [np.ravel(v) for v in jax.tree.leaves(jax.grad(lambda p: prog.loss(p, batch))(params))]
    )
    want = fd_grad(lambda p: prog.loss(p, batch), params)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    q = np.quantile(1.5 * batch["x"] + 0.2, 0.1)
    np.testing.assert_allclose(prog.loss(params, batch), -q + 0.01 * 1.5**2, rtol=1e-12)


@pytest.mark.parametrize(
    "score,line,hint",
    [("rank(pnl)", 4, "soft_rank(x, temperature)"), ("f32(argsort(pnl))", 4, "soft_rank")],
)
def test_the_lint_names_the_ordering_and_its_relaxation(score, line, hint):
    text = f"""dim N = 4
input x: f32[N]
param w: f32 = 1.0
node pnl = w * x
node score = {score}
loss = -mean(sum(score * x))
"""
    prog = ddm.loads(text, x64=True)
    (warning,) = prog.warnings
    op = score.split("(")[0] if not score.startswith("f32") else "argsort"
    col = column_of(text, 5, op + "(pnl)") if op == "rank" else column_of(text, 5, "argsort")
    assert (
        f"param 'w' reaches the loss only through the ordering {op}(…) at 5:{col}, "
        "whose derivative is zero" in warning.message
    )
    assert hint in (warning.hint or "")
    assert warning.span.line == 3


def test_the_relaxation_trains():
    prog = ddm.loads(
        """dim N = 4
input x: f32[N]
param w: f32 = 1.0
node score = soft_rank(w * x, 0.5)
loss = -mean(sum(score * x))
""",
        x64=True,
    )
    assert prog.warnings == ()
    batch = {"x": RNG.normal(size=(8, 4))}
    params = prog.init(jax.random.key(0))
    got = float(jax.grad(lambda p: prog.loss(p, batch))(params)["w"])
    np.testing.assert_allclose(got, fd_grad(lambda p: prog.loss(p, batch), params)[0], rtol=1e-6)
    assert got != 0


# --- at the batch level: metrics over a batch's quantiles ---------------------------------------

REGIMES = """dim W = 8
input r: f32[W]
input h: f32
node vol = std(r)
node pnl = h * sum(r)
metric q90 = quantile(pnl, 0.9)
metric var_5 = -quantile(pnl, 0.05)
metric tail_mean = sum(where(pnl <= quantile(pnl, 0.05), pnl, 0.0))
    / sum(f32(pnl <= quantile(pnl, 0.05)))
metric quartiles = sum(quantile(vol, [0.25, 0.5, 0.75]) * [1.0, 10.0, 100.0])
metric calm_sharpe = sum(where(vol <= quantile(vol, 0.25), pnl, 0.0))
    / sqrt(
        sum(f32(vol <= quantile(vol, 0.25))) * sum(where(vol <= quantile(vol, 0.25), pnl ** 2, 0.0))
            - sum(where(vol <= quantile(vol, 0.25), pnl, 0.0)) ** 2
    )
metric top_rank = max(rank(pnl))
"""


def test_metrics_take_quantiles_over_the_batch():
    prog = ddm.loads(REGIMES, x64=True)
    n = 40
    r = RNG.normal(size=(n, 8)) * RNG.uniform(0.5, 2.0, size=(n, 1))  # one volatility a row
    h = RNG.uniform(0.5, 1.5, size=n)
    got = prog.metrics({}, {"r": r, "h": h})
    pnl, vol = h * r.sum(1), r.std(1)
    np.testing.assert_allclose(got["q90"], np.quantile(pnl, 0.9), rtol=1e-12)
    np.testing.assert_allclose(got["var_5"], -np.quantile(pnl, 0.05), rtol=1e-12)
    tail = pnl[pnl <= np.quantile(pnl, 0.05)]
    np.testing.assert_allclose(got["tail_mean"], tail.mean(), rtol=1e-12)
    np.testing.assert_allclose(
        got["quartiles"], np.quantile(vol, [0.25, 0.5, 0.75]) @ [1.0, 10.0, 100.0], rtol=1e-12
    )
    # the Sharpe of the calm regime: the samples in the bottom 25 % of realised volatility
    calm = pnl[vol <= np.quantile(vol, 0.25)]
    assert len(calm) == 10
    np.testing.assert_allclose(got["calm_sharpe"], calm.mean() / calm.std(), rtol=1e-9)
    assert float(got["top_rank"]) == n


# --- located errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decl,kind,message,needle",
    [
        (
            "input x: f32[4]\nnode c = quantile(x, 1.5)",
            "shape",
            "quantile()'s argument 'q' must lie in [0, 1], got 1.5",
            "1.5",
        ),
        (
            "input x: f32[4]\nnode c = quantile(x, [0.5, -0.1])",
            "shape",
            "quantile()'s argument 'q' must lie in [0, 1], got -0.1",
            "-0.1",
        ),
        (
            "input x: f32[4]\ninput p: f32\nnode c = quantile(x, p)",
            "arity",
            "quantile()'s argument 'q' must be a literal number in [0, 1] or a list of them",
            "p)",
        ),
        (
            "input x: f32[4]\nnode c = quantile(x, true)",
            "arity",
            "must be a literal number in [0, 1]",
            "true",
        ),
        (
            "input x: f32[4]\nnode c = quantile(x, [])",
            "arity",
            "quantile()'s argument 'q' must list at least one level",
            "[]",
        ),
        (
            "input x: f32[4]\nnode c = quantile(x, 0.5, axis=1)",
            "shape",
            "quantile: axis 1 is out of range for a tensor of rank 1",
            "x,",
        ),
        (
            "input x: i32[4]\nnode c = quantile(x, 0.5)",
            "dtype",
            "quantile expects floats, got i32[4]",
            "x,",
        ),
        (
            "input x: bool[4]\nnode c = quantile(x, 0.5)",
            "dtype",
            "quantile expects floats, got bool[4]",
            "x,",
        ),
        (
            "input x: f32\nnode c = sort(x)",
            "shape",
            "sort orders along an axis, got a scalar f32",
            "x)",
        ),
        (
            "input x: bool[3]\nnode c = argsort(x)",
            "dtype",
            "argsort expects numbers, got bool[3]",
            "x)",
        ),
        (
            "input x: f32[3]\nnode c = rank(x, axis=-2)",
            "shape",
            "rank: axis -2 is out of range for a tensor of rank 1",
            "x,",
        ),
        (
            'input x: f32[3]\nnode c = rank(x, method="first")',
            "arity",
            "rank()'s argument 'method' must be one of \"average\"",
            '"first"',
        ),
        (
            "input x: f32[3]\nnode c = soft_rank(x, [0.1, 0.2])",
            "shape",
            "soft_rank's temperature must be a scalar, got f32[2]",
            "[0.1",
        ),
        (
            "input x: f32[3]\nnode c = soft_rank(x, -0.1)",
            "shape",
            "soft_rank(): temperature must be at least 0, got -0.1",
            "-0.1",
        ),
    ],
)
def test_bad_calls_are_located(decl, kind, message, needle):
    text = decl + "\noutput c\n"
    err = compile_error(text)
    line = decl.count("\n") + 1
    assert err.kind == kind
    assert message in err.message, err.message
    assert (err.span.line, err.span.column) == (line, column_of(text, line, needle))


def test_a_metric_of_a_per_sample_rank_must_still_reduce_the_batch():
    err = compile_error("input pnl: f32\nmetric m = rank(pnl)\n")
    assert err.kind == "shape" and "metric 'm' must be a scalar, got f32[batch]" in err.message
