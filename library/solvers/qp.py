"""Class 2: a convex quadratic program with linear equalities and inequalities.

Problem (one instance; callers ``jax.vmap``)::

    x*(θ) = argmin_x ½ xᵀP x + cᵀx   s.t.  A x = b,  G x ≤ h
    P: [n, n] (symmetric part read), c: [n], A: [p, n], b: [p], G: [m, n], h: [m]; p, m may be 0.

With a slack s = h − Gx ≥ 0, multipliers y (equalities) and z ≥ 0 (inequalities), the KKT
conditions are::

    r_d = P x + c + Aᵀy + Gᵀz = 0,   r_p = A x − b = 0,   r_g = G x + s − h = 0,   s ∘ z = 0   (1)

Forward: a primal–dual interior point method (Mehrotra predictor–corrector, infeasible start,
as in CVXOPT's ``coneqp`` for the orthant). Each iteration solves the Newton system of (1) with
s ∘ z = σμ by eliminating ds and dz — D = diag(z / s)::

    [P + GᵀDG  Aᵀ] [dx]   [−r_d − Gᵀ((z ∘ r_g − r_c) / s)]    dz = (z ∘ r_g − r_c)/s + D G dx
    [A         0 ] [dy] = [−r_p                         ]    ds = −r_g − G dx         (2)

once with r_c = s ∘ z (affine predictor) and once with r_c = s ∘ z + ds_a ∘ dz_a − σμ,
σ = (μ_a / μ)³ (corrector); both with one factorisation of (2) — Cholesky of P + GᵀDG + ρAᵀA
and of its Schur complement (:mod:`ddm.library.solvers.eq_qp`). The step is 0.995 of the
longest keeping s, z > 0 (at most 1). The first point solves (2) with D = I and is shifted
into s, z > 0.

Stopping (relative, ``tol`` = the node's tolerance; Info.residual is the largest of the three)::

    ‖r_p, r_g‖ / (1 + size of A x, b, G x, s, h)   ‖r_d‖ / (1 + size of P x, c, Aᵀy, Gᵀz)
    sᵀz / (1 + |xᵀP x| + |cᵀx|)

and certificates, tested at every iterate (exact inequalities, so a feasible, bounded problem
never trips them unless its solution is a million times larger than the iterates):

- INFEASIBLE — (y, z ≥ 0) with q = −(bᵀy + hᵀz) > 0: every feasible x has
  ‖x‖₁ ≥ q / ‖Aᵀy + Gᵀz‖∞ (Farkas); declared when that bound exceeds 10⁶ (1 + ‖x₀‖₁ + ‖x‖₁).
- UNBOUNDED — the step direction d (‖d‖∞ = 1) with cᵀd < 0: any KKT point has
  ‖x‖₁‖Pd‖∞ + ‖y‖₁‖Ad‖∞ + ‖z‖₁‖(Gd)₊‖∞ ≥ −cᵀd; declared when −cᵀd exceeds 10⁶ (1 + ‖x₀‖₁ +
  ‖y‖₁ + ‖z‖₁) max(‖Pd‖∞, ‖Ad‖∞, ‖(Gd)₊‖∞).
- SINGULAR / UNBOUNDED at the start — P + GᵀG + ρAᵀA singular: some d ≠ 0 has Pd = Ad = Gd = 0,
  so minimisers are not unique (SINGULAR) or the objective falls along d (UNBOUNDED: the
  regularised first solve then moves by ≳ 10⁻⁶‖c‖ / δ along d, δ the regularisation).
- INFEASIBLE / SINGULAR at the start — A rank-deficient, with inconsistent / consistent rows.
- SINGULAR — P is not positive semi-definite (the problem is not convex), or an iterate
  became non-finite; MAX_ITER — ``max_iter`` (default 50) iterations;
  NONFINITE — NaN/Inf in the data.

Backward (``implicit``, OptNet — Amos & Kolter 2017): differentiating (1) with s = h − Gx, the
transposed KKT Jacobian system for an output cotangent x̄ is::

    P v_x + Aᵀv_y + GᵀZ v_z = x̄,   A v_x = 0,   G v_x − s ∘ v_z = 0

and eliminating v_z (w := z ∘ v_z = D G v_x) gives system (2) with D at the solution:
[P + GᵀDG, Aᵀ; A, 0] [v_x; v_y] = [x̄; 0] (one factorisation, symmetric; D taken at its limit
on the identified active set, :func:`_adjoint_scaling`). Then::

    c̄ = −v_x   P̄ = −½(v_x xᵀ + x v_xᵀ)   Ā = −(v_y xᵀ + y v_xᵀ)   b̄ = v_y
    Ḡ = −(w xᵀ + z v_xᵀ)   h̄ = w                                                           (3)

Active constraints have D → ∞ (G v_x = 0 on them), inactive ones D → 0: the limit is the
derivative of the equality-constrained QP on the active set. NaN unless ``CONVERGED``.
``Info.adjoint`` is ``kkt``; ``Info.conditioning`` is NaN: the adjoint system is factored in the
backward pass only (at the solution's active-set scaling, not the last iterate's), after
``Info`` was returned.

``unroll``: autodiff through ``opts.steps`` iterations from the first point (``max_iter`` if
steps is 0; an iterate that has converged is frozen; step lengths and σ are not differentiated).
``truncated``: solve without gradient, then differentiate ``opts.steps`` iterations (at least
one) started from the solution; NaN unless the solve converged.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ddm.library.lapack import cholesky
from ddm.library.solvers.eq_qp import (
    KKTFactor,
    _shift,
    all_finite,
    diagonal,
    eq_qp,
    kkt_factor,
    kkt_factor_solve,
    kkt_solve,
    rows_consistent,
    symmetrize,
    work_dtype,
)
from ddm.library.solvers.implicit import nan_unless, poison_gradient
from ddm.library.solvers.options import SolveOptions
from ddm.library.solvers.status import (
    ADJ_KKT,
    ADJ_TRUNCATED,
    ADJ_UNROLL,
    CONVERGED,
    INFEASIBLE,
    MAX_ITER,
    NONFINITE,
    SINGULAR,
    UNBOUNDED,
    Info,
    make_info,
    with_adjoint,
)

__all__ = ["qp", "QP", "Iterate", "DEFAULT_MAX_ITER"]

DEFAULT_MAX_ITER = 50
_RUNNING = -1  # status while the loop runs
_STEP_FRACTION = 0.995  # of the longest step keeping s, z > 0
_CERT_RADIUS = 1e6  # certificates: how far beyond the iterates' scale a solution must lie


class QP(NamedTuple):
    """The data of one problem (shapes in the module docstring)."""

    P: jax.Array
    c: jax.Array
    A: jax.Array
    b: jax.Array
    G: jax.Array
    h: jax.Array


class Iterate(NamedTuple):
    """Primal x: [n], slack s: [m] > 0, inequality multipliers z: [m] > 0, equality ones y: [p]."""

    x: jax.Array
    s: jax.Array
    z: jax.Array
    y: jax.Array


class _Frame(NamedTuple):
    """Constants of one solve: the shift ρ and regularisation δ of every factorisation (no
    gradient), and ‖x₀‖₁, the problem's own scale for the certificates."""

    rho: jax.Array
    reg: jax.Array
    x0_norm: jax.Array


