"""The proximal solver's exact step: an objective ½L‖v‖² + qᵀv + g(v) with L > 0 known from
the program (a positive multiple of a sum of squares of ±v + c, affine terms, and an L1 term,
bounds or a simplex) is minimised by prox_{g/L}(−q/L), so the node takes that one step instead
of iterating (compiler/declarative.py ``_exact_step``, library/solvers/prox.py ``exact_step``).

Specifications: the compiler says so (``Problem.exact_step``, ``ddmc check``); the value and the
implicit gradient are those of the iterative solver on the same problem written so that the
compiler cannot see the structure (``quad(v, I)`` with I an input), in float64; the gradient
matches finite differences; what the step cannot promise (``unroll(k)``, a coefficient of
unknown sign, a matrix, a scaled v) keeps the iterations; an empty box is ``infeasible`` and
an L1 weight the data make negative ``singular`` on both paths, named by the error policy.
"""

import numpy as np
import pytest

import ddm
from ddm.library.lazy import jax
from ddm.library.solvers.status import ADJOINT_NAMES, STATUS_NAMES
from ddm.runtime.errors import SolverDiagnostic

from conftest import fd_grad

pytestmark = pytest.mark.usefixtures("float64")

HEAD = """\
dim N = 4
input a: f32[N]
input lo: f32[N]
input hi: f32[N]
input I: f32[N, N]
param k: f32 = 1.5 positive
param lam: f32 = 0.3 positive
"""
TAIL = """
output w
loss = mean(sum(w * w, axis=1) + sum(w * a, axis=1))
"""

# (objective as the compiler sees through it, the same objective hidden behind quad(v, I),
#  constraints, using)
CASES = {
    "box": (
        "k * sum((v - a) ** 2)",
        "k * quad(v, I) - 2.0 * k * dot(a, v)",
        "v >= lo, v <= hi",
        "using prox",
    ),
    "l1_box": (
        "k * sum((v - a) ** 2) + lam * sum(abs(v))",
        "k * quad(v, I) - 2.0 * k * dot(a, v) + lam * sum(abs(v))",
        "v >= lo, v <= hi",
        "",
    ),
    "l1_centre_lower": (
        "k * mean((a - v) ** 2) + lam * sum(abs(v - 0.1))",
        "0.25 * k * quad(v, I) - 0.5 * k * dot(a, v) + lam * sum(abs(v - 0.1))",
        "v >= lo",
        "",
    ),
    "l1_simplex": (
        "k * sum((v - a) ** 2) + dot(hi, v) + lam * sum(abs(v - 0.25))",
        "k * quad(v, I) - 2.0 * k * dot(a, v) + dot(hi, v) + lam * sum(abs(v - 0.25))",
        "sum(v) == 1, v >= 0",
        "",
    ),
}

DATA = {
    "a": np.array([[0.9, -0.4, 0.2, 0.05], [-1.3, 0.6, 0.35, 0.17], [0.3, 0.3, -0.2, 0.8]]),
    "lo": np.array([[-0.5, -0.5, 0.0, 0.1], [-1.0, 0.0, 0.0, 0.0], [0.0, -0.1, -0.3, 0.0]]),
    "hi": np.array([[0.5, 0.5, 0.6, 0.7], [0.2, 0.4, 0.9, 0.5], [0.7, 0.25, 0.3, 0.6]]),
}
DATA["I"] = np.broadcast_to(np.eye(4), (3, 4, 4)).copy()


def source(objective: str, constraints: str, using: str, sense: str = "argmin") -> str:
    return (
        HEAD
        + f"node w = {sense} v: f32[N] {{ {objective} }} subject to {{ {constraints} }} {using}"
        + TAIL
    )


def problem(prog):
    return prog.graph.values[prog.graph.nodes["w"]].attr("problem")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_exact_step_is_the_iterative_solution_with_its_gradient(case):
    seen, hidden, cons, using = CASES[case]
    exact = ddm.loads(source(seen, cons, using), x64=True)
    iterative = ddm.loads(source(hidden, cons, using), x64=True)
    assert problem(exact).exact_step and not problem(iterative).exact_step
    params = exact.init(jax.random.key(0))

    info = exact.solver_info(params, **DATA)["w"]
    assert {STATUS_NAMES[int(s)] for s in np.asarray(info.status)} == {"converged"}
    assert set(np.asarray(info.iterations).tolist()) == {1}
    assert {ADJOINT_NAMES[int(s)] for s in np.asarray(info.adjoint)} == {"exact"}
    slow = iterative.solver_info(params, **DATA)["w"]
    assert {STATUS_NAMES[int(s)] for s in np.asarray(slow.status)} == {"converged"}
    assert np.all(np.asarray(slow.iterations) > 1)

    w = np.asarray(exact.apply_batch(params, **DATA)["w"])
    np.testing.assert_allclose(w, iterative.apply_batch(params, **DATA)["w"], atol=1e-7)
    if case == "box":  # the closed form itself: the clip of a
        np.testing.assert_allclose(w, np.clip(DATA["a"], DATA["lo"], DATA["hi"]), atol=1e-15)

    def grads(prog):
        return jax.grad(lambda p, d: prog.loss(p, d), argnums=(0, 1))(params, DATA)

    (gp, gd), (hp, hd) = grads(exact), grads(iterative)
    for name in ("k", "lam"):
        np.testing.assert_allclose(gp[name], hp[name], atol=1e-6, err_msg=name)
    for name in ("a", "lo", "hi"):
        np.testing.assert_allclose(gd[name], hd[name], atol=1e-6, err_msg=name)


