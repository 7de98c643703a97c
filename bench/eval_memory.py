"""``python -m ddm.bench.eval_memory``: the peak resident memory of evaluating the deep-hedging
example with in-graph simulation (examples/deep_hedge_sim.ddm: a GBM path simulated per path id,
30 dates, a recurrent hedge, six metrics) on 1 M and 10 M test paths consumed in chunks
(``ddmc eval --chunk``), against all paths at once where that fits.

Each evaluation runs as its own ``ddmc eval`` process; its peak RSS is the child's
``ru_maxrss``. The params are the program's initial ones (``prog.init``): memory and time do not
depend on their values. Prints a table and writes ``bench/results/eval_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROGRAM = os.path.join(ROOT, "examples", "deep_hedge_sim.ddm")


def _eval(params: str, n: int, chunk: int | None) -> dict:
    """One ``ddmc eval`` in a child process (a fresh grandchild, so that RUSAGE_CHILDREN is its
    own peak): its peak RSS, wall time and scores."""
    args = [sys.executable, "-m", "ddm.cli.main", "eval", PROGRAM, "--params", params]
    args += ["--json", "--split", "test", "--set", f"data.n_test={n}"]
    args += ["--chunk", str(chunk)] if chunk else []
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t,"
        " p.returncode)\n"
        "print(p.stdout)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True)
    head, rest = done.stdout.split("\n", 1)
    rss_kb, wall, rc = head.split()
    if int(rc) != 0:
        return {"paths": n, "chunk": chunk, "failed": done.stderr.strip()[-300:]}
    return {
        "paths": n,
        "chunk": chunk,
        "peak_rss_mb": round(int(rss_kb) / 1024, 1),
        "wall_s": round(float(wall), 1),
        "test": json.loads(rest)["test"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="evaluation's peak memory at 1 M and 10 M paths")
    ap.add_argument("--chunk", type=int, default=65536)
    ap.add_argument("--sizes", default="1000000,10000000", help="paths, comma-separated")
    ap.add_argument("--whole", type=int, default=1_000_000, help="paths all at once (0: skip)")
    args = ap.parse_args(argv)

    import jax

    import ddm
    from ddm.runtime import params_io

    prog = ddm.load(PROGRAM)
    folder = tempfile.mkdtemp(prefix="ddm-eval-memory-")
    params = os.path.join(folder, "params.npz")
    params_io.save_params(params, prog.init(jax.random.key(0)), prog)
    rows = [_eval(params, int(n), args.chunk) for n in args.sizes.split(",")]
    if args.whole:
        rows.append(_eval(params, args.whole, None))
    print(f"{'paths':>10} {'chunk':>7} {'peak RSS MB':>12} {'wall s':>8}  entropic__net")
    for r in rows:
        if "failed" in r:
            print(f"{r['paths']:>10} {str(r['chunk']):>7}  failed: {r['failed']}")
            continue
        e = r["test"]["entropic__net"]
        size, chunk = f"{r['paths']:>10}", f"{str(r['chunk']):>7}"
        print(f"{size} {chunk} {r['peak_rss_mb']:>12} {r['wall_s']:>8}  {e:.6f}")
    chunked = [r for r in rows if r["chunk"] and "failed" not in r]
    if len(chunked) >= 2:
        ratio = chunked[-1]["peak_rss_mb"] / chunked[0]["peak_rss_mb"]
        print(
            f"peak RSS {chunked[-1]['paths']:,} / {chunked[0]['paths']:,} paths: {ratio:.3f}× "
            "(target ≤ 1.2×)"
        )
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "eval_memory.json"), "w") as fh:
        json.dump(
            {
                "rows": rows,
                "machine_peak_self_kb": resource.getrusage(0).ru_maxrss,
                "when": time.strftime("%Y-%m-%d %H:%M"),
            },
            fh,
            indent=2,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