def _norm_inf(v):
    return jnp.max(jnp.abs(v), initial=0.0)


# ------------------------------------------------------------------ KKT residuals and measures


def residuals(q: QP, it: Iterate):
    """(r_d, r_p, r_g) of (1)."""
    r_d = q.P @ it.x + q.c + q.A.T @ it.y + q.G.T @ it.z
    return r_d, q.A @ it.x - q.b, q.G @ it.x + it.s - q.h


def measure(q: QP, it: Iterate) -> jax.Array:
    """The relative optimality residual (module docstring): max(primal, dual, gap)."""
    x, s, z, y = it
    Px, Ax, Gx, ATy, GTz = q.P @ x, q.A @ x, q.G @ x, q.A.T @ y, q.G.T @ z
    n_ = _norm_inf
    eq = n_(Ax - q.b) / (1.0 + jnp.maximum(n_(Ax), n_(q.b)))
    ineq = n_(Gx + s - q.h) / (1.0 + jnp.maximum(jnp.maximum(n_(Gx), n_(s)), n_(q.h)))
    dual = n_(Px + q.c + ATy + GTz) / (
        1.0 + jnp.maximum(jnp.maximum(n_(Px), n_(q.c)), jnp.maximum(n_(ATy), n_(GTz)))
    )
    gap = jnp.abs(s @ z) / (1.0 + jnp.abs(x @ Px) + jnp.abs(q.c @ x))
    return jnp.maximum(jnp.maximum(eq, ineq), jnp.maximum(dual, gap))


