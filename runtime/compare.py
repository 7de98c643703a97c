"""Pure DP against Φ-guided: ``compare_rules = true`` trains a program twice from the same seed,
without its Φ-rules' terms and with them, and sets the two runs side by side on the research
plan's metrics (seed 004, §8 and §10): steps to a target metric (convergence speed) and the
gradient's variance across micro-batches (the ``noise`` of ``diagnostics = "full"``).

Each variant writes its own run directory (``OUT/pure_dp``, ``OUT/phi_guided``); the
comparison goes to ``OUT/comparison.json``. ``--resume OUT`` continues each variant from its
checkpoint (one without a checkpoint is trained again: the same seed, the same bits).
"""

from __future__ import annotations

import copy
import os
from typing import Any

VARIANTS = (("pure_dp", "off"), ("phi_guided", "on"))


def run_both(
    prog,
    cfg,
    out_dir: str | None,
    console=None,
    resume: bool = False,
    draw: bool = True,
    traces: bool = False,
) -> dict:
    """Train both variants; return {"runs": {variant: RunResult}, "comparison": {…}}.
    ``draw``: each variant's plots into its folder (``--no-plots`` turns them off);
    ``traces``: as in :func:`ddm.runtime.train.run`."""
    from ddm.runtime import train
    from ddm.runtime.checkpoint import write_json
    from ddm.runtime.errors import ConfigDiagnostic

    if not prog.graph.rules:
        raise ConfigDiagnostic(
            None,
            f"compare_rules trains {prog.file} with and without its Φ-rules, and it has none",
            hint="declare a rule, or drop compare_rules",
        )
    runs = {}
    for name, rules in VARIANTS:
        c = copy.deepcopy(cfg)
        c.values["rules"] = rules
        c.values["compare_rules"] = False
        if rules == "off":
            c.values["orthogonality"] = None  # nothing to keep orthogonal without the rules
        if c.values["diagnostics"] != "full":
            c.values["diagnostics"] = "full"  # the gradient variance is measured by it
        if console is not None:
            console.print(f"[bold]{name}[/bold] (rules {rules})")
        where = os.path.join(out_dir, name) if out_dir else None
        again = bool(resume and where and os.path.exists(os.path.join(where, "checkpoint.json")))
        try:
            runs[name] = train.run(prog, c, where, console, resume=again, draw=draw, traces=traces)
        except train.TrainingInterrupted as stop:  # resume both from the comparison's directory
            raise train.TrainingInterrupted(stop.step, stop.steps, out_dir) from None
    comparison: dict[str, Any] = {name: summarise(r) for name, r in runs.items()}
    a, b = (comparison[n]["steps_to_target"] for n, _ in VARIANTS)
    comparison["speedup"] = (a / b) if a and b else None
    na, nb = (comparison[n]["gradient_variance"] for n, _ in VARIANTS)
    comparison["variance_ratio"] = (nb / na) if na and nb else None
    if out_dir:
        write_json(os.path.join(out_dir, "comparison.json"), comparison)
    return {"runs": runs, "comparison": comparison}


def summarise(result) -> dict:
    """One variant's row: steps to target, mean gradient variance over the log steps (summed
    over params), and its final test metrics."""
    m = result.metrics
    variance = []
    for line in result.log:
        noise = [s["noise"] for s in line.get("grad", {}).values() if "noise" in s]
        if noise:
            variance.append(sum(noise))
    target = m.get("target") or {}
    return {
        "steps_to_target": target.get("steps_to_target"),
        "target": {k: target[k] for k in ("metric", "value", "below")} if target else None,
        "gradient_variance": sum(variance) / len(variance) if variance else None,
        "test": m["test"],
    }
