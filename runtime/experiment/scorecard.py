"""The research plan's scorecard (§12) and kill criteria (§8), measured, never typed in.

``scorecard:`` in the experiment file names the method the card is about and, per row, what it
is compared with; a row the file does not configure is reported as *not measured* with the
reason, and never passes. Each row: metric, threshold, value, interval, pass/fail
(docs/experiments.md § Scorecard gives every definition):

=================  ==========================================  =========  ==========================
row                metric                                      threshold  interval
=================  ==========================================  =========  ==========================
performance        paired Hedges' g of per-path P&L vs a       ≥ 0.3      bootstrap over paths
                   baseline (and the Δ of the named metric)
robustness         conditional Sharpe: median Sharpe of the    ≥ 0.5      bootstrap over paths
                   bottom 20 % volatility regimes / median
latency            median batch-1 inference time / the RL      ≤ 2        bootstrap over calls
                   baseline's, ≥ 1000 calls each
gradient_health    gradient-norm ratio of consecutive layers   [0.1, 10]  range over seeds, batches
interpretability   top-10 Jacobian feature overlap with a      ≥ 0.4      range over seeds
                   reference list
reproducibility    the same seed twice → identical params      = 1        —
                   and metrics (share of bits equal)
phi_integration    a rule's activation precision (a metric)    ≥ 0.8      range over seeds
hybrid_efficiency  steps to target, without rules / with       ≥ 1.5      range over seeds
=================  ==========================================  =========  ==========================
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import numpy as np

from ddm.runtime import stats

__all__ = ["ROWS", "measure", "kill_criteria"]

ROWS = (
    "performance",
    "robustness",
    "latency",
    "gradient_health",
    "interpretability",
    "reproducibility",
    "phi_integration",
    "hybrid_efficiency",
)


def _row(
    metric: str, threshold: str, value=None, interval=None, passed=None, note: str = ""
) -> dict:
    return {
        "metric": metric,
        "threshold": threshold,
        "value": value,
        "interval": interval,
        "pass": passed,
        "note": note,
    }


def _sharpe_metrics(exp) -> set[str]:
    return {m.name for m in exp.metrics if m.stat == "sharpe"}


def _finite_mean(values) -> float:
    """The mean over runs, NaN when any run's value is undefined (a conditional Sharpe is,
    when the median regime's Sharpe is not positive: the bad case, never dropped)."""
    x = np.asarray(values, np.float64)
    return float(np.mean(x)) if np.all(np.isfinite(x)) else float("nan")


def _missing(metric: str, threshold: str, why: str) -> dict:
    return _row(metric, threshold, note=f"not measured: {why}")


def timings(fn: Callable, args: tuple, calls: int = 1000, warmup: int = 20) -> np.ndarray:
    """Seconds per call of ``fn(*args)``, blocked on its result, after ``warmup`` calls."""
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    out = np.empty(calls)
    for i in range(calls):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        out[i] = time.perf_counter() - t
    return out


def _median_ratio(a: np.ndarray, b: np.ndarray, seed: int, confidence: float) -> tuple[float, list]:
    r = stats.bootstrap(
        lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis),
        [a, b],
        seed=seed,
        paired=False,
        resamples=2000,
        confidence=confidence,
        bca=False,
        vectorized=True,
    )
    return r.estimate, list(r.percentile)


def minibatch_grads(prog, params, arrays: Mapping[str, np.ndarray], batch: int, batches: int, key):
    """The loss's gradient at ``params`` on ``batches`` training minibatches of ``batch``
    samples, minibatch k drawn with ``fold_in(key, k)`` (the gradient jitted once per
    program): what the gradient-health row and the gradient variance read."""
    import jax

    fn = getattr(prog, "_experiment_grad", None)
    if fn is None:
        fn = jax.jit(jax.grad(lambda p, b: prog.product.loss(p, b)[0]))
        prog._experiment_grad = fn  # type: ignore[attr-defined]
    n = len(next(iter(arrays.values())))
    for k in range(batches):
        idx = np.asarray(
            jax.random.choice(jax.random.fold_in(key, k), n, (min(batch, n),), replace=False)
        )
        yield fn(params, {name: a[idx] for name, a in arrays.items()})


