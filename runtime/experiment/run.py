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


def default_out(exp: Experiment) -> str:
    """Where an experiment writes when no folder is named: ``runs/experiments/NAME``."""
    return os.path.join("runs", "experiments", exp.name + ("-reduced" if exp.reduced else ""))


def config_for(exp: Experiment, prog, market: dict, method: Method | None = None) -> RunConfig:
    """The run configuration of one market (and method): the program's run section, the
    experiment's settings, the method's, then the data keywords merged into the source."""
    from ddm.runtime.data import SOURCES

    cfg = RunConfig.defaults()
    cfg.apply_run_section(prog.graph.run, prog.sources.texts.get(prog.file, ""))
    cfg.values["compare_rules"] = False  # rules on/off are variants of an experiment
    text = exp.where.text if exp.where is not None else None
    for key, value in exp.settings.items():
        spans = exp.spans(("reduced", "settings", key), ("settings", key))
        cfg.set_at(key, value, *spans, text)
    for key, value in (method.settings if method is not None else {}).items():
        at = ("methods", method.name if method is not None else "", "settings", key)
        cfg.set_at(key, value, *exp.spans(("reduced", *at), at), text)
    data = dict(cfg.values.get("data") or {})
    extra = {**exp.data, **market}
    if "name" in extra:
        data = {}
    data.update(extra)
    if not data.get("name"):
        raise ConfigDiagnostic(
            None, f"{exp.path}: the program has no data source and the experiment names none"
        )
    # a data keyword's error points at the market's keywords (else the experiment's data)
    name = next((k for k, v in exp.markets.items() if dict(v) == market), None)
    spans = exp.spans(
        ("reduced", "markets", name), ("markets", name), ("reduced", "data"), ("data",)
    )
    cfg.set_at("data", data, None, spans[1], text)
    cfg.validate(SOURCES, tuple(n for n, _ in prog.graph.losses))
    return cfg


def _variant(prog, method: Method):
    if not method.variant:
        return prog
    from ddm.compiler.variants import variant_from_mapping

    return prog.variant(variant_from_mapping(method.name, dict(method.variant)))


def run_experiment(
    exp: Experiment, out: str, resume: bool = False, console=None, devices: int | str = 1
) -> dict[str, Any]:
    """Run ``exp`` into the folder ``out`` (module doc); returns results.json's content.
    ``devices`` (a number, or ``"all"``): each method's seeds spread over that many devices
    (``seeds.train_vmapped``), and the methods side by side on lanes of them when there are
    twice as many devices as seeds (:func:`_train_groups`).

    The experiment computes in float64 exactly when it says so (``x64:``), whatever the
    process's ``jax_enable_x64`` flag: a float32 experiment run in a process that switched to
    float64 earlier would otherwise train in float64 and give other bits than the same
    experiment run by ``ddmc`` — and a resume would mix the two."""
    import jax

    from ddm.runtime import devices as devs

    n = devs.resolve(devices)
    if n > devs.available():
        raise ConfigDiagnostic(
            None,
            f"--devices {n}: JAX sees {devs.available()} device(s)",
            hint=f"on a CPU host ddmc experiment --devices {n} makes them (the API: "
            f"jax.config.update('jax_num_cpu_devices', {n}) before JAX starts)",
        )
    mesh = devs.make_mesh(n) if n > 1 else None
    with jax.enable_x64(exp.x64):
        return _run_experiment(exp, out, resume, console, mesh)


