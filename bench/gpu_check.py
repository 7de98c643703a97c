"""``make gpu-check`` (= ``python -m ddm.bench.gpu_check``): everything ddm should show on a GPU,
in one command. Writes ``bench/results/gpu_check.json`` and prints a summary; the figures go in
bench/README.md.

1. **Devices**: what JAX sees (platform, kind, memory).
2. **Tests on the device**: the suite's solver and simulator tests (``tests/test_argmin.py``,
   ``test_solvers_qp.py``, ``test_solvers_smooth.py``, ``test_simulator_ops.py``,
   ``test_train_solvers.py``) run with JAX's default backend — the GPU; ``test_devices.py``
   (several devices made of the host's CPU) with ``JAX_PLATFORMS=cpu``.
3. **Simulator throughput**: GBM paths simulated in-graph from their ids (``gbm_path``, float32,
   30 steps, every price written), path-steps per second, against the device's memory bandwidth
   measured in the same run (``y = 2x + 1`` over a 1 GiB array): writing one float32 price per
   path-step, the bandwidth bounds the rate at bandwidth / 4 bytes.
4. **Deep-hedging training step** against pfhedge on the same GPU (``pfhedge_step.bench``, torch
   on ``cuda``; skipped with a note when torch cannot see a GPU).
5. **A batch of 65 536 argmin solves**, budget (equality-constrained KKT) and long-only
   (interior point), n = 20, forward and backward (``value_and_grad`` of a loss over the batch),
   with every instance's status.

Without a GPU it says so and stops (exit 0: nothing failed); ``--allow-cpu`` runs it on the CPU
anyway, at small sizes with ``--quick`` (what tests/test_gpu_check.py runs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from ddm.bench.simulator import _median_time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TESTS = (
    "tests/test_argmin.py",
    "tests/test_solvers_qp.py",
    "tests/test_solvers_smooth.py",
    "tests/test_simulator_ops.py",
    "tests/test_train_solvers.py",
)
# the multi-device tests make CPU devices of the host (one GPU is not four): on the CPU backend
CPU_TESTS = ("tests/test_devices.py",)
SIM = """\
input path: i32
node S = gbm_path(path, 0.2, s0=100.0, days=30, steps=30, seed=0)
output S
"""


def devices() -> dict:
    import jax

    out = []
    for d in jax.devices():
        stats = {}
        try:
            stats = d.memory_stats() or {}
        except Exception:  # not every backend reports memory
            pass
        out.append(
            {
                "id": d.id,
                "platform": d.platform,
                "kind": d.device_kind,
                "memory_gb": round(stats.get("bytes_limit", 0) / 2**30, 1) or None,
            }
        )
    return {"backend": jax.default_backend(), "devices": out}


def run_tests(quick: bool) -> dict:
    groups: list[tuple[tuple[str, ...], dict]] = [(TESTS[:1] if quick else TESTS, {})]
    if not quick:
        groups.append((CPU_TESTS, {"JAX_PLATFORMS": "cpu"}))
    args = [sys.executable, "-m", "pytest", "-q", "-m", "not slow", "-p", "no:cacheprovider"]
    out: dict = {"groups": [], "exit": 0}
    for files, env in groups:
        t = time.perf_counter()
        done = subprocess.run(
            args + [os.path.join(ROOT, f) for f in files] + (["-k", "budget"] if quick else []),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **env},
        )
        tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-300:]
        out["groups"].append(
            {
                "files": list(files),
                "env": env,
                "exit": done.returncode,
                "summary": tail,
                "wall_s": round(time.perf_counter() - t, 1),
            }
        )
        out["exit"] = out["exit"] or done.returncode
    out["summary"] = "; ".join(g["summary"] for g in out["groups"])
    return out


def gpu_present() -> bool:
    """Whether the machine has an NVIDIA GPU, whatever JAX sees."""
    import shutil

    return os.path.exists("/proc/driver/nvidia") or shutil.which("nvidia-smi") is not None


def bandwidth(quick: bool) -> float:
    """Bytes per second of ``y = 2x + 1`` over a float32 array (read once, written once)."""
    import jax
    import jax.numpy as jnp

    n = (1 << 24) if quick else (1 << 28)  # 64 MiB / 1 GiB
    x = jnp.ones((n,), jnp.float32)
    f = jax.jit(lambda x: 2.0 * x + 1.0)
    t = _median_time(lambda: f(x).block_until_ready())
    return 2 * 4 * n / t


def simulator(quick: bool, bytes_per_s: float) -> dict:
    import jax
    import numpy as np

    import ddm

    prog = ddm.loads(SIM)
    n = 65_536 if quick else 4_000_000
    ids = jax.numpy.asarray(np.arange(n, dtype=np.int32))
    run = jax.jit(lambda ids: prog.product.apply_batch({}, {"path": ids})[0]["S"])
    t = _median_time(lambda: run(ids).block_until_ready())
    rate = n * 30 / t
    bound = bytes_per_s / 4
    return {
        "paths": n,
        "steps": 30,
        "seconds": t,
        "path_steps_per_s": rate,
        "bandwidth_gb_s": bytes_per_s / 1e9,
        "bound_path_steps_per_s": bound,
        "share_of_bound": rate / bound,
    }


def argmin_batch(problem: str, quick: bool) -> dict:
    import jax
    import numpy as np

    import ddm
    from ddm.bench import argmin as bench_argmin

    n, batch = (10, 1024) if quick else (20, 65_536)
    prog = ddm.loads(bench_argmin.program_text(problem))
    S, b, c = bench_argmin.make_data(n, batch, seed=3)
    f32 = np.float32
    data = {"S": S.astype(f32), "b": b.astype(f32), "c": c.astype(f32)}
    data = {k: jax.numpy.asarray(v) for k, v in data.items()}
    params = prog.init(jax.random.key(0))
    vg = jax.jit(jax.value_and_grad(lambda p, d: prog.product.loss(p, d)[0], argnums=(0, 1)))
    t = _median_time(lambda: jax.block_until_ready(vg(params, data)), repeats=3)
    _, aux = jax.jit(prog.product.apply_batch)(params, data)
    (info,) = aux.solvers.values()
    status = np.asarray(info.status).ravel()
    from ddm.library.solvers.status import STATUS_NAMES

    return {
        "problem": problem,
        "n": n,
        "batch": batch,
        "forward_backward_s": t,
        "solves_per_s": batch / t,
        "statuses": {STATUS_NAMES[s]: int((status == s).sum()) for s in np.unique(status)},
    }


def pfhedge(quick: bool) -> dict:
    try:
        import torch  # pyright: ignore[reportMissingImports]
    except ImportError:
        return {"skipped": "torch not installed (the bench extra)"}
    if not torch.cuda.is_available():
        return {"skipped": "torch sees no GPU (install a CUDA build of torch)"}
    from ddm.bench import pfhedge_step

    return pfhedge_step.bench(quick=quick, device="cuda")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="ddm's GPU check: devices, tests, throughput")
    ap.add_argument("--allow-cpu", action="store_true", help="run even without a GPU")
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--no-tests", action="store_true", help="skip the test subset")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "gpu_check.json"))
    args = ap.parse_args(argv)

    found = devices()
    print(f"backend {found['backend']}: " + ", ".join(d["kind"] for d in found["devices"]))
    if found["backend"] != "gpu" and not args.allow_cpu:
        if gpu_present():  # a GPU JAX cannot use: say what to install, and fail
            import jax

            print(
                "a GPU is present but JAX has no CUDA backend: install the CUDA build of this "
                f"JAX, pip install 'jax[cuda12]=={jax.__version__}', then run this again"
            )
            return 1
        print("no GPU: nothing to check here (--allow-cpu runs the check on the CPU)")
        return 0
    report: dict = {"when": time.strftime("%Y-%m-%d %H:%M"), **found}
    if not args.no_tests:
        report["tests"] = run_tests(args.quick)
        print(f"tests: {report['tests']['summary']}")
    bw = bandwidth(args.quick)
    report["simulator"] = sim = simulator(args.quick, bw)
    print(
        f"simulator: {sim['path_steps_per_s']:.3g} path-steps/s = {sim['share_of_bound']:.0%} of "
        f"the bandwidth bound ({sim['bandwidth_gb_s']:.0f} GB/s measured)"
    )
    report["argmin"] = [argmin_batch(p, args.quick) for p in ("budget", "long_only")]
    for r in report["argmin"]:
        print(
            f"argmin {r['problem']}: {r['batch']} solves (n = {r['n']}) forward+backward in "
            f"{r['forward_backward_s'] * 1e3:.1f} ms; statuses {r['statuses']}"
        )
    report["deep_hedge"] = dh = pfhedge(args.quick)
    if "skipped" in dh:
        print(f"deep hedging vs pfhedge: skipped ({dh['skipped']})")
    else:
        print(
            f"deep hedging step: ddm {dh['ddm_step_s'] * 1e3:.2f} ms, pfhedge "
            f"{dh['pfhedge_step_s'] * 1e3:.2f} ms ({dh['ratio']:.2f}×)"
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=2, default=float)
    failed = report.get("tests", {}).get("exit", 0) not in (0,)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
