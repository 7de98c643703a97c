"""Regime-switching markets as a data source: ``regime_windows``, the episodes of
``examples/trading.ddm``.

A hidden two-state Markov chain (calm, turbulent; each day it stays with probability
``stay``) sets every asset's daily drift and volatility; assets share one market factor
(correlation ``corr``). An episode is a window of ``window`` daily returns before a decision
and the ``horizon`` days it is held:

- ``P: f32[window + 1, assets]`` prices over the window, 1 at its start (the features' source);
- ``R: f32[horizon, assets]`` the simple returns of the held days (the simulator's replay of
  what the decision earns — the same regime path continues through them);
- ``w_prev: f32[assets]`` the position held before the decision, uniform in [−0.5, 0.5]
  (so that trading costs something), ``cost: f32`` the proportional cost;
- ``regime: i32`` the regime on the window's last day (1 = turbulent): for measuring how well
  a rule's trigger finds it, never for training.

Randomness through ``jax.random.key(seed)`` only: training episodes from ``fold_in(key, 0)``,
test ones from ``fold_in(key, 1)``.
"""

from __future__ import annotations

import numpy as np

from ddm.library.op import Arg
from ddm.runtime.data.base import Dataset, Source
from ddm.runtime.ranges import ANY, COUNT, INT32_MAX, POSITIVE, SEED, Range

DAYS = 252


def episodes(
    key, n: int, assets: int, window: int, horizon: int, mu, sigma, stay: float, corr: float
):
    """NumPy arrays of ``n`` episodes (see the module doc); ``mu``/``sigma`` per regime,
    annualised."""
    import jax

    global _DRAW
    if _DRAW is None:
        # one compiled program per shape instead of one per eager op (~20 compilations a
        # split, 4.4 s of examples/trading.ddm's 21 s rerun went here)
        _DRAW = jax.jit(_draw, static_argnums=range(1, 9))
    out = _DRAW(key, n, assets, window, horizon, tuple(mu), tuple(sigma), stay, corr)
    return {k: np.asarray(a, np.int32 if k == "regime" else np.float32) for k, a in out.items()}


_DRAW = None


def _draw(key, n, assets, window, horizon, mu, sigma, stay, corr):
    import jax
    import jax.numpy as jnp

    length = window + horizon
    k_start, k_switch, k_factor, k_own, k_prev = jax.random.split(key, 5)
    start = jax.random.bernoulli(k_start, 0.5, (n,)).astype(jnp.int32)
    switch = jax.random.uniform(k_switch, (length, n)) > stay

    def day(reg, flip):
        reg = jnp.where(flip, 1 - reg, reg)
        return reg, reg

    _, regs = jax.lax.scan(day, start, switch)
    regs = regs.T  # [n, length]
    mu_d = jnp.asarray(mu, jnp.float32)[regs] / DAYS
    sd_d = jnp.asarray(sigma, jnp.float32)[regs] / np.sqrt(DAYS)
    factor = jax.random.normal(k_factor, (n, length, 1))
    own = jax.random.normal(k_own, (n, length, assets))
    z = np.sqrt(corr) * factor + np.sqrt(1 - corr) * own
    r = mu_d[..., None] + sd_d[..., None] * z
    prices = jnp.concatenate([jnp.ones((n, 1, assets)), jnp.cumprod(1 + r[:, :window], 1)], 1)
    w_prev = jax.random.uniform(k_prev, (n, assets), minval=-0.5, maxval=0.5)
    return {"P": prices, "R": r[:, window:], "w_prev": w_prev, "regime": regs[:, window - 1]}


def load(
    assets: int = 4,
    window: int = 20,
    horizon: int = 5,
    cost: float = 5e-4,
    calm_mu: float = 0.3,
    calm_sigma: float = 0.12,
    turbulent_mu: float = -0.3,
    turbulent_sigma: float = 0.45,
    stay: float = 0.98,
    corr: float = 0.5,
    n_train: int = 20_000,
    n_test: int = 20_000,
    seed: int = 0,
) -> Dataset:
    import jax

    from ddm.dsl.diagnostics import DataDiagnostic

    for name, value in (
        ("assets", assets),
        ("window", window),
        ("horizon", horizon),
        ("n_train", n_train),
        ("n_test", n_test),
    ):
        if value < 1:
            raise DataDiagnostic(None, f"regime_windows: {name} must be at least 1, got {value}")
    if window < 2:
        raise DataDiagnostic(None, "regime_windows: a window needs at least 2 returns")
    for name, value in (("stay", stay), ("corr", corr)):
        if not 0 <= value <= 1:
            raise DataDiagnostic(
                None, f"regime_windows: {name} is a probability, in [0, 1]; got {value}"
            )
    if not cost >= 0 or calm_sigma <= 0 or turbulent_sigma <= 0:
        raise DataDiagnostic(None, "regime_windows: cost must be >= 0 and volatilities > 0")
    key = jax.random.key(seed)
    mu, sigma = (calm_mu, turbulent_mu), (calm_sigma, turbulent_sigma)

    def split(i, n):
        out = episodes(
            jax.random.fold_in(key, i), n, assets, window, horizon, mu, sigma, stay, corr
        )
        out["cost"] = np.full((n,), cost, np.float32)
        return out

    return Dataset(
        split(0, n_train),
        split(1, n_test),
        {
            "description": f"regime-switching market: {assets} assets, calm μ = "
            f"{calm_mu}, σ = {calm_sigma} / turbulent μ = {turbulent_mu}, "
            f"σ = {turbulent_sigma}, stay {stay}, corr {corr}; windows "
            f"of {window} days, held {horizon} days, cost {cost}; "
            f"{n_train} train, {n_test} test (seed {seed})"
        },
    )


SOURCE = Source(
    "regime_windows",
    (
        Arg("assets", "int", 4),
        Arg("window", "int", 20),
        Arg("horizon", "int", 5),
        Arg("cost", "float", 5e-4),
        Arg("calm_mu", "float", 0.3),
        Arg("calm_sigma", "float", 0.12),
        Arg("turbulent_mu", "float", -0.3),
        Arg("turbulent_sigma", "float", 0.45),
        Arg("stay", "float", 0.98),
        Arg("corr", "float", 0.5),
        Arg("n_train", "int", 20_000),
        Arg("n_test", "int", 20_000),
        Arg("seed", "int", 0),
    ),
    load,
    "Episodes of a two-regime (calm/turbulent) market: price windows "
    "P: f32[window + 1, assets], held-day returns R: f32[horizon, assets], "
    "the previous position w_prev: f32[assets], cost: f32 and the hidden "
    "regime: i32 (for evaluation).",
    {
        "assets": COUNT,
        "window": Range(2, INT32_MAX, why="a window needs at least 2 returns"),
        "horizon": COUNT,
        "cost": Range(0, 1, why="a proportional cost is a fraction of the traded value"),
        "calm_mu": ANY,
        "calm_sigma": POSITIVE,
        "turbulent_mu": ANY,
        "turbulent_sigma": POSITIVE,
        "stay": Range(0, 1, why="the probability of staying in a regime from one day to the next"),
        "corr": Range(0, 1, why="the assets' correlation through the market factor"),
        "n_train": COUNT,
        "n_test": COUNT,
        "seed": SEED,
    },
    lambda assets, window, horizon, n_train, n_test, **_: (
        4 * (n_train + n_test) * ((window + 1 + horizon + 1) * assets + 2)
    ),
)
