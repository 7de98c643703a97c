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

The solver's own test (relative, ``tol`` = the node's tolerance)::

    ‖r_p, r_g‖ / (1 + size of A x, b, G x, s, h)   ‖r_d‖ / (1 + size of P x, c, Aᵀy, Gᵀz)
    sᵀz / (1 + |xᵀP x| + |cᵀx|)

only ends the iterations. What is returned must pass an independent check (:func:`certify`,
:mod:`~ddm.library.solvers.certify`): the point is polished — the equality-constrained QP on
the active set the iterate identifies, solved by a few refinement steps with one factorisation
(:func:`polish`) — and ``converged`` only if the polished point, or else the iterate itself, is
the exact solution of a problem whose data lie within a relative τ = max(tol, 10√(n+p+m) ε)
of the node's (its backward error, in the scale of the problem's own terms). Near a degenerate
bound the iterate is √gap (10⁻⁵) from x* while its residuals are 10⁻¹⁰; the polished point is
exact to rounding. A point that fails the check gets up to :data:`_REFINE_TRIPS` further tries
(a few more iterations, then a polish on the new iterate's active set and one on the last
polished point's corrected set, :func:`solve_loop`); then ``inaccurate``. ``Info.residual``
is the returned point's backward error (or gap, the larger) when the solver's test passed,
else the measure above.

Certificates, tested at every iterate, each side's rounding bounded (so a certificate is a
statement about the numbers, not about how an instance's batch rounded them), R = ε^(−1/3)
(2.0e2 in float32, 1.7e5 in float64):

- INFEASIBLE — (y, z ≥ 0) with q = −(bᵀy + hᵀz) > 0: every feasible x has
  ‖x‖₁ ≥ q / ‖Aᵀy + Gᵀz‖∞ (Farkas); declared when that bound exceeds R (1 + ‖x₀‖₁ + ‖x‖₁).
- UNBOUNDED — the step direction d (‖d‖∞ = 1) with cᵀd < 0: any KKT point has
  ‖x‖₁‖Pd‖∞ + ‖y‖₁‖Ad‖∞ + ‖z‖₁‖(Gd)₊‖∞ ≥ −cᵀd; declared when −cᵀd exceeds R (1 + ‖x₀‖₁ +
  ‖y‖₁ + ‖z‖₁) max(‖Pd‖∞, ‖Ad‖∞, ‖(Gd)₊‖∞).
- INACCURATE — the iterate grew 1/ε beyond the first point with neither certificate (a problem
  infeasible by less than the dtype resolves, in float32 ~10⁻³ relative), or became
  non-finite: the dtype cannot certify anything about this instance.
- SINGULAR / UNBOUNDED at the start — P + GᵀG + ρAᵀA singular: some d ≠ 0 has Pd = Ad = Gd = 0,
  so minimisers are not unique (SINGULAR) or the objective falls along d (UNBOUNDED: the
  regularised first solve then moves by ≳ 10⁻⁶‖c‖ / δ along d, δ the regularisation).
- INFEASIBLE / SINGULAR at the start — A rank-deficient, with inconsistent / consistent rows.
- SINGULAR — P is not positive semi-definite (the problem is not convex);
  MAX_ITER — ``max_iter`` (default 50) iterations; NONFINITE — NaN/Inf in the data.

Backward (``implicit``, OptNet — Amos & Kolter 2017): differentiating (1) with s = h − Gx, the
transposed KKT Jacobian system for an output cotangent x̄ is::

    P v_x + Aᵀv_y + GᵀZ v_z = x̄,   A v_x = 0,   G v_x − s ∘ v_z = 0

and eliminating v_z (w := z ∘ v_z = D G v_x) gives system (2) with D at the solution:
[P + GᵀDG, Aᵀ; A, 0] [v_x; v_y] = [x̄; 0] (one factorisation, symmetric; D taken at its limit
on the active set of the returned point, :func:`_adjoint_scaling`). Then::

    c̄ = −v_x   P̄ = −½(v_x xᵀ + x v_xᵀ)   Ā = −(v_y xᵀ + y v_xᵀ)   b̄ = v_y
    Ḡ = −(w xᵀ + z v_xᵀ)   h̄ = w                                                           (3)

Active constraints have D → ∞ (G v_x = 0 on them), inactive ones D → 0: the limit is the
derivative of the equality-constrained QP on the active set. NaN unless ``CONVERGED``.
``Info.adjoint`` is ``kkt``; ``Info.conditioning`` is NaN: the adjoint system is factored in the
backward pass only (at the solution's active-set scaling, not the last iterate's), after
``Info`` was returned.

``unroll``: autodiff through ``opts.steps`` iterations from the first point (``max_iter`` if
steps is 0; an iterate that has converged is frozen; step lengths and σ are not differentiated).
The value is that iterate, unpolished: ``converged`` if it passes the check itself, else
``max-iter`` (the iterate asked for, not a certified solution). ``truncated``: solve without
gradient, then differentiate ``opts.steps`` iterations (at least one) started from the
solution; the value is the certified solution; NaN unless the solve converged.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ddm.library.lapack import cholesky
from ddm.library.solvers.batching import batched_like
from ddm.library.solvers.certify import backward_error, certified, tolerance
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
    INACCURATE,
    INFEASIBLE,
    MAX_ITER,
    NONFINITE,
    SINGULAR,
    UNBOUNDED,
    Info,
    make_info,
    with_adjoint,
)

