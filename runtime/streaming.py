"""Metrics over more samples than fit in memory: the samples are generated and consumed in
chunks, and every statistic over samples is accumulated as the chunks pass.

A metric is an expression over samples: the program computes per-sample values (the sample
stage, vmapped), lifts them to arrays over the batch, and reduces them (``mean``, ``std``,
``entropic_risk``, …). :func:`plan` splits each metric of a program into

- **per-sample** values: lifted values and elementwise arithmetic on them (computed per chunk),
- **stream points**: a reduction over every sample of a per-sample value (or a pair of them:
  ``mse``, ``bce``, ``accuracy``) — accumulated chunk by chunk (:data:`STREAMS`: sums, counts
  and Chan's pairwise update of the variance in float64, a running log-sum-exp, the worst ⌈αn⌉
  losses for an expected shortfall),
- **scalars**: arithmetic on stream points, computed once at the end by the program's own ops.

Memory is a chunk's arrays and the accumulators: independent of the number of samples, except
for an expected shortfall, which keeps its ⌈αn⌉ worst losses (α = 1 % of 10 million paths:
100 000 numbers). A metric that needs every sample at once in another way — a quantile, a
reduction along one axis only, a value centred on its own batch mean — is named with the
reason (:class:`NotStreamable`).

Results agree with the evaluation of all samples at once up to the order of summation
(accumulated in float64; ``tests/test_streaming.py``).

>>> import ddm, numpy as np
>>> prog = ddm.loads("input x: f32\\nnode y = 2.0 * x\\noutput y\\nloss = mean(y)\\n"
...                  "metric s = std(y)\\nmetric r = mean(y) / std(y)")
>>> chunks = ({"x": np.arange(i, i + 4, dtype=np.float32)} for i in range(0, 12, 4))
>>> out = evaluate(prog.product, {}, chunks, 12)
>>> round(out["loss"], 4), round(out["s"], 4), round(out["r"], 4)
(11.0, 6.9041, 1.5933)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ddm.dsl.diagnostics import DataDiagnostic

# elementwise on samples: a chunk's values are the whole batch's rows
ELEMENTWISE = {"unary", "binary", "compare", "logical", "where", "clip"}


class NotStreamable(DataDiagnostic):
    """A metric that cannot be accumulated over chunks of samples."""


@dataclass
class Stream:
    """One stream point: ``op`` over every sample of the per-sample values ``sources`` (two for
    a pair statistic such as ``mse(a, b)``). Accumulated in float64; NaN and infinities
    propagate as the library's op would give them."""

    value: int  # the reduction's value id
    op: str
    sources: tuple[int, ...]
    attrs: dict
    n: int = 0  # elements seen
    total: float = 0.0
    mean: float = 0.0
    m2: float = 0.0  # Σ (x − mean)² (Chan et al.'s pairwise update)
    peak: float = -math.inf  # max
    low: float = math.inf  # min
    shift: float = 0.0  # the log-sum-exp's finite shift
    scaled: float = 0.0  # Σ exp(x − shift)
    finite: bool = True  # every value seen was finite (smooth_sharpe)
    worst: np.ndarray = field(default_factory=lambda: np.zeros(0))  # expected shortfall

    def add(self, xs: list, k: int = 0) -> None:
        x = self.terms([np.asarray(a, np.float64).ravel() for a in xs])
        if x.size == 0:
            return
        op = self.op
        with np.errstate(all="ignore"):
            if op in ("mean", "sum") or op in PAIRS or op == "hinge_return":
                self.total += float(np.sum(x))
            elif op in ("var", "std", "sharpe", "smooth_sharpe"):
                self.finite = self.finite and bool(np.all(np.isfinite(x)))
                self.total += float(np.sum(x))
                m, m2 = float(np.mean(x)), float(np.sum(np.square(x - np.mean(x))))
                n = self.n + x.size
                delta = m - self.mean
                self.m2 += m2 + delta * delta * self.n * x.size / n
                self.mean += delta * x.size / n
            elif op == "max":  # np.max keeps a NaN, Python's max would drop it
                self.peak = float(np.max([self.peak, np.max(x)]))
            elif op == "min":
                self.low = float(np.min([self.low, np.min(x)]))
            elif op in ("logsumexp", "entropic_risk"):
                top = float(np.max([self.shift, np.max(x)])) if self.n else float(np.max(x))
                shift = top if math.isfinite(top) else 0.0  # as jax.nn.logsumexp
                self.scaled = self.scaled * float(np.exp(self.shift - shift)) + float(
                    np.sum(np.exp(x - shift))
                )
                self.shift = shift
            elif op in ("expected_shortfall", "cvar"):
                both = np.concatenate([self.worst, -x])  # losses
                self.worst = both if both.size <= k else np.partition(both, both.size - k)[-k:]
        self.n += x.size

    def terms(self, xs: list[np.ndarray]) -> np.ndarray:
        """The per-element terms the op reduces (library/losses.py's definitions)."""
        op, a = self.op, self.attrs
        x = xs[0]
        with np.errstate(all="ignore"):
            if op == "hinge_return":
                return np.maximum(a.get("threshold", 0.0) - x, 0.0)
            if op == "entropic_risk":
                return -a.get("lam", 1.0) * x
            if op == "mse":
                return np.square(x - xs[1])
            if op == "accuracy":
                return ((x > a.get("threshold", 0.5)) == (xs[1] > 0.5)).astype(np.float64)
            if op == "bce":
                p, y = np.clip(x, a.get("eps", 1e-7), 1 - a.get("eps", 1e-7)), xs[1]
                return -(y * np.log(p) + (1 - y) * np.log1p(-p))
            if op == "bce_logits":  # log σ(z) = −log(1 + e^{−z})
                y = xs[1]
                return y * np.logaddexp(0.0, -x) + (1 - y) * np.logaddexp(0.0, x)
        return x

    def result(self) -> float:
        op, a = self.op, self.attrs
        n = np.float64(self.n)
        with np.errstate(all="ignore"):
            if op in ("mean", "hinge_return") or op in PAIRS:
                return float(self.total / n)
            if op == "sum":
                return self.total
            if op in ("var", "std"):
                dof = n - a.get("ddof", 0)  # none left: NaN, as jnp.var
                var = np.float64(self.m2) / dof if dof > 0 else np.float64(np.nan)
                return float(var if op == "var" else np.sqrt(var))
            if op == "sharpe":
                sd = np.sqrt(np.float64(self.m2) / n + a.get("eps", 1e-12))
                return float(self.mean / sd * np.sqrt(a.get("periods", 1)))
            if op == "smooth_sharpe":
                ratio = np.float64(self.mean) / np.sqrt(self.m2 / n + a.get("eps", 1e-6))
                if self.finite and np.isfinite(ratio):
                    return float(ratio)
                return float(np.sign(np.nan_to_num(self.total / n, nan=0.0)) * a.get("cap", 100.0))
            if op == "max":
                return self.peak
            if op == "min":
                return self.low
            if op == "logsumexp":
                return float(self.shift + np.log(np.float64(self.scaled)))
            if op == "entropic_risk":
                lse = self.shift + np.log(np.float64(self.scaled))
                return float((lse - np.log(n)) / a.get("lam", 1.0))
            return float(np.mean(self.worst))  # expected shortfall


