"""Class 1 (``eq_qp``) and class 2 (``qp``) solvers: solutions, gradients, statuses, composition.

Everything that checks numbers runs in float64. References are independent of the code under
test: a dense NumPy KKT solve (class 1), an enumeration of active sets (class 2), central
finite differences of the solution map, and the seed article's closed-form Jacobian of an
equality-constrained argmin with parameter-dependent constant terms.
"""

from __future__ import annotations

import functools
import itertools

import jax

_X64_BEFORE = bool(jax.config.jax_enable_x64)
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import assume, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ddm.library.solvers.closest import closest  # noqa: E402
from ddm.library.solvers.eq_qp import eq_qp, eq_qp_with_duals  # noqa: E402
from ddm.library.solvers.options import SolveOptions  # noqa: E402
from ddm.library.solvers.qp import qp  # noqa: E402
from ddm.library.solvers.status import (
    ADJ_KKT,
    ADJ_TRUNCATED,
    ADJ_UNROLL,  # noqa: E402
    CLOSEST,
    CONVERGED,
    INFEASIBLE,
    MAX_ITER,
    NONFINITE,
    SINGULAR,
    UNBOUNDED,
)

UNROLL = SolveOptions(backward="unroll")


@pytest.fixture(autouse=True, scope="module")
def _x64_on():
    """Another module may have switched float64 off; restore the setting afterwards."""
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", _X64_BEFORE)


# ------------------------------------------------------------------ instances and references


def spd(rng, n, ridge=1.0):
    X = rng.normal(size=(n, n))
    return X @ X.T / n + ridge * np.eye(n)


def eq_instance(seed, n, p):
    """A well-conditioned class 1 instance: P SPD, A [p, n] of full row rank."""
    rng = np.random.default_rng(seed)
    # A is built from its SVD so its condition number is at most 4 whatever the seed: finite
    # differences of an ill-conditioned solve are noise, and the test would measure the noise.
    U = np.linalg.qr(rng.normal(size=(p, p)))[0] if p else np.zeros((0, 0))
    V = np.linalg.qr(rng.normal(size=(n, n)))[0][:p]
    A = U @ np.diag(rng.uniform(0.5, 2.0, size=p)) @ V
    return spd(rng, n), rng.normal(size=n), A, rng.normal(size=p)


def qp_instance(seed, n, p, m):
    """A class 2 instance, feasible with an interior: b = A x_f, h = G x_f + slack."""
    rng = np.random.default_rng(seed)
    x_f = rng.normal(size=n)
    A, G = rng.normal(size=(p, n)), rng.normal(size=(m, n))
    c = 2.0 * rng.normal(size=n)
    return spd(rng, n, 0.5), c, A, A @ x_f, G, G @ x_f + rng.uniform(0.1, 1.0, size=m)


def kkt_reference(P, c, A, b):
    """x and ν of min ½xᵀPx + cᵀx s.t. Ax = b by one dense NumPy solve of the KKT system."""
    n, p = P.shape[0], A.shape[0]
    K = np.block([[P, A.T], [A, np.zeros((p, p))]])
    z = np.linalg.solve(K, np.concatenate([-c, b]))
    return z[:n], z[n:]


def active_set_reference(P, c, A, b, G, h):
    """The exact solution of a strictly convex QP by enumerating active sets: the one set whose
    equality-constrained solution is primal feasible with non-negative multipliers. Returns
    ``(x, margin)``; margin = the smallest active multiplier or inactive slack (0: degenerate,
    a kink of the solution map)."""
    m = G.shape[0]
    for k in range(m + 1):
        for S in itertools.combinations(range(m), k):
            S = list(S)
            E = np.concatenate([A, G[S]])
            if E.shape[0] > P.shape[0] or np.linalg.matrix_rank(E) < E.shape[0]:
                continue
            x, nu = kkt_reference(P, c, E, np.concatenate([b, h[S]]))
            z = nu[A.shape[0] :]
            slack = np.delete(h - G @ x, S)
            if np.all(slack >= -1e-12) and np.all(z >= -1e-12):
                return x, min(np.min(z, initial=np.inf), np.min(slack, initial=np.inf))
    raise AssertionError("no active set satisfies the KKT conditions")


# ------------------------------------------------------------------ compiled entry points


