"""Experiments: ``ddmc experiment EXPERIMENT.yaml`` and :func:`experiment` (docs/experiments.md).

An experiment trains the learned methods of one program (variants of it, by typed rewrites of
its graph) for several seeds, evaluates them and the baselines on the same test paths, keeps the
per-path results and reports paired statistics: bootstrap intervals, Hedges' g, Benjamini–
Hochberg, power, volatility regimes and the research plan's scorecard.
"""

from __future__ import annotations

from typing import Any

__all__ = ["experiment"]


def experiment(
    path: str,
    out: str,
    *,
    resume: bool = False,
    reduced: bool = False,
    console=None,
    figures: bool = True,
) -> dict[str, Any]:
    """Run the experiment file at ``path`` into the folder ``out``; returns results.json's
    content (also written there with report.md and the figures)."""
    from ddm.runtime.experiment import report, spec
    from ddm.runtime.experiment.run import run_experiment

    exp = spec.load(path, reduced=reduced)
    results = run_experiment(exp, out, resume=resume, console=console)
    return report.write(exp, results, out, figures=figures)
