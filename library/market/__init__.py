"""Market simulators: price paths as pure JAX functions of their parameters and a key.

Every model runs ``lax.scan`` over time for one path and ``vmap`` over paths. Randomness comes
only from the key passed in: path ``i`` uses ``fold_in(key, i)`` and step ``t`` of it
``fold_in(fold_in(key, i), t)``, so a path does not depend on how many others are drawn, and the
same key gives the same bits. Prices are differentiable (pathwise) in every continuous parameter.

- :func:`gbm`     correlated geometric Brownian motion (exact log-normal steps)
- :func:`heston`  Heston stochastic volatility (log-Euler price, full-truncation variance)
- :func:`merton`  Merton jump diffusion (log-normal jumps, compensated drift)
- :func:`regime`  Markov regime-switching volatility
- :func:`block_bootstrap`, :func:`hybrid`  historical replay and regime-wise mixing
- ``trading``: P&L with proportional and quadratic costs and financing, payoffs, turnover

Work in progress (issue 4): not yet declared in the language or used by the training loop.
"""

from ddm.library.market.bootstrap import block_bootstrap, hybrid, prices_from_log_returns
from ddm.library.market.gbm import gbm
from ddm.library.market.heston import heston
from ddm.library.market.merton import merton
from ddm.library.market.regime import regime

__all__ = [
    "gbm",
    "heston",
    "merton",
    "regime",
    "block_bootstrap",
    "hybrid",
    "prices_from_log_returns",
]
