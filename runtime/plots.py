"""A run's pictures: learning curves, gradient norms and the P&L distribution, as PNG files.

``plot_run(run_dir)`` reads what a run wrote (``log.jsonl``, ``metrics.json`` and, where the
program has P&L values, ``pnl.npz``) and draws, headless (matplotlib's Agg canvas; no display,
no pyplot state):

- ``learning.png`` — the training loss at every log step, the test loss and metrics at every
  evaluation step (``eval_every``), and the final train and test values as markers; one panel
  per metric;
- ``gradients.png`` — ‖∂loss/∂params‖ over the steps and, with ``diagnostics`` on, each
  param's gradient norm (log scale);
- ``pnl.png`` — the distribution over the test set of every per-sample P&L value the program
  names ``pnl`` or ``pnl_…`` (the decision's and its baselines'), with their means.

``ddmc plot RUN_DIR`` calls it; ``ddmc compile --run`` does at the end of a run unless
``--no-plots``.
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np

from ddm.dsl.diagnostics import DataDiagnostic
from ddm.runtime import checkpoint

__all__ = ["plot_run", "PNL_FILE", "pnl_names"]

PNL_FILE = "pnl.npz"
DPI = 110


def pnl_names(graph) -> list[tuple[str, int]]:
    """(name, value id) of the per-sample float scalars named ``pnl`` or ``pnl_…``."""
    out = []
    for v in graph.values:
        name = v.name or ""
        if (name == "pnl" or name.startswith("pnl_")) and v.stage == "sample":
            t = v.type
            if getattr(t, "ndim", None) == 0 and getattr(t, "is_float", False):
                out.append((name, v.id))
    return out


def _figure(rows: int, cols: int, width: float = 9.0, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig, path: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    checkpoint.atomic_write(path, buf.getvalue())
    return path


def _read(run_dir: str) -> tuple[list[dict], dict]:
    if not os.path.isdir(run_dir):
        raise DataDiagnostic(None, f"{run_dir}: no such run folder")
    log_path, metrics_path = (os.path.join(run_dir, f) for f in ("log.jsonl", "metrics.json"))
    if not os.path.isfile(metrics_path) or not os.path.isfile(log_path):
        raise DataDiagnostic(
            None,
            f"{run_dir}: not a finished run (no metrics.json / log.jsonl)",
            hint="train first: ddmc compile FILE --run --out " + run_dir,
        )
    try:
        with open(log_path, encoding="utf-8") as fh:
            log = [json.loads(line) for line in fh if line.strip()]
        with open(metrics_path, encoding="utf-8") as fh:
            metrics = json.load(fh)
    except (ValueError, OSError) as err:
        raise DataDiagnostic(None, f"{run_dir}: unreadable run files ({err})") from None
    return log, metrics


def plot_run(run_dir: str) -> list[str]:
    """Draw the run's pictures into ``run_dir``; returns the paths written."""
    log, metrics = _read(run_dir)
    written = [_learning(run_dir, log, metrics)]
    grads = _gradients(run_dir, log)
    if grads:
        written.append(grads)
    pnl = os.path.join(run_dir, PNL_FILE)
    if os.path.isfile(pnl):
        written.append(_pnl(run_dir, pnl, metrics))
    return written


def _learning(run_dir: str, log: list[dict], metrics: dict) -> str:
    train_steps = [(x["step"], x["loss"]) for x in log if x.get("loss") is not None]
    evals = [(x["step"], x["test"]) for x in log if "test" in x]
    final_step = metrics.get("steps", train_steps[-1][0] if train_steps else 0)
    final_train, final_test = metrics.get("train", {}), metrics.get("test", {})
    names = ["loss"] + sorted(k for k in final_test if k != "loss" and "__" not in k.strip("_"))
    cols = 2 if len(names) > 1 else 1
    rows = -(-len(names) // cols)
    fig, axes = _figure(rows, cols)
    for k, name in enumerate(names):
        ax = axes[k // cols][k % cols]
        if name == "loss" and train_steps:
            s, y = zip(*train_steps)
            ax.plot(s, y, color="C0", lw=1.6, label="train (step batch)")
        test = [(s, m[name]) for s, m in evals if name in m]
        if name in final_test:
            test.append((final_step, final_test[name]))
        if test:
            s, y = zip(*test)
            ax.plot(s, y, color="C1", lw=1.6, marker="o", ms=3, label="test")
        if name in final_train:
            ax.plot([final_step], [final_train[name]], "s", color="C0", ms=5, label="train (final)")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    fig.suptitle(f"{metrics.get('program', '')}: learning curves", fontsize=11)
    return _save(fig, os.path.join(run_dir, "learning.png"))


def _gradients(run_dir: str, log: list[dict]) -> str | None:
    lines = [x for x in log if x.get("grad_norm") is not None]
    if not lines:
        return None
    fig, axes = _figure(1, 1, height=3.6)
    ax = axes[0][0]
    steps = [x["step"] for x in lines]
    ax.plot(steps, [max(x["grad_norm"], 1e-30) for x in lines], color="k", lw=2, label="all")
    params = sorted({k for x in lines for k in x.get("grad", {})})
    for i, name in enumerate(params):
        ys = [x.get("grad", {}).get(name, {}).get("norm") for x in lines]
        pts = [(s, max(y, 1e-30)) for s, y in zip(steps, ys) if y is not None]
        if pts:
            s, y = zip(*pts)
            ax.plot(s, y, color=f"C{i % 10}", lw=1.2, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("‖∂loss/∂θ‖")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, ncol=min(4, len(params) + 1))
    ax.set_title("gradient norms", fontsize=10)
    return _save(fig, os.path.join(run_dir, "gradients.png"))


def _pnl(run_dir: str, path: str, metrics: dict) -> str:
    with np.load(path, allow_pickle=False) as npz:
        series = {k: np.asarray(npz[k], np.float64) for k in npz.files}
    fig, axes = _figure(1, 1, height=3.8)
    ax = axes[0][0]
    finite = np.concatenate([v[np.isfinite(v)] for v in series.values()] or [np.zeros(1)])
    lo, hi = np.quantile(finite, [0.005, 0.995]) if finite.size else (0.0, 1.0)
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 60)
    order = sorted(series, key=lambda k: (k != "pnl", k))  # the decision's own first
    for i, name in enumerate(order):
        v = series[name][np.isfinite(series[name])]
        label = f"{name}: mean {np.mean(v):.3g}, sd {np.std(v):.3g}" if v.size else name
        ax.hist(
            v,
            bins=bins,
            histtype="step",
            lw=2 if name == "pnl" else 1.3,
            color=f"C{i}",
            label=label,
        )
        if v.size:
            ax.axvline(float(np.mean(v)), color=f"C{i}", ls="--", lw=1)
    ax.set_xlabel("P&L per test sample")
    ax.set_ylabel("samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    n = len(next(iter(series.values()))) if series else 0
    ax.set_title(f"{metrics.get('program', '')}: P&L on the test set ({n} samples)", fontsize=10)
    return _save(fig, os.path.join(run_dir, "pnl.png"))


def save_pnl(run_dir: str, values: dict[str, Any]) -> None:
    """The per-sample P&L values of the test set (``pnl.npz``), for :func:`_pnl`."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.asarray(v) for k, v in values.items()})
    checkpoint.atomic_write(os.path.join(run_dir, PNL_FILE), buf.getvalue())