__all__ = ["qp", "QP", "Iterate", "Solution", "DEFAULT_MAX_ITER"]

DEFAULT_MAX_ITER = 50
_RUNNING = -1  # status while the loop runs
_CERTIFIED = -2  # the solver's own test and the independent check passed
_POLISH_SOLVES = 4  # solves of the method of multipliers in :func:`polish`
_REFINE_TRIPS = 5  # further tries for a point that fails the check
_REFINE_STEPS = 3  # iterations per try, at most
_STEP_FRACTION = 0.995  # of the longest step keeping s, z > 0


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
    """Constants of one solve (no gradient): the shift ρ and regularisation δ of every
    factorisation; ‖x₀‖₁, the problem's own scale for the certificates; the first point's
    size ‖(x₀, s₀, z₀, y₀)‖∞, against which divergence is measured; and the norms that bound
    the certificates' rounding (:func:`_rounding`)."""

    rho: jax.Array
    reg: jax.Array
    x0_norm: jax.Array
    size0: jax.Array
    rounding: "_Rounding"


class _Rounding(NamedTuple):
    """Per problem, computed once: the rounding of Aᵀy + Gᵀz is at most
    ``ty`` ‖y‖∞ + ``tz`` ‖z‖∞ entrywise (k ε times the largest column sums of |A| and |G|, k
    the most terms a column sums, + 1), that of Pd, Ad, Gd for ‖d‖∞ = 1 at most ``tp``,
    ``ta``, ``tg`` (n ε times the largest row sums), that of cᵀd at most ``tc`` (n ε ‖c‖₁).
    Norms, not products with |A|, |G|, |P|: no work per iteration."""

    ty: jax.Array
    tz: jax.Array
    tp: jax.Array
    ta: jax.Array
    tg: jax.Array
    tc: jax.Array


def _rounding(q: QP) -> _Rounding:
    n = q.P.shape[0]
    eps = float(jnp.finfo(q.P.dtype).eps)
    nnz = jnp.sum(q.A != 0, axis=0) + jnp.sum(q.G != 0, axis=0)
    k = (1 + jnp.max(nnz, initial=0)).astype(q.P.dtype) * eps
    col = lambda M: jnp.max(jnp.sum(jnp.abs(M), axis=0), initial=0.0)  # noqa: E731
    row = lambda M: n * eps * jnp.max(jnp.sum(jnp.abs(M), axis=1), initial=0.0)  # noqa: E731
    out = _Rounding(
        k * col(q.A), k * col(q.G), row(q.P), row(q.A), row(q.G), n * eps * jnp.sum(jnp.abs(q.c))
    )
    return jax.tree_util.tree_map(lax.stop_gradient, out)


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
    zero = jnp.zeros((), q.P.dtype)
    return _Frame(rho, reg, zero, zero, _rounding(q))


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
    size0 = jnp.maximum(
        jnp.maximum(_norm_inf(x), _norm_inf(y)), jnp.maximum(_norm_inf(s), _norm_inf(z))
    )
    fr = fr._replace(x0_norm=lax.stop_gradient(jnp.sum(jnp.abs(x))), size0=lax.stop_gradient(size0))
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


