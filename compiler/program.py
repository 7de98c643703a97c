"""The Python API: ``ddm.load`` / ``ddm.loads`` → :class:`Program`.

>>> import ddm, jax
>>> prog = ddm.loads('''
... dim F = 3
... input x: f32[F]
... input y: f32
... param w: f32[F] = zeros()
... node p = sigmoid(dot(w, x))
... output p
... loss = bce(p, y)
... ''')
>>> params = prog.init(jax.random.key(0))
>>> float(prog.apply(params, x=[1.0, 2.0, 3.0])["p"])
0.5
>>> g = jax.grad(prog.loss)(params, {"x": [[1.0, 0.0, 0.0]], "y": [1.0]})
>>> [round(float(v), 3) for v in g["w"]]
[-0.5, 0.0, 0.0]
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import numpy as np

from ddm.compiler.binding import bind_dims, check_names, resolve as resolve_dim
from ddm.compiler.driver import Sources, front_end, front_end_file
from ddm.compiler.ir import Graph, format_ir
from ddm.compiler.lower import Lowered, lower
from ddm.dsl.diagnostics import DataDiagnostic, DdmError
from ddm.library import INITIALIZERS
from ddm.library.layers import init_layer
from ddm.library.lazy import jax, jnp
from ddm.library.precision import resolve_dtype
from ddm.library.types import LayerType


def load(path: str, x64: bool = False, strict: bool = True) -> "Program":
    """Compile the ``.ddm`` file at ``path``. ``x64=True``: the program's floats are float64.
    ``strict``: a declarative node whose solver fails on an instance raises
    :class:`SolverDiagnostic` (nodes with ``on_infeasible="error"``, the default)."""
    graph, sources = front_end_file(str(path))
    return Program(graph, sources, x64, strict)


def loads(text: str, file: str = "<string>", x64: bool = False,
          strict: bool = True) -> "Program":
    """Compile program text (imports resolve relative to the working directory)."""
    graph, sources = front_end(text, file)
    return Program(graph, sources, x64, strict)


def _located(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DdmError as err:
            raise self.sources.locate(err) from None
    return wrapper


class Program:
    """A compiled program: pure functions over ``params`` pytrees, composable with
    ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

    - ``init(key, **dims)`` → params (a dict; positive params are stored as their logarithm)
    - ``apply(params, **inputs)`` → outputs of one sample
    - ``apply_batch(params, **inputs)`` → outputs over a leading batch axis
    - ``loss(params, batch)`` → the program's scalar loss over a batch (a dict of inputs)
    - ``metrics(params, batch)`` → its metrics over a batch
    """

    def __init__(self, graph: Graph, sources: Sources, x64: bool = False, strict: bool = True):
        self.graph = graph
        self.sources = sources
        self.x64 = x64
        self.strict = strict
        problems = [v.attr("problem") for v in graph.values if v.op == "argmin"]
        if x64 or any(p.dtype == "f64" for p in problems):
            # float64 must exist for the program, or for a node solving in float64 while
            # the pipeline stays float32 (every value is cast to its IR dtype in lowering)
            jax.config.update("jax_enable_x64", True)
        try:
            self._lowered: Lowered = lower(graph, x64)
        except DdmError as err:
            raise sources.locate(err) from None
        self._apply = jax.jit(self._apply_impl)
        self._apply_batch = jax.jit(self._apply_batch_impl)
        self._loss = jax.jit(self._loss_info_impl)
        self._metrics = jax.jit(self._metrics_info_impl)
        self._solver_info = jax.jit(self._solver_info_impl, static_argnums=(2,))
        self._values = jax.jit(self._values_impl, static_argnums=(2,))

    def with_loss(self, name: str) -> "Program":
        """The same program minimising its named loss ``name`` (``loss NAME = …``).

        >>> import ddm
        >>> prog = ddm.loads("input x: f32\\nnode y = x\\noutput y\\nloss = mean(y)\\n"
        ...                  "loss squared = mean(y ** 2)")
        >>> float(prog.with_loss("squared").loss({}, {"x": [1.0, 3.0]}))
        5.0
        """
        names = [n for n, _ in self.graph.losses]
        if name not in names:
            from difflib import get_close_matches
            close = get_close_matches(name, names, n=1)
            hint = (f"did you mean '{close[0]}'?" if close else
                    "its named losses: " + ", ".join(names) if names else
                    "declare one: loss NAME = ...")
            raise DataDiagnostic(None, f"{self.file} has no loss named '{name}'", hint=hint)
        return Program(self.graph.with_loss(name), self.sources, self.x64, self.strict)

    def without_rules(self) -> "Program":
        """The same program trained without its Φ-rules' loss terms ("pure DP"); the rules'
        activations are still measured. Guards, being hard limits, stay."""
        return Program(self.graph.without_rules(), self.sources, self.x64, self.strict)

    # --- facts ---------------------------------------------------------------------------------
    @property
    def file(self) -> str:
        return self.graph.file

    @property
    def warnings(self):
        return self.graph.warnings

    @property
    def float_dtype(self):
        return resolve_dtype("f32", self.x64)

    def ir(self) -> str:
        return format_ir(self.graph)

    # --- params --------------------------------------------------------------------------------
    @_located
    def init(self, key, **dims: int) -> dict[str, Any]:
        """Fresh params. Dims a param's shape needs must have values (declared or given)."""
        known = {**self.graph.dim_values(), **dims}
        params = {}
        for index, spec in enumerate(self.graph.params):
            k = jax.random.fold_in(key, index)
            if isinstance(spec.type, LayerType):
                layer = LayerType(spec.type.kind,
                                  tuple(resolve_dim(d, known, spec.span) for d in spec.type.sizes),
                                  spec.type.activation, spec.type.bias)
                params[spec.name] = init_layer(k, layer, self.float_dtype)
                continue
            shape = tuple(resolve_dim(d, known, spec.span) for d in spec.type.shape)
            dtype = resolve_dtype(spec.type.dtype, self.x64)
            kind, arg = spec.init
            if kind == "value":
                value = jnp.broadcast_to(jnp.asarray(arg, dtype), shape)
                params[spec.name] = jnp.log(value) if spec.positive else value
            else:
                params[spec.name] = INITIALIZERS[kind].fn(k, shape, dtype, **dict(arg))
        return params

    def param_values(self, params) -> dict[str, Any]:
        """Tensor params as the program sees them (positive ones exponentiated)."""
        out = {}
        for spec in self.graph.params:
            if not spec.is_layer:
                out[spec.name] = jnp.exp(params[spec.name]) if spec.positive \
                    else params[spec.name]
        return out

    # --- evaluation ----------------------------------------------------------------------------
    @_located
    def apply(self, params, **inputs) -> dict[str, Any]:
        """The program's outputs for one sample."""
        out, infos = self._apply(params, self._inputs(inputs))
        self.check_solvers(infos, "apply")
        return out

    @_located
    def apply_batch(self, params, **inputs) -> dict[str, Any]:
        """The program's outputs for a batch: every input has a leading batch axis."""
        out, infos = self._apply_batch(params, self._inputs(inputs))
        self.check_solvers(infos, "apply_batch")
        return out

    @_located
    def loss(self, params, batch: Mapping[str, Any], key=None):
        """The scalar ``loss`` over a batch of inputs. ``key``: a JAX key from which random
        ops (``gumbel_softmax``) draw their noise, as in training; without one (the default)
        they are deterministic."""
        if self.graph.loss is None:
            raise DataDiagnostic(None, f"{self.file} declares no loss")
        loss, infos = self._loss(params, self._inputs(batch), key)
        self.check_solvers(infos, "loss")
        return loss

    @_located
    def loss_and_info(self, params, batch: Mapping[str, Any], key=None):
        """``(loss, infos)``: the loss and, per declarative node, its solver :class:`Info`
        batched over instances — for ``jax.value_and_grad(..., has_aux=True)`` in your own
        training loop (then call :meth:`check_solvers` on the concrete infos). ``key`` as in
        :meth:`loss`: pass a fresh one per step to train through random ops."""
        if self.graph.loss is None:
            raise DataDiagnostic(None, f"{self.file} declares no loss")
        return self._loss(params, self._inputs(batch), key)

    @_located
    def metrics(self, params, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Every ``metric`` (and the loss, as ``loss``) over a batch of inputs."""
        out, infos = self._metrics(params, self._inputs(batch))
        self.check_solvers(infos, "metrics")
        return out

    @_located
    def solver_info(self, params, **inputs) -> dict[str, Any]:
        """Per declarative node (by name), its solver :class:`Info` for a batch of inputs:
        status codes, iterations and residuals, one per instance."""
        roots = self.graph.solver_roots()
        infos = self._solver_info(params, self._inputs(inputs), tuple(roots))
        return {self.node_label(i): info for i, info in infos.items()}

    def grad_norms(self, params, batch: Mapping[str, Any]) -> dict[int, float]:
        """‖∂loss/∂value‖ over ``batch`` for every value on the gradient path (the values the
        loss depends on that depend on a param; values inside a scan's body are measured
        through the scan, those of an argmin's problem through its solution), by value id —
        what ``ddmc render --grads`` draws. Sample values
        count over the whole batch: the norm of the ``[B, …]`` adjoint."""
        import numpy as np

        if self.graph.loss is None:
            raise DataDiagnostic(None, f"{self.file} declares no loss")
        norms = jax.jit(self._adjoint_norms_impl)(params, self._inputs(batch))
        return {i: float(np.asarray(n, np.float64)) for i, n in norms.items()}

    def adjoint_ids(self) -> list[int]:
        """The values :meth:`grad_norms` measures: on the gradient path, outside scan bodies,
        neither static nor weak."""
        from ddm.compiler.ir import gradient_path

        g = self.graph
        inside = g.in_bodies()
        return sorted(i for i in gradient_path(g)
                      if i not in inside and g.values[i].stage != "static"
                      and g.values[i].op != "lift" and not g.values[i].type.weak)

    def _adjoint_norms_impl(self, params, batch, key=None):
        """Traceable :meth:`grad_norms`: ‖∂loss/∂value‖ by value id, as arrays."""
        return {i: s["norm"] for i, s in self._adjoint_stats_impl(params, batch, key).items()}

    def _adjoint_stats_impl(self, params, batch, key=None):
        """Per value of :meth:`adjoint_ids`, statistics of the loss's adjoint g = ∂loss/∂value
        over the batch: ``norm``, the ``mean``, ``std`` and ``sparsity`` (share of entries
        ≤ 1e-6 of the largest) of its entries and, for a per-sample value, ``snr`` across the
        samples: ‖mean gᵢ‖² / mean ‖gᵢ − ḡ‖² (how much the samples agree on the direction)."""
        g = self.graph
        ids = self.adjoint_ids()
        inputs, dims = self._bind(batch, [g.loss] + ids, True, "grad_norms")
        zeros = self._zero_taps(params, inputs, dims, ids, key)

        def loss(taps):
            out = self._lowered.batch(params, inputs, dims, [g.loss], infos={}, taps=taps,
                                      key=key)
            return out[g.loss]

        grads = jax.grad(loss)(zeros)
        out = {}
        for i in ids:
            flat = jnp.ravel(grads[i])
            peak = jnp.max(jnp.abs(flat)) if flat.size else 0.0
            stats = {"norm": jnp.sqrt(jnp.sum(jnp.square(flat))), "mean": jnp.mean(flat),
                     "std": jnp.std(flat), "sparsity": jnp.mean(jnp.abs(flat) <= 1e-6 * peak)}
            if g.values[i].stage == "sample" and grads[i].ndim >= 1 and grads[i].shape[0] > 1:
                per = jnp.reshape(grads[i], (grads[i].shape[0], -1))
                centre = jnp.mean(per, axis=0)
                noise = jnp.mean(jnp.sum((per - centre) ** 2, axis=1))
                stats["snr"] = jnp.sum(centre ** 2) / jnp.maximum(noise, 1e-30)
            out[i] = stats
        return out

    def _zero_taps(self, params, inputs, dims, ids, key=None) -> dict:
        """Zeros shaped like the values ``ids`` over the batch: taps whose gradient is the
        loss's adjoint there. Only their shapes are traced; no forward pass runs for them."""
        shapes = jax.eval_shape(
            lambda: self._lowered.batch(params, inputs, dims, list(ids), infos={}, key=key))
        return {i: jnp.zeros(shapes[i].shape, shapes[i].dtype) for i in ids}

    def _orthogonality_impl(self, params, batch, vid: int, key=None, cosine: bool = False):
        """⟨∂L_task/∂d, ∂L_rules/∂d⟩² at the value ``vid`` (a decision, over the batch), where
        L_rules = loss − task loss: the seed's orthogonality penalty (§7.5) that keeps the
        rules from double-counting what the task loss already says. ``cosine``: the squared
        cosine instead, in [0, 1] whatever the losses' scale."""
        g = self.graph
        roots = [g.loss, g.task_loss]
        inputs, dims = self._bind(batch, roots + [vid], True, "loss")
        zero = self._zero_taps(params, inputs, dims, [vid], key)[vid]

        def both(tap):
            out = self._lowered.batch(params, inputs, dims, roots, infos={}, taps={vid: tap},
                                      key=key)
            return jnp.stack([out[g.loss], out[g.task_loss]])

        jac = jax.jacrev(both)(zero)
        task, rules = jac[1], jac[0] - jac[1]
        inner = jnp.sum(task * rules)
        if cosine:
            tiny = jnp.finfo(inner.dtype).tiny
            return inner ** 2 / jnp.maximum(jnp.sum(task ** 2) * jnp.sum(rules ** 2), tiny)
        return inner ** 2

    def node_label(self, vid: int) -> str:
        v = self.graph.values[vid]
        return v.name or f"{v.attr('problem').sense}@{v.span.line}:{v.span.column}"

    def nonfinite_nodes(self, params, batch: Mapping[str, Any]) -> list[str]:
        """Names of the nodes whose values on ``batch`` hold NaN or Inf, in program order, then
        ``"loss"`` if the loss is not finite: where a non-finite loss comes from."""
        import numpy as np

        named = sorted(self.graph.nodes.items(), key=lambda kv: kv[1])
        roots = [vid for _, vid in named] + ([self.graph.loss] if self.graph.loss is not None
                                              else [])
        inputs, dims = self._bind(self._inputs(batch), roots, True, "diagnosis")
        values = self._lowered.batch(params, inputs, dims, roots, infos={})

        def bad(a) -> bool:
            a = np.asarray(a)
            return a.dtype.kind in "fc" and not np.all(np.isfinite(a))

        out = [name for name, vid in named if bad(values[vid])]
        if self.graph.loss is not None and bad(values[self.graph.loss]):
            out.append("loss")
        return out

    def check_solvers(self, infos: Mapping[int, Any], what: str = "") -> None:
        """Raise :class:`SolverDiagnostic` when a declarative node with the ``error`` policy
        failed on some instance (strict programs; traced values are skipped: check them
        outside your transformation)."""
        from ddm.compiler.solver_report import enforce
        if self.strict:
            enforce(self, infos, what)

    def _inputs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for name, value in given.items():
            original, ragged = value, False
            if not hasattr(value, "shape") or not hasattr(value, "dtype"):
                try:
                    value = np.asarray(value)
                except (TypeError, ValueError):  # ragged nested lists
                    value, ragged = np.asarray(None), True
                if value.dtype == np.float64:
                    value = value.astype(np.float64 if self.x64 else np.float32)
            if np.dtype(value.dtype).kind not in "biuf" and "float" not in str(value.dtype):
                spec = next((i for i in self.graph.inputs if i.name == name), None)
                got = (f"an array of {value.dtype}" if hasattr(original, "dtype") else
                       "a ragged list" if ragged else
                       f"a {type(original).__name__}")
                raise DataDiagnostic(spec.span if spec else None, f"input '{name}' must be an "
                                     f"array of numbers (or a nested list of them), got {got}")
            out[name] = value
        return out

    def _check_params(self, params, what: str) -> None:
        missing = [p for p in self.graph.params if not isinstance(params, Mapping)
                   or p.name not in params]
        if missing:
            raise DataDiagnostic(missing[0].span, f"{what}: params has no entry "
                                 f"'{missing[0].name}'", hint="make params with prog.init(key)")

    def _bind(self, inputs, roots, batched: bool, what: str):
        needed = self.graph.inputs_needed(roots)
        check_names(self.graph, inputs, needed, what)
        shapes = {k: tuple(v.shape) for k, v in inputs.items()}
        dtypes = {k: v.dtype for k, v in inputs.items()}
        dims = bind_dims(self.graph, shapes, dtypes, needed, batched, what)
        cast = {}
        for spec in needed:
            want = resolve_dtype(spec.type.dtype, self.x64)
            value = inputs[spec.name]
            cast[spec.name] = value if value.dtype == want else jnp.asarray(value, want)
        return cast, dims

    def _apply_impl(self, params, inputs):
        roots = [i for _, i in self.graph.outputs]
        self._check_params(params, "apply")
        inputs, dims = self._bind(inputs, roots, False, "apply")
        infos: dict = {}
        values = self._lowered.sample(params, inputs, dims, roots, infos=infos)
        return {name: values[i] for name, i in self.graph.outputs}, infos

    def _apply_batch_impl(self, params, inputs):
        roots = [i for _, i in self.graph.outputs]
        self._check_params(params, "apply_batch")
        inputs, dims = self._bind(inputs, roots, True, "apply_batch")
        if not roots:
            return {}, {}
        infos: dict = {}
        values = self._lowered.batch(params, inputs, dims, roots, infos=infos)
        return {name: values[i] for name, i in self.graph.outputs}, infos

    def _loss_info_impl(self, params, batch, key=None):
        """Traceable ``(loss, infos)``; ``key``: the JAX key random ops draw from (training),
        ``None`` for a deterministic evaluation."""
        self._check_params(params, "loss")
        inputs, dims = self._bind(batch, [self.graph.loss], True, "loss")
        infos: dict = {}
        loss = self._lowered.batch(params, inputs, dims, [self.graph.loss], infos=infos,
                                   key=key)
        return loss[self.graph.loss], infos

    def _loss_impl(self, params, batch, key=None):
        return self._loss_info_impl(params, batch, key)[0]

    def _loss_values_impl(self, params, batch, roots, key=None):
        """The loss, solver infos and the values ``roots`` (value ids) of one evaluation: what
        a training step reads besides the gradient (guard checks, rule state) at no second
        forward pass."""
        self._check_params(params, "loss")
        roots = list(roots)
        inputs, dims = self._bind(batch, [self.graph.loss] + roots, True, "loss")
        infos: dict = {}
        values = self._lowered.batch(params, inputs, dims, [self.graph.loss] + roots,
                                     infos=infos, key=key)
        return values[self.graph.loss], (infos, {i: values[i] for i in roots})

    def _metrics_info_impl(self, params, batch):
        roots = [i for _, i in self.graph.metrics]
        if self.graph.loss is not None:
            roots.append(self.graph.loss)
        self._check_params(params, "metrics")
        inputs, dims = self._bind(batch, roots, True, "metrics")
        infos: dict = {}
        values = self._lowered.batch(params, inputs, dims, roots, infos=infos)
        out = {name: values[i] for name, i in self.graph.metrics}
        if self.graph.loss is not None:
            out["loss"] = values[self.graph.loss]
        return out, infos

    def _metrics_impl(self, params, batch):
        return self._metrics_info_impl(params, batch)[0]

    def _values_impl(self, params, batch, roots):
        """Values ``roots`` (value ids, any stage) over a batch: e.g. a rule's audit."""
        inputs, dims = self._bind(batch, list(roots), True, "values")
        return self._lowered.batch(params, inputs, dims, list(roots), infos={})

    def _solver_info_impl(self, params, inputs, roots):
        inputs, dims = self._bind(inputs, list(roots), True, "solver_info")
        infos: dict = {}
        self._lowered.batch(params, inputs, dims, list(roots), infos=infos)
        return infos

    def __repr__(self) -> str:
        g = self.graph
        return (f"<ddm.Program {g.file}: {len(g.inputs)} inputs, {len(g.params)} params, "
                f"{len(g.nodes)} nodes, outputs {[n for n, _ in g.outputs]}>")
