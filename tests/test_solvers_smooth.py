"""Classes 3 (smooth, Newton–KKT) and 4 (smooth + nonsmooth, proximal gradient) and the implicit
differentiation helper they share: ddm.library.solvers.{newton, prox, implicit}.

Gradients are checked against central finite differences in float64, solutions against
independent references; ill-posed instances must report their status and a NaN gradient.

Compilation dominates the run time here, so every check goes through one jitted
value-and-gradient per (problem, options) pair (:func:`vg_for`), with the data as arguments so
that instances of the same shape share it; finite differences reuse the same function.
"""

import functools

import jax

jax.config.update("jax_enable_x64", True)  # for arrays built at import

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import scipy.optimize  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

from ddm.library.solvers import prox as P  # noqa: E402
from ddm.library.solvers.implicit import implicit_root, off_range_rtol, pivot_rtol  # noqa: E402
from ddm.library.solvers.newton import newton  # noqa: E402
from ddm.library.solvers.options import SolveOptions  # noqa: E402
from ddm.library.solvers.status import (
    ADJ_CG,
    ADJ_DENSE,
    ADJ_GMRES,
    ADJ_LSTSQ,  # noqa: E402
    ADJ_LU,
    ADJ_TRUNCATED,
    ADJ_UNROLL,
    CONVERGED,
    INFEASIBLE,
    MAX_ITER,
    NONFINITE,
    SINGULAR,
    UNBOUNDED,
    make_info,
)

pytestmark = pytest.mark.usefixtures("float64")

