"""Declarative nodes end to end: what a program states is what is solved and differentiated.

The solvers have their own tests (test_solvers_qp.py, test_solvers_smooth.py); here the
language's side: the problem the compiler builds from the text (P, c, A, b, G, h; the prox's
parameters), the class and backward it reports, gradients through a whole program against
finite differences (float64), run-time statuses, policies and composition with JAX transforms.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ddm
from ddm.runtime.errors import SolverDiagnostic

jax.config.update("jax_enable_x64", True)  # for arrays built at import
pytestmark = pytest.mark.usefixtures("float64")


def spd(rng, n, cond=10.0):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.linspace(1.0, cond, n)) @ q.T


def kkt_solution(P, c, A, b):
    """Reference: min ½xᵀPx + cᵀx s.t. Ax = b by one dense KKT solve (NumPy)."""
    n, p = P.shape[0], A.shape[0]
    K = np.block([[P, A.T], [A, np.zeros((p, p))]])
    return np.linalg.solve(K, np.concatenate([-c, b]))[:n]


def central_fd(f, x, h=1e-6):
    x = np.asarray(x, float)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1e-12, np.max(np.abs(b))))


BUDGET = """
dim N
input b: f32[N]
input S: f32[N, N]
param lam: f32 = 0.7 positive
node w = argmin v: f32[N] { lam * quad(v, S) - dot(b, v) } subject to { sum(v) == 1 }
output w
loss = mean(sum(w * w, axis=1))
"""


# --- class 1: what is solved ----------------------------------------------------------------


@settings(max_examples=8, deadline=None)
@given(n=st.integers(2, 7), seed=st.integers(0, 2**16))
def test_budget_node_solves_the_stated_kkt_system(n, seed):
    rng = np.random.default_rng(seed)
    prog = ddm.loads(BUDGET, x64=True)
    params = prog.init(jax.random.key(0), N=n)
    S, b = spd(rng, n), rng.normal(size=n)
    w = prog.apply(params, b=b, S=S)["w"]
    want = kkt_solution(2 * 0.7 * S, -b, np.ones((1, n)), np.ones(1))
    assert rel_err(w, want) < 1e-9


@settings(max_examples=6, deadline=None)
@given(n=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_budget_gradients_match_finite_differences(n, seed):
    """d loss / d (log λ, b, S) through the node equals central differences (float64)."""
    rng = np.random.default_rng(seed)
    prog = ddm.loads(BUDGET, x64=True)
    params = prog.init(jax.random.key(0), N=n)
    S, b = spd(rng, n)[None], rng.normal(size=(1, n))

    def loss(lam_log, b, S):
        return prog.loss({"lam": lam_log}, {"b": b, "S": S})

    g_lam, g_b, g_S = jax.grad(loss, argnums=(0, 1, 2))(params["lam"], b, S)
    fd_lam = central_fd(lambda t: float(loss(t, b, S)), np.asarray(params["lam"]))
    fd_b = central_fd(lambda t: float(loss(params["lam"], t, S)), b)
    fd_S = central_fd(lambda t: float(loss(params["lam"], b, t)), S)
    assert rel_err(g_lam, fd_lam) < 1e-6
    assert rel_err(g_b, fd_b) < 1e-6
    assert rel_err(g_S, fd_S) < 1e-6


def test_argmax_is_argmin_of_the_negated_objective():
    text = BUDGET.replace(
        "argmin v: f32[N] { lam * quad(v, S) - dot(b, v) }",
        "argmax v: f32[N] { dot(b, v) - lam * quad(v, S) }",
    )
    rng = np.random.default_rng(1)
    S, b = spd(rng, 4), rng.normal(size=4)
    a, m = ddm.loads(BUDGET, x64=True), ddm.loads(text, x64=True)
    pa, pm = a.init(jax.random.key(0), N=4), m.init(jax.random.key(0), N=4)
    np.testing.assert_allclose(a.apply(pa, b=b, S=S)["w"], m.apply(pm, b=b, S=S)["w"], rtol=1e-10)


def test_quadratic_atoms_and_affine_arguments_build_the_same_problem():
    """quad(v − m, S), sum((Jv) ** 2) and mean(...) terms: P and c come out right."""
    rng = np.random.default_rng(2)
    n = 4
    S, J, m = spd(rng, n), rng.normal(size=(3, n)), rng.normal(size=n)
    prog = ddm.loads(
        """
        dim N = 4
        input S: f32[N, N]
        input J: f32[3, N]
        input m: f32[N]
        node w = argmin v: f32[N] {
            quad(v - m, S) + 0.5 * sum((J @ v) ** 2) + 2.0 * mean(v ** 2) - 3.0 * sum(v)
        } subject to { v[0] + 2.0 * v[1] == 1.0 }
        output w
    """,
        x64=True,
    )
    w = prog.apply({}, S=S, J=J, m=m)["w"]
    P = 2 * S + J.T @ J + (4.0 / n) * np.eye(n)
    c = -2 * S @ m - 3.0 * np.ones(n)
    A = np.array([[1.0, 2.0, 0.0, 0.0]])
    assert rel_err(w, kkt_solution(P, c, A, np.ones(1))) < 1e-9


def test_the_solver_is_handed_an_exactly_symmetric_P(monkeypatch):
    """P is symmetric to the last bit — S + Sᵀ for quad(·, S) even when S is not symmetric,
    products like Jᵀ(T + Tᵀ)J symmetrised — so the solver is told to skip its own
    symmetrisation."""
    from ddm.library.solvers import eq_qp as module

    seen, flags = [], []
    real = module.eq_qp

    def spy(P, c, A, b, opts, *, symmetric=False):
        flags.append(symmetric)
        jax.debug.callback(lambda P: seen.append(np.asarray(P)), P)  # P is traced
        return real(P, c, A, b, opts, symmetric=symmetric)

    monkeypatch.setattr(module, "eq_qp", spy)
    rng = np.random.default_rng(5)
    prog = ddm.loads(
        """
        dim N = 5
        input S: f32[N, N]
        input J: f32[3, N]
        input T: f32[3, 3]
        node w = argmin v: f32[N] {
            quad(v, S) + 0.7 * sum((J @ v) ** 2) + quad(J @ v, T) + sum(v ** 2) - sum(v)
        } subject to { sum(v) == 1 }
        output w
    """,
        x64=True,
    )
    S = rng.normal(size=(5, 5)) + 5 * np.eye(5)  # not symmetric
    T = rng.normal(size=(3, 3)) + 3 * np.eye(3)  # Jᵀ(T + Tᵀ)J rounds asymmetrically
    prog.apply({}, S=S, J=rng.normal(size=(3, 5)), T=T)
    assert flags == [True] and seen
    for P in seen:
        np.testing.assert_array_equal(P, np.swapaxes(P, -1, -2))


TWO_NODES = """
dim N = 4
input S: f32[N, N]
input b: f32[N]
input c: f32[N]
node w = argmin v: f32[N] { quad(v, S) - dot(b, v) } subject to { sum(v) == 1 }
node w_mv = argmin v: f32[N] { quad(v, S) } subject to { sum(v) == 1 }
node w_c = argmin v: f32[N] { quad(v, S) - dot(c, v) } subject to { sum(v) == 1, v >= 0 }
output w, w_mv, w_c
"""


def test_independent_nodes_of_one_shape_share_one_solve_and_keep_their_answers():
    """w and w_mv (class 1, same shapes, neither reading the other) are solved as one stacked
    problem: the compiled program factors once where it factored twice, and each node's
    value, gradient and status are those of the node solved alone. w_c (class 2) is not
    joined to them."""
    rng = np.random.default_rng(8)
    B = 5
    S = np.stack([spd(rng, 4) for _ in range(B)])
    b, c = rng.normal(size=(B, 4)), rng.normal(size=(B, 4))
    both = ddm.loads(TWO_NODES, x64=True)
    alone = {
        name: ddm.loads(TWO_NODES.replace("output w, w_mv, w_c", f"output {name}"), x64=True)
        for name in ("w", "w_mv", "w_c")
    }
    inputs = {"S": S, "b": b, "c": c}

    def hlo(prog):
        return jax.jit(prog.product.apply_batch).lower({}, inputs).as_text()

    # one Cholesky factorisation per class 1 solve (the interior point's are in its loop)
    assert hlo(both).count("potrf") == hlo(alone["w"]).count("potrf") + hlo(alone["w_c"]).count(
        "potrf"
    )
    out, aux = both.product.apply_batch({}, inputs)
    for name, prog in alone.items():
        want, want_aux = prog.product.apply_batch({}, inputs)
        np.testing.assert_allclose(out[name], want[name], rtol=1e-12, atol=1e-14)
        (info,) = want_aux.solvers.values()
        vid = both.product.graph.nodes[name]
        np.testing.assert_array_equal(aux.solvers[vid].status, info.status)

    def loss(prog, inputs):
        out, _ = prog.product.apply_batch({}, inputs)
        return sum(jnp.sum(out[k] * np.arange(1.0, 5.0)) for k in out)

    # the gradients through the shared class 1 solve (the interior point's compile is slow)
    pair = ddm.loads(TWO_NODES.replace("output w, w_mv, w_c", "output w, w_mv"), x64=True)
    g_both = jax.grad(lambda i: loss(pair, i))(inputs)
    g_alone = [jax.grad(lambda i, p=alone[k]: loss(p, i))(inputs) for k in ("w", "w_mv")]
    for k in inputs:
        np.testing.assert_allclose(g_both[k], sum(g[k] for g in g_alone), rtol=1e-10, atol=1e-12)


def test_matrix_decision_variable():
    """A [N, K] variable: each row sums to one, nearest to a target T in least squares."""
    rng = np.random.default_rng(3)
    T = rng.normal(size=(3, 2))
    prog = ddm.loads(
        """
        dim N = 3
        dim K = 2
        input T: f32[N, K]
        node W = argmin V: f32[N, K] { sum((V - T) ** 2) } subject to { sum(V, axis=1) == 1 }
        output W
    """,
        x64=True,
    )
    W = np.asarray(prog.apply({}, T=T)["W"])
    want = T + (1 - T.sum(1, keepdims=True)) / 2  # projection onto each row's hyperplane
    np.testing.assert_allclose(W, want, atol=1e-10)


def test_node_in_float64_inside_a_float32_pipeline():
    prog = ddm.loads(
        BUDGET.replace(
            "subject to { sum(v) == 1 }", 'subject to { sum(v) == 1 } using kkt(dtype="f64")'
        )
    )
    params = prog.init(jax.random.key(0), N=3)
    rng = np.random.default_rng(4)
    w = prog.apply(
        params, b=rng.normal(size=3).astype(np.float32), S=spd(rng, 3).astype(np.float32)
    )["w"]
    assert w.dtype == jnp.float32
    assert abs(float(jnp.sum(w)) - 1.0) < 1e-6


# --- class 2: inequalities ------------------------------------------------------------------

LONG_ONLY = """
dim N
input b: f32[N]
input S: f32[N, N]
param lam: f32 = 0.5 positive
node w = argmin v: f32[N] { lam * quad(v, S) - dot(b, v) } subject to {
    sum(v) == 1, v >= 0, v <= 0.6
}
output w
loss = mean(sum(w * w, axis=1) + dot(w[0], w[0]))
"""


def test_long_only_node_satisfies_kkt_conditions():
    rng = np.random.default_rng(5)
    n = 6
    S, b = spd(rng, n), rng.normal(size=n)
    prog = ddm.loads(LONG_ONLY, x64=True)
    params = prog.init(jax.random.key(0), N=n)
    w = np.asarray(prog.apply(params, b=b, S=S)["w"])
    assert abs(w.sum() - 1) < 1e-8 and w.min() > -1e-8 and w.max() < 0.6 + 1e-8
    # stationarity on the free coordinates: the gradient is constant (the budget's multiplier)
    grad = 2 * 0.5 * S @ w - b
    free = (w > 1e-6) & (w < 0.6 - 1e-6)
    assert free.any()
    assert np.ptp(grad[free]) < 1e-6


def test_long_only_gradient_matches_finite_differences_away_from_kinks():
    rng = np.random.default_rng(6)
    n = 5
    S, b = spd(rng, n)[None], rng.normal(size=(1, n))
    prog = ddm.loads(LONG_ONLY, x64=True)
    params = prog.init(jax.random.key(0), N=n)
    w = np.asarray(prog.apply(params, b=b[0], S=S[0])["w"])
    assert np.min(np.minimum(np.abs(w), np.abs(w - 0.6))) > 1e-4 or np.sum(w > 1e-4) < n

    def loss(b):
        return prog.loss(params, {"b": b, "S": S})

    g = jax.grad(loss)(b)
    fd = central_fd(lambda t: float(loss(t)), b, h=1e-6)
    assert rel_err(g, fd) < 1e-4


# --- class 3 and 4 --------------------------------------------------------------------------


def test_smooth_objective_with_equality_is_class_3_and_correct():
    prog = ddm.loads(
        """
        dim N = 4
        input a: f32[N]
        node w = argmin v: f32[N] { sum(softplus(v - a)) + 0.5 * sum(v ** 2) }
            subject to { sum(v) == 1 }
        output w
    """,
        x64=True,
    )
    assert "class 3" in prog.graph.values[prog.graph.nodes["w"]].attr("problem").describe()
    a = np.array([0.3, -1.0, 2.0, 0.5])
    w = np.asarray(prog.apply({}, a=a)["w"])
    grad = 1 / (1 + np.exp(-(w - a))) + w  # ∇f; at the optimum it is constant (multiplier)
    assert abs(w.sum() - 1) < 1e-9 and np.ptp(grad) < 1e-7


def test_l1_node_is_class_4_and_sparse():
    prog = ddm.loads(
        """
        dim N = 5
        input y: f32[N]
        param kappa: f32 = 0.5 positive
        node w = argmin v: f32[N] { 0.5 * sum((v - y) ** 2) + kappa * sum(abs(v)) }
        output w
    """,
        x64=True,
    )
    params = prog.init(jax.random.key(0))
    y = np.array([1.0, -0.2, 0.3, -2.0, 0.45])
    w = np.asarray(prog.apply(params, y=y)["w"])
    np.testing.assert_allclose(w, np.sign(y) * np.maximum(np.abs(y) - 0.5, 0), atol=1e-8)


def test_turnover_cost_on_a_long_only_budget_is_class_4_with_gradients():
    """A fully invested long-only portfolio paying κ per unit traded away from holdings h:
    the L1 term's centre is data, the simplex its feasible set."""
    prog = ddm.loads(
        """
        dim N = 5
        input b: f32[N]
        input h: f32[N]
        input S: f32[N, N]
        param kappa: f32 = 0.3 positive
        node w = argmin v: f32[N] { quad(v, S) - dot(b, v) + kappa * sum(abs(v - h)) }
            subject to { sum(v) == 1, v >= 0 }
        output w
        loss = mean(sum(w * b, axis=1)) + mean(sum(w * w, axis=1))
    """,
        x64=True,
    )
    p = prog.graph.values[prog.graph.nodes["w"]].attr("problem")
    assert (p.klass, p.solver) == (4, "prox")
    rng = np.random.default_rng(12)
    S = spd(rng, 5)[None]
    b, h = 0.6 * rng.normal(size=(1, 5)), rng.dirichlet(np.ones(5))[None]
    params = prog.init(jax.random.key(0))
    w = np.asarray(prog.apply_batch(params, b=b, S=S, h=h)["w"])[0]
    assert abs(w.sum() - 1) < 1e-9 and w.min() >= 0
    assert np.isclose(w, h[0], atol=1e-9).any()  # some holdings are not traded

    def loss(b):
        return prog.loss(params, {"b": b, "S": S, "h": h})

    g = jax.grad(loss)(jnp.asarray(b))
    assert rel_err(g, central_fd(lambda t: float(loss(t)), b)) < 1e-4


