"""Type and shape checking over symbolic dims, producing the IR. Entry point: :func:`check`.

Walks the resolved program once, in dependency order; every sub-expression becomes an IR
:class:`~ddm.compiler.ir.Value` whose type comes from its op's shape rule. A rule's complaint
becomes a diagnostic at the offending sub-expression. Nothing here imports JAX.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from ddm.compiler.declarative import check_argmin
from ddm.compiler.desugar import Desugared
from ddm.compiler.ir import DimSpec, FnInfo, Graph, GuardSpec, InputSpec, ParamSpec, RuleSpec, Value
from ddm.compiler.resolve import FnDef, Resolved
from ddm.compiler.scope import Scope, int_literal, literal, num_literal, span_of
from ddm.compiler.sequential import check_scan
from ddm.compiler.settings import settings_of
from ddm.dsl import ast
from ddm.dsl.diagnostics import (
    ArityDiagnostic,
    DdmError,
    DtypeDiagnostic,
    NameDiagnostic,
    Note,
    ShapeDiagnostic,
)
from ddm.dsl.span import Span
from ddm.library import BINARY_OPERATORS, INITIALIZERS, LAYERS, OPS, UNARY_OPERATORS
from ddm.library.op import Arg, Op
from ddm.library.types import Dim, DtypeError, LayerType, ShapeError, SymDim, TensorType

_STAGE_RANK = {"static": 0, "sample": 1, "batch": 2}
BATCH = SymDim("batch")


def check(r: Resolved, sugar: Desugared | None = None, ops: Mapping[str, Op] = OPS) -> Graph:
    """Type-check a resolved program and build its IR graph. ``sugar``: what the program's
    rules and guards became (:func:`~ddm.compiler.desugar.desugar`), turned into specs by
    value id."""
    return _Checker(r, ops).graph(sugar or Desugared(r.module))


def sym_dims(decls: Mapping[str, ast.DimDecl]) -> dict[str, SymDim]:
    """The declared dims as symbolic dims; a declared size is at least 1 (the parser bounds
    it by int64)."""
    for d in decls.values():
        if d.value is not None and d.value < 1:
            raise ShapeDiagnostic(d.span, f"dim '{d.name}' must be at least 1, got {d.value}")
    return {n: SymDim(n, d.value) for n, d in decls.items()}


class _Checker:
    def __init__(self, r: Resolved, ops: Mapping[str, Op]):
        self.r = r
        self.ops = ops
        self.values: list[Value] = []
        self.dims = sym_dims(r.dims)
        self.names: dict[str, int] = {}  # inputs, params, nodes → value id
        self.layers: dict[str, LayerType] = {}
        self.lifted: dict[int, int] = {}
        self.dim_values: dict[str, int] = {}
        self.generic_ok: set[int] = set()
        self.scan_index: dict[int, tuple[str, Dim]] = {}  # index value → (name, length)

    # --- building values ---------------------------------------------------------------------
    def add(
        self,
        op: str,
        kind: str,
        inputs: Sequence[int],
        attrs: Iterable[tuple[str, Any]],
        typ: TensorType,
        span: Span,
        scope: Scope | None = None,
        name: str | None = None,
        stage: str | None = None,
    ) -> int:
        if stage is None:
            stage = "static"
            for i in inputs:
                if _STAGE_RANK[self.values[i].stage] > _STAGE_RANK[stage]:
                    stage = self.values[i].stage
        vid = len(self.values)
        self.values.append(
            Value(
                vid,
                op,
                kind,
                stage,
                tuple(inputs),
                tuple(attrs),
                typ,
                span,
                name,
                scope.tag if scope else None,
            )
        )
        return vid

    def type_of(self, vid: int) -> TensorType:
        return self.values[vid].type

    def rename(self, vid: int, name: str) -> int:
        """Attach a node's name to the value its expression produced (a fresh alias when that
        value already names something else, e.g. ``node b = a``)."""
        v = self.values[vid]
        typ = TensorType(v.type.dtype, v.type.shape)  # a node's dtype is concrete
        if v.name is None and v.op not in ("input", "param", "dim", "lift") and v.type == typ:
            self.values[vid] = Value(
                v.id, v.op, v.kind, v.stage, v.inputs, v.attrs, typ, v.span, name, v.scope
            )
            return vid
        return self.add("identity", "imperative", (vid,), (), typ, v.span, name=name, stage=v.stage)

    # --- the whole program -------------------------------------------------------------------
    def graph(self, sugar: Desugared) -> Graph:
        r = self.r
        inputs = []
        for name, decl in r.inputs.items():
            typ = self.type_expr(decl.type, self.dims, generic=False)
            vid = self.add(
                "input", "input", (), (("name", name),), typ, decl.span, name=name, stage="sample"
            )
            self.names[name] = vid
            inputs.append(InputSpec(name, typ, decl.span, vid))
        params = [self.param(decl) for decl in r.params.values()]
        fns = []
        for fn in _unique_fns(r):
            self.check_fn_generic(fn)
            fns.append(FnInfo(fn.qualname, _signature(fn.decl), fn.decl.span))
        nodes = {}
        for name in r.node_order:
            decl = r.nodes[name]
            scope = Scope("sample", dims=self.dims)
            vid = self.rename(self.expr(decl.value, scope), name)
            if decl.type is not None:
                self.expect(decl.type, vid, f"node '{name}'", self.dims)
            self.names[name] = nodes[name] = vid
        for rule in sugar.rules:  # a rule's memory is one number: its decay must be one too
            if rule.decay and self.values[nodes[rule.decay]].stage != "static":
                raise ShapeDiagnostic(
                    r.nodes[rule.decay].span,
                    f"rule '{rule.name}' decays its "
                    "memory by one γ per step, and this decay depends on the "
                    "sample",
                    hint="write it from numbers and params only, e.g. decay sigmoid(g)",
                )
        outputs = tuple((o.id, self.names[o.id]) for o in r.outputs)
        loss = None
        if r.loss is not None:
            loss = self.batch_scalar(r.loss.value, "loss")
        metrics = tuple(
            (name, self.batch_scalar(m.value, f"metric '{name}'")) for name, m in r.metrics.items()
        )
        named = tuple(
            (name, self.batch_scalar(d.value, f"loss '{name}'"))
            for name, d in r.named_losses.items()
        )
        task = loss
        task_named: tuple = ()
        if sugar.rules:  # the losses without the rules' terms
            if sugar.task_loss is not None:
                task = self.batch_scalar(sugar.task_loss.value, "loss")
            task_named = tuple(
                (name, self.batch_scalar(d.value, f"loss '{name}'"))
                for name, d in sugar.task_named.items()
            )
        if loss is None and named:  # only named losses: the first is the default
            loss = named[0][1]
            task = (task_named or named)[0][1]
        dims = tuple(DimSpec(n, d.value, d.name_span) for n, d in r.dims.items())
        metric_ids = dict(metrics)
        rules = tuple(
            RuleSpec(
                s.name,
                s.intent,
                s.span,
                nodes[s.trigger],
                nodes[s.penalty],
                nodes[s.weight],
                nodes[s.term],
                metric_ids[s.activation],
                metric_ids[s.effective_penalty],
                s.memory,
                nodes[s.decay] if s.decay else None,
                s.boost,
            )
            for s in sugar.rules
        )
        guards = tuple(
            GuardSpec(
                s.name,
                s.intent,
                s.target,
                s.limit,
                s.action,
                s.span,
                nodes[s.violated],
                nodes[s.breached],
                metric_ids[s.violation_rate],
                metric_ids[s.breach_rate],
            )
            for s in sugar.guards
        )
        run = settings_of(r.run) if r.run is not None else None
        return Graph(
            r.module.file,
            tuple(self.values),
            dims,
            tuple(inputs),
            tuple(params),
            nodes,
            outputs,
            loss,
            metrics,
            tuple(fns),
            run,
            tuple(r.warnings),
            named,
            rules,
            guards,
            task,
            task_named,
        )

    def batch_scalar(self, expr, what: str) -> int:
        vid = self.expr(expr, Scope("batch", dims=self.dims))
        t = self.type_of(vid)
        if t.shape:
            raise ShapeDiagnostic(
                span_of(expr),
                f"{what} must be a scalar, got {t}",
                hint="reduce it over the batch, e.g. mean(...)",
            )
        if not t.is_float and t.dtype != "i32":
            raise DtypeDiagnostic(
                span_of(expr), f"{what} must be a number, got {t}", hint="cast with f32(...)"
            )
        return vid

    # --- types -------------------------------------------------------------------------------
    def type_expr(
        self, t: ast.TypeExpr, dims: Mapping[str, SymDim], generic: bool, bound: dict | None = None
    ) -> TensorType:
        shape = []
        for ref in t.dims:
            if isinstance(ref.value, int):
                if ref.value < 1:
                    raise ShapeDiagnostic(
                        ref.span, f"an axis's size must be at least 1, got {ref.value}"
                    )
                shape.append(ref.value)
            elif ref.value in dims:
                shape.append(dims[ref.value])
            elif generic:
                shape.append(SymDim(ref.value))
                if bound is not None:
                    bound.setdefault(ref.value, ref.span)
            else:
                raise NameDiagnostic(
                    ref.span, f"undefined dim '{ref.value}'", hint=f"declare it: dim {ref.value}"
                )
        return TensorType(t.dtype, tuple(shape))

    def expect(self, t: ast.TypeExpr, vid: int, what: str, dims) -> None:
        want = self.type_expr(t, dims, generic=False)
        got = self.type_of(vid)
        if got.dtype != want.dtype or not _same_shape(got.shape, want.shape):
            raise ShapeDiagnostic(t.span, f"{what} is declared {want} but its value is {got}")

    # --- params ------------------------------------------------------------------------------
    def param(self, decl: ast.ParamDecl) -> ParamSpec:
        init = decl.init
        if decl.type is None:  # a layer
            assert isinstance(init, ast.Call) and isinstance(init.func, ast.Name)
            kind = LAYERS[init.func.id]
            if decl.positive:
                raise ShapeDiagnostic(decl.span, "a layer cannot be 'positive'")
            n = len(init.args)
            if n < kind.min_sizes or (kind.max_sizes is not None and n > kind.max_sizes):
                want = (
                    f"{kind.min_sizes}"
                    if kind.max_sizes == kind.min_sizes
                    else f"at least {kind.min_sizes}"
                )
                raise ArityDiagnostic(
                    init.span, f"{kind.name} takes {want} sizes, got {n}", hint=kind.doc
                )
            sizes = [
                self.static_value(a, Arg(f"size {i + 1}", "dim"), kind.name)
                for i, a in enumerate(init.args)
            ]
            for a, s in zip(init.args, sizes):
                if isinstance(s, int) and s <= 0:
                    raise ShapeDiagnostic(span_of(a), f"layer sizes must be positive, got {s}")
            static = self.static_kwargs(init, kind.kwargs, kind.name)
            layer = kind.build(sizes, static)
            self.layers[decl.name] = layer
            return ParamSpec(
                decl.name, layer, (kind.name, tuple(sorted(static.items()))), False, decl.span
            )
        typ = self.type_expr(decl.type, self.dims, generic=False)
        if typ.dtype not in ("f32", "f64"):
            raise DtypeDiagnostic(
                decl.type.span, f"params are trained by gradients and must be floats, got {typ}"
            )
        # an initialiser is called by its bare name; ``m.f()`` is not one and gets the
        # message for a value that is neither a literal nor an initialiser call
        if isinstance(init, ast.Call) and isinstance(init.func, ast.Name):
            name = init.func.id
            spec = INITIALIZERS[name]
            if init.args:
                raise ArityDiagnostic(
                    span_of(init.args[0]),
                    f"initialiser {name}() takes keyword arguments only",
                    hint=spec.doc,
                )
            static = self.static_kwargs(init, spec.kwargs, name)
            if decl.positive:
                raise ShapeDiagnostic(
                    init.span,
                    f"a positive param needs a literal positive initial value, not {name}(...)",
                    hint=f"param {decl.name}: {typ} = 1.0 positive",
                )
            spec_init = (name, tuple(sorted(static.items())))
        else:
            value = literal(init)
            if value is None:
                raise ShapeDiagnostic(
                    span_of(init),
                    "a param's initial value is a number, a list "
                    "of numbers or an initialiser call such as glorot()",
                )
            shape = _nested_shape(value)
            if shape is None:
                raise ShapeDiagnostic(span_of(init), "ragged list: every row needs the same length")
            if shape and not _same_shape(tuple(shape), typ.shape):
                raise ShapeDiagnostic(
                    span_of(init),
                    f"initial value has shape {list(shape)} but param '{decl.name}' is {typ}",
                )
            if decl.positive and any(v <= 0 for v in _flat(value)):
                raise ShapeDiagnostic(
                    span_of(init),
                    f"positive param '{decl.name}' needs an "
                    "initial value > 0 (it is trained as its logarithm)",
                )
            spec_init = ("value", value)
        vid = self.add(
            "param",
            "param",
            (),
            (("name", decl.name), ("positive", decl.positive)),
            typ,
            decl.span,
            name=decl.name,
            stage="static",
        )
        self.names[decl.name] = vid
        return ParamSpec(decl.name, typ, spec_init, decl.positive, decl.span)

    # --- fns ---------------------------------------------------------------------------------
    def check_fn_generic(self, fn: FnDef) -> None:
        """Check a fn once at its definition, with its signature's dims kept symbolic."""
        sub = _Checker.__new__(_Checker)
        sub.__dict__.update(self.__dict__)
        sub.values = list(self.values)
        sub.lifted = {}
        dims = sym_dims(fn.dims)
        scope = Scope("sample", dims=dims, fn=fn, tag=fn.qualname)
        for p in fn.decl.params:
            typ = sub.type_expr(p.type, dims, generic=True)
            scope.local[p.name] = sub.add(
                "fn_arg", "input", (), (("name", p.name),), typ, p.span, scope, stage="sample"
            )
        result = sub.fn_body(fn, scope)
        want = sub.type_expr(fn.decl.result_type, dims, generic=True)
        got = sub.type_of(result)
        if not _compatible(got, want):
            raise ShapeDiagnostic(
                span_of(fn.decl.result),
                f"fn '{fn.decl.name}' declares result {want} but returns {got}",
                notes=(Note(fn.decl.result_type.span, "declared here"),),
            )

    def fn_body(self, fn: FnDef, scope: Scope) -> int:
        for stmt in fn.decl.body:
            vid = self.rename(self.expr(stmt.value, scope), stmt.name)
            if stmt.type is not None:
                self.expect(stmt.type, vid, f"'{stmt.name}'", scope.dims)
            scope.local[stmt.name] = vid
        return self.expr(fn.decl.result, scope)

    def call_fn(self, fn: FnDef, call: ast.Call, scope: Scope) -> int:
        decl = fn.decl
        args = self.bind_args(call, [p.name for p in decl.params], fn.qualname)
        dims = sym_dims(fn.dims)
        subst: dict[str, Any] = {}
        sub_scope = Scope(
            "sample", dims=dims, fn=fn, tag=f"{fn.qualname}@{call.span.line}:{call.span.column}"
        )
        for p, arg in zip(decl.params, args):
            vid = self.expr(arg, scope)
            got = self.type_of(vid)
            want = self.type_expr(p.type, dims, generic=True)
            self.unify(
                want, got, subst, arg, f"argument '{p.name}' of {fn.qualname}()", scope, dims
            )
            if got.weak:
                vid = self.add(
                    "identity",
                    "imperative",
                    (vid,),
                    (),
                    TensorType(want.dtype, got.shape),
                    span_of(arg),
                    scope,
                )
            sub_scope.local[p.name] = vid
        # fn-local generic dims take the sizes the arguments bound
        sub_scope.dims = {**dims, **{k: v for k, v in subst.items() if k not in dims}}
        try:
            return self.fn_body(fn, sub_scope)
        except DdmError as err:
            if not any(n.span == call.span for n in err.notes):
                err.notes = err.notes + (Note(call.span, f"in this call of {fn.qualname}()"),)
            raise

    def unify(
        self,
        want: TensorType,
        got: TensorType,
        subst: dict,
        arg,
        what: str,
        scope: Scope,
        fn_dims: Mapping[str, SymDim],
    ) -> None:
        if scope.context == "batch" and got.shape[:1] == (BATCH,):
            raise ShapeDiagnostic(
                span_of(arg),
                f"{what} expects {want}, got {got}: inside "
                "loss and metric a per-sample node denotes its whole batch",
                hint="call the fn in a node and use that node here",
            )
        dtype_ok = got.dtype == want.dtype or (
            got.weak and not (got.is_float and not want.is_float)
        )
        if not dtype_ok or len(got.shape) != len(want.shape):
            raise ShapeDiagnostic(span_of(arg), f"{what} expects {want}, got {got}")
        for w, g in zip(want.shape, got.shape):
            if isinstance(w, SymDim) and w.value is None and w.name not in fn_dims:
                prev = subst.get(w.name)
                if prev is None:
                    subst[w.name] = g
                elif prev != g:
                    raise ShapeDiagnostic(
                        span_of(arg),
                        f"{what} expects {want} with "
                        f"{w.name} = {prev} (bound by an earlier argument), "
                        f"got {got}",
                    )
            elif w != g:
                raise ShapeDiagnostic(span_of(arg), f"{what} expects {want}, got {got}")

    # --- expressions -------------------------------------------------------------------------
    def expr(self, e, scope: Scope) -> int:
        method = getattr(self, "e_" + type(e).__name__)
        return method(e, scope)

    def e_Name(self, e: ast.Name, scope: Scope) -> int:
        n = e.id
        if n in scope.local:
            return scope.local[n]
        if n in self.names:
            vid = self.names[n]
            if scope.context == "batch" and self.values[vid].stage == "sample":
                return self.lift(vid)
            return vid
        dims = scope.dims if scope.dims else self.dims
        if n in dims:
            return self.add(
                "dim",
                "const",
                (),
                (("dim", dims[n]),),
                TensorType("i32", (), weak=True),
                e.span,
                scope,
                stage="static",
            )
        raise NameDiagnostic(e.span, f"undefined name '{n}'")  # resolve() makes this unreachable

    def lift(self, vid: int) -> int:
        if vid not in self.lifted:
            v = self.values[vid]
            typ = TensorType(v.type.dtype, (BATCH,) + v.type.shape)
            self.lifted[vid] = self.add(
                "lift", "imperative", (vid,), (), typ, v.span, stage="batch"
            )
        return self.lifted[vid]

    def e_Number(self, e: ast.Number, scope) -> int:
        dtype = "i32" if e.is_int else "f32"
        if e.is_int and not -(2**31) <= e.value < 2**31:  # sizes and dims may be larger
            raise DtypeDiagnostic(
                e.span,
                f"integer {e.text or e.value} does not fit an i32 value "
                f"(from {-(2**31)} to {2**31 - 1})",
                hint=f"write it as a float: {float(e.value):.6g}".replace("e+", "e"),
            )
        return self.add(
            "const",
            "const",
            (),
            (("value", e.value),),
            TensorType(dtype, (), weak=True),
            e.span,
            scope,
            stage="static",
        )

    def e_Bool(self, e: ast.Bool, scope) -> int:
        return self.add(
            "const",
            "const",
            (),
            (("value", e.value),),
            TensorType("bool", ()),
            e.span,
            scope,
            stage="static",
        )

    def e_String(self, e: ast.String, scope) -> int:
        raise DtypeDiagnostic(
            e.span, 'a string is not a tensor; strings are only for options such as act="tanh"'
        )

    def e_ListExpr(self, e: ast.ListExpr, scope) -> int:
        value = literal(e)
        if value is None:
            raise ShapeDiagnostic(
                e.span,
                "a list literal holds numbers only",
                hint="build a tensor from expressions with stack([a, b])",
            )
        shape = _nested_shape(value)
        if shape is None or 0 in shape:
            raise ShapeDiagnostic(
                e.span, "ragged or empty list: every row needs the same, non-zero length"
            )
        flat = list(_flat(value))
        dtype = "i32" if all(isinstance(v, int) for v in flat) else "f32"
        return self.add(
            "const",
            "const",
            (),
            (("value", value),),
            TensorType(dtype, tuple(shape)),
            e.span,
            scope,
            stage="static",
        )

    def e_UnaryOp(self, e: ast.UnaryOp, scope) -> int:
        if e.op == "-" and isinstance(e.operand, ast.Number):
            n = e.operand
            return self.e_Number(ast.Number(-n.value, "-" + n.text, e.span), scope)
        operand = self.expr(e.operand, scope)
        return self.apply_op(
            self.ops[UNARY_OPERATORS[e.op]], [operand], [e.operand], {}, e.span, scope, e
        )

    def e_BinOp(self, e: ast.BinOp, scope) -> int:
        # a chain a + b - c … is as deep as it is long: follow its left spine with a loop
        spine: list[ast.BinOp] = []
        head: ast.Expr = e
        while isinstance(head, ast.BinOp):
            spine.append(head)
            head = head.left
        left = self.expr(head, scope)
        for node in reversed(spine):
            right = self.expr(node.right, scope)
            left = self.apply_op(
                self.ops[BINARY_OPERATORS[node.op]],
                [left, right],
                [node.left, node.right],
                {},
                node.span,
                scope,
                node,
            )
        return left

    def e_Argmin(self, e: ast.Argmin, scope) -> int:
        return check_argmin(self, e, scope)

    def e_Scan(self, e: ast.Scan, scope) -> int:
        return check_scan(self, e, scope)

    def e_Attr(self, e: ast.Attr, scope) -> int:
        assert isinstance(e.base, ast.Name)  # resolve: '.' follows only a module's name
        raise NameDiagnostic(e.span, f"'{e.name}' is a fn of module '{e.base.id}'; call it")

    def e_Index(self, e: ast.Index, scope) -> int:
        base = self.expr(e.base, scope)
        t = self.type_of(base)
        if len(e.items) > t.ndim:
            raise ShapeDiagnostic(e.span, f"too many indices ({len(e.items)}) for {t}")
        items, inputs, shape = [], [base], []
        for axis, item in enumerate(e.items):
            dim = t.shape[axis]
            if isinstance(item, ast.Slice):
                lo = self.index_literal(item.lo, dim, "slice start") if item.lo else None
                hi = self.index_literal(item.hi, dim, "slice end") if item.hi else None
                items.append(("s", lo, hi))
                shape.append(self.slice_len(dim, lo, hi, item))
                continue
            k = int_literal(item)
            if k is not None:
                size = _dim_int(dim)
                if size is not None and not -size <= k < size:
                    raise ShapeDiagnostic(
                        span_of(item),
                        f"index {k} is out of range for axis {axis} of {t} (size {size})",
                    )
                items.append(("i", k))
                continue
            vid = self.expr(item, scope)
            it = self.type_of(vid)
            if it.dtype != "i32" or it.shape:
                raise DtypeDiagnostic(
                    span_of(item),
                    f"an index must be an i32 scalar, got {it}",
                    hint="slices take literal bounds: x[1:3]",
                )
            self.check_step_index(item, scope, dim, axis, t)
            items.append(("d", len(inputs)))
            inputs.append(vid)
        shape.extend(t.shape[len(e.items) :])
        return self.add(
            "index",
            "imperative",
            inputs,
            (("items", tuple(items)),),
            TensorType(t.dtype, tuple(shape)),
            e.span,
            scope,
        )

    def check_step_index(self, item, scope: Scope, dim: Dim, axis: int, t: TensorType) -> None:
        """``x[t + k]`` with ``t`` a scan's step index: JAX clamps an index past the end and
        wraps a negative one, so a range that leaves the axis is an error when both sizes are
        known (the last step of ``S[t + 1]`` with S as long as the scan, say)."""
        offset, name = 0, None
        if isinstance(item, ast.Name):
            name = item.id
        elif isinstance(item, ast.BinOp) and item.op in ("+", "-"):
            left, right = item.left, item.right
            k = int_literal(right)
            if isinstance(left, ast.Name) and k is not None:
                name, offset = left.id, (k if item.op == "+" else -k)
            elif (
                item.op == "+"
                and isinstance(right, ast.Name)
                and (j := int_literal(left)) is not None
            ):
                name, offset = right.id, j
        vid = scope.local.get(name) if name is not None else None
        if vid not in self.scan_index:
            return
        index, length = self.scan_index[vid]
        steps, size = _dim_int(length), _dim_int(dim)
        if steps is None or size is None:
            return
        lo, hi = offset, steps - 1 + offset
        if lo < 0 or hi >= size:
            at, value = (0, lo) if lo < 0 else (steps - 1, hi)
            what = "wraps to the end" if lo < 0 else "is past the end"
            raise ShapeDiagnostic(
                span_of(item),
                f"at step {index} = {at} this index is {value}, "
                f"which {what} of axis {axis} of {t} (size {size})",
                hint="shorten the scan or index within the axis",
            )

    def index_literal(self, expr, dim, what) -> int:
        k = int_literal(expr)
        if k is None:
            raise ShapeDiagnostic(span_of(expr), f"{what} must be a literal integer")
        return k

    def slice_len(self, dim, lo, hi, item):
        if lo is None and hi is None:
            return dim
        size = _dim_int(dim)
        if size is None:
            raise ShapeDiagnostic(
                item.span,
                f"slicing the symbolic dim {dim} needs its size",
                hint=f"declare it with a value: dim {dim} = ...",
            )
        return len(range(size)[slice(lo, hi)])

    # calls
    def e_Call(self, e: ast.Call, scope: Scope) -> int:
        if isinstance(e.func, ast.Attr):
            assert isinstance(e.func.base, ast.Name)  # resolve: '.' follows only a module's name
            fn = self.r.namespaces[e.func.base.id][e.func.name]
            return self.call_fn(fn, e, scope)
        assert isinstance(e.func, ast.Name)  # resolve: only names and module fns are called
        name = e.func.id
        fns = self.r.fns_for(scope.fn)
        if name in fns:
            return self.call_fn(fns[name], e, scope)
        if name in self.layers:
            return self.call_layer(name, e, scope)
        return self.call_op(self.ops[name], e, scope)

    def call_layer(self, name: str, e: ast.Call, scope) -> int:
        layer = self.layers[name]
        if len(e.args) != 1 or e.kwargs:
            raise ArityDiagnostic(e.span, f"layer '{name}' takes one argument, its input")
        x = self.expr(e.args[0], scope)
        t = self.type_of(x)
        if t.ndim == 0 or t.shape[-1] != layer.d_in:
            raise ShapeDiagnostic(
                span_of(e.args[0]),
                f"layer '{name}' ({layer}) expects inputs [..., {layer.d_in}], got {t}",
            )
        if not t.is_float:
            raise DtypeDiagnostic(
                span_of(e.args[0]),
                f"layer '{name}' expects floats, got {t}",
                hint="cast with f32(...)",
            )
        out = TensorType(t.dtype, t.shape[:-1] + (layer.d_out,))
        return self.add("layer", "imperative", (x,), (("param", name),), out, e.span, scope)

    def bind_args(self, call: ast.Call, names: list[str], what: str) -> list:
        if len(call.args) > len(names):
            extra = call.args[len(names)]
            raise ArityDiagnostic(
                span_of(extra),
                f"{what}() takes {len(names)} argument"
                f"{'s' * (len(names) != 1)}, got {len(call.args)}",
            )
        bound: dict[str, Any] = dict(zip(names, call.args))
        for kw in call.kwargs:
            if kw.name not in names:
                raise ArityDiagnostic(
                    kw.span,
                    f"{what}() has no argument '{kw.name}'",
                    hint="its arguments: " + ", ".join(names),
                )
            if kw.name in bound:
                raise ArityDiagnostic(kw.span, f"{what}() got argument '{kw.name}' twice")
            bound[kw.name] = kw.value
        missing = [n for n in names if n not in bound]
        if missing:
            raise ArityDiagnostic(call.span, f"{what}() is missing argument '{missing[0]}'")
        return [bound[n] for n in names]

    def call_op(self, op: Op, e: ast.Call, scope: Scope) -> int:
        names = [a.name for a in op.params]
        if len(e.args) > len(names):
            raise ArityDiagnostic(
                span_of(e.args[len(names)]),
                f"{op.name}() takes at most {len(names)} argument"
                f"{'s' * (len(names) != 1)}, got {len(e.args)}",
                hint=op.signature(),
            )
        given: dict[str, Any] = dict(zip(names, e.args))
        for kw in e.kwargs:
            if kw.name not in names:
                raise ArityDiagnostic(
                    kw.span, f"{op.name}() has no argument '{kw.name}'", hint=op.signature()
                )
            if kw.name in given:
                raise ArityDiagnostic(kw.span, f"{op.name}() got argument '{kw.name}' twice")
            given[kw.name] = kw.value
        tensors, exprs, static, layout = [], [], {}, []
        for arg in op.params:
            value = given.get(arg.name)
            if value is None and arg.required:
                raise ArityDiagnostic(
                    e.span, f"{op.name}() is missing argument '{arg.name}'", hint=op.signature()
                )
            if arg.kind == "tensor":
                if value is None:
                    if arg.default is None:
                        layout.append(0)
                        continue
                    value = ast.Number(arg.default, repr(arg.default), e.span)
                literal = num_literal(value)
                if (
                    arg.name in op.extra.get("nonnegative", ())
                    and literal is not None
                    and literal < 0
                ):
                    raise ShapeDiagnostic(
                        span_of(value), f"{op.name}(): {arg.name} must be at least 0, got {literal}"
                    )
                tensors.append(self.expr(value, scope))
                exprs.append(value)
                layout.append(-1)
            elif arg.kind == "tensors":
                if not isinstance(value, ast.ListExpr):
                    raise ArityDiagnostic(
                        span_of(value),
                        f"{op.name}() takes a list of tensors for '{arg.name}': {op.name}([a, b])",
                    )
                ids = [self.expr(item, scope) for item in value.items]
                tensors.extend(ids)
                exprs.append(value)
                layout.append(len(ids))
            else:
                static[arg.name] = (
                    arg.default if value is None else self.static_value(value, arg, op.name)
                )
        return self.apply_op(op, tensors, exprs, static, e.span, scope, e, tuple(layout))

    def apply_op(self, op: Op, tensors, exprs, static, span, scope, node, layout=None) -> int:
        types = [self.type_of(t) for t in tensors]
        if layout is None:
            layout = tuple(-1 for _ in tensors)
        grouped, i = [], 0
        for n in layout:
            if n == -1:
                grouped.append(types[i])
                i += 1
            elif n == 0:
                grouped.append(None)
            else:
                grouped.append(tuple(types[i : i + n]))
                i += n
        try:
            out = op.rule(tuple(grouped), static)
        except ShapeError as err:
            where = (
                span_of(exprs[err.arg]) if err.arg is not None and err.arg < len(exprs) else span
            )
            cls = DtypeDiagnostic if isinstance(err, DtypeError) else ShapeDiagnostic
            raise cls(where, err.message, hint=err.hint) from None
        needs_batch = op.extra.get("needs_batch")
        if needs_batch and needs_batch(static) and scope.context == "batch":
            raise ShapeDiagnostic(
                span,
                f'{op.name}(stats="batch") belongs in a node; in loss '
                "and metric write the statistics over axis 0 yourself",
            )
        attrs = tuple(sorted(static.items())) + (("_layout", tuple(layout)),)
        return self.add(op.name, op.kind, tensors, attrs, out, span, scope)

    # static arguments
    def static_value(self, expr, arg: Arg, fname: str):
        kind = arg.kind
        what = f"{fname}()'s argument '{arg.name}'"
        if kind == "int":
            v = int_literal(expr)
            if v is None:
                raise ArityDiagnostic(span_of(expr), f"{what} must be a literal integer")
            return v
        if kind == "float":
            v = num_literal(expr)
            if v is None:
                raise ArityDiagnostic(span_of(expr), f"{what} must be a literal number")
            return float(v)
        if kind == "bool":
            if not isinstance(expr, ast.Bool):
                raise ArityDiagnostic(span_of(expr), f"{what} must be true or false")
            return expr.value
        if kind == "str":
            if not isinstance(expr, ast.String):
                raise ArityDiagnostic(span_of(expr), f"{what} must be a string literal")
            if arg.choices and expr.value not in arg.choices:
                raise ArityDiagnostic(
                    span_of(expr),
                    f"{what} must be one of "
                    + ", ".join(f'"{c}"' for c in arg.choices)
                    + f'; got "{expr.value}"',
                )
            return expr.value
        if kind == "dim":
            return self.dim_literal(expr, what)
        if kind == "axes":
            if isinstance(expr, ast.ListExpr):
                out = [int_literal(x) for x in expr.items]
                if any(v is None for v in out):
                    raise ArityDiagnostic(span_of(expr), f"{what} must list literal integers")
                return tuple(out)
            v = int_literal(expr)
            if v is None:
                raise ArityDiagnostic(
                    span_of(expr), f"{what} must be an integer or a list of integers"
                )
            return v
        if kind == "probs":
            items = expr.items if isinstance(expr, ast.ListExpr) else (expr,)
            if not items:
                raise ArityDiagnostic(span_of(expr), f"{what} must list at least one level")
            out = []
            for x in items:
                v = num_literal(x)
                if v is None:
                    raise ArityDiagnostic(
                        span_of(x), f"{what} must be a literal number in [0, 1] or a list of them"
                    )
                if not 0 <= v <= 1:
                    raise ShapeDiagnostic(span_of(x), f"{what} must lie in [0, 1], got {v}")
                out.append(float(v))
            return tuple(out) if isinstance(expr, ast.ListExpr) else out[0]
        if kind == "dims":
            if not isinstance(expr, ast.ListExpr):
                raise ArityDiagnostic(span_of(expr), f"{what} must be a list of sizes: [N, 3]")
            out = []
            for x in expr.items:
                if int_literal(x) == -1:
                    out.append(-1)
                else:
                    out.append(self.dim_literal(x, what))
            return tuple(out)
        raise AssertionError(kind)

    def dim_literal(self, expr, what: str):
        if isinstance(expr, ast.Name):
            if expr.id in self.dims:
                return self.dims[expr.id]
            raise ShapeDiagnostic(
                expr.span,
                f"{what}: '{expr.id}' is not a dim",
                hint=f"sizes are dims or integers; declare dim {expr.id}",
            )
        v = int_literal(expr)
        if v is None or v < 1:
            raise ShapeDiagnostic(span_of(expr), f"{what} must be a dim or a positive integer")
        return v

    def static_kwargs(self, call: ast.Call, specs, fname: str) -> dict:
        by_name = {a.name: a for a in specs}
        out = {}
        for kw in call.kwargs:
            if kw.name not in by_name:
                raise ArityDiagnostic(
                    kw.span,
                    f"{fname}() has no argument '{kw.name}'",
                    hint="its arguments: " + (", ".join(by_name) or "none"),
                )
            out[kw.name] = self.static_value(kw.value, by_name[kw.name], fname)
        for a in specs:
            if a.name not in out and not a.required:
                out[a.name] = a.default
        return out


