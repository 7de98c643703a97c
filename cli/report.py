"""The end-of-run report: metrics as a table, learned scalar params, compile vs run time."""

from __future__ import annotations

import os


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
    trained = _last(result.log, "solvers") or {}
    for node, st in m.get("solvers", {}).items():
        counts = ", ".join(f"{k} {v}" for k, v in st["status"].items())
        modes = trained.get(node, {}).get("adjoint") or st.get("adjoint", {})
        backward = ", ".join(f"{k} {v}" for k, v in modes.items())
        console.print(
            f"{node}: {st['instances']} test solves — {counts}; worst residual "
            f"{st['max_residual']:.2g}, mean iterations {st['mean_iterations']:.1f}; "
            f"backward (last log step): {backward}",
            highlight=False,
        )
    sal = m.get("saliency")
    if sal:
        overlap = f"; overlap with the reference {sal['overlap']:.0%}" if "overlap" in sal else ""
        console.print(
            f"saliency of {sal['of']} w.r.t. {sal['wrt']} ({sal['samples']} test "
            f"samples): top {sal['top']} features {sal['top_overall']}{overlap}",
            highlight=False,
        )
    for name, g in m.get("gradients", {}).items():
        ratio = (
            f", first/last layer {g['first_last_ratio']:.2g} (in [0.1, 10] on "
            f"{g['ratio_in_band']:.0%} of log steps)"
            if "first_last_ratio" in g
            else ""
        )
        noise = (
            f", SNR {g['snr']:.3g}, signal {g['signal_fraction']:.0%} of total, noise "
            f"trend {g['noise_trend']:+.2f}/1000 steps"
            if "snr" in g
            else ""
        )
        console.print(
            f"gradient {name}: ‖g‖ {g['norm']:.3g}, sparsity {g['sparsity']:.0%}{noise}{ratio}",
            highlight=False,
        )
    nodes = m.get("node_grad_norms")
    if nodes:
        ranked = sorted(nodes.items(), key=lambda kv: -kv[1])
        console.print(
            "‖∂L/∂node‖ (last log step): "
            + ", ".join(f"{k} {x:.3g}" for k, x in ranked[:8])
            + (" …" if len(ranked) > 8 else ""),
            highlight=False,
        )
    rules = _last(result.log, "rules")
    for name, r in (rules or {}).items():
        memory = f", memory {r['memory']:.3g}" if "memory" in r else ""
        console.print(
            f'rule {name} "{r["intent"]}": active on {r["activation"]:.0%} of the '
            f"last batch, effective penalty {r['effective_penalty']:.3g}{memory}",
            highlight=False,
        )
    if m.get("orthogonality_penalty") is not None:
        console.print(
            f"orthogonality penalty (last log step): {m['orthogonality_penalty']:.3g}",
            highlight=False,
        )
    if "curriculum" in m:
        c = m["curriculum"]
        console.print(
            f"curriculum: strength {c['strength']}, refreshed {c['refreshes']} times, "
            f"the likeliest episode drawn {c['max_probability_ratio']:.2f}× as often "
            "as under uniform sampling",
            highlight=False,
        )
    if "compliance" in m:
        console.print(compliance_table(m["compliance"]))
    if "target" in m:
        goal = m["target"]
        reached = (
            f"reached at step {goal['steps_to_target']}"
            if goal["steps_to_target"]
            else "not reached"
        )
        sign = "<=" if goal.get("below") else ">="
        console.print(
            f"target {goal['metric']} {sign} {goal['value']}: {reached} (test set, "
            f"every {goal['evaluated_every']} steps)",
            highlight=False,
        )
    scalars = {k: v for k, v in m["params"].items() if isinstance(v, float)}
    if "learned_lr" in m:
        scalars["learning rate"] = m["learned_lr"]
    if scalars:
        console.print(
            "learned: " + ", ".join(f"{k} = {v:.5g}" for k, v in scalars.items()), highlight=False
        )
    console.print(
        f"compile: trace {t['trace_s']:.2f} s + XLA {t['xla_compile_s']:.2f} s; "
        f"run {t['run_s']:.2f} s ({t['steps_per_s']:.0f} steps/s on {t['device']})",
        highlight=False,
    )
    if result.out_dir:
        extra = ", compliance.json" if "compliance" in m else ""
        extra += "".join(", " + os.path.basename(p) for p in getattr(result, "plots", []))
        console.print(
            f"wrote {result.out_dir}/metrics.json, timing.json, params.npz, log.jsonl{extra}",
            highlight=False,
        )


def _last(log: list, key: str):
    for line in reversed(log or []):
        if key in line:
            return line[key]
    return None


def compliance_table(report: dict):
    """Every guard: its limit and action, and the checks it made and failed."""
    from rich.table import Table

    verdict = "compliant" if report["compliant"] else "NOT COMPLIANT"
    table = Table(
        title=f"compliance report: {verdict}",
        title_justify="left",
        caption="violations: decisions that broke the limit before the guard acted; left: after it",
        caption_justify="left",
    )
    width = max([5] + [len(e["guard"]) for e in report["guards"]])
    for col in ("guard", "limit", "action", "train", "test", "left"):
        table.add_column(
            col,
            justify="left" if col in ("guard", "limit", "action") else "right",
            no_wrap=True,
            min_width=width if col == "guard" else None,
        )
    for e in report["guards"]:
        tr, te = e["train"], e["test"]
        table.add_row(
            e["guard"],
            e["limit"],
            e["action"],
            f"{tr['violations']}/{tr['checks']} {tr['rate']:.1%}",
            f"{te['violations']}/{te['checks']} {te['rate']:.1%}",
            str(te["breaches_after_enforcement"]),
        )
    return table


def print_comparison(console, comparison: dict) -> None:
    """Pure DP against Φ-guided, on the plan's convergence and variance metrics."""
    from rich.table import Table

    rows = {k: v for k, v in comparison.items() if isinstance(v, dict)}
    target = next((r["target"] for r in rows.values() if r.get("target")), None)
    sign = "<=" if target and target.get("below") else ">="
    what = (
        f"steps to {target['metric']} {sign} {target['value']}"
        if target
        else "steps to target (none set)"
    )
    table = Table(title="pure DP vs Φ-guided (same seed)", title_justify="left")
    table.add_column("")
    table.add_column(what, justify="right")
    table.add_column("gradient variance", justify="right")
    # the loss differs between the variants (one carries the rules' terms): not comparable
    shown = [k for k in ("sharpe",) if all(k in r["test"] for r in rows.values())]
    for k in shown:
        table.add_column(f"test {k}", justify="right")
    for name, r in rows.items():
        steps = (
            str(r["steps_to_target"]) if r["steps_to_target"] else "not reached" if target else "—"
        )
        var = f"{r['gradient_variance']:.3g}" if r["gradient_variance"] is not None else ""
        table.add_row(name, steps, var, *(_fmt(r["test"][k]) for k in shown))
    console.print(table)
    speed, ratio = comparison.get("speedup"), comparison.get("variance_ratio")
    console.print(
        "convergence speed-up (pure DP steps / Φ-guided steps): "
        + (
            f"{speed:.2f}×"
            if speed
            else "n/a (a variant did not reach the target)"
            if target
            else "n/a (set target = reach(metric=…, value=…))"
        )
        + "; gradient variance Φ-guided / pure DP: "
        + (f"{ratio:.2f}" if ratio else "n/a"),
        highlight=False,
    )


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