# --- the compiler's choices -----------------------------------------------------------------


def test_linear_objective_keeps_implicit_backward_and_says_its_gradients_vanish():
    prog = ddm.loads(
        """
        dim N = 3
        input b: f32[N]
        node w = argmin v: f32[N] { dot(b, v) } subject to { sum(v) == 1, v >= 0 }
        output w
        loss = sum(w * b)
    """,
        x64=True,
    )
    p = prog.graph.values[prog.graph.nodes["w"]].attr("problem")
    assert (p.klass, p.backward, p.backward_by) == (2, "implicit", "compiler")
    assert "zero almost everywhere" in p.describe()
    # the vertex does not move with b: d loss/d b = w exactly (the direct term only)
    params = prog.init(jax.random.key(0))
    b = np.array([0.3, -0.5, 0.1])
    g = jax.grad(lambda bb: prog.loss(params, {"b": bb[None]}))(jnp.asarray(b))
    np.testing.assert_allclose(g, [0.0, 1.0, 0.0], atol=1e-6)


def test_unrolled_node_accepts_its_kth_iterate():
    """backward unroll(k): the value is the k-th iterate by definition, so stopping at the
    iteration limit is not a failure (strict mode does not raise), and its gradient is that of
    the iterate: finite."""
    prog = ddm.loads(LONG_ONLY.replace("\n}\noutput", "\n} backward unroll(3)\noutput"), x64=True)
    assert prog.graph.values[prog.graph.nodes["w"]].attr("problem").steps == 3
    rng = np.random.default_rng(2)
    S, b = spd(rng, 4)[None], rng.normal(size=(1, 4))
    params = prog.init(jax.random.key(0))
    info = prog.solver_info(params, b=b, S=S)["w"]
    assert int(info.status[0]) == 1 and int(info.iterations[0]) == 3  # max-iter
    g = jax.grad(lambda bb: prog.loss(params, {"b": bb, "S": S}))(jnp.asarray(b))
    assert np.all(np.isfinite(g)) and np.any(g != 0)