HYP = settings(
    max_examples=5, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


# XLA's backend optimisations cost more than they save on these tiny problems.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def fast_jit(fun, **kwargs):
    return jax.jit(fun, compiler_options=FAST_COMPILE, **kwargs)


def value_and_grad_of(solve, opts):
    """``(v, data) -> ((loss, (x, info)), ∂loss/∂v)`` for ``solve(v, data, opts)``.

    loss = Σᵢ (1 + i/n)·sin(xᵢ): a generic smooth read-out of the solution x.
    """

    def loss(v, data):
        x, info = solve(v, data, opts)
        n = x.shape[0]
        return jnp.sin(x) @ (1.0 + jnp.arange(n) / n), (x, info)

    return jax.value_and_grad(loss, has_aux=True)


@functools.lru_cache(maxsize=None)
def vg_for(solve, opts):
    """:func:`value_and_grad_of`, jitted once per (problem, options)."""
    return fast_jit(value_and_grad_of(solve, opts))


def solve_with_grad(solve, v, data, opts):
    """``(x, info, gradient)`` of the read-out loss at v."""
    (_, (x, info)), g = vg_for(solve, opts)(v, data)
    return x, info, g


def fd_gradient(solve, v, data, opts, h):
    """Central differences of the read-out loss in every coordinate of ``ravel(v)``."""
    flat, unravel = ravel_pytree(v)
    vg = vg_for(solve, opts)
    value = lambda u: float(vg(unravel(u), data)[0][0])  # noqa: E731
    E = h * np.eye(flat.shape[0])
    return jnp.array([(value(flat + e) - value(flat - e)) / (2 * h) for e in E])


def flat_grad(g):
    return ravel_pytree(g)[0]


def rel_err(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def all_nan(tree):
    return all(bool(jnp.all(jnp.isnan(a))) for a in jax.tree_util.tree_leaves(tree))


# ================================================================ class 3: newton

TIGHT = SolveOptions(tol=1e-13)
MATFREE = SolveOptions(tol=1e-13, matrix_free=True)
SIZES = [(3, 0), (5, 2)]  # (n, p): few shapes, since each costs a compilation


def smooth_f(x, th):
    """Σ softplus(Mx − c) + ½‖x‖² + w·logsumexp(x): smooth, strictly convex for w ≥ 0."""
    return (
        jnp.sum(jax.nn.softplus(th["M"] @ x - th["c"]))
        + 0.5 * x @ x
        + th["w"] * jax.nn.logsumexp(x)
    )


def smooth_instance(n, p, seed):
    """θ = {M, c, w} of the objective and the constraints' {A, b}, all differentiated."""
    rng = np.random.default_rng(seed)
    th = {
        "M": rng.normal(size=(n + 3, n)),
        "c": rng.normal(size=n + 3),
        "w": np.array(0.2 + rng.uniform()),
        "A": rng.normal(size=(p, n)),
        "b": rng.normal(size=p),
    }
    return jax.tree_util.tree_map(jnp.asarray, th)


def smooth(th, data, opts):
    n = th["M"].shape[1]
    return newton(
        smooth_f, {k: th[k] for k in ("M", "c", "w")}, th["A"], th["b"], jnp.zeros(n), opts
    )


@HYP
@given(size=st.sampled_from(SIZES), seed=st.integers(0, 2**16))
def test_newton_gradient_matches_finite_differences_and_matrix_free_agrees(size, seed):
    th = smooth_instance(*size, seed)
    x, info, g = solve_with_grad(smooth, th, None, TIGHT)
    assert int(info.status) == CONVERGED
    np.testing.assert_allclose(th["A"] @ x, th["b"], atol=1e-10)
    assert rel_err(flat_grad(g), fd_gradient(smooth, th, None, TIGHT, 1e-5)) < 1e-6
    # The matrix-free path (Hessian-vector products, CG / GMRES) gives the same answers.
    x_m, info_m, g_m = solve_with_grad(smooth, th, None, MATFREE)
    assert int(info_m.status) == CONVERGED
    np.testing.assert_allclose(x_m, x, atol=1e-10)
    assert rel_err(flat_grad(g_m), flat_grad(g)) < 1e-7


def test_newton_solution_matches_scipy():
    th = smooth_instance(5, 2, 7)
    x, info, _ = solve_with_grad(smooth, th, None, TIGHT)
    cons = {"type": "eq", "fun": lambda v: np.asarray(th["A"]) @ v - np.asarray(th["b"])}
    f, grad = jax.jit(smooth_f), jax.jit(jax.grad(smooth_f))
    ref = scipy.optimize.minimize(
        lambda v: float(f(jnp.asarray(v), th)),
        np.zeros(5),
        method="SLSQP",
        jac=lambda v: np.asarray(grad(jnp.asarray(v), th)),
        constraints=[cons],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    assert int(info.status) == CONVERGED
    np.testing.assert_allclose(x, ref.x, atol=1e-6)


def test_newton_unroll_and_truncated_gradients_approach_implicit():
    th = smooth_instance(3, 0, 3)
    _, _, g_imp = solve_with_grad(smooth, th, None, TIGHT)
    # Newton converges quadratically: a dozen unrolled steps reproduce the implicit gradient,
    # and so does one step started at the solution (it is then −H⁻¹∂θ∇f exactly).
    _, info, g_unr = solve_with_grad(smooth, th, None, SolveOptions(backward="unroll", steps=12))
    assert int(info.status) == CONVERGED
    assert rel_err(flat_grad(g_unr), flat_grad(g_imp)) < 1e-8
    _, info, g_trn = solve_with_grad(
        smooth, th, None, SolveOptions(backward="truncated", steps=1, tol=1e-13)
    )
    assert int(info.status) == CONVERGED
    assert rel_err(flat_grad(g_trn), flat_grad(g_imp)) < 1e-8


# ================================================================ class 4: prox_grad

PTIGHT = SolveOptions(tol=1e-12)


def lsq(x, th):
    """½‖Mx − y‖²."""
    return 0.5 * jnp.sum((th["M"] @ x - th["y"]) ** 2)


def lasso_instance(seed, m=12, n=6):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(m, n))), jnp.asarray(rng.normal(size=m))


def lasso(v, M, opts):
    """LASSO ½‖Mx − y‖² + λ‖x‖₁ with v = (y, λ) differentiated."""
    y, lam = v
    n = M.shape[1]
    return P.prox_grad(
        lsq,
        {"M": M, "y": y},
        P.prox_l1,
        {"lam": lam, "center": jnp.zeros(n)},
        jnp.zeros(n, y.dtype),
        opts,
    )


def coordinate_descent_lasso(M, y, lam, sweeps=3000):
    """Independent reference: exact coordinate minimisation of ½‖Mx − y‖² + λ‖x‖₁."""
    M, y = np.asarray(M), np.asarray(y)
    x = np.zeros(M.shape[1])
    col = (M**2).sum(0)
    for _ in range(sweeps):
        for j in range(M.shape[1]):
            rho = M[:, j] @ (y - M @ x + M[:, j] * x[j])
            x[j] = np.sign(rho) * max(abs(rho) - lam, 0.0) / col[j]
    return x


def away_from_kinks(M, y, lam, x):
    """Zero coordinates have |∂ᵢ½‖Mx − y‖²| at least 1e-3 from λ, others |xᵢ| ≥ 1e-3: finite
    differences then stay on one side of every kink."""
    g = np.asarray(M.T @ (M @ x - y))
    zero = np.asarray(x) == 0.0
    return np.all(np.abs(np.abs(g[zero]) - lam) > 1e-3) and np.all(np.abs(x[~zero]) > 1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lasso_solution_and_gradient_in_y_and_lambda(seed):
    M, y = lasso_instance(seed)
    v = (y, jnp.array(2.0))
    x, info, g = solve_with_grad(lasso, v, M, PTIGHT)
    assert int(info.status) == CONVERGED
    np.testing.assert_allclose(x, coordinate_descent_lasso(M, y, 2.0), atol=1e-6)
    assert np.any(np.asarray(x) == 0.0) and away_from_kinks(M, y, 2.0, x)
    assert rel_err(flat_grad(g), fd_gradient(lasso, v, M, PTIGHT, 1e-6)) < 1e-4


def box_lsq(v, M, opts):
    """min ½‖Mx − y‖² s.t. lo ≤ x ≤ hi, with v = (y, lo, hi) differentiated."""
    y, lo, hi = v
    return P.prox_grad(
        lsq, {"M": M, "y": y}, P.proj_box, {"lo": lo, "hi": hi}, jnp.zeros(M.shape[1]), opts
    )


def test_box_constrained_least_squares():
    rng = np.random.default_rng(4)
    m, n = 10, 5
    M, y = jnp.asarray(rng.normal(size=(m, n))), jnp.asarray(3 * rng.normal(size=m))
    v = (y, -0.3 * jnp.ones(n), 0.4 * jnp.ones(n))
    x, info, g = solve_with_grad(box_lsq, v, M, PTIGHT)
    ref = scipy.optimize.lsq_linear(
        np.asarray(M), np.asarray(y), bounds=(-0.3, 0.4), method="bvls", tol=1e-14
    )
    assert int(info.status) == CONVERGED
    np.testing.assert_allclose(x, ref.x, atol=1e-6)
    active = np.isclose(np.asarray(x), -0.3) | np.isclose(np.asarray(x), 0.4)
    assert 0 < active.sum() < n  # both kinds of coordinates are exercised
    assert rel_err(flat_grad(g), fd_gradient(box_lsq, v, M, PTIGHT, 1e-6)) < 1e-4
    assert np.any(np.asarray(flat_grad(g)[m:]) != 0.0)  # the active bounds receive gradient


def simplex_qp(v, Q, opts):
    """min ½xᵀQx − cᵀx on {x ≥ 0, Σx = r}, v = (c, r) differentiated; Q closed over (hoisted)."""
    c, r = v
    n = c.shape[0]
    f = lambda x, th: 0.5 * x @ Q @ x - th @ x  # noqa: E731
    return P.prox_grad(f, c, P.proj_simplex, {"radius": r}, jnp.full((n,), r / n), opts)


def simplex_qp_reference(Q, c, r):
    """Exact minimiser of ½xᵀQx − cᵀx on {x ≥ 0, Σx = r} by enumerating supports (KKT)."""
    Q, c = np.asarray(Q), np.asarray(c)
    n = len(c)
    for mask in range(1, 2**n):
        S = [i for i in range(n) if mask >> i & 1]
        K = np.block([[Q[np.ix_(S, S)], np.ones((len(S), 1))], [np.ones((1, len(S))), 0]])
        sol = np.linalg.solve(K, np.concatenate([c[S], [r]]))
        x = np.zeros(n)
        x[S], nu = sol[:-1], sol[-1]
        if np.all(x[S] > 0) and np.all(Q @ x - c + nu >= -1e-12):
            return x
    raise AssertionError("no KKT point found")


def test_simplex_constrained_quadratic():
    rng = np.random.default_rng(5)
    n = 6
    B = rng.normal(size=(n + 4, n))
    Q = jnp.asarray(B.T @ B / n)
    v = (jnp.asarray(rng.normal(size=n)), jnp.array(1.5))
    x, info, g = solve_with_grad(simplex_qp, v, Q, PTIGHT)
    assert int(info.status) == CONVERGED
    np.testing.assert_allclose(x, simplex_qp_reference(Q, v[0], 1.5), atol=1e-6)
    assert 1 < (np.asarray(x) > 0).sum() < n
    assert rel_err(flat_grad(g), fd_gradient(simplex_qp, v, Q, PTIGHT, 1e-6)) < 1e-4


def turnover_simplex_qp(v, Q, opts):
    """min ½xᵀQx − cᵀx + λ‖x − h‖₁ on {x ≥ 0, Σx = 1}: a cost on trading away from holdings
    h; v = (c, λ, h) differentiated."""
    c, lam, h = v
    n = c.shape[0]
    f = lambda x, th: 0.5 * x @ Q @ x - th @ x  # noqa: E731
    return P.prox_grad(
        f,
        c,
        P.prox_l1_simplex,
        {"radius": 1.0, "lam": lam, "center": h},
        jnp.full((n,), 1.0 / n),
        opts,
    )


def test_simplex_with_a_centred_l1_term_matches_cvxpy_and_finite_differences():
    import cvxpy as cp  # the test extra's peer

    rng = np.random.default_rng(8)
    n = 7
    B = rng.normal(size=(n + 4, n))
    Q = jnp.asarray(B.T @ B / n)
    h = rng.dirichlet(np.ones(n))
    v = (jnp.asarray(0.8 * rng.normal(size=n)), jnp.array(0.15), jnp.asarray(h))
    x, info, g = solve_with_grad(turnover_simplex_qp, v, Q, PTIGHT)
    assert int(info.status) == CONVERGED
    z = cp.Variable(n)
    cp.Problem(
        cp.Minimize(
            0.5 * cp.quad_form(z, np.asarray(Q)) - np.asarray(v[0]) @ z + 0.15 * cp.norm1(z - h)
        ),
        [z >= 0, cp.sum(z) == 1],
    ).solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    np.testing.assert_allclose(x, z.value, atol=1e-6)
    x = np.asarray(x)
    at_holdings = np.isclose(x, h, atol=1e-9)
    assert at_holdings.any() and (~at_holdings & (x > 1e-9)).any()  # both kinds of coordinate
    assert rel_err(flat_grad(g), fd_gradient(turnover_simplex_qp, v, Q, PTIGHT, 1e-6)) < 1e-4


def tied_lasso(v, data, opts):
    """LASSO whose columns 0 and 1 are identical (v = (y, M), both differentiated): every split
    of their weight with the same sign is optimal, a segment of solutions."""
    y, M = v
    f = lambda x, th: 0.5 * jnp.sum((th[1] @ x - th[0]) ** 2)  # noqa: E731
    return P.prox_grad(f, (y, M), P.prox_l1, {"lam": 0.1}, jnp.zeros(M.shape[1]), opts)


def test_lasso_with_a_singular_support_hessian_falls_back_to_least_squares():
    """Two identical columns, both in the support: J = I − ∂T/∂x is singular. FISTA from 0 keeps
    the two weights equal, so the solution it returns moves with y by the minimum-norm rule —
    the least-squares adjoint's derivative, equal to finite differences. Perturbing either tied
    column alone breaks the tie (the solution jumps to one end of the segment): those entries
    of the gradient have no derivative and are NaN, the other columns' are finite."""
    rng = np.random.default_rng(0)
    M = rng.normal(size=(12, 5))
    M[:, 1] = M[:, 0]
    v = (jnp.asarray(3 * rng.normal(size=12)), jnp.asarray(M))
    x, info, g = solve_with_grad(tied_lasso, v, None, PTIGHT)
    assert int(info.status) == CONVERGED and float(x[0]) == float(x[1]) != 0.0
    assert int(info.adjoint) == ADJ_LSTSQ and float(info.conditioning) < pivot_rtol(x.dtype)
    assert float(info.adjoint_residual) > off_range_rtol(x.dtype)  # some entries have no derivative
    gy, gM = g
    fd_y = fd_gradient(lambda y, M, o: tied_lasso((y, M), None, o), v[0], v[1], PTIGHT, 1e-6)
    assert rel_err(gy, fd_y) < 1e-6
    assert np.all(np.isnan(np.asarray(gM[:, :2]))) and np.all(np.isfinite(np.asarray(gM[:, 2:])))
    fd_M2 = fd_gradient(
        lambda c, M, o: tied_lasso((v[0], M.at[:, 2].set(c)), None, o),
        v[1][:, 2],
        v[1],
        PTIGHT,
        1e-6,
    )
    assert rel_err(gM[:, 2], fd_M2) < 1e-5


@fast_jit
def _small_prox_cases():
    z = jnp.array([3.0, -0.5, 1.0, -2.0])
    box = {"lo": jnp.array([-1.0, -jnp.inf, 0, 0]), "hi": jnp.array([1.0, 0, jnp.inf, 1])}
    return (
        P.prox_l1(z, 0.5, {"lam": 2.0, "center": 0.0}),
        P.prox_l1(z, 1.0, {"lam": 1.0, "center": jnp.ones(4)}),
        P.proj_box(z, 1.0, box),
        P.prox_l1_box(z, 1.0, {"lam": 1.5, **box}),
        P.proj_simplex(z, 1.0, {"radius": 2.0}),
        P.proj_simplex(jnp.array([0.5, 0.4, -1.0, 0.1]), 1.0, {"radius": 1.0}),
        P.prox_l1_simplex(z, 1.0, {"lam": 9.0, "radius": 2.0}),
        P.prox_none(z, 1.0, {}),
    )


def test_prox_operators_on_small_cases():
    expected = (
        [2, 0, 0, -1],
        [2, 0.5, 1, -1],
        [1, -0.5, 1, 0],
        [1, 0, 0, 0],
        [2, 0, 0, 0],
        [0.5, 0.4, 0, 0.1],
        [2, 0, 0, 0],
        [3, -0.5, 1, -2],
    )
    for got, want in zip(_small_prox_cases(), expected):
        np.testing.assert_allclose(got, want, atol=1e-15)


def test_prox_unroll_with_many_steps_approaches_implicit_and_truncated_too():
    M, y = lasso_instance(0)
    v = (y, jnp.array(2.0))

    def grad(opts):
        return flat_grad(solve_with_grad(lasso, v, M, opts)[2])

    g_imp = grad(PTIGHT)
    assert rel_err(grad(SolveOptions(backward="unroll", steps=2000)), g_imp) < 1e-6
    assert rel_err(grad(SolveOptions(backward="truncated", steps=300, tol=1e-12)), g_imp) < 1e-6


# ================================================================ ill-posed instances


def linear_newton(v, data, opts):
    """f(x) = −v·Σx, no constraints: unbounded below for v > 0."""
    return newton(lambda x, th: -th * jnp.sum(x), v, None, None, jnp.zeros(3), opts)


def test_newton_unbounded_objective_is_reported():
    for opts in (SolveOptions(), SolveOptions(matrix_free=True)):
        _, info, g = solve_with_grad(linear_newton, jnp.array(1.0), None, opts)
        assert int(info.status) == UNBOUNDED and all_nan(g)


def linear_l1(v, lam, opts):
    """f(x) = −v·Σx plus λ‖x‖₁: unbounded below when λ < v."""
    return P.prox_grad(
        lambda x, th: -th * jnp.sum(x), v, P.prox_l1, {"lam": lam}, jnp.ones(3), opts
    )


def test_prox_linear_objective_with_weak_l1_is_unbounded():
    _, info, g = solve_with_grad(linear_l1, jnp.array(2.0), jnp.array(1.0), SolveOptions())
    assert int(info.status) == UNBOUNDED and all_nan(g)
    # The same objective with a stronger L1 weight is bounded: its minimiser is 0.
    x, info, _ = solve_with_grad(linear_l1, jnp.array(2.0), jnp.array(3.0), SolveOptions())
    assert int(info.status) == CONVERGED and np.all(np.asarray(x) == 0.0)


def test_nan_in_data_is_nonfinite_with_nan_gradient():
    th = smooth_instance(3, 0, 0)
    bad = dict(th, c=th["c"].at[0].set(jnp.nan))
    _, info, g = solve_with_grad(smooth, bad, None, TIGHT)
    assert int(info.status) == NONFINITE and all_nan(g)

    M, y = lasso_instance(0)
    _, info, g = solve_with_grad(lasso, (y.at[2].set(jnp.nan), jnp.array(2.0)), M, PTIGHT)
    assert int(info.status) == NONFINITE and all_nan(g)


def test_max_iter_reached_is_reported_with_nan_gradient():
    _, info, g = solve_with_grad(smooth, smooth_instance(3, 0, 1), None, SolveOptions(max_iter=1))
    assert int(info.status) == MAX_ITER and all_nan(g)
    M, y = lasso_instance(1)
    _, info, g = solve_with_grad(lasso, (y, jnp.array(2.0)), M, SolveOptions(max_iter=3))
    assert int(info.status) == MAX_ITER and all_nan(g)


def flat_valley(v, A, opts):
    """f = (x₀ − x₁ − v)² subject to A x = b(=1): with no rows, a line of minimisers."""
    return newton(
        lambda x, th: (x[0] - x[1] - th) ** 2, v, A, jnp.ones(A.shape[0]), jnp.zeros(2), opts
    )


def test_newton_valley_returns_its_minimum_norm_point_with_that_points_gradient():
    """A line of minimisers: Newton from 0 steps within range(H) and returns the minimum-norm
    one, (v/2, −v/2). The KKT matrix is singular (H rank 1); the least-squares adjoint gives
    the derivative of exactly that point, (½, −½)·(readout)."""
    v = jnp.array(1.0)
    x, info, g = solve_with_grad(flat_valley, v, jnp.zeros((0, 2)), SolveOptions())
    assert int(info.status) == CONVERGED and int(info.adjoint) == ADJ_LSTSQ
    np.testing.assert_allclose(x, [0.5, -0.5], atol=1e-8)
    # Rounding along the valley's floor, amplified by the regularised step, leaves the point's
    # null component at ~1e-9 noise: the solution is linear in v, so a wide step measures it
    # (its O(h²) error through the sine read-out is ~1e-6).
    fd = fd_gradient(flat_valley, v, jnp.zeros((0, 2)), SolveOptions(), 1e-2)
    assert abs(float(g) - float(fd[0])) < 1e-5
    expected = 0.5 * np.cos(0.5) - 0.5 * 1.5 * np.cos(-0.5)  # readout Σ (1 + i/n) sin(xᵢ)
    assert abs(float(g) - expected) < 1e-8


def test_newton_infeasible_problem():
    # x₀ + x₁ = 1 and 2x₀ + 2x₁ = 1 have no common point.
    _, info = fast_jit(flat_valley, static_argnums=2)(
        jnp.array(1.0), jnp.array([[1.0, 1.0], [2.0, 2.0]]), SolveOptions()
    )
    assert int(info.status) == INFEASIBLE


def flat_quartic(a, data, opts):
    """f = (v₀ − a)² + v₁⁴: Newton from 0 stops at v₁ = 0 exactly, where H = diag(2, 0)."""
    return newton(lambda x, th: (x[0] - th) ** 2 + x[1] ** 4, a, None, None, jnp.zeros(2), opts)


@pytest.mark.parametrize(
    "opts", [SolveOptions(), SolveOptions(matrix_free=True)], ids=["dense", "matrix-free"]
)
def test_singular_hessian_at_a_minimum_gets_the_least_squares_gradient(opts):
    """A minimum where the Hessian is singular but the solution is differentiable (v₁ = 0 for
    every a): the gradient is finite and equals finite differences. Dense: the forward rule
    reports the least-squares fallback and the pivot ratio behind it; a primal call reports
    the plan. Matrix-free: CG fails on the inconsistent system, the regularised normal
    equations answer; Info can only report the plan (CG)."""
    a = jnp.array(0.3)
    x, info, g = solve_with_grad(flat_quartic, a, None, opts)
    assert int(info.status) == CONVERGED and float(x[1]) == 0.0
    assert abs(float(x[0]) - 0.3) < 1e-15
    fd = fd_gradient(flat_quartic, a, None, opts, 1e-6)
    assert abs(float(g) - float(fd[0])) < 1e-8 and abs(float(g) - np.cos(0.3)) < 1e-10
    _, primal = fast_jit(flat_quartic, static_argnums=2)(a, None, opts)
    if opts.matrix_free:
        assert int(info.adjoint) == int(primal.adjoint) == ADJ_CG
        assert np.isnan(float(info.conditioning))
    else:
        assert int(info.adjoint) == ADJ_LSTSQ and float(info.conditioning) == 0.0
        assert float(info.adjoint_residual) < 1e-12
        assert int(primal.adjoint) == ADJ_DENSE and np.isnan(float(primal.conditioning))


def flat_quartic_tilted(a, data, opts):
    """f = v⁴ − a·v: at a = 0 the minimum is v = 0 with H = 0, and v*(a) = (a/4)^(1/3) has an
    infinite derivative there."""
    return newton(lambda x, th: x[0] ** 4 - th * x[0], a, None, None, jnp.zeros(1), opts)


def test_no_derivative_at_a_singular_minimum_is_nan_not_zero():
    """The least-squares adjoint would return 0 here; the probe sees a moving F along null(J)
    (∂F/∂a = −1, J = 0) and makes the gradient NaN, reporting the off-range fraction."""
    x, info, g = solve_with_grad(flat_quartic_tilted, jnp.array(0.0), None, SolveOptions())
    assert int(info.status) == CONVERGED and float(x[0]) == 0.0
    assert int(info.adjoint) == ADJ_LSTSQ and float(info.adjoint_residual) > 0.5
    assert np.isnan(float(g))
    # Away from a = 0 the Hessian is regular: LU, and the derivative (1/3)(a/4)^(−2/3)/4.
    x, info, g = solve_with_grad(flat_quartic_tilted, jnp.array(4.0), None, TIGHT)
    assert int(info.adjoint) == ADJ_LU and np.isnan(float(info.adjoint_residual))
    assert abs(float(g) - np.cos(1.0) / 12.0) < 1e-9


def test_saddle_point_is_singular_with_nan_gradient():
    """Newton from 0 on x₀² − x₁² + a·x₀ stops at the stationary point, a saddle: not a minimum."""

    def saddle(a, data, opts):
        return newton(
            lambda x, th: x[0] ** 2 - x[1] ** 2 + th * x[0], a, None, None, jnp.zeros(2), opts
        )

    _, info, g = solve_with_grad(saddle, jnp.array(0.5), None, SolveOptions())
    assert int(info.status) == SINGULAR and all_nan(g)


# ================================================================ how the gradient is computed


@pytest.mark.parametrize(
    "problem, opts, differentiated, primal",
    [
        ("newton", SolveOptions(), ADJ_LU, ADJ_DENSE),
        ("newton p=2", SolveOptions(matrix_free=True), ADJ_GMRES, ADJ_GMRES),
        ("newton", SolveOptions(matrix_free=True), ADJ_CG, ADJ_CG),
        ("newton", SolveOptions(backward="unroll", steps=3), ADJ_UNROLL, ADJ_UNROLL),
        ("newton", SolveOptions(backward="truncated", steps=1), ADJ_TRUNCATED, ADJ_TRUNCATED),
        ("prox", SolveOptions(), ADJ_LU, ADJ_DENSE),
        ("prox", SolveOptions(matrix_free=True), ADJ_GMRES, ADJ_GMRES),
        ("prox", SolveOptions(backward="unroll", steps=3), ADJ_UNROLL, ADJ_UNROLL),
        ("prox", SolveOptions(backward="truncated", steps=3), ADJ_TRUNCATED, ADJ_TRUNCATED),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_info_says_how_the_gradient_is_computed_under_vmap_jit_and_grad(
    problem, opts, differentiated, primal
):
    """Every mode fills the adjoint fields per instance. Dense implicit: the differentiated
    call decides (LU here, with its pivot ratio), a primal call reports the plan ('dense') with
    no conditioning; matrix-free and the other modes report their method either way."""
    if problem.startswith("newton"):
        p = 2 if problem.endswith("p=2") else 0
        batch = [smooth_instance(3, p, s) for s in (5, 6)]
        solve, data = smooth, None
    else:
        M, y = lasso_instance(0)
        batch = [(y, jnp.array(lam)) for lam in (1.0, 2.0)]
        solve, data = lasso, M
    v = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *batch)
    (_, (_, info)), g = fast_jit(jax.vmap(value_and_grad_of(solve, opts), in_axes=(0, None)))(
        v, data
    )
    assert info.adjoint.shape == (2,) and info.adjoint.dtype == jnp.int32
    if opts.backward != "unroll":  # the 3rd iterate of an unrolled solve is not converged
        assert np.all(np.asarray(info.status) == CONVERGED)
    assert np.all(np.asarray(info.adjoint) == differentiated)
    assert info.conditioning.shape == info.adjoint_residual.shape == (2,)
    if differentiated == ADJ_LU:
        assert np.all(np.asarray(info.conditioning) >= pivot_rtol(jnp.float64))
    else:
        assert np.all(np.isnan(np.asarray(info.conditioning)))
    assert np.all(np.isnan(np.asarray(info.adjoint_residual)))
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(g))
    _, info_p = fast_jit(jax.vmap(lambda v, d: solve(v, d, opts), in_axes=(0, None)))(v, data)
    assert np.all(np.asarray(info_p.adjoint) == primal)
    assert np.all(np.isnan(np.asarray(info_p.conditioning)))


# ================================================================ composition


def test_vmap_one_bad_instance_leaves_the_others_unchanged():
    M, y = lasso_instance(2)
    ys = jnp.stack([y, y + 0.5, y.at[0].set(jnp.nan), 2.0 * y])
    lams = jnp.array([2.0, 1.0, 1.0, 3.0])
    vg = value_and_grad_of(lasso, PTIGHT)
    (_, (xb, ib)), gb = fast_jit(jax.vmap(vg, in_axes=((0, 0), None)))((ys, lams), M)
    assert list(np.asarray(ib.status)) == [CONVERGED, CONVERGED, NONFINITE, CONVERGED]
    assert np.all(np.isnan(np.asarray(gb[0][2]))) and np.isnan(float(gb[1][2]))
    for i in (0, 1, 3):
        x1, _, g1 = solve_with_grad(lasso, (ys[i], lams[i]), M, PTIGHT)
        np.testing.assert_allclose(xb[i], x1, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gb[0][i], g1[0], rtol=1e-9, atol=1e-12)

    # Class 3: a batch with a NaN member.
    th = smooth_instance(3, 0, 4)
    ws = jnp.array([0.5, jnp.nan, 1.0])
    batch = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (3,) + a.shape), th)
    batch["w"] = ws
    vg = value_and_grad_of(smooth, TIGHT)
    (_, (xs, infos)), gs = fast_jit(jax.vmap(vg, in_axes=(0, None)))(batch, None)
    assert list(np.asarray(infos.status)) == [CONVERGED, NONFINITE, CONVERGED]
    assert all_nan(jax.tree_util.tree_map(lambda a: a[1], gs))
    for i in (0, 2):
        x1, _, g1 = solve_with_grad(smooth, dict(th, w=ws[i]), None, TIGHT)
        np.testing.assert_allclose(xs[i], x1, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gs["M"][i], g1["M"], rtol=1e-9, atol=1e-12)