# --- helpers ---------------------------------------------------------------------------------


def _nested_shape(value):
    if not isinstance(value, tuple):
        return ()
    if not value:
        return (0,)
    inner = [_nested_shape(v) for v in value]
    if any(s is None or s != inner[0] for s in inner):
        return None
    return (len(value),) + inner[0]


def _flat(value):
    if isinstance(value, tuple):
        for v in value:
            yield from _flat(v)
    else:
        yield value


def _dim_int(d: Dim) -> int | None:
    if isinstance(d, SymDim):
        return d.value
    return d


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b))


def _compatible(got: TensorType, want: TensorType) -> bool:
    dtype_ok = got.dtype == want.dtype or got.weak
    return dtype_ok and _same_shape(got.shape, want.shape)


def _unique_fns(r: Resolved):
    seen = set()
    for fn in list(r.fns.values()) + [f for ns in r.namespaces.values() for f in ns.values()]:
        if id(fn.decl) not in seen:
            seen.add(id(fn.decl))
            yield fn


def _signature(decl: ast.FnDecl) -> str:
    def t(x: ast.TypeExpr):
        dims = ", ".join(str(d.value) for d in x.dims)
        return f"{x.dtype}[{dims}]" if dims else x.dtype

    args = ", ".join(f"{p.name}: {t(p.type)}" for p in decl.params)
    return f"{decl.name}({args}) -> {t(decl.result_type)}"
