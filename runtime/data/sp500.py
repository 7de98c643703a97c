"""Real daily prices of 20 S&P 500 stocks, 1990-01-02 … 2022-12-28, read from the installed
``skfolio`` wheel (``skfolio/datasets/data/sp500_dataset.csv.gz``, BSD-3). No network.

``make run`` / ``make data`` install that wheel without its dependencies (``pip install --no-deps
skfolio==1.12.2``): ddm reads the file only and never imports skfolio. A plain ``pip install ddmc``
does not bring it (an extra cannot skip dependencies): :func:`csv_path` names the command.

Each sample is one trading day ``t``, in time order:

- ``R: f32[W, N]`` — the daily simple returns of the ``W`` days before ``t`` (a covariance
  window, known at the decision),
- ``x: f32[3·N]`` — features per asset known at ``t``: mean return over 5 and 20 days and the
  20-day volatility, each scaled to per cent,
- ``r_next: f32[N]`` — the returns over day ``t`` itself (what the decision earns).

Train and test split by date (``test_from``); nothing of the test period leaks into training.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import io
import os
import shlex
import sys

import numpy as np

from ddm.dsl.diagnostics import DataDiagnostic
from ddm.library.op import Arg
from ddm.runtime.data.base import Dataset, Source
from ddm.runtime.ranges import COUNT, INT32_MAX, Range

FILE = os.path.join("datasets", "data", "sp500_dataset.csv.gz")
SKFOLIO = "skfolio==1.12.2"  # the version constraints.txt pins (tests/test_packaging.py checks)


def csv_path() -> str:
    spec = importlib.util.find_spec("skfolio")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        # the exact command for the interpreter running ddm, whichever pip is on PATH
        pip = f"{shlex.quote(sys.executable)} -m pip install --no-deps {SKFOLIO}"
        raise DataDiagnostic(
            None,
            "the S&P 500 prices come from the skfolio wheel, which is not installed",
            hint=f"install it without its dependencies (ddm reads one file from it and never "
            f"imports it): {pip}  (in a checkout of ddm: make data)",
        )
    path = os.path.join(list(spec.submodule_search_locations)[0], FILE)
    if not os.path.isfile(path):
        raise DataDiagnostic(None, f"skfolio is installed but {path} is missing")
    return path


def prices(path: str | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(dates, tickers, prices [T, N]) from the CSV; raises on missing or non-finite prices."""
    path = path or csv_path()
    with gzip.open(path, "rb") as fh:
        rows = list(csv.reader(io.TextIOWrapper(fh, encoding="utf-8")))
    tickers = rows[0][1:]
    dates = [r[0] for r in rows[1:]]
    values = np.array([[float(v) if v else np.nan for v in r[1:]] for r in rows[1:]])
    bad = np.argwhere(~np.isfinite(values) | (values <= 0))
    if len(bad):
        i, j = bad[0]
        raise DataDiagnostic(
            None, f"{path}: price of {tickers[j]} on {dates[i]} is {values[i, j]!r}"
        )
    return dates, tickers, values


def windows(returns: np.ndarray, window: int):
    """Features and windows for every day t ≥ window (returns [T, N])."""
    t_all, n = returns.shape
    days = np.arange(window, t_all)
    csum = np.vstack([np.zeros((1, n)), np.cumsum(returns, axis=0)])
    csq = np.vstack([np.zeros((1, n)), np.cumsum(returns**2, axis=0)])

    def mean(k):
        return (csum[days] - csum[days - k]) / k

    m20 = mean(20)
    var20 = (csq[days] - csq[days - 20]) / 20 - m20**2
    x = 100.0 * np.concatenate([mean(5), m20, np.sqrt(np.maximum(var20, 0.0))], axis=1)
    idx = days[:, None] + np.arange(-window, 0)[None, :]
    return days, returns[idx], x, returns[days]


def load(window: int = 60, test_from: str = "2016-01-01", assets: int = 20) -> Dataset:
    if window < 21:
        raise DataDiagnostic(
            None,
            f"sp500_windows: window must be at least 21 days (the features use 20), got {window}",
        )
    dates, tickers, p = prices()
    if not 1 <= assets <= len(tickers):
        raise DataDiagnostic(
            None, f"sp500_windows: assets must be in 1..{len(tickers)}, got {assets}"
        )
    p = p[:, :assets]
    returns = p[1:] / p[:-1] - 1.0
    ret_dates = dates[1:]
    days, r_win, x, r_next = windows(returns, window)
    day_dates = np.array([ret_dates[d] for d in days])
    split = int(np.searchsorted(day_dates, test_from))
    if split == 0 or split == len(days):
        raise DataDiagnostic(
            None,
            f"sp500_windows: test_from={test_from!r} leaves an empty "
            f"split (data run {day_dates[0]} … {day_dates[-1]})",
        )
    f32 = np.float32

    def part(sl):
        return {
            "R": r_win[sl].astype(f32),
            "x": x[sl].astype(f32),
            "r_next": r_next[sl].astype(f32),
        }

    info = {
        "description": f"S&P 500 daily returns of {', '.join(tickers[:assets])}; train "
        f"{day_dates[0]} … {day_dates[split - 1]}, test {day_dates[split]} … "
        f"{day_dates[-1]}",
        "tickers": tickers[:assets],
        "test_dates": (str(day_dates[split]), str(day_dates[-1])),
    }
    return Dataset(part(slice(0, split)), part(slice(split, None)), info)


SOURCE = Source(
    "sp500_windows",
    (Arg("window", "int", 60), Arg("test_from", "str", "2016-01-01"), Arg("assets", "int", 20)),
    load,
    "Daily returns of 20 S&P 500 stocks 1990–2022 (skfolio wheel): inputs "
    "R: f32[window, assets], x: f32[3·assets], r_next: f32[assets].",
    {
        "window": Range(21, INT32_MAX, why="the features use 20 days of returns"),
        "assets": COUNT,
    },
)
