"""Class 3: minimise a smooth f(x, θ) subject to A x = b by Newton's method on the KKT system.

Forward (never differentiated in ``implicit`` mode)::

    x ← x₀ − A⁺(A x₀ − b)                        feasible start (least squares, A⁺ = pinv A)
    repeat:  solve  [H  Aᵀ] [dx]   [−∇f]          Newton–KKT step, written in the null space of A:
                    [A  0 ] [ν ] = [ 0 ]          P H P dx = −P ∇f with P = I − A⁺A, dx ∈ null(A)
             x ← x + t dx                          t by Armijo backtracking on f
    until the KKT residual ≤ tol and the next Newton step is small (below), or max_iter.

Where H is not positive definite on null(A) the step is regularised (dense: H + δI with δ from
Gershgorin's bound, so the shifted matrix is positive definite; matrix-free: conjugate gradients
stopped at the first direction of non-positive curvature), and the line search may then also
*expand* the step (t = 2, 4, …) while Armijo's condition holds and f keeps falling, which
drives an objective that is unbounded below to −∞ within a few iterations so it is reported,
not looped on. A Hessian that is only singular (f flat along a direction the gradient does not
touch) thus gets the slightly shifted Newton step, not lengthened, and converges as usual.

Backward (``implicit``): the KKT conditions F(x, ν; θ, A, b) = [∇ₓf(x, θ) + Aᵀν; A x − b] = 0
are differentiated by :func:`~ddm.library.solvers.implicit.implicit_root`; their Jacobian in
(x, ν) is the KKT matrix [[H, Aᵀ], [A, 0]], applied by Hessian-vector products when matrix-free.
A, b and everything f closes over receive cotangents. Where the KKT matrix is singular at a
minimum (H semi-definite on null(A)), the dense adjoint falls back to least squares per
instance and reports it (``Info.adjoint``); a saddle point is SINGULAR, with a NaN gradient.

Modes: ``unroll`` differentiates ``opts.steps`` Newton iterations from x₀ (the forward value is
that iterate); ``truncated`` solves without gradient, then differentiates ``opts.steps`` iterations
started at the solution (its gradient is NaN where the solve failed).

Residual (Info.residual) at x, with ν = −(Aᵀ)⁺∇f the least-squares multiplier:
    max( ‖∇f + Aᵀν‖∞ / (1 + ‖Aᵀν‖∞),  ‖Ax − b‖∞ / (1 + ‖b‖∞) ).
Without constraints that is ‖∇f‖∞ — absolute, in f's units: f = 10⁻¹²‖x − a‖² passes it at
x = 0 for any ‖a‖ < 50. So ``converged`` also needs the independent check of
:func:`_step_small`: the Newton step at x, which does not change when f is scaled and
estimates x* − x, is below √tol (1 + ‖x‖∞). Each iteration computes the next point's
direction anyway; the test reads it.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ddm.library.lapack import cho_solve, cholesky
from ddm.library.solvers.batching import batched_like
from ddm.library.solvers.implicit import (
    cast_inexact,
    closure_convert,
    implicit_root,
    poison_gradient,
    use_dense,
)
from ddm.library.solvers.options import SolveOptions
from ddm.library.solvers.status import (
    ADJ_DENSE,
    ADJ_TRUNCATED,
    ADJ_UNROLL,
    CONVERGED,
    INFEASIBLE,
    MAX_ITER,
    NONFINITE,
    SINGULAR,
    UNBOUNDED,
    make_info,
    with_adjoint,
)

__all__ = ["newton", "kkt_residual"]

DEFAULT_MAX_ITER = 50
_RUNNING = -1  # status while the loop runs
_ARMIJO = 1e-4  # sufficient-decrease constant α in f(x + t dx) ≤ f(x) + α t ∇fᵀdx
_HALVINGS = 60  # backtracking limit: t ≥ 2⁻⁶⁰
_DOUBLINGS = 110  # expansion limit on non-convex steps: t ≤ 2¹¹⁰ (> 1e33)


def _big(dtype) -> float:
    """|f| or ‖x‖∞ beyond which the problem is declared unbounded."""
    return 1e30 if jnp.finfo(dtype).bits == 64 else 1e18


# ---------------------------------------------------------------- the affine constraint set


class _Affine(NamedTuple):
    """{x : A x = b} with A⁺ = pinv(A): ``A [p, n]``, ``b [p]``, ``Ap [n, p]`` (differentiable)."""

    A: jax.Array
    b: jax.Array
    Ap: jax.Array

    @staticmethod
    def of(A, b) -> "_Affine":
        p, n = A.shape
        Ap = jnp.zeros((n, 0), A.dtype) if p == 0 else jnp.linalg.pinv(A)
        return _Affine(A, b, Ap)

    def project(self, x):
        """Closest point of the set in the least-squares sense: x − A⁺(A x − b)."""
        return x - self.Ap @ (self.A @ x - self.b)

    def null(self, v):
        """P v = v − A⁺A v: the component of v in null(A)."""
        return v - self.Ap @ (self.A @ v)

    def null_matrix(self):
        """P = I − A⁺A as an [n, n] matrix (dense path)."""
        n = self.A.shape[1]
        return jnp.eye(n, dtype=self.A.dtype) - self.Ap @ self.A


def _inf(v):
    return jnp.max(jnp.abs(v), initial=0.0)


def _residual(g, x, aff: _Affine):
    """Relative KKT residual at x (module docstring), given g = ∇f(x)."""
    Pg = aff.null(g)
    dual = _inf(Pg) / (1.0 + _inf(g - Pg))  # g − Pg = −Aᵀν
    primal = _inf(aff.A @ x - aff.b) / (1.0 + _inf(aff.b))
    return jnp.maximum(dual, primal)


def _multiplier(g, aff: _Affine):
    """ν = −(A⁺)ᵀ ∇f: the least-squares solution of Aᵀν = −∇f."""
    return -aff.Ap.T @ g


def kkt_residual(f: Callable) -> Callable:
    """F((x, ν), (θ, A, b)) = (∇ₓf(x, θ) + Aᵀν, A x − b): the optimality function of class 3."""

    def F(z, params):
        x, nu = z
        th, A, b = params
        return jax.grad(f)(x, th) + A.T @ nu, A @ x - b

    return F


# ---------------------------------------------------------------- Newton directions


def _dense_direction(f, x, th, aff: _Affine, g):
    """Newton direction from the materialised Hessian; returns ``(dx, regularised)``.

    M = P H P + (I − P) is positive definite iff H is on null(A); then M dx = −P g gives the
    Newton–KKT step (its component in range(Aᵀ) vanishes). Otherwise M + δI with
    δ = max(0, −min_i(Mᵢᵢ − Σ_{j≠i}|Mᵢⱼ|))(1 + √ε) + √ε(1 + ‖M‖max) — Gershgorin's lower bound
    on λmin(M), so the shifted matrix is positive definite and dx a descent direction.
    """
    n = x.shape[0]
    eye = jnp.eye(n, dtype=x.dtype)
    P = aff.null_matrix()
    H = jax.hessian(f)(x, th)
    M = P @ H @ P + (eye - P)
    M = 0.5 * (M + M.T)
    rhs = -(P @ g)
    L = cholesky(M, symmetrize=True)
    # A singular M can factor with a pivot at rounding level instead of failing; solving with
    # it throws the step far along null(M) (a valley's floor). So a pivot ratio min Lᵢᵢ²/max Lᵢᵢ²
    # at rounding level (below 100 n ε, and ε^(2/3) at most) counts as a failed factor too: the
    # shifted solve below then stays in range(M). Merely ill-conditioned Hessians keep Newton.
    eps = float(jnp.finfo(x.dtype).eps)
    d = jnp.diag(L) ** 2
    floor = min(100.0 * n * eps, eps ** (2.0 / 3.0))
    ok = jnp.all(jnp.isfinite(L)) & (jnp.min(d) > floor * jnp.max(d))
    # A failed factor is NaN: swap in I so the unused branch stays finite under autodiff too.
    dx_newton = cho_solve(jnp.where(ok, L, eye), rhs)
    root_eps = jnp.sqrt(jnp.finfo(x.dtype).eps)
    off = jnp.sum(jnp.abs(M), axis=1) - jnp.abs(jnp.diag(M))
    delta = jnp.maximum(0.0, -jnp.min(jnp.diag(M) - off)) * (1.0 + root_eps) + root_eps * (
        1.0 + jnp.max(jnp.abs(M))
    )
    L_reg = cholesky(M + delta * eye, symmetrize=True)
    dx_reg = cho_solve(jnp.where(ok, eye, L_reg), rhs)
    return P @ jnp.where(ok, dx_newton, dx_reg), ~ok


def _projected_cg(hvp, null, rhs, maxiter: int, differentiable: bool):
    """Truncated conjugate gradients for P H P d = rhs on null(A) (rhs ∈ null(A)).

    Stops when ‖r‖₂ ≤ min(½, √‖rhs‖₂)·‖rhs‖₂ (a superlinear forcing term) or at a search
    direction p of non-positive curvature. "Non-positive" is pᵀHp ≤ 0 on the first iteration
    and, later, pᵀHp ≤ 10³ε·κ‖p‖² with κ the largest Rayleigh quotient met so far: rounding in
    P lets late directions leak into range(Aᵀ), where PHP has no curvature, and that must not
    read as non-convexity. On stopping it keeps the iterate so far, or returns rhs (steepest
    descent) on the first iteration. Returns ``(d, negative_curvature)``, the flag meaning
    curvature really below zero (or zero at the start): the step is then regularised.
    ``differentiable`` runs exactly ``maxiter`` masked iterations (reverse-mode friendly)
    instead of a while loop.
    """
    norm0 = jnp.linalg.norm(rhs)
    tol = lax.stop_gradient(jnp.minimum(0.5, jnp.sqrt(norm0)) * norm0)
    eps_c = 1e3 * jnp.finfo(rhs.dtype).eps
    zero = jnp.zeros_like(rhs)
    rs0 = rhs @ rhs
    kappa0 = jnp.zeros((), rhs.dtype)
    init = (zero, rhs, rhs, rs0, jnp.array(0), norm0 <= tol, jnp.array(False), kappa0)

    def step(state):
        d, r, p, rs, k, done, neg, kappa = state
        Hp = null(hvp(p))
        curv = p @ Hp
        pp = p @ p
        floor = lax.stop_gradient(jnp.where(k == 0, 0.0, eps_c * kappa * pp))
        stop_now = (curv <= floor) & ~done
        neg_now = stop_now & ((k == 0) | (curv < -floor))
        alpha = rs / jnp.where(stop_now | done, 1.0, curv)
        d_new = d + alpha * p
        r_new = null(r - alpha * Hp)  # re-projected: no drift out of null(A)
        rs_new = r_new @ r_new
        p_new = null(r_new + (rs_new / jnp.where(rs == 0.0, 1.0, rs)) * p)
        d_new = jnp.where(stop_now, jnp.where(k == 0, rhs, d), d_new)
        done_new = stop_now | (jnp.sqrt(rs_new) <= tol)
        kappa_new = jnp.maximum(kappa, lax.stop_gradient(curv / jnp.where(pp > 0, pp, 1.0)))
        new = (d_new, r_new, p_new, rs_new, k + 1, done_new, neg | neg_now, kappa_new)
        # Once done, the state is frozen (the masked fixed-length loop relies on this).
        return jax.tree_util.tree_map(lambda a, b: jnp.where(done, a, b), state, new)

    if differentiable:
        out = lax.fori_loop(0, maxiter, lambda _, s: step(s), init)
    else:
        # its condition reads the per-instance ``done``: batched anyway
        out = lax.while_loop(lambda s: ~s[5] & (s[4] < maxiter), step, batched_like(init, rhs))
    return out[0], out[6]


def _matfree_direction(f, x, th, aff: _Affine, g, differentiable: bool):
    """Newton direction by Hessian-vector products and projected CG; ``(dx, regularised)``."""
    n = x.shape[0]
    _, hvp = jax.linearize(lambda y: jax.grad(f)(y, th), x)
    d, neg = _projected_cg(hvp, aff.null, -aff.null(g), max(2 * n, 20), differentiable)
    return aff.null(d), neg


def _direction(f, x, th, aff, g, dense: bool, differentiable: bool = False):
    if dense:
        return _dense_direction(f, x, th, aff, g)
    return _matfree_direction(f, x, th, aff, g, differentiable)


# ---------------------------------------------------------------- line search


def _line_search(f, x, fx, dx, slope, expand):
    """Step length t for x + t dx.

    Armijo: the largest t = 2⁻ʲ (j ≤ 60) with f(x + t dx) ≤ f(x) + α t slope + s, where
    s = 10ε(1 + |f(x)|) absorbs rounding once the decrease is below f's precision. When
    ``expand`` (a regularised step) and t = 1 passes, t doubles while 2t still passes *and*
    lowers f below f(x + t dx): a step along a flat or concave direction grows as far as f
    keeps falling, while a regularised step that is already (nearly) the Newton step — a
    singular but semi-definite Hessian — is not lengthened past the minimiser; without the
    strict decrease the slack would let it hop around the minimiser at the size the slack
    allows, never converging. t = 0 when dx is not a descent direction (slope ≥ 0) or no trial
    passes.
    Not differentiated: callers pass stop-gradient inputs.
    """
    slack = 10.0 * jnp.finfo(x.dtype).eps * (1.0 + jnp.abs(fx))

    def passes(t):
        ft = f(x + t * dx)
        return jnp.isfinite(ft) & (ft <= fx + _ARMIJO * t * slope + slack)

    def improves(t):
        return passes(2.0 * t) & (f(x + 2.0 * t * dx) < f(x + t * dx))

    descent = slope < 0.0
    one = jnp.ones((), x.dtype)
    t, _ = lax.while_loop(
        lambda s: descent & ~passes(s[0]) & (s[1] < _HALVINGS),
        lambda s: (0.5 * s[0], s[1] + 1),
        (one, jnp.array(0)),
    )
    ok = descent & passes(t)
    t, _ = lax.while_loop(
        lambda s: ok & expand & (s[1] < _DOUBLINGS) & improves(s[0]),
        lambda s: (2.0 * s[0], s[1] + 1),
        (t, jnp.array(0)),
    )
    return jnp.where(ok, t, 0.0)


# ---------------------------------------------------------------- forward solve


class _State(NamedTuple):
    x: jax.Array
    fx: jax.Array
    g: jax.Array
    dx: jax.Array  # the direction at x (the step the next iteration takes)
    k: jax.Array
    status: jax.Array
    res: jax.Array
    reg: jax.Array  # whether dx was regularised


def _all_finite(tree) -> jax.Array:
    leaves = [
        jnp.all(jnp.isfinite(a))
        for a in jax.tree_util.tree_leaves(tree)
        if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _step_small(x, dx, tol):
    """The independent check: the Newton step at x — to first order x* − x — is below
    √tol (1 + ‖x‖∞). The KKT residual alone is an absolute test where A is empty
    (‖∇f‖∞ ≤ tol): an objective scaled by 10⁻¹² passes it anywhere near its minimiser, while
    its Newton step, invariant to that scaling, still measures the distance. √tol, not tol:
    at x* the computed step is rounding amplified by cond(H), and Newton's next step squares
    what remains."""
    return _inf(dx) <= jnp.sqrt(tol) * (1.0 + _inf(x))


def _classify(x, fx, g, res, tol, big, dx):
    """Status of an iterate: NONFINITE, UNBOUNDED, CONVERGED (the residual within ``tol`` and
    the Newton step ``dx`` small, :func:`_step_small`) or still running."""
    finite = jnp.isfinite(fx) & jnp.all(jnp.isfinite(x)) & jnp.all(jnp.isfinite(g))
    unbounded = (fx < -big) | (_inf(x) > big)
    done = (res <= tol) & _step_small(x, dx, tol)
    return jnp.where(
        ~finite,
        NONFINITE,
        jnp.where(unbounded, UNBOUNDED, jnp.where(done, CONVERGED, _RUNNING)),
    )


def _solve(f, opts: SolveOptions, x0, params):
    """Forward Newton–KKT solve of one instance: ``((x, ν), Info)``.

    Each iteration steps along the direction computed at its start point, then computes the
    next point's direction, which the stopping test reads (:func:`_classify`) and the next
    iteration takes: one direction per iteration, plus the first."""
    th, A, b = params
    n = x0.shape[0]
    dtype = x0.dtype
    tol = opts.tolerance(dtype)
    max_iter = opts.max_iter if opts.max_iter is not None else DEFAULT_MAX_ITER
    dense = use_dense(n, opts)
    big = _big(dtype)
    aff = _Affine.of(A, b)
    value_and_grad = jax.value_and_grad(lambda x: f(x, th))

    x = aff.project(x0)
    fx, g = value_and_grad(x)
    dx, reg = _direction(f, x, th, aff, g, dense)
    res = _residual(g, x, aff)
    primal = _inf(A @ x - b) / (1.0 + _inf(b))
    status = _classify(x, fx, g, res, tol, big, dx)
    status = jnp.where(primal > jnp.sqrt(tol), INFEASIBLE, status)
    status = jnp.where(_all_finite((x0, params)), status, NONFINITE)
    state = _State(x, fx, g, dx, jnp.array(0, jnp.int32), status.astype(jnp.int32), res, reg)

    def body(s: _State) -> _State:
        t = _line_search(lambda y: f(y, th), s.x, s.fx, s.dx, s.g @ s.dx, s.reg)
        x = aff.project(s.x + t * s.dx)  # re-projection removes the rounding drift off Ax = b
        fx, g = value_and_grad(x)
        dx, reg = _direction(f, x, th, aff, g, dense)
        res = _residual(g, x, aff)
        st = _classify(x, fx, g, res, tol, big, dx)
        st = jnp.where((st == _RUNNING) & (t == 0.0), MAX_ITER, st)  # stalled: no progress
        return _State(x, fx, g, dx, s.k + 1, st.astype(jnp.int32), res, reg)

    s = lax.while_loop(
        lambda s: (s.status == _RUNNING) & (s.k < max_iter), body, batched_like(state, x)
    )
    status = jnp.where(s.status == _RUNNING, MAX_ITER, s.status)
    # Matrix-free, the final point's CG curvature test stands in for the dense Hessian test.
    singular = _singular(f, s.x, th, aff, dense) | (s.reg if not dense else False)
    status = jnp.where((status == CONVERGED) & singular, SINGULAR, status)
    nu = _multiplier(s.g, aff)
    return (s.x, nu), make_info(status, s.k, s.res, ADJ_DENSE)


def _singular(f, x, th, aff: _Affine, dense: bool):
    """Whether x is not a minimum whose derivative the KKT system defines: A rank-deficient,
    or H not positive semi-definite on null(A) (a saddle or a maximum, not a minimum).

    Dense: Cholesky of M + cI with M = PHP + (I − P), c = 100 n ε (1 + ‖M‖max), must succeed
    (M semi-definite up to rounding), and A must have full row rank. A semi-definite but
    singular H — a direction along which f is flat at x — is *not* flagged: the point is a
    minimum, and the adjoint decides per instance whether it is differentiable
    (:mod:`~ddm.library.solvers.implicit`, least squares). Matrix-free: only the rank of A is
    checked here; the final step's curvature test (``reg``) covers the rest.
    """
    p, n = aff.A.shape
    eps = jnp.finfo(x.dtype).eps
    rank_deficient = jnp.array(False)
    if p > 0:
        sv = jnp.linalg.svd(aff.A, compute_uv=False)
        rank_deficient = sv[-1] <= 100.0 * max(p, n) * eps * sv[0]
    if not dense:
        return rank_deficient
    P = aff.null_matrix()
    H = jax.hessian(f)(x, th)
    M = P @ H @ P + (jnp.eye(n, dtype=x.dtype) - P)
    M = 0.5 * (M + M.T)
    c = 100.0 * n * eps * (1.0 + jnp.max(jnp.abs(M)))
    psd = jnp.all(jnp.isfinite(cholesky(M + c * jnp.eye(n, dtype=x.dtype), symmetrize=True)))
    return rank_deficient | ~psd


# ---------------------------------------------------------------- unrolled iterations


def _iterate(f, opts: SolveOptions, x_start, params, steps: int):
    """``steps`` differentiable Newton iterations from ``x_start``; returns ``(x, Info)``.

    x ← P(x) then x ← x + t dx, where the feasibility projection and dx are differentiated and
    the step length t (piecewise constant in the data) is not.
    """
    th, A, b = params
    n = x_start.shape[0]
    dense = use_dense(n, opts)
    aff = _Affine.of(A, b)
    sg = lax.stop_gradient
    th_c = sg(th)

    def one(x, _):
        g = jax.grad(f)(x, th)
        dx, reg = _direction(f, x, th, aff, g, dense, differentiable=True)
        xs, dxs = sg(x), sg(dx)
        t = _line_search(lambda y: f(y, th_c), xs, f(xs, th_c), dxs, sg(g) @ dxs, sg(reg))
        return aff.project(x + t * dx), None

    x, _ = lax.scan(one, aff.project(x_start), None, length=steps)
    fx, g = jax.value_and_grad(f)(x, th)
    res = _residual(g, x, aff)
    xs, gs, affs = sg(x), sg(g), _Affine(*(sg(a) for a in aff))
    dx, _ = _direction(f, xs, th_c, affs, gs, dense)
    status = _classify(x, fx, g, res, opts.tolerance(x.dtype), _big(x.dtype), dx)
    status = jnp.where(status == _RUNNING, MAX_ITER, status)
    status = jnp.where(_all_finite((x_start, params)), status, NONFINITE)
    return x, make_info(sg(status), steps, sg(res), ADJ_UNROLL)


# ---------------------------------------------------------------- entry point


def newton(f: Callable, theta, A, b, x0, opts: SolveOptions = SolveOptions()):
    """argmin_x f(x, θ) subject to A x = b, for one instance; returns ``(x, Info)``.

    - ``f(x, θ) -> scalar``: smooth (twice differentiable) in ``x: [n]``; ``θ`` any pytree of
      arrays. Arrays f closes over are differentiated too (they are hoisted into θ).
    - ``A: [p, n]``, ``b: [p]`` (p may be 0; ``A=None`` means no constraints), differentiable.
    - ``x0: [n]``: starting point (no gradient in ``implicit`` mode).
    - ``opts``: tolerance, ``max_iter`` (default 50), backward mode and ``steps``, dtype,
      dense / matrix-free switch (module docstring).

    Status: CONVERGED (the KKT residual within tol and the Newton step within √tol (1 + ‖x‖∞);
    also where the Hessian is only semi-definite on null(A): the gradient
    then comes from the least-squares adjoint, ``info.adjoint``); MAX_ITER (limit reached or
    line search stalled); SINGULAR (converged to a point where the Hessian is not positive
    semi-definite on null(A) — a saddle, not a minimum — or A is rank-deficient); UNBOUNDED
    (f < −1e30 or
    ‖x‖∞ > 1e30 in float64, 1e18 in float32); INFEASIBLE (A x = b has no solution); NONFINITE
    (NaN/Inf in the data or in f). Any status but CONVERGED makes the implicit gradient NaN.

    Example::

        f = lambda x, th: jnp.sum(jnp.logaddexp(0.0, x - th)) + 0.5 * x @ x
        x, info = newton(f, jnp.ones(3), jnp.ones((1, 3)), jnp.array([1.0]), jnp.zeros(3))
    """
    x0 = jnp.asarray(x0)
    n = x0.shape[0]
    if A is None:
        A, b = jnp.zeros((0, n), x0.dtype), jnp.zeros((0,), x0.dtype)
    A = jnp.asarray(A, x0.dtype).reshape(-1, n)
    b = jnp.asarray(b, x0.dtype).reshape(-1)
    out_dtype = x0.dtype
    if opts.dtype == "f64":
        theta, A, b, x0 = cast_inexact((theta, A, b, x0), jnp.float64)
    conv, consts = closure_convert(f, x0, theta)
    fc = lambda x, th: conv(x, th[0], th[1])  # noqa: E731 — th = (θ, hoisted constants)
    params = ((theta, consts), A, b)
    x, info = _run(fc, opts, x0, params)
    return x.astype(out_dtype), info


def _run(f, opts: SolveOptions, x0, params):
    if opts.backward == "implicit":
        p = params[1].shape[0]
        root = implicit_root(
            kkt_residual(f), lambda x0_, pr: _solve(f, opts, x0_, pr), opts, symmetric=(p == 0)
        )
        (x, _), info = root(x0, params)
        return x, info
    if opts.backward == "unroll":
        return _iterate(f, opts, x0, params, opts.steps)
    if opts.backward == "truncated":
        sg = lax.stop_gradient
        (x_star, _), info = _solve(f, opts, sg(x0), sg(params))
        x, _ = _iterate(f, opts, x_star, params, opts.steps)
        return poison_gradient(x, info.status == CONVERGED), with_adjoint(info, ADJ_TRUNCATED)
    raise ValueError(
        f"newton: unknown backward mode {opts.backward!r}; expected 'implicit', "
        "'unroll' or 'truncated'"
    )