def _radius(dtype) -> float:
    """R = ε^(−1/3) (2.0e2 in float32, 1.7e5 in float64): how far beyond the iterates' scale
    a certificate must put every solution. Larger than any scale the dtype resolves next to
    the iterates', small enough that the certificates' rounding bounds leave room for them."""
    return float(jnp.finfo(dtype).eps) ** (-1.0 / 3.0)


def _infeasible(q: QP, it: Iterate, fr: _Frame) -> jax.Array:
    """Farkas certificate in (y, z ≥ 0), its rounding bounded (module docstring).

    q = −(bᵀy + hᵀz) and w = Aᵀy + Gᵀz are computed with errors at most
    e_q = (p + m)ε(|b|ᵀ|y| + |h|ᵀ|z|) and e_w (:class:`_Rounding`); declared when
    q − e_q > 2R (1 + ‖x₀‖₁ + ‖x‖₁) max(‖w‖∞, e_w) (the true ‖Aᵀy + Gᵀz‖∞ is at most
    ‖w‖∞ + e_w ≤ 2 max(‖w‖∞, e_w)). Without the bounds a lucky cancellation in w (exactly 0
    once y, z reach 10²⁰ in float32) decided the status, and which rounding an instance got —
    batched kernels round differently — decided it too. With the max, a w at rounding level
    enters as its bound e_w, a function of ‖y‖∞ and ‖z‖∞ alone, not of the noise in it.
    """
    x, _, z, y = it
    eps = float(jnp.finfo(x.dtype).eps)
    qv = -(q.b @ y + q.h @ z)
    e_q = (q.A.shape[0] + q.G.shape[0]) * eps * (jnp.abs(q.b) @ jnp.abs(y) + jnp.abs(q.h) @ z)
    e_w = fr.rounding.ty * _norm_inf(y) + fr.rounding.tz * _norm_inf(z)
    radius = _radius(x.dtype) * (1.0 + fr.x0_norm + jnp.sum(jnp.abs(x)))
    return qv - e_q > 2.0 * radius * jnp.maximum(_norm_inf(q.A.T @ y + q.G.T @ z), e_w)


def _unbounded(q: QP, it: Iterate, dx, fr: _Frame) -> jax.Array:
    """Dual-infeasibility certificate in the step direction d (module docstring), each side's
    rounding bounded (:class:`_Rounding`; a term at rounding level enters as its bound, as in
    :func:`_infeasible`)."""
    _, _, z, y = it
    scale = _norm_inf(dx)
    d = dx / jnp.where(scale > 0, scale, 1.0)
    rb = fr.rounding
    fall = -(q.c @ d) - rb.tc
    lhs = 2.0 * jnp.maximum(
        jnp.maximum(jnp.maximum(_norm_inf(q.P @ d), rb.tp), jnp.maximum(_norm_inf(q.A @ d), rb.ta)),
        jnp.maximum(_norm_inf(jnp.maximum(q.G @ d, 0.0)), rb.tg),
    )
    radius = _radius(dx.dtype) * (1.0 + fr.x0_norm + jnp.sum(jnp.abs(y)) + jnp.sum(z))
    return fall > radius * lhs


def _diverged(it: Iterate, fr: _Frame) -> jax.Array:
    """The iterate has grown 1/ε times beyond the first point: past there its arithmetic
    resolves nothing at the problem's scale, and the next steps overflow (the float32 issue:
    an infeasible instance whose certificate the dtype cannot resolve ran into Inf and NaN,
    reported as ``singular``, or not, as rounding had it)."""
    eps = float(jnp.finfo(it.x.dtype).eps)
    size = jnp.maximum(
        jnp.maximum(_norm_inf(it.x), _norm_inf(it.y)), jnp.maximum(_norm_inf(it.s), _norm_inf(it.z))
    )
    return size > (1.0 + fr.size0) / eps