def test_newton_hint_on_a_quadratic_runs_newton():
    prog = ddm.loads(BUDGET.replace("sum(v) == 1 }", "sum(v) == 1 } using newton"), x64=True)
    p = prog.graph.values[prog.graph.nodes["w"]].attr("problem")
    assert (p.klass, p.solver) == (1, "newton")
    rng = np.random.default_rng(3)
    S, b = spd(rng, 5), rng.normal(size=5)
    params = prog.init(jax.random.key(0))
    w = np.asarray(prog.apply(params, b=b, S=S)["w"])
    P = 0.7 * (S + S.T)
    np.testing.assert_allclose(w, kkt_solution(P, -b, np.ones((1, 5)), np.ones(1)), atol=1e-8)
    info = prog.solver_info(params, b=b[None], S=S[None])["w"]
    assert int(info.iterations[0]) <= 2  # Newton on a quadratic: one step (plus the test)


# --- run-time statuses and policies ---------------------------------------------------------

INFEASIBLE = """
dim N = 3
input lo: f32
node w = argmin v: f32[N] { sum(v ** 2) } subject to { sum(v) == 1, v >= lo }{using}
output w
loss = mean(sum(w, axis=1))
"""


def test_infeasible_instance_is_named_and_the_others_are_solved():
    prog = ddm.loads(INFEASIBLE.replace("{using}", ""), file="inf.ddm")
    lo = np.array([0.0, 0.0, 1.0, 0.1], np.float32)  # instance 2: v ≥ 1 and sum(v) = 1
    with pytest.raises(SolverDiagnostic) as info:
        prog.apply_batch({}, lo=lo)
    text = str(info.value)
    assert "inf.ddm:4:10" in text and "'w'" in text and "instance 2 of 4" in text
    assert "infeasible" in text
    loose = ddm.loads(INFEASIBLE.replace("{using}", ""), strict=False)
    w = np.asarray(loose.apply_batch({}, lo=lo)["w"])
    np.testing.assert_allclose(w[[0, 1, 3]], np.full((3, 3), 1 / 3), atol=1e-5)
    status = np.asarray(loose.solver_info({}, lo=lo)["w"].status)
    assert status.tolist()[2] != 0 and status.tolist()[:2] == [0, 0] and status[3] == 0


