"""Implicit differentiation of a root z*(θ) of F(z, θ) = 0, written once for every solver.

If F(z*(θ), θ) = 0 and J = ∂F/∂z is nonsingular at the root, the implicit function theorem gives
``dz*/dθ = −J⁻¹ ∂F/∂θ``. Reverse mode therefore needs, for an output cotangent z̄,

    1. the adjoint solve    Jᵀ u = z̄                      (one linear system, no matter how many
                                                           iterations the forward solver took)
    2. the pull-back        θ̄ = −(∂F/∂θ)ᵀ u               (one VJP of F in θ at the root).

The forward solver is never differentiated, so memory does not grow with its iterations. Each
problem class states only its optimality function F (for a smooth minimum: the KKT conditions;
for a prox-gradient fixed point: x − T(x)) and calls :func:`implicit_root`.

**Dense** (``n ≤ opts.dense_max`` unknowns and ``opts.matrix_free`` not ``True``). The
custom-VJP forward rule — it runs only when the node is differentiated — forms J by forward mode
(n JVPs), LU-factors it once and decides per instance (:func:`dense_adjoint`):

- ``lu``: the LU pivot ratio min|Uᵢᵢ| / max|Uᵢᵢ| is at least ε^(2/3) (as class 1's Cholesky
  test, :func:`ddm.library.solvers.eq_qp._pivot_rtol`): the backward solves Jᵀu = z̄ with the
  factors. The solution's relative error is then at most about ε^(1/3).
- ``lstsq``: J singular or ill-conditioned. The backward takes the minimum-norm least-squares
  adjoint u = (J Jᵀ + λI)⁻¹ J z̄ (Tikhonov on the normal equations: the forward rule keeps the
  Cholesky factor, the backward gets J z̄ by one JVP; λ = 10 n ε max‖Jᵢ‖² —
  rounding level of J Jᵀ, so its Cholesky factor is finite; singular values of J far above √λ
  pass nearly unchanged, those far below are cut). In the forward picture this is
  dz = −J⁺ ∂F/∂θ dθ: the derivative of the solution branch that does not move along null(J),
  exact wherever the solution is differentiable and does not move along null(J). That covers
  a flat direction of the objective the data do not touch (a Hessian diag(2, 0) at a minimum
  of (v₀ − a)² + v₁⁴) and a solver that returns the minimum-norm point of a solution set (Newton
  from 0 on a valley). The part of z̄ along null(J) — directions the solution does not move in
  — is dropped, which is the point, so Jᵀu = z̄'s own residual is *not* an error measure. What
  is: whether ∂F/∂θ lies in range(J) (if the solution is differentiable, differentiating
  F(z*(θ), θ) = 0 shows it must). Where the data move F along null(Jᵀ), the linearised
  optimality conditions have no solution and the derivative does not exist (it is infinite,
  or depends on which point of a solution set the solver happened to return). The probe
  w = λ(J Jᵀ + λI)⁻¹ q, the projection of a fixed generic unit vector q on null(Jᵀ), measures
  it: gradient entries θ̄ⱼ with |(∂F/∂θ)ᵀw|ⱼ > ε^(1/4) max|(∂F/∂θ)ᵀq| are NaN, and
  ``Info.adjoint_residual`` reports max|(∂F/∂θ)ᵀw| / max|(∂F/∂θ)ᵀq| — above ε^(1/4) means some
  entries are NaN. A probe can miss the off-range part of an entry whose column of ∂F/∂θ is
  tiny next to the largest one; it cannot report a differentiable entry as NaN by rounding.
- ``failed``: J or the regularised factor is not finite; NaN.

Why not an SVD pseudo-inverse: it is exact, but batched SVD with singular vectors costs two
orders of magnitude more than LU on the CPU backend (measured: 15 s vs 73 ms for 1024 matrices
of order 51), and under ``vmap`` a per-instance branch runs for every instance; the regularised
normal equations cost about one more LU.

The primal (not differentiated) call reports ``dense`` — decided when differentiated — with
conditioning NaN: it never forms J.

**Matrix-free** (otherwise): u ↦ Jᵀu is one transposed JVP of F (linearised once); conjugate
gradients when the caller says J is symmetric positive definite, restarted GMRES otherwise.
A Krylov solve that fails (non-finite, or ‖Jᵀu − z̄‖∞ > √tol (1 + ‖z̄‖∞)) is retried by CG on
the regularised normal equations (J Jᵀ + λI)u = J z̄, λ = ε^(2/3) s², s² = max(‖Jq‖², ‖Jᵀq‖²)
for the probe q (a lower bound on ‖J‖²; the bias on a singular value σ is λ/σ²); that one is
accepted when its own residual is below √tol (1 + ‖J z̄‖∞). NaN only when both fail. The
decision depends on the cotangent, so it happens inside the backward pass, after ``Info`` was
returned: Info reports the planned Krylov method (``cg`` / ``gmres``) with conditioning and
adjoint residual NaN, and the range test above is not made.

An instance whose forward status is not ``CONVERGED`` always gets a NaN gradient: a gradient
is exact, or NaN, never silently wrong.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.scipy.sparse.linalg import cg, gmres

from ddm.library.lapack import cho_solve, cholesky, lu_factor, lu_solve
from ddm.library.solvers.options import SolveOptions
from ddm.library.solvers.status import (
    ADJ_CG,
    ADJ_DENSE,
    ADJ_FAILED,
    ADJ_GMRES,
    ADJ_LSTSQ,
    ADJ_LU,
    CONVERGED,
    with_adjoint,
)

__all__ = [
    "implicit_root",
    "DenseAdjoint",
    "dense_adjoint",
    "krylov_adjoint",
    "use_dense",
    "planned_adjoint",
    "poison_gradient",
    "nan_unless",
    "closure_convert",
    "cast_inexact",
    "pivot_rtol",
    "off_range_rtol",
]


def use_dense(n: int, opts: SolveOptions) -> bool:
    """Whether a system of ``n`` unknowns is materialised: ``matrix_free`` if set, else by size."""
    if opts.matrix_free is None:
        return n <= opts.dense_max
    return not opts.matrix_free


def planned_adjoint(n: int, opts: SolveOptions, symmetric: bool) -> int:
    """The adjoint code a primal call reports: ``dense`` (decided when differentiated) or the
    Krylov method of the matrix-free path."""
    if use_dense(n, opts):
        return ADJ_DENSE
    return ADJ_CG if symmetric else ADJ_GMRES


def pivot_rtol(dtype) -> float:
    """Smallest LU pivot ratio min|Uᵢᵢ| / max|Uᵢᵢ| solved by LU: ε^(2/3) (4e-11 in float64,
    2e-5 in float32). An exactly singular J leaves a pivot at rounding level, far below."""
    return float(jnp.finfo(dtype).eps) ** (2.0 / 3.0)


def off_range_rtol(dtype) -> float:
    """Relative size of (∂F/∂θ)ᵀw above which a gradient entry is declared non-differentiable:
    ε^(1/4) (1e-4 in float64, 2e-2 in float32), far above what rounding leaves in w."""
    return float(jnp.finfo(dtype).eps) ** 0.25


def nan_unless(ok, tree):
    """``tree`` where ``ok`` (a scalar bool), else the same structure filled with NaN."""
    return jax.tree_util.tree_map(
        lambda a: jnp.where(ok, a, jnp.nan) if jnp.issubdtype(a.dtype, jnp.inexact) else a, tree
    )


@jax.custom_vjp
def poison_gradient(x, ok):
    """Identity on ``x`` whose cotangent becomes NaN where ``ok`` is False.

    Used where a forward value is kept but its derivative would be meaningless (e.g. the
    ``truncated`` mode after a solve that did not converge).
    """
    return x


def _poison_fwd(x, ok):
    return x, ok


def _poison_bwd(ok, ct):
    return nan_unless(ok, ct), None


poison_gradient.defvjp(_poison_fwd, _poison_bwd)


def _probe(n: int, dtype):
    """A fixed generic unit vector q: [n] (deterministic, no key: nothing random about it)."""
    q = jnp.cos(1.3 * jnp.arange(n, dtype=dtype) + 0.7)
    return q / jnp.linalg.norm(q)


def _inf(tree) -> jax.Array:
    """max |entry| over the inexact leaves of a pytree (0 for none)."""
    leaves = [
        jnp.max(jnp.abs(a), initial=0.0)
        for a in jax.tree_util.tree_leaves(tree)
        if _inexact(jnp.asarray(a))
    ]
    return jnp.max(jnp.stack(leaves)) if leaves else jnp.zeros(())


def _diagonal(M):
    """The diagonal of a square ``M`` as a strided slice (``jnp.diagonal`` is a gather that
    XLA's CPU backend handles poorly under ``vmap``; see ``eq_qp.diagonal``)."""
    n = M.shape[0]
    return jnp.reshape(M, (n * n,))[:: n + 1]


# ---------------------------------------------------------------- dense: decide, then solve


class DenseAdjoint(NamedTuple):
    """What the forward rule keeps for the backward of one instance (flat system, n unknowns).

    ``factor: [n, n]``: LU factors of J (``code`` lu) or the lower Cholesky factor C of
    J Jᵀ + λI (lstsq); ``pivots: [n]``: the LU's row swaps (identity for lstsq); ``null: [n]``:
    the probe's projection w on null(Jᵀ) (zero for lu); ``code``: int32, ADJ_LU / ADJ_LSTSQ /
    ADJ_FAILED. One n × n array per instance, as J itself would be.
    """

    factor: jax.Array
    pivots: jax.Array
    null: jax.Array
    code: jax.Array

    def solve_transpose(self, zbar, Jzbar):
        """u with Jᵀu = z̄ (lu), or the least-squares u = (J Jᵀ + λI)⁻¹ J z̄ (lstsq);
        ``z̄, Jz̄: [n]`` (J z̄ is one JVP: cheaper to recompute than J to keep)."""
        n = zbar.shape[0]
        lstsq = self.code == ADJ_LSTSQ
        eye = jnp.eye(n, dtype=self.factor.dtype)
        # The branch not taken gets an identity factor: it stays finite, also under autodiff.
        lu = jnp.where(lstsq, eye, self.factor)
        piv = jnp.where(lstsq, jnp.arange(n, dtype=self.pivots.dtype), self.pivots)
        u_lu = lu_solve((lu, piv), zbar, trans=1)
        u_ls = cho_solve(jnp.where(lstsq, self.factor, eye), Jzbar)
        return jnp.where(lstsq, u_ls, u_lu)


def dense_adjoint(Fz: Callable, z) -> tuple[DenseAdjoint, jax.Array]:
    """Form J = ∂Fz/∂z at ``z: [n]``, factor it and decide (module docstring).

    ``Fz: [n] → [n]``. Returns ``(DenseAdjoint, conditioning)``, conditioning = the LU pivot
    ratio (0 for a singular J, NaN for a non-finite one).
    """
    n = z.shape[0]
    dtype = z.dtype
    eps = float(jnp.finfo(dtype).eps)
    J = jax.jacfwd(Fz)(z)
    lu, piv = lu_factor(J)
    d = jnp.abs(_diagonal(lu))
    top = jnp.max(d)
    ratio = jnp.where(top > 0, jnp.min(d) / jnp.where(top > 0, top, 1.0), 0.0)
    finite = jnp.all(jnp.isfinite(J))
    ratio = jnp.where(finite, ratio, jnp.nan)
    lstsq = finite & (ratio < pivot_rtol(dtype))

    def regularised(_):
        # Tikhonov on the normal equations: (J Jᵀ + λI) u = J z̄ is the minimiser of
        # ‖Jᵀu − z̄‖² + λ‖u‖²; λ at the rounding level of J Jᵀ keeps its Cholesky factor finite.
        JJt = J @ J.T
        lam = 10.0 * n * eps * jnp.max(_diagonal(JJt)) + jnp.finfo(dtype).tiny
        C = cholesky(JJt + lam * jnp.eye(n, dtype=dtype), symmetrize=True)
        w = lam * cho_solve(C, _probe(n, dtype))  # q's part in null(Jᵀ)
        return C, w

    # Outside vmap only the instances that need it pay for the second factorisation.
    C, w = lax.cond(lstsq, regularised, lambda _: (jnp.zeros_like(J), jnp.zeros((n,), dtype)), None)
    sound = _diagonal(C).min() > 0.0
    sound = sound & jnp.all(jnp.isfinite(C)) & jnp.all(jnp.isfinite(w))
    code = jnp.where(~finite | (lstsq & ~sound), ADJ_FAILED, jnp.where(lstsq, ADJ_LSTSQ, ADJ_LU))
    adj = DenseAdjoint(
        jnp.where(lstsq, C, lu),
        jnp.where(lstsq, jnp.arange(n, dtype=piv.dtype), piv),
        jnp.where(lstsq & sound, w, 0.0),
        code.astype(jnp.int32),
    )
    return adj, ratio


def _off_range(make_pull, w, q, lstsq):
    """``(c, scale)``: c = the inexact leaves of (∂F/∂θ)ᵀw (a list) and scale =
    max|(∂F/∂θ)ᵀq| (0 when ``q`` is None: the caller has it); zeros unless ``lstsq`` (outside
    ``vmap`` the branch then does not run). ``make_pull()`` returns v ↦ (∂F/∂θ)ᵀv (called
    inside the branch: F is linearised only there)."""
    shapes = [
        s
        for s in jax.tree_util.tree_leaves(jax.eval_shape(lambda v: make_pull()(v), w))
        if _inexact(s)
    ]

    def measure(_):
        pull = make_pull()
        c = [a for a in jax.tree_util.tree_leaves(pull(w)) if _inexact(a)]
        return c, (jnp.zeros((), w.dtype) if q is None else _inf(pull(q)).astype(w.dtype))

    def skip(_):
        return [jnp.zeros(s.shape, s.dtype) for s in shapes], jnp.zeros((), w.dtype)

    return lax.cond(lstsq, measure, skip, None)


def _mask_off_range(theta_bar, c, cut):
    """NaN in the entries of θ̄'s inexact leaves where |c| > cut (c: those leaves, in order)."""
    leaves, tree = jax.tree_util.tree_flatten(theta_bar)
    it = iter(c)
    out = [jnp.where(jnp.abs(next(it)) > cut, jnp.nan, g) if _inexact(g) else g for g in leaves]
    return jax.tree_util.tree_unflatten(tree, out)


def _inexact(a) -> bool:
    return jnp.issubdtype(a.dtype, jnp.inexact)


# ---------------------------------------------------------------- matrix-free


def krylov_adjoint(Fz: Callable, z, zbar, opts: SolveOptions, symmetric: bool = False):
    """Solve Jᵀu = z̄ matrix-free (module docstring); returns ``(u, ok)``.

    ``Fz: [n] → [n]``, ``z, z̄: [n]``. CG if ``symmetric`` (J symmetric positive definite),
    GMRES otherwise; where that fails, CG on the regularised normal equations.
    """
    n = z.shape[0]
    dtype = z.dtype
    tol = opts.tolerance(dtype)
    _, J = jax.linearize(Fz, z)
    transpose = jax.linear_transpose(J, z)
    JT = lambda v: transpose(v)[0]  # noqa: E731 — the operator v ↦ Jᵀv
    if symmetric:
        u, _ = cg(JT, zbar, tol=tol, atol=0.0, maxiter=10 * n)
    else:
        restart = min(n, 30)
        u, _ = gmres(
            JT,
            zbar,
            tol=tol,
            atol=0.0,
            restart=restart,
            maxiter=max(10, (10 * n) // restart),
            solve_method="batched",
        )
    resid = jnp.max(jnp.abs(JT(u) - zbar))
    ok = jnp.all(jnp.isfinite(u)) & (resid <= jnp.sqrt(tol) * (1.0 + jnp.max(jnp.abs(zbar))))

    def normal_equations(_):
        q = _probe(n, dtype)
        lam = pivot_rtol(dtype) * jnp.maximum(jnp.sum(J(q) ** 2), jnp.sum(JT(q) ** 2))
        lam = lam + jnp.finfo(dtype).tiny
        op = lambda v: J(JT(v)) + lam * v  # noqa: E731 — J Jᵀ + λI, symmetric positive definite
        rhs = J(zbar)
        v, _ = cg(op, rhs, tol=tol, atol=0.0, maxiter=10 * n)
        r = jnp.max(jnp.abs(op(v) - rhs))
        good = jnp.all(jnp.isfinite(v)) & (r <= jnp.sqrt(tol) * (1.0 + jnp.max(jnp.abs(rhs))))
        return v, good

    v, good = lax.cond(ok, lambda _: (u, jnp.array(True)), normal_equations, None)
    return jnp.where(ok, u, v), ok | good


# ---------------------------------------------------------------- the custom VJP


def _flat_system(F: Callable, z, theta):
    """``(flat z, Fz)`` with ``Fz: [n] → [n]`` the optimality function in flat coordinates."""
    flat_z, unravel_z = ravel_pytree(z)
    return flat_z, (lambda fz: ravel_pytree(F(unravel_z(fz), theta))[0])


def _pullback(F: Callable, z, theta):
    """v ↦ (∂F/∂θ)ᵀ v at the root (flat v), F linearised in θ once."""
    out, vjp_theta = jax.vjp(lambda th: F(z, th), theta)
    _, unravel_out = ravel_pytree(out)
    return lambda v: vjp_theta(unravel_out(v))[0]


def implicit_root(
    F: Callable,
    solve: Callable,
    opts: SolveOptions,
    *,
    symmetric: bool = False,
    has_aux: bool = False,
) -> Callable:
    """Wrap ``solve`` so that reverse mode differentiates its root implicitly through F.

    - ``solve(init, θ) -> (z, info)`` — or ``(z, info, aux)`` with ``has_aux`` — runs the
      forward solver; it is never differentiated. ``info`` is an :class:`Info` (its status
      decides whether the gradient is NaN; its adjoint fields are filled here); ``aux`` is any
      pytree the backward needs that is not a function of θ in the differentiated sense (e.g.
      the prox-gradient step size η).
    - ``F(z, θ) -> r`` — or ``F(z, θ, aux)`` — the optimality function, r shaped like z.
    - ``symmetric``: ∂F/∂z is symmetric positive definite (matrix-free path then uses CG).

    Returns ``root(init, θ)`` with the same outputs as ``solve``, ``info``'s adjoint fields
    saying how the gradient is (differentiated call) or would be (primal call) computed.
    Gradients flow to θ only: the initial guess ``init`` gets none, ``info`` and ``aux`` carry
    none.

    Everything F and solve depend on that should be differentiated must be passed through θ
    (a closed-over tracer would get no gradient: JAX raises on that).
    """

    def bind(aux):
        return (lambda z_, th: F(z_, th, aux)) if has_aux else F

    def relabel(out, info):
        return (out[0], info) + tuple(out[2:])

    @jax.custom_vjp
    def root(init, theta):
        out = solve(init, theta)
        n = ravel_pytree(out[0])[0].shape[0]
        return relabel(out, with_adjoint(out[1], planned_adjoint(n, opts, symmetric)))

    def root_fwd(init, theta):
        out = solve(init, theta)
        z, info = out[0], out[1]
        aux = out[2] if has_aux else None
        Fa = bind(aux)
        flat_z, Fz = _flat_system(Fa, z, theta)
        n = flat_z.shape[0]
        if not use_dense(n, opts) or n == 0:
            code = planned_adjoint(n, opts, symmetric) if n else ADJ_LU
            return relabel(out, with_adjoint(info, code)), (z, theta, info.status, aux, None)
        adj, ratio = dense_adjoint(Fz, flat_z)
        # Report how far ∂F/∂θ leaves range(J) (least squares only; module docstring).
        lstsq = adj.code == ADJ_LSTSQ
        c, scale = _off_range(
            lambda: _pullback(Fa, z, theta), adj.null, _probe(n, flat_z.dtype), lstsq
        )
        rel = _inf(c) / jnp.where(scale > 0, scale, 1.0)
        info = with_adjoint(info, adj.code, ratio, jnp.where(lstsq, rel, jnp.nan))
        return relabel(out, info), (z, theta, info.status, aux, (adj, scale))

    def root_bwd(res, cts):
        z, theta, status, aux, dense = res
        Fa = bind(aux)
        flat_z, Fz = _flat_system(Fa, z, theta)
        flat_zbar = ravel_pytree(cts[0])[0].astype(flat_z.dtype)
        pull = _pullback(Fa, z, theta)
        if dense is None:
            if flat_z.shape[0] == 0:
                u, ok = flat_zbar, jnp.array(True)
            else:
                u, ok = krylov_adjoint(Fz, flat_z, flat_zbar, opts, symmetric)
            theta_bar = pull(-u)
        else:
            adj, scale = dense
            u = adj.solve_transpose(flat_zbar, jax.jvp(Fz, (flat_z,), (flat_zbar,))[1])
            ok = jnp.all(jnp.isfinite(u)) & (adj.code != ADJ_FAILED)
            theta_bar = pull(-u)
            # Entries along which the data move F off range(J): no derivative, NaN (the scale
            # max|(∂F/∂θ)ᵀq| came with the forward rule's report).
            c, _ = _off_range(lambda: pull, adj.null, None, adj.code == ADJ_LSTSQ)
            theta_bar = _mask_off_range(theta_bar, c, off_range_rtol(flat_z.dtype) * scale)
        # NaN for a non-converged instance or a failed adjoint solve: never silently wrong.
        return None, nan_unless(ok & (status == CONVERGED), theta_bar)

    root.defvjp(root_fwd, root_bwd)
    return root


def closure_convert(f: Callable, *example_args: Any):
    """``(g, consts)`` with ``g(*args, consts) == f(*args)`` and closed-over arrays hoisted.

    Solvers apply this to user callables so that arrays an objective closes over (say, a
    network's parameters) become explicit inputs of the implicit backward, hence differentiable.
    """
    conv, consts = jax.closure_convert(f, *example_args)
    return (lambda *args: conv(*args[:-1], *args[-1])), tuple(consts)


def cast_inexact(tree, dtype):
    """Cast the floating leaves of ``tree`` to ``dtype`` (``using dtype=f64``); others unchanged."""
    return jax.tree_util.tree_map(
        lambda a: (
            jnp.asarray(a).astype(dtype)
            if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating)
            else a
        ),
        tree,
    )
