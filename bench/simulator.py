"""Simulator throughput: path-steps per second of ddm's market models against a vectorised
NumPy implementation of the same scheme, measured in the same run.

- ``simulator.gbm``: 5 correlated assets, exact log-normal steps.
- ``simulator.heston``: one asset, full-truncation Euler.

Both at 100 000 paths × 30 steps (``--quick``: 10 000 paths), float32, prices of every step
returned (the hedging use). ddm = ``jax.jit`` of ``ddm.library.market.gbm`` / ``heston``,
compiled once, timed warm with ``block_until_ready``, median of 7; NumPy = the same recursion
over time with all paths vectorised (``numpy.random.Generator.standard_normal``), median of 7.
Ratio = NumPy time / ddm time (> 1: ddm faster). No target in the issue; reported.
"""

from __future__ import annotations

import statistics
import time

NAMES = ("gbm", "heston")
PATHS, QUICK_PATHS, STEPS, ASSETS = 100_000, 10_000, 30, 5
DT = 1 / 365


def _median_time(fn, repeats=7):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _numpy_gbm(rng, s0, mu, sigma, chol, n_paths):
    import numpy as np

    log_s = np.full((n_paths, s0.size), np.log(s0), np.float32)
    out = np.empty((n_paths, STEPS + 1, s0.size), np.float32)
    out[:, 0] = s0
    drift = ((mu - 0.5 * sigma**2) * DT).astype(np.float32)
    vol = (sigma * np.sqrt(DT)).astype(np.float32)
    for t in range(STEPS):
        z = rng.standard_normal((n_paths, s0.size), dtype=np.float32) @ chol.T
        log_s += drift + vol * z
        out[:, t + 1] = np.exp(log_s)
    return out


def _numpy_heston(rng, n_paths, v0=0.04, kappa=1.5, theta=0.04, xi=0.5, rho=-0.7):
    import numpy as np

    log_s = np.full(n_paths, np.log(100.0), np.float32)
    v = np.full(n_paths, v0, np.float32)
    out = np.empty((n_paths, STEPS + 1), np.float32)
    out[:, 0] = 100.0
    root = np.float32(np.sqrt(1 - rho**2))
    for t in range(STEPS):
        z = rng.standard_normal((2, n_paths), dtype=np.float32)
        z2 = rho * z[0] + root * z[1]
        vp = np.maximum(v, 0.0)
        sq = np.sqrt(vp * DT)
        log_s += -0.5 * vp * DT + sq * z[0]
        v += kappa * (theta - vp) * DT + xi * sq * z2
        out[:, t + 1] = np.exp(log_s)
    return out


def bench(name: str, quick: bool) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from ddm.library.market import gbm, heston

    n_paths = QUICK_PATHS if quick else PATHS
    rng = np.random.default_rng(0)
    key = jax.random.key(0)
    if name == "gbm":
        s0 = np.linspace(50, 150, ASSETS).astype(np.float32)
        mu = np.zeros(ASSETS, np.float32)
        sigma = np.linspace(0.1, 0.4, ASSETS).astype(np.float32)
        corr = (0.5 * np.ones((ASSETS, ASSETS)) + 0.5 * np.eye(ASSETS)).astype(np.float32)
        chol = np.linalg.cholesky(corr).astype(np.float32)
        fn = jax.jit(lambda k: gbm(k, s0, mu, sigma, DT, STEPS, n_paths, corr=corr))
        ours = lambda: fn(key).block_until_ready()  # noqa: E731
        theirs = lambda: _numpy_gbm(rng, s0, mu, sigma, chol, n_paths)  # noqa: E731
        path_steps = n_paths * STEPS * ASSETS
    else:
        fn = jax.jit(lambda k: heston(k, 100.0, 0.04, 1.5, 0.04, 0.5, -0.7, DT, STEPS, n_paths)[0])
        ours = lambda: fn(key).block_until_ready()  # noqa: E731
        theirs = lambda: _numpy_heston(rng, n_paths)  # noqa: E731
        path_steps = n_paths * STEPS
    jnp.zeros(1).block_until_ready()
    t_ddm, t_np = _median_time(ours), _median_time(theirs)
    return {
        "name": f"simulator.{name}",
        "paths": n_paths,
        "steps": STEPS,
        "assets": ASSETS if name == "gbm" else 1,
        "ddm_s": t_ddm,
        "numpy_s": t_np,
        "ddm_path_steps_per_s": path_steps / t_ddm,
        "numpy_path_steps_per_s": path_steps / t_np,
        "ratio": t_np / t_ddm,
    }


def run(quick: bool = False, only: str | None = None) -> list[dict]:
    return [
        bench(n, quick) for n in NAMES if not only or only in ("simulator", n, f"simulator.{n}")
    ]


def row(r: dict) -> tuple[str, str, str, str, str, str]:
    return (
        r["name"],
        f"{r['ddm_path_steps_per_s'] / 1e6:.1f} M path-steps/s",
        f"{r['numpy_path_steps_per_s'] / 1e6:.1f} M/s (NumPy)",
        f"{r['ratio']:.2f}× NumPy",
        "—",
        "info",
    )


def notes(r: dict) -> str:
    return (
        f"{r['name']}: {r['paths']} paths × {r['steps']} steps × {r['assets']} asset(s), "
        f"float32, every step's price returned; ddm {r['ddm_s'] * 1e3:.1f} ms, NumPy "
        f"{r['numpy_s'] * 1e3:.1f} ms (medians of 7, same run)"
    )
