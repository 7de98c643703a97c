"""Class 4: minimise f(x, θ) + g(x; ω), f smooth, g given by its proximal operator.

A prox is a function ``prox(z, t, ω) = argmin_x ½‖x − z‖² + t·g(x; ω)`` (``z: [n]``, step
``t > 0``, ω a pytree of g's parameters — differentiable, e.g. a learnable L1 weight). This module
provides the ones the compiler recognises (L1, box, L1 + box, simplex, none); any function with
that signature works.

Forward (never differentiated in ``implicit`` mode): FISTA (accelerated proximal gradient)

    x⁺ = T_η(y) = prox(y − η∇f(y), η, ω)           η by backtracking on the smooth part:
                                                   f(x⁺) ≤ f(y) + ∇f(y)ᵀ(x⁺ − y) + ‖x⁺ − y‖²/2η
    y  ← x⁺ + ((t_k − 1)/t_{k+1})(x⁺ − x)          momentum, t_{k+1} = (1 + √(1 + 4t_k²))/2,
                                                   reset to y = x⁺, t = 1 when (y − x⁺)ᵀ(x⁺ − x) > 0
                                                   (O'Donoghue–Candès gradient restart)

until the fixed-point residual ‖y − T_η(y)‖∞ / (1 + ‖x⁺‖∞) ≤ tol or max_iter (default 1000).
η doubles for the next iteration when the curvature seen along the step is below a tenth of
1/η, so flat (e.g. linear) objectives are not crawled along and an unbounded one blows up fast.

That test reads the residual at the solver's own step η, and ‖x − T_η(x)‖ shrinks with η: when
backtracking has cut η far below 1/L (gradients evaluated with rounding noise make the
curvature seen along tiny steps look huge, and the step shrinks with it) the test passes
anywhere. ``converged`` therefore also needs the independent check: the residual at
η_c = max(η, 1/(1.05 λ̂)), λ̂ ≈ λmax(∇²f(x)) by power iteration — the step of f's own curvature,
which no backtracking history changes — within tol. Where it fails, the iterations go on with
the solver's test tightened by the ratio the check saw (at most as many again, + 10); a point
that still fails is ``inaccurate``.

Backward (``implicit``): the solution is a fixed point x = T_η(x) for every η > 0, so
F(x; θ, ω) = x − prox(x − η∇f(x, θ), η, ω) = 0 with η the final step size (held constant) is
differentiated by :func:`~ddm.library.solvers.implicit.implicit_root`. The prox's Jacobian comes
from JAX autodiff of the prox functions below (a 0/1 mask for L1 and box away from their kinks,
the projection onto the face's affine hull for the simplex). Where J = I − ∂T/∂x is singular —
a LASSO whose support holds two identical columns: a segment of solutions — the dense adjoint
falls back to least squares per instance (``Info.adjoint``): FISTA from 0 keeps the tied
weights equal, so the gradient in y (which moves the segment without breaking the tie) is the
derivative of the point returned, and the entries of the two tied columns, whose perturbation
breaks the tie, are NaN (:mod:`~ddm.library.solvers.implicit`).

Modes: ``unroll`` differentiates ``opts.steps`` plain proximal-gradient iterations from x₀ with a
fixed step η = 1/λ̂, λ̂ a power-iteration estimate of the largest eigenvalue of ∇²f(x₀) (the
forward value is that iterate); ``truncated`` solves without gradient, then differentiates
``opts.steps`` iterations with the solver's final η started at the solution.

Info.residual: ‖x − T_η(x)‖∞ / (1 + ‖x‖∞) at the returned x, with η = η_c (the check's).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from ddm.library.solvers.batching import batched_like
from ddm.library.solvers.implicit import (
    cast_inexact,
    closure_convert,
    implicit_root,
    poison_gradient,
)
from ddm.library.solvers.options import SolveOptions
from ddm.library.solvers.status import (
    ADJ_DENSE,
    ADJ_EXACT,
    ADJ_TRUNCATED,
    ADJ_UNROLL,
    CONVERGED,
    INACCURATE,
    INFEASIBLE,
    MAX_ITER,
    NONFINITE,
    SINGULAR,
    UNBOUNDED,
    make_info,
    with_adjoint,
)

__all__ = [
    "prox_grad",
    "exact_step",
    "empty_set",
    "prox_l1",
    "proj_box",
    "prox_l1_box",
    "proj_simplex",
    "prox_l1_simplex",
    "prox_none",
    "fixed_point_residual",
]

DEFAULT_MAX_ITER = 1000
_RUNNING = -1
_HALVINGS = 60  # backtracking limit on η per iteration
_GROW_BELOW = 0.1  # η doubles when (curvature along the step)·η ≤ this
_POWER_ITERS = 30  # for the unrolled modes' fixed step


def _big(dtype) -> float:
    return 1e30 if jnp.finfo(dtype).bits == 64 else 1e18


def _inf(v):
    return jnp.max(jnp.abs(v), initial=0.0)


# ---------------------------------------------------------------- proximal operators


def prox_none(z, t, omega):
    """g = 0: prox(z) = z."""
    return z


def prox_l1(z, t, omega):
    """g(x) = λ‖x − c‖₁, ω = {"lam": λ ≥ 0 (scalar or [n]), "center": c ([n] or 0, optional)}.

    prox(z) = c + sign(z − c)·max(|z − c| − tλ, 0)   (soft thresholding of z − c).
    """
    c = omega.get("center", 0.0)
    v = z - c
    return c + jnp.sign(v) * jnp.maximum(jnp.abs(v) - t * omega["lam"], 0.0)


def proj_box(z, t, omega):
    """g = indicator of {lo ≤ x ≤ hi}, ω = {"lo": [n], "hi": [n]} (±inf allowed).

    prox(z) = clip(z, lo, hi)."""
    return jnp.clip(z, omega.get("lo", -jnp.inf), omega.get("hi", jnp.inf))


def prox_l1_box(z, t, omega):
    """g = λ‖x − c‖₁ + indicator of the box, ω = {"lam", "center", "lo", "hi"}.

    Both terms are separable and each coordinate's problem is 1-D convex, whose minimiser over
    [lo, hi] is the clip of the unconstrained one: prox = clip(soft-threshold(z), lo, hi).
    """
    return proj_box(prox_l1(z, t, omega), t, omega)


def proj_simplex(z, t, omega):
    """g = indicator of {x ≥ 0, Σx = r}, ω = {"radius": r > 0}: Euclidean projection.

    x = max(z − τ, 0) with τ = (Σ_{i≤ρ} u_i − r)/ρ, u = z sorted decreasingly and ρ the largest
    index with u_ρ − (Σ_{i≤ρ} u_i − r)/ρ > 0 (Held–Wolfe–Crowder; Duchi et al. 2008).
    Autodiff through the sort and the gather of τ gives the projection's Jacobian.
    """
    r = omega["radius"]
    u = jnp.sort(z)[::-1]
    css = jnp.cumsum(u) - r
    idx = jnp.arange(1, z.shape[0] + 1, dtype=z.dtype)
    rho = jnp.sum(u - css / idx > 0)  # the condition holds for a prefix of indices
    rho = jnp.maximum(rho, 1)
    tau = css[rho - 1] / rho.astype(z.dtype)
    return jnp.maximum(z - tau, 0.0)


def prox_l1_simplex(z, t, omega):
    """g = λ‖x − c‖₁ + indicator of the simplex {x ≥ 0, Σx = r}, ω = {"lam", "radius",
    "center" (optional)} — e.g. a transaction cost on the change from holdings c.

    Without a centre, ‖x‖₁ = r is constant on the simplex and the prox is the projection. With
    one, a multiplier μ for Σx = r makes the problem separable: each coordinate minimises
    ½(x − z)² + tλ|x − c| + μx over x ≥ 0, a 1-D convex problem, so
    x(μ) = max(0, c + soft(z − μ − c, tλ)), non-increasing in μ. μ* with Σx(μ*) = r is found
    by bisection (no gradient), then corrected by one Newton step, μ = μ* + (Σx(μ*) − r)/|F|
    over the coordinates F where x moves with μ (dxᵢ/dμ = −1): the value is unchanged (to
    rounding) and its derivative is the implicit one, dμ = (Σ_F ∂xᵢ(μ*) − dr)/|F|, so autodiff
    of x(μ) gives the prox's Jacobian.
    """
    if "center" not in omega:
        return proj_simplex(z, t, omega)
    r = omega["radius"]
    c = jnp.broadcast_to(omega["center"], z.shape)
    k = t * omega["lam"]

    def x_of(mu, z, c, k):
        v = z - mu - c
        return jnp.maximum(0.0, c + jnp.sign(v) * jnp.maximum(jnp.abs(v) - k, 0.0))

    sg = lax.stop_gradient
    zs, cs, ks, rs = sg(z), sg(c), sg(k), sg(r)
    spread = jnp.max(jnp.abs(cs)) + ks
    lo = jnp.min(zs) - spread - jnp.abs(rs)  # Σx(lo) ≥ r
    hi = jnp.max(zs) + spread + 1.0  # Σx(hi) = 0

    def halve(_, b):
        mid = 0.5 * (b[0] + b[1])
        above = jnp.sum(x_of(mid, zs, cs, ks)) > rs
        return jnp.where(above, mid, b[0]), jnp.where(above, b[1], mid)

    steps = 110 if z.dtype == jnp.float64 else 60
    lo, hi = lax.fori_loop(0, steps, halve, (lo, hi))
    mu_star = 0.5 * (lo + hi)
    v = zs - mu_star - cs
    free = (jnp.abs(v) > ks) & (x_of(mu_star, zs, cs, ks) > 0)
    count = jnp.maximum(jnp.sum(free), 1).astype(z.dtype)
    mu = mu_star + (jnp.sum(x_of(mu_star, z, c, k)) - r) / count
    return x_of(mu, z, c, k)


def fixed_point_residual(f: Callable, prox: Callable, x, th, omega, eta):
    """x − T_η(x) with T_η(x) = prox(x − η∇f(x, θ), η, ω): zero exactly at a minimiser."""
    return x - prox(x - eta * jax.grad(f)(x, th), eta, omega)


# ---------------------------------------------------------------- FISTA


class _State(NamedTuple):
    x: jax.Array  # last prox point x⁺
    y: jax.Array  # extrapolated point
    t: jax.Array  # momentum parameter
    eta: jax.Array  # step to try next
    k: jax.Array
    status: jax.Array
    res: jax.Array
    target: jax.Array  # the stopping test's tolerance (tightened where the check failed)
    limit: jax.Array  # the iteration limit (lowered for the check's second round)


def _data_ok(x0, th, omega):
    """No NaN/Inf in x₀ and θ; no NaN in ω (infinite bounds are legitimate)."""
    oks = [jnp.all(jnp.isfinite(x0))]
    for a in jax.tree_util.tree_leaves(th):
        if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact):
            oks.append(jnp.all(jnp.isfinite(a)))
    for a in jax.tree_util.tree_leaves(omega):
        if jnp.issubdtype(jnp.asarray(a).dtype, jnp.inexact):
            oks.append(~jnp.any(jnp.isnan(a)))
    return jnp.all(jnp.stack(oks))


def _initial_step(grad, x0):
    """η₀ = 1/L̂, L̂ = ‖∇f(x₀ + h u) − ∇f(x₀)‖/h along u = −∇f(x₀)/‖∇f(x₀)‖ (1 if L̂ = 0).
    Only a starting guess: backtracking corrects it."""
    g0 = grad(x0)
    gn = jnp.linalg.norm(g0)
    u = jnp.where(gn > 0, -g0 / jnp.where(gn > 0, gn, 1.0), 1.0 / jnp.sqrt(x0.shape[0]))
    h = 1e-4 * (1.0 + _inf(x0))
    L = jnp.linalg.norm(grad(x0 + h * u) - g0) / h
    return jnp.where(jnp.isfinite(L) & (L > 0), 1.0 / jnp.where(L > 0, L, 1.0), 1.0)


def _local_lipschitz(fy, gy, fxp, gxp, d, dd):
    """L̂ = the curvature of f seen along the step d = x⁺ − y.

    From gradients, dᵀ(∇f(x⁺) − ∇f(y))/‖d‖², and from function values,
    2(f(x⁺) − f(y) − ∇f(y)ᵀd)/‖d‖², the larger of the two, the latter only while that
    difference stands well above f's rounding (the two agree on a quadratic). On badly scaled
    data (daily covariances: f ≈ 1e-5) the function-value test alone is decided by rounding: it
    accepts steps that are too long in float32 and rejects good ones near the solution in
    float64, and FISTA stalls either way. The gradient test has no such cancellation (TFOCS
    switches between the two the same way).
    """
    eps = jnp.finfo(d.dtype).eps
    safe = jnp.where(dd > 0, dd, 1.0)
    excess = fxp - fy - gy @ d
    reliable = jnp.abs(excess) >= 1e4 * eps * (jnp.abs(fxp) + jnp.abs(fy))
    by_gradients = d @ (gxp - gy) / safe
    by_values = jnp.where(reliable, 2.0 * excess / safe, -jnp.inf)
    return jnp.where(dd > 0, jnp.maximum(by_gradients, by_values), 0.0)


def _backtrack(value_and_grad, prox, omega, y, fy, gy, eta0):
    """Largest η = η₀·2⁻ʲ (j ≤ 60) whose prox step x⁺ = T_η(y) satisfies L̂·η ≤ 1, L̂ the
    local curvature along d = x⁺ − y (:func:`_local_lipschitz`) — the quadratic upper bound
    f(x⁺) ≤ f(y) + ∇f(y)ᵀd + ‖d‖²/2η that FISTA needs. Returns ``(η, x⁺, f(x⁺), L̂)``."""

    def trial(eta):
        xp = prox(y - eta * gy, eta, omega)
        d = xp - y
        fxp, gxp = value_and_grad(xp)
        L = _local_lipschitz(fy, gy, fxp, gxp, d, d @ d)
        ok = jnp.isfinite(fxp) & jnp.all(jnp.isfinite(gxp)) & (L * eta <= 1.0)
        return eta, xp, fxp, L, ok

    def body(s):
        return trial(0.5 * s[0]) + (s[5] + 1,)

    start = batched_like(trial(eta0) + (0,), y)  # the condition reads the per-instance ok
    out = lax.while_loop(lambda s: ~s[4] & (s[5] < _HALVINGS), body, start)
    return out[0], out[1], out[2], out[3]


def _solve(f, prox, opts: SolveOptions, x0, params):
    """FISTA with backtracking and restart on one instance: ``(x, Info, η)``."""
    th, omega = params
    dtype = x0.dtype
    tol = opts.tolerance(dtype)
    max_iter = opts.max_iter if opts.max_iter is not None else DEFAULT_MAX_ITER
    big = _big(dtype)
    fth = lambda x: f(x, th)  # noqa: E731
    value_and_grad = jax.value_and_grad(fth)

    ok = _data_ok(x0, th, omega)
    eta0 = _initial_step(jax.grad(fth), x0).astype(dtype)
    init = _State(
        x0,
        x0,
        jnp.ones((), dtype),
        eta0,
        jnp.array(0, jnp.int32),
        jnp.where(ok, _RUNNING, NONFINITE).astype(jnp.int32),
        jnp.array(jnp.inf, dtype),
        jnp.array(tol, dtype),
        jnp.array(max_iter, jnp.int32),
    )

    def body(s: _State) -> _State:
        fy, gy = value_and_grad(s.y)
        eta, xp, fxp, L = _backtrack(value_and_grad, prox, omega, s.y, fy, gy, s.eta)
        d = xp - s.y
        # Curvature seen along the step far below 1/η → the next trial step doubles.
        grow = (d @ d > 0) & (L * eta <= _GROW_BELOW)
        eta_next = jnp.where(grow, jnp.minimum(2.0 * eta, big), eta)
        res = _inf(d) / (1.0 + _inf(xp))
        restart = (s.y - xp) @ (xp - s.x) > 0.0
        t_next = jnp.where(restart, 1.0, 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * s.t**2)))
        y_next = jnp.where(restart, xp, xp + ((s.t - 1.0) / t_next) * (xp - s.x))
        finite = jnp.isfinite(fxp) & jnp.all(jnp.isfinite(xp)) & jnp.isfinite(fy)
        unbounded = (fxp < -big) | (_inf(xp) > big)
        st = jnp.where(
            ~finite,
            NONFINITE,
            jnp.where(unbounded, UNBOUNDED, jnp.where(res <= s.target, CONVERGED, _RUNNING)),
        )
        # Report the step that produced xp (the one the fixed point and its residual refer to).
        return _State(
            xp,
            y_next,
            t_next,
            jnp.where(st == CONVERGED, eta, eta_next),
            s.k + 1,
            st.astype(jnp.int32),
            res,
            s.target,
            s.limit,
        )

    def run(s):
        return lax.while_loop(
            lambda s: (s.status == _RUNNING) & (s.k < s.limit), body, batched_like(s, s.x)
        )

    def check(s, eta_c):
        eta = jnp.maximum(s.eta, eta_c)
        return _inf(fixed_point_residual(f, prox, s.x, th, omega, eta)) / (1.0 + _inf(s.x))

    s = run(init)
    # The independent check (module docstring): the fixed-point residual at the step of f's
    # own curvature. Where it fails the loop goes on, its test tightened by what the check
    # saw, for at most as many iterations again (+ 10); then the point is ``inaccurate``.
    eta_c = _curvature_step(f, lax.stop_gradient(s.x), th)
    res = check(s, eta_c)
    redo = (s.status == CONVERGED) & ~(res <= tol)
    tighter = 0.5 * jnp.minimum(s.target, s.res) * tol / jnp.where(redo, res, 1.0)
    s = s._replace(
        status=jnp.where(redo, _RUNNING, s.status).astype(jnp.int32),
        target=jnp.where(redo, tighter, s.target),
        limit=jnp.where(redo, jnp.minimum(max_iter, 2 * s.k + 10), s.limit),
    )
    s = run(s)
    res = check(s, eta_c)
    status = jnp.where(s.status == _RUNNING, jnp.where(redo, INACCURATE, MAX_ITER), s.status)
    status = jnp.where((status == CONVERGED) & ~(res <= tol), INACCURATE, status)
    return s.x, make_info(status, s.k, res, ADJ_DENSE), s.eta


# ---------------------------------------------------------------- unrolled iterations


def _power_step(f, x0, th):
    """η = 1/(1.05 λ̂), λ̂ ≈ λmax(∇²f(x₀)) by power iteration on Hessian-vector products
    (1 when λ̂ ≤ 0). Plain proximal gradient converges for η < 2/L, which this keeps."""
    step = _curvature_step(f, x0, th)
    return jnp.where(step > 0, step, 1.0)


def _curvature_step(f, x0, th):
    """1/(1.05 λ̂), λ̂ ≈ λmax(∇²f(x₀)) by :data:`_POWER_ITERS` power iterations on
    Hessian-vector products; 0 when λ̂ ≤ 0 or is not finite."""
    n = x0.shape[0]
    _, hvp = jax.linearize(jax.grad(lambda x: f(x, th)), x0)
    v0 = jnp.cos(1.3 * jnp.arange(n, dtype=x0.dtype) + 0.7)  # deterministic, generic start

    def it(_, v):
        w = hvp(v)
        return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(x0.dtype).tiny)

    v = lax.fori_loop(0, _POWER_ITERS, it, v0 / jnp.linalg.norm(v0))
    lam = v @ hvp(v)
    return jnp.where(
        jnp.isfinite(lam) & (lam > 0), 1.0 / (1.05 * jnp.where(lam > 0, lam, 1.0)), 0.0
    )


def _iterate(f, prox, opts: SolveOptions, x_start, params, eta, steps: int):
    """``steps`` differentiable iterations x ← prox(x − η∇f(x, θ), η, ω) with fixed η."""
    th, omega = params
    grad = jax.grad(f)

    def one(x, _):
        return prox(x - eta * grad(x, th), eta, omega), None

    x, _ = lax.scan(one, x_start, None, length=steps)
    sg = lax.stop_gradient
    res = _inf(fixed_point_residual(f, prox, sg(x), sg(th), sg(omega), eta)) / (1.0 + _inf(sg(x)))
    fx = f(sg(x), sg(th))
    big = _big(x.dtype)
    status = jnp.where(
        ~(jnp.isfinite(fx) & jnp.all(jnp.isfinite(x))),
        NONFINITE,
        jnp.where(
            (fx < -big) | (_inf(x) > big),
            UNBOUNDED,
            jnp.where(res <= opts.tolerance(x.dtype), CONVERGED, MAX_ITER),
        ),
    )
    status = jnp.where(_data_ok(x_start, th, omega), status, NONFINITE)
    return x, make_info(sg(status), steps, res, ADJ_UNROLL)


# ---------------------------------------------------------------- entry point


def prox_grad(f: Callable, theta, prox: Callable, omega, x0, opts: SolveOptions = SolveOptions()):
    """argmin_x f(x, θ) + g(x; ω) for one instance, g given by ``prox``; returns ``(x, Info)``.

    - ``f(x, θ) -> scalar``: smooth in ``x: [n]``; θ any pytree (closed-over arrays are hoisted
      into θ and differentiated too).
    - ``prox(z, t, ω) -> [n]``: e.g. :func:`prox_l1`, :func:`proj_box`, :func:`prox_l1_box`,
      :func:`proj_simplex`, :func:`prox_l1_simplex`, :func:`prox_none`.
    - ``omega``: pytree of the nonsmooth term's parameters (dict), differentiable.
    - ``x0: [n]``: starting point (no gradient in ``implicit`` mode).

    Status: CONVERGED (the check at f's curvature step passes, module docstring); INACCURATE
    (the solver's test passed, the check did not); MAX_ITER; UNBOUNDED (‖x‖∞ or −f beyond 1e30
    in float64, 1e18 in float32); NONFINITE (NaN/Inf in x₀, θ or f; NaN in ω). Any status
    but CONVERGED makes the implicit gradient NaN. The solution must be a point where the prox
    is differentiable (not exactly at a kink: a coordinate exactly at its threshold) for the
    gradient to be the derivative.

    Example (LASSO with a learnable weight)::

        f = lambda x, th: 0.5 * jnp.sum((M @ x - th) ** 2)
        x, info = prox_grad(f, y, prox_l1, {"lam": 0.1}, jnp.zeros(n))
    """
    x0 = jnp.asarray(x0)
    out_dtype = x0.dtype
    if opts.dtype == "f64":
        theta, omega, x0 = cast_inexact((theta, omega, x0), jnp.float64)
    else:
        omega = cast_inexact(omega, x0.dtype)
    conv, consts = closure_convert(f, x0, theta)
    fc = lambda x, th: conv(x, th[0], th[1])  # noqa: E731 — th = (θ, hoisted constants)
    params = ((theta, consts), omega)
    x, info = _run(fc, prox, opts, x0, params)
    return x.astype(out_dtype), info


def _run(f, prox, opts: SolveOptions, x0, params):
    sg = lax.stop_gradient
    if opts.backward == "implicit":

        def F(x, prm, eta):
            th, omega = prm
            return fixed_point_residual(f, prox, x, th, omega, eta)

        root = implicit_root(
            F, lambda x0_, prm: _solve(f, prox, opts, x0_, prm), opts, has_aux=True
        )
        x, info, _ = root(x0, params)
        return x, info
    if opts.backward == "unroll":
        eta = sg(_power_step(f, sg(x0), sg(params[0])))
        return _iterate(f, prox, opts, x0, params, eta, opts.steps)
    if opts.backward == "truncated":
        x_star, info, eta = _solve(f, prox, opts, sg(x0), sg(params))
        x, _ = _iterate(f, prox, opts, x_star, params, sg(eta), opts.steps)
        return poison_gradient(x, info.status == CONVERGED), with_adjoint(info, ADJ_TRUNCATED)
    raise ValueError(
        f"prox_grad: unknown backward mode {opts.backward!r}; expected "
        "'implicit', 'unroll' or 'truncated'"
    )


# ---------------------------------------------------------------- one exact step


def exact_step(curvature, q, prox: Callable, omega):
    """argmin_x ½L‖x‖² + qᵀx + g(x; ω) for one instance (``curvature`` = L > 0, ``q: [n]``):
    x* = prox(−q/L, 1/L, ω); returns ``(x, Info)``.

    The objective is (L/2)‖x + q/L‖² + g(x) up to a constant, so its minimiser is the prox of
    g/L at −q/L — equally, one proximal-gradient step of length 1/L from any point (the
    gradient step lands on −q/L). No iterations, no stopping test: the value is exact to
    rounding, ``Info.residual`` is 0 and ``Info.iterations`` 1. The gradient is autodiff of
    the step — of the prox map at −q/L and of L itself — which is the implicit derivative of
    (5.2) with η = 1/L (``Info.adjoint`` ``exact``).

    Status: NONFINITE (NaN/Inf in L or q, NaN in ω); SINGULAR (L not positive: a coefficient
    the program states positive underflowed); INFEASIBLE (an empty box or a negative simplex
    radius, :func:`empty_set`); else CONVERGED. The gradient is NaN unless CONVERGED.

    Example (a no-transaction band: the previous hedge clipped to [δ − w₀, δ + w₁])::

        x, info = exact_step(2.0, -2.0 * prev, proj_box, {"lo": lo, "hi": hi})
    """
    L = jnp.asarray(curvature, q.dtype)
    omega = cast_inexact(omega, q.dtype)
    positive = L > 0
    safe = jnp.where(positive, L, 1.0)
    x = prox(-q / safe, 1.0 / safe, omega)
    status = jnp.where(
        ~_data_ok(q, (L,), omega),
        NONFINITE,
        jnp.where(
            ~positive,
            SINGULAR,
            jnp.where(
                empty_set(omega),
                INFEASIBLE,
                jnp.where(jnp.all(jnp.isfinite(x)), CONVERGED, NONFINITE),
            ),
        ),
    )
    status = lax.stop_gradient(status)
    x = poison_gradient(x, status == CONVERGED)
    return x, make_info(status, 1, jnp.zeros((), q.dtype), ADJ_EXACT)


def empty_set(omega) -> jax.Array:
    """Whether g's set admits no point: a lower bound above its upper bound, or a simplex of
    negative radius (a bool scalar). Clipping would otherwise return the upper bound as if it
    were a solution."""
    empty = jnp.array(False)
    if "lo" in omega and "hi" in omega:
        empty = empty | jnp.any(omega["lo"] > omega["hi"])
    if "radius" in omega:
        empty = empty | (omega["radius"] < 0)
    return empty
