"""Trading mechanics on simulated paths: P&L of a sequence of positions with transaction costs
and financing, option payoffs, turnover. Pure functions of arrays, differentiable in the
positions, the prices and the cost parameters.

Conventions (one path; ``vmap`` over paths): ``prices [T + 1]`` (or ``[T + 1, A]``) at the
rebalancing dates t = 0 … T, ``positions [T]`` (or ``[T, A]``) held over (t, t + 1]. The position
starts from 0, so the first trade is charged; there is no final unwind (the hedge is left in
place at maturity, as the option is settled in cash against it).
"""

from __future__ import annotations

import jax.numpy as jnp


def trades(positions):
    """Changes of position at each date, starting from flat: ``[T]`` / ``[T, A]``."""
    previous = jnp.concatenate([jnp.zeros_like(positions[:1]), positions[:-1]], axis=0)
    return positions - previous


def costs(prices, positions, proportional=0.0, quadratic=0.0):
    """Σ_t (c_p·|Δh_t| + c_q·Δh_t²)·S_t: proportional costs (a fraction of the traded value)
    and a quadratic price-impact term, summed over dates and assets."""
    dh, s = trades(positions), prices[:-1]
    return jnp.sum((proportional * jnp.abs(dh) + quadratic * dh**2) * s)


def trading_pnl(prices, positions, proportional=0.0, quadratic=0.0, rate=0.0, dt=0.0):
    """Gains Σ_t h_t·(S_{t+1} − S_t), less costs, less the financing of the position at the
    continuously compounded ``rate`` over steps of ``dt`` years (r·dt·Σ h_t·S_t)."""
    gains = jnp.sum(positions * (prices[1:] - prices[:-1]))
    financing = rate * dt * jnp.sum(positions * prices[:-1])
    return gains - costs(prices, positions, proportional, quadratic) - financing


def turnover(positions):
    """Σ_t |Δh_t| (units traded), summed over assets."""
    return jnp.sum(jnp.abs(trades(positions)))


def call_payoff(s, strike):
    return jnp.maximum(s - strike, 0.0)


def put_payoff(s, strike):
    return jnp.maximum(strike - s, 0.0)


def hedged_short_option_pnl(prices, positions, payoff, premium=0.0, **cost):
    """P&L of selling an option for ``premium`` and hedging it with ``positions``:
    premium − payoff(S_T) + trading P&L (``cost``: ``proportional``, ``quadratic``, ``rate``,
    ``dt`` as in :func:`trading_pnl`).

    >>> import jax.numpy as jnp
    >>> p = jnp.array([100.0, 102.0, 99.0])   # the call ends out of the money
    >>> pnl = hedged_short_option_pnl(p, jnp.array([0.5, 0.6]), lambda s: call_payoff(s, 100.0),
    ...                               premium=2.0)
    >>> round(float(pnl), 4)                  # 2 − 0 + 0.5·2 + 0.6·(−3)
    1.2
    """
    return premium - payoff(prices[-1]) + trading_pnl(prices, positions, **cost)