def assess(q: QP, it: Iterate, dx, fr: _Frame, tol: "float | jax.Array"):
    """``(status, residual)`` at an iterate reached by the step ``dx``: CONVERGED (by the
    solver's own test — :func:`certify` decides what is returned), a certificate's status,
    INACCURATE for an iterate that diverged with no certificate or is not finite, else
    ``_RUNNING``."""
    res = measure(q, it)
    finite = all_finite(*it)
    status = jnp.where(
        res <= tol,
        CONVERGED,
        jnp.where(
            _infeasible(q, it, fr),
            INFEASIBLE,
            jnp.where(
                _unbounded(q, it, dx, fr),
                UNBOUNDED,
                jnp.where(_diverged(it, fr), INACCURATE, _RUNNING),
            ),
        ),
    )
    return jnp.where(finite, status, INACCURATE).astype(jnp.int32), res


# ------------------------------------------------------------------ polishing and certification


class Solution(NamedTuple):
    """The point a solve returns: x: [n], multipliers y: [p], z: [m] ≥ 0, and the active set
    ``active: [m]`` (bool) whose equality-constrained problem the gradient differentiates."""

    x: jax.Array
    y: jax.Array
    z: jax.Array
    active: jax.Array


def _active(q: QP, s, z):
    """Rows identified as active at an interior iterate: Dᵢ = zᵢ / sᵢ outweighs P in
    P + GᵀDG (Dᵢ‖gᵢ‖² > max|Pⱼⱼ|). Strictly complementary rows are told apart once the gap is
    below their multiplier or slack squared; a degenerate row (sᵢ = zᵢ = 0 at the solution)
    may go either way, and either way gives the same solution."""
    scale = jnp.max(jnp.abs(diagonal(q.P)), initial=0.0)
    scale = jnp.where(scale > 0, scale, 1.0)
    return (z / s) * jnp.sum(q.G * q.G, axis=1) > scale


def polish(q: QP, it: Iterate, fr: _Frame, active, fast: bool = False):
    """The solution of the equality-constrained QP on the active set — A x = b and gᵢᵀx = hᵢ
    for the active rows 𝒜, the others dropped — by iterative refinement of its KKT system
    [[P, Aᵀ, G_𝒜ᵀ], [A, 0, 0], [G_𝒜, 0, 0]] with the regularised system that puts −D⁻¹ in
    place of the last block's 0 as the approximate solver: eliminating dz = D(G dx − r_h),
    each correction is one solve with the interior point's matrix shape (2)::

        (P + GᵀDG) dx + Aᵀdy = r_c + GᵀD r_h,   A dx = r_b      (Dᵢ = κ max|Pⱼⱼ| / ‖gᵢ‖² on 𝒜,
                                                                  0 elsewhere)

    for the residuals r_c = −(Px + c + Aᵀy + G_𝒜ᵀz), r_b = b − Ax, r_h = h − Gx on 𝒜
    (the method of multipliers, written in corrections). Started at the interior point's
    (x, y, z) the error contracts by 1/(1 + κ) or faster per solve; κ = ε^(−1/4) keeps
    P + GᵀDG within κ cond(P) of P's conditioning. Solving for corrections, not for the point,
    leaves rounding at the level of the residuals computed in the problem's own scale
    (solving for the point itself left κε, the scale of the penalised matrix).
    :data:`_POLISH_SOLVES` solves, one factorisation. Returns ``(x, y, z)`` with z = 0 off
    the active set. Not differentiated.
    """
    eps = float(jnp.finfo(q.P.dtype).eps)
    scale = jnp.max(jnp.abs(diagonal(q.P)), initial=0.0)
    scale = jnp.where(scale > 0, scale, 1.0)
    row = jnp.sum(q.G * q.G, axis=1)
    row = jnp.where(row > 0, row, 1.0)
    D = jnp.where(active, eps**-0.25 * scale / row, 0.0)
    f = _factor(q, D, fr, fast)

    def refine(_, v):
        x, y, z = v
        r_c = -(q.P @ x + q.c + q.A.T @ y + q.G.T @ z)
        r_h = jnp.where(active, q.h - q.G @ x, 0.0)
        dx, dy = kkt_solve(f, r_c + q.G.T @ (D * r_h), q.b - q.A @ x)
        return x + dx, y + dy, z + D * (q.G @ dx - r_h)

    return lax.fori_loop(0, _POLISH_SOLVES, refine, (it.x, it.y, jnp.where(active, it.z, 0.0)))


