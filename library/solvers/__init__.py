"""Solvers behind declarative nodes: one small interface, swappable implementations.

Every solver works on ONE problem instance (callers ``jax.vmap`` it), is jit-, vmap- and
grad-compatible with no host callbacks, and returns ``(x, Info)``: the solution and a per-instance
:class:`~ddm.library.solvers.status.Info` (status code, iterations, residual at the returned point;
how the gradient is computed — adjoint code, conditioning, adjoint residual).

Classes (what the compiler recognises from the objective's structure, docs/language.md):

1. ``eq_qp``      quadratic objective + linear equalities: one KKT solve, implicit backward.
2. ``qp``         quadratic objective + linear inequalities: interior point, KKT backward.
3. ``newton``     smooth objective (+ linear equalities): Newton–KKT with line search.
4. ``prox_grad``  smooth + nonsmooth (L1 / box / simplex): proximal gradient, fixed-point backward.

``closest`` (classes 1–2, ``on_infeasible="closest"``) replaces an infeasible instance by the best
point among those violating its constraints least.

docs/derivations.md derives each backward rule and names the code that implements it.
"""
