"""An experiment's statistics, from every method's per-path values on the same test paths.

Each method has values ``[runs, n]``: one row per seed (a baseline that does not train has one
row), one column per test path, the same paths for every method. Definitions
(docs/experiments.md § Statistics):

- a **metric** of a method is the statistic of its per-path values, averaged over its runs:
  M(a) = mean_s stat(a_s);
- a **comparison** of a with b on a metric is the paired difference Δ = M(a) − M(b), oriented so
  that Δ > 0 means a is better (for a "lower is better" metric, M(b) − M(a)); its interval and
  p-value come from the paired bootstrap over *paths*: a resample draws path indices with
  replacement and applies the same indices to every run of both methods (scipy's resampling,
  :func:`ddm.runtime.stats.bootstrap` over the index vector), so the seeds stay and the pairing
  is kept;
- the **effect size** is the paired Hedges' g of the per-path values of one run of a against
  one run of b, averaged over every pair of runs (the effect of one trained model, not of an
  ensemble): positive when a's per-path values (P&L) are higher, whatever the metric, with a
  bootstrap interval over paths;
- p-values of all comparisons of the experiment (every market) are adjusted together by
  Benjamini–Hochberg (:func:`adjust`);
- the **power** of each comparison is that of the paired t-test at the planned effect on its
  number of paths, and the paths needed for the planned power.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ddm.runtime import stats
from ddm.runtime.experiment.spec import Comparison, Experiment, Metric

__all__ = ["statistic", "metric_value", "compare", "analyse", "regime_table"]


def statistic(metric: Metric):
    """The metric's statistic as ``f(x, axis=-1)`` over per-path values."""
    a = dict(metric.args)
    kind = metric.stat
    if kind == "mean":
        return lambda x, axis=-1: np.mean(x, axis=axis)
    if kind == "median":
        return lambda x, axis=-1: np.median(x, axis=axis)
    if kind == "std":
        return lambda x, axis=-1: np.std(x, axis=axis, ddof=1)
    if kind == "var":
        return lambda x, axis=-1: np.var(x, axis=axis, ddof=1)
    if kind == "sharpe":
        periods = int(a.get("periods", 1))
        return lambda x, axis=-1: stats.sharpe(x, periods=periods, axis=axis)
    if kind == "entropic_risk":
        lam = float(a.get("risk_aversion", 1.0))

        def entropic(x, axis=-1):
            y = -lam * np.asarray(x, np.float64)
            m = np.max(y, axis=axis, keepdims=True)
            out = np.log(np.mean(np.exp(y - m), axis=axis, keepdims=True)) + m
            return np.squeeze(out, axis=axis) / lam

        return entropic
    if kind == "expected_shortfall":
        level = float(a.get("level", 0.05))

        def shortfall(x, axis=-1):
            x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
            k = max(1, min(x.shape[-1], math.ceil(level * x.shape[-1] - 1e-9)))
            worst = -np.partition(x, k - 1, axis=-1)[..., :k]
            return np.mean(worst, axis=-1)

        return shortfall
    raise ValueError(f"unknown statistic {kind}")


def metric_value(metric: Metric, values: np.ndarray) -> dict[str, Any]:
    """M over runs, and each run's value (the spread over seeds)."""
    f = statistic(metric)
    per_run = np.asarray(f(values, axis=-1), np.float64).reshape(-1)
    out: dict[str, Any] = {"value": float(np.mean(per_run)), "runs": per_run.tolist()}
    if per_run.size > 1:
        out["seed_sd"] = float(np.std(per_run, ddof=1))
    return out


