"""Seeds trained together: 8 seeds of one method under ``jax.vmap`` against the same 8 seeds
one after another through the same loop (issue 13).

Both sides use :mod:`ddm.runtime.experiment.seeds`: ``train_vmapped`` with all 8 seeds, and
``train_vmapped`` with one seed at a time (the same step, the same batch order; each seed
compiles its own step). Printed: training time without compilation on each side, their ratio
sequential / vmapped (the speed-up), and the ratio of wall times with compilation.
Programs: the experiment test's five-date hedge (small: dispatch-bound) and trading.ddm
(its argmin per sample). Run from the repository root: ``python -m ddm.bench.experiment_seeds``.
"""

from __future__ import annotations

import os
import time

CASES = (
    (
        "hedge5 (tests/experiment)",
        os.path.join("tests", "experiment", "hedge5.ddm"),
        {"steps": 200},
    ),
    ("trading.ddm", os.path.join("examples", "trading.ddm"), {"steps": 150, "eval_every": 0}),
)
SEEDS = list(range(8))


def measure(path: str, settings: dict) -> dict:
    from ddm.runtime import train as training
    from ddm.runtime.config import RunConfig
    from ddm.runtime.data import SOURCES
    from ddm.runtime.experiment import seeds as seeding
    from ddm.runtime.program import load

    prog = load(path)
    cfg = RunConfig.defaults()
    cfg.apply_run_section(prog.graph.run, prog.sources.texts.get(prog.file, ""))
    cfg.values["compare_rules"] = False
    cfg.values["target"] = None
    for k, v in settings.items():
        cfg.set_value(k, v)
    cfg.validate(SOURCES, tuple(n for n, _ in prog.graph.losses))
    prog = training.variant(prog, cfg)
    data = training.load_data(prog, cfg)
    t = time.perf_counter()
    together = seeding.train_vmapped(prog, cfg, data, SEEDS)
    vm_wall = time.perf_counter() - t
    t = time.perf_counter()
    alone = [seeding.train_vmapped(prog, cfg, data, [s])[0] for s in SEEDS]
    seq_wall = time.perf_counter() - t
    return {
        "vmapped_train_s": together[0].train_s,
        "vmapped_compile_s": together[0].compile_s,
        "vmapped_wall_s": vm_wall,
        "sequential_train_s": sum(r.train_s for r in alone),
        "sequential_compile_s": sum(r.compile_s for r in alone),
        "sequential_wall_s": seq_wall,
    }


def main() -> None:
    print(f"{len(SEEDS)} seeds: vmapped together vs one after another (same loop, same step)")
    print(
        f"{'program':28} {'steps':>6} {'vmapped s':>10} {'sequential s':>13} {'speed-up':>9}"
        f" {'with compile':>13}"
    )
    for name, path, settings in CASES:
        r = measure(path, settings)
        speed = r["sequential_train_s"] / r["vmapped_train_s"]
        walls = r["sequential_wall_s"] / r["vmapped_wall_s"]
        print(
            f"{name:28} {settings['steps']:>6} {r['vmapped_train_s']:>10.2f} "
            f"{r['sequential_train_s']:>13.2f} {speed:>8.2f}× {walls:>12.2f}×"
        )


if __name__ == "__main__":
    main()
