"""Baselines: reference policies that learned pipelines are compared with, each a documented,
tested implementation evaluated on the same paths as the program (see docs/baselines.md).

- :mod:`ddm.runtime.baselines.dp_hedge`: the exact optimum of one-asset hedging under
  proportional costs and the entropic risk, by dynamic programming.
- :mod:`ddm.runtime.baselines.classical`: the Black–Scholes delta and Whalley–Wilmott band
  hedges; equal weight, minimum variance and volatility-targeting portfolios.
"""