def compare(
    c: Comparison,
    metric: Metric,
    a: np.ndarray,
    b: np.ndarray,
    settings: Mapping[str, Any],
    index: int,
) -> dict[str, Any]:
    """One comparison's Δ with its bootstrap interval and p-value, and the paired Hedges' g
    with its interval (module doc). ``index`` keeps each comparison's resamples distinct while
    the whole experiment stays a function of ``statistics.seed``."""
    f = statistic(metric)
    sign = 1.0 if metric.better == "higher" else -1.0
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    n = a.shape[-1]
    seed = [int(settings["seed"]), index]

    def delta(idx, axis=-1):
        i = np.asarray(idx, np.intp)  # [k, n] resampled path indices
        fa = np.mean(f(a[:, i], axis=-1), axis=0)
        fb = np.mean(f(b[:, i], axis=-1), axis=0)
        return sign * (fa - fb)

    # a resample block holds [runs, k, n] values per method: keep it near 4 Mi values
    batch = max(1, 2**22 // (n * max(a.shape[0] * b.shape[0], a.shape[0] + b.shape[0])))
    interval = "bca" if bool(settings["bca"]) and n <= 5000 else "percentile"
    boot = stats.bootstrap(
        delta,
        [np.arange(n, dtype=np.float64)],
        seed=seed,
        resamples=int(settings["resamples"]),
        confidence=float(settings["confidence"]),
        bca=interval == "bca",
        vectorized=True,
        batch=batch,
    )
    out: dict[str, Any] = {
        "method": c.method,
        "against": c.against,
        "metric": c.metric,
        "better": metric.better,
        "delta": boot.estimate,
        "ci": list(boot.bca or boot.percentile),
        "interval": interval,
        "p_value": boot.p_value,
        "paths": n,
    }
    if c.within is not None:
        # decided on the interval: the whole interval lies above −within
        out["within"] = c.within
        out["holds"] = bool(out["ci"][0] >= -c.within)
    out.update(_effect(a, b, settings, index, batch, scaled=metric.stat == "sharpe"))
    effect = float(settings["effect"])
    out["power"] = stats.power(effect, n, alpha=float(settings["alpha"]), paired=True)
    out["paths_for_power"] = stats.samples_for_power(
        effect, float(settings["power"]), alpha=float(settings["alpha"]), paired=True
    )
    return out


def _effect(
    a: np.ndarray, b: np.ndarray, settings, index: int, batch: int, scaled: bool = False
) -> dict[str, Any]:
    """The paired Hedges' g of a against b, per pair of runs (a's seed s, b's seed s') on the
    same paths and averaged over the pairs — the effect of one trained model, not of an
    ensemble — with a bootstrap interval over paths (the same indices for every run).
    ``scaled`` (a Sharpe metric): each run's per-path values divided by its own standard
    deviation (ddof 0, as the Sharpe ratio) first, so that the mean difference is exactly the
    difference of the per-period Sharpe ratios: g is a standardised Sharpe difference."""
    diff = a[:, None, :] - b[None, :, :]
    if np.all(diff == diff[..., :1]):
        return {"hedges_g": None, "hedges_g_note": "the per-path differences are constant"}

    def g(idx, axis=-1):
        i = np.asarray(idx, np.intp)
        x, y = a[:, i], b[:, i]  # [S, k, n]
        if scaled:
            x = x / np.std(x, axis=-1, keepdims=True)
            y = y / np.std(y, axis=-1, keepdims=True)
        values = stats.hedges_g_along(x[:, None], y[None, :], paired=True)  # [Sa, Sb, k]
        return np.mean(values, axis=(0, 1))

    r = stats.bootstrap(
        g,
        [np.arange(a.shape[-1], dtype=np.float64)],
        seed=[int(settings["seed"]), index, 1],
        resamples=int(settings["resamples"]),
        confidence=float(settings["confidence"]),
        bca=False,
        vectorized=True,
        batch=batch,
    )
    return {"hedges_g": r.estimate, "hedges_g_ci": list(r.percentile)}


def analyse(exp: Experiment, values: Mapping[str, np.ndarray], skipped=()) -> dict[str, Any]:
    """Every metric of every method and every comparison of one market (those with a baseline
    the market skips left out); :func:`adjust` adds the BH-adjusted p-values over all markets."""
    metrics = {
        name: {m.name: metric_value(m, v) for m in exp.metrics} for name, v in values.items()
    }
    by_name = {m.name: m for m in exp.metrics}
    comparisons = [
        compare(c, by_name[c.metric], values[c.method], values[c.against], exp.statistics, k)
        for k, c in enumerate(exp.comparisons)
        if c.method not in skipped and c.against not in skipped
    ]
    return {"metrics": metrics, "comparisons": comparisons}


def adjust(markets: Mapping[str, Mapping[str, Any]], q: float) -> None:
    """Benjamini–Hochberg over every comparison of every market, in place: ``p_adjusted`` and
    ``significant`` on each."""
    rows = [c for m in markets.values() for c in m["comparisons"]]
    if not rows:
        return
    fdr = stats.benjamini_hochberg([c["p_value"] for c in rows], q=q)
    for c, adj, rej in zip(rows, fdr.adjusted, fdr.rejected):
        c["p_adjusted"] = float(adj)
        c["significant"] = bool(rej)


def regime_table(
    values: Mapping[str, np.ndarray], vol: np.ndarray, metric: Metric
) -> dict[str, Any]:
    """Each method's metric in the plan's four volatility regimes (0–25, 25–75, 75–95,
    95–100 % of the per-path realised volatility), and its conditional Sharpe."""
    labels = stats.volatility_regimes(vol)
    f = statistic(metric)
    names = ("low", "medium", "high", "extreme")
    out: dict[str, Any] = {
        "regimes": list(names),
        "paths": np.bincount(labels, minlength=4).tolist(),
    }
    for name, v in values.items():
        row = []
        for r in range(4):
            sel = labels == r
            row.append(float(np.mean(f(v[:, sel], axis=-1))) if sel.sum() >= 2 else None)
        cs = np.asarray([stats.conditional_sharpe(run, vol) for run in v], np.float64)
        out[name] = {  # undefined (None) when any run's median regime Sharpe is not positive
            "by_regime": row,
            "conditional_sharpe": float(np.mean(cs)) if np.all(np.isfinite(cs)) else None,
        }
    return out
