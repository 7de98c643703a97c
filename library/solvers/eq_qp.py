"""Class 1: a quadratic objective under linear equalities, solved by one KKT factorisation.

Problem (one instance; callers ``jax.vmap``)::

    x*(θ) = argmin_x ½ xᵀP x + cᵀx   subject to   A x = b
    P: [n, n] (symmetric part read), c: [n], A: [p, n] (p may be 0), b: [p]

Its KKT conditions are the linear system (ν: the multipliers of A x = b)::

    K [x; ν] = [−c; b],      K = [P  Aᵀ]
                                 [A  0 ]                                              (1)

Forward. ``P`` is replaced by P̃ = P + ρAᵀA (ρ > 0, a scale, no gradient): on {Ax = b} the
objectives differ by a constant, so x* is unchanged, and P̃ is positive definite exactly when the
problem is strictly convex on the feasible set — also when P itself is only semi-definite (a
variable the objective ignores but a constraint pins). Then with P̃ = L Lᵀ (Cholesky) and
W = L⁻¹Aᵀ, the Schur complement S = A P̃⁻¹ Aᵀ = WᵀW = M Mᵀ (Cholesky, p × p) solves (1) by two
triangular solves with L (:func:`kkt_solve`). Against an LU of the (n+p)² KKT matrix this is about
half the work, and a failed Cholesky *certifies* what LU cannot: a saddle point (P indefinite on
the feasible set) is reported, not returned as a minimum.

Backward (``implicit``, the seed's formula in KKT form). Differentiating (1)::

    K [dx; dν] = [−dP x − dc − dAᵀν;  db − dA x]                                       (2)

so for output cotangents (x̄, ν̄), with the adjoint solve K [u; w] = [x̄; ν̄] (K is symmetric: the
*same* factorisation as the forward solve)::

    c̄ = −u,   b̄ = w,   P̄ = −½(u xᵀ + x uᵀ),   Ā = −(w xᵀ + ν uᵀ)                       (3)

Eliminating the multiplier block of (2) gives the seed article's closed form
x_θ = P⁻¹(Aᵀ(A P⁻¹Aᵀ)⁻¹(A P⁻¹ f_xθ − g_θ) − f_xθ) for constraints A x + g(θ) = 0 (here g = −b);
tests/test_solvers_qp.py checks (3) against it. ``unroll`` instead lets JAX differentiate the
factorisation itself (same forward value); ``truncated`` has no meaning for a direct solve.

Status and residual. ``NONFINITE`` when the data hold NaN/Inf; ``INFEASIBLE`` when A is
rank-deficient and its rows contradict each other; ``SINGULAR`` when a Cholesky factor is not
finite or has a negligible pivot (below ε^(2/3) of the largest) — P̃ not positive definite: the
quadratic is not strictly convex on the feasible set, unbounded below or with many minimisers (a
direct solve cannot tell which); or A rank-deficient, S singular; ``INACCURATE`` when the factors
are sound but the point fails the independent check; else ``CONVERGED`` (:func:`classify`). The
point is refined once with the same factors first (:func:`_solve`). The
check (:mod:`~ddm.library.solvers.certify`, :func:`check`) reads only the data and (x, ν): its
backward error — x is the exact solution of the problem with c and b moved by the residuals —
and duality gap, relative to the magnitudes of the terms they sum, must be within
τ = max(tol, 10√(n+p) ε). ``Info.residual`` is that number. A gradient is NaN unless the status
is ``CONVERGED``. ``Info.adjoint`` is ``kkt`` (``unroll`` in that mode) and
``Info.conditioning`` the smaller pivot ratio min Lᵢᵢ² / max Lᵢᵢ² of the two Cholesky factors —
the number the ε^(2/3) test reads.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ddm.library.lapack import cholesky, solve_triangular
from ddm.library.solvers.certify import EqualityCheck, equality_check, tolerance
from ddm.library.solvers.implicit import nan_unless, poison_gradient
from ddm.library.solvers.options import SolveOptions
from ddm.library.solvers.status import (
    ADJ_KKT,
    ADJ_UNROLL,
    CONVERGED,
    INACCURATE,
    INFEASIBLE,
    NONFINITE,
    SINGULAR,
    make_info,
)

__all__ = [
    "eq_qp",
    "eq_qp_with_duals",
    "diagonal",
    "pivot_ratio",
    "KKTFactor",
    "kkt_factor",
    "kkt_factor_solve",
    "kkt_solve",
    "check",
    "rows_consistent",
    "classify",
    "symmetrize",
    "work_dtype",
    "all_finite",
]


# ------------------------------------------------------------------ the structured KKT solve


class KKTFactor(NamedTuple):
    """Factorisation of K̃ = [[H + ρAᵀA, Aᵀ], [A, 0]] (see the module docstring).

    ``L``: [n, n] lower Cholesky factor of H + ρAᵀA; ``W = L⁻¹Aᵀ``: [n, p]; ``M``: [p, p] lower
    Cholesky factor of S = WᵀW; ``rho``: the shift ρ; ``ok_h`` / ``ok_s``: the factor L / M is
    finite with no negligible pivot (bool scalars; ``ok_s`` False means A is rank-deficient).
    """

    L: jax.Array
    W: jax.Array
    M: jax.Array
    rho: jax.Array
    ok_h: jax.Array
    ok_s: jax.Array

    @property
    def ok(self) -> jax.Array:
        return self.ok_h & self.ok_s


def diagonal(M):
    """The diagonal of a square ``M`` as a strided slice of its flattening. ``jnp.diagonal``
    lowers to a gather that XLA's CPU backend, under ``vmap``, turned into a masked pass over
    the whole batch of matrices plus a materialised zero batch (8 ms of a 33 ms batched solve
    at n = 50, batch 1024)."""
    n = M.shape[0]
    return jnp.reshape(M, (n * n,))[:: n + 1] if n else jnp.zeros((0,), M.dtype)


def _pivot_rtol(dtype) -> float:
    """Smallest admissible ratio of Cholesky pivots, min Lᵢᵢ² / max Lᵢᵢ²: ε^(2/3) (4e-11 in
    float64, 2e-5 in float32).

    A singular semi-definite matrix leaves a pivot at rounding level — a modest multiple of ε
    times the largest, the multiple growing with how the dependent rows combine; a nonsingular
    one has min/max pivot ≥ 1/cond. So the test rejects exactly singular matrices with a wide
    margin, and otherwise only matrices conditioned beyond ε^(−2/3), whose solutions the dtype
    no longer resolves.
    """
    return float(jnp.finfo(dtype).eps) ** (2.0 / 3.0)


def pivot_ratio(L) -> jax.Array:
    """min Lᵢᵢ² / max Lᵢᵢ² of a lower Cholesky factor (1 when empty, NaN when not finite): the
    conditioning measure :func:`_chol_ok` tests and ``Info.conditioning`` reports."""
    if L.shape[0] == 0:
        return jnp.ones((), L.dtype)
    d = diagonal(L) ** 2
    return jnp.min(d) / jnp.max(d)


def _chol_ok(L) -> jax.Array:
    """Whether the lower Cholesky factor ``L`` is finite with no negligible pivot."""
    if L.shape[0] == 0:
        return jnp.array(True)
    # A failed factorisation is NaN throughout and NaN in the data reaches every later pivot,
    # so the diagonal tells: no pass over the whole factor.
    d = diagonal(L) ** 2
    finite = jnp.all(jnp.isfinite(d))
    return finite & (jnp.min(d) > _pivot_rtol(L.dtype) * jnp.max(d))


def _shift(H, A) -> jax.Array:
    """ρ = max|diag H| / max|diag AᵀA| (1 where a scale is 0): large enough to make H + ρAᵀA
    definite when H is definite on null(A), small enough not to swamp H. No gradient: x* does
    not depend on ρ."""
    if A.shape[0] == 0:
        return jnp.zeros((), H.dtype)
    sh = jnp.max(jnp.abs(diagonal(H)))
    sa = jnp.max(jnp.sum(A * A, axis=0))
    rho = jnp.where(sh > 0, sh, 1.0) / jnp.where(sa > 0, sa, 1.0)
    return jax.lax.stop_gradient(rho)


# A Schur complement this small (p ≤ _SMALL, e.g. a budget row) is factored and solved with
# unrolled scalar arithmetic: batched LAPACK calls on 1×1 or 2×2 matrices cost far more in
# per-call overhead than the arithmetic itself.
_SMALL = 4


def _cholesky(S):
    """Lower Cholesky factor; NaN where S is not positive definite (as LAPACK's, in JAX)."""
    p = S.shape[0]
    if p > _SMALL:
        return cholesky(S)
    L = [[jnp.zeros((), S.dtype)] * p for _ in range(p)]
    for j in range(p):
        ljj = jnp.sqrt(S[j, j] - sum((L[j][k] ** 2 for k in range(j)), jnp.zeros((), S.dtype)))
        L[j][j] = ljj
        for i in range(j + 1, p):
            L[i][j] = (
                S[i, j] - sum((L[i][k] * L[j][k] for k in range(j)), jnp.zeros((), S.dtype))
            ) / ljj
    return jnp.stack([jnp.stack(row) for row in L]) if p else jnp.zeros((0, 0), S.dtype)


def _cho_solve_small(M, q):
    """(M Mᵀ)⁻¹ q for a lower triangular ``M: [p, p]``, ``q: [p]``."""
    p = M.shape[0]
    if p > _SMALL:
        return solve_triangular(M, solve_triangular(M, q, lower=True), lower=True, trans=1)
    y = []
    for i in range(p):  # M y = q
        y.append((q[i] - sum((M[i, k] * y[k] for k in range(i)), 0.0)) / M[i, i])
    x = [None] * p
    for i in reversed(range(p)):  # Mᵀ x = y
        x[i] = (y[i] - sum((M[k, i] * x[k] for k in range(i + 1, p)), 0.0)) / M[i, i]
    return jnp.stack(x)


def _gram_small(W):
    """WᵀW for ``W: [n, p]``. With few columns, as a product-and-sum: XLA lowers a batched
    p×p dot differently for different batch sizes, and one instance's result must not depend
    on what else is in its batch."""
    if W.shape[1] > _SMALL:
        return W.T @ W
    return jnp.sum(W[:, :, None] * W[:, None, :], axis=0)


def _schur_factor(W):
    """Cholesky factor of S = WᵀW + ε max(diag S) I. S is semi-definite by construction but
    rounding can make a singular one (redundant rows of A) slightly indefinite; the shift, at
    rounding level, keeps the factor finite so that the solve still tells consistent from
    contradictory rows, and leaves the pivot test to flag the singularity."""
    S = _gram_small(W)
    if S.shape[0] == 0:
        return S
    eps = float(jnp.finfo(S.dtype).eps)
    return _cholesky(S + eps * jnp.max(diagonal(S)) * jnp.eye(S.shape[0], dtype=S.dtype))


def _shifted(H, A, rho, reg):
    Ht = H + rho * (A.T @ A) if A.shape[0] else H
    if reg is not None:
        Ht = Ht + reg * jnp.eye(H.shape[0], dtype=H.dtype)
    return Ht


def _factor(Ht):
    """Lower Cholesky factor of the symmetric ``Ht``, factored as ``Htᵀ`` (the same matrix, up
    to the rounding of its two triangles): LAPACK reads column-major, and the transpose of a
    row-major batch *is* its column-major layout — XLA passes the buffer as it is instead of
    copying every matrix into the other layout (n = 50, batch 1024, forward+backward: 64 ms
    against 75, in one process, bench/README.md)."""
    return cholesky(Ht.T)


def kkt_factor_solve(H, A, r1, r2, rho=None, reg=None):
    """Factor K̃ = [[H + ρAᵀA (+ reg·I), Aᵀ], [A, 0]] and solve K [u; w] = [r1; r2] at once.

    ``H``: [n, n] symmetric; ``A``: [p, n]; ``rho``: the shift (default :func:`_shift`);
    ``reg``: an optional diagonal regularisation (the interior-point method's safeguard).
    W = L⁻¹Aᵀ and L⁻¹r1 share one triangular solve. Returns ``(factor, u, w)``; reuse the
    factor with :func:`kkt_solve`.
    """
    rho = _shift(H, A) if rho is None else rho
    L = _factor(_shifted(H, A, rho, reg))
    p = A.shape[0]
    WT = solve_triangular(L, jnp.concatenate([A.T, r1[:, None]], axis=1), lower=True)
    W, t = WT[:, :p], WT[:, p]
    M = _schur_factor(W)
    f = KKTFactor(L, W, M, rho, _chol_ok(L), _chol_ok(M))
    return (f, *_finish(f, t, r2))


def kkt_factor(H, A, rho=None, reg=None) -> KKTFactor:
    """Factor K̃ (see :func:`kkt_factor_solve`) without solving."""
    rho = _shift(H, A) if rho is None else rho
    L = _factor(_shifted(H, A, rho, reg))
    W = solve_triangular(L, A.T, lower=True) if A.shape[0] else jnp.zeros((H.shape[0], 0), H.dtype)
    M = _schur_factor(W)
    return KKTFactor(L, W, M, rho, _chol_ok(L), _chol_ok(M))


def kkt_solve(f: KKTFactor, r1, r2):
    """Solve K [u; w] = [r1; r2] with K = [[H, Aᵀ], [A, 0]] using the factorisation of K̃.

    With t = L⁻¹r1:  w̃ = S⁻¹(Wᵀt − r2),  u = L⁻ᵀ(t − W w̃)  solve K̃ [u; w̃] = [r1; r2]
    (block elimination: A u = r2 and (H + ρAᵀA) u + Aᵀw̃ = r1). Since A u = r2, the same u
    satisfies H u + Aᵀ(w̃ + ρ r2) = r1, so w = w̃ + ρ r2 solves the unshifted system.
    ``r1``: [n]; ``r2``: [p]. Returns ``(u, w)``.
    """
    return _finish(f, solve_triangular(f.L, r1, lower=True), r2)


def _back(L, t):
    """L⁻ᵀt. As a transposed solve with L itself: passing ``L.T`` instead makes XLA copy the
    transpose of every factor (measured: a third of the batched forward+backward time)."""
    return solve_triangular(L, t, lower=True, trans=1)


def _finish(f: KKTFactor, t, r2):
    """The rest of :func:`kkt_solve` once t = L⁻¹r1 is known."""
    if f.W.shape[1] == 0:
        return _back(f.L, t), r2
    wt = _cho_solve_small(f.M, f.W.T @ t - r2)
    u = _back(f.L, t - f.W @ wt)
    return u, wt + f.rho * r2


# ------------------------------------------------------------------ small shared helpers


def symmetrize(P):
    """½(P + Pᵀ): the solvers read P only through its symmetric part, so gradients in P are
    symmetric and agree between modes."""
    return 0.5 * (P + P.T)


def work_dtype(opts: SolveOptions, *arrays):
    """(dtype of the result, dtype the solve runs in): float64 under ``dtype="f64"``."""
    out = jnp.result_type(*arrays)
    if not jnp.issubdtype(out, jnp.floating):
        out = jnp.result_type(float)
    return out, jnp.dtype(jnp.float64 if opts.dtype == "f64" else out)


def all_finite(*arrays) -> jax.Array:
    """Whether every entry of every array is finite (a bool scalar)."""
    # max|a| is NaN or ∞ exactly when an entry is: one reduction per array, with no boolean
    # (or, for a·0, zero) temporary of the array's size
    return jnp.all(jnp.array([jnp.isfinite(jnp.max(jnp.abs(a), initial=0.0)) for a in arrays]))


def _check_shapes(P, c, A, b):
    n = c.shape[0] if c.ndim == 1 else -1
    if P.shape != (n, n) or A.ndim != 2 or A.shape[1] != n or b.shape != (A.shape[0],):
        raise ValueError(
            "eq_qp expects one instance: P [n, n], c [n], A [p, n], b [p]; got "
            f"P {P.shape}, c {c.shape}, A {A.shape}, b {b.shape} (vmap over a batch)"
        )


# ------------------------------------------------------------------ forward


def rows_consistent(A, b) -> jax.Array:
    """Whether A x = b has a solution, robustly also when A is rank-deficient (a bool scalar).

    Tikhonov least squares: y = (AAᵀ + δI)⁻¹ b with δ = √ε max(diag AAᵀ), and r = b − AAᵀy = δy.
    The part of b outside range(A) passes into r whole; the part inside is damped by
    δ / (λ + δ) for each eigenvalue λ of AAᵀ. Consistent when ‖r‖∞ ≤ ε^(1/4) (1 + ‖b‖∞).
    """
    if A.shape[0] == 0:
        return jnp.array(True)
    eps = float(jnp.finfo(A.dtype).eps)
    AAT = _gram_small(A.T)
    delta = eps**0.5 * jnp.max(diagonal(AAT)) + jnp.finfo(A.dtype).tiny
    M = _cholesky(AAT + delta * jnp.eye(A.shape[0], dtype=A.dtype))
    r = delta * _cho_solve_small(M, b)
    return jnp.max(jnp.abs(r)) <= eps**0.25 * (1.0 + jnp.max(jnp.abs(b)))


def classify(f: KKTFactor, A, b, res, tol, x_finite, data_finite) -> jax.Array:
    """Status of a direct KKT solve (int32).

    NONFINITE: the data hold NaN/Inf. INFEASIBLE: H + ρAᵀA is definite but A is rank-deficient
    and A x = b has no solution (:func:`rows_consistent`) — the equalities contradict each
    other. SINGULAR: a factor not sound, or x not finite (not definite on the feasible set;
    redundant but consistent equalities — x* may exist but its derivative in b does not).
    INACCURATE: sound factors, but the point fails the independent check (``res``, its
    backward error, above ``tol``). CONVERGED: sound factors, x finite, ``res`` ≤ ``tol``.
    """
    sound = f.ok & x_finite
    inconsistent = f.ok_h & ~f.ok_s & ~rows_consistent(A, b)
    status = jnp.where(
        sound,
        jnp.where(res <= tol, CONVERGED, INACCURATE),
        jnp.where(inconsistent, INFEASIBLE, SINGULAR),
    )
    return jnp.where(data_finite, status, NONFINITE).astype(jnp.int32)


def check(P, c, A, b, x, nu) -> EqualityCheck:
    """The independent check of :mod:`~ddm.library.solvers.certify` with no inequalities: the
    point's backward error and relative duality gap (``Info.residual`` is the larger), and
    whether the point and the data are finite."""
    return equality_check(P, c, A, b, x, nu)


def _solve(P, c, A, b, tol: float):
    """Forward solve of (1) and one step of iterative refinement with the same factors:
    ``(x, ν, status, residual, factor)``.

    The Schur-complement solve is not backward stable for (1) itself when P̃ is ill-conditioned
    (its residual grows with cond(P̃) ε; float32 daily-return covariances left backward errors
    of 1e-5 to 4e-5, above the check's tolerance); one refinement step with the residual of
    (1) brings it to rounding level (Higham, Accuracy and Stability, §12.2), for one more pair
    of triangular solves. (Refining only the points that fail the check was tried: it saved
    nothing measurable — the step is two triangular solves against a check that reads P — and
    cost 20 % more compile time, for the branch.)
    """
    f, x, nu = kkt_factor_solve(P, A, -c, b)
    dx, dnu = kkt_solve(f, -(P @ x + c + A.T @ nu), b - A @ x)
    x, nu = x + dx, nu + dnu
    ck = check(P, c, A, b, x, nu)
    res = jnp.maximum(ck.beta, ck.gap)
    status = classify(f, A, b, res, tol, ck.x_finite, ck.data_finite)
    return x, nu, status, res, f


def _accept_tol(opts: SolveOptions, dtype, terms: int) -> float:
    """The check's tolerance: the node's, floored at rounding level
    (:func:`~ddm.library.solvers.certify.tolerance`)."""
    return tolerance(opts.tolerance(dtype), dtype, terms)


# ------------------------------------------------------------------ implicit backward


def _conditioning(f: KKTFactor) -> jax.Array:
    """The smaller pivot ratio of the two Cholesky factors (no gradient)."""
    return jax.lax.stop_gradient(jnp.minimum(pivot_ratio(f.L), pivot_ratio(f.M)))


@partial(jax.custom_vjp, nondiff_argnums=(4,))
def _implicit(P, c, A, b, tol):
    x, nu, status, res, f = _solve(P, c, A, b, tol)
    return x, nu, status, res, _conditioning(f)


def _implicit_fwd(P, c, A, b, tol):
    x, nu, status, res, f = _solve(P, c, A, b, tol)
    return (x, nu, status, res, _conditioning(f)), (f, x, nu, status)


def _implicit_bwd(tol, saved, cts):
    """Equation (3): one solve with the forward factorisation; NaN unless converged."""
    f, x, nu, status = saved
    xbar, nubar = cts[0], cts[1]
    u, w = kkt_solve(f, xbar, nubar)
    Pbar = -0.5 * (jnp.outer(u, x) + jnp.outer(x, u))
    Abar = -(jnp.outer(w, x) + jnp.outer(nu, u))
    grads = nan_unless(status == CONVERGED, (Pbar, -u, Abar, w))
    return grads


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


# ------------------------------------------------------------------ entry points


def eq_qp_with_duals(P, c, A, b, opts: SolveOptions = SolveOptions(), *, symmetric: bool = False):
    """Like :func:`eq_qp`, also returning the multipliers: ``(x, ν, info)``.

    ``ν: [p]`` satisfies Px + c + Aᵀν = 0; it is differentiable too (its cotangent enters the
    adjoint solve as the second block). ``symmetric``: the caller built P exactly symmetric, so
    its symmetric part is P itself (no pass over P to form it; the gradient in P is symmetric
    either way).
    """
    P, c, A, b = (jnp.asarray(a) for a in (P, c, A, b))
    _check_shapes(P, c, A, b)
    if opts.backward not in ("implicit", "unroll"):
        raise ValueError(
            f"eq_qp: backward mode {opts.backward!r} is not meaningful for a direct (one-"
            "factorisation) solve; use 'implicit' or 'unroll'"
        )
    out, work = work_dtype(opts, P, c, A, b)
    P, c, A, b = (a.astype(work) for a in (P, c, A, b))
    P = P if symmetric else symmetrize(P)
    tol = _accept_tol(opts, work, sum(A.shape))
    if opts.backward == "implicit":
        # jax.custom_vjp's unannotated __new__ leaves the result type unsolved under partial
        x, nu, status, res, cond = _implicit(P, c, A, b, tol)  # pyright: ignore[reportGeneralTypeIssues]
        mode = ADJ_KKT
    else:
        x, nu, status, res, f = _solve(P, c, A, b, tol)
        ok = status == CONVERGED
        x, nu = poison_gradient(x, ok), poison_gradient(nu, ok)
        cond, mode = _conditioning(f), ADJ_UNROLL
    info = make_info(status, 1, jax.lax.stop_gradient(res), mode, cond)
    return x.astype(out), nu.astype(out), info


def eq_qp(P, c, A, b, opts: SolveOptions = SolveOptions(), *, symmetric: bool = False):
    """Solve min_x ½xᵀPx + cᵀx s.t. A x = b for one instance; returns ``(x, info)``.

    ``P: [n, n]`` symmetric (only its symmetric part is read), ``c: [n]``, ``A: [p, n]``
    (``p`` may be 0), ``b: [p]``. Reverse-mode gradients reach all four (module docstring,
    equation (3)); they are NaN for an instance whose status is not ``CONVERGED``.
    ``symmetric=True`` promises P exactly symmetric (see :func:`eq_qp_with_duals`).

    Example — min ‖x‖² s.t. x₁ + x₂ = 1::

        x, info = eq_qp(2 * jnp.eye(2), jnp.zeros(2), jnp.ones((1, 2)), jnp.ones(1))
        # x == [0.5, 0.5], info.status == CONVERGED
    """
    x, _, info = eq_qp_with_duals(P, c, A, b, opts, symmetric=symmetric)
    return x, info
