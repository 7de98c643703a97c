"""Independent accuracy checks: what a ``converged`` status certifies for classes 1 and 2.

A solver's stopping test reads the quantities it iterates on — for the interior point, the
residuals of its own Newton systems and the complementarity sᵀz it drives down. That test can
pass far from the solution: near a degenerate bound (sᵢ = zᵢ = 0 at the solution) sᵢzᵢ ≤ 10⁻¹⁰
leaves sᵢ ≈ zᵢ ≈ 10⁻⁵, and x is 10⁻⁵ away from x*. The check here reads only the problem's
data and the returned point with its multipliers, whatever produced them.

**Backward error.** For the QP ``min ½xᵀPx + cᵀx  s.t.  Ax = b, Gx ≤ h`` a point x with
multipliers (y, z) is the *exact* solution of the same problem with perturbed data
(c + Δc, b + Δb, h + Δh) once each inequality is declared active (Δhᵢ = gᵢᵀx − hᵢ, which makes it
hold with equality; needs zᵢ ≥ 0) or inactive (zᵢ is dropped, moving Δc by gᵢzᵢ; Δhᵢ = the
violation (gᵢᵀx − hᵢ)₊, if any)::

    Δc = −(Px + c + Aᵀy + G_𝒜ᵀz_𝒜),   Δb = Ax − b,   Δh as above                           (1)

Each row takes the cheaper declaration (relative to its block's scale). β, the relative
backward error, is the largest of ‖Δc‖∞ / s_c, ‖Δb‖∞ / s_b, ‖Δh‖∞ / s_h, with the scales of the
terms each residual is made of (the magnitudes whose rounding the residual inherits), and at
least the data's own (normwise, as for a linear system's backward error ‖r‖ / (‖M‖‖x‖ + ‖b‖))::

    s_c = max(‖|P||x| + |c| + |A|ᵀ|y| + |G|ᵀ|z|‖∞, ‖P‖∞ X)   s_b = max(‖|A||x| + |b|‖∞, ‖A‖∞ X)
    s_h = max(‖|G||x| + |h|‖∞, ‖G‖∞ X),   X = max(‖x‖∞, |bⱼ| / ‖aⱼ‖₁, |hᵢ| / ‖gᵢ‖₁)

X is the scale of x the constraints set (the least ‖x‖∞ on each row's boundary): without it a
solution at x* = 0 (a projection whose point lies inside its band) leaves every term at
rounding level, and rounding relative to rounding reads as a backward error of 1. The duality
gap of (x, y, z_𝒜), xᵀPx + cᵀx + bᵀy + h_𝒜ᵀz_𝒜 (primal minus dual objective), relative to the
sum of its terms' magnitudes (at least X s_c), is tested too. Complementarity is exact in the
perturbed problem by construction, dual feasibility (z_𝒜 ≥ 0) too.

``converged`` (classes 1–2) certifies: β ≤ τ and the relative gap ≤ τ, with
τ = :func:`tolerance` = max(tol, 10√(n + p + m) ε) — the node's tolerance, never below what
rounding alone leaves in residuals summed over n + p + m terms. So the returned point solves,
exactly, a problem within a relative τ of the node's (in the scale of its own terms). Its
distance to x* is at most the problem's condition number times that (the solution map of a
strictly convex QP is Lipschitz in (c, b, h), also at degenerate points, where the interior
point's own complementarity test gives only √gap).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["backward_error", "equality_check", "tolerance", "certified"]


def _inf(v):
    return jnp.max(jnp.abs(v), initial=0.0)


def _rows(M):
    """‖M‖∞, the largest row sum of |M| (0 when M is empty)."""
    return jnp.max(jnp.sum(jnp.abs(M), axis=1), initial=0.0)


def _abs_matvec(M, v):
    """|M| |v| as a reduction, not a product: ``jnp.abs(M) @ v`` materialises |M| (a whole
    pass over a batch of matrices, written and read again); this XLA fuses into one read of
    M, beside the other reductions of M."""
    return jnp.sum(jnp.abs(M) * jnp.abs(v), axis=1)


def _x_scale(A, b, G, h):
    """The scale of x the constraints set: max |bⱼ| / ‖aⱼ‖₁ and |hᵢ| / ‖gᵢ‖₁ over the rows —
    the least ‖x‖∞ of a point on each row's boundary (0 without constraints)."""

    def ratio(M, v):
        norm = jnp.sum(jnp.abs(M), axis=1)
        return jnp.max(
            jnp.where(norm > 0, jnp.abs(v) / jnp.where(norm > 0, norm, 1.0), 0.0), initial=0.0
        )

    return jnp.maximum(ratio(A, b), ratio(G, h))


