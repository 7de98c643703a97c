"""Running an experiment: per market, train every learned method for every seed, evaluate
every method and baseline on the same test paths, keep the per-path values, and analyse them.

Layout of the output folder (docs/experiments.md § Output)::

    OUT/experiment.json              the experiment as run (spec, program digest) — resume checks it
    OUT/MARKET/runs/GROUP/seedK/     params.npz (+ checksum) and curve.json of one trained seed
    OUT/MARKET/baselines/NAME.npz    a baseline's per-path values (+ info.json)
    OUT/MARKET/paths.npz             every method's per-path values [runs, n_test]
    OUT/results.json, OUT/report.md, OUT/figures/*.png

A seed's folder is written atomically once it is complete, so ``--resume`` continues where an
interrupted experiment stopped: finished seeds and baselines are read back, never retrained,
and the analysis is recomputed from the per-path values (same seeds → same bits).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import numpy as np

from ddm.runtime import params_io
from ddm.runtime.checkpoint import atomic_write
from ddm.runtime.config import RunConfig
from ddm.runtime.errors import ConfigDiagnostic
from ddm.runtime.experiment import analysis, evaluate
from ddm.runtime.experiment import seeds as seeding
from ddm.runtime.experiment.baselines import Context, run_baseline
from ddm.runtime.experiment.spec import Experiment, Method

__all__ = ["run_experiment"]


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text, markup=False, highlight=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _group_id(group: str, methods: list[Method]) -> str:
    """A folder name for a training group: its first method's name and a short digest."""
    return f"{methods[0].name}-{_digest(group)[:8]}"


def _write_json(path: str, value) -> None:
    atomic_write(
        path, (json.dumps(value, indent=2, sort_keys=True, default=_jsonable) + "\n").encode()
    )


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def config_for(exp: Experiment, prog, market: dict, method: Method | None = None) -> RunConfig:
    """The run configuration of one market (and method): the program's run section, the
    experiment's settings, the method's, then the data keywords merged into the source."""
    from ddm.runtime.data import SOURCES

    cfg = RunConfig.defaults()
    cfg.apply_run_section(prog.graph.run, prog.sources.texts.get(prog.file, ""))
    cfg.values["compare_rules"] = False  # rules on/off are variants of an experiment
    for key, value in {**exp.settings, **(method.settings if method else {})}.items():
        cfg.set_value(key, value)
    data = dict(cfg.values.get("data") or {})
    extra = {**exp.data, **market}
    if "name" in extra:
        data = {}
    data.update(extra)
    if not data.get("name"):
        raise ConfigDiagnostic(
            None, f"{exp.path}: the program has no data source and the experiment names none"
        )
    cfg.set_value("data", data)
    cfg.validate(SOURCES, tuple(n for n, _ in prog.graph.losses))
    return cfg


def _variant(prog, method: Method):
    if not method.variant:
        return prog
    from ddm.compiler.variants import variant_from_mapping

    return prog.variant(variant_from_mapping(method.name, dict(method.variant)))