# Every test calls the solvers through these, so that each (shape, options) pair is compiled
# once for the whole file: compilation, not solving, is what takes time here — hence also
# XLA's cheaper backend optimisation level (the problems are tiny; the maths is the same).
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def jit(f, **kw):
    return jax.jit(f, compiler_options=FAST_COMPILE, **kw)


def eq_all(opts: SolveOptions = SolveOptions()):
    """Jitted ``(w, P, c, A, b) -> (x, ν, info, ∇_{P,c,A,b} w·x)``."""
    return _eq_all(opts)


def qp_all(opts: SolveOptions = SolveOptions()):
    """Jitted ``(w, P, c, A, b, G, h) -> (x, info, ∇_{P,c,A,b,G,h} w·x)``."""
    return _qp_all(opts)


@functools.lru_cache(maxsize=None)  # keyed on the options alone: one jitted function each
def _eq_all(opts: SolveOptions):
    return jit(eq_fn(opts))


@functools.lru_cache(maxsize=None)
def _qp_all(opts: SolveOptions):
    return jit(qp_fn(opts))


def eq_fn(opts: SolveOptions):
    """``(w, P, c, A, b) -> (x, ν, info, ∇_{P,c,A,b} w·x)``, not jitted."""

    def f(w, *a):
        x, nu, info = eq_qp_with_duals(*a, opts)
        return w @ x, (x, nu, info)

    vg = jax.value_and_grad(f, argnums=(1, 2, 3, 4), has_aux=True)
    return lambda w, *a: (lambda out: (*out[0][1], out[1]))(vg(w, *a))


def qp_fn(opts: SolveOptions):
    """``(w, P, c, A, b, G, h) -> (x, info, ∇_{P,c,A,b,G,h} w·x)``, not jitted."""

    def f(w, *a):
        x, info = qp(*a, opts)
        return w @ x, (x, info)

    vg = jax.value_and_grad(f, argnums=tuple(range(1, 7)), has_aux=True)
    return lambda w, *a: (lambda out: (*out[0][1], out[1]))(vg(w, *a))


# ------------------------------------------------------------------ finite differences


def fd_gradient(solve, args, w, h):
    """Central differences of L(args) = w·x(args), entry by entry; ``solve(*args) -> x``.
    Returns a list of arrays shaped like ``args``."""
    args = [np.asarray(a, float) for a in args]
    out = []
    for i, a in enumerate(args):
        g = np.zeros(a.size)
        for e in range(a.size):
            d = np.zeros(a.size)
            d[e] = h
            plus = [b + d.reshape(b.shape) if j == i else b for j, b in enumerate(args)]
            minus = [b - d.reshape(b.shape) if j == i else b for j, b in enumerate(args)]
            g[e] = (w @ np.asarray(solve(*plus)) - w @ np.asarray(solve(*minus))) / (2 * h)
        out.append(g.reshape(a.shape))
    return out


def rel_error(got, want):
    """max |g − g_fd| / max |g_fd| over all arguments together (a norm-wise relative error)."""
    num = max(np.max(np.abs(np.asarray(g) - f), initial=0.0) for g, f in zip(got, want))
    den = max(np.max(np.abs(f), initial=0.0) for f in want)
    return num / max(den, 1e-12)


def _all_nan(tree):
    return all(bool(np.all(np.isnan(np.asarray(g)))) for g in jax.tree_util.tree_leaves(tree))


# ------------------------------------------------------------------ class 1: values


# Sizes (n, p) the class 1 tests draw from: p = 0 (unconstrained), p = n (x fixed by A x = b)
# and in between; few, so that each compiles once.
EQ_SHAPES = [(1, 1), (3, 0), (3, 1), (3, 2), (4, 4)]


def _eq_x(opts=SolveOptions()):
    w0 = {}

    def solve(*a):
        n = np.shape(a[1])[0]
        return eq_all(opts)(w0.setdefault(n, np.zeros(n)), *a)[0]

    return solve


