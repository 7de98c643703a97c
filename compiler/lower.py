"""IR → JAX: the evaluator behind the compiled product's functions (:mod:`ddm.compiler.product`,
whose :func:`~ddm.compiler.product.lower` is the phase's entry point).

The program is written per sample. ``sample`` evaluates values for one sample; ``batch``
vectorises the per-sample part with ``jax.vmap(axis_name="batch")`` (so batch-statistics ops can
use collectives) and then evaluates the batch-stage values of ``loss`` and ``metric`` on the
lifted arrays. Every value is converted to the concrete dtype its IR type names, so the JAX
program computes exactly the types the checker inferred.

Randomness is explicit: an evaluation given a JAX ``key`` hands every random op (``Op.extra``
``"random"``, e.g. ``gumbel_softmax``) ``key=fold_in(k, value id)``, where ``k`` is
``fold_in(key, b)`` for values computed per sample under ``batch`` (``b`` the sample's position
in the batch), ``key`` itself for batch-stage values and under ``sample``; inside a scan's body
``k`` is first replaced by ``fold_in(fold_in(k, scan id), t)`` at step ``t``, so every step
draws fresh noise. Without a key random ops are deterministic (evaluation: ``apply``,
``metrics``); the same key gives the same bits. Training passes a key per step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from ddm.compiler.binding import resolve as resolve_dim
from ddm.compiler.ir import Graph, Value
from ddm.dsl.diagnostics import DataDiagnostic, DtypeDiagnostic, ShapeDiagnostic
from ddm.library import OPS
from ddm.library.layers import apply_layer
from ddm.library.lazy import jax, jnp
from ddm.library.op import Op
from ddm.library.precision import resolve_dtype
from ddm.library.types import DtypeError, LayerType, ShapeError, SymDim


@dataclass(frozen=True)
class Evaluator:
    """Evaluates IR values with JAX: the interpreter the compiled product's functions call.

    Every entry returns the values asked for and the solver :class:`Info` of each declarative
    node it solved, by value id (batched over samples under :meth:`batch`; for a node inside a
    scan, stacked over the scan's steps). Nothing is written anywhere else."""

    graph: Graph
    ops: Mapping[str, Op]
    x64: bool

    # --- one sample ----------------------------------------------------------------------------
    def sample(
        self,
        params,
        inputs: Mapping,
        dims: Mapping[str, int],
        roots,
        batched: bool = False,
        taps: Mapping | None = None,
        key=None,
    ) -> tuple[dict[int, object], dict[int, object]]:
        """``(values, infos)``: values ``roots`` (static or sample stage) for one sample's
        ``inputs``, and the solver infos of the declarative nodes among what they need.
        ``batched``: called under ``jax.vmap(axis_name="batch")`` (batch-statistics ops may
        use collectives). ``taps``: zeros added to some values, by id, so that the gradient with
        respect to a tap is the loss's adjoint at that value. ``key``: this sample's JAX key for
        random ops (``None``: they are deterministic)."""
        env: dict = {}
        infos = self.run(
            sorted(self.graph.ancestors(roots)), env, params, inputs, dims, batched, key, taps
        )
        return {i: env[i] for i in roots}, infos

    def run(
        self, ids, env: dict, params, inputs, dims, batched, key=None, taps: Mapping | None = None
    ) -> dict[int, object]:
        """Evaluate the values ``ids`` (in order) into ``env``; returns the solver infos."""
        infos: dict = {}
        ids = list(ids)
        done: set[int] = set()  # solved with an earlier declarative node
        for pos, i in enumerate(ids):
            if i in done:
                continue
            v = self.graph.values[i]
            together = self._together(v, [j for j in ids[pos + 1 :] if j not in done], env)
            if len(together) > 1:
                from ddm.compiler.lower_argmin import solve_nodes

                solved = solve_nodes(self, together, env, params, inputs, dims, batched)
                for u in together:
                    x, info = solved[u.id]
                    env[u.id] = _stop(u, self._typed(u, x))
                    infos[u.id] = info
                    done.add(u.id)
            else:
                env[i], found = self.node(v, env, params, inputs, dims, batched, key)
                infos.update(found)
            for u in together or [v]:
                if taps is not None and u.id in taps:
                    env[u.id] = env[u.id] + taps[u.id]
        return infos

    def _together(self, v: Value, later, env) -> list[Value]:
        """``v`` and the later declarative nodes of classes 1/2 that can be solved with it now
        (their inputs are known): :func:`~ddm.compiler.lower_argmin.solve_nodes` decides which
        actually share a solve. Empty when ``v`` is not such a node."""
        from ddm.compiler.lower_argmin import joins

        if v.op != "argmin" or not joins(v):
            return []
        out = [v]
        for j in later:
            u = self.graph.values[j]
            if u.op == "argmin" and joins(u) and all(k in env for k in u.inputs):
                out.append(u)
        return out

    # --- a batch -------------------------------------------------------------------------------
    def batch(
        self,
        params,
        inputs: Mapping,
        dims: Mapping[str, int],
        roots,
        taps: Mapping | None = None,
        key=None,
    ) -> tuple[dict[int, object], dict[int, object]]:
        """``(values, infos)`` for a batch of inputs (leading axis): values ``roots`` of any
        stage, and the solver infos of per-sample declarative nodes batched (leading axis).
        ``taps`` as in :meth:`sample`: batched ``[B, …]`` for sample-stage values. ``key``: a JAX
        key for random ops; sample ``b`` draws from ``fold_in(key, b)`` (``None``:
        deterministic)."""
        per_sample, infos = self.per_sample(params, inputs, dims, roots, taps, key)
        return self.from_samples(params, inputs, dims, roots, per_sample, infos, taps, key)

    def per_sample(self, params, inputs, dims, roots, taps=None, key=None) -> tuple[dict, dict]:
        """The first half of :meth:`batch`: the sample-stage values that ``roots`` need, over
        the batch (leading axis), and their solver infos. Without batch statistics in the
        sample stage (:meth:`batch_statistics`) and without a key, a sample's values do not
        depend on the rest of its batch, so the batch may be cut into chunks here."""
        taps = taps or {}
        g = self.graph
        sample_roots = self._sample_roots(roots)
        if not sample_roots:
            return {}, {}
        wanted = g.inputs_needed(sample_roots)
        batch_inputs = {s.name: inputs[s.name] for s in wanted}
        sample_taps = {i: t for i, t in taps.items() if g.values[i].stage == "sample"}

        def one(sample_inputs, tapped, sample_key):
            return self.sample(
                params,
                sample_inputs,
                dims,
                sample_roots,
                batched=True,
                taps=tapped or None,
                key=sample_key,
            )

        keys = None
        if key is not None:
            size = jax.tree.leaves(batch_inputs)[0].shape[0]
            keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(size))
        return jax.vmap(one, axis_name="batch")(batch_inputs, sample_taps, keys)

    def from_samples(
        self,
        params,
        inputs: Mapping,
        dims: Mapping[str, int],
        roots,
        per_sample: Mapping,
        infos: Mapping,
        taps: Mapping | None = None,
        key=None,
    ) -> tuple[dict[int, object], dict[int, object]]:
        """The second half of :meth:`batch`: ``roots`` from the sample-stage values
        :meth:`per_sample` computed over the whole batch (``per_sample``, ``infos``)."""
        g = self.graph
        env: dict = dict(per_sample)
        infos = dict(infos)
        need = g.ancestors(roots)
        for i in sorted(need):
            if g.values[i].op == "lift":
                env[i] = env[g.values[i].inputs[0]]
        rest = [i for i in sorted(need) if i not in env and g.values[i].stage != "sample"]
        infos.update(self.run(rest, env, params, inputs, dims, True, key, taps or {}))
        return {i: env[i] for i in roots}, infos

    def _sample_roots(self, roots) -> list[int]:
        """The sample-stage values a batch evaluation of ``roots`` computes per sample: the
        sources of the lifts they need, and the sample-stage roots themselves."""
        g = self.graph
        need = g.ancestors(roots)
        lifts = [i for i in sorted(need) if g.values[i].op == "lift"]
        sources = {g.values[i].inputs[0] for i in lifts}
        return sorted(sources | {i for i in roots if g.values[i].stage == "sample"})

    def batch_statistics(self) -> bool:
        """Whether the program's sample stage reads its batch (``zscore(stats="batch")``, the
        one op whose per-sample code uses the batch axis): then a sample's values depend on
        the rest of its batch, and a batch cannot be cut into chunks."""
        return any(v.op == "zscore" and v.attr("stats") == "batch" for v in self.graph.values)

    # --- one node --------------------------------------------------------------------------------
    def node(
        self, v: Value, env, params, inputs, dims, batched: bool, key=None
    ) -> tuple[object, dict[int, object]]:
        """``v``'s value and the solver infos its evaluation produced: a declarative node's
        own, a scan's those of the declarative nodes in its body (stacked over its steps)."""
        if v.op == "argmin":
            # an argmin's problem is evaluated without a key: its solution is deterministic
            from ddm.compiler.lower_argmin import solve_node

            x, info = solve_node(self, v, env, params, inputs, dims, batched)
            return _stop(v, self._typed(v, x)), {v.id: info}
        if v.op == "scan":
            from ddm.compiler.lower_scan import scan_node

            out, infos = scan_node(self, v, env, params, inputs, dims, batched, key)
            return _stop(v, self._typed(v, out)), infos
        return self.value(v, env, params, inputs, dims, batched, key), {}

    # --- one value -----------------------------------------------------------------------------
    def value(self, v: Value, env, params, inputs, dims, batched: bool, key=None):
        """``v``'s value from the values in ``env``; ``key``: the JAX key random ops fold
        ``v.id`` into (``None``: they are deterministic)."""
        if v.op in ("argmin", "scan"):  # nested in a problem's body: its infos are not kept
            return self.node(v, env, params, inputs, dims, batched, key)[0]
        return _stop(v, self._typed(v, self._compute(v, env, params, inputs, dims, batched, key)))

    def _typed(self, v: Value, out):
        if v.type.weak:
            return out  # Python scalars stay weakly typed, as the checker assumed
        want = resolve_dtype(v.type.dtype, self.x64)
        out = jnp.asarray(out)
        return out if out.dtype == want else out.astype(want)

    def _compute(self, v: Value, env, params, inputs, dims, batched, key=None):
        op = v.op
        if op == "input":
            return inputs[v.attr("name")]
        if op == "param":
            raw = params[v.attr("name")]
            return jnp.exp(raw) if v.attr("positive") else raw
        if op == "const":
            value = v.attr("value")
            if v.type.weak:
                return value
            return jnp.asarray(value, resolve_dtype(v.type.dtype, self.x64))
        if op == "dim":
            return resolve_dim(v.attr("dim"), dims, v.span)
        if op == "identity":
            return env[v.inputs[0]]
        if op == "index":
            return env[v.inputs[0]][self._index(v, env)]
        if op == "as_carry":
            shape = tuple(resolve_dim(d, dims, v.span) for d in v.attr("shape"))
            return jnp.broadcast_to(env[v.inputs[0]], shape)
        if op == "layer":
            name = v.attr("param")
            layer = self.graph.param(name).type
            assert isinstance(layer, LayerType)  # check made a layer value only for a layer param
            return apply_layer(params[name], layer, env[v.inputs[0]])
        spec = self.ops[op]
        static = {k: self._static(a, dims, v) for k, a in v.attrs if not k.startswith("_")}
        needs_batch = spec.extra.get("needs_batch")
        if needs_batch and needs_batch(static) and not batched:
            raise DataDiagnostic(
                v.span,
                f'{op}(stats="batch") needs a batch; call '
                "apply_batch (or use fixed statistics) for one sample",
            )
        self._recheck_bound(v, spec, static, dims)
        args = self._grouped(v, [env[i] for i in v.inputs])
        if key is not None and spec.extra.get("random"):
            static["key"] = jax.random.fold_in(key, v.id)
        return spec.impl(*args, **static)

    def _grouped(self, v: Value, items):
        """``items`` (one per input) in the op's argument layout: a tensor, None, or a list."""
        args, k = [], 0
        for n in v.attr("_layout"):
            if n == -1:
                args.append(items[k])
                k += 1
            elif n == 0:
                args.append(None)
            else:
                args.append(list(items[k : k + n]))
                k += n
        return args

    def _recheck_bound(self, v: Value, spec: Op, static, dims) -> None:
        """Run the shape rule again once the dims are bound. Over symbolic dims a rule cannot
        relate N to M (``hedge_pnl`` needs len(S) = len(h) + 1); with sizes known, a mismatch
        is a diagnostic at the node instead of an error from inside JAX. Trace time only."""
        types = [self.graph.values[i].type for i in v.inputs]
        if not any(isinstance(d, SymDim) for t in types for d in getattr(t, "shape", ())):
            return

        def size(d):
            if isinstance(d, SymDim) and d.value is None:
                return dims.get(d.name)  # None: not bound here (e.g. the batch axis)
            return d

        bound = [replace(t, shape=tuple(size(d) for d in t.shape)) for t in types]
        if any(d is None for t in bound for d in t.shape):
            return
        grouped = [tuple(a) if isinstance(a, list) else a for a in self._grouped(v, bound)]
        try:
            spec.rule(tuple(grouped), static)
        except ShapeError as err:
            cls = DtypeDiagnostic if isinstance(err, DtypeError) else ShapeDiagnostic
            raise cls(
                v.span, f"{err.message} (with the dims bound by the data)", hint=err.hint
            ) from None

    def _index(self, v: Value, env):
        out = []
        for item in v.attr("items"):
            if item[0] == "i":
                out.append(item[1])
            elif item[0] == "s":
                out.append(slice(item[1], item[2]))
            else:
                out.append(env[v.inputs[item[1]]])
        return tuple(out)

    def _static(self, value, dims, v: Value):
        if isinstance(value, SymDim):
            return resolve_dim(value, dims, v.span)
        if isinstance(value, tuple) and any(isinstance(x, SymDim) for x in value):
            return tuple(resolve_dim(x, dims, v.span) for x in value)
        return value


def _stop(v: Value, out):
    """``out`` through ``jax.lax.stop_gradient`` where a variant stopped ``v`` (every path that
    computes a value — :meth:`Evaluator.run`, a scan's step, an argmin's body — ends here)."""
    return jax.lax.stop_gradient(out) if v.stopped else out


def evaluator(graph: Graph, x64: bool = False, ops: Mapping[str, Op] = OPS) -> Evaluator:
    """The evaluator of ``graph``; checks that the float64 it uses is available."""
    if not x64:
        for v in graph.values:
            if v.type.dtype == "f64":
                raise DtypeDiagnostic(
                    v.span,
                    "this program uses f64, which needs float64 enabled",
                    hint="load it with x64=True (CLI: --x64, config: x64: true)",
                )
    return Evaluator(graph, ops, x64)