def warm_started_path(lam, data, opts):
    """LASSO solved along a path of data y + s, each solve started at the previous solution
    inside ``lax.scan``; returns the path's solutions stacked (as one vector) and the last Info."""
    M, y, shifts = data

    def step(x_prev, s):
        x, info = P.prox_grad(lsq, {"M": M, "y": y + s}, P.prox_l1, {"lam": lam}, x_prev, opts)
        return x, (x, info)

    _, (xs, infos) = jax.lax.scan(step, jnp.zeros(M.shape[1]), shifts)
    return xs.reshape(-1), jax.tree_util.tree_map(lambda a: a[-1], infos)


def test_solver_inside_lax_scan_with_warm_starts_is_differentiable():
    M, y = lasso_instance(0)
    data = (M, y, jnp.linspace(0.0, 0.3, 4))
    _, info, g = solve_with_grad(warm_started_path, jnp.array(2.0), data, PTIGHT)
    assert int(info.status) == CONVERGED
    fd = fd_gradient(warm_started_path, jnp.array(2.0), data, PTIGHT, 1e-6)
    assert abs(float(g) - float(fd[0])) < 1e-4 * abs(float(fd[0]))


def test_float32_instance_solves_in_float32_and_on_request_in_float64():
    M, y = (a.astype(jnp.float32) for a in lasso_instance(1))
    v = (y, jnp.array(1.0, jnp.float32))
    x, info, g = solve_with_grad(lasso, v, M, SolveOptions())
    assert x.dtype == jnp.float32 and int(info.status) == CONVERGED
    assert bool(jnp.all(jnp.isfinite(g[0])))
    x64, info64, _ = solve_with_grad(lasso, v, M, SolveOptions(dtype="f64"))
    assert x64.dtype == jnp.float32 and float(info64.residual) <= 1e-10
    np.testing.assert_allclose(x, x64, atol=1e-4)