def layer_ratios(
    prog, params, arrays: Mapping[str, np.ndarray], batch: int, batches: int, key
) -> list[float]:
    """Gradient-norm ratios of consecutive layers (layer i+1 over layer i; w and b together) of
    every layer param, on ``batches`` training batches drawn with ``key``."""

    layers = [p.name for p in prog.graph.params if p.is_layer]
    out = []
    for g in minibatch_grads(prog, params, arrays, batch, batches, key):
        for name in layers:
            tree = g[name]
            depth = len([x for x in tree if x.startswith("w")])
            norms = [
                float(
                    np.sqrt(
                        sum(
                            np.sum(np.square(np.asarray(tree[f"{p}{i}"])))
                            for p in "wb"
                            if f"{p}{i}" in tree
                        )
                    )
                )
                for i in range(depth)
            ]
            out += [b / a for a, b in zip(norms[:-1], norms[1:]) if a > 0]
    return out


def measure(ctx: Mapping[str, Any]) -> dict[str, dict]:
    """Every row of the scorecard from the context the runner gathers (``ctx``: exp, card,
    market result, values, regime vol, trained runs, programs, data, latency callables)."""
    card = ctx["card"]
    method = card["method"]
    result = ctx["result"]
    conf = float(ctx["exp"].statistics["confidence"])
    seed = int(ctx["exp"].statistics["seed"])
    rows: dict[str, dict] = {}

    perf = card.get("performance")
    if perf:
        c = next(
            (
                x
                for x in result["comparisons"]
                if x["method"] == method
                and x["against"] == perf["against"]
                and x["metric"] == perf.get("metric", x["metric"])
            ),
            None,
        )
        if c is None or c.get("hedges_g") is None:
            rows["performance"] = _missing(
                "Hedges' g vs " + perf["against"], "≥ 0.3", "no such comparison in 'comparisons'"
            )
        else:
            g, ci = c["hedges_g"], c["hedges_g_ci"]
            rows["performance"] = _row(
                (
                    f"Hedges' g of the Sharpe difference, {method} vs {perf['against']}"
                    if c["metric"] in _sharpe_metrics(ctx["exp"])
                    else f"Hedges' g of per-path P&L, {method} vs {perf['against']}"
                ),
                "≥ 0.3",
                g,
                ci,
                bool(g >= 0.3 and ci[0] > 0 and c["significant"]),
                f"Δ{c['metric']} = {c['delta']:.4g} [{c['ci'][0]:.4g}, {c['ci'][1]:.4g}], "
                f"p(BH) = {c['p_adjusted']:.3g}",
            )
    else:
        rows["performance"] = _missing(
            "Hedges' g", "≥ 0.3", "scorecard.performance names no baseline"
        )

    vol = ctx.get("vol")
    if vol is not None:
        v = ctx["values"][method]
        est = _finite_mean([stats.conditional_sharpe(run, vol) for run in v])
        n = v.shape[-1]

        def cs(idx, axis=-1):
            i = np.asarray(idx, np.intp)
            out = []
            for row in i:
                out.append(
                    _finite_mean([stats.conditional_sharpe(run[row], vol[row]) for run in v])
                )
            return np.asarray(out)

        interval = None
        if np.isfinite(est):
            try:
                r = stats.bootstrap(
                    cs,
                    [np.arange(n, dtype=np.float64)],
                    seed=[seed, 99],
                    resamples=200,
                    confidence=conf,
                    bca=False,
                    vectorized=True,
                )
                interval = list(r.percentile)
            except ValueError:  # some resamples have no positive median regime Sharpe
                interval = None
        rows["robustness"] = _row(
            "conditional Sharpe (bottom-20 % volatility regimes / median)",
            "≥ 0.5",
            est,
            interval,
            bool(np.isfinite(est) and est >= 0.5),
            "200 path resamples"
            + ("" if np.isfinite(est) else "; the median regime Sharpe is ≤ 0: undefined"),
        )
    else:
        rows["robustness"] = _missing(
            "conditional Sharpe", "≥ 0.5", "regimes.volatility names no per-path volatility"
        )

    lat = ctx.get("latency") or {}
    against = (card.get("latency") or {}).get("against")
    if method in lat and against in lat:
        ratio, ci = _median_ratio(lat[method], lat[against], seed, conf)
        rows["latency"] = _row(
            f"median batch-1 inference, {method} / {against}",
            "≤ 2",
            ratio,
            ci,
            bool(ratio <= 2),
            f"{np.median(lat[method]) * 1e6:.1f} µs vs {np.median(lat[against]) * 1e6:.1f} µs "
            f"over {lat[method].size} calls",
        )
    else:
        rows["latency"] = _missing(
            "latency ratio",
            "≤ 2",
            "scorecard.latency names no baseline with a policy"
            if not against
            else f"no policy to time for {against}",
        )

    gh = ctx.get("gradient_ratios")
    if gh:
        lo, hi = float(np.min(gh)), float(np.max(gh))
        med = float(np.median(gh))
        rows["gradient_health"] = _row(
            "gradient-norm ratio of consecutive layers",
            "∈ [0.1, 10]",
            med,
            [lo, hi],
            bool(lo >= 0.1 and hi <= 10),
            f"{len(gh)} ratios (layers × batches × seeds); interval = min…max",
        )
    else:
        rows["gradient_health"] = _missing(
            "layer gradient ratio", "∈ [0.1, 10]", "the method has no multi-layer param"
        )

    sal = ctx.get("saliency")
    if sal:
        lo, hi = min(sal), max(sal)
        rows["interpretability"] = _row(
            "top-10 Jacobian feature overlap with the reference",
            "≥ 0.4",
            float(np.mean(sal)),
            [lo, hi],
            bool(np.mean(sal) >= 0.4),
            "range over seeds",
        )
    else:
        rows["interpretability"] = _missing(
            "top-10 feature overlap",
            "≥ 0.4",
            "scorecard.interpretability gives no expert reference features",
        )

    rep = ctx.get("reproducibility")
    if rep is not None:
        rows["reproducibility"] = _row(
            "same seed twice → identical params and metrics",
            "= 1",
            rep["share"],
            None,
            bool(rep["share"] == 1.0),
            rep["note"],
        )
    else:
        rows["reproducibility"] = _missing("determinism", "= 1", "not configured")

    phi = ctx.get("precision")
    if phi:
        rows["phi_integration"] = _row(
            f"concept activation precision ({card['phi_integration']['metric']})",
            "≥ 0.8",
            float(np.mean(phi)),
            [min(phi), max(phi)],
            bool(np.mean(phi) >= 0.8),
            "test set, range over seeds",
        )
    else:
        rows["phi_integration"] = _missing(
            "activation precision", "≥ 0.8", "scorecard.phi_integration names no precision metric"
        )

    he = ctx.get("speedup")
    if he:
        vals = [x for x in he["ratios"] if x is not None]
        if vals:
            rows["hybrid_efficiency"] = _row(
                f"steps to {he['metric']} ≥ {he['value']}: {he['against']} / {method}",
                "≥ 1.5",
                float(np.median(vals)),
                [min(vals), max(vals)],
                bool(np.median(vals) >= 1.5),
                he["note"],
            )
        else:
            rows["hybrid_efficiency"] = _row(
                f"steps to {he['metric']} ≥ {he['value']}", "≥ 1.5", None, None, False, he["note"]
            )
    else:
        rows["hybrid_efficiency"] = _missing(
            "convergence speed-up",
            "≥ 1.5",
            "scorecard.hybrid_efficiency names no rules-off method and target",
        )
    return rows


