"""The training run behind ``ddmc compile --run``: data → params → train steps → metrics.

The step itself is a pure function (``runtime/train_step.py``); this module is the host loop
around it: the data and the batch order, evaluation, logging, checkpoints and Ctrl-C, the final
report and the artefacts.

Randomness comes only from ``jax.random.key(seed)``: params from ``fold_in(key, 0)``, the
batch order of epoch ``e`` from ``fold_in(fold_in(key, 1), e)``, random ops from
``fold_in(fold_in(key, 2), step)``. Same seed and config → the same bits in ``metrics.json``
(timings go to ``timing.json``, which naturally differ).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddm.compiler.binding import bind_dims
from ddm.dsl.diagnostics import DataDiagnostic, DdmError
from ddm.runtime import (
    compliance,
    diagnostics,
    memory,
    nonfinite,
    outdir,
    params_io,
    plots,
    saliency,
    solver_report,
    train_step,
)
from ddm.runtime import resume as resume_state
from ddm.runtime.checkpoint import write_json
from ddm.runtime.compiled import Compiled
from ddm.runtime.config import RunConfig
from ddm.runtime.data import SOURCES, Dataset
from ddm.runtime.errors import ConfigDiagnostic
from ddm.runtime.host import InterruptFlag, Progress, TrainingInterrupted
from ddm.runtime.optimizers import learned_lr, make_optimizer, make_schedule
from ddm.runtime.phi import Curriculum, PhiSetup
from ddm.runtime.program import Program

__all__ = ["run", "RunResult", "load_data", "grad_norms_of_run", "TrainingInterrupted"]


@dataclass
class RunResult:
    metrics: dict[str, Any]
    timing: dict[str, float]
    params: Any
    out_dir: str | None
    log: list = field(default_factory=list)  # the lines of log.jsonl
    moved: str | None = None  # why the results are not where they were asked to go
    plots: list = field(default_factory=list)  # the pictures drawn into out_dir

    @property
    def history(self) -> list:
        """The run's log lines (``log.jsonl``): step, loss, learning rate, statistics."""
        return self.log


def load_data(prog: Program, cfg: RunConfig, local: bool = False) -> Dataset:
    """The run's data source, checked against the inputs the loss and metrics need.

    ``local`` (a run of several processes, a source that builds any range of rows): the
    training split is left empty — each process builds its own rows (:meth:`_Run.local_rows`);
    the test set is built whole (every process holds it)."""
    spec = dict(cfg.values["data"])
    name = spec.pop("name")
    roots = [prog.graph.loss] + [i for _, i in prog.graph.metrics]
    needed = prog.graph.inputs_needed([r for r in roots if r is not None])
    source = SOURCES[name]
    if source.maps_inputs:
        spec = _file_source_args(prog, cfg, spec, needed)
    import jax

    try:
        # the same seed, the same data in every process: a source drawing with JAX draws in
        # float32 whether or not float64 is on (--x64, or a float64 program loaded earlier in
        # the process), so an experiment's saved per-path values match a resumed run's data
        with jax.enable_x64(False):
            if local:
                assert source.rows is not None and source.info is not None
                test = source.rows("test", 0, source.n_rows("test", spec), **spec)
                return check_data(
                    prog,
                    cfg,
                    Dataset({}, test, source.info(**spec)),
                    f"data source {name}",
                    ("test",),
                )
            data = source.load(**spec)
    except DataDiagnostic as err:
        if err.span is None:
            raise cfg.error("data", f"data source {name}: {err.message}", hint=err.hint) from None
        raise
    return check_data(prog, cfg, data, f"data source {name}")


def builds_rows(cfg: RunConfig) -> bool:
    """Whether the run's data source builds any range of rows (``path_ids``): then each
    process of a run of several builds only the training rows its devices hold."""
    source = SOURCES[cfg.values["data"]["name"]]
    return source.rows is not None and source.info is not None


def check_data(
    prog: Program,
    cfg: RunConfig,
    data: Dataset,
    name: str,
    splits=("train", "test"),
    first: int = 0,
) -> Dataset:
    """``data`` provides every input the loss and metrics need, all finite (``first``: the
    number of the first row, for a process's own rows)."""
    roots = [prog.graph.loss] + [i for _, i in prog.graph.metrics]
    needed = prog.graph.inputs_needed([r for r in roots if r is not None])
    for split in splits:
        arrays = getattr(data, split)
        missing = [s.name for s in needed if s.name not in arrays]
        if missing:
            raise cfg.error(
                "data",
                f"{name} provides inputs "
                f"{', '.join(sorted(arrays))}; the program also needs "
                f"{', '.join(missing)}",
                hint="rename the program's inputs to match, or choose another source",
            )
        for s in needed:
            a = np.asarray(arrays[s.name])
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                row = first + int(np.argwhere(~np.isfinite(a.reshape(len(a), -1)))[0][0])
                raise cfg.error(
                    "data",
                    f"{name}: input '{s.name}' has a non-finite value in {split} sample {row}",
                )
    return data