# ------------------------------------------------------------------ one Newton system (2)


def gram(G, d, fast: bool = False):
    """GᵀDG, D = diag(d): ``G: [m, n]``, ``d: [m]`` → ``[n, n]``.

    ``fast``: when every row of G has at most one non-zero (bounds on variables — the common
    case) GᵀDG is the diagonal matrix diag((G∘G)ᵀd), m·n work instead of m·n². The test runs on
    the data, in a ``lax.cond``: under ``vmap`` with G shared by the batch it stays a branch
    (only one side runs); with G batched both sides run and the result is still right. Only
    for values that are not differentiated: the branch's derivative in G ignores the
    off-diagonal entries a perturbed G would create.
    """
    dense = lambda: (G.T * d) @ G  # noqa: E731
    if not fast:
        return dense()
    bounds_only = jnp.all(jnp.sum(G != 0, axis=1) <= 1)
    return lax.cond(bounds_only, lambda: jnp.diag((G * G).T @ d), dense)


def _factor(q: QP, d, fr: _Frame, fast: bool = False) -> KKTFactor:
    """Factorisation of (2) for the scaling D = diag(d): P + GᵀDG, shifted by ρAᵀA + δI."""
    return kkt_factor(q.P + gram(q.G, d, fast), q.A, fr.rho, fr.reg)


def _rhs(q: QP, it: Iterate, r, r_c):
    """Right-hand side of (2) and t = (z ∘ r_g − r_c) / s."""
    r_d, r_p, r_g = r
    t = (it.z * r_g - r_c) / it.s
    return -r_d - q.G.T @ t, -r_p, t


def _expand(q: QP, it: Iterate, r, t, dx, dy) -> Iterate:
    """(ds, dz) from (dx, dy), eq. (2)."""
    Gdx = q.G @ dx
    return Iterate(dx, -r[2] - Gdx, t + (it.z / it.s) * Gdx, dy)


def _direction(q: QP, it: Iterate, f: KKTFactor, r, r_c):
    """Newton direction (dx, ds, dz, dy) of (1) with complementarity residual ``r_c``, eq. (2)."""
    r1, r2, t = _rhs(q, it, r, r_c)
    dx, dy = kkt_solve(f, r1, r2)
    return _expand(q, it, r, t, dx, dy)


def _max_step(v, dv):
    """Largest α ≤ 1 with v + α dv ≥ 0 (v > 0). The division is guarded so that reverse mode
    never meets 0/0 in the branch not taken."""
    neg = dv < 0
    ratio = jnp.where(neg, -v / jnp.where(neg, dv, -1.0), jnp.inf)
    return jnp.minimum(1.0, jnp.min(ratio, initial=jnp.inf))


def _step_length(it: Iterate, d: Iterate):
    return jnp.minimum(_max_step(it.s, d.s), _max_step(it.z, d.z))