def tolerance(tol: float, dtype, terms: int) -> float:
    """τ = max(tol, 10 √k ε): the node's tolerance, floored where rounding alone leaves
    residuals summed over k = n + p + m terms (1.5e-5 in float32 at k = 150, 2.2e-15 in
    float64 at k = 1)."""
    return max(float(tol), 10.0 * max(terms, 1) ** 0.5 * float(jnp.finfo(dtype).eps))


def backward_error(P, c, A, b, G, h, x, y, z):
    """``(β, gap, active)`` of the point x with multipliers (y, z) (module docstring, (1)).

    ``P: [n, n]``, ``c: [n]``, ``A: [p, n]``, ``b: [p]``, ``G: [m, n]``, ``h: [m]``, ``x: [n]``,
    ``y: [p]``, ``z: [m]``. ``β``: the relative backward error; ``gap``: the relative duality
    gap; ``active: [m]``: the rows declared active. No gradient (a status, not a value).
    """
    sg = jax.lax.stop_gradient
    P, c, A, b, G, h, x, y, z = (sg(a) for a in (P, c, A, b, G, h, x, y, z))
    tiny = jnp.finfo(x.dtype).tiny
    aG = jnp.abs(G)
    ax, ay, az = jnp.abs(x), jnp.abs(y), jnp.abs(z)
    X = jnp.maximum(_inf(x), _x_scale(A, b, G, h))
    aPx = _abs_matvec(P, x)
    s_c = _inf(aPx + jnp.abs(c) + _abs_matvec(A.T, y) + _abs_matvec(G.T, z))
    s_c = jnp.maximum(jnp.maximum(s_c, _rows(P) * X), tiny)
    s_b = jnp.maximum(jnp.maximum(_inf(_abs_matvec(A, x) + jnp.abs(b)), _rows(A) * X), tiny)
    s_h = jnp.maximum(jnp.maximum(_inf(_abs_matvec(G, x) + jnp.abs(h)), _rows(G) * X), tiny)
    slack = h - G @ x
    row = jnp.max(aG, axis=1, initial=0.0)  # ‖gᵢ‖∞: how far dropping zᵢ moves Δc
    on = jnp.abs(slack) / s_h
    off = row * az / s_c + jnp.maximum(-slack, 0.0) / s_h
    active = (z > 0) & (on <= off)
    za = jnp.where(active, z, 0.0)
    Px = P @ x
    r_c = Px + c + A.T @ y + G.T @ za
    r_h = jnp.where(active, slack, jnp.minimum(slack, 0.0))
    beta = jnp.maximum(jnp.maximum(_inf(r_c) / s_c, _inf(A @ x - b) / s_b), _inf(r_h) / s_h)
    gap = x @ Px + c @ x + b @ y + h @ za
    g_scale = ax @ aPx + jnp.abs(c) @ ax + jnp.abs(b) @ ay + jnp.abs(h) @ jnp.abs(za)
    gap = jnp.abs(gap) / jnp.maximum(jnp.maximum(g_scale, X * s_c), tiny)
    finite = jnp.isfinite(beta) & jnp.isfinite(gap)
    return jnp.where(finite, beta, jnp.inf), jnp.where(finite, gap, jnp.inf), active


class EqualityCheck(NamedTuple):
    """:func:`equality_check`'s result (scalars): ``beta`` and ``gap`` as
    :func:`backward_error` gives them; ``x_finite``; ``data_finite``: P, c, A and b hold no
    NaN or infinity and no row sum of |P| or |A| overflows (then the scales the check divides
    by are infinite, and nothing could be certified)."""

    beta: jax.Array
    gap: jax.Array
    x_finite: jax.Array
    data_finite: jax.Array


