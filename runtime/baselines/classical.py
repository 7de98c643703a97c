r"""Classical baselines, in the conventions of the examples they are compared with: hedges of a
short call on the paths of ``examples/deep_hedge.ddm``, and portfolios on the windows of
``examples/hedge.ddm``, ``hedge_longonly.ddm`` and ``trading.ddm``. Pure NumPy, deterministic,
batched over a leading axis (paths or days).

Hedging (P&L and risk: :func:`dp_hedge.pnl <ddm.runtime.baselines.dp_hedge.pnl>` and
:func:`dp_hedge.entropic_risk <ddm.runtime.baselines.dp_hedge.entropic_risk>`)
----------------------------------------------------------------------------------------------
The market is a :class:`~ddm.runtime.baselines.dp_hedge.Market` (S₀ = K = 100, σ = 0.2, r = 0,
30 days in N = 30 rebalances, premium 2.2871): paths ``[n, N + 1]`` → hedges ``[n, N]``, held
over (t, t + 1], starting flat, every trade (the first one too) paying c·|Δh|·S_t, no unwind.

- :func:`bs_delta_policy`: the Black–Scholes delta N(d₁) at every date (dp_hedge's).
- :func:`whalley_wilmott`: the Whalley & Wilmott (1997) no-transaction band around the delta,
  the asymptotically optimal policy for small costs under exponential utility:

      h_t = clip(h_{t−1}, δ_t − H_t, δ_t + H_t),   h_{−1} = 0,
      H_t = ( (3/2) · e^{−r·τ_t} · c · S_t · Γ_t² / λ )^{1/3},

  Γ_t = φ(d₁)/(S_t·σ·√τ_t) the Black–Scholes gamma of the option (its sign does not matter),
  τ_t = T − t·dt, c the proportional cost, r = 0 here (the factor is 1), and λ the absolute
  risk aversion of the utility −e^{−λ·w} of terminal wealth w in currency units: the λ of
  the entropic risk ρ(X) = (1/λ)·log E[e^{−λX}] that the examples and :mod:`dp_hedge` score
  (``Market.risk_aversion``, 1). The same band as ``pfhedge.nn.WhalleyWilmott`` (Imaki et
  al. 2021), w = (3cΓ²S/(2a))^{1/3} with a = λ. H scales as c^{1/3}: the band closes onto the
  delta as the cost vanishes.

Portfolios (one day: a window R ``[W, N]`` of past returns; batched: ``[..., W, N]``)
--------------------------------------------------------------------------------------
- :func:`equal_weight`: 1/N each (the examples' ``pnl_equal = mean(r_next)``).
- :func:`covariance`: the examples' Σ = cov(R, shrink=δ) + ε·I, with the library's ``cov``:
  the sample covariance S (ddof = 1) shrunk towards (tr S / N)·I, (1 − δ)·S + δ·(tr S / N)·I.
- :func:`minimum_variance`: argmin_v vᵀΣv subject to Σᵢ vᵢ = 1 and, optionally, v ≥ 0 and
  v ≤ cap (the examples' ``w_mv``). Budget only: the closed form Σ⁻¹1 / 1ᵀΣ⁻¹1. With bounds:
  an exact primal active-set method (Nocedal & Wright, Algorithm 16.3) from equal weight;
  each step solves the KKT system of the free assets, so the answer is the QP's optimum up to
  rounding, with its active bounds exact.
- :func:`volatility_target`: a base portfolio (equal weight unless given) scaled by
  k = min(target / σ̂, cap / Σᵢ|wᵢ|), σ̂ = √(periods · wᵀ S w) its annualised volatility over
  the window, the rest in cash (return 0, as in the examples' P&L ``dot(w, r_next)``).

A day's P&L is then ``np.sum(w * r_next, axis=-1)``, as the examples' ``dot(w, r_next)``.

>>> from ddm.runtime.baselines import dp_hedge as dp
>>> m = dp.Market(sigma=0.2, cost=0.01)
>>> paths = dp.sample_paths(4000, seed=0)
>>> rho = {name: dp.entropic_risk(dp.pnl(paths, policy(paths, m), m.cost, 100.0, m.premium))[0]
...        for name, policy in (("delta", bs_delta_policy), ("ww", whalley_wilmott))}
>>> bool(rho["ww"] < rho["delta"])   # at a 1 % cost the band beats the delta hedge
True
"""

from __future__ import annotations

import math