def test_nan_policy_returns_nan_for_failed_instances_only():
    prog = ddm.loads(INFEASIBLE.replace("{using}", ' using ipm(on_infeasible="nan")'))
    w = np.asarray(prog.apply_batch({}, lo=np.array([0.0, 1.0], np.float32))["w"])
    assert np.all(np.isfinite(w[0])) and np.all(np.isnan(w[1]))


def test_closest_policy_returns_the_least_violating_point():
    prog = ddm.loads(INFEASIBLE.replace("{using}", ' using ipm(on_infeasible="closest")'), x64=True)
    w = np.asarray(prog.apply_batch({}, lo=np.array([1.0]))["w"])[0]
    # no point has v ≥ 1 and sum(v) = 1; the elastic problem balances both violations
    assert np.all(np.isfinite(w)) and np.ptp(w) < 1e-6 and 1 / 3 < w[0] <= 1.0


TWO_BOUNDS = """
dim N = 2
input lo: f32
node w = argmin v: f32[N] { sum(v ** 2) } subject to { sum(v) == 1, v >= lo }{using}
output w
loss = mean(w[:, 0] + 2 * w[:, 1])
"""


@pytest.mark.parametrize(
    "x64, atol",
    # float32 (40 s here) in make test-slow; the float64 case keeps the gradient check
    [pytest.param(False, 1e-3, marks=pytest.mark.slow), (True, 1e-6)],
    ids=["float32", "float64"],
)
def test_closest_point_is_right_in_both_precisions_with_its_status_and_gradient(x64, atol):
    """sum(v) == 1 and v >= 0.8 admit no point; the least violation is at v = [0.6, 0.6]
    (float32 once returned [0.496, 0.504] as "singular"). Its status says so ("closest", which
    the policy accepts); a feasible instance of the same batch is untouched. On the closest
    branch v = (1 + lo)/3: the loss mean(v₀ + 2v₁) moves by ½ per unit of lo, the feasible
    instance's (inactive bounds) by 0."""
    from ddm.library.solvers.status import CLOSEST, CONVERGED

    prog = ddm.loads(TWO_BOUNDS.replace("{using}", ' using ipm(on_infeasible="closest")'), x64=x64)
    plain = ddm.loads(TWO_BOUNDS.replace("{using}", ""), x64=x64)
    dtype = np.float64 if x64 else np.float32
    lo = np.array([0.8, 0.1], dtype)
    w = np.asarray(prog.apply_batch({}, lo=lo)["w"])
    np.testing.assert_allclose(w[0], [0.6, 0.6], atol=atol)
    np.testing.assert_array_equal(w[1], np.asarray(plain.apply_batch({}, lo=lo[1:])["w"])[0])
    info = prog.solver_info({}, lo=lo)["w"]
    assert list(np.asarray(info.status)) == [CLOSEST, CONVERGED]
    # compiled once: the finite differences below read its value four more times
    value_and_grad = jax.jit(jax.value_and_grad(lambda lo: prog.loss({}, {"lo": lo})))
    g = np.asarray(value_and_grad(jnp.asarray(lo))[1])
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, [0.5, 0.0], atol=10 * atol)
    if x64:
        fd = central_fd(lambda lo: float(value_and_grad(jnp.asarray(lo))[0]), lo)
        np.testing.assert_allclose(g, fd, atol=1e-6)