def test_implicit_root_helper_on_a_scalar_equation():
    # z³ + z − θ = 0 has one real root; dz/dθ = 1/(3z² + 1). Dense and matrix-free adjoints.
    F = lambda z, th: z**3 + z - th  # noqa: E731

    def solve(z0, th):
        z = jax.lax.fori_loop(0, 60, lambda _, z: z - F(z, th) / (3 * z**2 + 1), z0)
        return z, make_info(CONVERGED, 60, jnp.abs(F(z, th)), ADJ_DENSE)

    for opts in (SolveOptions(), SolveOptions(matrix_free=True)):
        root = implicit_root(F, solve, opts)
        z, dz = fast_jit(jax.value_and_grad(lambda t, root=root: root(jnp.array(0.0), t)[0]))(2.0)
        assert abs(float(dz) - 1.0 / (3 * float(z) ** 2 + 1)) < 1e-9


# ================================================================ memory


def temp_bytes(opts):
    """XLA's scratch memory for the gradient of a small LASSO's read-out loss."""
    M, y = lasso_instance(3, m=8, n=4)
    loss = lambda y: jnp.sum(lasso((y, jnp.array(1.0)), M, opts)[0])  # noqa: E731
    compiled = fast_jit(jax.grad(loss)).lower(y).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_implicit_backward_memory_is_flat_in_iterations_while_unroll_grows():
    imp10, imp1000 = (temp_bytes(SolveOptions(max_iter=k)) for k in (10, 1000))
    unr10, unr1000 = (temp_bytes(SolveOptions(backward="unroll", steps=k)) for k in (10, 1000))
    assert imp1000 <= 1.1 * imp10
    assert unr1000 > 10 * unr10