def ipm_step(q: QP, it: Iterate, fr: _Frame, fast: bool = False):
    """One Mehrotra predictor–corrector iteration; returns ``(next iterate, direction)``.

    Step length α and centring σ are piecewise smooth in the data; they are held constant
    (``stop_gradient``) when iterations are differentiated, as for a line search. ``fast``: see
    :func:`gram` (never when differentiated).
    """
    sg = lax.stop_gradient
    m = it.s.shape[0]
    r = residuals(q, it)
    mu = it.s @ it.z / m
    # Factor (2) and solve for the affine (predictor) direction, r_c = s ∘ z, in one go.
    r1, r2, t = _rhs(q, it, r, it.s * it.z)
    f, dx, dy = kkt_factor_solve(q.P + gram(q.G, it.z / it.s, fast), q.A, r1, r2, fr.rho, fr.reg)
    aff = _expand(q, it, r, t, dx, dy)
    a_aff = sg(_step_length(it, aff))
    mu_aff = (it.s + a_aff * aff.s) @ (it.z + a_aff * aff.z) / m
    sigma = sg(jnp.clip((mu_aff / mu) ** 3, 0.0, 1.0))
    d = _direction(q, it, f, r, it.s * it.z + aff.s * aff.z - sigma * mu)
    alpha = sg(jnp.minimum(1.0, _STEP_FRACTION * _step_length(it, d)))
    nxt = Iterate(*(v + alpha * dv for v, dv in zip(it, d)))
    return nxt, d.x


# ------------------------------------------------------------------ start and certificates


def _frame(q: QP, H0=None) -> _Frame:
    """ρ for the ρAᵀA shift and δ = n ε max|diag H₀| (H₀ = P + GᵀG + ρAᵀA): regularisation at
    rounding level, which keeps every Cholesky finite when P is only semi-definite. ``H0``:
    P + GᵀG when the caller has it."""
    H0 = q.P + gram(q.G, jnp.ones_like(q.h)) if H0 is None else H0
    rho = _shift(H0, q.A)
    diag = diagonal(H0) + rho * jnp.sum(q.A * q.A, axis=0)
    eps = float(jnp.finfo(q.P.dtype).eps)
    reg = lax.stop_gradient(q.P.shape[0] * eps * jnp.max(jnp.abs(diag), initial=0.0))
    return _Frame(rho, reg, jnp.zeros((), q.P.dtype))


def _convex(P) -> jax.Array:
    """Whether P is positive semi-definite: P + δI (δ = 10 n ε max|Pᵢᵢ|, or 1 when P = 0)
    has a finite Cholesky factor. Without it the interior point method could stop at a saddle
    point of a non-convex problem and call it a minimum."""
    top = jnp.max(jnp.abs(diagonal(P)), initial=0.0)
    delta = jnp.where(top > 0, 10.0 * P.shape[0] * float(jnp.finfo(P.dtype).eps) * top, 1.0)
    L = cholesky(P + delta * jnp.eye(P.shape[0], dtype=P.dtype))
    return jnp.all(jnp.isfinite(L))


def initial_point(q: QP, fast: bool = False):
    """CVXOPT's start: solve (2) with D = I, i.e. min ½xᵀPx + cᵀx + ½‖Gx − h‖² s.t. Ax = b;
    s = h − Gx and z = Gx − h, each shifted by (1 − its minimum) when not positive.

    Returns ``(iterate, frame, status)`` where the status is already final when the start
    shows the problem ill-posed (module docstring), else ``_RUNNING``.
    """
    H0 = q.P + gram(q.G, jnp.ones_like(q.h), fast)
    fr = _frame(q, H0)
    f, x, y = kkt_factor_solve(H0, q.A, -q.c + q.G.T @ q.h, q.b, fr.rho, fr.reg)
    s, z = q.h - q.G @ x, q.G @ x - q.h
    s = jnp.where(jnp.min(s, initial=1.0) > 0, s, s + 1.0 - jnp.min(s, initial=1.0))
    z = jnp.where(jnp.min(z, initial=1.0) > 0, z, z + 1.0 - jnp.min(z, initial=1.0))
    fr = fr._replace(x0_norm=lax.stop_gradient(jnp.sum(jnp.abs(x))))
    # H₀ singular: the δ-regularised solve moves by (−cᵀd/δ) d along a null direction d.
    pushed = (fr.reg * _norm_inf(x) > 1e-6 * (1.0 + _norm_inf(q.c) + _norm_inf(q.G.T @ q.h))) & (
        q.c @ x < 0
    )
    inconsistent = ~rows_consistent(q.A, q.b)
    status = jnp.where(
        ~f.ok_h,
        jnp.where(pushed, UNBOUNDED, SINGULAR),
        jnp.where(~f.ok_s, jnp.where(inconsistent, INFEASIBLE, SINGULAR), _RUNNING),
    )
    status = jnp.where(_convex(q.P), status, SINGULAR)
    status = jnp.where(all_finite(*q), status, NONFINITE)
    return Iterate(x, s, z, y), fr, status.astype(jnp.int32)


