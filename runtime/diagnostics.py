"""Gradient diagnostics of a training run, logged on the log steps.

``diagnostics = "basic"`` (the default) takes them from the step's own gradient g, inside the
compiled train step (a few reductions, no extra compilation). Per param:

- ``norm`` ‖g‖, ``mean`` and ``std`` of its entries, ``sparsity`` the fraction of entries at
  most 1e-6·max|g| (dead units show up here), ``var_abs`` the variance of |g|;
- per layer (``mlp`` params) ``first_last_ratio`` = ‖g of the first weight‖ / ‖g of the
  last‖, healthy in [0.1, 10].

``diagnostics = "full"`` adds, on log steps, the noise of the gradient: the batch is split into
``k`` micro-batches, the gradient is taken on each (one vmapped function, compiled once), and
from the gₖ and their mean ḡ: ``snr`` = ‖ḡ‖² / mean‖gₖ − ḡ‖² and ``signal_fraction`` =
‖ḡ‖² / mean‖gₖ‖² (signal-to-total, in [0, 1]), ``noise`` = mean‖gₖ − ḡ‖². Over the run,
:func:`summary` fits the slope of log(noise) against the step over the last ``window`` log
steps: the variance trend (negative: the noise is settling). ddm's losses are batch-level
(entropic risk, Sharpe, ES over the batch) and have no per-sample gradient, which is why
micro-batches and not samples are the unit.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

HEALTH_BAND = (0.1, 10.0)


MODES = ("basic", "full", "off")


def basic(grads) -> dict:
    """Per param: norm, mean, std, sparsity, var|g| (and an mlp's first/last ratio) of the
    step's gradient — traced inside the train step."""
    import jax
    import jax.numpy as jnp

    out = {}
    for name, tree in grads.items():
        flat = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])
        flat = flat.astype(jnp.float32)
        peak = jnp.max(jnp.abs(flat))
        out[name] = {
            "norm": jnp.sqrt(jnp.sum(flat**2)),
            "mean": jnp.mean(flat),
            "std": jnp.std(flat),
            "sparsity": jnp.mean(jnp.abs(flat) <= 1e-6 * peak),
            "var_abs": jnp.var(jnp.abs(flat)),
        }
        ratio = _first_last(tree)
        if ratio is not None:
            out[name]["first_last_ratio"] = ratio
    return out


def _first_last(tree):
    import jax.numpy as jnp

    if not (isinstance(tree, dict) and "w0" in tree):
        return None
    last = max(int(key[1:]) for key in tree if key[0] == "w" and key[1:].isdigit())
    first_n = jnp.sqrt(jnp.sum(tree["w0"] ** 2))
    return first_n / jnp.maximum(jnp.sqrt(jnp.sum(tree[f"w{last}"] ** 2)), 1e-30)


def micro_batches(batch: int) -> int:
    """How many micro-batches a batch is split into: 8, fewer for small batches."""
    return max(1, min(8, batch // 8))


def make(product, batch: int):
    """``(params, arrays, idx) -> per-param noise statistics`` for log steps (jit it), and
    ``k``, the number of micro-batches."""
    import jax
    import jax.numpy as jnp

    k = micro_batches(batch)
    size = batch // k

    def grads_of(params, sample):
        return jax.grad(lambda p: product.loss(p, sample)[0])(params)

    def diagnose(params, arrays, idx):
        idx = idx[: k * size].reshape(k, size)
        parts = jax.vmap(lambda i: grads_of(params, {n: a[i] for n, a in arrays.items()}))(idx)
        out = {}
        for name, tree in parts.items():
            leaves = jax.tree.leaves(tree)
            flat = jnp.concatenate([jnp.reshape(x, (k, -1)) for x in leaves], axis=1)
            flat = flat.astype(jnp.float32)
            mean = jnp.mean(flat, axis=0)
            signal = jnp.sum(mean**2)
            noise = jnp.mean(jnp.sum((flat - mean) ** 2, axis=1))
            total = jnp.mean(jnp.sum(flat**2, axis=1))
            out[name] = {
                "snr": signal / jnp.maximum(noise, 1e-30),
                "signal_fraction": signal / jnp.maximum(total, 1e-30),
                "noise": noise,
                "signal": jnp.sqrt(signal),
            }
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
        if "noise" in stats:
            steps = [line["step"] for line in recent if "noise" in line["grad"].get(name, {})]
            noise = [
                line["grad"][name]["noise"]
                for line in recent
                if "noise" in line["grad"].get(name, {})
            ]
            entry["noise_trend"] = _slope(steps, [math.log(max(x, 1e-30)) for x in noise])
        if "first_last_ratio" in stats:
            ratios = [
                line["grad"][name]["first_last_ratio"] for line in logged if name in line["grad"]
            ]
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