FLAT = """
param a: f32 = 0.3
input z: f32
node w = argmin v: f32[2] { {objective} }{using}
output w
loss = mean({loss})
"""


@pytest.mark.parametrize(
    "objective, using, loss, expected",
    [
        # v₁ = 0 whatever a: the Hessian diag(2, 0) is singular at a differentiable minimum
        (
            "(v[0] - a - z) ** 2 + v[1] ** 4",
            "",
            "w[:, 0] ** 2 + w[:, 1]",
            lambda a, z: (np.stack([a + z, 0 * z], -1), np.mean(2 * (a + z))),
        ),
        # a line of minimisers: Newton from 0 returns the minimum-norm one, ((a+z)/2, −(a+z)/2)
        (
            "(v[0] - v[1] - a - z) ** 2",
            " using newton",
            "w[:, 0] + 3 * w[:, 1]",
            lambda a, z: (np.stack([a + z, -(a + z)], -1) / 2, -1.0),
        ),
    ],
    ids=["flat-direction", "valley"],
)
def test_singular_hessian_node_has_the_least_squares_gradient(objective, using, loss, expected):
    """Through the program: the solve converges, the gradient is finite and equals finite
    differences and the derivative of the point returned. solver_info (a primal call) reports
    the dense adjoint as planned — decided when the node is differentiated — with no
    conditioning measured."""
    from ddm.library.solvers.status import ADJ_DENSE, CONVERGED

    text = FLAT.replace("{objective}", objective).replace("{using}", using)
    prog = ddm.loads(text.replace("{loss}", loss), x64=True)
    params = prog.init(jax.random.key(0))
    z = np.array([0.0, 0.1, -0.2])
    want_w, want_g = expected(0.3, z)
    np.testing.assert_allclose(prog.apply_batch(params, z=z)["w"], want_w, atol=1e-8)
    np.testing.assert_allclose(prog.apply(params, z=0.1)["w"], want_w[1], atol=1e-8)
    info = prog.solver_info(params, z=z)["w"]
    assert np.all(np.asarray(info.status) == CONVERGED)
    assert np.all(np.asarray(info.adjoint) == ADJ_DENSE)
    assert np.all(np.isnan(np.asarray(info.conditioning)))
    g = float(jax.grad(lambda p: prog.loss(p, {"z": z}))(params)["a"])
    # the solution is affine in a and the losses at most quadratic: a wide step is exact, and
    # stays clear of the ~1e-9 rounding noise along the valley's floor
    fd = central_fd(
        lambda a: float(prog.loss({"a": jnp.asarray(a)}, {"z": z})), np.array(0.3), h=1e-2
    )
    assert abs(g - want_g) < 1e-7 and abs(g - float(fd)) < 1e-6