def _file_source_args(prog: Program, cfg: RunConfig, spec: dict, needed) -> dict:
    """A file source's call: its path resolved where it was written (a program's run section
    or a YAML file: beside that file; ``--set``: the working directory), the inputs it must
    provide with their declared shapes, and the keywords that map them."""
    mapping = dict(spec.pop("inputs", {}))
    declared = {i.name for i in prog.graph.inputs}
    for key in mapping:
        if key not in declared:
            raise cfg.error(
                f"data.{key}",
                f"{cfg.values['data']['name']} has no setting '{key}', and the program has no "
                f"input '{key}' for it to map",
                hint="the program's inputs: " + ", ".join(sorted(declared)),
            )
    path = spec["path"]
    where = cfg.span("data.path")
    if where is not None and not os.path.isabs(path) and os.path.isfile(where.file):
        path = os.path.join(os.path.dirname(os.path.abspath(where.file)), path)
    spec["path"] = cfg.values["data"]["path"] = path  # where it was read: kept in metrics.json
    spec["specs"] = {
        i.name: (
            tuple(_dim_key(d) for d in i.type.shape),
            i.type.dtype,
        )
        for i in needed
    }
    spec["mapping"] = mapping
    spec["dims"] = prog.graph.dim_values()
    return spec


def _dim_key(d):
    """A declared axis as the file sources read it: its size, or the dim's name to bind."""
    if isinstance(d, int):
        return d
    return d.value if d.value is not None else d.name


def run(
    prog: Program,
    cfg: RunConfig,
    out_dir: str | None,
    console=None,
    resume: bool = False,
    data: Dataset | None = None,
    draw: bool = True,
    traces: bool = False,
) -> RunResult:
    """Train ``prog`` as ``cfg`` says; write artefacts to ``out_dir``; return final metrics.

    With ``resume``, continue from the checkpoint in ``out_dir`` (``checkpoint_every`` steps,
    or written on Ctrl-C): the run then ends bit for bit where an uninterrupted one would.
    ``traces``: keep the compiled functions' traced programs in the trace cache beside the
    compilation cache, and load them on a rerun (runtime/trace_cache.py; ``ddmc`` sets it when
    the compilation cache is on; off for the Python API, where a monkeypatched function would
    not be seen by the cache's key)."""
    prog = variant(prog, cfg)
    loop = _Run(prog, cfg, out_dir, console, fresh=not resume, data=data, traces=traces)
    if resume:
        loop.restore()
    loop.train()
    result = loop.finish()
    if draw and result.out_dir and loop.writer:
        try:
            result.plots = plots.plot_run(result.out_dir)
        except (OSError, ValueError, DdmError) as err:  # the run's results are written already
            loop.say(f"warning: the run's plots were not drawn: {err}")
    return result


def variant(prog: Program, cfg: RunConfig) -> Program:
    """The program a run trains: its named loss (``loss = NAME``), without the rules' terms
    under ``rules = off``."""
    v = cfg.values
    if v.get("loss"):
        named = dict(prog.graph.losses)
        if v["loss"] not in named:
            raise cfg.error(
                "loss",
                f"the program has no loss named '{v['loss']}'",
                hint="its named losses: " + (", ".join(named) or "none"),
            )
        if prog.graph.loss != named[v["loss"]]:
            prog = prog.with_loss(v["loss"])
    if v.get("rules") == "off" and prog.graph.rules:
        prog = prog.without_rules()  # "pure DP": the rules are measured, not trained on
    if prog.graph.loss is None:
        raise ConfigDiagnostic(
            None,
            f"{prog.file} declares no loss, so --run has nothing to train",
            hint="add: loss = ...",
        )
    return prog