def equality_check(P, c, A, b, x, y) -> EqualityCheck:
    """:func:`backward_error` of a problem with no inequalities (``G`` empty), the same β and
    gap, computed in few passes: the terms are stacked so that one reduction takes every
    maximum and one every sum. For one small instance — a single decision — each reduction is
    a kernel launch that costs more than its arithmetic; for a batch, |P| is read once for
    |P||x| and its row sums together rather than materialised (module docstring, (1)).

    ``P: [n, n]``, ``c: [n]``, ``A: [p, n]``, ``b: [p]``, ``x: [n]``, ``y: [p]``.
    """
    sg = jax.lax.stop_gradient
    P, c, A, b, x, y = (sg(jnp.asarray(a)) for a in (P, c, A, b, x, y))
    n, p = x.shape[0], y.shape[0]
    tiny = jnp.finfo(x.dtype).tiny
    ax, ay, ac, ab = jnp.abs(x), jnp.abs(y), jnp.abs(c), jnp.abs(b)
    # |P||x| and the row sums of |P| in one reduction over P
    aPx, rowsP = jnp.sum(jnp.abs(P)[None] * jnp.stack([ax, jnp.ones_like(ax)])[:, None], axis=2)
    Px = P @ x
    aA = jnp.abs(A)
    r_c = Px + c + A.T @ y
    r_b = A @ x - b
    norm = jnp.sum(aA, axis=1)  # ‖aⱼ‖₁
    ratio = jnp.where(norm > 0, ab / jnp.where(norm > 0, norm, 1.0), 0.0)
    width = max(n, p)

    def pad(v):
        return jnp.pad(v, (0, width - v.shape[0]))

    # every maximum at once (all terms ≥ 0, so padding with 0 changes none)
    top = jnp.max(
        jnp.stack(
            [
                pad(ax),  # 0: ‖x‖∞
                pad(ratio),  # 1: |bⱼ| / ‖aⱼ‖₁
                pad(aPx + ac + aA.T @ ay),  # 2: s_c's terms
                pad(rowsP),  # 3: ‖P‖∞
                pad(aA @ ax + ab),  # 4: s_b's terms
                pad(norm),  # 5: ‖A‖∞
                pad(jnp.abs(r_c)),  # 6: ‖r_c‖∞
                pad(jnp.abs(r_b)),  # 7: ‖Ax − b‖∞
                pad(ac),  # 8: ‖c‖∞
                pad(ab),  # 9: ‖b‖∞
            ]
        ),
        axis=1,
        initial=0.0,
    )
    X = jnp.maximum(top[0], top[1])
    s_c = jnp.maximum(jnp.maximum(top[2], top[3] * X), tiny)
    s_b = jnp.maximum(jnp.maximum(top[4], top[5] * X), tiny)
    beta = jnp.maximum(top[6] / s_c, top[7] / s_b)
    # every sum of the duality gap and its scale at once
    sums = jnp.sum(
        jnp.stack([pad(x * Px + c * x), pad(b * y), pad(ax * aPx + ac * ax), pad(ab * ay)]), axis=1
    )
    gap = jnp.abs(sums[0] + sums[1])
    gap = gap / jnp.maximum(jnp.maximum(sums[2] + sums[3], X * s_c), tiny)
    finite = jnp.isfinite(beta) & jnp.isfinite(gap)
    data_finite = jnp.isfinite(top[3]) & jnp.isfinite(top[5]) & jnp.isfinite(top[8] + top[9])
    return EqualityCheck(
        jnp.where(finite, beta, jnp.inf),
        jnp.where(finite, gap, jnp.inf),
        jnp.isfinite(top[0]),
        data_finite,
    )


def certified(beta, gap, tau: float) -> jax.Array:
    """Whether the backward error and the gap are both within τ (a bool scalar)."""
    return (beta <= tau) & (gap <= tau)
