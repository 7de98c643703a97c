"""How alike the runs of one experiment end: the research plan's landscape measures (§8.1),
each defined here and in docs/statistics.md, plus a policy's inference latency.

Over S seeds of one method, with final losses ℓ₁ … ℓ_S and final params θ₁ … θ_S:

- ``loss_variance`` = Var(ℓ) (population, ddof 0) and ``convergence_consistency`` = sd(ℓ) /
  |mean(ℓ)| (the plan's ratio; 0 when every seed ends at the same loss);
- **layer-centred parameters**: every param leaf (a layer's weight matrix, a bias, a scalar)
  minus its own mean, so that a shift common to a layer's entries — which many layers are
  invariant to after normalisation — does not count; the seeds' centred params are concatenated
  into vectors cₛ and compared by the **angle** between them, arccos(⟨cᵢ, cⱼ⟩ / ‖cᵢ‖‖cⱼ‖) ∈
  [0, π] (0: the same direction; scale-free), reported as the mean and sd over the S(S−1)/2
  pairs;
- **Fisher–Rao distance between output distributions**: each policy's outputs on the same test
  inputs are binned on common bins into a distribution p (a histogram normalised to 1); the
  Fisher–Rao geodesic distance between two categorical distributions is
  d(p, q) = 2 arccos(Σₖ √(pₖ qₖ)) ∈ [0, π] (twice the Bhattacharyya angle): 0 for the same
  distribution, π for disjoint supports; mean and sd over pairs.

>>> import numpy as np
>>> fisher_rao(np.array([0.5, 0.5]), np.array([0.5, 0.5]))
0.0
>>> round(fisher_rao(np.array([1.0, 0.0]), np.array([0.0, 1.0])), 6)  # disjoint: π
3.141593
>>> out = landscape([1.0, 1.0, 1.0], [{"w": np.array([1.0, 2.0])}] * 3)
>>> out["loss_variance"], out["convergence_consistency"], out["param_angle_mean"]
(0.0, 0.0, 0.0)
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = [
    "centred",
    "param_angle",
    "fisher_rao",
    "output_distributions",
    "landscape",
    "steps_to_target",
    "latency",
]


def _leaves(tree, prefix: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, Mapping):
        out: dict[str, np.ndarray] = {}
        for k in sorted(tree):
            out.update(_leaves(tree[k], f"{prefix}/{k}" if prefix else str(k)))
        return out
    return {prefix: np.asarray(tree, np.float64)}


def centred(params) -> np.ndarray:
    """Every leaf of a params tree minus its own mean, concatenated (sorted by path)."""
    leaves = _leaves(params)
    if not leaves:
        raise ValueError("params: an empty tree has no parameters to compare")
    return np.concatenate([(a - a.mean()).ravel() for a in leaves.values()])


def param_angle(a: np.ndarray, b: np.ndarray) -> float:
    """The angle between two centred parameter vectors, in [0, π]; 0 when either is zero
    (nothing to tell apart)."""
    if a.shape != b.shape:
        raise ValueError(f"params of different shapes: {a.shape} and {b.shape}")
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    # 2·atan2(‖u − v‖, ‖u + v‖) of the unit vectors: exact near 0 and π, where arccos of the
    # cosine loses half the digits (identical seeds read 2e-8 apart)
    u, v = a / na, b / nb
    return float(2.0 * np.arctan2(np.linalg.norm(u - v), np.linalg.norm(u + v)))


def fisher_rao(p: np.ndarray, q: np.ndarray) -> float:
    """2 arccos(Σ √(pₖ qₖ)) for two distributions on the same categories (each normalised to
    sum 1 here)."""
    p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"two distributions on the same categories, got {p.shape}, {q.shape}")
    if np.any(p < 0) or np.any(q < 0) or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("distributions must be non-negative with a positive total")
    bc = float(np.sum(np.sqrt(p / p.sum() * (q / q.sum()))))
    return float(2.0 * np.arccos(np.clip(bc, -1.0, 1.0)))


def output_distributions(outputs: Sequence[np.ndarray], bins: int = 50) -> np.ndarray:
    """Histograms ``[S, bins]`` of each policy's outputs (flattened) on common bins spanning
    the 0.5–99.5 % quantiles of all of them (outliers fall into the end bins)."""
    flat = [np.asarray(o, np.float64).ravel() for o in outputs]
    if any(not np.all(np.isfinite(f)) for f in flat):
        raise ValueError("outputs: non-finite values")
    everything = np.concatenate(flat)
    lo, hi = np.quantile(everything, [0.005, 0.995])
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    return np.stack([np.histogram(np.clip(f, lo, hi), edges)[0] / f.size for f in flat])


def _pairs(values: Sequence, fn) -> tuple[float, float]:
    d = [fn(a, b) for a, b in itertools.combinations(values, 2)]
    return (float(np.mean(d)), float(np.std(d))) if d else (0.0, 0.0)


def landscape(
    final_losses: Sequence[float],
    final_params: Sequence[Any],
    outputs: Sequence[np.ndarray] | None = None,
    bins: int = 50,
) -> dict[str, float]:
    """The landscape measures of one method over its seeds (module docstring)."""
    losses = np.asarray(final_losses, np.float64)
    if losses.ndim != 1 or losses.size < 1 or not np.all(np.isfinite(losses)):
        raise ValueError("final_losses: one finite loss per seed")
    if len(final_params) != losses.size:
        raise ValueError(f"{losses.size} losses but {len(final_params)} params")
    mean = float(np.mean(losses))
    sd = float(np.std(losses))
    out = {
        "seeds": float(losses.size),
        "loss_variance": float(np.var(losses)),
        "convergence_consistency": 0.0 if sd == 0.0 else sd / abs(mean) if mean else float("inf"),
    }
    vectors = [centred(p) for p in final_params]
    out["param_angle_mean"], out["param_angle_sd"] = _pairs(vectors, param_angle)
    if outputs is not None:
        if len(outputs) != losses.size:
            raise ValueError(f"{losses.size} losses but {len(outputs)} output sets")
        hist = output_distributions(outputs, bins)
        out["fisher_rao_mean"], out["fisher_rao_sd"] = _pairs(list(hist), fisher_rao)
    return out


def steps_to_target(
    steps: Sequence[int], values: Sequence[float], target: float, below: bool = False
) -> int | None:
    """The first evaluated step whose value reaches ``target`` (at least it; at most it with
    ``below``), or None.

    >>> steps_to_target([10, 20, 30], [0.2, 0.6, 0.9], 0.5)
    20
    """
    for s, v in zip(steps, values):
        if (v <= target) if below else (v >= target):
            return int(s)
    return None


def latency(fn: Callable, *args, calls: int = 1000, warmup: int = 10) -> dict[str, float]:
    """Wall-clock seconds per call of ``fn(*args)`` (results blocked on when they are JAX
    arrays): median, 90th percentile and mean over ``calls`` after ``warmup`` calls (which
    absorb compilation). What the plan's "at most 2× the baseline's inference latency" reads,
    at batch 1."""
    import jax

    if calls < 1:
        raise ValueError("calls must be at least 1")
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = np.empty(calls)
    for i in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times[i] = time.perf_counter() - t
    return {
        "median_s": float(np.median(times)),
        "p90_s": float(np.quantile(times, 0.9)),
        "mean_s": float(np.mean(times)),
        "calls": float(calls),
    }
