"""The persistent compilation cache: a second ``ddmc compile --run`` of the same program, with
the cache and without it (issue 12).

Runs ``examples/hedge_longonly.ddm`` (20 steps: compile-bound) four times in fresh processes —
twice with ``--no-cache``, then twice with a new, empty cache folder — and prints each run's
wall time and XLA compile time, and the ratio of the second cached run to the second uncached
one (the peer measured in the same run). Run from the repository root:
``python -m ddm.bench.compile_cache``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

PROGRAM = os.path.join("examples", "hedge_longonly.ddm")


def one(out: str, cache: str | None) -> tuple[float, float]:
    args = [
        sys.executable,
        "-m",
        "ddm.cli.main",
        "compile",
        PROGRAM,
        "--run",
        "--out",
        out,
        "--set",
        "steps=20",
        "--no-plots",
    ]
    env = dict(os.environ)
    if cache is None:
        args.append("--no-cache")
    else:
        env["DDM_CACHE_DIR"] = cache
    t = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t
    with open(os.path.join(out, "timing.json")) as fh:
        return wall, json.load(fh)["xla_compile_s"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "xla")
        rows = []
        for label, c in (
            ("no cache, 1st", None),
            ("no cache, 2nd", None),
            ("cache, 1st (fills it)", cache),
            ("cache, 2nd", cache),
        ):
            wall, xla = one(os.path.join(tmp, "run"), c)
            rows.append((label, wall, xla))
            print(f"{label:24s} wall {wall:6.1f} s   XLA compile {xla:6.2f} s", flush=True)
        ratio = rows[3][1] / rows[1][1]
        print(
            f"second run, cached / uncached wall time: {ratio:.2f} "
            f"(XLA {rows[3][2]:.2f} s vs {rows[1][2]:.2f} s)"
        )


if __name__ == "__main__":
    main()