def certify(q: QP, it: Iterate, fr: _Frame, tau: float, masks, count, fast: bool = False):
    """``(solution, certified, residual)`` at an iterate the solver's own test accepted.

    ``masks: [k, m]`` (bool) are candidate active sets, of which the first ``count`` are tried
    (one loop, so one copy of :func:`polish` in the compiled program). The best polished point
    — certified, else the smallest backward error — is returned if it passes the check
    (:mod:`~ddm.library.solvers.certify`), else the interior point itself if it passes, else
    the polished point (uncertified: the next try corrects its active set from it).
    ``residual`` is the returned point's backward error (or gap, the larger).
    """

    def tried(carry):
        i, best, best_res, best_ok = carry
        xp, yp, zp = polish(q, it, fr, masks[i], fast)
        beta, gap, _ = backward_error(*q, xp, yp, zp)
        res, ok = jnp.maximum(beta, gap), certified(beta, gap, tau)
        better = (ok & ~best_ok) | ((ok == best_ok) & (res < best_res))
        pick = lambda a, b: jnp.where(better, a, b)  # noqa: E731
        sol = Solution(xp, yp, zp, masks[i])
        return (
            i + 1,
            jax.tree_util.tree_map(pick, sol, best),
            pick(res, best_res),
            pick(ok, best_ok),
        )

    inf = jnp.array(jnp.inf, it.x.dtype)
    init = (jnp.zeros((), jnp.int32), Solution(it.x, it.y, it.z, masks[0]), inf, jnp.array(False))
    _, best, res_p, ok_p = lax.while_loop(lambda c: c[0] < count, tried, init)
    bi, gi, _ = backward_error(*q, it.x, it.y, it.z)
    ok_i = certified(bi, gi, tau)
    use_p = ok_p | ~ok_i
    sol = jax.tree_util.tree_map(
        lambda a, b: jnp.where(use_p, a, b), best, Solution(it.x, it.y, it.z, best.active)
    )
    return sol, ok_p | ok_i, jnp.where(use_p, res_p, jnp.maximum(bi, gi))


def _corrected(q: QP, sol: Solution):
    """The active set of a polished point that failed the check, corrected as a primal–dual
    active-set step: rows it violates join, active rows with a multiplier ≤ 0 leave. In
    float32 the interior point stalls before it tells every weakly active row apart (its gap
    cannot fall below rounding), and one row on the wrong side kept the backward error at
    1e-4; the correction needs no further progress of the iterate."""
    return (sol.active & (sol.z > 0)) | (~sol.active & (q.G @ sol.x > q.h))


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
    q: QP,
    state: _State,
    fr: _Frame,
    tol: "float | jax.Array",
    max_iter: "int | jax.Array",
    fast: bool = False,
) -> _State:
    """One interior-point iteration and its assessment (``tol`` and ``max_iter`` may be traced:
    a refining trip tightens the one and moves the other)."""
    it, dx = ipm_step(q, state.it, fr, fast)
    status, res = assess(q, it, dx, fr, tol)
    k = state.k + 1
    status = jnp.where((status == _RUNNING) & (k >= max_iter), MAX_ITER, status)
    return _State(it, k, status, res)


class _Certifying(NamedTuple):
    state: _State
    sol: Solution
    trips: jax.Array


