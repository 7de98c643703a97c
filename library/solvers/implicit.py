"""Implicit differentiation of a root z*(θ) of F(z, θ) = 0, written once for every solver.

If F(z*(θ), θ) = 0 and J = ∂F/∂z is nonsingular at the root, the implicit function theorem gives
``dz*/dθ = −J⁻¹ ∂F/∂θ``. Reverse mode therefore needs, for an output cotangent z̄,

    1. the adjoint solve    Jᵀ u = z̄                      (one linear system, no matter how many
                                                           iterations the forward solver took)
    2. the pull-back        θ̄ = −(∂F/∂θ)ᵀ u               (one VJP of F in θ at the root).

The forward solver is never differentiated, so memory does not grow with its iterations. Each
problem class states only its optimality function F (for a smooth minimum: the KKT conditions;
for a prox-gradient fixed point: x − T(x)) and calls :func:`implicit_root`.

The adjoint system is solved densely (``J`` materialised with ``jax.jacfwd``, LU) when the
unknowns number at most ``opts.dense_max`` and ``opts.matrix_free`` is not ``True``; otherwise
matrix-free, with Jᵀv products from ``jax.vjp``: conjugate gradients when the caller says ``J``
is symmetric positive definite, restarted GMRES otherwise. A solve that fails (non-finite, or a
Krylov residual far above tolerance) yields NaN, and so does an instance whose forward status is
not ``CONVERGED``: a gradient is exact or NaN, never silently wrong.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.scipy.sparse.linalg import cg, gmres

from ddm.library.solvers.options import SolveOptions
from ddm.library.solvers.status import CONVERGED

__all__ = ["implicit_root", "root_vjp", "solve_adjoint", "use_dense", "poison_gradient",
           "nan_unless", "closure_convert", "cast_inexact"]


def use_dense(n: int, opts: SolveOptions) -> bool:
    """Whether a system of ``n`` unknowns is materialised: ``matrix_free`` if set, else by size."""
    if opts.matrix_free is None:
        return n <= opts.dense_max
    return not opts.matrix_free


def nan_unless(ok, tree):
    """``tree`` where ``ok`` (a scalar bool), else the same structure filled with NaN."""
    return jax.tree_util.tree_map(
        lambda a: jnp.where(ok, a, jnp.nan) if jnp.issubdtype(a.dtype, jnp.inexact) else a, tree)


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


def solve_adjoint(Fz: Callable, z, zbar, opts: SolveOptions, symmetric: bool = False):
    """Solve Jᵀ u = z̄ with J = ∂Fz/∂z at ``z`` (flat vectors ``z, z̄: [n]``); returns ``(u, ok)``.

    ``Fz: [n] → [n]``. Dense: J by forward mode (n JVPs), then an LU solve of Jᵀ. Matrix-free:
    u ↦ Jᵀu is one VJP of Fz (its linearisation is computed once); CG if ``symmetric`` (J
    symmetric positive definite, e.g. a Hessian), GMRES otherwise. ``ok`` is False when the
    solve produced non-finite values or its residual ‖Jᵀu − z̄‖∞ exceeds √tol·(1 + ‖z̄‖∞):
    the caller turns that into a NaN gradient.
    """
    n = z.shape[0]
    tol = opts.tolerance(z.dtype)
    if n == 0:
        return zbar, jnp.array(True)
    if use_dense(n, opts):
        J = jax.jacfwd(Fz)(z)
        u = jnp.linalg.solve(J.T, zbar)
        # LU of a nearly singular J returns a huge u with a residual of the size of z̄ itself:
        # the same test as the Krylov path's catches it (an exactly singular one gives NaN).
        resid = jnp.max(jnp.abs(J.T @ u - zbar))
        return u, jnp.all(jnp.isfinite(u)) & (resid <= jnp.sqrt(tol) * (1.0 + jnp.max(
            jnp.abs(zbar))))
    _, vjp = jax.vjp(Fz, z)
    JT = lambda v: vjp(v)[0]  # noqa: E731 — the operator v ↦ Jᵀv
    if symmetric:
        u, _ = cg(JT, zbar, tol=tol, atol=0.0, maxiter=10 * n)
    else:
        restart = min(n, 30)
        u, _ = gmres(JT, zbar, tol=tol, atol=0.0, restart=restart,
                     maxiter=max(10, (10 * n) // restart), solve_method="batched")
    resid = jnp.max(jnp.abs(JT(u) - zbar))
    ok = jnp.all(jnp.isfinite(u)) & (resid <= jnp.sqrt(tol) * (1.0 + jnp.max(jnp.abs(zbar))))
    return u, ok


def root_vjp(F: Callable, z, theta, zbar, opts: SolveOptions, symmetric: bool = False):
    """θ̄ = −(∂F/∂θ)ᵀ u with Jᵀ u = z̄, J = ∂F/∂z at the root ``z`` (pytrees allowed).

    ``F(z, θ)`` returns a pytree shaped like ``z`` (a square system). Returns ``(θ̄, ok)``.
    """
    flat_z, unravel_z = ravel_pytree(z)
    flat_zbar, _ = ravel_pytree(zbar)
    flat_zbar = flat_zbar.astype(flat_z.dtype)
    Fz = lambda fz: ravel_pytree(F(unravel_z(fz), theta))[0]  # noqa: E731
    u, ok = solve_adjoint(Fz, flat_z, flat_zbar, opts, symmetric)
    # Pull −u back through F's dependence on θ: one reverse pass, J never formed here.
    out, vjp_theta = jax.vjp(lambda th: F(z, th), theta)
    _, unravel_out = ravel_pytree(out)
    (theta_bar,) = vjp_theta(unravel_out(-u))
    return theta_bar, ok


def implicit_root(F: Callable, solve: Callable, opts: SolveOptions, *, symmetric: bool = False,
                  has_aux: bool = False) -> Callable:
    """Wrap ``solve`` so that reverse mode differentiates its root implicitly through F.

    - ``solve(init, θ) -> (z, info)`` — or ``(z, info, aux)`` with ``has_aux`` — runs the
      forward solver; it is never differentiated. ``info`` is an :class:`Info` (its status
      decides whether the gradient is NaN); ``aux`` is any pytree the backward needs that is not
      a function of θ in the differentiated sense (e.g. the prox-gradient step size η).
    - ``F(z, θ) -> r`` — or ``F(z, θ, aux)`` — the optimality function, r shaped like z.
    - ``symmetric``: ∂F/∂z is symmetric positive definite (matrix-free path then uses CG).

    Returns ``root(init, θ)`` with the same outputs as ``solve``. Gradients flow to θ only:
    the initial guess ``init`` gets none, ``info`` and ``aux`` carry none.

    Everything F and solve depend on that should be differentiated must be passed through θ
    (a closed-over tracer would get no gradient: JAX raises on that).
    """

    @jax.custom_vjp
    def root(init, theta):
        return solve(init, theta)

    def root_fwd(init, theta):
        out = solve(init, theta)
        return out, (out[0], theta, out[1].status, out[2] if has_aux else None)

    def root_bwd(res, cts):
        z, theta, status, aux = res
        Fa = (lambda z_, th: F(z_, th, aux)) if has_aux else F
        theta_bar, ok = root_vjp(Fa, z, theta, cts[0], opts, symmetric)
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
        lambda a: jnp.asarray(a).astype(dtype)
        if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a, tree)