@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from(EQ_SHAPES), seed=st.integers(0, 2**31))
def test_eq_qp_solution_and_multipliers_solve_the_kkt_system(shape, seed):
    P, c, A, b = eq_instance(seed, *shape)
    x, nu, info, _ = eq_all()(np.zeros(shape[0]), P, c, A, b)
    x_ref, nu_ref = kkt_reference(P, c, A, b)
    assert int(info.status) == CONVERGED and float(info.residual) < 1e-12
    np.testing.assert_allclose(x, x_ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(nu, nu_ref, rtol=1e-9, atol=1e-10)


def test_eq_qp_accepts_P_semidefinite_but_definite_on_the_feasible_set():
    # x₃ is absent from the objective; the constraint x₁ + x₂ + x₃ = 1 pins it.
    P, c, A, b = np.diag([2.0, 1.0, 0.0]), np.array([-1.0, 0.0, 0.5]), np.ones((1, 3)), np.ones(1)
    x, _, info, _ = eq_all()(np.zeros(3), P, c, A, b)
    assert int(info.status) == CONVERGED
    np.testing.assert_allclose(x, kkt_reference(P, c, A, b)[0], atol=1e-12)


# ------------------------------------------------------------------ class 1: gradients


@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from(EQ_SHAPES), seed=st.integers(0, 2**31))
@example(shape=(4, 4), seed=3206)  # drew a condition-1e3 A before instances were built by SVD
def test_eq_qp_gradients_match_finite_differences(shape, seed):
    """∂(w·x*)/∂(P, c, A, b) — b is the parameter-dependent constant term of the constraints."""
    args = eq_instance(seed, *shape)
    w = np.random.default_rng(seed + 1).normal(size=shape[0])
    grads = eq_all()(w, *args)[3]
    assert rel_error(grads, fd_gradient(_eq_x(), args, w, 1e-5)) < 1e-6


def test_eq_qp_jacobian_equals_the_seed_closed_form():
    """The seed's formula for x̂(θ) = argmin f(θ, x) s.t. G x + b(θ) = 0:

        x̂_θ = f_xx⁻¹ (Gᵀ (G f_xx⁻¹ Gᵀ)⁻¹ (G f_xx⁻¹ f_xθ − b_θ) − f_xθ)

    with f = ½xᵀP(θ)x + c(θ)ᵀx, so f_xx = P(θ) and f_xθ = ∂_θ(P(θ)x̂ + c(θ)); in eq_qp's
    convention A x = b_eq(θ), so G = A and the seed's b(θ) = −b_eq(θ)."""
    rng = np.random.default_rng(7)
    n, p, k = 6, 2, 4
    P0, c0, A, b0 = eq_instance(3, n, p)
    P1 = rng.normal(size=(n, n))
    P1 = 0.1 * (P1 + P1.T)
    C1, B1 = rng.normal(size=(n, k)), rng.normal(size=(p, k))
    theta = rng.normal(size=k)

    def problem(th):
        return P0 + th[0] * P1, c0 + C1 @ th, A, b0 + B1 @ th

    def x_of(opts):
        return jit(jax.jacrev(lambda th: eq_qp(*problem(th), opts)[0]))

    x_hat = np.linalg.solve(
        np.block([[problem(theta)[0], A.T], [A, np.zeros((p, p))]]),
        np.concatenate([-problem(theta)[1], problem(theta)[3]]),
    )[:n]
    f_xx = problem(theta)[0]
    f_xtheta = C1.copy()
    f_xtheta[:, 0] += P1 @ x_hat
    b_theta = -B1  # the seed's b(θ) = −b_eq(θ)
    Fi = np.linalg.inv(f_xx)
    seed_jac = Fi @ (A.T @ np.linalg.solve(A @ Fi @ A.T, A @ Fi @ f_xtheta - b_theta) - f_xtheta)

    for opts in (SolveOptions(), UNROLL):
        np.testing.assert_allclose(x_of(opts)(jnp.asarray(theta)), seed_jac, rtol=1e-10, atol=1e-12)