def test_indefinite_matrix_at_run_time_is_a_named_diagnostic():
    prog = ddm.loads(BUDGET, file="budget.ddm")
    params = prog.init(jax.random.key(0), N=2)
    S = np.array([[1.0, 0.0], [0.0, -1.0]], np.float32)
    with pytest.raises(SolverDiagnostic) as info:
        prog.apply(params, b=np.zeros(2, np.float32), S=S)
    assert "singular" in str(info.value) and "budget.ddm:6:10" in str(info.value)


def test_nan_in_data_is_named_not_propagated():
    prog = ddm.loads(BUDGET)
    params = prog.init(jax.random.key(0), N=2)
    with pytest.raises(SolverDiagnostic) as info:
        prog.apply(params, b=np.array([np.nan, 0.0], np.float32), S=np.eye(2, dtype=np.float32))
    assert "non-finite" in str(info.value)


def test_a_failed_instance_has_no_finite_gradient():
    prog = ddm.loads(INFEASIBLE.replace("{using}", ""), strict=False, x64=True)

    def total(lo):
        return prog.loss({}, {"lo": lo})

    g = jax.grad(total)(jnp.array([0.0, 1.0]))
    assert not np.all(np.isfinite(np.asarray(g)))


# --- composition ----------------------------------------------------------------------------


