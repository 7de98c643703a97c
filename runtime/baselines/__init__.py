"""Baselines: reference policies that learned pipelines are compared with, each a documented,
tested implementation evaluated on the same paths as the program (see docs/baselines.md).

- :mod:`ddm.runtime.baselines.dp_hedge`: the exact optimum of one-asset hedging under
  proportional costs and the entropic risk, by dynamic programming.
- :mod:`ddm.runtime.baselines.classical`: the Black–Scholes delta and Whalley–Wilmott band
  hedges; equal weight, minimum variance and volatility-targeting portfolios.
- :mod:`ddm.runtime.baselines.two_stage`: the modular "predict, then optimise" baseline's
  first stage: ridge regression and gradient-boosted trees predicting each asset's held-period
  return from the end-to-end network's features.
- :mod:`ddm.runtime.baselines.phi_only`: the Φ-only baseline: a rule-based position from
  trading.ddm's interpretable quantities, its weights tuned by Bayesian optimisation (TPE).
- :mod:`ddm.runtime.baselines.ppo`: reinforcement learning (PPO, JAX and Optax) on the
  programs' own observations, actions and P&L: deep_hedge.ddm's hedging episodes and one-step
  (bandit) trading decisions.

``fit_gbt`` and ``phi_only.tune`` need the ``experiments`` extra
(``pip install 'ddmc[experiments]'``: lightgbm, optuna).
"""