def run_experiment(exp: Experiment, out: str, resume: bool = False, console=None) -> dict[str, Any]:
    """Run ``exp`` into the folder ``out`` (module doc); returns results.json's content."""
    from ddm.runtime import outdir
    from ddm.runtime import train as training
    from ddm.runtime.program import load

    started = time.perf_counter()
    prog = load(exp.program, x64=exp.x64)
    program_text = prog.sources.texts.get(prog.file, "")
    identity = {
        "experiment": exp.raw,
        "reduced": exp.reduced,
        "program_sha256": _digest(program_text),
    }
    outdir.prepare(out, 64 << 20)
    marker = os.path.join(out, "experiment.json")
    if os.path.exists(marker):
        if not resume:
            raise ConfigDiagnostic(
                None,
                f"--out {out}: holds an experiment already",
                hint="pass --resume to continue it, or choose another --out",
            )
        with open(marker) as fh:
            before = json.load(fh)
        if json.loads(json.dumps(identity, default=_jsonable)) != before:
            changed = sorted(
                k
                for k in set(before.get("experiment", {})) | set(exp.raw)
                if before.get("experiment", {}).get(k)
                != json.loads(json.dumps(exp.raw.get(k), default=_jsonable))
            )
            if before.get("program_sha256") != identity["program_sha256"]:
                changed.append("the program's text")
            if before.get("reduced") != exp.reduced:
                changed.append("--reduced")
            raise ConfigDiagnostic(
                None,
                f"--resume: {out} holds another experiment (changed: {', '.join(changed)})",
                hint="resume with the same experiment file, or choose another --out",
            )
    else:
        _write_json(marker, identity)

    markets: dict[str, Any] = {}
    card_market = exp.scorecard.get("market", next(iter(exp.markets)))
    if exp.scorecard and card_market not in exp.markets:
        raise ConfigDiagnostic(
            None,
            f"scorecard.market: no market '{card_market}'",
            hint="markets: " + ", ".join(exp.markets),
        )
    for market, market_kw in exp.markets.items():
        _say(console, f"market {market}")
        markets[market] = _run_market(
            exp, prog, market, dict(market_kw), out, console, training, market == card_market
        )
    results = {
        "experiment": exp.name,
        "file": exp.path,
        "program": exp.program,
        "reduced": exp.reduced,
        "seeds": list(exp.seeds),
        "statistics": dict(exp.statistics),
        "markets": markets,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return results


def _run_market(
    exp: Experiment, prog, market: str, market_kw: dict, out: str, console, training, card: bool
):
    base = os.path.join(out, market)
    cfg = config_for(exp, prog, market_kw)
    data = training.load_data(prog, cfg)
    n_test = data.n("test")
    _say(console, f"  data: {data.info.get('description', cfg.values['data']['name'])}")
    values: dict[str, np.ndarray] = {}
    curves: dict[str, list] = {}
    trained: dict[str, list] = {}
    how: dict[str, str] = {}
    from ddm.runtime.experiment.baselines import check_node

    for b in exp.baselines:  # before any training: a mistake here costs nothing
        if b.kind == "node":
            check_node(prog, b.args["node"])
    groups: dict[str, list[Method]] = {}
    progs: dict[str, Any] = {}  # method → its (variant) program
    for m in exp.methods:
        groups.setdefault(m.group, []).append(m)
    for group, methods in groups.items():
        gid = _group_id(group, methods)
        variant_prog = training.variant(
            _variant(prog, methods[0]), config_for(exp, prog, market_kw, methods[0])
        )
        gcfg = config_for(exp, prog, market_kw, methods[0])
        folder = os.path.join(base, "runs", gid)
        runs = _trained(exp, variant_prog, gcfg, data, folder, console, gid, how)
        trained[gid] = runs
        outputs = [m.output for m in methods]
        per_seed = [evaluate.per_path(variant_prog, r.params, data.test, outputs) for r in runs]
        for m in methods:
            values[m.name] = np.stack([p[m.output].reshape(n_test) for p in per_seed])
            curves[m.name] = [r.curve for r in runs]
            progs[m.name] = (variant_prog, runs, gcfg)
    ctx = Context(prog, data, cfg.values["data"], exp.seeds, cfg, trained)
    infos: dict[str, Any] = {}
    latency: dict[str, np.ndarray] = {}
    skipped = set(exp.skips.get(market, ()))
    for b in exp.baselines:
        if b.name in skipped:
            continue
        path = os.path.join(base, "baselines", f"{b.name}.npz")
        if os.path.exists(path):
            with np.load(path) as z:
                values[b.name] = z["values"]
                if "latency" in z.files:
                    latency[b.name] = z["latency"]
            with open(path[:-4] + ".json") as fh:
                infos[b.name] = json.load(fh)
            _say(console, f"  baseline {b.name}: read back")
            continue
        t0 = time.perf_counter()
        res = run_baseline(b.kind, ctx, b.args, b.name)
        res.info["wall_s"] = round(time.perf_counter() - t0, 2)
        saved = {"values": res.values}
        if res.policy is not None:
            from ddm.runtime.experiment.scorecard import timings

            saved["latency"] = timings(res.policy, tuple(res.policy_inputs))
        if res.values.shape[-1] != n_test:
            raise ConfigDiagnostic(
                None,
                f"baseline '{b.name}' gave {res.values.shape[-1]} values for {n_test} test paths",
            )
        values[b.name] = np.asarray(res.values, np.float64)
        infos[b.name] = res.info
        if res.curve is not None:
            curves[b.name] = [res.curve]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write_npz(path, saved)
        _write_json(path[:-4] + ".json", res.info)
        if "latency" in saved:
            latency[b.name] = saved["latency"]
        _say(console, f"  baseline {b.name}: {res.info['wall_s']} s")
    result = analysis.analyse(exp, values, skipped)
    result["n_test"] = n_test
    result["data"] = dict(cfg.values["data"])
    result["training"] = how
    result["baselines"] = infos
    result["curves"] = curves
    vol = None
    vol_node = exp.regimes.get("volatility")
    if vol_node:
        first = next(iter(trained.values()))[0].params
        vol = np.asarray(evaluate.per_path(prog, first, data.test, [vol_node])[vol_node]).reshape(
            n_test
        )
        metric = next(
            m for m in exp.metrics if m.name == exp.regimes.get("metric", exp.metrics[0].name)
        )
        result["regimes"] = analysis.regime_table(values, vol, metric)
    from ddm.runtime import stats

    extra = {} if vol is None else {"_regime": stats.volatility_regimes(vol)}
    _write_npz(os.path.join(base, "paths.npz"), {**values, **extra})
    if card and exp.scorecard:
        from ddm.runtime.experiment import scorecard as scoring

        _say(console, "  scorecard")
        result["scorecard"], result["kill_criteria"] = scoring.score(
            exp, prog, data, values, vol, progs, latency, result
        )
    return result


def _write_npz(path: str, arrays: dict) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, buf.getvalue())