def _run_experiment(exp: Experiment, out: str, resume: bool, console, mesh) -> dict[str, Any]:
    from ddm.runtime import outdir
    from ddm.runtime.program import load

    started = time.perf_counter()
    prog = load(exp.program, x64=exp.x64)
    validate(exp, prog)  # every mistake before anything is written or trained
    identity = {
        # what determines the saved artefacts; metrics, comparisons, statistics and the
        # scorecard are recomputed from them, so changing those is a valid resume
        "experiment": {k: exp.raw[k] for k in ARTEFACT_KEYS if k in exp.raw},
        "reduced": exp.reduced,
        "program_sha256": _digest(json.dumps(sorted(prog.sources.texts.items()))),
    }
    if mesh is not None:  # seeds spread over devices agree with one device to rounding only
        identity["devices"] = int(mesh.devices.size)
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
        now = json.loads(json.dumps(identity, default=_jsonable))
        if now != before:
            was, new = before.get("experiment", {}), now["experiment"]
            changed = sorted(k for k in set(was) | set(new) if was.get(k) != new.get(k))
            if before.get("program_sha256") != now["program_sha256"]:
                changed.append("the program's text")
            if before.get("reduced") != exp.reduced:
                changed.append("--reduced")
            if before.get("devices", 1) != now.get("devices", 1):
                changed.append("--devices")
            raise ConfigDiagnostic(
                None,
                f"--resume: {out} holds another experiment (changed: {', '.join(changed)})",
                hint="resume with the same experiment file, or choose another --out",
            )
    else:
        _write_json(marker, identity)

    markets: dict[str, Any] = {}
    card_market = exp.scorecard.get("market", next(iter(exp.markets)))
    card = None
    for market, market_kw in exp.markets.items():
        _say(console, f"market {market}")
        markets[market], gathered = _run_market(
            exp, prog, market, dict(market_kw), out, console, mesh
        )
        if market == card_market:
            card = gathered
    analysis.adjust(markets, float(exp.statistics["alpha"]))
    if exp.scorecard and card is not None:  # after BH: the performance row reads p(BH)
        from ddm.runtime.experiment import scorecard as scoring

        _say(console, "scorecard")
        r = markets[card_market]
        r["scorecard"], r["kill_criteria"] = scoring.score(exp, prog, *card, r)
    base = os.path.dirname(exp.path)
    results = {
        "experiment": exp.name,
        "file": os.path.basename(exp.path),
        "program": os.path.relpath(exp.program, base),
        "reduced": exp.reduced,
        "seeds": list(exp.seeds),
        "statistics": dict(exp.statistics),
        "markets": markets,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    return results


def _run_market(exp: Experiment, prog, market: str, market_kw: dict, out: str, console, mesh=None):
    from ddm.runtime import train as training

    base = os.path.join(out, market)
    cfg = config_for(exp, prog, market_kw)
    data = training.load_data(prog, cfg)
    n_test = data.n("test")
    _check_data(base, market, data)
    _say(console, f"  data: {data.info.get('description', cfg.values['data']['name'])}")
    values: dict[str, np.ndarray] = {}
    curves: dict[str, list] = {}
    trained: dict[str, list] = {}
    how: dict[str, str] = {}
    groups: dict[str, list[Method]] = {}
    progs: dict[str, Any] = {}  # method → its (variant) program
    progs_of: dict[str, Any] = {}  # group → (program, config)
    gid_methods: dict[str, list[str]] = {}
    for m in exp.methods:
        groups.setdefault(m.group, []).append(m)
    plans = []
    for group, methods in groups.items():
        gid = _group_id(group, methods)
        gid_methods[gid] = [m.name for m in methods]
        variant_prog = training.variant(
            _variant(prog, methods[0]), config_for(exp, prog, market_kw, methods[0])
        )
        gcfg = config_for(exp, prog, market_kw, methods[0])
        plans.append((gid, methods, variant_prog, gcfg, os.path.join(base, "runs", gid)))
    every = _train_groups(exp, plans, data, console, how, mesh)
    for (gid, methods, variant_prog, gcfg, _), runs in zip(plans, every):
        trained[gid] = runs
        progs_of[gid] = (variant_prog, gcfg)
        outputs = [m.output for m in methods]
        per_seed = [evaluate.per_path(variant_prog, r.params, data.test, outputs) for r in runs]
        for m in methods:
            values[m.name] = np.stack(
                [np.asarray(p[m.output], np.float64).reshape(n_test) for p in per_seed]
            )
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
                values[b.name] = np.asarray(z["values"], np.float64)
                if "latency" in z.files:
                    latency[b.name] = z["latency"]
            with open(path[:-4] + ".json") as fh:
                infos[b.name] = json.load(fh)
            if "curve" in infos[b.name]:
                curves[b.name] = [infos[b.name].pop("curve")]
            _say(console, f"  baseline {b.name}: read back")
            continue
        t0 = time.perf_counter()
        res = run_baseline(b.kind, ctx, b.args, b.name)
        res.info["wall_s"] = round(time.perf_counter() - t0, 2)
        saved = {"values": np.asarray(res.values, np.float64)}
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
        _write_json(
            path[:-4] + ".json",
            {**res.info, **({"curve": res.curve} if res.curve is not None else {})},
        )
        if "latency" in saved:
            latency[b.name] = saved["latency"]
        _say(console, f"  baseline {b.name}: {res.info['wall_s']} s")
    result = analysis.analyse(exp, values, skipped)
    result["n_test"] = n_test
    result["data"] = dict(cfg.values["data"])
    result["training"] = how
    result["baselines"] = infos
    result["curves"] = curves
    result["landscape"] = {
        gid: _landscape(exp, progs_of[gid], runs, data, values[gid_methods[gid][0]])
        for gid, runs in trained.items()
    }
    vol = None
    vol_node = exp.regimes.get("volatility")
    if vol_node:
        vol = np.asarray(ctx.values([vol_node])[vol_node], np.float64).reshape(n_test)
        metric = next(
            m for m in exp.metrics if m.name == exp.regimes.get("metric", exp.metrics[0].name)
        )
        result["regimes"] = analysis.regime_table(values, vol, metric)
    from ddm.runtime import stats

    extra = {} if vol is None else {"_regime": stats.volatility_regimes(vol)}
    _write_npz(os.path.join(base, "paths.npz"), {**values, **extra})
    return result, (data, values, vol, progs, latency)


ARTEFACT_KEYS = ("program", "x64", "seeds", "vmap_seeds", "settings", "data", "markets")
ARTEFACT_KEYS += ("methods", "baselines")


def _landscape(exp: Experiment, pc, runs, data, outputs: np.ndarray) -> dict[str, Any]:
    """A group's seeds compared (runtime/landscape.py): the variance and consistency of the
    final training loss (the mean of each seed's last quarter of logged losses), angles
    between layer-centred params, Fisher–Rao distances between the seeds' distributions of
    the first method's per-path values on the test paths, and the gradient noise at the final
    params (:func:`gradient_variance`)."""
    import jax

    from ddm.runtime.landscape import landscape

    prog, cfg = pc
    finals = []  # the mean of the last quarter of logged losses: one minibatch is too noisy
    for r in runs:
        losses = np.asarray([x["loss"] for x in r.curve if x.get("loss") is not None], np.float64)
        q = max(1, losses.size // 4)
        finals.append(float(np.mean(losses[-q:])) if losses.size else float("nan"))
    out: dict[str, Any] = {"final_losses": finals}
    if all(np.isfinite(finals)):
        out.update(landscape(finals, [r.params for r in runs], list(outputs)))
    g = prog.graph
    train = {s.name: np.asarray(data.train[s.name]) for s in g.inputs_needed([g.loss])}
    key = jax.random.key(int(exp.statistics["seed"]))
    noise = [
        gradient_variance(prog, r.params, train, int(cfg.values["batch"]), 8, key) for r in runs
    ]
    out["gradient_variance"] = noise
    return out


def gradient_variance(prog, params, arrays, batch: int, batches: int, key) -> float:
    """The gradient's noise at ``params``: over ``batches`` training minibatches (drawn with
    ``key``), the variance of each coordinate of the loss's gradient, summed over coordinates
    (E‖g_b − ḡ‖², ddof 1) — the plan's "gradient variance" (§8, Phase 1.5)."""
    import jax

    from ddm.runtime.experiment.scorecard import minibatch_grads

    flat = [
        np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(grads)])
        for grads in minibatch_grads(prog, params, arrays, batch, batches, key)
    ]
    g = np.stack(flat)
    return float(np.sum(np.var(g, axis=0, ddof=1)))