def kill_criteria(ctx: Mapping[str, Any], rows: Mapping[str, dict]) -> list[dict]:
    """The §8 kill criteria that an experiment can evaluate, each with its measured value."""
    out = []
    result = ctx["result"]
    method = ctx["card"]["method"]
    perf = ctx["card"].get("performance") or {}
    c = next(
        (
            x
            for x in result["comparisons"]
            if x["method"] == method
            and x["against"] == perf.get("against")
            and x["metric"] == perf.get("metric", x["metric"])
        ),
        None,
    )
    if c is not None and c.get("hedges_g") is not None:
        g = c["hedges_g"]
        out.append(
            {
                "phase": "2",
                "criterion": "effect size < 0.1",
                "value": g,
                "killed": bool(g < 0.1),
                "note": f"Hedges' g of the performance row ({method} vs {c['against']})",
            }
        )
    curves = ctx.get("curves", {}).get(method)
    if curves:
        unstable = 0
        for c in curves:
            losses = np.asarray([x["loss"] for x in c if x.get("loss") is not None], np.float64)
            q = max(1, losses.size // 4)
            if (
                not losses.size
                or not np.all(np.isfinite(losses))
                or np.mean(losses[-q:]) > np.mean(losses[:q])
            ):
                unstable += 1
        share = unstable / len(curves)
        out.append(
            {
                "phase": "2",
                "criterion": "training instability in > 30 % of runs",
                "value": share,
                "killed": bool(share > 0.3),
                "note": "a run is unstable when a logged training loss is not finite or the mean "
                "of its last quarter of logged losses is above that of its first quarter",
            }
        )
    cs = rows.get("robustness", {}).get("value")
    if cs is not None and np.isfinite(cs):
        out.append(
            {
                "phase": "4",
                "criterion": "conditional Sharpe < 0",
                "value": cs,
                "killed": bool(cs < 0),
                "note": "",
            }
        )
    lat = rows.get("latency", {}).get("value")
    if lat is not None:
        out.append(
            {
                "phase": "3",
                "criterion": "latency regression > 5× (vs the RL baseline)",
                "value": lat,
                "killed": bool(lat > 5),
                "note": "",
            }
        )
    mem = ctx.get("memory")
    if mem:
        gb = mem["training_bytes"] / 2**30
        out.append(
            {
                "phase": "1",
                "criterion": "memory > 32 GB",
                "value": gb,
                "killed": bool(gb > 32),
                "note": "the compiler's footprint estimate of a training step, GiB",
            }
        )
    return out


def score(exp, prog, data, values, vol, progs, latency, result) -> tuple[dict, list]:
    """Measure what the rows need (latency, layer gradients, saliency, reproducibility,
    precision, steps to target, memory) and return ``(rows, kill criteria)``."""
    import jax

    from ddm.compiler.footprint import estimate
    from ddm.runtime.experiment import seeds as seeding

    card = dict(exp.scorecard)
    method = card.get("method")
    if method not in progs:
        from ddm.runtime.errors import ConfigDiagnostic

        raise ConfigDiagnostic(
            None,
            f"scorecard.method: '{method}' is not a learned method",
            hint="methods: " + ", ".join(progs),
        )
    vprog, runs, cfg = progs[method]
    ctx: dict[str, Any] = {
        "exp": exp,
        "card": card,
        "result": result,
        "values": values,
        "vol": vol,
        "curves": result.get("curves", {}),
    }
    g = vprog.graph
    needed = g.inputs_needed([g.nodes.get(m.output) for m in exp.methods if m.name == method])
    one = {s.name: np.asarray(data.test[s.name][0]) for s in needed}
    apply = jax.jit(lambda p, x: vprog.product.apply(p, x)[0])
    ctx["latency"] = dict(latency)
    ctx["latency"][method] = timings(apply, (runs[0].params, one))

    train = {s.name: np.asarray(a) for s in g.inputs_needed([g.loss]) for a in [data.train[s.name]]}
    key = jax.random.key(int(exp.statistics["seed"]))
    ratios: list[float] = []
    for r in runs:
        ratios += layer_ratios(vprog, r.params, train, int(cfg.values["batch"]), 5, key)
    ctx["gradient_ratios"] = ratios

    interp = card.get("interpretability")
    if interp and interp.get("reference"):
        from ddm.runtime import saliency

        settings = {
            "of": interp["of"],
            "wrt": interp["wrt"],
            "top": int(interp.get("top", 10)),
            "samples": int(interp.get("samples", 512)),
            "reference": list(interp["reference"]),
        }
        ctx["saliency"] = [
            saliency.compute(vprog, r.params, data.test, settings)["overlap"] for r in runs
        ]

    rep = card.get("reproducibility", {})
    steps = int(rep.get("steps", 10))
    c2 = type(cfg)(dict(cfg.values), dict(cfg.where), dict(cfg.texts))
    c2.values["steps"] = min(steps, int(cfg.values["steps"]))
    c2.values["eval_every"] = 0
    c2.values["target"] = None
    twice = [seeding.train_sequential(vprog, c2, data, exp.seeds[0]) for _ in range(2)]
    leaves = [np.asarray(x) for x in jax.tree.leaves(twice[0].params)]
    other = [np.asarray(x) for x in jax.tree.leaves(twice[1].params)]
    same = [bool(np.array_equal(a, b)) for a, b in zip(leaves, other)]
    m1 = vprog.metrics(
        twice[0].params,
        {s.name: data.test[s.name] for s in g.inputs_needed([i for _, i in g.metrics] + [g.loss])},
    )
    m2 = vprog.metrics(
        twice[1].params,
        {s.name: data.test[s.name] for s in g.inputs_needed([i for _, i in g.metrics] + [g.loss])},
    )
    same_m = [bool(np.array_equal(np.asarray(m1[k]), np.asarray(m2[k]))) for k in m1]
    ctx["reproducibility"] = {
        "share": (sum(same) + sum(same_m)) / (len(same) + len(same_m)),
        "note": f"seed {exp.seeds[0]} trained twice for {c2.values['steps']} steps: "
        f"{sum(same)}/{len(same)} param arrays and {sum(same_m)}/{len(same_m)} test metrics "
        "bit-identical",
    }

    phi = card.get("phi_integration")
    if phi and phi.get("metric"):
        name = phi["metric"]
        batch = {s.name: data.test[s.name] for s in g.inputs_needed([i for _, i in g.metrics])}
        ctx["precision"] = [float(vprog.metrics(r.params, batch)[name]) for r in runs]

    he = card.get("hybrid_efficiency")
    if he and he.get("against") in progs:
        from ddm.runtime.landscape import steps_to_target

        metric, value = he["metric"], float(he["value"])

        def reach(curve):
            ev = [
                (x["step"], x["test"][metric]) for x in curve if "test" in x and metric in x["test"]
            ]
            return steps_to_target([s for s, _ in ev], [v for _, v in ev], value)

        _, other_runs, _ = progs[he["against"]]
        mine = [reach(r.curve) for r in runs]
        theirs = [reach(r.curve) for r in other_runs]
        total = int(cfg.values["steps"])
        ratio = []
        for a, b in zip(mine, theirs):
            if a is None:
                ratio.append(None)
            else:
                ratio.append((b if b is not None else total) / a)
        ctx["speedup"] = {
            "metric": metric,
            "value": value,
            "against": he["against"],
            "ratios": ratio,
            "note": f"steps to target per seed: {method} {mine}, {he['against']} {theirs} "
            f"(None: not reached in {total}; counted as {total} for the other side)",
        }

    dims = seeding.bound_dims(vprog, data, cfg)
    ctx["memory"] = {"training_bytes": estimate(g, dims, int(cfg.values["batch"]), True).total}
    rows = measure(ctx)
    return rows, kill_criteria(ctx, rows)
