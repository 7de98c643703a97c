"""``on_infeasible="closest"`` for classes 1–2: where the constraints admit no point, the best
point among those violating them least.

Problem (one instance; the QP of :mod:`~ddm.library.solvers.qp`)::

    min_x ½ xᵀP x + cᵀx   s.t.  A x = b,  G x ≤ h          (infeasible for this instance)

Its elastic form, with t ≥ 0 the inequalities' violations::

    min_{x, t}  ½ xᵀP x + cᵀx + (ρ/2)(‖A x − b‖² + ‖t‖²)   s.t.  G x − t ≤ h,  t ≥ 0        (E)

As ρ → ∞ the solution of (E) tends to the closest point: the least violation (r*, t*) =
(A x − b, (G x − h)₊) is unique (the penalty is strictly convex in them), and among the points
reaching it, the one minimising the objective. For finite ρ the point is biased towards the
objective's minimum by O(1/ρ) relative to the penalty's curvature.

Why ρ = s_F / (√ε s_A), with s_F = max|P| + max|c| and s_A the largest squared row norm of A and
G (each 1 where 0), no gradient. The interior point factors P + ρAᵀA + GᵀDG and refuses (as
``singular``) a factor whose pivot ratio is below ε^(2/3) (:func:`eq_qp._pivot_rtol`). The
objective's part of that matrix is about ρ s_A / s_F times smaller than the penalty's, so the
ratio is about √ε: resolvable in the dtype, with a margin of ε^(−1/6) (14× in float32, 260× in
float64). The bias is then a relative √ε (3e-4 in float32, 1.5e-8 in float64). The former fixed
ρ = 10⁶ (1 + max|P| + max|c|) put the objective at a relative 10⁻⁶·3 of the penalty, below
float32's ε^(2/3) = 2.4e-5: every float32 instance came back ``singular`` (the issue's
``sum(v) == 1, v >= 0.8``: [0.496, 0.504] instead of [0.6, 0.6]).

Status: an instance the solver called ``infeasible`` whose elastic problem converged is
``closest`` (:data:`~ddm.library.solvers.status.CLOSEST`); one it called ``singular`` (the
interior point reports some infeasible instances so at its first factorisation) or
``inaccurate`` (in float32, an instance infeasible by too little for its certificate to be
resolved diverges uncertified) is ``closest`` too when the elastic point violates the
constraints by more than √tol (relative), and keeps its status otherwise — the constraints
were satisfiable; the trouble lay elsewhere. Where the elastic solve fails, its own status is
reported. Every other instance is untouched, ``converged``
ones included. The gradient of a ``closest`` instance is the elastic problem's, by the class 2
backward applied to (E)'s data (differentiable in P, c, A, b, G, h; ρ held constant); that of
an untouched instance is the original problem's. The original solve is therefore repeated here
with each instance's data cut from the gradient where the other solve gives its value (a failed
solve's backward is NaN even for a discarded value, by the solvers' rule): a node with
on_infeasible="closest" costs the original solve twice and the elastic one once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ddm.library.solvers.eq_qp import work_dtype
from ddm.library.solvers.options import SolveOptions
from ddm.library.solvers.qp import qp
from ddm.library.solvers.status import (
    CLOSEST,
    CONVERGED,
    INACCURATE,
    INFEASIBLE,
    SINGULAR,
    Info,
    make_info,
)

__all__ = ["closest", "elastic_rho"]


def elastic_rho(P, c, A, G, dtype) -> jax.Array:
    """ρ = s_F / (√ε s_A) for the elastic problem (module docstring); no gradient."""
    sg = jax.lax.stop_gradient
    s_f = jnp.max(jnp.abs(P), initial=0.0) + jnp.max(jnp.abs(c), initial=0.0)
    rows = jnp.concatenate([jnp.sum(A * A, axis=1), jnp.sum(G * G, axis=1)])
    s_a = jnp.max(rows, initial=0.0)
    s_f = jnp.where(s_f > 0, s_f, 1.0)
    s_a = jnp.where(s_a > 0, s_a, 1.0)
    return sg(s_f / (s_a * jnp.sqrt(jnp.finfo(dtype).eps))).astype(P.dtype)


def _violation(A, b, G, h, x) -> jax.Array:
    """Relative violation max(‖Ax − b‖∞ / (1 + ‖b‖∞), ‖(Gx − h)₊‖∞ / (1 + ‖h‖∞))."""
    inf = lambda v: jnp.max(jnp.abs(v), initial=0.0)  # noqa: E731
    eq = inf(A @ x - b) / (1.0 + inf(b))
    ineq = inf(jnp.maximum(G @ x - h, 0.0)) / (1.0 + inf(h))
    return jnp.maximum(eq, ineq)


def closest(P, c, A, b, G, h, x, info: Info, opts: SolveOptions):
    """Replace the instance's ``(x, info)`` by the closest point where it is infeasible.

    ``P: [n, n]``, ``c: [n]``, ``A: [p, n]``, ``b: [p]``, ``G: [m, n]``, ``h: [m]``: the QP as
    solved; ``x: [n]``, ``info``: what the solver returned for it (x only for the signature:
    the solve is repeated, see the module docstring); ``opts``: the node's solver options (the
    elastic problem is solved with them). Returns ``(x, info)`` (module docstring
    for which instances change and their status). One instance; callers ``vmap``.
    """
    n, m = P.shape[0], G.shape[0]
    _, work = work_dtype(opts, P, c, A, b, G, h)
    tried = (info.status == INFEASIBLE) | (info.status == SINGULAR) | (info.status == INACCURATE)
    # Each solve gets gradients only for the instances whose value it gives: a solve that did
    # not converge has a NaN backward even where its value is discarded (the solvers' rule), so
    # the given x — the original solve's, NaN-backward where it failed — is not used: that solve
    # is repeated on data cut from the gradient where it failed (bit for bit the same x).
    sg = jax.lax.stop_gradient
    data = (P, c, A, b, G, h)
    x, _ = qp(*(jnp.where(tried, sg(a), a) for a in data), opts=opts)
    P, c, A, b, G, h = (jnp.where(tried, a, sg(a)) for a in data)
    rho = elastic_rho(P, c, A, G, work)
    eye_m = jnp.eye(m, dtype=P.dtype)
    # (E) in the variables (x, t): P̃ = diag(P + ρAᵀA, ρI), c̃ = (c − ρAᵀb, 0),
    # G̃ = [[G, −I], [0, −I]], h̃ = (h, 0).
    Pe = jnp.zeros((n + m, n + m), P.dtype)
    Pe = Pe.at[:n, :n].set(P + rho * A.T @ A).at[n:, n:].set(rho * eye_m)
    ce = jnp.concatenate([c - rho * A.T @ b, jnp.zeros((m,), P.dtype)])
    Ge = jnp.concatenate(
        [jnp.concatenate([G, -eye_m], 1), jnp.concatenate([jnp.zeros((m, n), P.dtype), -eye_m], 1)]
    )
    he = jnp.concatenate([h, jnp.zeros((m,), P.dtype)])
    none = jnp.zeros((0, n + m), P.dtype)
    xe, ie = qp(Pe, ce, none, jnp.zeros((0,), P.dtype), Ge, he, opts)
    xe = xe[:n]
    solved = ie.status == CONVERGED
    tol = opts.tolerance(work)
    violated = jax.lax.stop_gradient(_violation(A, b, G, h, xe)) > jnp.sqrt(tol)
    infeasible = (info.status == INFEASIBLE) | violated
    status = jnp.where(solved, jnp.where(infeasible, CLOSEST, info.status), ie.status)
    pick = lambda new, old: jnp.where(tried, new, old)  # noqa: E731
    out = make_info(
        pick(status, info.status),
        pick(info.iterations + ie.iterations, info.iterations),
        pick(ie.residual, info.residual),
        pick(ie.adjoint, info.adjoint),
        pick(ie.conditioning, info.conditioning),
        pick(ie.adjoint_residual, info.adjoint_residual),
    )
    return jnp.where(tried, xe, x), out