def validate(exp: Experiment, prog) -> None:
    """Everything that can be checked before training: each market's and method's run
    configuration, the variants, the baselines' arguments and nodes, the regimes' node."""
    from ddm.runtime.experiment.baselines import check_args, check_node
    from ddm.runtime.experiment.evaluate import value_ids

    for market_kw in exp.markets.values():
        config_for(exp, prog, dict(market_kw))
        for m in exp.methods:
            config_for(exp, prog, dict(market_kw), m)
    for m in exp.methods:
        value_ids(_variant(prog, m), [m.output], f"method '{m.name}'")
    for b in exp.baselines:
        check_args(b.kind, b.args, b.name)
        if b.kind == "node":
            check_node(prog, b.args["node"])
    if exp.regimes.get("volatility"):
        check_node(prog, exp.regimes["volatility"])


def _check_data(base: str, market: str, data) -> None:
    """A resumed market must have the same test data as the saved per-path values: its digest
    is kept in MARKET/data.json."""
    from ddm.runtime.data.base import dataset_digest

    digest = dataset_digest(data)
    path = os.path.join(base, "data.json")
    if os.path.exists(path):
        with open(path) as fh:
            if json.load(fh).get("sha256") != digest:
                raise ConfigDiagnostic(
                    None,
                    f"--resume: market '{market}': the data differ from those the saved results "
                    "were computed on (another ddm version, data file or simulator?)",
                    hint="start the experiment again in another --out",
                )
    else:
        os.makedirs(base, exist_ok=True)
        _write_json(path, {"sha256": digest})


