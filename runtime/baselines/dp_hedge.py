r"""The exact optimum of hedging a short call under proportional costs and the entropic risk,
by dynamic programming over (date, price, previous hedge): the reference no learned policy can
beat, in the market and P&L convention of ``examples/deep_hedge.ddm``.

Market and P&L (``gbm_paths`` and the library's ``hedge_pnl``, ``entropic_risk``)
---------------------------------------------------------------------------------
Prices follow GBM with exact log-normal steps, S_{t+1} = S_t·e^{Z_t}, Z_t ~ N((μ − σ²/2)·dt,
σ²·dt) i.i.d., dt = (days/365)/N, t = 0 … N. The hedger sells the call for ``premium`` and holds
h_t over (t, t + 1], starting flat (h_{−1} = 0, so the first trade is charged), with no final
unwind::

    X = p − (S_N − K)⁺ + Σ_{t<N} h_t·(S_{t+1} − S_t) − c·Σ_{t<N} |h_t − h_{t−1}|·S_t

and its entropic risk with risk aversion λ is ρ(X) = (1/λ)·log E[exp(−λX)] (a loss measure:
lower is better; for λ = 1 exactly ``entropic_risk(pnl)``).

The recursion
-------------
exp(−λX) = e^{−λp} · e^{λ(S_N − K)⁺} · Π_{t<N} exp(−λ·h_t·(S_{t+1} − S_t) + λ·c·|h_t − h_{t−1}|·S_t)
is a product of positive factors, one per date, each depending only on (S_t, S_{t+1}, h_{t−1},
h_t). Initial wealth w would only multiply it by e^{−λw} (CARA): wealth is not a state, and the
state at date t is (S_t, h_{t−1}). With J_N(S) = e^{λ(S − K)⁺} and

    J_t(S, g) = min_h e^{λ·c·|h − g|·S} · E[e^{−λ·h·(S_{t+1} − S)}·J_{t+1}(S_{t+1}, h) | S_t = S],

min over policies of E[e^{−λX}] = e^{−λp}·J_0(S_0, 0) (the factors are positive, so the min over
later decisions passes through the earlier factors and the conditional expectation), hence

    ρ* = (1/λ)·log J_0(S_0, 0) − p.

It is computed in logs, V = log J, so that e^{λ·payoff} cannot overflow::

    W_t(S, h) = log E[ exp(−λ·h·S·(e^Z − 1) + V_{t+1}(S·e^Z, h)) ]        (V_N = λ·(S − K)⁺)
    V_t(S, g) = min_h  λ·c·S·|h − g| + W_t(S, h).

The cost term does not involve the expectation, so W_t is computed once per (S, h) and the min
over h is an L1 inf-convolution, exact on the hedge grid in O(n_hedge) per price (a forward
and a backward cumulative minimum). W_t(S, ·) is convex (log-sum-exp of convex functions;
V_{t+1}(S', ·) is convex as a partial minimum of a jointly convex function), so the optimal
policy is a no-trade band: h_t = clip(h_{t−1}, lo_t(S), hi_t(S)) with lo = argmin_h W + a·h,
hi = argmin_h W − a·h, a = λ·c·S (buy up to lo, sell down to hi, else keep). The solution stores
these bands; ``DPSolution.band_gap`` is the largest difference between the band's value and the
exact grid minimum over all dates (0 up to rounding: the interpolation below has negative
weights, so convexity on the grid is checked, not assumed).

Discretisation (``Grid``)
-------------------------
- log-price: a uniform grid of ``n_price`` points (odd, S_0 the centre node) on
  log S_0 ± ``width``·σ√T. Because the grid is uniform and the increment Z does not depend on
  S, S·e^{z_q} falls at the same fractional offset for every node, so V_{t+1}(S·e^{z_q}, h) is a
  weighted sum of shifted rows: **cubic (4-point Lagrange) interpolation in log S**, error
  O(Δx⁴) (``cubic=False``: linear, O(Δx²) and biased upwards where V is convex in log S — about
  +0.01 on ρ* at 301 prices), linear extrapolation beyond the grid (reached with probability
  ~e^{−width²/2}).
- expectation: Gauss–Hermite quadrature (probabilists', ``n_quad`` nodes) over Z; at the last
  step the payoff is evaluated exactly at S·e^z and integrated by Gauss–Legendre (``n_quad``
  nodes) on each side of its kink z = log(K/S), over the mean ± 10 sd.
- hedge: ``n_hedge`` points on [``hedge_min``, ``hedge_max``] (default [0, 1]: a short call's
  hedge; widening it is a convergence check); the minimum over h is exact on that grid.

The simulated policy interpolates the band ends linearly in log S (clamped beyond the grid) and
clips the previous hedge into the band.

>>> sol = solve(sigma=0.2, cost=0.0, grid=Grid(n_price=101, n_hedge=51, n_quad=20))
>>> bool(0.0 < sol.risk < 0.1)   # discrete hedging leaves a small residual risk
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

#: examples/deep_hedge.ddm's market: S0 = K = 100, 30 days in 30 rebalances, the call sold for
#: its Black–Scholes price at σ = 0.2
DEEP_HEDGE_PREMIUM = 2.2871


@dataclass(frozen=True)
class Market:
    """One-asset GBM market and the hedged short call (see the module docstring)."""

    sigma: float
    cost: float
    steps: int = 30
    days: int = 30
    s0: float = 100.0
    strike: float = 100.0
    premium: float = DEEP_HEDGE_PREMIUM
    risk_aversion: float = 1.0
    mu: float = 0.0

    @property
    def maturity(self) -> float:
        return self.days / 365

    @property
    def dt(self) -> float:
        return self.maturity / self.steps

    def __post_init__(self):
        if not (self.sigma > 0 and self.cost >= 0 and self.risk_aversion > 0):
            raise ValueError(
                "need sigma > 0, cost >= 0 and risk_aversion > 0, got "
                f"sigma={self.sigma}, cost={self.cost}, risk_aversion={self.risk_aversion}"
            )
        if self.steps < 1 or self.days < 1:
            raise ValueError(f"need steps, days >= 1, got {self.steps}, {self.days}")


@dataclass(frozen=True)
class Grid:
    """Discretisation of the DP: price, hedge and quadrature sizes (module docstring)."""

    n_price: int = 301  # odd: S0 is the centre node
    n_hedge: int = 201
    width: float = 6.0  # half-width of the log-price grid in σ√T
    n_quad: int = 40
    cubic: bool = True  # interpolation in log S: 4-point Lagrange, else linear
    hedge_min: float = 0.0
    hedge_max: float = 1.0

    def __post_init__(self):
        if self.n_price < 5 or self.n_price % 2 == 0:
            raise ValueError(f"n_price must be odd and >= 5, got {self.n_price}")
        if self.n_hedge < 2 or self.n_quad < 2 or not self.hedge_max > self.hedge_min:
            raise ValueError(f"degenerate grid: {self}")


@dataclass(frozen=True, eq=False)
class DPSolution:
    """The DP's optimum and its policy.

    ``risk``: ρ*, the optimal entropic risk net of the premium. ``log_prices: [P]`` and
    ``hedge_grid: [H]`` are the grids; ``lower, upper: [N, P]`` the no-trade band at each date
    and price; ``value: [P, H]`` is V_0 = log J_0 on them (λ·(ρ* + p) = V_0(S_0, g = 0));
    ``band_gap`` the largest |band value − exact grid minimum| over dates (a check).
    """

    market: Market
    grid: Grid
    risk: float
    log_prices: np.ndarray
    hedge_grid: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    value: np.ndarray = field(repr=False)
    band_gap: float


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.sum(np.exp(a - top), axis=axis))


def _quadrature(m: Market, n: int):
    """Log-increments z_q of one step and their log-weights (probabilists' Gauss–Hermite)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(n)
    z = (m.mu - 0.5 * m.sigma**2) * m.dt + m.sigma * math.sqrt(m.dt) * nodes
    return z, np.log(weights / math.sqrt(2 * math.pi))


def _density(m: Market, z: np.ndarray) -> np.ndarray:
    """The density of one step's log-increment Z at z."""
    sd = m.sigma * math.sqrt(m.dt)
    u = (z - (m.mu - 0.5 * m.sigma**2) * m.dt) / sd
    return np.exp(-0.5 * u**2) / (sd * math.sqrt(2 * math.pi))


def _split_at_kink(m: Market, s: np.ndarray, n: int):
    """Nodes z [P, 2n] and log-weights for E[f(Z)] when f has a kink at z* = log(K/S) (the
    payoff at the last step): Gauss–Legendre on each side of z*, over the mean ± 10 sd."""
    sd = m.sigma * math.sqrt(m.dt)
    mean = (m.mu - 0.5 * m.sigma**2) * m.dt
    a, b = mean - 10 * sd, mean + 10 * sd
    kink = np.clip(np.log(m.strike / s), a, b)[:, None]  # [P, 1]
    u, w = np.polynomial.legendre.leggauss(n)
    zs, ws = [], []
    for lo, hi in ((a, kink), (kink, b)):
        half = (hi - lo) / 2
        z = lo + half * (u[None, :] + 1)
        zs.append(z)
        ws.append(half * w[None, :] * _density(m, z))
    z = np.concatenate(zs, axis=1)
    with np.errstate(divide="ignore"):  # a side of zero length: weight 0, log −inf
        return z, np.log(np.concatenate(ws, axis=1))


def _uniform(m: Market, n: int):
    """n equally spaced nodes over the mean ± 10 sd of Z and their log-weights (trapezoid on
    the density): second order even where the integrand has kinks at unknown places."""
    sd = m.sigma * math.sqrt(m.dt)
    z = (m.mu - 0.5 * m.sigma**2) * m.dt + sd * np.linspace(-10.0, 10.0, n)
    w = _density(m, z) * (z[1] - z[0])
    w[[0, -1]] *= 0.5
    return z, np.log(w)


def _log_price_grid(m: Market, g: Grid) -> np.ndarray:
    half = g.width * m.sigma * math.sqrt(m.maturity)
    offsets = half * np.linspace(-1.0, 1.0, g.n_price)
    offsets[g.n_price // 2] = 0.0  # S0 exactly on the centre node
    return math.log(m.s0) + offsets


class _Shift:
    """V(x_i + z_q) for every grid node x_i and node z_q, interpolated in x: on a uniform grid
    the fractional offset f of x_i + z_q is the same for every i, so this is a weighted sum of
    shifted copies of the padded array (rows linearly extrapolated beyond the grid). ``cubic``:
    4-point Lagrange (nodes −1, 0, 1, 2 around the offset; error O(Δx⁴)); else linear (O(Δx²),
    biased upwards where V is convex in log S)."""

    def __init__(self, dx: float, z: np.ndarray, n: int, cubic: bool):
        shift = z / dx
        k = np.floor(shift).astype(int)
        f = shift - k
        if cubic:
            self.offsets = (-1, 0, 1, 2)
            self.weights = (
                -f * (f - 1) * (f - 2) / 6,
                (f + 1) * (f - 1) * (f - 2) / 2,
                -(f + 1) * f * (f - 2) / 2,
                (f + 1) * f * (f - 1) / 6,
            )
        else:
            self.offsets, self.weights = (0, 1), (1 - f, f)
        self.pad = int(np.max(np.abs(k))) + 3
        self.rows = np.arange(n)[:, None] + k[None, :] + self.pad  # [P, Q]

    def padded(self, v: np.ndarray) -> np.ndarray:
        """v: [P, ...] with ``pad`` linearly extrapolated rows on each side."""
        p = self.pad
        steps = np.arange(1, p + 1).reshape((p,) + (1,) * (v.ndim - 1))
        below = v[0] - steps[::-1] * (v[1] - v[0])
        above = v[-1] + steps * (v[-1] - v[-2])
        return np.concatenate([below, v, above])

    def __call__(self, padded: np.ndarray, rows: slice = slice(None)) -> np.ndarray:
        """The interpolated values at x_i + z_q for the grid rows i in ``rows``:
        [P + 2·pad, ...] (from :meth:`padded`) → [len(rows), Q, ...]."""
        at = self.rows[rows]
        tail = (1,) * (padded.ndim - 1)
        out = np.zeros(at.shape + padded.shape[1:])
        for o, w in zip(self.offsets, self.weights):
            out += w.reshape(w.shape + tail) * padded[at + o]
        return out


_BLOCK = 2_000_000  # values per block of the DP's [prices, nodes, hedges] arrays


def _trade(w: np.ndarray, a: np.ndarray, h: np.ndarray):
    """V[i, k] = min_j a_i·|h_j − h_k| + w[i, j], exactly on the grid, and the band.

    Buying from h_k to h_j ≥ h_k: min_{j ≥ k}(w_j + a·h_j) − a·h_k (a reverse cumulative min);
    selling to h_j ≤ h_k: min_{j ≤ k}(w_j − a·h_j) + a·h_k (a cumulative min)."""
    ah = a[:, None] * h[None, :]
    buy, sell = w + ah, w - ah
    up = np.minimum.accumulate(buy[:, ::-1], axis=1)[:, ::-1] - ah
    down = np.minimum.accumulate(sell, axis=1) + ah
    v = np.minimum(up, down)
    lo, hi = np.argmin(buy, axis=1), np.argmin(sell, axis=1)  # lo ≤ hi always (a ≥ 0)
    kept = np.clip(np.arange(h.size)[None, :], lo[:, None], hi[:, None])
    band = np.take_along_axis(w, kept, axis=1) + a[:, None] * np.abs(h[kept] - h[None, :])
    return v, lo, hi, float(np.max(np.abs(band - v)))


def solve(
    sigma: float,
    cost: float,
    steps: int = 30,
    days: int = 30,
    s0: float = 100.0,
    strike: float = 100.0,
    premium: float = DEEP_HEDGE_PREMIUM,
    risk_aversion: float = 1.0,
    grid: Grid = Grid(),
    mu: float = 0.0,
) -> DPSolution:
    """Backward induction of the module docstring's recursion; defaults: deep_hedge.ddm's
    market. One date at a time, in blocks of price rows of about 2·10⁶ values (the
    [rows, nodes, hedges] arrays), so the memory is bounded for any grid."""
    m = Market(sigma, cost, steps, days, s0, strike, premium, risk_aversion, mu)
    lam = m.risk_aversion
    x = _log_price_grid(m, grid)
    s = np.exp(x)
    h = np.linspace(grid.hedge_min, grid.hedge_max, grid.n_hedge)
    z, log_w = _quadrature(m, grid.n_quad)
    shift = _Shift(x[1] - x[0], z, x.size, grid.cubic)
    nxt = s[:, None] * np.exp(z)[None, :]  # [P, Q] the next prices
    a = lam * m.cost * s
    lower = np.empty((m.steps, x.size))
    upper = np.empty((m.steps, x.size))
    gap = 0.0
    v = w = np.empty((x.size, h.size))
    # the last step: the payoff is evaluated exactly, integrated on each side of its kink
    z_end, log_w_end = _split_at_kink(m, s, grid.n_quad)
    end = s[:, None] * np.exp(z_end)
    # price rows per block, so that a block's [rows, Q, H] arrays stay near _BLOCK values
    block = max(1, _BLOCK // (max(z.size, z_end.shape[1]) * h.size))
    for t in reversed(range(m.steps)):
        padded = shift.padded(v) if t < m.steps - 1 else v
        w = np.empty((x.size, h.size))
        for i in range(0, x.size, block):
            rows = slice(i, i + block)
            if t == m.steps - 1:
                exponent = (
                    log_w_end[rows, :, None]
                    - lam * (end[rows] - s[rows, None])[:, :, None] * h
                    + (lam * np.maximum(end[rows] - m.strike, 0.0))[:, :, None]
                )
            else:
                gains = -lam * (nxt[rows] - s[rows, None])[:, :, None] * h  # −λ·h·ΔS
                exponent = log_w[:, None] + gains + shift(padded, rows)
            w[rows] = _logsumexp(exponent, axis=1)  # W_t [rows, H]
        v, lo, hi, g = _trade(w, a, h)
        lower[t], upper[t] = h[lo], h[hi]
        gap = max(gap, g)
    centre = x.size // 2
    v00 = float(np.min(w[centre] + a[centre] * np.abs(h)))  # V_0(S0, g = 0), g off the grid too
    return DPSolution(m, grid, v00 / lam - m.premium, x, h, lower, upper, v, gap)


def policy(solution: DPSolution, t: int, S, h_prev):
    """The DP's hedge at date t (0 ≤ t < N) for prices S and previous hedges h_prev (arrays
    of one shape): h_prev clipped into the band, its ends interpolated linearly in log S."""
    x = np.log(np.asarray(S, np.float64))
    lo = np.interp(x, solution.log_prices, solution.lower[t])
    hi = np.interp(x, solution.log_prices, solution.upper[t])
    return np.clip(np.asarray(h_prev, np.float64), lo, hi)


def hedges(solution: DPSolution, paths) -> np.ndarray:
    """The DP policy along each path: paths [n, N + 1] → hedges [n, N], from a flat start."""
    paths = np.asarray(paths, np.float64)
    out = np.empty((paths.shape[0], solution.market.steps))
    h = np.zeros(paths.shape[0])
    for t in range(solution.market.steps):
        h = out[:, t] = policy(solution, t, paths[:, t], h)
    return out


def pnl(paths, positions, cost: float, strike: float, premium: float) -> np.ndarray:
    """The library's ``hedge_pnl`` for a short call, per path, in float64: paths [n, N + 1],
    positions [n, N] → [n] = premium − (S_N − K)⁺ + Σ h·ΔS − cost·Σ |Δh|·S_t (flat start)."""
    s = np.asarray(paths, np.float64)
    h = np.asarray(positions, np.float64)
    trades = np.diff(h, axis=1, prepend=0.0)
    gains = np.sum(h * np.diff(s, axis=1), axis=1)
    costs = cost * np.sum(np.abs(trades) * s[:, :-1], axis=1)
    return premium - np.maximum(s[:, -1] - strike, 0.0) + gains - costs


def simulate(solution: DPSolution, paths, cost: float | None = None) -> np.ndarray:
    """P&L per path [n] of the DP policy on ``paths`` [n, N + 1], at the solution's cost unless
    ``cost`` is given."""
    m = solution.market
    c = m.cost if cost is None else cost
    return pnl(paths, hedges(solution, paths), c, m.strike, m.premium)


def entropic_risk(pnl_values, risk_aversion: float = 1.0) -> tuple[float, float]:
    """(ρ̂, its standard error): ρ̂ = (1/λ)·log mean(exp(−λ·X)), as the library's
    ``entropic_risk``, and by the delta method se = sd(Y)/(√n·mean(Y))/λ with Y = exp(−λX)
    (computed as the sd of Y/mean(Y), so nothing overflows)."""
    x = -risk_aversion * np.asarray(pnl_values, np.float64)
    log_mean = _logsumexp(x, axis=0) - math.log(x.size)
    ratio = np.exp(x - log_mean)
    se = float(np.std(ratio, ddof=1)) / math.sqrt(x.size) / risk_aversion
    return float(log_mean) / risk_aversion, se


def sample_paths(
    n: int,
    seed: int,
    sigma: float = 0.2,
    days: int = 30,
    steps: int = 30,
    s0: float = 100.0,
    mu: float = 0.0,
) -> np.ndarray:
    """GBM paths [n, steps + 1] in float64, exact log-normal steps as ``gbm_paths`` (NumPy's
    generator: independent of the program's JAX-keyed paths)."""
    dt = days / 365 / steps
    z = np.random.default_rng(seed).standard_normal((n, steps))
    logs = np.cumsum((mu - 0.5 * sigma**2) * dt + sigma * math.sqrt(dt) * z, axis=1)
    return s0 * np.exp(np.concatenate([np.zeros((n, 1)), logs], axis=1))


def bs_delta(S, t, sigma: float, strike: float = 100.0, days: int = 30, steps: int = 30):
    """The Black–Scholes call delta N(d1) at date t (time to maturity T − t·dt), as
    deep_hedge.ddm's ``delta`` (r = 0)."""
    tau = (days / 365) * (1 - t / steps)
    d1 = (np.log(np.asarray(S, np.float64) / strike) + 0.5 * sigma**2 * tau) / (
        sigma * math.sqrt(tau)
    )
    from scipy.special import ndtr

    return ndtr(d1)


def delta_hedges(paths, sigma: float, strike: float = 100.0, days: int = 30) -> np.ndarray:
    """Black–Scholes delta along each path: paths [n, N + 1] → [n, N]."""
    s = np.asarray(paths, np.float64)
    steps = s.shape[1] - 1
    return np.stack(
        [bs_delta(s[:, t], t, sigma, strike, days, steps) for t in range(steps)], axis=1
    )


def evaluate(
    hedge: Callable[[int, np.ndarray], np.ndarray],
    market: Market,
    grid: Grid = Grid(),
    n_nodes: int = 1001,
) -> float:
    """The entropic risk (net of the premium) of a policy h_t = hedge(t, S_t) that depends on
    the price only (e.g. :func:`bs_delta`), on the DP's grid and quadrature, with no Monte
    Carlo. As the previous hedge is then a function of the previous price, the trade's cost
    moves inside the expectation:

        G_t(S) = log E[exp(−λ·h_t(S)·S·(e^Z − 1) + λ·c·|h_{t+1}(S') − h_t(S)|·S' + G_{t+1}(S'))]

    with S' = S·e^Z, the cost term absent and G_{t+1} = λ·(S' − K)⁺ at t = N − 1, and
    ρ = (λ·c·|h_0(S_0)|·S_0 + G_0(S_0))/λ − p. The grid's prices and interpolation are used;
    the expectation is a trapezoid rule on ``n_nodes`` equally spaced values of Z, as the cost
    has a kink in S' where the policy's new hedge crosses the old one (Gauss–Hermite
    converges slowly there)."""
    m, lam = market, market.risk_aversion
    x = _log_price_grid(m, grid)
    s = np.exp(x)
    z, log_w = _uniform(m, n_nodes)
    shift = _Shift(x[1] - x[0], z, x.size, grid.cubic)
    nxt = s[:, None] * np.exp(z)[None, :]
    g = np.empty(x.size)
    for t in reversed(range(m.steps)):
        h = np.asarray(hedge(t, s), np.float64)  # [P]
        exponent = -lam * h[:, None] * (nxt - s[:, None])
        if t == m.steps - 1:
            exponent = exponent + lam * np.maximum(nxt - m.strike, 0.0)
        else:
            h_next = np.asarray(hedge(t + 1, nxt), np.float64)  # [P, Q]
            exponent = exponent + lam * m.cost * np.abs(h_next - h[:, None]) * nxt
            exponent = exponent + shift(shift.padded(g))
        g = _logsumexp(log_w[None, :] + exponent, axis=1)
    h0 = float(np.asarray(hedge(0, np.array([m.s0])))[0])
    return (lam * m.cost * abs(h0) * m.s0 + float(g[x.size // 2])) / lam - m.premium
