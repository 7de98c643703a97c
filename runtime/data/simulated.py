"""Simulated price paths as a data source: ``gbm_paths`` and ``heston_paths``.

Each sample is one path ``S: f32[steps + 1]`` (the input a hedging program reads), with the
time grid ``tau: f32[steps]`` (time to maturity at each rebalancing date) and the market's
proportional transaction cost ``cost: f32`` (the same for every path) beside it, so that
``--set data.cost=0.01`` changes the market without editing the program. Training
and test paths come from ``fold_in(key(seed), 0)`` and ``fold_in(key(seed), 1)``: the same
seed, the same paths, and the test paths never overlap the training ones.
"""

from __future__ import annotations

import numpy as np

from ddm.library.op import Arg
from ddm.runtime.data.base import Dataset, Source
from ddm.runtime.ranges import ANY, CORRELATION, COUNT, NONNEGATIVE, POSITIVE, SEED, Range

COMMON = (
    Arg("cost", "float", 0.0),
    Arg("s0", "float", 100.0),
    Arg("days", "int", 30),
    Arg("steps", "int", 30),
    Arg("n_train", "int", 100_000),
    Arg("n_test", "int", 100_000),
    Arg("seed", "int", 0),
)


# the market's keywords, shared by both sources
RANGES = {
    "cost": Range(0, 1, why="a proportional cost is a fraction of the traded value"),
    "s0": POSITIVE,
    "days": COUNT,
    "steps": COUNT,
    "n_train": COUNT,
    "n_test": COUNT,
    "seed": SEED,
}


def _nbytes(n_train: int, n_test: int, steps: int, **_) -> int:
    """S [n, steps + 1], tau [n, steps], cost [n], float32, for both splits."""
    return 4 * (n_train + n_test) * (2 * steps + 2)


def _dataset(
    paths_of,
    kind: str,
    s0: float,
    days: int,
    steps: int,
    n_train: int,
    n_test: int,
    seed: int,
    extra: str,
    cost: float = 0.0,
) -> Dataset:
    import jax

    from ddm.dsl.diagnostics import DataDiagnostic

    for name, value in (("days", days), ("steps", steps), ("n_train", n_train), ("n_test", n_test)):
        if value < 1:
            raise DataDiagnostic(None, f"{kind}: {name} must be at least 1, got {value}")
    if not cost >= 0:
        raise DataDiagnostic(
            None,
            f"{kind}: cost is a fraction of the traded value and must be at least 0, got {cost}",
        )
    T = days / 365
    dt = T / steps
    key = jax.random.key(seed)
    tau = (T - dt * np.arange(steps)).astype(np.float32)

    def split(i, n):
        s = np.asarray(paths_of(jax.random.fold_in(key, i), dt, n), np.float32)
        return {
            "S": s,
            "tau": np.broadcast_to(tau, (n, steps)).copy(),
            "cost": np.full((n,), cost, np.float32),
        }

    return Dataset(
        split(0, n_train),
        split(1, n_test),
        {
            "description": f"{kind} paths: S0 = {s0}, {days} days in {steps} steps, "
            f"{extra}, cost {cost}; {n_train} train, {n_test} test (seed {seed})",
            "dt": dt,
            "maturity": T,
        },
    )


def load_gbm(
    sigma: float = 0.2,
    mu: float = 0.0,
    cost: float = 0.0,
    s0: float = 100.0,
    days: int = 30,
    steps: int = 30,
    n_train: int = 100_000,
    n_test: int = 100_000,
    seed: int = 0,
) -> Dataset:
    from ddm.library.market import gbm

    return _dataset(
        lambda k, dt, n: gbm(k, s0, mu, sigma, dt, steps, n)[..., 0],
        "gbm",
        s0,
        days,
        steps,
        n_train,
        n_test,
        seed,
        f"σ = {sigma}, μ = {mu}",
        cost,
    )


def load_heston(
    v0: float = 0.04,
    kappa: float = 1.5,
    theta: float = 0.04,
    xi: float = 0.5,
    rho: float = -0.7,
    cost: float = 0.0,
    s0: float = 100.0,
    days: int = 30,
    steps: int = 30,
    n_train: int = 100_000,
    n_test: int = 100_000,
    seed: int = 0,
) -> Dataset:
    from ddm.library.market import heston

    return _dataset(
        lambda k, dt, n: heston(k, s0, v0, kappa, theta, xi, rho, dt, steps, n)[0],
        "heston",
        s0,
        days,
        steps,
        n_train,
        n_test,
        seed,
        f"v0 = {v0}, κ = {kappa}, θ = {theta}, ξ = {xi}, ρ = {rho}",
        cost,
    )


GBM = Source(
    "gbm_paths",
    (Arg("sigma", "float", 0.2), Arg("mu", "float", 0.0)) + COMMON,
    load_gbm,
    "Geometric Brownian motion price paths (inputs S: f32[steps + 1], "
    "tau: f32[steps], time to maturity at each rebalancing date, and "
    "cost: f32, the market's proportional transaction cost).",
    {"sigma": NONNEGATIVE, "mu": ANY, **RANGES},
    _nbytes,
)
HESTON = Source(
    "heston_paths",
    (
        Arg("v0", "float", 0.04),
        Arg("kappa", "float", 1.5),
        Arg("theta", "float", 0.04),
        Arg("xi", "float", 0.5),
        Arg("rho", "float", -0.7),
    )
    + COMMON,
    load_heston,
    "Heston stochastic-volatility price paths (inputs as gbm_paths).",
    {
        "v0": NONNEGATIVE,
        "kappa": NONNEGATIVE,
        "theta": NONNEGATIVE,
        "xi": NONNEGATIVE,
        "rho": CORRELATION,
        **RANGES,
    },
    _nbytes,
)