def test_node_composes_with_jit_vmap_grad_and_scan():
    prog = ddm.loads(BUDGET, x64=True)
    params = prog.init(jax.random.key(0), N=3)
    rng = np.random.default_rng(7)
    S = np.stack([spd(rng, 3) for _ in range(5)])
    b = rng.normal(size=(5, 3))
    one = jax.jit(lambda b, S: prog.product.apply(params, {"b": b, "S": S})[0]["w"])
    batched = jax.vmap(one)(b, S)
    np.testing.assert_allclose(batched, prog.apply_batch(params, b=b, S=S)["w"], rtol=1e-12)

    def scanned(carry, xs):
        w = one(xs[0] + carry, xs[1])
        return carry + 0.1 * w, jnp.sum(w**2)

    def rollout(b0):
        _, ys = jax.lax.scan(scanned, b0, (b, S))
        return jnp.sum(ys)

    g = jax.grad(rollout)(jnp.zeros(3))
    fd = central_fd(lambda t: float(rollout(jnp.asarray(t))), np.zeros(3))
    assert rel_err(g, fd) < 1e-6


def test_node_inside_a_fn_and_a_larger_pipeline():
    prog = ddm.loads(
        """
        dim N = 3
        input b: f32[N]
        param scale: f32 = 1.0
        fn portfolio(u: f32[N]) -> f32[N] {
            return argmin v: f32[N] { sum(v ** 2) - dot(u, v) } subject to { sum(v) == 1 }
        }
        node w = portfolio(scale * b)
        node pnl = dot(w, b)
        output w, pnl
        loss = -mean(pnl)
    """,
        x64=True,
    )
    params = prog.init(jax.random.key(0))
    b = np.array([[0.1, 0.2, -0.3]])
    w = np.asarray(prog.apply(params, b=b[0])["w"])
    np.testing.assert_allclose(w, b[0] / 2 + (1 - b[0].sum() / 2) / 3, atol=1e-10)
    g = jax.grad(lambda p: prog.loss(p, {"b": b}))(params)["scale"]
    fd = central_fd(lambda t: float(prog.loss({"scale": t}, {"b": b})), np.asarray(1.0))
    assert rel_err(g, fd) < 1e-6


@pytest.mark.parametrize("dtype", ["", 'using prox(dtype="f64")'])
def test_sparse_example_converges_on_real_daily_covariances(examples_dir, dtype):
    """The sparse portfolio's class 4 problem on 900+ real 60-day windows: its objective is
    ~1e-5 (daily covariances), where a backtracking test on function values alone is decided
    by rounding: 10 instances failed in float32 (2 in float64 with a smaller L1 price) before
    the curvature test also read gradients (docs/derivations.md §5.1)."""
    from ddm.runtime.data import SOURCES

    data = SOURCES["sp500_windows"].load(window=60, test_from="2016-01-01").train
    text = (examples_dir / "sparse_hedge.ddm").read_text()
    text = text.replace(
        "} subject to { v >= -w0, v <= 0.2 }", "} subject to { v >= -w0, v <= 0.2 } " + dtype
    )
    prog = ddm.loads(text, strict=False, x64=False)
    params = prog.init(jax.random.key(0))
    idx = np.arange(0, len(data["x"]), 7)
    info = prog.solver_info(params, x=data["x"][idx], R=data["R"][idx])["d"]
    status = np.asarray(info.status)
    assert np.all(status == 0), f"{np.sum(status != 0)} of {status.size} did not converge"
