"""The end-of-run report: metrics as a table, learned scalar params, compile vs run time."""
from __future__ import annotations


def print_report(console, result) -> None:
    from rich.table import Table

    m, t = result.metrics, result.timing
    table = Table(title=f"{m['program']} after {m['steps']} steps", title_justify="left")
    table.add_column("metric")
    table.add_column("train", justify="right")
    table.add_column("test", justify="right")
    grid = pivot(m["test"])
    for name in sorted(set(m["train"]) | set(m["test"])):
        if "__" not in name.strip("_") or not grid:  # pivoted ones get their own table
            table.add_row(name, _fmt(m["train"].get(name)), _fmt(m["test"].get(name)))
    console.print(table)
    if grid:
        console.print(comparison_table(grid, "test set (train values in metrics.json)"))
    for node, st in m.get("solvers", {}).items():
        counts = ", ".join(f"{k} {v}" for k, v in st["status"].items())
        console.print(f"{node}: {st['instances']} test solves — {counts}; worst residual "
                      f"{st['max_residual']:.2g}, mean iterations {st['mean_iterations']:.1f}",
                      highlight=False)
    sal = m.get("saliency")
    if sal:
        overlap = (f"; overlap with the reference {sal['overlap']:.0%}" if "overlap" in sal
                   else "")
        console.print(f"saliency of {sal['of']} w.r.t. {sal['wrt']} ({sal['samples']} test "
                      f"samples): top {sal['top']} features {sal['top_overall']}{overlap}",
                      highlight=False)
    for name, g in m.get("gradients", {}).items():
        ratio = (f", first/last layer {g['first_last_ratio']:.2g} (in [0.1, 10] on "
                 f"{g['ratio_in_band']:.0%} of log steps)" if "first_last_ratio" in g else "")
        noise = (f", SNR {g['snr']:.3g}, signal {g['signal_fraction']:.0%} of total, noise "
                 f"trend {g['noise_trend']:+.2f}/1000 steps" if "snr" in g else "")
        console.print(f"gradient {name}: ‖g‖ {g['norm']:.3g}, sparsity {g['sparsity']:.0%}"
                      f"{noise}{ratio}", highlight=False)
    scalars = {k: v for k, v in m["params"].items() if isinstance(v, float)}
    if "learned_lr" in m:
        scalars["learning rate"] = m["learned_lr"]
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


def pivot(metrics: dict) -> dict[str, dict[str, float]]:
    """Metrics named ``STAT__ROW`` as {row: {stat: value}}, rows and stats in first-seen order:
    the comparison a program asks for by naming its metrics so (``std__delta``)."""
    out: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        stat, sep, row = name.partition("__")
        if sep and stat and row:
            out.setdefault(row, {})[stat] = value
    return out


def comparison_table(grid: dict[str, dict[str, float]], title: str):
    from rich.table import Table

    stats = list(dict.fromkeys(s for row in grid.values() for s in row))
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for s in stats:
        table.add_column(s, justify="right")
    for row, values in grid.items():
        table.add_row(row, *(_fmt(values.get(s)) for s in stats))
    return table