def _trained(exp, prog, cfg, data, folder, console, gid, how) -> list:
    """The group's seeds: read back where finished, the rest trained (vmapped when allowed)."""
    done, todo = [], []
    for s in exp.seeds:
        d = os.path.join(folder, f"seed{s}")
        if os.path.exists(os.path.join(d, "curve.json")):
            with open(os.path.join(d, "curve.json")) as fh:
                meta = json.load(fh)
            done.append(
                seeding.SeedRun(
                    s,
                    params_io.load_params(os.path.join(d, "params.npz"), prog),
                    meta["curve"],
                    meta["train_s"],
                    meta["compile_s"],
                    meta["vmapped"],
                )
            )
        else:
            todo.append(s)
    if done:
        _say(console, f"  {gid}: seeds {[r.seed for r in done]} read back")
    if todo:
        _say(console, f"  {gid}: training seeds {todo} ({cfg.values['steps']} steps)")
        t0 = time.perf_counter()
        runs, way = seeding.train_seeds(prog, cfg, data, todo, vmap=exp.vmap_seeds)
        how[gid] = way
        _say(console, f"  {gid}: trained {way} in {time.perf_counter() - t0:.1f} s")
        dims = seeding.bound_dims(prog, data, cfg)
        for r in runs:
            d = os.path.join(folder, f"seed{r.seed}")
            os.makedirs(d, exist_ok=True)
            params_io.save_params(os.path.join(d, "params.npz"), r.params, prog, dims)
            _write_json(
                os.path.join(d, "curve.json"),
                {
                    "curve": r.curve,
                    "train_s": r.train_s,
                    "compile_s": r.compile_s,
                    "vmapped": r.vmapped,
                },
            )
        done += runs
    else:
        how[gid] = "read back"
    order = {s: i for i, s in enumerate(exp.seeds)}
    return sorted(done, key=lambda r: order[r.seed])
