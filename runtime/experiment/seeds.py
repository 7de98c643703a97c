"""Training one method for several seeds: together under ``jax.vmap``, or one after another.

A seed's run is the run ``ddmc compile --run`` makes with that seed (``runtime/train.py``): params
from ``fold_in(key(seed), 0)``, the batch order of epoch ``e`` from ``fold_in(fold_in(key(seed),
1), e)``, random ops from ``fold_in(key(seed), 2)``, the same step (``train_step.make``) and
optimiser. :func:`train_vmapped` stacks the seeds' train states on a leading axis and runs one
jitted, vmapped step for all of them: the same arithmetic per seed, so the params agree with the
sequential runs up to the order of floating-point reductions XLA picks for a batched kernel
(tests/test_experiment.py states the tolerance). Seeds are trained together in groups as large
as the device's memory allows (:func:`group_size`).

What the vmapped loop leaves to the sequential one: a curriculum (its batches depend on each
seed's params), ``compare_rules``, saliency, a learned learning rate. :func:`vmappable` says
whether a configuration fits; the runner falls back to :func:`train_sequential` otherwise. A
failed solve or a non-finite step in any seed also falls back, so that the sequential run raises
its located error. The vmapped loop writes no checkpoints (the runner saves a group of seeds
when it finishes); with ``eval_every`` it evaluates every seed's test metrics (what a target's
steps-to-target reads).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddm.compiler.binding import bind_dims
from ddm.dsl.diagnostics import DdmError
from ddm.runtime import devices, memory, train_step
from ddm.runtime.config import RunConfig
from ddm.runtime.data import Dataset
from ddm.runtime.optimizers import make_optimizer
from ddm.runtime.phi import PhiSetup
from ddm.runtime.program import Program

__all__ = ["SeedRun", "train_vmapped", "train_sequential", "vmappable", "group_size"]


@dataclass
class SeedRun:
    """One seed's trained params, its learning curve (per log step: loss, gradient norm) and
    the seconds its group took to train (compilation apart)."""

    seed: int
    params: Any
    curve: list[dict] = field(default_factory=list)
    train_s: float = 0.0
    compile_s: float = 0.0
    vmapped: bool = False
    devices: int = 1  # the devices its group's train state was spread over


class _Fallback(Exception):
    """A vmapped group met what only the sequential loop reports well."""


def vmappable(cfg: RunConfig) -> str | None:
    """Why ``cfg`` must train seed by seed (None: the seeds can be vmapped)."""
    v = cfg.values
    for key in ("curriculum", "saliency"):
        if v.get(key):
            return f"{key} is set"
    if v.get("compare_rules"):
        return "compare_rules is set"
    if v["optimizer"].get("hypergradient", 0.0) > 0:
        return "the optimizer learns its own rate"
    return None


def _needed(prog: Program):
    g = prog.graph
    return g.inputs_needed([g.loss] + [i for _, i in g.metrics])


def bound_dims(prog: Program, data: Dataset, cfg: RunConfig) -> dict[str, int]:
    needed = _needed(prog)
    shapes = {s.name: np.shape(data.train[s.name]) for s in needed}
    dtypes = {s.name: np.asarray(data.train[s.name]).dtype for s in needed}
    try:
        return bind_dims(
            prog.graph, shapes, dtypes, needed, True, f"data {cfg.values['data']['name']}"
        )
    except DdmError as err:
        raise prog.product.locate(err) from None


def group_size(prog: Program, dims: dict[str, int], batch: int, seeds: int) -> int:
    """The most seeds whose training fits the device's memory at once (at least 1)."""
    size = seeds
    while size > 1:
        try:
            memory.check(prog.graph, dims, batch * size, True, "training seeds together")
            return size
        except DdmError:
            size //= 2
    return 1


