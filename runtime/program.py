"""The Python API: ``ddm.load`` / ``ddm.loads`` → :class:`Program`, the compiled program as its
user sees it. It jits the product's pure functions once, at this boundary, turns lists into
arrays, and raises a located :class:`SolverDiagnostic` when a solve fails.

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
>>> [round(float(v), 3) + 0.0 for v in g["w"]]
[-0.5, 0.0, 0.0]
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ddm.compiler.driver import Sources, front_end, front_end_file
from ddm.compiler.ir import Graph, format_ir
from ddm.compiler.product import Aux, Product, lower
from ddm.dsl.diagnostics import DataDiagnostic, DdmError
from ddm.library.lazy import jax
from ddm.runtime import solver_report

if TYPE_CHECKING:
    from ddm.compiler.variants import Variant


def load(path: str, x64: bool = False, strict: bool = True) -> "Program":
    """Compile the ``.ddm`` file at ``path``.

    ``x64=True``: the program computes in float64 — this switches JAX to float64 for the whole
    process (``jax_enable_x64``), the one global effect ddm has; a float32 program whose nodes
    solve in float64 (``using …(dtype="f64")``) does not need it and changes nothing global.
    ``strict``: a declarative node whose solver fails on an instance raises
    :class:`~ddm.runtime.errors.SolverDiagnostic` (nodes with ``on_infeasible="error"``, the
    default)."""
    graph, sources = front_end_file(str(path))
    return Program.compile(graph, sources, x64, strict)


def loads(text: str, file: str = "<string>", x64: bool = False, strict: bool = True) -> "Program":
    """Compile program text (imports resolve relative to the working directory); see
    :func:`load`."""
    graph, sources = front_end(text, file)
    return Program.compile(graph, sources, x64, strict)


def _located(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except DdmError as err:
            raise self.product.locate(err) from None

    return wrapper


class Program:
    """A compiled program: pure functions over ``params`` pytrees, composable with
    ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

    - ``init(key, **dims)`` → params (a dict; positive params are stored as their logarithm)
    - ``apply(params, **inputs)`` → outputs of one sample
    - ``apply_batch(params, **inputs)`` → outputs over a leading batch axis
    - ``loss(params, batch)`` → the program's scalar loss over a batch (a dict of inputs)
    - ``metrics(params, batch)`` → its metrics over a batch
    - ``checked(fn)`` → ``fn`` raising a located error when a solve inside it failed, also
      under your own ``jit``/``grad``/``vmap`` (see :meth:`checked`)

    ``prog.product`` is the compiled product itself (``ddm.compiler.product.Product``): the
    same functions unjitted, returning ``(result, aux)``.
    """

    def __init__(self, product: Product, strict: bool = True):
        from ddm.library.xla_env import apply_dispatch

        apply_dispatch()  # DDM_DISPATCH=inline, before the first computation (single decisions)
        if product.x64:
            # the documented global switch (load(..., x64=True), --x64): float64 everywhere
            jax.config.update("jax_enable_x64", True)
        self.product = product
        self.strict = strict
        # jit once, here — unless the product jitted its functions inside their float64 scope
        # (a float32 program with a node solving in float64), where an outer jit must not be
        jit = (lambda f, **_: f) if product.jitted else jax.jit
        self._apply = jit(product.apply)
        self._decide = jit(self._decide_impl)
        self._apply_batch = jit(product.apply_batch)
        self._loss = jit(product.loss)
        self._metrics = jit(product.metrics)
        self._values = jit(product.values, static_argnums=(2,))

    @classmethod
    def compile(
        cls, graph: Graph, sources: Sources, x64: bool = False, strict: bool = True
    ) -> "Program":
        """Lower ``graph`` and wrap the product (compile errors come back located)."""
        try:
            product = lower(graph, sources.texts, x64)
        except DdmError as err:
            raise sources.locate(err) from None
        return cls(product, strict)

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
            hint = (
                f"did you mean '{close[0]}'?"
                if close
                else "its named losses: " + ", ".join(names)
                if names
                else "declare one: loss NAME = ..."
            )
            raise DataDiagnostic(None, f"{self.file} has no loss named '{name}'", hint=hint)
        return self._derive(self.graph.with_loss(name))

    def without_rules(self) -> "Program":
        """The same program trained without its Φ-rules' loss terms ("pure DP"); the rules'
        activations are still measured. Guards, being hard limits, stay."""
        return self._derive(self.graph.without_rules())

    def variant(self, v: "Variant") -> "Program":
        """The same program rewritten as the :class:`~ddm.compiler.variants.Variant` ``v``
        says — stop a gradient, freeze a param, soften a guard, keep some rules, train a named
        loss, read a node from the data — a typed rewrite of the compiled graph
        (:mod:`ddm.compiler.variants`, docs/experiments.md). Composes with :meth:`with_loss`
        and :meth:`without_rules` in either order.

        >>> import ddm, jax
        >>> from ddm.compiler.variants import Variant
        >>> prog = ddm.loads("input x: f32\\nparam a: f32 = 2.0\\nnode y = a * x\\noutput y\\n"
        ...                  "loss = mean(y ** 2)")
        >>> held = prog.variant(Variant("held", stop_gradient=("y",)))
        >>> params, batch = prog.init(None), {"x": [1.0]}
        >>> def grad_a(p):
        ...     return float(jax.grad(p.loss)(params, batch)["a"])
        >>> grad_a(prog), grad_a(held), grad_a(held.without_rules())
        (4.0, 0.0, 0.0)
        """
        from ddm.compiler.variants import apply

        try:
            graph = apply(self.graph, v)
        except DdmError as err:
            raise self.product.locate(err) from None
        return self._derive(graph)

    def _derive(self, graph: Graph) -> "Program":
        return Program(lower(graph, self.product.sources, self.x64), self.strict)

    # --- facts ---------------------------------------------------------------------------------
    @property
    def graph(self) -> Graph:
        return self.product.graph

    @property
    def sources(self) -> Sources:
        return Sources(dict(self.product.sources))

    @property
    def x64(self) -> bool:
        return self.product.x64

    @property
    def file(self) -> str:
        return self.graph.file

    @property
    def warnings(self):
        return self.graph.warnings

    @property
    def float_dtype(self):
        return self.product.float_dtype

    def ir(self) -> str:
        return format_ir(self.graph)

    def node_label(self, vid: int) -> str:
        return self.product.label(vid)

    # --- params --------------------------------------------------------------------------------
    @_located
    def init(self, key, **dims: int) -> dict[str, Any]:
        """Fresh params. Dims a param's shape needs must have values (declared or given).
        Params that cannot fit the device's memory are refused before any is allocated."""
        from ddm.runtime import memory

        try:
            memory.check(self.graph, dims, 1, False, "initialising the params", params_only=True)
        except DdmError as err:
            raise self.product.locate(err) from None
        return self.product.init(key, **dims)

    def param_values(self, params) -> dict[str, Any]:
        """Tensor params as the program sees them (positive ones exponentiated)."""
        return self.product.param_values(params)

    # --- evaluation ----------------------------------------------------------------------------
    @_located
    def apply(self, params, **inputs) -> dict[str, Any]:
        """The program's outputs for one sample — one decision.

        The fast path for a decision maker called one decision at a time: one compiled call
        that returns the outputs and a single flag (did a solve of an ``error``-policy node
        fail?) instead of every node's solver info; only when the flag is set does the call
        run again with the infos, to raise the located error. Called inside your own ``jit``,
        the flag is traced and not read (use :meth:`checked`)."""
        given = self._inputs(inputs)
        out, failed = self._decide(params, given)
        if failed is not None and self.strict and _read_flag(failed):
            _, aux = self._apply(params, given)
            self.check_solvers(aux, "apply")
        return out

    def _decide_impl(self, params, inputs):
        """``product.apply``'s outputs and :func:`solver_report.any_failed` of its solves."""
        out, aux = self.product.apply(params, inputs)
        return out, solver_report.any_failed(self.product, aux.solvers)

    @_located
    def apply_batch(self, params, **inputs) -> dict[str, Any]:
        """The program's outputs for a batch: every input has a leading batch axis."""
        out, aux = self._apply_batch(params, self._inputs(inputs))
        self.check_solvers(aux, "apply_batch")
        return out

    @_located
    def loss(self, params, batch: Mapping[str, Any], key=None):
        """The scalar ``loss`` over a batch of inputs. ``key``: a JAX key from which random
        ops (``gumbel_softmax``) draw their noise, as in training; without one (the default)
        they are deterministic."""
        loss, aux = self._loss(params, self._inputs(batch), key)
        self.check_solvers(aux, "loss")
        return loss

    @_located
    def loss_and_info(self, params, batch: Mapping[str, Any], key=None) -> tuple[Any, Aux]:
        """``(loss, aux)``: the loss and its :class:`~ddm.compiler.product.Aux` — per
        declarative node its solver :class:`Info` batched over instances (``aux.solvers``),
        each rule's activation, each guard's checks — for ``jax.value_and_grad(...,
        has_aux=True)`` in your own training loop (then call :meth:`check_solvers` on the
        concrete aux). ``key`` as in :meth:`loss`."""
        return self._loss(params, self._inputs(batch), key)

    @_located
    def metrics(self, params, batch: Mapping[str, Any]) -> dict[str, Any]:
        """Every ``metric`` (and the loss, as ``loss``) over a batch of inputs."""
        out, aux = self._metrics(params, self._inputs(batch))
        self.check_solvers(aux, "metrics")
        return out

    @_located
    def solver_info(self, params, **inputs) -> dict[str, Any]:
        """Per declarative node (by name), its solver :class:`Info` for a batch of inputs:
        status codes, iterations and residuals, one per instance."""
        roots = tuple(self.graph.solver_roots())
        _, aux = self._values(params, self._inputs(inputs), roots)
        return {self.node_label(i): info for i, info in aux.solvers.items()}

    def check_solvers(self, aux, what: str = "") -> None:
        """Raise :class:`~ddm.runtime.errors.SolverDiagnostic` when a declarative node with
        the ``error`` policy failed on some instance (strict programs). ``aux``: an
        :class:`Aux` or its ``solvers`` mapping; traced values are skipped — under your own
        transformations use :meth:`checked`."""
        if self.strict:
            solver_report.enforce(self.product, aux.solvers if isinstance(aux, Aux) else aux, what)

    def checked(self, fn):
        """``fn`` — any function that calls this program, jitted, differentiated or vmapped by
        you — raising the located :class:`~ddm.runtime.errors.SolverDiagnostic` of a failed
        solve of a node with the ``error`` policy.

        Under your transformations a failed instance is NaN, in the value and in every
        gradient it touches (never a plausible number), and ``jax.jit(prog.loss)`` returns
        that NaN rather than raising. ``checked(fn)(*args)`` calls ``fn``; when its result
        holds a NaN or an infinity, it runs ``fn`` once more with ``jax.disable_jit()`` and a
        failure collector open (:mod:`ddm.compiler.failures`), and raises for the first failed
        instance found. A finite result is returned at no extra cost.

        >>> import ddm, jax, jax.numpy as jnp
        >>> prog = ddm.loads('''
        ... input b: f32[2]
        ... param lam: f32 = 1.0 positive
        ... node w = argmin v: f32[2] { lam * sum(v ** 2) - dot(b, v) }
        ...          subject to { sum(v) == 1, v >= 0.8 }
        ... loss = mean(sum(w * w, axis=1))
        ... ''', "budget.ddm")
        >>> params, batch = prog.init(jax.random.key(0)), {"b": jnp.ones((3, 2))}
        >>> grad = jax.jit(jax.grad(prog.loss))
        >>> bool(jnp.isnan(grad(params, batch)["lam"]))       # infeasible: NaN, not a number
        True
        >>> prog.checked(grad)(params, batch)  # the located error, infeasible on instance 0
        Traceback (most recent call last):
        ...
        ddm.runtime.errors.SolverDiagnostic: budget.ddm:4:10: error: argmin node 'w' failed ...
        """
        from ddm.compiler import failures

        @functools.wraps(fn)
        def run(*args, **kwargs):
            out = fn(*args, **kwargs)
            if _finite(out):
                return out
            with failures.collect() as found, jax.disable_jit():
                jax.block_until_ready(fn(*args, **kwargs))
                jax.effects_barrier()
            if found:
                first = found[0]
                raise solver_report.from_failure(self.product, first)
            return out

        return run

    # --- boundary ------------------------------------------------------------------------------
    def _inputs(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs as arrays: nested lists become NumPy arrays (Python floats as the program's
        float dtype); anything that is no array of numbers is a located error."""
        out = {}
        array = _array_type()
        for name, value in given.items():
            if type(value) is array and value.dtype.kind in "biuf":
                out[name] = value  # a device array of numbers already (the fast path)
                continue
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
                got = (
                    f"an array of {value.dtype}"
                    if hasattr(original, "dtype")
                    else "a ragged list"
                    if ragged
                    else f"a {type(original).__name__}"
                )
                raise DataDiagnostic(
                    spec.span if spec else None,
                    f"input '{name}' must be an "
                    f"array of numbers (or a nested list of them), got {got}",
                )
            out[name] = value
        return out

    def __repr__(self) -> str:
        g = self.graph
        return (
            f"<ddm.Program {g.file}: {len(g.inputs)} inputs, {len(g.params)} params, "
            f"{len(g.nodes)} nodes, outputs {[n for n, _ in g.outputs]}>"
        )

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict[str, str]:
        """How a notebook shows the program: its pipeline (``ddmc render``'s named-node view)
        as SVG, drawn by the ``graphviz`` package (``pip install 'ddmc[notebook]'``) and its
        ``dot`` binary. Without either, the DOT text (``text/vnd.graphviz``) beside the
        repr; never an exception. Built when shown, not before."""
        from ddm.runtime.dot import to_dot
        from ddm.runtime.pipeline_view import pipeline

        bundle = {"text/plain": repr(self)}
        dot = to_dot(pipeline(self.graph, self.product.sources))
        try:
            import graphviz

            bundle["image/svg+xml"] = graphviz.Source(dot).pipe(format="svg", encoding="utf-8")
        except Exception:  # the package or its dot binary missing, or dot failed
            bundle["text/vnd.graphviz"] = dot
        return bundle


_TYPES: dict[str, type] = {}


def _array_type() -> type:
    """The concrete class of JAX's arrays (looked up once: a single decision counts µs)."""
    t = _TYPES.get("array")
    if t is None:
        import jax
        import jax.numpy as jnp

        with jax.ensure_compile_time_eval():  # concrete, even when first called under a trace
            t = _TYPES["array"] = type(jnp.zeros(()))
    return t


def _read_flag(flag) -> bool:
    """A concrete flag's value; False for a traced one (inside the caller's ``jit``, where
    :meth:`Program.checked` is the check)."""
    tracer = _TYPES.get("tracer")
    if tracer is None:
        from jax.core import Tracer

        tracer = _TYPES["tracer"] = Tracer
    # np.asarray, not bool(): half the cost of reading one scalar back
    return not isinstance(flag, tracer) and bool(np.asarray(flag))


def _finite(tree) -> bool:
    """Whether every float leaf of ``tree`` is finite (non-arrays count as finite)."""
    for leaf in jax.tree.leaves(tree):
        dtype = getattr(leaf, "dtype", None)
        if (
            dtype is not None
            and np.issubdtype(dtype, np.inexact)
            and not bool(np.all(np.isfinite(np.asarray(leaf))))
        ):
            return False
    return True