def _infeasible(q: QP, it: Iterate, fr: _Frame) -> jax.Array:
    """Farkas certificate in (y, z): q = −(bᵀy + hᵀz) > R ‖Aᵀy + Gᵀz‖∞ (module docstring)."""
    x, _, z, y = it
    qv = -(q.b @ y + q.h @ z)
    r = _norm_inf(q.A.T @ y + q.G.T @ z)
    eps = float(jnp.finfo(x.dtype).eps)
    noise = 1e3 * eps * (_norm_inf(q.b) * jnp.sum(jnp.abs(y)) + _norm_inf(q.h) * jnp.sum(z))
    radius = _CERT_RADIUS * (1.0 + fr.x0_norm + jnp.sum(jnp.abs(x)))
    return qv > radius * r + noise


def _unbounded(q: QP, it: Iterate, dx, fr: _Frame) -> jax.Array:
    """Dual-infeasibility certificate in the step direction d (module docstring)."""
    _, _, z, y = it
    scale = _norm_inf(dx)
    d = dx / jnp.where(scale > 0, scale, 1.0)
    fall = -(q.c @ d)
    lhs = jnp.maximum(
        jnp.maximum(_norm_inf(q.P @ d), _norm_inf(q.A @ d)), _norm_inf(jnp.maximum(q.G @ d, 0.0))
    )
    eps = float(jnp.finfo(dx.dtype).eps)
    radius = _CERT_RADIUS * (1.0 + fr.x0_norm + jnp.sum(jnp.abs(y)) + jnp.sum(z))
    return fall > radius * lhs + 1e3 * eps * _norm_inf(q.c)


def assess(q: QP, it: Iterate, dx, fr: _Frame, tol: float):
    """``(status, residual)`` at an iterate reached by the step ``dx``: CONVERGED, a
    certificate's status, SINGULAR for a non-finite iterate, else ``_RUNNING``."""
    res = measure(q, it)
    finite = all_finite(*it)
    status = jnp.where(
        res <= tol,
        CONVERGED,
        jnp.where(
            _infeasible(q, it, fr),
            INFEASIBLE,
            jnp.where(_unbounded(q, it, dx, fr), UNBOUNDED, _RUNNING),
        ),
    )
    return jnp.where(finite, status, SINGULAR).astype(jnp.int32), res


# ------------------------------------------------------------------ the loops


class _State(NamedTuple):
    it: Iterate
    k: jax.Array
    status: jax.Array
    res: jax.Array


def _start(q: QP, fast: bool = False):
    """The first point, its residual, and a final status if the start already shows the
    problem ill-posed. Convergence is first tested after one step (the first point, a
    least-squares compromise with s, z shifted, is essentially never optimal), which keeps a
    single copy of the tests in the compiled program."""
    it, fr, status = initial_point(q, fast)
    return _State(it, jnp.zeros((), jnp.int32), status, measure(q, it)), fr


def _info(state: _State) -> Info:
    status = jnp.where(state.status == _RUNNING, MAX_ITER, state.status).astype(jnp.int32)
    return make_info(lax.stop_gradient(status), state.k, lax.stop_gradient(state.res), ADJ_KKT)


def _advance(
    q: QP, state: _State, fr: _Frame, tol: float, max_iter: int, fast: bool = False
) -> _State:
    it, dx = ipm_step(q, state.it, fr, fast)
    status, res = assess(q, it, dx, fr, tol)
    k = state.k + 1
    status = jnp.where((status == _RUNNING) & (k >= max_iter), MAX_ITER, status)
    return _State(it, k, status, res)


