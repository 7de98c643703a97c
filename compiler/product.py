"""The product of compilation: one frozen record of pure, unjitted JAX functions, and the typed
facts the runtime needs about them. Entry point: :func:`lower`.

Every function takes params (a pytree, as :attr:`Product.init` makes it) and arrays, returns
JAX values, and composes with ``jax.jit``, ``jax.grad`` and ``jax.vmap``; none is jitted here
(the runtime's ``Program`` jits once, at its boundary). Besides its result each returns an
:class:`Aux` — the solver :class:`~ddm.library.solvers.status.Info` of every declarative node it
solved, each Φ-rule's audit and each guard's checks — as typed pytrees, by value id or by the
rule's and guard's name (their specs, :class:`~ddm.compiler.ir.RuleSpec` and
:class:`~ddm.compiler.ir.GuardSpec`, hold the value ids).

Failures are never silent (docs/language.md § Failed solves): a failed instance of a declarative
node is NaN in the value and in every gradient it touches, whatever transformation the caller
applies; its status is in the aux, and a computation traced while a failure collector is open
(:mod:`ddm.compiler.failures`, what ``Program.checked`` uses) reports it to the host.

>>> from ddm.compiler.driver import front_end
>>> import jax.numpy as jnp
>>> graph, sources = front_end("input x: f32\\nparam a: f32 = 2.0\\nnode y = a * x\\noutput y\\n"
...                            "loss = mean(y ** 2)", "<doc>")
>>> p = lower(graph, sources.texts)
>>> params = p.init(None)
>>> loss, aux = p.loss(params, {"x": jnp.array([1.0, 3.0])})
>>> float(loss), aux.solvers, aux.rules, aux.guards
(20.0, {}, {}, {})
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

from ddm.compiler import failures
from ddm.compiler.binding import bind_dims, check_names
from ddm.compiler.binding import resolve as resolve_dim
from ddm.compiler.ir import Graph, GuardSpec, RuleSpec
from ddm.compiler.lower import Evaluator, evaluator
from ddm.compiler.settings import RunSettings
from ddm.dsl.diagnostics import DataDiagnostic, DdmError
from ddm.library import INITIALIZERS
from ddm.library.layers import init_layer
from ddm.library.lazy import jax, jnp
from ddm.library.precision import resolve_dtype, scoped_x64
from ddm.library.types import LayerType


class RuleAux(NamedTuple):
    """One Φ-rule over a batch: mean trigger (its activation) and mean term (its effective
    penalty), scalars."""

    activation: Any
    effective_penalty: Any


class GuardAux(NamedTuple):
    """One guard's checks: 1.0 where the decision broke the limit before enforcement
    (``violated``) and where the enforced decision still does (``breached``); ``[B]`` over a
    batch, scalars for one sample."""

    violated: Any
    breached: Any


class Aux(NamedTuple):
    """What an evaluation reports besides its result (a pytree)."""

    solvers: Mapping[int, Any]  # declarative node id → Info, batched over the instances
    rules: Mapping[str, RuleAux]  # rule name → audit (loss and metrics only)
    guards: Mapping[str, GuardAux]  # guard name → checks


@dataclass(frozen=True)
class Product:
    """A compiled program: pure functions and the facts about them (see the module doc).

    - ``init(key, **dims) -> params``: fresh params (positive params stored as their log);
      dims a param's shape needs must be declared or given.
    - ``param_values(params)``: tensor params as the program sees them (positive ones
      exponentiated).
    - ``apply(params, inputs) -> (outputs, Aux)``: one sample; ``inputs`` by input name.
    - ``apply_batch(params, inputs) -> (outputs, Aux)``: every input with a leading batch axis.
    - ``loss(params, batch, key=None) -> (loss, Aux)``: the scalar loss over a batch; ``key``
      feeds random ops (``gumbel_softmax``), ``None`` makes them deterministic.
    - ``metrics(params, batch) -> (metrics, Aux)``: every metric, and the loss as ``"loss"``.
    - ``values(params, batch, roots, taps=None, key=None) -> (values, Aux)``: the values of IR
      ids ``roots`` (a tuple, any stage) over a batch — what diagnostics read; ``taps`` (by id,
      zeros shaped like the value over the batch) are added to values so that the gradient with
      respect to a tap is the loss's adjoint there.
    - ``sample_values(params, sample, roots, batched=False) -> (values, Aux)``: the same for
      one sample; ``batched``: called under ``jax.vmap(axis_name="batch")``.
    - ``dims_of(batch, roots)``, ``batch_stage(params, known, roots, dims)``: the dims a batch
      binds; batch-stage values from statistics accumulated elsewhere (runtime/streaming.py).
    - ``metric_samples(params, batch, extra=()) -> (per_sample, infos)`` and
      ``metrics_from_samples(params, batch, per_sample, infos) -> (metrics, Aux)``:
      :meth:`metrics` in two halves, the per-sample values (by id) and then the rest, so that a
      caller may compute the first half in chunks of one size — one compilation for every
      split of the data (runtime/train.py) — when ``chunkable``. ``extra``: ids of more
      sample-stage values to compute per sample on the way (a run's P&L for its plots).

    Inputs are arrays (anything with ``shape`` and ``dtype``); they are checked against the
    declared types when traced, and a mismatch is a located :class:`DataDiagnostic`.
    """

    graph: Graph
    sources: Mapping[str, str]  # file → text, for diagnostics
    x64: bool
    init: Callable[..., dict]
    param_values: Callable[[Any], dict]
    apply: Callable
    apply_batch: Callable
    loss: Callable
    metrics: Callable
    values: Callable
    sample_values: Callable
    dims_of: Callable
    batch_stage: Callable
    metric_samples: Callable
    metrics_from_samples: Callable
    chunkable: bool  # a sample's values do not depend on the rest of its batch

    @property
    def rules(self) -> tuple[RuleSpec, ...]:
        return self.graph.rules

    @property
    def guards(self) -> tuple[GuardSpec, ...]:
        return self.graph.guards

    @property
    def jitted(self) -> bool:
        """Whether the functions are already jitted: only for a float32 program with a node
        solving in float64, whose functions are jitted inside their float64 scope."""
        return bool(getattr(self.loss, "jitted", False))

    @property
    def settings(self) -> RunSettings | None:
        """The program's ``run { }`` section, typed (``None`` without one)."""
        return self.graph.run

    @property
    def float_dtype(self):
        return resolve_dtype("f32", self.x64)

    def label(self, vid: int) -> str:
        """A value's name for messages: the node's name, or ``argmin@LINE:COL``."""
        v = self.graph.values[vid]
        if v.name:
            return v.name
        what = v.attr("problem").sense if v.op == "argmin" else v.op
        return f"{what}@{v.span.line}:{v.span.column}"

    def locate(self, err: DdmError) -> DdmError:
        """``err`` with the text of the file it points into, for its caret."""
        if err.span is not None and err.source is None:
            err.source = self.sources.get(err.span.file)
        return err


def lower(graph: Graph, sources: Mapping[str, str] | None = None, x64: bool = False) -> Product:
    """The compiled product of ``graph`` (``sources``: file → text, for located errors;
    ``x64``: the program's floats are float64)."""
    b = _Build(graph, evaluator(graph, x64), x64, dict(sources or {}))
    return Product(
        graph,
        b.sources,
        x64,
        b.located(b.init),
        b.param_values,
        b.wrap(b.apply),
        b.wrap(b.apply_batch),
        b.wrap(b.loss),
        b.wrap(b.metrics),
        b.wrap(b.values, static=(2,)),
        b.wrap(b.sample_values, static=(2, 3)),
        b.located(b.dims_of),
        b.located(b.batch_stage),
        b.wrap(b.metric_samples),
        b.wrap(b.metrics_from_samples),
        not b.ev.batch_statistics(),
    )


class _Build:
    """The product's functions over one graph and evaluator."""

    def __init__(self, graph: Graph, ev: Evaluator, x64: bool, sources: dict):
        self.g = graph
        self.ev = ev
        self.x64 = x64
        self.sources = sources
        # a float32 program whose node solves in float64 turns float64 on only while its own
        # functions are traced and differentiated, never for the process (library/precision.py)
        self.scoped = not x64 and any(
            v.attr("problem").dtype == "f64" for v in graph.values if v.op == "argmin"
        )
        g = graph
        self.rule_roots = tuple(i for r in g.rules for i in (r.activation, r.effective_penalty))
        self.guard_roots = tuple(i for x in g.guards for i in (x.violated, x.breached))

    # --- wrappers --------------------------------------------------------------------------------
    def located(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except DdmError as err:
                if err.span is not None and err.source is None:
                    err.source = self.sources.get(err.span.file)
                raise err from None

        return wrapper

    def wrap(self, fn, static: tuple[int, ...] = ()):
        """``fn`` with located errors and, where needed, float64 scoped to its evaluation.
        ``static``: positions of arguments that are no arrays (the value ids of
        :meth:`values`).

        A scoped function is jitted *inside* its scope (one executable per static
        arguments): a ``jit`` around the scope would hand JAX a jaxpr of float64 operations to
        batch or transpose later, outside the scope (library/precision.py)."""
        if not self.scoped:
            return self.located(fn)
        names = fn.__code__.co_varnames[1:]  # after self
        cache: dict = {}

        @functools.wraps(fn)
        def scoped(*args, **kwargs):
            kwargs.update({names[k]: args[k] for k in static if k < len(args)})
            arrays = [a for k, a in enumerate(args) if k not in static]
            key = tuple(sorted(kwargs.items()))
            if key not in cache:
                cache[key] = scoped_x64(jax.jit(functools.partial(fn, **kwargs)))
            return cache[key](*arrays)

        scoped.jitted = True  # type: ignore[attr-defined]  # the runtime adds no jit around it
        return self.located(scoped)

    # --- params ----------------------------------------------------------------------------------
    def init(self, key, **dims: int) -> dict[str, Any]:
        known = {**self.g.dim_values(), **dims}
        params = {}
        fdt = resolve_dtype("f32", self.x64)
        for index, spec in enumerate(self.g.params):
            k = jax.random.fold_in(key, index) if key is not None else None
            if isinstance(spec.type, LayerType):
                layer = LayerType(
                    spec.type.kind,
                    tuple(resolve_dim(d, known, spec.span) for d in spec.type.sizes),
                    spec.type.activation,
                    spec.type.bias,
                )
                params[spec.name] = init_layer(_need_key(k, spec), layer, fdt)
                continue
            shape = tuple(resolve_dim(d, known, spec.span) for d in spec.type.shape)
            dtype = resolve_dtype(spec.type.dtype, self.x64)
            kind, arg = spec.init
            if kind == "value":
                value = jnp.broadcast_to(jnp.asarray(arg, dtype), shape)
                params[spec.name] = jnp.log(value) if spec.positive else value
            else:
                params[spec.name] = INITIALIZERS[kind].fn(
                    _need_key(k, spec), shape, dtype, **dict(arg)
                )
        return params

    def param_values(self, params) -> dict[str, Any]:
        out = {}
        for spec in self.g.params:
            if not spec.is_layer:
                out[spec.name] = jnp.exp(params[spec.name]) if spec.positive else params[spec.name]
        return out

    # --- evaluations -----------------------------------------------------------------------------
    def apply(self, params, inputs):
        roots = [i for _, i in self.g.outputs]
        self._check_params(params, "apply")
        params = self._hold(params)
        inputs, dims = self._bind(inputs, roots + list(self.guard_roots), False, "apply")
        values, infos = self.ev.sample(params, inputs, dims, roots + list(self.guard_roots))
        return self._outputs(values), self._aux(values, infos)

    def apply_batch(self, params, inputs):
        roots = [i for _, i in self.g.outputs]
        self._check_params(params, "apply_batch")
        params = self._hold(params)
        inputs, dims = self._bind(inputs, roots + list(self.guard_roots), True, "apply_batch")
        if not roots:
            return {}, Aux({}, {}, {})
        values, infos = self.ev.batch(params, inputs, dims, roots + list(self.guard_roots))
        return self._outputs(values), self._aux(values, infos)

    def loss(self, params, batch, key=None):
        if self.g.loss is None:
            raise DataDiagnostic(None, f"{self.g.file} declares no loss")
        self._check_params(params, "loss")
        params = self._hold(params)
        roots = [self.g.loss, *self.rule_roots, *self.guard_roots]
        inputs, dims = self._bind(batch, roots, True, "loss")
        values, infos = self.ev.batch(params, inputs, dims, roots, key=key)
        return values[self.g.loss], self._aux(values, infos)

    def metrics(self, params, batch):
        roots, params, inputs, dims = self._metric_call(params, batch)
        values, infos = self.ev.batch(params, inputs, dims, roots)
        return self._metric_outputs(values), self._aux(values, infos)

    def metric_samples(self, params, batch, extra=()):
        roots, params, inputs, dims = self._metric_call(params, batch, tuple(extra))
        return self.ev.per_sample(params, inputs, dims, roots + list(extra))

    def metrics_from_samples(self, params, batch, per_sample, infos):
        roots, params, inputs, dims = self._metric_call(params, batch)
        values, infos = self.ev.from_samples(params, inputs, dims, roots, per_sample, infos)
        return self._metric_outputs(values), self._aux(values, infos)

    def _metric_call(self, params, batch, extra=()):
        """What every metrics evaluation starts from: its roots, the params held, the bound
        inputs (of the roots and of ``extra``, more values wanted per sample) and their
        dims."""
        roots = self._metric_roots()
        self._check_params(params, "metrics")
        inputs, dims = self._bind(batch, roots + list(extra), True, "metrics")
        return roots, self._hold(params), inputs, dims

    def _metric_roots(self) -> list[int]:
        roots = [i for _, i in self.g.metrics]
        if self.g.loss is not None:
            roots.append(self.g.loss)
        return roots + list(self.guard_roots)

    def _metric_outputs(self, values) -> dict:
        out = {name: values[i] for name, i in self.g.metrics}
        if self.g.loss is not None:
            out["loss"] = values[self.g.loss]
        return out

    def values(self, params, batch, roots, taps=None, key=None):
        roots = list(roots)
        self._check_params(params, "values")
        params = self._hold(params)
        inputs, dims = self._bind(batch, roots, True, "values")
        values, infos = self.ev.batch(params, inputs, dims, roots, taps=taps, key=key)
        return values, self._aux({}, infos)

    def dims_of(self, batch, roots) -> dict[str, int]:
        """The dims a batch of inputs binds, for evaluating ``roots``."""
        return self._bind(batch, list(roots), True, "values")[1]

    def batch_stage(self, params, known, roots, dims):
        """Batch-stage values ``roots`` computed from ``known`` values by id — statistics over
        samples accumulated elsewhere (runtime/streaming.py) — without any sample."""
        params = self._hold(params)
        g = self.g
        env = {
            i: jnp.asarray(x, resolve_dtype(g.values[i].type.dtype, self.x64))
            for i, x in known.items()
        }
        need: set[int] = set()
        todo = [i for i in roots if i not in env]
        while todo:
            i = todo.pop()
            if i in need or i in env:
                continue
            need.add(i)
            todo.extend(g.values[i].inputs)
        self.ev.run(sorted(need), env, params, {}, dims, True)
        return {i: env[i] for i in roots}

    def sample_values(self, params, sample, roots, batched: bool = False):
        roots = list(roots)
        self._check_params(params, "values")
        params = self._hold(params)
        inputs, dims = self._bind(sample, roots, False, "values")
        values, infos = self.ev.sample(params, inputs, dims, roots, batched=batched)
        return values, self._aux({}, infos)

    # --- pieces ----------------------------------------------------------------------------------
    def _outputs(self, values) -> dict[str, Any]:
        return {name: values[i] for name, i in self.g.outputs}

    def _aux(self, values, infos) -> Aux:
        """The aux of an evaluation (reports failures to an open collector)."""
        _report_failures(self.g, infos)
        rules = {
            r.name: RuleAux(values[r.activation], values[r.effective_penalty])
            for r in self.g.rules
            if r.activation in values
        }
        guards = {
            x.name: GuardAux(values[x.violated], values[x.breached])
            for x in self.g.guards
            if x.violated in values
        }
        return Aux(dict(infos), rules, guards)

    def _check_params(self, params, what: str) -> None:
        missing = [
            p for p in self.g.params if not isinstance(params, Mapping) or p.name not in params
        ]
        if missing:
            raise DataDiagnostic(
                missing[0].span,
                f"{what}: params has no entry '{missing[0].name}'",
                hint="make params with prog.init(key)",
            )

    def _hold(self, params):
        """``params`` with the frozen ones (a variant's ``freeze``) behind ``stop_gradient``:
        no evaluation sends them a gradient (the training step also keeps their values)."""
        if not self.g.frozen:
            return params
        stop = jax.lax.stop_gradient
        return {k: stop(v) if k in self.g.frozen else v for k, v in params.items()}

    def _bind(self, inputs, roots, batched: bool, what: str):
        needed = self.g.inputs_needed(roots)
        check_names(self.g, inputs, needed, what)
        shapes = {k: tuple(v.shape) for k, v in inputs.items()}
        dtypes = {k: v.dtype for k, v in inputs.items()}
        dims = bind_dims(self.g, shapes, dtypes, needed, batched, what)
        cast = {}
        for spec in needed:
            want = resolve_dtype(spec.type.dtype, self.x64)
            value = inputs[spec.name]
            cast[spec.name] = value if value.dtype == want else jnp.asarray(value, want)
        return cast, dims


def _need_key(key, spec):
    if key is None:
        raise DataDiagnostic(
            spec.span,
            f"param '{spec.name}' is drawn at random: init needs a JAX key",
            hint="prog.init(jax.random.key(0))",
        )
    return key


def _report_failures(g: Graph, infos) -> None:
    """While a collector is open (:mod:`ddm.compiler.failures`), hand each error-policy node's
    first failed instance to the host; otherwise emit nothing."""
    if not failures.reporting():
        return
    for vid, info in sorted(infos.items()):
        problem = g.values[vid].attr("problem")
        if problem.on_infeasible != "error":
            continue
        status = jnp.ravel(info.status)
        bad = ~jnp.isin(status, jnp.asarray(problem.accepted))
        first = jnp.argmax(bad)
        jax.debug.callback(
            functools.partial(failures.report, vid, tuple(jnp.shape(info.status))),
            jnp.any(bad),
            first,
            status[first],
            jnp.ravel(info.residual)[first],
        )