# statistics of two per-sample values: the mean of a per-element term
PAIRS = ("mse", "accuracy", "bce", "bce_logits")
# the reductions a stream point may be, and whether they need every axis reduced
STREAMS = {
    "mean": True,
    "sum": True,
    "var": True,
    "std": True,
    "max": True,
    "min": True,
    "logsumexp": True,
    "entropic_risk": False,
    "expected_shortfall": False,
    "cvar": False,
    "sharpe": False,
    "smooth_sharpe": False,
    "hinge_return": False,
    **{op: False for op in PAIRS},
}


@dataclass
class Plan:
    streams: list[Stream]
    feeds: list[int]  # the per-sample values the streams read, computed per chunk
    scalars: list[int]  # batch-stage values computed at the end from the streams
    roots: dict[str, int]  # metric name (and "loss") → value id


def plan(product, names: Iterable[str] | None = None) -> Plan:
    """How to accumulate the program's metrics (all, or ``names``; ``"loss"`` is the loss)
    over chunks; raises :class:`NotStreamable` naming a metric that cannot be."""
    from ddm.library import OPS

    g = product.graph
    roots = dict(g.metrics)
    if g.loss is not None:
        roots["loss"] = g.loss
    if names is not None:
        roots = {k: roots[k] for k in names}
    kinds: dict[int, str] = {}  # id → "static" | "sample" | "stream" | "scalar"

    def why(metric: str, v, reason: str) -> NotStreamable:
        return NotStreamable(
            v.span,
            f"metric '{metric}' cannot be accumulated over chunks of samples: {reason}",
            hint="evaluate without --chunk (every sample at once), or write the metric as "
            "mean, sum, var, std, max, min, logsumexp, sharpe, smooth_sharpe, entropic_risk, "
            "expected_shortfall, hinge_return, mse, bce, bce_logits or accuracy of per-sample "
            "values",
        )

    def kind(i: int, metric: str) -> str:
        if i in kinds:
            return kinds[i]
        v = g.values[i]
        if v.stage == "static":
            out = "static"
        elif v.stage == "sample" or v.op == "lift":
            out = "sample"
        else:
            ins = [kind(j, metric) for j in v.inputs]
            family = OPS[v.op].family if v.op in OPS else v.op
            if v.op in STREAMS and ins and ins[0] == "sample":
                if STREAMS[v.op] and v.attr("axis") is not None:
                    raise why(metric, v, f"{v.op} along an axis keeps one value per sample")
                if v.attr("keepdims"):
                    raise why(metric, v, f"{v.op} with keepdims keeps the samples' axis")
                if v.op in PAIRS and ins[1] not in ("sample", "static"):
                    raise why(metric, v, f"{v.op} of a per-sample value and a statistic")
                if v.op not in PAIRS and any(k == "sample" for k in ins[1:]):
                    raise why(metric, v, f"{v.op} of two per-sample values")
                out = "stream"
            elif "sample" not in ins:
                out = "scalar"
            elif family in ELEMENTWISE and all(k in ("sample", "static") for k in ins):
                out = "sample"
            elif family in ELEMENTWISE:
                raise why(
                    metric, v, f"{v.op} combines per-sample values with a statistic of the batch"
                )
            else:
                raise why(metric, v, f"{v.op} needs every sample at once")
        kinds[i] = out
        return out

    for name, i in roots.items():
        if kind(i, name) == "sample":
            raise why(name, g.values[i], "its value is per sample, not a statistic")

    def sources(v) -> tuple[int, ...]:
        return tuple(v.inputs[:2]) if v.op in PAIRS else (v.inputs[0],)

    streams = [
        Stream(i, g.values[i].op, sources(g.values[i]), dict(g.values[i].attrs))
        for i in sorted(i for i, k in kinds.items() if k == "stream")
    ]
    # the rest is computed at the end: statistics of statistics, and roots that read no sample
    # (a param, a constant)
    scalars = sorted(
        {i for i, k in kinds.items() if k == "scalar"}
        | {i for i in roots.values() if kinds[i] == "static"}
    )
    return Plan(streams, sorted({j for s in streams for j in s.sources}), scalars, roots)


