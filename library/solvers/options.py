"""What a node's ``using`` and ``backward`` clauses say to its solver."""

from __future__ import annotations

from dataclasses import dataclass

BACKWARD_MODES = ("implicit", "unroll", "truncated")


@dataclass(frozen=True)
class SolveOptions:
    """Solver settings of one declarative node (hashable: they are static under jit).

    - ``tol``: stopping tolerance on the relative optimality residual; ``None`` → by dtype
      (1e-5 in float32, 1e-10 in float64).
    - ``max_iter``: iteration limit of iterative solvers; ``None`` → the solver's default.
    - ``backward``: ``implicit`` (differentiate the optimality conditions at the solution),
      ``unroll`` (differentiate through ``steps`` solver iterations from the start; the forward
      value is then the ``steps``-th iterate), ``truncated`` (solve without gradient, then
      differentiate through ``steps`` iterations started at the solution).
    - ``dtype``: ``"f64"`` solves in float64 whatever the pipeline's dtype (the result is cast
      back); ``None`` keeps the input dtype. float64 must be enabled in JAX.
    - ``matrix_free``: ``None`` → by size (dense below ``dense_max`` unknowns).
    """

    tol: float | None = None
    max_iter: int | None = None
    backward: str = "implicit"
    steps: int = 0
    dtype: str | None = None
    matrix_free: bool | None = None
    dense_max: int = 256

    def tolerance(self, dtype) -> float:
        if self.tol is not None:
            return self.tol
        import numpy as np

        return 1e-10 if np.dtype(dtype) == np.float64 else 1e-5
