"""Per-instance solver outcome: a status code, the iterations used and the residual of the
optimality conditions at the returned point. All fields are JAX arrays so they batch under vmap.
"""
from __future__ import annotations

from typing import NamedTuple

CONVERGED, MAX_ITER, INFEASIBLE, SINGULAR, UNBOUNDED, NONFINITE = range(6)

STATUS_NAMES = ("converged", "max-iter", "infeasible", "singular", "unbounded", "non-finite")

# What a user can do about each status (shown in run-time diagnostics).
STATUS_HINTS = (
    "",
    "raise max_iter or loosen tol in the node's 'using' clause",
    "the constraints admit no point; check the data feeding them, or use "
    "on_infeasible=\"closest\"",
    "the optimality system is singular or the quadratic is not positive definite at run time; "
    "add a ridge term (e.g. + 1e-6 * sum(v ** 2))",
    "the objective decreases without bound over the feasible set; add a bound or a quadratic "
    "term",
    "the problem's data contain NaN or Inf",
)


class Info(NamedTuple):
    status: "jax.Array"      # int32, one of the codes above
    iterations: "jax.Array"  # int32
    residual: "jax.Array"    # float: ∞-norm of the optimality conditions, relative (see solver)


def status_name(code: int) -> str:
    return STATUS_NAMES[int(code)] if 0 <= int(code) < len(STATUS_NAMES) else f"code {code}"