class _Run:
    """One training run's host loop and state (see the module doc)."""

    def __init__(
        self,
        prog: Program,
        cfg: RunConfig,
        out_dir: str | None,
        console,
        fresh: bool = True,
        data: Dataset | None = None,
        traces: bool = False,
    ):
        import jax

        self.prog, self.cfg, self.out_dir = prog, cfg, out_dir
        self.product = product = prog.product
        v = self.v = cfg.values
        g = self.g = prog.graph
        # several processes, a source that builds any rows: each builds its own training rows
        self.local = data is None and jax_processes() > 1 and builds_rows(cfg)
        self.data = (
            load_data(prog, cfg, self.local)
            if data is None
            else check_data(prog, cfg, data, "the data")
        )
        if console is not None and self.data.info.get("description"):
            console.print(f"data: {self.data.info['description']}", markup=False, highlight=False)
        needed = g.inputs_needed([g.loss] + [i for _, i in g.metrics])
        # a process's own training rows are built later: the test set's shapes are theirs
        shaped = self.data.test if self.local else self.data.train
        shapes = {s.name: np.shape(shaped[s.name]) for s in needed}
        dtypes = {s.name: np.asarray(shaped[s.name]).dtype for s in needed}
        try:
            self.dims = bind_dims(g, shapes, dtypes, needed, True, f"data {v['data']['name']}")
        except DdmError as err:
            raise product.locate(err) from None
        try:
            memory.check(g, self.dims, int(v["batch"]), True, "training this program")
        except DdmError as err:
            raise product.locate(err) from None
        if v.get("saliency"):
            saliency.check(prog, cfg, self.dims)
        if v.get("target"):
            names = sorted(dict(g.metrics)) + ["loss"]
            if v["target"]["metric"] not in names:
                raise cfg.error(
                    "target.metric",
                    f"the program has no metric '{v['target']['metric']}'",
                    hint="its metrics: " + ", ".join(names),
                )
        self.n = self.training_count() if self.local else self.data.n("train")
        self.batch = min(v["batch"], self.n)
        # several processes (devices.initialize): all compute, process 0 alone writes
        self.writer = jax.process_index() == 0
        self.mesh = self._mesh()  # None: one device, the arrays as they are
        self.train_arrays = (
            self.local_rows(needed) if self.local else self.device(self.data.train, needed)
        )
        self.test = self.device(self.data.test, needed, pad=False)
        self.per_epoch = self.n // self.batch
        self.declarative = any(x.op == "argmin" for x in g.values)

        self.key = jax.random.key(v["seed"])
        self.order_key = jax.random.fold_in(self.key, 1)
        params = prog.init(jax.random.fold_in(self.key, 0), **self.dims)
        if out_dir and fresh:  # before any compile; a resumed one is writable
            size = sum(
                int(np.size(x)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(params)
            )
            self.together(
                lambda: (
                    outdir.prepare(out_dir, outdir.run_bytes(size, bool(v["checkpoint_every"])))
                    if self.writer
                    else None
                )
            )
        self.lr_at = make_schedule(v["optimizer"], v["steps"])  # a number, or a schedule
        optimizer = make_optimizer(v["optimizer"], v["clip_norm"], v["steps"])
        self.phi = PhiSetup(product, cfg, {s.name for s in needed if dtypes[s.name].kind == "f"})
        self.stepper = train_step.make(
            product,
            optimizer,
            clip_norm=v["clip_norm"],
            gradient_stats=v["diagnostics"] != "off",
            phi=self.phi,
        )
        # noise of random ops (gumbel_softmax) per step: fold_in(fold_in(key, 2), step)
        self.state = self.on_mesh(self.stepper.init(params, jax.random.fold_in(self.key, 2)))
        cache = self.traces = self.trace_cache() if traces else None
        self.step_fn = Compiled(
            self._gathered_step, "train step", donate_argnums=(0,), traces=cache
        )
        # the noise of the gradient on log steps: one extra compilation, so only when asked
        self.diagnose = Compiled(
            diagnostics.make(product, self.batch)[0], "gradient diagnostics", traces=cache
        )
        self.adjoint_ids = [i for i in _adjoint_ids(product) if g.values[i].name]
        self.adjoints = Compiled(self._adjoint_stats, "node gradient statistics", traces=cache)
        self.curriculum = Curriculum(
            product, v.get("curriculum"), self.n, self.batch, jax.random.fold_in(self.key, 3)
        )
        # the curriculum weighs the real rows (a rule's weight may be a batch statistic)
        self.curriculum_rows = self.training_rows() if self.curriculum.on else {}
        # Metrics per split: the per-sample values (argmins, scans: most of the program) by
        # one compiled function over chunks of one size, the reductions per split size (cheap
        # to compile) — one compilation of the sample stage, not one per split (issue 15).
        self.chunk = (
            _metric_chunk(self.n, _rows(self.test))
            if self.mesh is None and product.chunkable
            else None
        )
        metrics = product.metrics if self.chunk is None else product.metrics_from_samples
        self.evaluators = {
            what: Compiled(metrics, what, traces=cache)
            for what in ("metrics on the test set", "metrics on the training set")
        }
        # the P&L per test sample that pnl.png draws comes out of the final test metrics'
        # per-sample pass (a function of its own would compile the sample stage once more)
        self.pnl = plots.pnl_names(g)
        self.pnl_ids = tuple(i for _, i in self.pnl)
        metric_roots = [i for _, i in g.metrics] + ([g.loss] if g.loss is not None else [])
        self.pnl_shared = bool(self.pnl_ids) and set(g.inputs_needed(self.pnl_ids)) <= set(
            g.inputs_needed(metric_roots)
        )
        self.test_samples: dict = {}  # the last test evaluation's per-sample P&L, by id
        self.sample_values = Compiled(
            functools.partial(
                product.metric_samples, extra=self.pnl_ids if self.pnl_shared else ()
            ),
            "metrics: per-sample values",
            traces=cache,
        )
        self.solver_summary: dict = {}
        self.log: list = []
        self.skipped = 0
        self.start = 0
        self.fingerprint = resume_state.fingerprint(product.sources.get(g.file, ""), dict(v))
        self.last_checkpoint: list = []  # (step, path) of the newest checkpoint written
        self.drawn: dict[int, Any] = {}  # curriculum batches since the last log step, by step
        self.console = console
        self.checkpoint_failed = False
        self.moved: str | None = None
        self.run_s = 0.0

    def _mesh(self):
        """The devices the batch is split over (devices.py); None for one."""
        from ddm.runtime import devices

        setting = self.v["devices"]
        n = devices.resolve(setting)
        have = devices.available()
        _, processes = devices.process()
        if processes > 1 and (self.v.get("curriculum") or self.v.get("compare_rules")):
            raise self.cfg.error(
                "curriculum" if self.v.get("curriculum") else "compare_rules",
                "a run of several processes trains without a curriculum or compare_rules "
                "(each reads every training sample on one host)",
                hint="train it in one process (several devices are fine)",
            )
        if processes > 1 and n != have:
            raise self.cfg.error(
                "devices",
                f"devices = {setting}: a run of {processes} processes trains on all their "
                f"{have} devices",
                hint=f"set devices = all (or {have})",
            )
        if n == 1:
            return None
        if n > have:
            raise self.cfg.error(
                "devices",
                f"devices = {n}, and JAX sees {have} device{'s' * (have != 1)} ({self.platform()})",
                hint=f"on a CPU host pass --devices {n} (ddmc splits the host into {n} devices), "
                f"or set XLA_FLAGS=--xla_force_host_platform_device_count={n} before starting; "
                "devices = all takes what there is",
            )
        if self.batch % n:
            lo, hi = self.batch - self.batch % n, self.batch + n - self.batch % n
            raise self.cfg.error(
                "batch",
                f"batch {self.batch} does not split evenly over {n} devices"
                + (f" (devices = {setting})" if setting == "all" else ""),
                hint=f"choose a multiple of {n}: batch = {lo or hi}"
                + (f" or {hi}" if lo and hi <= self.n else ""),
            )
        return devices.make_mesh(n)

    @staticmethod
    def platform() -> str:
        import jax

        return jax.default_backend()

    def on_mesh(self, tree):
        """``tree`` replicated over the mesh (as it is on one device)."""
        if self.mesh is None:
            return tree
        from ddm.runtime import devices

        return devices.replicate(tree, self.mesh)

    def trace_cache(self):
        """The cache of traced programs (runtime/trace_cache.py) when the compilation cache
        is on and the run is one process on one device; else None."""
        from ddm.runtime import compile_cache, trace_cache
        from ddm.runtime.data.base import dataset_digest

        folder = compile_cache.enabled()
        if folder is None or self.mesh is not None or jax_processes() > 1:
            return None
        program = {
            "sources": dict(self.product.sources),
            "graph": trace_cache.graph_digest(self.g),
            "x64": self.product.x64,
        }
        context = trace_cache.context(program, dict(self.v), dataset_digest(self.data))
        return trace_cache.TraceCache(os.path.join(folder, "traces"), context)

    # --- pieces the loop compiles --------------------------------------------------------------
    def _gathered_step(self, state, arrays, idx):
        batch = {k: a[idx] for k, a in arrays.items()}
        if self.mesh is None:
            return self.stepper.step(state, batch)
        from ddm.runtime import devices

        # each device computes its slice of the batch; params and report stay replicated
        state, report = self.stepper.step(state, devices.constrain_rows(batch, self.mesh))
        return devices.constrain_replicated((state, report), self.mesh)

    def _adjoint_stats(self, params, arrays, idx):
        from ddm.runtime import adjoints

        return adjoints.stats(self.product, params, {k: a[idx] for k, a in arrays.items()})

    def device(self, arrays, inputs, pad: bool = True):
        """The inputs' arrays on the device — on several, sharded by rows (devices.py; ``pad``:
        zero rows to a multiple of the device count, else replicated when they do not
        divide)."""
        import jax.numpy as jnp

        fdt = self.product.float_dtype
        out = {}
        for s in inputs:
            a = np.asarray(arrays[s.name])
            if self.mesh is None:
                out[s.name] = jnp.asarray(a, fdt if a.dtype.kind == "f" else None)
                continue
            from ddm.runtime import devices

            a = a.astype(np.dtype(fdt)) if a.dtype.kind == "f" else a
            if not pad and devices.process()[1] > 1:
                # several processes: the test set whole on every device, so that every
                # per-sample result (P&L, saliency, compliance) can be read by process 0
                out[s.name] = devices.replicate(a, self.mesh)
            else:
                out[s.name] = devices.shard_rows(a, self.mesh, pad)
        return out

    def training_count(self) -> int:
        """The training rows of a source that builds any range of them (without building)."""
        spec = dict(self.v["data"])
        return SOURCES[spec.pop("name")].n_rows("train", spec)

    def local_rows(self, inputs) -> dict:
        """The training arrays on the mesh, of which this process built only the rows its
        own devices hold (a run of several processes, a source with ``rows``)."""
        import jax

        from ddm.runtime import devices

        assert self.mesh is not None
        spec = dict(self.v["data"])
        name = spec.pop("name")
        rows = SOURCES[name].rows
        assert rows is not None
        lo, hi = devices.local_rows(self.n, self.mesh)

        def build():
            with jax.enable_x64(False):
                part = rows("train", lo, min(hi, self.n), **spec)
            what = f"data source {name}"
            check_data(self.prog, self.cfg, Dataset(part, {}), what, ("train",), first=lo)
            return part

        part = self.together(build)
        fdt = np.dtype(self.product.float_dtype)
        out = {}
        for s in inputs:
            a = np.asarray(part[s.name])
            a = a.astype(fdt) if a.dtype.kind == "f" else a
            out[s.name] = devices.shard_local_rows(a, lo, self.n, self.mesh)
        return out

    def training_rows(self) -> dict:
        """The training arrays without the padding rows a mesh added."""
        if self.mesh is None:
            return self.train_arrays
        return {k: a[: self.n] for k, a in self.train_arrays.items()}

    # --- resuming ------------------------------------------------------------------------------
    def restore(self) -> None:
        """Continue from the checkpoint in ``out_dir``."""
        import jax.numpy as jnp

        v, s = self.v, self.state
        if not self.out_dir:
            raise ConfigDiagnostic(None, "--resume needs the run directory it continues")
        out_dir = self.out_dir

        def read():
            try:
                return resume_state.load(out_dir, s.params, s.opt_state, self.fingerprint)
            except ValueError as err:
                raise ConfigDiagnostic(None, f"--resume {out_dir}: {err}") from None

        r = self.together(read)  # every process reads it; any that cannot stops them all
        if r.step >= v["steps"]:
            raise ConfigDiagnostic(
                None,
                f"--resume {self.out_dir}: the checkpoint is at step "
                f"{r.step} of {v['steps']}; nothing to do",
                hint=f"raise steps, e.g. --set steps={2 * r.step}",
            )
        if "topology" in r.state:
            was, now = [int(x) for x in r.state["topology"]], self.topology()
            if was != now:
                raise ConfigDiagnostic(
                    None,
                    f"--resume {self.out_dir}: the checkpoint was written by {_topology(was)}; "
                    f"this run has {_topology(now)}",
                    hint="resume on the topology that wrote it (the same --devices and "
                    "--num-processes)",
                )
        guards = s.tally.guards
        if "guards" in r.state:
            guards = jnp.asarray(r.state["guards"], jnp.int32)
        if "curriculum" in r.state:
            self.curriculum.probs = np.asarray(r.state["curriculum"], np.float64)
            self.curriculum.weights = np.asarray(r.state["curriculum_weights"], np.float64)
            self.curriculum.refreshed = int(r.state["curriculum_refreshes"])
        tally = train_step.Tally(jnp.int32(0), jnp.int32(r.clipped), guards)
        self.state = self.on_mesh(
            s._replace(params=r.params, opt_state=r.opt_state, step=jnp.int32(r.step), tally=tally)
        )
        self.log, self.skipped, self.start = r.log, r.skipped, r.step

    def checkpoint(self, done: int) -> None:
        if not self.out_dir or self.checkpoint_failed or not self.writer:
            return
        try:
            self.write_checkpoint(done)
        except OSError as err:  # keep training: the results are written (or kept) at the end
            self.checkpoint_failed = True
            self.say(
                f"warning: could not write a checkpoint to {self.out_dir} "
                f"({err.strerror or err}); training goes on without checkpoints"
            )

    def together(self, work):
        """``work()``, knowing whether it failed in any process: one process's failure (process
        0 preparing the folder) raises in every process instead of leaving the others waiting
        in the next collective."""
        if self.mesh is None or jax_processes() == 1:
            return work()
        from ddm.runtime import devices

        try:
            out = work()
        except Exception:
            devices.agree(False)
            raise
        if not devices.agree(True):
            raise ConfigDiagnostic(None, "another process of this run failed (it says why)")
        return out

    def topology(self) -> list[int]:
        """[processes, devices] of this run's mesh (a checkpoint resumes only on the same)."""
        import jax

        return [jax.process_count(), 1 if self.mesh is None else int(self.mesh.devices.size)]

    def say(self, text: str) -> None:
        """A warning for the person running: on the run's console, else on stderr."""
        if not self.writer:
            return
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False)
        else:
            import sys

            print(text, file=sys.stderr)

    def write_checkpoint(self, done: int) -> None:
        assert self.out_dir is not None
        tally, c = self.state.tally, self.curriculum
        extra: dict[str, np.ndarray] = {
            "guards": np.asarray(tally.guards),
            "topology": np.asarray(self.topology()),
        }
        if c.probs is not None and c.weights is not None:
            extra.update(
                curriculum=c.probs,
                curriculum_weights=c.weights,
                curriculum_refreshes=np.asarray(c.refreshed),
            )
        path = resume_state.save(
            self.out_dir,
            done,
            self.state.params,
            self.state.opt_state,
            self.log,
            self.skipped,
            self.fingerprint,
            int(tally.clipped),
            extra,
            config=dict(self.v),
        )
        self.last_checkpoint[:] = [(done, path)]

    # --- the loop ------------------------------------------------------------------------------
    def batch_indices(self, s: int):
        """Rows of training step ``s`` (0-based): a function of (seed, epoch) only."""
        import jax

        epoch, pos = divmod(s, self.per_epoch)
        return jax.random.permutation(jax.random.fold_in(self.order_key, epoch), self.n)[
            pos * self.batch : (pos + 1) * self.batch
        ]

    def train(self) -> None:
        import jax

        v = self.v
        interrupted = InterruptFlag()
        perm = None
        started = time.perf_counter()
        progress = Progress(self.console, v["steps"])
        try:
            interrupted.install()
            for s in range(self.start, v["steps"]):
                epoch, pos = divmod(s, self.per_epoch)
                if self.curriculum.on:
                    idx = self.curriculum.indices(s, self.state.params, self.curriculum_rows)
                    self.drawn[s] = idx
                else:
                    if pos == 0 or perm is None:
                        perm = jax.random.permutation(
                            jax.random.fold_in(self.order_key, epoch), self.n
                        )
                    idx = perm[pos * self.batch : (pos + 1) * self.batch]
                self.state, report = self.step_fn(self.state, self.train_arrays, idx)
                progress.stepped()
                skip = self.after_step(s, report, idx)
                log_now = (s + 1) % v["log_every"] == 0 or s + 1 == v["steps"]
                if log_now:
                    self.log_step(s, report, idx, skip, started, progress)
                if v["eval_every"] and (s + 1) % v["eval_every"] == 0 and s + 1 < v["steps"]:
                    m = _floats(self.evaluate(self.state.params, self.test))
                    self.log.append({"step": s + 1, "test": m})
                    progress.note(s + 1, m)
                every = v["checkpoint_every"]
                if interrupted or (every and (s + 1) % every == 0 and s + 1 < v["steps"]):
                    self.stop_if_nonfinite()
                    self.checkpoint(s + 1)
                if interrupted:
                    raise TrainingInterrupted(s + 1, v["steps"], self.out_dir)
        finally:
            interrupted.restore()
            progress.close()
        self.stop_if_nonfinite()
        jax.block_until_ready(self.state.params)
        # run_s: training alone (the compilations are reported apart)
        compiled = (self.step_fn, self.diagnose, self.adjoints)
        self.run_s = time.perf_counter() - started - sum(c.trace_s + c.compile_s for c in compiled)

    def after_step(self, s: int, report, idx) -> bool:
        """Stop on a failed error-policy solve or an unexpected non-finite step (programs with
        declarative nodes are checked every step); whether the step was skipped."""
        if not self.declarative:
            return False
        if not bool(report.ok):
            raise solver_report.step_failure(self.product, report.solvers, s + 1, np.asarray(idx))
        if bool(report.finite):
            return False
        if not solver_report.nan_policy_failed(self.product, report.solvers):
            loss = float(report.loss)
            what = (
                f"the loss became {loss}"
                if not math.isfinite(loss)
                else f"the gradient's norm became {float(report.grad_norm)}"
            )
            raise DataDiagnostic(
                None,
                f"{what} at step {s + 1}; training stopped before applying that step's update",
                hint="lower the learning rate or set clip_norm",
            )
        self.skipped += 1  # NaNs the user asked for (on_infeasible="nan"): skip the step
        return True

    def stop_if_nonfinite(self) -> None:
        """Raise the located stop when a step of a program without declarative nodes went
        non-finite (recorded in the tally; params are the last good ones)."""
        bad = int(self.state.tally.bad)
        if self.declarative or not bad:
            return
        rows = self.drawn.get(bad - 1) if self.curriculum.on else self.batch_indices(bad - 1)
        sample = {k: a[rows] for k, a in self.train_arrays.items()}
        raise nonfinite.training_stop(
            self.product, self.state.params, sample, bad, self.last_checkpoint
        )

    def log_step(self, s: int, report, idx, skip: bool, started: float, progress) -> None:
        """Append step ``s``'s log line (and update the progress display)."""
        v, g = self.v, self.g
        if skip:
            self.log.append(
                {
                    "step": s + 1,
                    "loss": None,
                    "skipped": True,
                    "solvers": solver_report.step_log(self.product, report.solvers),
                    "skipped_steps": self.skipped,
                }
            )
            return
        self.stop_if_nonfinite()
        self.drawn.clear()
        loss = float(report.loss)
        line: dict[str, Any] = {
            "step": s + 1,
            "loss": loss,
            "grad_norm": float(report.grad_norm),
            "wall_s": round(time.perf_counter() - started, 3),
        }
        if v["clip_norm"] > 0:
            line["clipped"] = bool(report.clipped)
        if callable(self.lr_at):
            line["lr"] = float(np.asarray(self.lr_at(s + 1)))
        elif (eta := learned_lr(self.state.opt_state)) is not None:
            line["lr"] = float(eta)  # after this step's update of it
        if self.declarative:
            line["solvers"] = solver_report.step_log(self.product, report.solvers)
            line["skipped_steps"] = self.skipped
        if g.rules:  # each rule's audit on the step's batch, from the step's own forward pass
            line["rules"] = {
                r.name: {
                    "intent": r.intent,
                    "activation": float(report.rules[r.name].activation),
                    "effective_penalty": float(report.rules[r.name].effective_penalty),
                }
                for r in g.rules
            }
            values = self.product.param_values(self.state.params)
            for r in g.rules:
                if r.memory:
                    line["rules"][r.name]["memory"] = float(values[r.memory])
        if self.phi.ortho is not None:
            line["orthogonality_penalty"] = float(report.penalty)
        if g.guards:
            line["guard_violations"] = {
                x.name: int(c) for x, c in zip(g.guards, np.asarray(self.state.tally.guards))
            }
        if self.curriculum.on:
            line["curriculum"] = self.curriculum.log(idx)
        if v["diagnostics"] != "off":
            line["grad"] = diagnostics.to_floats(report.grads)
        if v["diagnostics"] == "full":
            params = self.state.params
            noise = diagnostics.to_floats(self.diagnose(params, self.train_arrays, idx))
            for name, extra in noise.items():
                line["grad"][name].update(extra)
            nodes = self.adjoints(params, self.train_arrays, idx)
            label = self.product.label
            line["node_grad_norms"] = {label(i): float(nodes[i]["norm"]) for i in self.adjoint_ids}
            line["node_grads"] = {
                label(i): {k: float(x) for k, x in nodes[i].items() if k != "norm"}
                for i in self.adjoint_ids
            }
        self.log.append(line)
        progress.update(s + 1, loss)

    # --- evaluation and the end of the run -----------------------------------------------------
    def evaluate(self, params, arrays, what: str = "metrics on the test set"):
        if self.chunk is None:
            out, aux = self.evaluators[what](params, arrays)
        else:
            per_sample, infos = self.per_sample(params, arrays)
            out, aux = self.evaluators[what](params, arrays, per_sample, infos)
            if what == "metrics on the test set" and self.pnl_shared:
                self.test_samples = {i: per_sample[i] for i in self.pnl_ids}
        solver_report.enforce(self.product, aux.solvers, what)
        if aux.solvers:
            self.solver_summary[what] = solver_report.summary(self.product, aux.solvers)
        return out

    def per_sample(self, params, arrays):
        """The metrics' per-sample values and solver infos over ``arrays`` (every row), computed
        in chunks of ``self.chunk`` rows (the last one padded with copies of its last row,
        whose values are dropped): one compiled function whatever the number of rows."""
        import jax
        import jax.numpy as jnp

        n, size = _rows(arrays), self.chunk
        assert size is not None
        parts = []
        for start in range(0, n, size):
            piece = {k: _padded(a[start : start + size], size) for k, a in arrays.items()}
            parts.append(self.sample_values(params, piece))
        if len(parts) == 1:
            return jax.tree.map(lambda a: a[:n], parts[0])
        return jax.tree.map(lambda *xs: jnp.concatenate(xs)[:n], *parts)

    def finish(self) -> RunResult:
        """Final metrics and timing; artefacts written to ``out_dir``."""
        v, g, params = self.v, self.g, self.state.params
        rows = self.training_rows()
        final_train = _floats(
            self.evaluate(params, {k: rows[k] for k in self.test}, "metrics on the training set")
        )
        final_test = _floats(self.evaluate(params, self.test))
        metrics = {
            "program": os.path.basename(g.file),
            "config": dict(v),
            "data": dict(self.data.info),
            "steps": v["steps"],
            "train": final_train,
            "test": final_test,
            "params": {
                k: _floats_tree(x)
                for k, x in self.product.param_values(params).items()
                if np.size(x) <= 16
            },
        }
        metrics.update(self.summaries(final_test))
        timing = self.timing()
        # every process takes part in what process 0 computes for the files, once
        pnl = self.per_sample_pnl() if self.out_dir else {}
        if self.out_dir and self.writer:
            try:
                self.write(metrics, timing, pnl)
            except OSError as err:
                wanted, self.out_dir = self.out_dir, outdir.fallback()
                self.write(metrics, timing, pnl)
                self.moved = (
                    f"could not write the results to {wanted} ({err.strerror or err}); "
                    f"they are kept in {self.out_dir}"
                )
                self.say("warning: " + self.moved)
        return RunResult(metrics, timing, params, self.out_dir, self.log, self.moved)

    def summaries(self, final_test: dict) -> dict:
        """The run's reports beside the metrics: solvers, clipping, saliency, gradients,
        the learned learning rate, the target, Φ-rules, node gradients, compliance."""
        v, g, tally, params = self.v, self.g, self.state.tally, self.state.params
        out: dict[str, Any] = {}
        if self.solver_summary:
            out["solvers"] = self.solver_summary.get("metrics on the test set", {})
        if self.declarative:
            out["skipped_steps"] = self.skipped
        if v["clip_norm"] > 0:
            out["clipped_steps"] = int(tally.clipped)
            out["clip_frequency"] = int(tally.clipped) / max(v["steps"], 1)
        if v.get("saliency"):
            vid = g.nodes[v["saliency"]["of"]]
            out["saliency"] = saliency.compute(
                self.prog,
                params,
                self.device(self.data.test, g.inputs_needed([vid]), pad=False),
                v["saliency"],
            )
        grad_summary = diagnostics.summary(self.log)
        if grad_summary:
            out["gradients"] = grad_summary
        if (eta := learned_lr(self.state.opt_state)) is not None:
            out["learned_lr"] = float(eta)
        if v.get("target"):
            out["target"] = _target(v, self.log, final_test)
        if self.phi.ortho is not None:
            pens = [
                line["orthogonality_penalty"]
                for line in self.log
                if "orthogonality_penalty" in line
            ]
            out["orthogonality_penalty"] = pens[-1] if pens else None
        nodes_logged = [line for line in self.log if "node_grad_norms" in line]
        if nodes_logged:
            out["node_grad_norms"] = nodes_logged[-1]["node_grad_norms"]
            out["node_grads"] = nodes_logged[-1]["node_grads"]
        if g.guards:
            out["compliance"] = compliance.report(
                self.product, params, self.test, np.asarray(tally.guards), v["steps"] * self.batch
            )
        if self.curriculum.on:
            out["curriculum"] = self.curriculum.summary()
        return out

    def timing(self) -> dict:
        import jax

        compiled = (
            self.step_fn,
            self.sample_values,
            *self.evaluators.values(),
            self.diagnose,
            self.adjoints,
        )
        steps = self.v["steps"] - self.start  # a resumed run counts only the steps it ran
        return {
            "trace_s": round(sum(c.trace_s for c in compiled), 4),
            "xla_compile_s": round(sum(c.compile_s for c in compiled), 4),
            "run_s": round(max(self.run_s, 0.0), 4),
            # run_s already excludes tracing and XLA compilation (the first step's cost)
            "steps_per_s": round(steps / max(self.run_s, 1e-9), 2),
            "recompilations": sum(c.recompilations for c in compiled),
            "device": str(jax.devices()[0].platform),
            # per compiled function that was compiled: where the compile time went
            "compilations": {
                c.name: {
                    "trace_s": round(c.trace_s, 4),
                    "xla_compile_s": round(c.compile_s, 4),
                    # how its program was had: "traced", "traced, stored" (in the trace
                    # cache), "loaded" (from it)
                    "program": c.program,
                }
                for c in compiled
                if c.compilations
            },
        }

    def write(self, metrics: dict, timing: dict, pnl: dict) -> None:
        out = self.out_dir
        assert out is not None
        os.makedirs(out, exist_ok=True)
        write_json(os.path.join(out, "metrics.json"), metrics)
        write_json(os.path.join(out, "timing.json"), timing)
        params_io.save_params(
            os.path.join(out, "params.npz"), self.state.params, self.prog, self.dims
        )
        with open(os.path.join(out, "log.jsonl"), "w") as fh:
            for line in self.log:
                fh.write(json.dumps(line, sort_keys=True) + "\n")
        if self.g.guards:
            write_json(os.path.join(out, "compliance.json"), metrics["compliance"])
        if pnl:  # the decision's and the baselines' P&L per test sample, for pnl.png
            plots.save_pnl(out, pnl)

    def per_sample_pnl(self) -> dict[str, np.ndarray]:
        """The decision's and the baselines' P&L per test sample (plots.pnl_names)."""
        import jax

        if not self.pnl:
            return {}
        values = self.test_samples  # from finish()'s test metrics, with the final params
        if not values:
            roots = self.pnl_ids
            evaluate = jax.jit(lambda p, b: self.product.values(p, b, roots))
            values, _ = evaluate(self.state.params, self.test)
        return {name: np.asarray(values[i]) for name, i in self.pnl}