def test_the_exact_steps_gradient_matches_finite_differences():
    seen, _, cons, using = CASES["l1_box"]
    prog = ddm.loads(source(seen, cons, using), x64=True)
    params = prog.init(jax.random.key(0))
    f = lambda p: prog.loss(p, DATA)  # noqa: E731
    g = jax.grad(f)(params)
    # the solution is piecewise smooth in (k, λ): a small step stays on one piece
    np.testing.assert_allclose([g["k"], g["lam"]], fd_grad(f, params, eps=1e-7), rtol=1e-6)
    assert abs(float(g["k"])) > 1e-3 and abs(float(g["lam"])) > 1e-3


def test_an_argmax_of_a_negated_distance_is_an_exact_step_too():
    seen, _, cons, using = CASES["l1_box"]
    negated = "-" + seen.replace(" + lam", " - lam")
    prog = ddm.loads(source(negated, cons, using, sense="argmax"), x64=True)
    plain = ddm.loads(source(seen, cons, using), x64=True)
    assert problem(prog).exact_step
    params = prog.init(jax.random.key(0))
    np.testing.assert_allclose(
        prog.apply_batch(params, **DATA)["w"], plain.apply_batch(params, **DATA)["w"], atol=1e-15
    )


def test_the_compiler_says_which_nodes_take_one_step():
    seen, _, cons, using = CASES["box"]
    text = problem(ddm.loads(source(seen, cons, using))).describe()
    assert "solver prox (one exact step)" in text, text


def test_the_no_transaction_band_is_a_clip(examples_dir):
    """examples/deep_hedge.ddm: ``(v - prev) ** 2`` between δ − w₀ and δ + w₁, in a scan."""
    prog = ddm.load(str(examples_dir / "deep_hedge.ddm"))
    (band,) = [v.attr("problem") for v in prog.graph.values if v.op == "argmin"]
    assert band.exact_step


@pytest.mark.parametrize(
    "objective, using, why",
    [
        ("k * sum((v - a) ** 2)", "using prox backward unroll(3)", "unroll promises iterations"),
        ("lo[0] * sum((v - a) ** 2)", "using prox", "a coefficient of unknown sign"),
        ("k * sum((2.0 * v - a) ** 2)", "using prox", "not ±v + c: its Hessian is not known"),
        ("k * quad(v, I)", "using prox", "a matrix"),
        ("k * sum((v - a) ** 2) + sum(exp(v))", "using prox", "a smooth term"),
    ],
)
def test_what_the_step_cannot_promise_keeps_the_iterations(objective, using, why):
    prog = ddm.loads(source(objective, "v >= lo, v <= hi", using), x64=True)
    assert not problem(prog).exact_step, why


@pytest.mark.parametrize("hidden", [False, True], ids=["exact", "iterative"])
def test_an_empty_box_is_infeasible_on_both_paths_and_named(hidden):
    seen, covered, cons, using = CASES["box"]
    prog = ddm.loads(source(covered if hidden else seen, cons, using), x64=True)
    params = prog.init(jax.random.key(0))
    data = {k: v.copy() for k, v in DATA.items()}
    data["lo"][1, 2] = data["hi"][1, 2] + 0.1  # instance 1: lo > hi in one coordinate
    failed(prog, params, data, 1, "infeasible")


def failed(prog, params, data, instance: int, status: str) -> None:
    """Instance ``instance`` of 3 has ``status`` and the others converged; the error policy
    names it; under a transformation the value and the gradient are NaN, never a plausible
    number."""
    info = prog.solver_info(params, **data)["w"]
    expected = ["converged"] * 3
    expected[instance] = status
    assert [STATUS_NAMES[int(s)] for s in np.asarray(info.status)] == expected
    match = f"instance {instance} of 3 during apply_batch: {status}"
    with pytest.raises(SolverDiagnostic, match=match):
        prog.apply_batch(params, **data)
    value, g = jax.jit(jax.value_and_grad(lambda p: prog.loss(p, data)))(params)
    assert np.isnan(float(value)) and np.isnan(float(g["k"]))


@pytest.mark.parametrize("hidden", [False, True], ids=["exact", "iterative"])
def test_an_l1_weight_below_zero_from_the_data_is_singular_on_both_paths(hidden):
    # lo[0] * sum(abs(v)): a weight of unknown sign, checked at run time — a negative one makes
    # the problem non-convex, and its prox pushes away from 0: a finite point minimising nothing
    seen, covered, cons, _ = CASES["l1_box"]
    weight = "lo[0] * sum(abs(v))"
    objective = (covered if hidden else seen).replace("lam * sum(abs(v))", weight)
    prog = ddm.loads(source(objective, cons, ""), x64=True)
    assert problem(prog).exact_step != hidden
    assert problem(prog).curvature == "checked at run time"
    params = prog.init(jax.random.key(0))
    data = {k: v.copy() for k, v in DATA.items()}
    assert data["lo"][0, 0] < 0 and data["lo"][1, 0] < 0 and data["lo"][2, 0] == 0
    data["lo"][1, 0] = 0.05  # instance 1: a positive weight (its box still holds its point)
    failed(prog, params, data, 0, "singular")