def solve_loop(q: QP, tol: float, max_iter: int):
    """Iterate until a final status (``lax.while_loop``; not differentiable), then certify:
    ``(last iterate, solution, Info)``.

    An instance the solver's own test accepts is polished on the active set its iterate
    identifies and checked (:func:`certify`). One that fails goes on: up to
    :data:`_REFINE_STEPS` further iterations towards a 100 times tighter test, then two
    polishes — on the active set the new iterate identifies, and on the last polished point's
    set corrected as a primal–dual active-set step (:func:`_corrected`) — the better kept; up
    to :data:`_REFINE_TRIPS` times, then ``inaccurate``. (Further iterations fix an iterate the
    solver stopped early; the correction fixes one whose progress stalled at the dtype's
    rounding, as in float32; either alone left instances of the shipped examples uncertified.)
    One loop holds both phases — each trip runs the iterations, then the check — so the
    compiled program has one copy of each. Under ``vmap`` an instance that has stopped keeps
    its state bit for bit while others run, and a second trip happens only if some instance
    needs it.
    """
    state, fr = _start(q, fast=True)
    state = state._replace(
        status=jnp.where((state.status == _RUNNING) & (max_iter <= 0), MAX_ITER, state.status)
    )
    tau = tolerance(tol, q.P.dtype, sum(q.A.shape) + q.G.shape[0])

    def trip(c: _Certifying) -> _Certifying:
        first = c.trips == 0
        target = (tol * 0.01 ** c.trips.astype(q.P.dtype)).astype(q.P.dtype)
        limit = jnp.where(first, max_iter, c.state.k + _REFINE_STEPS)
        st = lax.while_loop(
            lambda s: s.status == _RUNNING,
            lambda s: _advance(q, s, fr, target, limit, fast=True),
            c.state,
        )
        masks = jnp.stack([_active(q, st.it.s, st.it.z), _corrected(q, c.sol)])
        new, ok, res = certify(q, st.it, fr, tau, masks, jnp.where(first, 1, 2), fast=True)
        # By the solver's own test, not yet checked (a refining trip may end at its limit).
        candidate = (st.status == CONVERGED) | (~first & (st.status == MAX_ITER))
        again = c.trips < _REFINE_TRIPS
        status = jnp.where(ok, _CERTIFIED, jnp.where(again, _RUNNING, INACCURATE))
        pick = lambda a, b: jnp.where(candidate, a, b)  # noqa: E731
        # Instances that stopped for any other reason return their last iterate, as they were.
        last = Solution(st.it.x, st.it.y, st.it.z, new.active)
        sol = jax.tree_util.tree_map(
            lambda a, b, d: pick(a, jnp.where(first, b, d)), new, last, c.sol
        )
        st = st._replace(status=pick(status, st.status).astype(jnp.int32), res=pick(res, st.res))
        return _Certifying(st, sol, c.trips + 1)

    start = Solution(state.it.x, state.it.y, state.it.z, jnp.zeros(state.it.z.shape, bool))
    c = batched_like(_Certifying(state, start, jnp.zeros((), jnp.int32)), q.c)
    c = lax.while_loop(lambda c: c.state.status == _RUNNING, trip, c)
    state = c.state._replace(
        status=jnp.where(c.state.status == _CERTIFIED, CONVERGED, c.state.status)
    )
    return state.it, c.sol, _info(state)


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


def _adjoint_scaling(q: QP, active):
    """D for the adjoint solve: the limit of z / s at the solution, on the active set.

    Exactly, D → ∞ on active constraints (gᵢᵀv_x = 0) and D → 0 on inactive ones. The active
    set is the one the returned point was certified with (:func:`_active`, the polished point
    solves exactly that equality-constrained problem), and an active row gets Dᵢ = ε^(−1/2)
    max|Pⱼⱼ| / ‖gᵢ‖²: large enough to enforce gᵢᵀv_x = 0 to a relative ε^(1/2), small enough
    to keep the matrix's Cholesky factor accurate (z / s itself reaches 10¹⁶ in float64); an
    inactive one gets 0. The gradient is then that of the equality-constrained problem on the
    active set — also at a loose (float32) tolerance, where z / s is far from its limit.
    """
    eps = float(jnp.finfo(q.P.dtype).eps)
    scale = jnp.max(jnp.abs(diagonal(q.P)), initial=0.0)
    scale = jnp.where(scale > 0, scale, 1.0)
    row = jnp.sum(q.G * q.G, axis=1)
    row = jnp.where(row > 0, row, 1.0)
    return jnp.where(active, scale / (eps**0.5 * row), 0.0)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _implicit(q: QP, tol: float, max_iter: int):
    _, sol, info = solve_loop(q, tol, max_iter)
    return sol.x, info