import numpy as np

from ddm.runtime.baselines import dp_hedge as dp

# --- hedging ---------------------------------------------------------------------------------


def _check_paths(paths, market: dp.Market) -> np.ndarray:
    s = np.asarray(paths, np.float64)
    if s.ndim != 2 or s.shape[1] != market.steps + 1:
        raise ValueError(
            f"paths must be [n, steps + 1] = [n, {market.steps + 1}] for this market, "
            f"got shape {s.shape}"
        )
    return s


def bs_gamma(S, t, sigma: float, strike: float = 100.0, days: int = 30, steps: int = 30):
    """The Black–Scholes call gamma φ(d₁)/(S·σ·√τ) at date t, τ = T − t·dt (r = 0), the
    companion of :func:`dp_hedge.bs_delta <ddm.runtime.baselines.dp_hedge.bs_delta>`.

    >>> round(float(bs_gamma(100.0, 0, 0.2)), 4)   # at the money, 30 days
    0.0695
    """
    tau = (days / 365) * (1 - t / steps)
    s = np.asarray(S, np.float64)
    vol = sigma * math.sqrt(tau)
    d1 = (np.log(s / strike) + 0.5 * sigma**2 * tau) / vol
    return np.exp(-0.5 * d1**2) / math.sqrt(2 * math.pi) / (s * vol)


def bs_delta_policy(paths, market: dp.Market) -> np.ndarray:
    """The Black–Scholes delta hedge: paths ``[n, N + 1]`` → hedges ``[n, N]``, h_t = N(d₁(S_t,
    τ_t)) (deep_hedge.ddm's ``delta``; dp_hedge's :func:`delta_hedges
    <ddm.runtime.baselines.dp_hedge.delta_hedges>`).

    >>> float(bs_delta_policy([[100.0, 100.0]], dp.Market(0.2, 0.0, steps=1))[0, 0]) > 0.5
    True
    """
    s = _check_paths(paths, market)
    return dp.delta_hedges(s, market.sigma, market.strike, market.days)


