"""Compile time of every example: the first compilation, and a rerun with the persistent cache
(issue 15).

For each ``examples/*.ddm`` with a ``run`` section, ``ddmc compile EXAMPLE --run --set
steps=STEPS --no-plots`` runs twice in fresh processes with one new, empty persistent cache
(``DDM_CACHE_DIR``): the first run compiles everything (and fills the cache), the second is a
user's rerun. Each run's ``timing.json`` gives the trace and XLA time of every function it
compiled (train step, metrics on each split, …); the wall time of the process is measured too.

Printed per example: first compile (trace + XLA), rerun (trace + XLA, where both are now
cache loads: the traced program and XLA's executable), and the functions that took longest.
Targets (issue 15): first compile ≤ 10 s, rerun ≤ 2 s on the 2-core machine — reported, not
asserted. Writes ``bench/results/compile_time.json``.

Run from the repository root: ``python -m ddm.bench.compile_time [EXAMPLE …]`` (names without
``.ddm``; default every example).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import time

STEPS = 20  # compile-bound: the figure is the compilation, not the training
FIRST_TARGET_S, RERUN_TARGET_S = 10.0, 2.0
HERE = os.path.dirname(os.path.abspath(__file__))


def examples() -> list[str]:
    """Every example that trains (has a ``run`` section), by name."""
    out = []
    for path in sorted(glob.glob(os.path.join("examples", "*.ddm"))):
        with open(path, encoding="utf-8") as fh:
            if any(line.startswith("run {") for line in fh):
                out.append(os.path.splitext(os.path.basename(path))[0])
    return out


def one(name: str, out: str, cache: str) -> dict:
    """One ``ddmc compile --run`` in a fresh process: its wall time and ``timing.json``."""
    args = [
        sys.executable,
        "-m",
        "ddm.cli.main",
        "compile",
        os.path.join("examples", f"{name}.ddm"),
    ]
    args += ["--run", "--out", out, "--set", f"steps={STEPS}", "--no-plots"]
    env = {**os.environ, "DDM_CACHE_DIR": cache}
    t = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        return {"error": (r.stderr or r.stdout)[-400:], "wall_s": wall}
    # a program with variants (trading.ddm) trains each in its own folder: add them up
    trace = xla = run = 0.0
    functions: dict = {}
    for path in sorted(glob.glob(os.path.join(out, "**", "timing.json"), recursive=True)):
        with open(path, encoding="utf-8") as fh:
            timing = json.load(fh)
        trace, xla, run = (
            trace + timing["trace_s"],
            xla + timing["xla_compile_s"],
            run + timing["run_s"],
        )
        where = os.path.relpath(os.path.dirname(path), out)
        for k, v in timing.get("compilations", {}).items():
            functions[k if where == "." else f"{where}: {k}"] = v
    return {
        "wall_s": round(wall, 2),
        "trace_s": round(trace, 2),
        "xla_s": round(xla, 2),
        "compile_s": round(trace + xla, 2),
        "run_s": round(run, 2),
        "functions": functions,
    }


def bench(name: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cache = os.path.join(tmp, "xla")
        first = one(name, os.path.join(tmp, "first"), cache)
        rerun = one(name, os.path.join(tmp, "rerun"), cache)
    row = {"name": f"compile_time.{name}", "first": first, "rerun": rerun}
    if "error" not in first and "error" not in rerun:
        row["target_first"] = first["compile_s"] <= FIRST_TARGET_S
        row["target_rerun"] = rerun["compile_s"] <= RERUN_TARGET_S
    return row


def _slowest(functions: dict) -> str:
    ranked = sorted(functions.items(), key=lambda kv: -(kv[1]["trace_s"] + kv[1]["xla_compile_s"]))
    return ", ".join(f"{k} {v['trace_s']:.1f}+{v['xla_compile_s']:.1f}" for k, v in ranked[:2] if v)


def main(names: list[str]) -> None:
    import datetime

    rows = []
    print(
        f"{'example':16s} {'first: trace+XLA':>18s} {'wall':>7s} {'rerun: trace+XLA':>18s} "
        f"{'wall':>7s}  slowest functions at first (trace+XLA s)"
    )
    for name in names or examples():
        r = bench(name)
        rows.append(r)
        f, s = r["first"], r["rerun"]
        if "error" in f or "error" in s:
            print(f"{name:16s} failed: {(f.get('error') or s.get('error', '')).strip()[-200:]}")
            continue
        print(
            f"{name:16s} {f['trace_s']:7.2f}+{f['xla_s']:6.2f} s {f['wall_s']:6.1f}s "
            f"{s['trace_s']:7.2f}+{s['xla_s']:6.2f} s {s['wall_s']:6.1f}s  "
            f"{_slowest(f['functions'])}",
            flush=True,
        )
    ok = [r for r in rows if "target_first" in r]
    print(
        f"first compile ≤ {FIRST_TARGET_S:.0f} s: {sum(r['target_first'] for r in ok)}/{len(ok)}; "
        f"rerun ≤ {RERUN_TARGET_S:.0f} s: {sum(r['target_rerun'] for r in ok)}/{len(ok)}"
    )
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "compile_time.json"), "w", encoding="utf-8") as fh:
        json.dump(
            {
                "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "steps": STEPS,
                "loadavg": os.getloadavg(),
                "rows": rows,
            },
            fh,
            indent=1,
        )


if __name__ == "__main__":
    main(sys.argv[1:])