def jax_processes() -> int:
    import jax

    return jax.process_count()


def _topology(t: list[int]) -> str:
    processes, devices = t
    return f"{processes} process{'es' * (processes != 1)} on {devices} device{'s' * (devices != 1)}"


def _adjoint_ids(product) -> list[int]:
    from ddm.runtime import adjoints

    return adjoints.ids(product)


def _target(v: dict, log: list, final_test: dict) -> dict:
    """The first evaluated step at which the target metric was reached."""
    target = v["target"]
    evals = [(line["step"], line["test"]) for line in log if "test" in line]
    evals.append((v["steps"], final_test))
    below = target["below"]
    reached = [
        st
        for st, m in evals
        if (
            m[target["metric"]] <= target["value"]
            if below
            else m[target["metric"]] >= target["value"]
        )
    ]
    return {
        "metric": target["metric"],
        "value": target["value"],
        "below": below,
        "steps_to_target": reached[0] if reached else None,
        "evaluated_every": v["eval_every"],
    }


def grad_norms_of_run(prog: Program, run_dir: str) -> dict:
    """‖∂loss/∂value‖ by value id and ‖∂loss/∂param‖ by name, at the params a run ended with
    (``RUN_DIR/params.npz``) on the first ``batch`` rows of its training data (rebuilt from the
    config in ``RUN_DIR/metrics.json``): what ``ddmc render --grads RUN_DIR`` draws. Written
    to ``RUN_DIR/grad_norms.json`` as a cache; runs themselves do not pay for it."""
    import jax
    import optax

    from ddm.runtime import adjoints

    with open(os.path.join(run_dir, "metrics.json"), encoding="utf-8") as fh:
        metrics = json.load(fh)
    cfg = RunConfig.defaults()
    cfg.values.update(metrics["config"])
    if cfg.values.get("loss"):
        prog = prog.with_loss(cfg.values["loss"])
    params = params_io.load_params(os.path.join(run_dir, "params.npz"))
    data = load_data(prog, cfg)
    batch = min(int(cfg.values["batch"]), data.n("train"))
    g = prog.graph
    names = {s.name for s in g.inputs_needed([g.loss])}
    first = {k: np.asarray(a[:batch]) for k, a in data.train.items() if k in names}
    norms = adjoints.grad_norms(prog.product, params, first)
    grads = jax.jit(jax.grad(lambda p, b: prog.product.loss(p, b)[0]))(params, first)
    out = {
        "step": metrics["steps"],
        "batch": batch,
        "values": {str(i): n for i, n in norms.items()},
        "params": {k: float(optax.tree.norm(x)) for k, x in grads.items()},
        "labels": {
            str(i): f"{g.values[i].name or g.values[i].op}: {g.values[i].type}" for i in norms
        },
    }
    write_json(os.path.join(run_dir, "grad_norms.json"), out)
    return out


def _floats(tree) -> dict[str, float]:
    return {k: float(x) for k, x in sorted(tree.items())}


def _floats_tree(x):
    a = np.asarray(x)
    return float(a) if a.ndim == 0 else a.tolist()


# Metrics in chunks (Run.per_sample): the chunk is the test set's size, so the evaluations during
# training (``eval_every``) compute no row in vain; the training set, evaluated once at the end,
# is cut into at most this many chunks (its last one padded), else each split is evaluated whole.
_MAX_CHUNKS = 32


def _metric_chunk(n_train: int, n_test: int) -> int | None:
    """The chunk size of both splits' metrics, or ``None`` to evaluate each split whole."""
    if n_test <= 0 or -(-n_train // n_test) > _MAX_CHUNKS:
        return None
    return n_test


def _rows(arrays) -> int:
    return int(next(iter(arrays.values())).shape[0]) if arrays else 0


def _padded(a, size: int):
    """``a`` with copies of its last row appended up to ``size`` rows."""
    import jax.numpy as jnp

    short = size - a.shape[0]
    if short <= 0:
        return a
    return jnp.concatenate([a, jnp.repeat(a[-1:], short, axis=0)])