def train_vmapped(
    prog: Program, cfg: RunConfig, data: Dataset, seeds, on_step=None, mesh=None
) -> list[SeedRun]:
    """Train ``prog`` (already the variant to train) for every seed in ``seeds`` at once.
    ``on_step(done, total)`` is called after every step (progress). ``mesh``
    (``devices.make_mesh``): the seeds spread over its devices, each device training its share
    (the list is padded to a multiple of the devices with repeats of the last seed, whose
    results are dropped); the data are replicated."""
    import jax
    import jax.numpy as jnp

    kept = len(seeds)
    if mesh is not None and len(seeds) % mesh.devices.size:
        seeds = list(seeds) + [seeds[-1]] * (mesh.devices.size - len(seeds) % mesh.devices.size)
    v = cfg.values
    product = prog.product
    dims = bound_dims(prog, data, cfg)
    needed = _needed(prog)
    arrays = {s.name: jnp.asarray(data.train[s.name]) for s in needed}
    n = data.n("train")
    batch = min(int(v["batch"]), n)
    per_epoch = n // batch
    steps = int(v["steps"])
    optimizer = make_optimizer(v["optimizer"], v["clip_norm"], steps)
    floats = {s.name for s in needed if np.asarray(data.train[s.name]).dtype.kind == "f"}
    stepper = train_step.make(
        product,
        optimizer,
        clip_norm=v["clip_norm"],
        gradient_stats=False,
        phi=PhiSetup(product, cfg, floats),
    )
    keys = [jax.random.key(s) for s in seeds]
    states = [
        stepper.init(prog.init(jax.random.fold_in(k, 0), **dims), jax.random.fold_in(k, 2))
        for k in keys
    ]
    state = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
    order = jnp.stack([jax.random.key_data(jax.random.fold_in(k, 1)) for k in keys])
    if mesh is not None:  # the seed axis over the devices; the data on every device
        state, order = jax.device_put((state, order), devices.by_rows(mesh))
        arrays = devices.replicate(arrays, mesh)

    @jax.jit
    def permutations(order, epoch):
        return jax.vmap(
            lambda k: jax.random.permutation(
                jax.random.fold_in(jax.random.wrap_key_data(k), epoch), n
            )
        )(order)

    def one(st, idx):
        st, report = stepper.step(st, {k: a[idx] for k, a in arrays.items()})
        return st, (report.loss, report.grad_norm, report.ok, report.finite)

    step = jax.jit(jax.vmap(one), donate_argnums=(0,))
    eval_every = int(v.get("eval_every") or 0)
    test = {s.name: jnp.asarray(data.test[s.name]) for s in needed}
    if mesh is not None:
        test = devices.replicate(test, mesh)
    metrics = jax.jit(jax.vmap(lambda p: product.metrics(p, test)[0]))
    declarative = any(x.op == "argmin" for x in prog.graph.values)
    log_every = int(v["log_every"])
    curves: list[list[dict]] = [[] for _ in seeds]
    started = time.perf_counter()
    compile_s = 0.0
    perm = None
    for s in range(steps):
        epoch, pos = divmod(s, per_epoch)
        if pos == 0 or perm is None:
            perm = permutations(order, epoch)
        idx = perm[:, pos * batch : (pos + 1) * batch]
        t0 = time.perf_counter()
        state, (loss, gnorm, ok, finite) = step(state, idx)
        if s == 0:
            jax.block_until_ready(loss)
            compile_s = time.perf_counter() - t0  # the first call compiles; its step is cheap
        if declarative and not (bool(jnp.all(ok)) and bool(jnp.all(finite))):
            raise _Fallback(f"step {s + 1}: a solve failed or a value was not finite")
        if eval_every and (s + 1) % eval_every == 0 and s + 1 < steps:
            m = {k: np.asarray(x) for k, x in metrics(state.params).items()}
            for i in range(len(seeds)):
                curves[i].append({"step": s + 1, "test": {k: float(x[i]) for k, x in m.items()}})
        if (s + 1) % log_every == 0 or s + 1 == steps:
            losses, norms = np.asarray(loss), np.asarray(gnorm)
            for i in range(len(seeds)):
                curves[i].append(
                    {"step": s + 1, "loss": float(losses[i]), "grad_norm": float(norms[i])}
                )
        if on_step is not None:
            on_step(s + 1, steps)
    jax.block_until_ready(state.params)
    if eval_every:  # the final evaluation, as the sequential run's metrics.json
        m = {k: np.asarray(x) for k, x in metrics(state.params).items()}
        for i in range(len(seeds)):
            curves[i].append({"step": steps, "test": {k: float(x[i]) for k, x in m.items()}})
    if not declarative and bool(jnp.any(state.tally.bad > 0)):
        raise _Fallback("a step's loss or gradient was not finite")
    train_s = time.perf_counter() - started - compile_s
    leaves = jax.tree.leaves(state.params)
    home = leaves[0].sharding if leaves else None  # split by seeds, not copied
    spread = 1 if home is None or home.is_fully_replicated else len(home.device_set)
    return [
        SeedRun(
            seed,
            jax.tree.map(lambda x, i=i: x[i], state.params),
            curves[i],
            train_s,
            compile_s,
            vmapped=True,
            devices=spread,
        )
        for i, seed in enumerate(seeds[:kept])
    ]


def train_sequential(
    prog: Program, cfg: RunConfig, data: Dataset, seed: int, out_dir: str | None = None
) -> SeedRun:
    """One seed through the CLI's own host loop (``runtime/train.py``): checkpoints, located
    errors, every feature of the run section."""
    from ddm.runtime import train as training

    c = RunConfig(dict(cfg.values), dict(cfg.where), dict(cfg.texts))
    c.values["seed"] = seed
    result = training.run(prog, c, out_dir, None, data=data, draw=False)
    curve = []
    for x in result.log:
        if "test" in x:
            curve.append({"step": x["step"], "test": x["test"]})
        elif x.get("loss") is not None:
            curve.append({"step": x["step"], "loss": x["loss"], "grad_norm": x.get("grad_norm")})
    if c.values.get("eval_every"):
        curve.append({"step": c.values["steps"], "test": dict(result.metrics.get("test", {}))})
    return SeedRun(
        seed,
        result.params,
        curve,
        float(result.timing.get("run_s", 0.0)),
        float(result.timing.get("trace_s", 0.0) + result.timing.get("xla_compile_s", 0.0)),
    )


def train_seeds(
    prog: Program,
    cfg: RunConfig,
    data: Dataset,
    seeds,
    vmap: bool = True,
    on_step=None,
    mesh=None,
) -> tuple[list[SeedRun], str]:
    """Every seed's run, vmapped in memory-sized groups when ``vmap`` and the configuration
    allow it (spread over ``mesh``'s devices, :func:`train_vmapped`); returns the runs and how
    they were trained (for the report)."""
    why = None if vmap else "vmap_seeds is false"
    why = why or vmappable(cfg)
    if why is None and len(seeds) > 1:
        dims = bound_dims(prog, data, cfg)
        size = group_size(prog, dims, min(int(cfg.values["batch"]), data.n("train")), len(seeds))
        runs: list[SeedRun] = []
        try:
            for i in range(0, len(seeds), size):
                runs += train_vmapped(
                    prog, cfg, data, list(seeds[i : i + size]), on_step, mesh=mesh
                )
            spread = f" over {mesh.devices.size} devices" if mesh is not None else ""
            return runs, f"vmapped, {size} seeds at a time{spread}"
        except _Fallback as err:
            why = str(err)
    return [
        train_sequential(prog, cfg, data, s) for s in seeds
    ], f"one seed at a time ({why or 'one seed'})"