def _implicit_fwd(q: QP, tol: float, max_iter: int):
    _, sol, info = solve_loop(q, tol, max_iter)
    return (sol.x, info), (q, sol, info.status)


def _implicit_bwd(tol, max_iter, saved, cts):
    """Equation (3): one factorisation of (2) at the solution."""
    q, sol, status = saved
    x, y, z, active = sol
    xbar = cts[0]
    fr = _frame(q, q.P + gram(q.G, jnp.ones_like(z), fast=True))
    d = _adjoint_scaling(q, active)
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


def qp(P, c, A, b, G, h, opts: SolveOptions = SolveOptions(), *, symmetric: bool = False):
    """Solve min_x ½xᵀPx + cᵀx s.t. A x = b, G x ≤ h for one instance; returns ``(x, info)``.

    ``P: [n, n]`` (symmetric part read), ``c: [n]``, ``A: [p, n]``, ``b: [p]``, ``G: [m, n]``,
    ``h: [m]``; p and m may be 0 (m = 0 is solved by :func:`~.eq_qp.eq_qp`). Gradients reach all
    six (module docstring, (3)); NaN for an instance whose status is not ``CONVERGED``
    (``implicit``, ``truncated``) — with ``unroll``, not ``CONVERGED`` or ``MAX_ITER`` (the
    unrolled gradient is then exactly that of the iterate returned). ``symmetric=True``
    promises P exactly symmetric: no pass over P to take its symmetric part.

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
        return eq_qp(q.P, q.c, q.A, q.b, replace(opts, backward=mode), symmetric=symmetric)
    out, work = work_dtype(opts, *q)
    q = QP(*(a.astype(work) for a in q))
    q = q if symmetric else q._replace(P=symmetrize(q.P))
    tol = opts.tolerance(work)
    max_iter = DEFAULT_MAX_ITER if opts.max_iter is None else int(opts.max_iter)
    if opts.backward == "implicit":
        # jax.custom_vjp's unannotated __new__ leaves the result type unsolved under partial
        x, info = _implicit(q, tol, max_iter)  # pyright: ignore[reportGeneralTypeIssues]
    elif opts.backward == "unroll":
        steps = opts.steps if opts.steps > 0 else max_iter
        state, fr = _start(q)
        state = solve_steps(q, state, fr, tol, steps)
        # The value is the steps-th iterate: ``converged`` only if it passes the check itself
        # (no polishing here), else it is what was asked for, the iterate (``max-iter``).
        beta, gap, _ = backward_error(*q, state.it.x, state.it.y, state.it.z)
        ok = certified(beta, gap, tolerance(tol, work, sum(q.A.shape) + q.G.shape[0]))
        converged = state.status == CONVERGED
        state = state._replace(
            status=jnp.where(converged & ~ok, MAX_ITER, state.status),
            res=jnp.where(converged, jnp.maximum(beta, gap), state.res),
        )
        info = with_adjoint(_info(state), ADJ_UNROLL)
        x = poison_gradient(state.it.x, (info.status == CONVERGED) | (info.status == MAX_ITER))
    else:
        sg = lax.stop_gradient
        it, sol, info = solve_loop(jax.tree_util.tree_map(sg, q), tol, max_iter)
        it = plain_steps(q, jax.tree_util.tree_map(sg, it), _frame(q), max(opts.steps, 1))
        # The value is the certified solution; the gradient, the iterations' from it.
        x = poison_gradient(sol.x + (it.x - sg(it.x)), info.status == CONVERGED)
        info = with_adjoint(
            info._replace(iterations=info.iterations + max(opts.steps, 1)), ADJ_TRUNCATED
        )
    return x.astype(out), info