@settings(max_examples=6, deadline=None)
@given(shape=st.sampled_from(EQ_SHAPES[1:4]), seed=st.integers(0, 2**31))
def test_eq_qp_unroll_and_implicit_gradients_agree(shape, seed):
    args = eq_instance(seed, *shape)
    w = np.random.default_rng(seed).normal(size=shape[0])
    for a, b in zip(eq_all()(w, *args)[3], eq_all(UNROLL)(w, *args)[3]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_eq_qp_multiplier_cotangent_enters_the_adjoint_solve():
    args = eq_instance(5, 3, 2)
    w = np.array([1.0, -2.0])
    g = jit(jax.grad(lambda *a: w @ eq_qp_with_duals(*a)[1], argnums=(0, 1, 2, 3)))(*args)
    duals = lambda *a: eq_all()(np.zeros(3), *a)[1]  # noqa: E731
    assert rel_error(g, fd_gradient(duals, args, w, 1e-5)) < 1e-6


@pytest.mark.parametrize("n,p", [(6, 2), (5, 0), (1, 1), (8, 3)])
def test_eq_qp_check_is_the_backward_error_without_inequalities(n, p):
    """``equality_check`` (stacked reductions, for class 1) gives the β and duality gap of the
    general ``backward_error`` with G empty, at the solution, near it, and far from it; and
    it calls data with a NaN or an infinity not finite."""
    from ddm.library.solvers.certify import backward_error, equality_check

    P, c, A, b = eq_instance(n + 10 * p, n, p)
    x, nu = kkt_reference(P, c, A, b)
    rng = np.random.default_rng(n)
    none = np.zeros((0,))
    for dx in (0.0, 1e-9, 1e-3, 1.0):
        xs, ys = x + dx * rng.normal(size=n), nu + dx * rng.normal(size=p)
        beta, gap, _ = backward_error(P, c, A, b, np.zeros((0, n)), none, xs, ys, none)
        ck = equality_check(P, c, A, b, xs, ys)
        # at the solution both are rounding (~1e-16), summed in another order
        np.testing.assert_allclose([ck.beta, ck.gap], [beta, gap], rtol=1e-9, atol=1e-14)
        assert bool(ck.x_finite) and bool(ck.data_finite)
    for bad in (np.nan, np.inf):
        Pb = P.copy()
        Pb[0, -1] = bad
        assert not bool(equality_check(Pb, c, A, b, x, nu).data_finite)
        assert not bool(
            equality_check(P, c, A, b, np.where(np.arange(n) == 0, bad, x), nu).x_finite
        )


@pytest.mark.parametrize("m", [0, 3])
def test_a_P_promised_symmetric_gives_the_same_solution_and_gradients(m):
    """``symmetric=True`` only skips the pass that forms ½(P + Pᵀ): for a symmetric P the
    solution and every gradient are those of the default (class 1 when m = 0, else class 2)."""
    P, c, A, b, G, h = qp_instance(7, 6, 2, m)

    def loss(P, c, symmetric):
        x, _ = qp(P, c, A, b, G, h, symmetric=symmetric)
        return jnp.sum(x * jnp.arange(1.0, 7.0)), x

    (v0, x0), g0 = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(P, c, False)
    (v1, x1), g1 = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(P, c, True)
    np.testing.assert_allclose(x1, x0, rtol=1e-12, atol=1e-14)
    for a, e in zip(g1, g0):
        np.testing.assert_allclose(a, e, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(g1[0], np.asarray(g1[0]).T)  # P̄ symmetric either way


def test_eq_qp_rejects_truncated_backward():
    with pytest.raises(ValueError, match="not meaningful"):
        eq_qp(*eq_instance(0, 3, 1), SolveOptions(backward="truncated", steps=3))


# ------------------------------------------------------------------ class 1: ill-posed


@pytest.mark.parametrize("opts", [SolveOptions(), UNROLL], ids=["implicit", "unroll"])
@pytest.mark.parametrize(
    "case, status",
    [
        ("indefinite", SINGULAR),
        ("flat_direction_pushed", SINGULAR),
        ("duplicate_rows_consistent", SINGULAR),
        ("duplicate_rows_inconsistent", INFEASIBLE),
        ("nan_in_c", NONFINITE),
        ("inf_in_P", NONFINITE),
    ],
)
def test_eq_qp_ill_posed_problem_has_status_and_nan_gradient(case, status, opts):
    P, c, A, b = eq_instance(11, 3, 1)
    if case == "indefinite":  # a saddle on the feasible set, not a minimum
        P = np.diag([1.0, -1.0, 1.0])
    elif case == "flat_direction_pushed":  # P = 0 along e₃, c pushes: unbounded below
        P, c, A, b = np.diag([1.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0]), A[:0], b[:0]
    elif case == "duplicate_rows_consistent":
        A, b = np.concatenate([A, A]), np.concatenate([b, b])
    elif case == "duplicate_rows_inconsistent":
        A, b = np.concatenate([A, A]), np.concatenate([b, b + 1.0])
    elif case == "nan_in_c":
        c = c.copy()
        c[0] = np.nan
    elif case == "inf_in_P":
        P = P.copy()
        P[1, 1] = np.inf
    _, _, info, grads = eq_all(opts)(np.ones(3), P, c, A, b)
    assert int(info.status) == status
    assert _all_nan(grads)


# ------------------------------------------------------------------ class 2: values


# Class 2 tests use n = 3 and m = 6 inequalities throughout (a problem with fewer is padded
# with rows 0ᵀx ≤ 1, which change nothing), with p = 1 or 2 equalities: two compiled shapes.
N, M = 3, 6
QP_SHAPES = [(N, 1, M), (N, 2, M)]


def pad(G, h):
    """Fill G x ≤ h up to M rows with 0ᵀx ≤ 1."""
    k = M - G.shape[0]
    return np.concatenate([G, np.zeros((k, G.shape[1]))]), np.concatenate([h, np.ones(k)])


def _qp_x(opts=SolveOptions()):
    return lambda *a: qp_all(opts)(np.zeros(N), *a)[0]


def _nondegenerate(args, margin=1e-3):
    """Skip instances at a kink: an active multiplier or an inactive slack below ``margin``."""
    x_ref, gap = active_set_reference(*args)
    assume(gap > margin)
    return x_ref


@settings(max_examples=10, deadline=None)
@given(shape=st.sampled_from(QP_SHAPES), seed=st.integers(0, 2**31))
def test_qp_solution_matches_active_set_reference(shape, seed):
    args = qp_instance(seed, *shape)
    x_ref, _ = active_set_reference(*args)
    x, info, _ = qp_all()(np.zeros(N), *args)
    assert int(info.status) == CONVERGED and float(info.residual) <= 1e-10
    np.testing.assert_allclose(x, x_ref, atol=1e-6)


@settings(max_examples=6, deadline=None)
@given(shape=st.sampled_from(QP_SHAPES), seed=st.integers(0, 2**31))
def test_qp_gradients_match_finite_differences(shape, seed):
    """∂(w·x*)/∂(P, c, A, b, G, h), away from degenerate active sets, to 1e-4."""
    args = qp_instance(seed, *shape)
    _nondegenerate(args)
    w = np.random.default_rng(seed).normal(size=N)
    grads = qp_all()(w, *args)[2]
    assert rel_error(grads, fd_gradient(_qp_x(), args, w, 1e-5)) < 1e-4


def budget_instance(seed, box=True):
    """Long-only budget portfolio: P = 2λΣ, c = −μ, sum(x) = 1, 0 ≤ x (≤ 0.6)."""
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(N, 2 * N))
    Sigma = F @ F.T / (2 * N) + 0.05 * np.eye(N)
    if box:
        G = np.concatenate([-np.eye(N), np.eye(N)])
        h = np.concatenate([np.zeros(N), np.full(N, 0.6)])
    else:
        G, h = pad(-np.eye(N), np.zeros(N))
    return 2.0 * Sigma, -0.5 * rng.normal(size=N), np.ones((1, N)), np.ones(1), G, h


@pytest.mark.parametrize("box", [False, True], ids=["long_only", "box"])
def test_budget_qp_gradient_matches_finite_differences(box):
    args = budget_instance(2, box=box)
    x_ref, gap = active_set_reference(*args)
    assert gap > 1e-3  # a clean active set …
    assert np.any(args[4] @ x_ref > args[5] - 1e-12)  # … with a bound active
    w = np.random.default_rng(0).normal(size=N)
    x, info, grads = qp_all()(w, *args)
    assert int(info.status) == CONVERGED
    np.testing.assert_allclose(x, x_ref, atol=1e-8)
    assert rel_error(grads, fd_gradient(_qp_x(), args, w, 1e-5)) < 1e-4


def test_qp_without_inequalities_is_the_class_1_solve():
    P, c, A, b = eq_instance(4, 3, 1)
    x, info = jit(qp)(P, c, A, b, np.zeros((0, 3)), np.zeros(0))
    assert int(info.status) == CONVERGED
    np.testing.assert_allclose(x, kkt_reference(P, c, A, b)[0], atol=1e-12)


# ------------------------------------------------------------------ class 2: backward modes


def test_qp_truncated_gradients_approach_implicit_ones():
    args = budget_instance(2)
    w = np.random.default_rng(1).normal(size=N)
    g_imp = qp_all()(w, *args)[2]
    errors = [
        rel_error(qp_all(SolveOptions(backward="truncated", steps=k))(w, *args)[2], g_imp)
        for k in (1, 3)
    ]
    assert errors[0] > errors[-1] and errors[-1] < 1e-4, errors


def test_qp_unroll_differentiates_the_iterations():
    """Unrolled far enough, the iterate is the solution and its gradient (autodiff through the
    iterations) matches the implicit one."""
    args = budget_instance(2)
    w = np.random.default_rng(1).normal(size=N)
    x40, info40, g40 = qp_all(SolveOptions(backward="unroll", steps=40))(w, *args)
    x, _, g_imp = qp_all()(w, *args)
    assert int(info40.status) == CONVERGED and int(info40.iterations) < 40
    np.testing.assert_allclose(x40, x, atol=1e-9)
    assert rel_error(g40, g_imp) < 1e-4


# ------------------------------------------------------------------ class 2: ill-posed


def _ill_posed_qp(case):
    eye, o, one = np.eye(N), np.zeros(N), np.ones(N)
    P, c = spd(np.random.default_rng(0), N), np.array([1.0, -1.0, 0.5])
    budget = np.ones((1, N)), np.ones(1)
    pin_x1 = eye[:1], np.zeros(1)  # x₁ = 0: an equality that changes nothing
    flat = np.diag([1.0, 1.0, 0.0])  # P = 0 along e₃
    if case == "infeasible":  # x ≥ 1 and sum(x) = 1
        return (P, c, *budget, *pad(-eye, -one))
    if case == "unbounded_along_a_bound":  # x₃ ≥ 0 and c pushes x₃ up
        return (flat, np.array([0, 0, -1.0]), *pin_x1, *pad(-eye, o))
    if case == "unbounded_free":  # the same with no bound on x₃
        return (flat, np.array([0, 0, -1.0]), *pin_x1, *pad(-eye[:2], o[:2]))
    if case == "flat_not_pushed":  # free x₃, c ⟂ e₃: many minimisers
        return (flat, np.array([1.0, 0, 0]), *pin_x1, *pad(-eye[:2], o[:2]))
    if case == "indefinite":  # not convex (the box keeps it bounded)
        return (
            np.diag([1.0, -1.0, 1.0]),
            c,
            *budget,
            np.concatenate([-eye, eye]),
            2 * np.ones(2 * N),
        )
    if case == "nan_in_h":
        return (P, c, *budget, *pad(-eye, np.array([0.0, np.nan, 0.0])))
    if case == "duplicate_rows_consistent":
        return (P, c, np.ones((2, N)), np.ones(2), *pad(-eye, o))
    if case == "duplicate_rows_inconsistent":
        return (P, c, np.ones((2, N)), np.array([1.0, 2.0]), *pad(-eye, o))
    raise KeyError(case)


ILL_POSED = [
    ("infeasible", INFEASIBLE),
    ("unbounded_along_a_bound", UNBOUNDED),
    ("unbounded_free", UNBOUNDED),
    ("flat_not_pushed", SINGULAR),
    ("indefinite", SINGULAR),
    ("nan_in_h", NONFINITE),
    ("duplicate_rows_consistent", SINGULAR),
    ("duplicate_rows_inconsistent", INFEASIBLE),
]


@pytest.mark.parametrize("case, status", ILL_POSED, ids=[c for c, _ in ILL_POSED])
def test_qp_ill_posed_problem_has_status_and_nan_gradient(case, status):
    _, info, grads = qp_all()(np.ones(N), *_ill_posed_qp(case))
    assert int(info.status) == status
    assert _all_nan(grads)


def test_qp_iteration_limit_is_max_iter_with_nan_implicit_gradient():
    _, info, grads = qp_all(SolveOptions(max_iter=2))(np.ones(N), *budget_instance(2))
    assert int(info.status) == MAX_ITER and int(info.iterations) == 2
    assert _all_nan(grads)


# ------------------------------------------------------------------ composition


def _batch(instances):
    return [np.stack(a) for a in zip(*instances)]


def test_a_bad_instance_does_not_touch_the_others_in_a_vmapped_batch():
    """With one instance infeasible (class 2) or indefinite (class 1), the other instances'
    solutions — and gradients — are bit for bit those of the same batch with that instance
    healthy, and equal to solving each alone (to rounding only: XLA's batched kernels may sum
    in another order than the unbatched ones)."""
    good = [budget_instance(s, box=False) for s in range(4)]
    bad = list(good)
    bad[1] = _ill_posed_qp("infeasible")
    solve2 = jit(jax.vmap(lambda *a: qp_fn(SolveOptions())(jnp.ones(N), *a)))
    x_good, _, g_good = solve2(*_batch(good))
    x_bad, info_bad, g_bad = solve2(*_batch(bad))
    assert np.asarray(info_bad.status).tolist() == [CONVERGED, INFEASIBLE, CONVERGED, CONVERGED]
    keep = [0, 2, 3]
    assert np.array_equal(np.asarray(x_bad)[keep], np.asarray(x_good)[keep])
    assert all(
        np.array_equal(np.asarray(b)[keep], np.asarray(g)[keep]) for b, g in zip(g_bad, g_good)
    )
    assert _all_nan([g[1] for g in g_bad])
    for k in keep:
        np.testing.assert_allclose(x_bad[k], _qp_x()(*good[k]), rtol=1e-13, atol=1e-15)

    eq_good = [eq_instance(s, 3, 1) for s in range(3)]
    eq_bad = list(eq_good)
    eq_bad[0] = (np.diag([1.0, -1.0, 1.0]),) + eq_good[0][1:]
    solve1 = jit(jax.vmap(lambda *a: eq_fn(SolveOptions())(jnp.ones(3), *a)))
    y_good, _, _, h_good = solve1(*_batch(eq_good))
    y_bad, _, info1, h_bad = solve1(*_batch(eq_bad))
    assert np.asarray(info1.status).tolist() == [SINGULAR, CONVERGED, CONVERGED]
    assert np.array_equal(np.asarray(y_bad)[1:], np.asarray(y_good)[1:])
    assert all(np.array_equal(np.asarray(b)[1:], np.asarray(g)[1:]) for b, g in zip(h_bad, h_good))
    assert _all_nan([g[0] for g in h_bad])


@pytest.mark.parametrize("solver", ["eq_qp", "qp"])
def test_solver_inside_lax_scan_is_differentiable_under_jit(solver):
    """A sequential decision: x_t = argmin ½xᵀPx + (c_t + κ x_{t−1})ᵀx over the (long-only)
    budget set, κ a trainable transaction-cost weight; the loss sums w·x_t over 5 steps."""
    P, _, A, b, G, h = budget_instance(3, box=False)
    cs = jnp.asarray(np.random.default_rng(0).normal(size=(5, N)))
    w = jnp.arange(float(N))

    def rollout(kappa):
        def step(x_prev, c):
            if solver == "qp":
                x, _ = qp(P, c + kappa * x_prev, A, b, G, h)
            else:
                x, _ = eq_qp(P, c + kappa * x_prev, A, b)
            return x, w @ x

        return jnp.sum(jax.lax.scan(step, jnp.full(N, 1.0 / N), cs)[1])

    value_and_grad = jit(jax.value_and_grad(rollout))
    _, g = value_and_grad(0.3)
    fd = (value_and_grad(0.3 + 1e-6)[0] - value_and_grad(0.3 - 1e-6)[0]) / 2e-6
    np.testing.assert_allclose(g, fd, rtol=1e-5)


@pytest.mark.parametrize("solver", ["eq_qp", "qp"])
def test_f64_option_solves_in_float64_and_returns_the_input_dtype(solver):
    args = budget_instance(2)
    args32 = [np.asarray(a, np.float32) for a in args]
    opts = SolveOptions(dtype="f64")
    if solver == "qp":
        x64, _, _ = qp_all()(np.ones(N), *args)
        x, info, grads = qp_all(opts)(np.ones(N, np.float32), *args32)
    else:
        x64, _, _, _ = eq_all()(np.ones(N), *args[:4])
        x, _, info, grads = eq_all(opts)(np.ones(N, np.float32), *args32[:4])
    assert x.dtype == jnp.float32 and int(info.status) == CONVERGED
    np.testing.assert_allclose(x, x64, rtol=1e-6, atol=1e-7)
    assert all(g.dtype == jnp.float32 and np.all(np.isfinite(g)) for g in grads)


# ------------------------------------------------------------------ how the gradient is computed


@pytest.mark.parametrize(
    "solver, mode, code",
    [
        ("eq_qp", "implicit", ADJ_KKT),
        ("eq_qp", "unroll", ADJ_UNROLL),
        ("qp", "implicit", ADJ_KKT),
        ("qp", "unroll", ADJ_UNROLL),
        ("qp", "truncated", ADJ_TRUNCATED),
    ],
)
def test_info_says_how_the_gradient_is_computed_under_vmap_jit_and_grad(solver, mode, code):
    """Classes 1–2: the structured KKT solve (or the mode asked for), per instance. Class 1
    reports its Cholesky pivot ratio; class 2 factors its adjoint system in the backward pass
    only, after Info exists, so its conditioning is NaN."""
    opts = SolveOptions(backward=mode, steps=3 if mode == "truncated" else 0)
    instances = [budget_instance(s) for s in (1, 2)]
    args = [jnp.stack(a) for a in zip(*instances)]
    if solver == "eq_qp":
        _, _, info, grads = jit(jax.vmap(eq_fn(opts)))(jnp.ones((2, N)), *args[:4])
    else:
        _, info, grads = jit(jax.vmap(qp_fn(opts)))(jnp.ones((2, N)), *args)
    assert info.adjoint.shape == (2,) and info.adjoint.dtype == jnp.int32
    assert np.all(np.asarray(info.adjoint) == code)
    assert info.conditioning.shape == info.adjoint_residual.shape == (2,)
    assert np.all(np.isnan(np.asarray(info.adjoint_residual)))
    cond = np.asarray(info.conditioning)
    if solver == "eq_qp":
        assert np.all((cond > 0) & (cond <= 1))
    else:
        assert np.all(np.isnan(cond))
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


# ------------------------------------------------------------------ on_infeasible="closest"


def closest_fn(w, lo, dtype):
    """The issue's instance: min ‖v‖² s.t. v₀ + v₁ = 1, v ≥ lo (infeasible for lo > ½), then
    :func:`closest`; returns ``(w·x, (x, info))``."""
    P, c = 2.0 * jnp.eye(2, dtype=dtype), jnp.zeros(2, dtype)
    A, b = jnp.ones((1, 2), dtype), jnp.ones(1, dtype)
    G, h = -jnp.eye(2, dtype=dtype), -jnp.full(2, lo, dtype)
    opts = SolveOptions()
    x, info = qp(P, c, A, b, G, h, opts)
    x, info = closest(P, c, A, b, G, h, x, info, opts)
    return w @ x, (x, info)


@pytest.mark.parametrize(
    "dtype, atol", [(jnp.float32, 1e-3), (jnp.float64, 1e-6)], ids=["float32", "float64"]
)
def test_closest_point_of_an_infeasible_instance_in_both_precisions(dtype, atol):
    """v ≥ 0.8 and v₀ + v₁ = 1 admit no point. The least violation balances both:
    (2t − 1)² + 2(0.8 − t)² is least at t = 0.6, so the closest point is [0.6, 0.6]
    (float32 once returned [0.496, 0.504], "singular": its penalty swamped the objective). A
    feasible instance in the same batch is untouched."""
    w = jnp.array([1.0, 2.0], dtype)
    lo = jnp.array([0.8, 0.1], dtype)
    vg = jit(
        jax.vmap(
            jax.value_and_grad(lambda w, lo: closest_fn(w, lo, dtype), argnums=1, has_aux=True)
        )
    )
    (_, (x, info)), g = vg(jnp.stack([w, w]), lo)
    assert x.dtype == dtype
    np.testing.assert_allclose(x[0], [0.6, 0.6], atol=atol)
    assert list(np.asarray(info.status)) == [CLOSEST, CONVERGED]
    np.testing.assert_allclose(x[1], [0.5, 0.5], atol=atol)
    _, (x_plain, _) = jit(lambda w, lo: closest_fn(w, lo, dtype))(w, lo[1])
    assert np.array_equal(np.asarray(x[1]), np.asarray(x_plain))  # bit for bit
    assert np.all(np.isfinite(np.asarray(g)))
    # t(lo) = (1 + lo)/3 on the closest branch, so d(w·x)/d lo = (1 + 2)/3 = 1 (the elastic
    # problem's bias is a relative √ε); the feasible instance's bounds are inactive: 0.
    np.testing.assert_allclose(g, [1.0, 0.0], atol=10 * atol)
    if dtype == jnp.float64:
        value = jit(lambda lo: closest_fn(w, lo, dtype)[0])
        fd = (value(0.8 + 1e-6) - value(0.8 - 1e-6)) / 2e-6
        assert abs(float(g[0]) - float(fd)) < 1e-6
