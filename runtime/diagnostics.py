"""Gradient diagnostics of a training run, measured on the log steps.

A log step's batch is split into ``k`` micro-batches and the loss's gradient is taken on each
(one vmapped, jitted function). Per param, from the micro-batch gradients gₖ and their mean ḡ:

- ``norm`` ‖ḡ‖, ``mean`` and ``std`` of ḡ's entries, ``sparsity`` the fraction of entries of ḡ
  at most 1e-6·max|ḡ| (dead units show up here), ``var_abs`` the variance of |ḡ|;
- ``snr`` = ‖ḡ‖² / mean‖gₖ − ḡ‖² (signal against micro-batch noise) and
  ``signal_fraction`` = ‖ḡ‖² / mean‖gₖ‖² (signal-to-total, in [0, 1]).

Per layer (``mlp`` params): ``first_last_ratio`` = ‖ḡ of the first weight‖ / ‖ḡ of the last‖,
healthy in [0.1, 10]. Over the run, :func:`summary` fits the slope of log(noise) against the
step over the last ``window`` log steps: the variance trend (negative: the gradient noise is
settling). The batch-level losses of ddm (entropic risk, Sharpe, ES over the batch) have no
per-sample gradient, which is why micro-batches and not samples are the unit.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

HEALTH_BAND = (0.1, 10.0)


def micro_batches(batch: int) -> int:
    """How many micro-batches a batch is split into: 8, fewer for small batches."""
    return max(1, min(8, batch // 8))


def make(prog, batch: int):
    """``(params, arrays, idx) -> per-param statistics`` for log steps (jit it), and ``k``."""
    import jax
    import jax.numpy as jnp

    k = micro_batches(batch)
    size = batch // k

    def grads_of(params, sample):
        return jax.grad(prog._loss_impl)(params, sample)

    def diagnose(params, arrays, idx):
        idx = idx[: k * size].reshape(k, size)
        parts = jax.vmap(lambda i: grads_of(params, {n: a[i] for n, a in arrays.items()}))(idx)
        out = {}
        for name, tree in parts.items():
            leaves = jax.tree.leaves(tree)
            flat = jnp.concatenate([jnp.reshape(x, (k, -1)) for x in leaves], axis=1)
            flat = flat.astype(jnp.float32)
            mean = jnp.mean(flat, axis=0)
            signal = jnp.sum(mean ** 2)
            noise = jnp.mean(jnp.sum((flat - mean) ** 2, axis=1))
            total = jnp.mean(jnp.sum(flat ** 2, axis=1))
            peak = jnp.max(jnp.abs(mean))
            out[name] = {
                "norm": jnp.sqrt(signal), "mean": jnp.mean(mean), "std": jnp.std(mean),
                "sparsity": jnp.mean(jnp.abs(mean) <= 1e-6 * peak),
                "var_abs": jnp.var(jnp.abs(mean)),
                "snr": signal / jnp.maximum(noise, 1e-30),
                "signal_fraction": signal / jnp.maximum(total, 1e-30),
                "noise": noise,
            }
            if isinstance(tree, dict) and "w0" in tree:
                last = max(int(key[1:]) for key in tree if key[0] == "w" and key[1:].isdigit())
                first_n = jnp.sqrt(jnp.sum(jnp.mean(tree["w0"], axis=0) ** 2))
                last_n = jnp.sqrt(jnp.sum(jnp.mean(tree[f"w{last}"], axis=0) ** 2))
                out[name]["first_last_ratio"] = first_n / jnp.maximum(last_n, 1e-30)
        return out

    return diagnose, k


def to_floats(stats: Mapping[str, Mapping[str, Any]]) -> dict:
    return {p: {key: float(x) for key, x in s.items()} for p, s in stats.items()}


def summary(lines: list[dict], window: int = 10) -> dict:
    """The last log step's statistics per param, the variance trend over the last ``window``
    log steps, and whether each layer's first/last ratio stayed in the health band."""
    logged = [line for line in lines if "grad" in line]
    if not logged:
        return {}
    last = logged[-1]["grad"]
    recent = logged[-window:]
    out = {}
    for name, stats in last.items():
        entry = dict(stats)
        steps = [line["step"] for line in recent if name in line["grad"]]
        noise = [line["grad"][name]["noise"] for line in recent if name in line["grad"]]
        entry["noise_trend"] = _slope(steps, [math.log(max(x, 1e-30)) for x in noise])
        if "first_last_ratio" in stats:
            ratios = [line["grad"][name]["first_last_ratio"] for line in logged
                      if name in line["grad"]]
            lo, hi = HEALTH_BAND
            entry["ratio_in_band"] = sum(lo <= r <= hi for r in ratios) / len(ratios)
        out[name] = entry
    return out


def _slope(xs, ys) -> float:
    """Least-squares slope of ys against xs (per 1000 steps); 0 with fewer than 2 points."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return 1000.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
