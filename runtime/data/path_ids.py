"""Path ids as a data source: ``path_ids``, for programs that simulate their market in-graph.

A program that calls ``gbm_path``, ``heston_path``, ``merton_path`` or ``regime_path``
(:mod:`ddm.library.simulators`) needs no arrays of prices, only which path each sample is:

- ``path: i32`` — the sample's path id: training ids ``offset … offset + n_train − 1``, test
  ids ``TEST_BASE + offset …`` (``TEST_BASE = 2³⁰``), so the two never overlap and the test
  paths do not change when ``n_train`` does;
- ``tau: f32[steps]`` — time to maturity at each rebalancing date (years), as ``gbm_paths``;
- ``cost: f32`` — the market's proportional transaction cost, the same for every path.

Nothing here is random: the paths are drawn by the ops from ``fold_in(key(seed), path)``, so
the same id is the same path in every method and every run. ``offset`` picks another set of
paths (a fresh market draw) without editing the program. ``days`` and ``steps`` must match
the ops' (``tau``'s length is checked against the program's input; ``days`` cannot be).

>>> d = load(n_train=3, n_test=2, days=30, steps=3)
>>> d.train["path"].tolist(), d.test["path"].tolist()
([0, 1, 2], [1073741824, 1073741825])
>>> d.train["tau"].shape, float(d.train["cost"][0])
((3, 3), 0.0)
"""

from __future__ import annotations

import numpy as np

from ddm.library.op import Arg
from ddm.runtime.data.base import Dataset, Source
from ddm.runtime.data.simulated import RANGES as MARKET
from ddm.runtime.ranges import Range

TEST_BASE = 1 << 30  # test ids from here: disjoint from any training id
HALF = 1 << 29  # offset and counts below this keep train ids < TEST_BASE, test ids < 2³¹
IDS = Range(1, HALF - 1, why="path ids are int32: training ids stay below 2^30")


def load(
    n_train: int = 100_000,
    n_test: int = 100_000,
    cost: float = 0.0,
    days: int = 30,
    steps: int = 30,
    offset: int = 0,
) -> Dataset:
    from ddm.dsl.diagnostics import DataDiagnostic

    for name, value in (("days", days), ("steps", steps), ("n_train", n_train), ("n_test", n_test)):
        if value < 1:
            raise DataDiagnostic(None, f"path_ids: {name} must be at least 1, got {value}")
    if not 0 <= offset < HALF or n_train >= HALF or n_test >= HALF:
        raise DataDiagnostic(
            None, f"path_ids: offset and the counts must stay below {HALF} (int32 path ids)"
        )
    if not cost >= 0:
        raise DataDiagnostic(None, f"path_ids: cost must be at least 0, got {cost}")
    return Dataset(
        _ids(offset, n_train, cost, days, steps),
        _ids(TEST_BASE + offset, n_test, cost, days, steps),
        info(n_train, n_test, cost, days, steps, offset),
    )


def info(
    n_train: int = 100_000,
    n_test: int = 100_000,
    cost: float = 0.0,
    days: int = 30,
    steps: int = 30,
    offset: int = 0,
) -> dict:
    """What :func:`load`'s data set says of itself, without building it."""
    T = days / 365
    return {
        "description": f"path ids for in-graph simulators: {days} days in {steps} steps, "
        f"cost {cost}; {n_train} train from id {offset}, {n_test} test from id "
        f"{TEST_BASE + offset}",
        "dt": T / steps,
        "maturity": T,
    }


def _ids(first: int, n: int, cost: float, days: int, steps: int) -> dict[str, np.ndarray]:
    T = days / 365
    dt = T / steps
    tau = (T - dt * np.arange(steps)).astype(np.float32)
    return {
        "path": np.arange(first, first + n, dtype=np.int32),
        "tau": np.broadcast_to(tau, (n, steps)).copy(),
        "cost": np.full((n,), cost, np.float32),
    }


def rows(
    split: str,
    start: int,
    stop: int,
    n_train: int = 100_000,
    n_test: int = 100_000,
    cost: float = 0.0,
    days: int = 30,
    steps: int = 30,
    offset: int = 0,
) -> dict[str, np.ndarray]:
    """Rows ``start … stop − 1`` of a split, as :func:`load` gives them.

    >>> rows("test", 2, 4, n_test=5, steps=3)["path"].tolist()
    [1073741826, 1073741827]
    """
    n = n_train if split == "train" else n_test
    stop = min(stop, n)
    first = offset + (TEST_BASE if split == "test" else 0)
    return _ids(first + start, max(stop - start, 0), cost, days, steps)


def _nbytes(n_train: int, n_test: int, steps: int, **_) -> int:
    """path [n], tau [n, steps], cost [n], 4 bytes each, for both splits."""
    return 4 * (n_train + n_test) * (steps + 2)


SOURCE = Source(
    "path_ids",
    (
        Arg("n_train", "int", 100_000),
        Arg("n_test", "int", 100_000),
        Arg("cost", "float", 0.0),
        Arg("days", "int", 30),
        Arg("steps", "int", 30),
        Arg("offset", "int", 0),
    ),
    load,
    "Path ids for programs that simulate in-graph (gbm_path, heston_path, …): input "
    "path: i32 (train 0 … n_train − 1, test from 2^30: disjoint), tau: f32[steps] and "
    "cost: f32 as gbm_paths.",
    {
        "n_train": IDS,
        "n_test": IDS,
        "cost": MARKET["cost"],
        "days": MARKET["days"],
        "steps": MARKET["steps"],
        "offset": Range(0, HALF - 1, why="path ids are int32: training ids stay below 2^30"),
    },
    _nbytes,
    rows=rows,
    info=info,
)
