"""Name resolution: imports, declarations, references, cycles. Entry point: :func:`resolve`.

Finds every undefined, duplicate or misused name and every dependency cycle, and orders the
nodes so that each comes after what it uses (a program may declare them in any order). Warns
about unused inputs and shadowed names. Types are the next phase's business.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

from ddm.compiler.names import iter_names
from ddm.dsl import ast
from ddm.dsl.diagnostics import CycleDiagnostic, ImportDiagnostic, NameDiagnostic, Note, Warning_
from ddm.dsl.span import Span
from ddm.library import INITIALIZERS, LAYERS, OPS

Loader = Callable[[str], ast.Module]  # path → parsed module (the driver supplies it)


@dataclass(frozen=True)
class FnDef:
    decl: ast.FnDecl
    dims: Mapping[str, ast.DimDecl]  # the dims of the module that defines it
    qualname: str
    siblings: Mapping[str, "FnDef"] | None = None  # fns of its module (None: the program's)


@dataclass
class Resolved:
    module: ast.Module
    dims: dict[str, ast.DimDecl] = field(default_factory=dict)
    inputs: dict[str, ast.InputDecl] = field(default_factory=dict)
    params: dict[str, ast.ParamDecl] = field(default_factory=dict)
    nodes: dict[str, ast.NodeDecl] = field(default_factory=dict)
    node_order: tuple[str, ...] = ()
    fns: dict[str, FnDef] = field(default_factory=dict)
    namespaces: dict[str, dict[str, FnDef]] = field(default_factory=dict)
    fn_order: tuple[str, ...] = ()
    outputs: list[ast.Name] = field(default_factory=list)
    loss: ast.LossDecl | None = None
    named_losses: dict[str, ast.LossDecl] = field(default_factory=dict)
    metrics: dict[str, ast.MetricDecl] = field(default_factory=dict)
    run: ast.RunDecl | None = None
    warnings: list[Warning_] = field(default_factory=list)
    deps: dict[str, list[str]] = field(default_factory=dict)  # node → nodes it uses
    used: set[str] = field(default_factory=set)  # globals something refers to

    def fns_for(self, fn: "FnDef | None") -> Mapping[str, FnDef]:
        """The fns a body may call: its own module's (for imported fns) or the program's."""
        if fn is None or fn.siblings is None:
            return self.fns
        return {**self.fns, **fn.siblings}

    def is_layer(self, name: str) -> bool:
        p = self.params.get(name)
        return p is not None and p.type is None


def resolve(module: ast.Module, load: Loader) -> Resolved:
    """Resolve ``module`` (and what it imports, through ``load``)."""
    r = Resolved(module)
    _Imports(load).merge(module, r, stack=(module.file,))
    _declare(module, r)
    _check_references(r)
    r.node_order = _order_nodes(r)
    r.fn_order = _order_fns(r)
    _warn_unused(r)
    return r


# --- declarations ----------------------------------------------------------------------------


def _declare(module: ast.Module, r: Resolved) -> None:
    first: dict[str, tuple[str, Span]] = {}
    for name, decl in r.dims.items():
        first[name] = ("dim", decl.name_span)
    for name, fn in r.fns.items():
        first[name] = ("fn", fn.decl.name_span)
    for alias in r.namespaces:
        first.setdefault(alias, ("import", Span(module.file, 0, 0, 0, 0)))

    def claim(kind: str, name: str, span: Span):
        if name in KEYWORDS:
            raise NameDiagnostic(
                span,
                f"'{name}' is a keyword of the language and cannot name {_article(kind)} {kind}",
                hint="choose another name",
            )
        if name in first:
            prev_kind, prev_span = first[name]
            what = f"{_article(prev_kind)} {prev_kind}"
            notes = (Note(prev_span, f"first declared here as {what}"),) if prev_span.line else ()
            raise NameDiagnostic(
                span,
                f"'{name}' is already declared as {what}",
                hint="choose another name",
                notes=notes,
            )
        first[name] = (kind, span)

    for item in module.items:
        if isinstance(item, ast.DimDecl):
            if item.name in r.dims and r.dims[item.name] is item:
                continue
            claim("dim", item.name, item.name_span)
            r.dims[item.name] = item
        elif isinstance(item, ast.InputDecl):
            claim("input", item.name, item.name_span)
            r.inputs[item.name] = item
        elif isinstance(item, ast.ParamDecl):
            claim("param", item.name, item.name_span)
            r.params[item.name] = item
        elif isinstance(item, ast.NodeDecl):
            claim("node", item.name, item.name_span)
            r.nodes[item.name] = item
        elif isinstance(item, ast.FnDecl):
            if r.fns.get(item.name) and r.fns[item.name].decl is item:
                continue
            claim("fn", item.name, item.name_span)
            r.fns[item.name] = FnDef(item, r.dims, item.name)
        elif isinstance(item, ast.OutputDecl):
            r.outputs.extend(item.names)
        elif isinstance(item, ast.LossDecl) and item.name is not None:
            earlier = r.named_losses.get(item.name)
            if earlier is not None:
                raise NameDiagnostic(
                    item.name_span,
                    f"loss '{item.name}' is declared twice",
                    notes=(Note(earlier.name_span, "first declared here"),),
                )
            r.named_losses[item.name] = item
        elif isinstance(item, ast.LossDecl):
            if r.loss is not None:
                raise NameDiagnostic(
                    item.span,
                    "a program has one loss; this is the second",
                    hint="add the terms into one loss expression, or name "
                    "an alternative a run may choose: loss NAME = ...",
                    notes=(Note(r.loss.span, "first loss here"),),
                )
            r.loss = item
        elif isinstance(item, ast.MetricDecl):
            if item.name in r.metrics:
                raise NameDiagnostic(
                    item.name_span,
                    f"metric '{item.name}' is declared twice",
                    notes=(Note(r.metrics[item.name].name_span, "first declared here"),),
                )
            r.metrics[item.name] = item
        elif isinstance(item, (ast.RuleDecl, ast.GuardDecl)):
            raise TypeError("resolve() takes a desugared module: run compiler.desugar first")
        elif isinstance(item, ast.RunDecl):
            if r.run is not None:
                raise NameDiagnostic(
                    item.span,
                    "a program has one run section; this is the second",
                    notes=(Note(r.run.span, "first run here"),),
                )
            r.run = item
    seen_out: dict[str, ast.Name] = {}
    for out in r.outputs:
        if out.id in seen_out:
            raise NameDiagnostic(
                out.span,
                f"'{out.id}' is output twice",
                notes=(Note(seen_out[out.id].span, "first output here"),),
            )
        seen_out[out.id] = out
    # fns defined in this module see this module's dims
    for name, fn in list(r.fns.items()):
        if fn.decl in module.items:
            r.fns[name] = FnDef(fn.decl, r.dims, name)


class _Imports:
    def __init__(self, load: Loader):
        self.load = load

    def merge(self, module: ast.Module, r: Resolved, stack: tuple[str, ...]) -> None:
        for item in module.items:
            if not isinstance(item, ast.Import):
                continue
            base = os.path.dirname(module.file) if not module.file.startswith("<") else "."
            path = os.path.normpath(os.path.join(base, item.path))
            if path in stack:
                chain = " → ".join(os.path.basename(p) for p in stack + (path,))
                raise ImportDiagnostic(item.span, f"import cycle: {chain}")
            if not os.path.isfile(path):
                raise ImportDiagnostic(
                    item.span, f"cannot import '{item.path}': no such file (looked for {path})"
                )
            sub = self.load(path)
            self.merge(sub, r, stack + (path,))
            dims: dict[str, ast.DimDecl] = {}
            fns: dict[str, FnDef] = {}
            for decl in sub.items:
                if isinstance(decl, ast.DimDecl):
                    dims[decl.name] = decl
                elif isinstance(decl, ast.FnDecl):
                    fns[decl.name] = FnDef(
                        decl,
                        dims,
                        decl.name if item.alias is None else f"{item.alias}.{decl.name}",
                        siblings=fns if item.alias is not None else None,
                    )
                elif not isinstance(decl, ast.Import):
                    what = type(decl).__name__.replace("Decl", "").lower()
                    raise ImportDiagnostic(
                        decl.span,
                        f"an imported file may declare only dims and fns, "
                        f"not {_article(what)} {what}",
                        notes=(Note(item.span, "imported from here"),),
                    )
            if item.alias is not None:
                if item.alias in r.namespaces:
                    raise NameDiagnostic(item.span, f"import alias '{item.alias}' is used twice")
                r.namespaces[item.alias] = fns
                continue
            for name, decl in dims.items():
                prev = r.dims.get(name)
                if prev is not None and prev.value != decl.value:
                    raise NameDiagnostic(
                        decl.name_span,
                        f"dim '{name}' is imported with value "
                        f"{decl.value} but already has value {prev.value}",
                        notes=(Note(prev.name_span, "declared here"),),
                    )
                r.dims.setdefault(name, decl)
            for name, fn in fns.items():
                if name in r.fns and r.fns[name].decl != fn.decl:
                    raise NameDiagnostic(
                        fn.decl.name_span,
                        f"fn '{name}' is imported twice with different definitions",
                        notes=(Note(r.fns[name].decl.name_span, "the other definition"),),
                        hint="import one of the files 'as' an alias",
                    )
                r.fns.setdefault(name, fn)


# words an expression may start with or contain where a name could stand: declared as names,
# they would parse here and fail later where they are used
KEYWORDS = frozenset({"scan", "return", "not", "and", "or", "true", "false", "argmin", "argmax"})


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


# --- references ------------------------------------------------------------------------------


def _suggest(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f"did you mean '{close[0]}'?" if close else None


class _Refs:
    """Checks the names one expression uses, in a given context."""

    def __init__(self, r: Resolved):
        self.r = r

    def value_names(self, local=()):
        r = self.r
        return set(r.inputs) | set(r.params) | set(r.nodes) | set(r.dims) | set(local)

    def check(
        self, expr, where: str, local: Mapping[str, object] = {}, fn: FnDef | None = None
    ) -> set[str]:
        """Names of globals referenced; ``where`` is 'node', 'fn' or 'loss'."""
        r = self.r
        fns = r.fns_for(fn)
        used: set[str] = set()
        for name, called in iter_names(expr):
            n = name.id
            if called:
                self._call(name, local, fns)
                if n in fns or r.is_layer(n):
                    used.add(n)
                continue
            if n in local:
                continue
            if where == "fn" and (n in r.inputs or n in r.nodes):
                kind = "input" if n in r.inputs else "node"
                raise NameDiagnostic(
                    name.span,
                    f"a fn body cannot use the {kind} '{n}'; fn "
                    "bodies see only their arguments, params and dims",
                    hint=f"pass '{n}' as an argument",
                )
            if r.is_layer(n):
                raise NameDiagnostic(name.span, f"'{n}' is a layer; call it: {n}(x)")
            if n in fns or n in OPS:
                raise NameDiagnostic(name.span, f"'{n}' is a function; call it: {n}(...)")
            if n in r.namespaces:
                raise NameDiagnostic(name.span, f"'{n}' is an imported module; use {n}.fn(...)")
            if n not in self.value_names(local):
                raise NameDiagnostic(
                    name.span, f"undefined name '{n}'", hint=_suggest(n, self.value_names(local))
                )
            used.add(n)
        self._check_attrs(expr)
        return used

    def _call(self, name: ast.Name, local, fns) -> None:
        r, n = self.r, name.id
        if n in local:
            raise NameDiagnostic(name.span, f"'{n}' is a value, not a function")
        if n in fns or r.is_layer(n) or n in OPS:
            return
        if n in r.params or n in r.inputs or n in r.nodes or n in r.dims:
            kind = (
                "param"
                if n in r.params
                else "input"
                if n in r.inputs
                else "node"
                if n in r.nodes
                else "dim"
            )
            raise NameDiagnostic(name.span, f"'{n}' is {_article(kind)} {kind}, not a function")
        if n in LAYERS or n in INITIALIZERS:
            raise NameDiagnostic(
                name.span, f"'{n}(...)' can only initialise a param: param p = {n}(...)"
            )
        known = set(OPS) | set(fns) | {p for p in r.params if r.is_layer(p)}
        raise NameDiagnostic(
            name.span,
            f"unknown function '{n}'",
            hint=_suggest(n, known) or "see docs/language.md for the library's operations",
        )

    def _check_attrs(self, expr) -> None:
        stack = [expr]
        while stack:
            e = stack.pop()
            if isinstance(e, ast.Attr):
                if not isinstance(e.base, ast.Name) or e.base.id not in self.r.namespaces:
                    base = e.base.id if isinstance(e.base, ast.Name) else "expression"
                    raise NameDiagnostic(
                        e.span,
                        f"'{base}' has no attribute '{e.name}'; '.' "
                        "only reaches fns of an imported module",
                        hint='import "file.ddm" as m, then m.fn(...)',
                    )
                if e.name not in self.r.namespaces[e.base.id]:
                    raise NameDiagnostic(
                        e.span,
                        f"module '{e.base.id}' has no fn '{e.name}'",
                        hint=_suggest(e.name, self.r.namespaces[e.base.id]),
                    )
            elif isinstance(e, ast.Call):
                if isinstance(e.func, ast.Attr):
                    stack.append(e.func)
                elif not isinstance(e.func, ast.Name):  # 2 (x), f(x)(y), x[0](y)
                    what = "a number" if isinstance(e.func, ast.Number) else "this expression"
                    raise NameDiagnostic(
                        getattr(e.func, "span", e.span),
                        f"cannot call {what}; only functions, fns and layers can be called",
                        hint="to multiply, write '*': 2 * (x + 1)",
                    )
                stack.extend(e.args)
                stack.extend(k.value for k in e.kwargs)
            elif isinstance(e, ast.BinOp):
                stack += [e.left, e.right]
            elif isinstance(e, ast.UnaryOp):
                stack.append(e.operand)
            elif isinstance(e, ast.Index):
                stack.append(e.base)
                for it in e.items:
                    if isinstance(it, ast.Slice):
                        stack += [x for x in (it.lo, it.hi) if x is not None]
                    else:
                        stack.append(it)
            elif isinstance(e, ast.ListExpr):
                stack.extend(e.items)
            elif isinstance(e, ast.Scan):
                stack += [e.init, *(s.value for s in e.body), e.result]
            elif isinstance(e, ast.Argmin):
                stack += [e.objective, *e.constraints]
                if e.using is not None:
                    stack += [k.value for k in e.using.options]


def _check_references(r: Resolved) -> None:
    refs = _Refs(r)
    for decl in r.params.values():
        _check_param_init(decl, r)
    for name, decl in r.nodes.items():
        used = refs.check(decl.value, "node")
        r.deps[name] = [u for u in used if u in r.nodes]
        r.used |= used
    for fn in _all_fns(r):
        _check_fn(fn, r, refs)
    if r.loss is not None:
        r.used |= refs.check(r.loss.value, "loss")
    for alt in r.named_losses.values():
        r.used |= refs.check(alt.value, "loss")
    for m in r.metrics.values():
        r.used |= refs.check(m.value, "loss")
    for out in r.outputs:
        if out.id not in r.nodes and out.id not in r.inputs:
            what = "a param" if out.id in r.params else "a dim" if out.id in r.dims else None
            msg = (
                f"cannot output '{out.id}': it is {what}"
                if what
                else f"undefined name '{out.id}' in output"
            )
            raise NameDiagnostic(
                out.span,
                msg,
                hint=_suggest(out.id, set(r.nodes) | set(r.inputs))
                or "outputs name nodes or inputs",
            )
        r.used.add(out.id)


def _check_param_init(decl: ast.ParamDecl, r: Resolved) -> None:
    init = decl.init
    for name, called in iter_names(init):
        if called:
            continue
        if name.id not in r.dims:
            raise NameDiagnostic(
                name.span,
                f"a param's initial value may use only literals and dims, not '{name.id}'",
            )
    if isinstance(init, ast.Call) and isinstance(init.func, ast.Name):
        f = init.func.id
        if decl.type is None and f not in LAYERS:
            hint = (
                f"give the param a type: param p: f32[...] = {f}(...)"
                if f in INITIALIZERS
                else "layers: " + ", ".join(LAYERS)
            )
            raise NameDiagnostic(init.func.span, f"'{f}' is not a layer", hint=hint)
        if decl.type is not None and f not in INITIALIZERS:
            if f in LAYERS:
                raise NameDiagnostic(
                    init.func.span,
                    f"a layer param has no type: write 'param {decl.name} = {f}(...)'",
                )
            raise NameDiagnostic(
                init.func.span,
                f"unknown initialiser '{f}'",
                hint=_suggest(f, INITIALIZERS) or "initialisers: " + ", ".join(INITIALIZERS),
            )
    elif decl.type is None:
        raise NameDiagnostic(
            decl.name_span,
            f"param '{decl.name}' needs a type or a layer",
            hint=f"param {decl.name}: f32 = ... or param {decl.name} = mlp(d_in, hidden, d_out)",
        )


def _all_fns(r: Resolved):
    seen = set()
    for fn in list(r.fns.values()) + [f for ns in r.namespaces.values() for f in ns.values()]:
        if id(fn.decl) not in seen:
            seen.add(id(fn.decl))
            yield fn


def _check_fn(fn: FnDef, r: Resolved, refs: _Refs) -> None:
    local: dict[str, ast.Span] = {}
    globals_ = set(r.inputs) | set(r.nodes) | set(r.params)
    for p in fn.decl.params:
        if p.name in local:
            raise NameDiagnostic(p.span, f"fn '{fn.decl.name}' has two arguments named '{p.name}'")
        if p.name in globals_:
            r.warnings.append(
                Warning_(
                    p.span,
                    f"argument '{p.name}' shadows the global '{p.name}' inside fn '{fn.decl.name}'",
                )
            )
        local[p.name] = p.span
    for stmt in fn.decl.body:
        refs.check(stmt.value, "fn", local, fn)
        if stmt.name in local:
            raise NameDiagnostic(
                stmt.name_span,
                f"'{stmt.name}' is already defined in fn '{fn.decl.name}'",
                notes=(Note(local[stmt.name], "first defined here"),),
            )
        if stmt.name in globals_:
            r.warnings.append(
                Warning_(
                    stmt.name_span,
                    f"'{stmt.name}' shadows the global '{stmt.name}' inside fn '{fn.decl.name}'",
                )
            )
        local[stmt.name] = stmt.name_span
    refs.check(fn.decl.result, "fn", local, fn)


# --- ordering and cycles ---------------------------------------------------------------------


def _topo(names, deps, what: str, spans) -> tuple[str, ...]:
    """Depth-first topological order (iterative); a back edge is a cycle diagnostic."""
    state: dict[str, int] = {}  # 1 visiting, 2 done
    order: list[str] = []
    for root in names:
        if root in state:
            continue
        stack = [(root, iter(deps.get(root, ())))]
        state[root] = 1
        path = [root]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
                order.append(node)
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise CycleDiagnostic(
                    spans[nxt], f"{what} '{nxt}' depends on itself: " + " → ".join(cycle)
                )
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(deps.get(nxt, ()))))
    return tuple(order)


def _order_nodes(r: Resolved) -> tuple[str, ...]:
    spans = {n: d.name_span for n, d in r.nodes.items()}
    return _topo(list(r.nodes), r.deps, "node", spans)


def _order_fns(r: Resolved) -> tuple[str, ...]:
    deps: dict[str, list[str]] = {}
    spans = {}
    for fn in _all_fns(r):
        key = fn.qualname
        spans[key] = fn.decl.name_span
        calls = []
        exprs = [s.value for s in fn.decl.body] + [fn.decl.result]
        scope = r.fns_for(fn)
        for e in exprs:
            for name, called in iter_names(e):
                if called and name.id in scope:
                    calls.append(scope[name.id].qualname)
        deps[key] = calls
    return _topo(list(deps), deps, "fn", spans)


def _warn_unused(r: Resolved) -> None:
    for name, decl in r.inputs.items():
        if name not in r.used:
            r.warnings.append(Warning_(decl.name_span, f"input '{name}' is never used"))
    for name, decl in r.nodes.items():
        if name in OPS:
            r.warnings.append(
                Warning_(
                    decl.name_span,
                    f"node '{name}' shadows the library "
                    f"operation {name}(); calls still mean the operation",
                )
            )
