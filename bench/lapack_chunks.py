"""What the deadlock-free factorisations cost: ``python -m ddm.bench.lapack_chunks``.

ddm's solvers factor through :mod:`ddm.library.lapack`, which splits a batched LAPACK call into
chunks that jaxlib 0.10 runs inline (no thread of XLA's pool ever waits on the pool; see
``docs/troubleshooting.md``). This measures, in one run, a training step's
``value_and_grad`` of ``examples/hedge_longonly.ddm`` (batch 1024, 20 assets, class-2 argmin)
and of a budget argmin (n = 50, batch 1024) with the chunks and with one call per batch (the
hang-prone form, for comparison only: chunking disabled by setting the threshold out of reach).
Median of 15 warm calls each, variants interleaved. Ratio = chunked / one call (> 1: slower).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from ddm.library.xla_env import protect

protect()

import jax  # noqa: E402

import ddm  # noqa: E402
import ddm.library.lapack as lapack  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGET = """\
dim N = 50
input mu: f32[N]
input A: f32[N, N]
param lam: f32 = 1.0 positive
node w = argmin v: f32[N] { lam * quad(v, A @ transpose(A) / 50.0 + 0.1 * eye(N)) - dot(mu, v) }
    subject to { sum(v) == 1 }
output w
loss = mean(sum(w * w, axis=1))
"""


def _step(prog, batch, chunked: bool):
    lapack.MIN_WORK = 200_000 if chunked else 10**18  # read when the step is lowered
    params = prog.init(jax.random.key(0))
    f = jax.jit(jax.value_and_grad(lambda p, b: prog.product.loss(p, b)[0]))
    jax.block_until_ready(f(params, batch))  # lowered (and chunked, or not) here
    lapack.MIN_WORK = 200_000
    return lambda: jax.block_until_ready(f(params, batch))


def _compare(name, prog, batch, repeats=15):
    fns = {True: _step(prog, batch, True), False: _step(prog, batch, False)}
    times = {True: [], False: []}
    for _ in range(repeats):
        for chunked, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[chunked].append(time.perf_counter() - t)
    c, u = statistics.median(times[True]), statistics.median(times[False])
    print(f"{name:<28} chunked {c * 1e3:8.1f} ms   one call {u * 1e3:8.1f} ms   ratio {c / u:.2f}")


def main() -> int:
    k = jax.random.split(jax.random.key(1), 3)
    hedge = ddm.load(os.path.join(ROOT, "examples", "hedge_longonly.ddm"))
    batch = {
        "x": jax.random.normal(k[0], (1024, 60)),
        "R": 0.01 * jax.random.normal(k[1], (1024, 60, 20)),
        "r_next": 0.01 * jax.random.normal(k[2], (1024, 20)),
    }
    print(f"jaxlib {jax.__version__}, NPROC={os.environ.get('NPROC')}, {os.cpu_count()} cores")
    _compare("hedge_longonly step (B=1024)", hedge, batch)
    budget = ddm.loads(BUDGET, "budget.ddm")
    bb = {
        "mu": 0.01 * jax.random.normal(k[0], (1024, 50)),
        "A": jax.random.normal(k[1], (1024, 50, 50)),
    }
    _compare("budget n=50 step (B=1024)", budget, bb)
    return 0


if __name__ == "__main__":
    sys.exit(main())