def whalley_wilmott_band(
    paths, market: dp.Market, cost: float | None = None, risk_aversion: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(δ, H), each ``[n, N]``: the Black–Scholes delta and the Whalley–Wilmott half-width
    H = ((3/2)·c·S·Γ²/λ)^{1/3} (r = 0; module docstring) at every path and date. ``cost`` and
    ``risk_aversion`` default to the market's.

    >>> m = dp.Market(0.2, 0.01)
    >>> delta, half = whalley_wilmott_band([[100.0] * 31], m)
    >>> round(float(half[0, 0]), 3)   # ±0.19 around the delta at the money, 30 days out
    0.194
    """
    s = _check_paths(paths, market)
    c = market.cost if cost is None else float(cost)
    lam = market.risk_aversion if risk_aversion is None else float(risk_aversion)
    if c < 0 or lam <= 0:
        raise ValueError(f"need cost >= 0 and risk_aversion > 0, got {c}, {lam}")
    delta = bs_delta_policy(s, market)
    steps = market.steps
    gamma = np.stack(
        [
            bs_gamma(s[:, t], t, market.sigma, market.strike, market.days, steps)
            for t in range(steps)
        ],
        axis=1,
    )
    half = np.cbrt(1.5 * c * s[:, :-1] * gamma**2 / lam)
    return delta, half


def whalley_wilmott(
    paths, market: dp.Market, cost: float | None = None, risk_aversion: float | None = None
) -> np.ndarray:
    """The Whalley–Wilmott hedge: paths ``[n, N + 1]`` → hedges ``[n, N]``, the previous hedge
    clipped into the band, h_t = clip(h_{t−1}, δ_t − H_t, δ_t + H_t) from h_{−1} = 0 (so the
    first trade buys up to the band's lower end). ``cost`` sets the band (default: the
    market's; the P&L charges whatever cost it is given), ``risk_aversion`` its λ (default:
    the market's). At cost 0 it is the delta hedge.

    >>> m = dp.Market(0.2, 0.0)
    >>> paths = dp.sample_paths(3, seed=0)
    >>> bool(np.array_equal(whalley_wilmott(paths, m), bs_delta_policy(paths, m)))
    True
    """
    delta, half = whalley_wilmott_band(paths, market, cost, risk_aversion)
    out = np.empty_like(delta)
    h = np.zeros(delta.shape[0])
    for t in range(delta.shape[1]):
        h = out[:, t] = np.clip(h, delta[:, t] - half[:, t], delta[:, t] + half[:, t])
    return out


# --- portfolios ------------------------------------------------------------------------------


def equal_weight(n: int) -> np.ndarray:
    """1/N in each of ``n`` assets: ``[n]``.

    >>> equal_weight(4).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    if n < 1:
        raise ValueError(f"need at least one asset, got {n}")
    return np.full(n, 1.0 / n)


def covariance(R, shrink: float = 0.1, ridge: float = 1e-6) -> np.ndarray:
    """The examples' Σ = cov(R, shrink) + ridge·I for windows R ``[..., W, N]`` → ``[..., N, N]``:
    the library's ``cov``, S = sample covariance (ddof = 1), (1 − shrink)·S + shrink·(tr S/N)·I.

    >>> R = np.array([[0.01, 0.0], [-0.01, 0.02], [0.0, 0.01]])
    >>> covariance(R, shrink=0.0, ridge=0.0).round(6).tolist()
    [[0.0001, -0.0001], [-0.0001, 0.0001]]
    """
    r = np.asarray(R, np.float64)
    if r.ndim < 2 or r.shape[-2] < 2:
        raise ValueError(f"need windows [..., W, N] with W >= 2, got shape {r.shape}")
    if not 0.0 <= shrink <= 1.0:
        raise ValueError(f"shrink must be in [0, 1], got {shrink}")
    w, n = r.shape[-2:]
    centred = r - r.mean(axis=-2, keepdims=True)
    s = np.einsum("...ti,...tj->...ij", centred, centred) / (w - 1)
    level = np.trace(s, axis1=-2, axis2=-1)[..., None, None] / n
    eye = np.eye(n)
    return (1 - shrink) * s + shrink * level * eye + ridge * eye


def _box_min_variance(sigma: np.ndarray, lower: float, upper: float, tol: float = 1e-12):
    """argmin vᵀΣv s.t. Σ v = 1, lower ≤ v ≤ upper (either may be infinite) for one Σ, by the
    primal active-set method (Nocedal & Wright 2006, Algorithm 16.3). The start, equal weight,
    is feasible whenever the problem is (the caller checks N·upper ≥ 1 ≥ N·lower). ``state``
    holds each asset's working constraint: −1 at its lower bound, +1 at its upper, 0 free."""
    n = sigma.shape[0]
    v = np.full(n, 1.0 / n)
    state = np.zeros(n, np.int8)
    scale = float(np.max(np.abs(np.diag(sigma))))
    for _ in range(50 * n + 50):  # each working set is visited at most once without degeneracy
        free = np.flatnonzero(state == 0)
        g = sigma @ v  # half the objective's gradient
        if free.size:
            # the step p on the free assets: min (v+p)ᵀΣ(v+p) s.t. Σ p = 0, fixed ones stay.
            # KKT [Σ_FF 1; 1ᵀ 0] [p_F; μ] = [−g_F; 0]; μ is the budget's multiplier at v + p.
            k = np.zeros((free.size + 1, free.size + 1))
            k[:-1, :-1] = sigma[np.ix_(free, free)]
            k[:-1, -1] = k[-1, :-1] = 1.0
            sol = np.linalg.solve(k, np.concatenate([-g[free], [0.0]]))
            p = np.zeros(n)
            p[free] = sol[:-1]
            mu = sol[-1]
        else:  # every asset at a bound: v is a vertex; take the μ that favours keeping it
            p = np.zeros(n)
            at_lower, at_upper = -g[state == -1], -g[state == 1]
            mu = at_lower.max() if at_lower.size else at_upper.min()
        if np.max(np.abs(p)) <= tol * 1e3:
            # stationarity Σv + μ·1 = Σ_lower ν_i e_i − Σ_upper ν_i e_i with ν ≥ 0 at the optimum
            grad = g + mu
            nu = np.where(state == -1, grad, np.where(state == 1, -grad, np.inf))
            j = int(np.argmin(nu))
            if nu[j] >= -tol * scale:
                return v
            state[j] = 0  # release the bound whose multiplier has the wrong sign
            continue
        # the longest step along p that keeps every free asset inside its bounds
        alpha, block, side = 1.0, -1, 0
        for i in free:
            if p[i] < 0 and np.isfinite(lower) and (lower - v[i]) / p[i] < alpha:
                alpha, block, side = (lower - v[i]) / p[i], i, -1
            elif p[i] > 0 and np.isfinite(upper) and (upper - v[i]) / p[i] < alpha:
                alpha, block, side = (upper - v[i]) / p[i], i, 1
        v = v + alpha * p
        if block >= 0:
            v[block] = lower if side == -1 else upper
            state[block] = side
    raise RuntimeError("minimum_variance: the active-set method did not terminate (degenerate)")


def minimum_variance(
    R,
    long_only: bool = False,
    cap: float | None = None,
    shrink: float = 0.1,
    ridge: float = 1e-6,
) -> np.ndarray:
    """The minimum-variance portfolio of each window R ``[..., W, N]`` → ``[..., N]``:
    argmin_v vᵀΣv subject to Σᵢ vᵢ = 1, vᵢ ≥ 0 if ``long_only``, vᵢ ≤ ``cap`` if given, with Σ
    the examples' :func:`covariance` (cov(R, shrink=0.1) + 1e-6·I). Budget only: Σ⁻¹1/1ᵀΣ⁻¹1;
    with bounds: the exact active-set QP (module docstring). hedge.ddm's ``w_mv`` is
    ``minimum_variance(R)``, hedge_longonly.ddm's ``minimum_variance(R, long_only=True,
    cap=0.2)``.

    >>> R = np.random.default_rng(0).normal(0.0, 0.01, (60, 5)) * [1, 1, 1, 1, 3]
    >>> w = minimum_variance(R, long_only=True, cap=0.3)
    >>> round(float(w.sum()), 12), bool(w.min() >= 0 and w.max() <= 0.3)
    (1.0, True)
    """
    sigma = covariance(R, shrink, ridge)
    n = sigma.shape[-1]
    if not long_only and cap is None:
        ones = np.ones(sigma.shape[:-1] + (1,))
        x = np.linalg.solve(sigma, ones)[..., 0]  # Σ⁻¹1
        return x / x.sum(axis=-1, keepdims=True)
    lower = 0.0 if long_only else -np.inf
    upper = np.inf if cap is None else float(cap)
    if n * upper < 1.0 - 1e-12:
        raise ValueError(f"infeasible: {n} assets capped at {cap} cannot sum to 1")
    flat = sigma.reshape(-1, n, n)
    out = np.stack([_box_min_variance(s, lower, upper) for s in flat])
    return out.reshape(sigma.shape[:-1])


def volatility_target(
    R,
    target: float = 0.10,
    periods: int = 252,
    weights=None,
    cap: float = 1.0,
    shrink: float = 0.0,
) -> np.ndarray:
    """A base portfolio scaled to an annualised volatility ``target`` estimated from the window:
    R ``[..., W, N]`` → ``[..., N]``, k·w with

        σ̂ = √(periods · wᵀ S w),   k = min(target / σ̂, cap / Σᵢ|wᵢ|),

    S = :func:`covariance` (R, shrink, ridge 0); with the default shrink 0, σ̂ is the sample
    standard deviation (ddof = 1) of the base portfolio's returns over the window, annualised.
    ``weights`` (``[N]`` or ``[..., N]``): the base portfolio, equal weight by default. ``cap``
    bounds the gross exposure Σᵢ|k·wᵢ| (1: never borrow); the remaining 1 − Σᵢ k·wᵢ is cash,
    which earns 0.

    >>> R = np.random.default_rng(0).normal(0.0, 0.02, (60, 4))   # ≈ 16 % a year, equal weight
    >>> w = volatility_target(R, target=0.10)
    >>> vol = np.std(R @ w, ddof=1) * np.sqrt(252)
    >>> round(float(vol), 10)
    0.1
    """
    r = np.asarray(R, np.float64)
    if target <= 0 or periods < 1 or cap <= 0:
        raise ValueError(f"need target > 0, periods >= 1, cap > 0, got {target}, {periods}, {cap}")
    n = r.shape[-1]
    w = equal_weight(n) if weights is None else np.asarray(weights, np.float64)
    w = np.broadcast_to(w, r.shape[:-2] + (n,))
    sigma = covariance(r, shrink, ridge=0.0)
    vol = np.sqrt(periods * np.einsum("...i,...ij,...j->...", w, sigma, w))
    gross = np.sum(np.abs(w), axis=-1)
    with np.errstate(divide="ignore"):  # a window without variation: the cap decides
        k = np.minimum(target / vol, cap / gross)
    return k[..., None] * w