def evaluate(
    product, params, chunks: Iterable[dict], n: int, names: Iterable[str] | None = None
) -> dict[str, float]:
    """The metrics (all, or ``names``; ``"loss"`` included) over ``n`` samples that
    ``chunks`` yields as mappings of input arrays, at ``params``."""
    import jax

    from ddm.runtime import solver_report

    p = plan(product, names)
    feeds = tuple(p.feeds)
    compute = jax.jit(lambda params, batch: product.values(params, batch, feeds))
    seen = 0
    dims = None
    for chunk in chunks:
        size = len(next(iter(chunk.values())))
        _check_finite(chunk, seen)
        values, aux = compute(params, chunk)
        solver_report.enforce(product, aux.solvers, f"samples {seen} to {seen + size - 1}")
        for s in p.streams:
            s.add([np.asarray(values[j]) for j in s.sources], _worst_count(s, n))
        seen += size
        dims = dims or product.dims_of(chunk, list(p.roots.values()))
    if seen != n:
        raise DataDiagnostic(None, f"the chunks held {seen} samples; {n} were announced")
    env = {s.value: s.result() for s in p.streams}
    if p.scalars:
        env.update(product.batch_stage(params, env, p.scalars, dims or {}))
    return {name: float(np.asarray(env[i])) for name, i in sorted(p.roots.items())}


def _worst_count(s: Stream, n: int) -> int:
    if s.op not in ("expected_shortfall", "cvar"):
        return 0
    alpha = s.attrs.get("alpha", 0.05)
    return max(1, min(n, math.ceil(alpha * n - 1e-9)))  # as library/losses.py


def _check_finite(chunk: dict, first: int) -> None:
    for name, a in chunk.items():
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            row = int(np.argwhere(~np.isfinite(a.reshape(len(a), -1)))[0][0])
            raise DataDiagnostic(
                None, f"input '{name}' has a non-finite value in sample {first + row}"
            )


def chunked(arrays: dict[str, Any], size: int):
    """Chunks of ``size`` rows of arrays already in memory (the compute is bounded, the data
    are not)."""
    n = len(next(iter(arrays.values())))
    for start in range(0, n, size):
        yield {k: np.asarray(a[start : start + size]) for k, a in arrays.items()}