def solve_loop(q: QP, tol: float, max_iter: int):
    """Iterate until a final status (``lax.while_loop``; not differentiable): ``(it, Info)``.

    Under ``vmap`` an instance that has stopped keeps its state bit for bit while others run.
    """
    state, fr = _start(q, fast=True)
    state = state._replace(
        status=jnp.where((state.status == _RUNNING) & (max_iter <= 0), MAX_ITER, state.status)
    )
    state = lax.while_loop(
        lambda s: s.status == _RUNNING,
        lambda s: _advance(q, s, fr, tol, max_iter, fast=True),
        state,
    )
    return state.it, _info(state)


def solve_steps(q: QP, state: _State, fr: _Frame, tol: float, steps: int) -> _State:
    """Exactly ``steps`` differentiable iterations (``lax.scan``) from ``state``, each tested.

    An iterate with a final status is kept (so steps past convergence do not drive s, z to 0):
    the step is still evaluated but its value — and its cotangent, which is zero — discarded.
    """

    def body(s, _):
        nxt = _advance(q, s, fr, tol, steps)
        stop = s.status != _RUNNING
        return jax.tree_util.tree_map(lambda a, b: jnp.where(stop, a, b), s, nxt), None

    return lax.scan(body, state, None, length=steps)[0]


def plain_steps(q: QP, it: Iterate, fr: _Frame, steps: int) -> Iterate:
    """Exactly ``steps`` differentiable iterations from ``it``, untested (``truncated``)."""
    return lax.scan(lambda i, _: (ipm_step(q, i, fr)[0], None), it, None, length=steps)[0]


# ------------------------------------------------------------------ implicit backward (3)


def _adjoint_scaling(q: QP, s, z):
    """D for the adjoint solve: the limit of z / s at the solution, on the identified active set.

    Exactly, D → ∞ on active constraints (gᵢᵀv_x = 0) and D → 0 on inactive ones; at a
    tolerance-level solution z / s is only large or small. A constraint counts as active when
    its term in P + GᵀDG outweighs P (Dᵢ‖gᵢ‖² > max|Pⱼⱼ|) and then gets Dᵢ = ε^(−1/2)
    max|Pⱼⱼ| / ‖gᵢ‖²: large enough to enforce gᵢᵀv_x = 0 to a relative ε^(1/2), small enough
    to keep the matrix's Cholesky factor accurate (z / s itself reaches 10¹⁶ in float64); an
    inactive one gets 0. The gradient is then that of the equality-constrained problem on the
    active set — also at a loose (float32) tolerance, where z / s is far from its limit.
    """
    eps = float(jnp.finfo(s.dtype).eps)
    scale = jnp.max(jnp.abs(diagonal(q.P)), initial=0.0)
    scale = jnp.where(scale > 0, scale, 1.0)
    row = jnp.sum(q.G * q.G, axis=1)
    row = jnp.where(row > 0, row, 1.0)
    active = (z / s) * row > scale
    return jnp.where(active, scale / (eps**0.5 * row), 0.0)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _implicit(q: QP, tol: float, max_iter: int):
    it, info = solve_loop(q, tol, max_iter)
    return it.x, info


def _implicit_fwd(q: QP, tol: float, max_iter: int):
    it, info = solve_loop(q, tol, max_iter)
    return (it.x, info), (q, it, info.status)


def _implicit_bwd(tol, max_iter, saved, cts):
    """Equation (3): one factorisation of (2) at the solution."""
    q, it, status = saved
    x, s, z, y = it
    xbar = cts[0]
    fr = _frame(q, q.P + gram(q.G, jnp.ones_like(s), fast=True))
    d = _adjoint_scaling(q, s, z)
    f = _factor(q, d, fr, fast=True)
    vx, vy = kkt_solve(f, xbar, jnp.zeros_like(y))
    w = d * (q.G @ vx)
    grads = QP(
        P=-0.5 * (jnp.outer(vx, x) + jnp.outer(x, vx)),
        c=-vx,
        A=-(jnp.outer(vy, x) + jnp.outer(y, vx)),
        b=vy,
        G=-(jnp.outer(w, x) + jnp.outer(z, vx)),
        h=w,
    )
    return (nan_unless(status == CONVERGED, grads),)


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


