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

import jax
import jax.numpy as jnp

__all__ = ["backward_error", "tolerance", "certified"]


def _inf(v):
    return jnp.max(jnp.abs(v), initial=0.0)


def _rows(M):
    """‖M‖∞, the largest row sum of |M| (0 when M is empty)."""
    return jnp.max(jnp.sum(M, axis=1), initial=0.0)


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
    aP, aA, aG = jnp.abs(P), jnp.abs(A), jnp.abs(G)
    ax, ay, az = jnp.abs(x), jnp.abs(y), jnp.abs(z)
    X = jnp.maximum(_inf(x), _x_scale(A, b, G, h))
    s_c = _inf(aP @ ax + jnp.abs(c) + aA.T @ ay + aG.T @ az)
    s_c = jnp.maximum(jnp.maximum(s_c, _rows(aP) * X), tiny)
    s_b = jnp.maximum(jnp.maximum(_inf(aA @ ax + jnp.abs(b)), _rows(aA) * X), tiny)
    s_h = jnp.maximum(jnp.maximum(_inf(aG @ ax + jnp.abs(h)), _rows(aG) * X), tiny)
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
    g_scale = ax @ (aP @ ax) + jnp.abs(c) @ ax + jnp.abs(b) @ ay + jnp.abs(h) @ jnp.abs(za)
    gap = jnp.abs(gap) / jnp.maximum(jnp.maximum(g_scale, X * s_c), tiny)
    finite = jnp.isfinite(beta) & jnp.isfinite(gap)
    return jnp.where(finite, beta, jnp.inf), jnp.where(finite, gap, jnp.inf), active


def certified(beta, gap, tau: float) -> jax.Array:
    """Whether the backward error and the gap are both within τ (a bool scalar)."""
    return (beta <= tau) & (gap <= tau)
