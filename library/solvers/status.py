"""Per-instance solver outcome: what the forward solve reached and how its gradient is computed.

``converged`` means the returned point passed an independent check of its accuracy — one that
reads the problem's data and the point, not the quantities the solver iterated on:

- classes 1–2 (``eq_qp``, ``qp``): the point with its multipliers solves, exactly, a problem
  whose data lie within a relative τ = max(tol, 10√(n+p+m) ε) of the node's, in the scale of
  the problem's own terms (backward error), and its duality gap is within τ
  (:mod:`~ddm.library.solvers.certify`);
- class 3 (``newton``): the relative KKT residual is within tol and the Newton step at the
  point — invariant to the objective's scale — within √tol (1 + ‖x‖∞);
- class 4 (``prox_grad``): the fixed-point residual at the step of f's own curvature (not the
  step the backtracking left) is within tol.

``inaccurate`` is a point the solver's own test accepted that fails that check (after the
further iterations the solver spends on it), or an iterate that diverged with no certificate of
infeasibility or unboundedness: what the dtype could not certify. No node accepts it. A status
depends on the instance alone, never on the rest of its batch: no decision reads another
instance, and every decision keeps a margin above the rounding that batched kernels change.

:class:`Info` holds, per instance, the status code, the iterations used and the residual of the
optimality conditions at the returned point (the forward solve), and the adjoint code, the
conditioning measure behind it and the adjoint's residual (the backward). All fields are JAX
arrays, so they batch under ``vmap`` and pass through ``jit`` and ``grad`` (as auxiliary
outputs: they carry no gradient).

The adjoint fields say how the node's gradient *is* computed when the call differentiates the
node, and how it *would be* when it does not: the dense implicit decision (LU or least squares)
needs the Jacobian of the optimality conditions at the solution, which only the
differentiated path forms, so a primal call reports ``dense`` (decided when differentiated)
with ``conditioning`` NaN. Matrix-free adjoints are decided per cotangent inside the backward
pass, after ``Info`` has been returned, so they report the Krylov method planned
(``docs/language.md`` § Solver status).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import jax

CONVERGED, MAX_ITER, INFEASIBLE, SINGULAR, UNBOUNDED, NONFINITE, CLOSEST, INACCURATE = range(8)

STATUS_NAMES = (
    "converged",
    "max-iter",
    "infeasible",
    "singular",
    "unbounded",
    "non-finite",
    "closest",
    "inaccurate",
)

# What a user can do about each status (shown in run-time diagnostics).
STATUS_HINTS = (
    "",
    "raise max_iter or loosen tol in the node's 'using' clause",
    "the constraints admit no point; check the data feeding them, or use "
    'on_infeasible="closest" (solvers kkt and ipm)',
    "the optimality system is singular, or the problem is not convex at run time (a quadratic "
    "not positive definite, an L1 weight below 0); add a ridge term (e.g. + 1e-6 * "
    "sum(v ** 2)), or keep the weights the data give at or above 0",
    "the objective decreases without bound over the feasible set; add a bound or a quadratic term",
    "the problem's data contain NaN or Inf",
    "the constraints admit no point, so the node returned the closest one (the best point among "
    'those violating them least, on_infeasible="closest"); check the data feeding them',
    "the solver could not certify its point in this precision: it fails the independent "
    "accuracy check (the problem is degenerate or ill-conditioned at the dtype's precision), or "
    "the iterates diverged with no certificate of infeasibility or unboundedness (constraints "
    'that barely leave room, or a badly scaled problem); solve the node in float64 (dtype="f64" '
    "in its 'using' clause), rescale the data, or check the constraints",
)

# How the gradient of an instance is computed (Info.adjoint). A gradient is NaN, whatever the
# code, where the status is not one the node accepts (``converged``; ``max-iter`` too under
# ``unroll``; ``closest`` under on_infeasible="closest").
(
    ADJ_LU,
    ADJ_LSTSQ,
    ADJ_FAILED,
    ADJ_DENSE,
    ADJ_CG,
    ADJ_GMRES,
    ADJ_KKT,
    ADJ_UNROLL,
    ADJ_TRUNCATED,
    ADJ_EXACT,
) = range(10)

ADJOINT_NAMES = (
    "lu",
    "lstsq",
    "failed",
    "dense",
    "cg",
    "gmres",
    "kkt",
    "unroll",
    "truncated",
    "exact",
)

# Why each mode was used (shown beside the code in reports).
ADJOINT_REASONS = (
    "implicit, dense: J = ∂F/∂z at the solution factored by LU (its pivot ratio, "
    "'conditioning', is above ε^(2/3))",
    "implicit, dense, least squares: J is singular or ill-conditioned (LU pivot ratio below "
    "ε^(2/3)); minimum-norm adjoint from the regularised normal equations; gradient entries "
    "along which the data move the optimality conditions off range(J) — where the solution is "
    "not differentiable — are NaN ('adjoint_residual' measures that part)",
    "implicit, dense: J or its regularised factor is not finite; the gradient is NaN",
    "implicit, dense: LU or least squares, decided when the node is differentiated (this call "
    "did not differentiate it)",
    "implicit, matrix-free: conjugate gradients on Jᵀu = x̄ (J symmetric); if CG fails, CG on "
    "the regularised normal equations; NaN only if both fail",
    "implicit, matrix-free: restarted GMRES on Jᵀu = x̄; if GMRES fails, CG on the regularised "
    "normal equations; NaN only if both fail",
    "implicit, structured KKT solve (classes 1–2): the factorisation of the KKT system",
    "unrolled: differentiated through the solver's iterations",
    "truncated: solved without gradient, then differentiated through iterations started at the "
    "solution",
    "exact: the solution is one closed-form step (a prox of a scaled squared distance), "
    "differentiated by autodiff of that step — the implicit derivative itself",
)


class Info(NamedTuple):
    """One instance's solver outcome (batched: each field gains the batch's leading axes)."""

    status: "jax.Array"  # int32, one of the status codes above
    iterations: "jax.Array"  # int32
    residual: "jax.Array"  # float: ∞-norm of the optimality conditions, relative
    adjoint: "jax.Array"  # int32, one of the ADJ_* codes above
    conditioning: "jax.Array"  # float: the measure the adjoint decision used (an LU pivot
    #                                ratio min|Uᵢᵢ| / max|Uᵢᵢ|, or a Cholesky pivot ratio for
    #                                the structured KKT solve); NaN where none was measured
    adjoint_residual: "jax.Array"  # float: least-squares adjoint only — the relative part of
    #                                ∂F/∂θ outside range(J) along a probe; NaN elsewhere


def make_info(
    status, iterations, residual, adjoint, conditioning=None, adjoint_residual=None
) -> Info:
    """An :class:`Info` with the right dtypes; the optional floats default to NaN (not
    measured). ``residual`` fixes the float dtype."""
    import jax.numpy as jnp

    residual = jnp.asarray(residual)
    status = jnp.asarray(status, jnp.int32)
    # Every field depends on the instance's status, so that a constant (a planned code, a NaN)
    # is batched under vmap exactly where the status is: a custom-VJP function must return
    # outputs batched alike from its primal and its forward rule, or linearising a jitted
    # caller fails.
    same = status == status

    def tie(v, dtype):
        v = jnp.asarray(v, dtype)
        return jnp.where(same, v, v)

    def as_float(v):
        return tie(jnp.nan if v is None else v, residual.dtype)

    return Info(
        status,
        tie(iterations, jnp.int32),
        tie(residual, residual.dtype),
        tie(adjoint, jnp.int32),
        as_float(conditioning),
        as_float(adjoint_residual),
    )


def with_adjoint(info: Info, adjoint, conditioning=None, adjoint_residual=None) -> Info:
    """``info`` with its adjoint fields replaced (floats default to NaN: not measured)."""
    return make_info(
        info.status, info.iterations, info.residual, adjoint, conditioning, adjoint_residual
    )


def status_name(code: int) -> str:
    return STATUS_NAMES[int(code)] if 0 <= int(code) < len(STATUS_NAMES) else f"code {code}"


def adjoint_name(code: int) -> str:
    return ADJOINT_NAMES[int(code)] if 0 <= int(code) < len(ADJOINT_NAMES) else f"code {code}"