# ------------------------------------------------------------------ entry point


def _check_shapes(q: QP):
    n = q.c.shape[0] if q.c.ndim == 1 else -1
    ok = (
        q.P.shape == (n, n)
        and q.A.ndim == 2
        and q.A.shape[1] == n
        and q.b.shape == (q.A.shape[0],)
        and q.G.ndim == 2
        and q.G.shape[1] == n
        and q.h.shape == (q.G.shape[0],)
    )
    if not ok:
        raise ValueError(
            "qp expects one instance: P [n, n], c [n], A [p, n], b [p], G [m, n], h [m]; got "
            + ", ".join(f"{k} {v.shape}" for k, v in q._asdict().items())
            + " (vmap over a batch)"
        )


def qp(P, c, A, b, G, h, opts: SolveOptions = SolveOptions()):
    """Solve min_x ½xᵀPx + cᵀx s.t. A x = b, G x ≤ h for one instance; returns ``(x, info)``.

    ``P: [n, n]`` (symmetric part read), ``c: [n]``, ``A: [p, n]``, ``b: [p]``, ``G: [m, n]``,
    ``h: [m]``; p and m may be 0 (m = 0 is solved by :func:`~.eq_qp.eq_qp`). Gradients reach all
    six (module docstring, (3)); NaN for an instance whose status is not ``CONVERGED``
    (``implicit``, ``truncated``) — with ``unroll``, not ``CONVERGED`` or ``MAX_ITER`` (the
    unrolled gradient is then exactly that of the iterate returned).

    Long-only with budget 1, min ½‖x‖² − (0, 1, 2)·x::

        I = jnp.eye(3)
        x, info = qp(I, -jnp.arange(3.0), jnp.ones((1, 3)), jnp.ones(1), -I, jnp.zeros(3))
        # x ≈ [0, 0, 1], info.status == CONVERGED
    """
    q = QP(*(jnp.asarray(a) for a in (P, c, A, b, G, h)))
    _check_shapes(q)
    if opts.backward not in ("implicit", "unroll", "truncated"):
        raise ValueError(
            f"qp: unknown backward mode {opts.backward!r}; use 'implicit', 'unroll' or 'truncated'"
        )
    if q.G.shape[0] == 0:
        mode = "implicit" if opts.backward == "implicit" else "unroll"
        return eq_qp(q.P, q.c, q.A, q.b, replace(opts, backward=mode))
    out, work = work_dtype(opts, *q)
    q = QP(*(a.astype(work) for a in q))
    q = q._replace(P=symmetrize(q.P))
    tol = opts.tolerance(work)
    max_iter = DEFAULT_MAX_ITER if opts.max_iter is None else int(opts.max_iter)
    if opts.backward == "implicit":
        # jax.custom_vjp's unannotated __new__ leaves the result type unsolved under partial
        x, info = _implicit(q, tol, max_iter)  # pyright: ignore[reportGeneralTypeIssues]
    elif opts.backward == "unroll":
        steps = opts.steps if opts.steps > 0 else max_iter
        state, fr = _start(q)
        state = solve_steps(q, state, fr, tol, steps)
        info = with_adjoint(_info(state), ADJ_UNROLL)
        x = poison_gradient(state.it.x, (info.status == CONVERGED) | (info.status == MAX_ITER))
    else:
        it, info = solve_loop(jax.tree_util.tree_map(lax.stop_gradient, q), tol, max_iter)
        it = plain_steps(
            q, jax.tree_util.tree_map(lax.stop_gradient, it), _frame(q), max(opts.steps, 1)
        )
        x = poison_gradient(it.x, info.status == CONVERGED)
        info = with_adjoint(
            info._replace(iterations=info.iterations + max(opts.steps, 1)), ADJ_TRUNCATED
        )
    return x.astype(out), info
