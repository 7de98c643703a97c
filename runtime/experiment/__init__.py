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
    out: str | None = None,
    *,
    resume: bool = False,
    reduced: bool = False,
    console=None,
    figures: bool = True,
    devices: int | str = 1,
) -> dict[str, Any]:
    """Run the experiment file at ``path`` into the folder ``out`` (default
    ``runs/experiments/NAME``, as ``ddmc experiment``); returns results.json's content (also
    written there with report.md, timing.json and the figures). ``console``: a
    ``rich.console.Console`` for progress (silent when None). ``devices``: each method's seeds
    spread over that many devices (or ``"all"``; docs/scaling.md).

    >>> import ddm
    >>> ddm.experiment  # doctest: +ELLIPSIS
    <function experiment at ...>
    """
    from ddm.runtime.experiment import report, spec
    from ddm.runtime.experiment.run import default_out, run_experiment

    exp = spec.load(path, reduced=reduced)
    out = out or default_out(exp)
    results = run_experiment(exp, out, resume=resume, console=console, devices=devices)
    return report.write(exp, results, out, figures=figures)