def _write_npz(path: str, arrays: dict) -> None:
    import io

    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write(path, buf.getvalue())


def _train_groups(exp, plans, data, console, how, mesh) -> list[list]:
    """Every method group's seed runs, in the order of ``plans``. On several devices the
    groups train side by side: the devices are cut into lanes as wide as the seeds that train
    together (``devices.lanes``), each lane trains one group at a time (its seeds spread over
    the lane), and a group takes the next free lane. A group's result does not depend on which
    lane it took — every lane is as wide — so an experiment is the same bits on every run."""
    from ddm.runtime import devices as devs

    width = len(exp.seeds) if exp.vmap_seeds else 1
    lanes = devs.lanes(mesh, width) if mesh is not None else []
    if len(lanes) < 2 or len(plans) < 2:
        return [
            _trained(exp, prog, cfg, data, folder, console, gid, how, mesh)
            for gid, _, prog, cfg, folder in plans
        ]
    import queue
    from concurrent.futures import ThreadPoolExecutor

    import jax

    free: queue.Queue = queue.Queue()
    for lane in lanes:
        free.put(lane)

    def train(plan):
        gid, _, prog, cfg, folder = plan
        lane = free.get()
        try:
            ids = [d.id for d in lane.devices.ravel()]
            _say(console, f"  {gid}: on devices {', '.join(map(str, ids))}")
            # JAX's precision and default device are per thread: the lane's, in this thread
            with jax.enable_x64(exp.x64), jax.default_device(lane.devices.ravel()[0]):
                return _trained(
                    exp, prog, cfg, data, folder, console, gid, how,
                    lane if lane.devices.size > 1 else None,
                )  # fmt: skip
        finally:
            free.put(lane)

    with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="ddm-lane") as pool:
        futures = [pool.submit(train, plan) for plan in plans]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:  # the groups not started yet: a failure ends the experiment
                f.cancel()
            raise


def _trained(exp, prog, cfg, data, folder, console, gid, how, mesh=None) -> list:
    """The method's seeds, in fixed groups (as many as the device's memory allows at once,
    decided from all the seeds, so a resume forms the same groups): a complete group is read
    back; an incomplete one is trained again as a whole and saved as soon as it finishes."""
    size = len(exp.seeds)
    if exp.vmap_seeds and seeding.vmappable(cfg) is None and size > 1:
        dims = seeding.bound_dims(prog, data, cfg)
        size = seeding.group_size(prog, dims, min(int(cfg.values["batch"]), data.n("train")), size)
        if mesh is not None and size > mesh.devices.size:  # whole rounds of the devices
            size -= size % mesh.devices.size
    else:
        size = 1
    runs: list = []
    ways: list[str] = []
    for i in range(0, len(exp.seeds), size):
        group = list(exp.seeds[i : i + size])
        folders = [os.path.join(folder, f"seed{s}") for s in group]
        if all(os.path.exists(os.path.join(d, "curve.json")) for d in folders):
            for s, d in zip(group, folders):
                with open(os.path.join(d, "curve.json")) as fh:
                    meta = json.load(fh)
                params = params_io.load_params(os.path.join(d, "params.npz"), prog)
                runs.append(seeding.SeedRun(s, params, meta["curve"], vmapped=meta["vmapped"]))
            _say(console, f"  {gid}: seeds {group} read back")
            ways.append("read back")
            continue
        _say(console, f"  {gid}: training seeds {group} ({cfg.values['steps']} steps)")
        t0 = time.perf_counter()
        trained, way = seeding.train_seeds(prog, cfg, data, group, vmap=exp.vmap_seeds, mesh=mesh)
        _say(console, f"  {gid}: trained {way} in {time.perf_counter() - t0:.1f} s")
        ways.append(way)
        dims = seeding.bound_dims(prog, data, cfg)
        for r, d in zip(trained, folders):
            os.makedirs(d, exist_ok=True)
            params_io.save_params(os.path.join(d, "params.npz"), r.params, prog, dims)
            meta = {"curve": r.curve, "vmapped": r.vmapped, "train_s": r.train_s}
            _write_json(os.path.join(d, "curve.json"), {**meta, "compile_s": r.compile_s})
        runs += trained
    how[gid] = "; ".join(dict.fromkeys(ways))
    return runs
