"""The end-of-run report: metrics as a table, learned scalar params, compile vs run time."""
from __future__ import annotations


def print_report(console, result) -> None:
    from rich.table import Table

    m, t = result.metrics, result.timing
    table = Table(title=f"{m['program']} after {m['steps']} steps", title_justify="left")
    table.add_column("metric")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    for name in sorted(set(m["train"]) | set(m["test"])):
        table.add_row(name, _fmt(m["train"].get(name)), _fmt(m["test"].get(name)))
    console.print(table)
    for node, st in m.get("solvers", {}).items():
        counts = ", ".join(f"{k} {v}" for k, v in st["status"].items())
        console.print(f"{node}: {st['instances']} test solves — {counts}; worst residual "
                      f"{st['max_residual']:.2g}, mean iterations {st['mean_iterations']:.1f}",
                      highlight=False)
    scalars = {k: v for k, v in m["params"].items() if isinstance(v, float)}
    if scalars:
        console.print("learned: " + ", ".join(f"{k} = {v:.5g}" for k, v in scalars.items()),
                      highlight=False)
    console.print(f"compile: trace {t['trace_s']:.2f} s + XLA {t['xla_compile_s']:.2f} s; "
                  f"run {t['run_s']:.2f} s ({t['steps_per_s']:.0f} steps/s on {t['device']})",
                  highlight=False)
    if result.out_dir:
        console.print(f"wrote {result.out_dir}/metrics.json, timing.json, params.npz, log.jsonl",
                      highlight=False)


def _fmt(x) -> str:
    return "" if x is None else f"{x:.4f}"
