"""Writes examples/data/ridge.csv: the data of examples/ridge.ddm (run from the repository root:
``python examples/data/make_ridge.py``). A fixed seed: the file in the repository is this
script's output, byte for byte.

Daily rows from 2018-01-01: sixteen features ``x0 … x15`` and a target ``y = x·β + noise``, where
β drifts slowly (a random walk), so that a ridge fitted on a recent window predicts the next
day better than one fitted on everything, and how strongly to shrink it is a real choice.
"""

from __future__ import annotations

import datetime
import os

import numpy as np

ROWS, FEATURES, NOISE = 1200, 16, 1.0


def main(path: str = os.path.join(os.path.dirname(__file__), "ridge.csv")) -> None:
    rng = np.random.default_rng(20261203)
    beta = 0.3 * rng.normal(size=FEATURES)
    start = datetime.date(2018, 1, 1)
    with open(path, "w", newline="\n") as fh:
        fh.write("date," + ",".join(f"x{j}" for j in range(FEATURES)) + ",y\n")
        for t in range(ROWS):
            beta = beta + 0.01 * rng.normal(size=FEATURES)
            x = rng.normal(size=FEATURES)
            y = x @ beta + NOISE * rng.normal()
            day = (start + datetime.timedelta(days=t)).isoformat()
            fh.write(day + "," + ",".join(f"{v:.5f}" for v in x) + f",{y:.5f}\n")


if __name__ == "__main__":
    main()
