"""The pipeline as its author wrote it: a :class:`~ddm.runtime.diagram.Diagram` of the named
things only — inputs, params, the nodes the program declares, its Φ-rules, its loss and (when
asked) its metrics. ``ddmc render`` draws this by default (``--detail nodes``); the full IR is
:func:`ddm.runtime.diagram.diagram` (``--detail ops``).

Each node is labelled with its name, its defining expression re-printed from the AST (cut with
an ellipsis past :data:`LONGEST` characters, wrapped at :data:`WRAP`) and its type. An anonymous
intermediate belongs to the named node that consumes it, so an edge runs from each named value
an expression reads to the node it defines. An ``argmin`` (``argmax``) shows its objective, its
problem class, solver and backward mode; each constraint that reads named values is an edge
from each of them into the node, labelled with the constraint, and one that reads only the
decision variable and constants is listed in the node. A guard's limit is written in the node
it guards (the node's value is the enforced one); a Φ-rule is a node of its own, reading what
its trigger and penalty read and feeding the loss it adds its term to. Fns, ``let`` bindings,
scan and problem bodies are inside the node that uses them.

>>> from ddm.compiler.driver import front_end
>>> text = ("input x: f32[3]\\nparam w: f32[3] = 0.0\\nnode y = dot(w, x) * 2.0\\n"
...         "output y\\nloss = mean(y ** 2)")
>>> g, sources = front_end(text, "<doc>")
>>> d = pipeline(g, sources.texts)
>>> [n.label for n in d.nodes]
['x\\nf32[3]', 'w\\nf32[3]', 'y = dot(w, x) * 2.0\\nf32', 'loss = mean(y ** 2)\\nf32']
>>> [(e.src, e.dst) for e in d.edges]
[('v0', 'v4'), ('v1', 'v4'), ('v4', 'v8')]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass

from ddm.compiler.ir import Graph, Value, gradient_path
from ddm.dsl import ast
from ddm.dsl.diagnostics import DdmError
from ddm.dsl.format import format_expr
from ddm.dsl.parser import parse
from ddm.dsl.span import Span
from ddm.runtime.diagram import SHOW, Diagram, Edge, Node

LONGEST = 60  # characters of an expression before it is cut with an ellipsis
WRAP = 40  # characters a label line holds before the expression wraps (at a top-level space)


def pipeline(
    graph: Graph,
    texts: Mapping[str, str],
    show: str = "forward",
    grads: Mapping[str, float] | None = None,
    rankdir: str = "TB",
    metrics: bool = False,
) -> Diagram:
    """The named-node diagram of ``graph``. ``texts``: the source text of each file by path
    (``Sources.texts``; the graph's own file is re-parsed for the expressions as written —
    without it nodes carry their names and types only). ``show``: forward | backward | both.
    ``grads``: measured ‖∂L/∂tensor‖ by node key (:func:`ddm.runtime.diagram.measured`).
    ``metrics``: draw the metrics too (else they are left out and counted in the legend)."""
    import os

    if show not in SHOW:
        raise ValueError(f"show must be one of {SHOW}, got {show!r}")
    b = _Builder(graph, _Declarations.of(texts.get(graph.file), graph.file), metrics)
    return Diagram(
        os.path.basename(graph.file),
        b.nodes(),
        b.edges(),
        (),
        show,
        grads,
        rankdir,
        detail="nodes",
        folded_metrics=0 if metrics else len(graph.metrics),
    )


@dataclass(frozen=True)
class _Declarations:
    """What the author wrote at the top level of the file, by name, and the text of every
    constraint by where it starts (all empty without the file's text)."""

    params: Mapping[str, ast.ParamDecl] = field(default_factory=dict)
    nodes: Mapping[str, ast.NodeDecl] = field(default_factory=dict)
    losses: Mapping[str | None, ast.LossDecl] = field(default_factory=dict)
    metrics: Mapping[str, ast.MetricDecl] = field(default_factory=dict)
    rules: Mapping[str, ast.RuleDecl] = field(default_factory=dict)
    constraints: Mapping[tuple[str, int, int], str] = field(default_factory=dict)
    known: bool = False  # the text was there and parsed

    @classmethod
    def of(cls, text: str | None, file: str) -> _Declarations:
        if text is None:
            return cls()
        try:
            module = parse(text, file)
        except DdmError:  # the graph was compiled from this text: only an edited file fails
            return cls()

        items = module.items
        return cls(
            {d.name: d for d in items if isinstance(d, ast.ParamDecl)},
            {d.name: d for d in items if isinstance(d, ast.NodeDecl)},
            {d.name: d for d in items if isinstance(d, ast.LossDecl)},
            {d.name: d for d in items if isinstance(d, ast.MetricDecl)},
            {d.name: d for d in items if isinstance(d, ast.RuleDecl)},
            {
                (c.span.file, c.span.line, c.span.column): format_expr(c)
                for problem in _argmins(module.items)
                for c in problem.constraints
            },
            known=True,
        )


def _argmins(tree: object) -> Iterator[ast.Argmin]:
    """Every argmin in ``tree`` (AST nodes and tuples of them), in scans and fns too (an
    explicit stack: expressions nest as deep as the parser allows)."""
    stack: list[object] = [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, tuple):
            stack.extend(x)
        elif is_dataclass(x) and not isinstance(x, type):
            if isinstance(x, ast.Argmin):
                yield x
            stack.extend(getattr(x, f.name) for f in fields(x) if f.name != "span")


@dataclass(frozen=True)
class _Thing:
    """One drawn thing: its key in the diagram, kind, declared name ("" for the default loss)
    and the value it stands for (None for a layer param, which is no value)."""

    key: str
    kind: str  # input | param | node | rule | loss | metric
    name: str
    vid: int | None


@dataclass(frozen=True)
class _Reads:
    """What a drawn thing reads — the key of each drawn thing, with "" where it reads its data
    and the text of each constraint it enters through — and the ops and problems (argmin
    values) folded into it."""

    by: dict[str, set[str]]
    ops: frozenset[str]
    problems: tuple[int, ...]


class _Builder:
    def __init__(self, graph: Graph, decls: _Declarations, metrics: bool):
        self.g = graph
        self.decls = decls
        self.differentiable = gradient_path(graph)
        self.things = self._things(metrics)
        self.owner: dict[int, str] = {}  # value id → the key of the drawn thing it belongs to
        for t in self.things:
            if t.vid is not None:
                self.owner.setdefault(t.vid, t.key)
        by_name = {(t.kind, t.name): t.key for t in self.things}
        # what a rule or a guard introduced is read through the rule, or the guarded node
        for r in graph.rules:
            for vid in (r.trigger, r.penalty, r.weight, r.term):
                self.owner.setdefault(vid, by_name[("rule", r.name)])
        for gd in graph.guards:
            if ("node", gd.target) in by_name:
                for vid in (gd.violated, gd.breached):
                    self.owner.setdefault(vid, by_name[("node", gd.target)])
        self.reads = {
            t.key: self._walk(t.key, t.vid)
            for t in self.things
            if t.vid is not None and t.kind not in ("input", "param")
        }

    def _things(self, metrics: bool) -> list[_Thing]:
        """Inputs, params, declared nodes, rules, losses (and metrics), in that order; a
        value drawn twice (``node y = x``) gets a second key."""
        g, decls = self.g, self.decls
        entries: list[tuple[str, str, int | None]] = [("input", i.name, i.value) for i in g.inputs]
        param_values = {v.name: v.id for v in g.values if v.op == "param"}
        for p in g.params:
            if not decls.known or p.name in decls.params:  # else a rule's state: in the rule
                entries.append(("param", p.name, None if p.is_layer else param_values.get(p.name)))
        introduced = _introduced(g)
        for name, vid in sorted(g.nodes.items(), key=lambda item: item[1]):
            if name in decls.nodes or (not decls.known and vid not in introduced):
                entries.append(("node", name, vid))
        entries += [("rule", r.name, r.term) for r in g.rules]
        if g.loss is not None:
            entries.append(("loss", "", g.loss))
        entries += [("loss", name, vid) for name, vid in g.losses]
        if metrics:
            entries += [("metric", name, vid) for name, vid in g.metrics]
        out, taken = [], set()
        for kind, name, vid in entries:
            key = f"p:{name}" if vid is None else f"v{vid}"
            if key in taken:
                key = f"{kind}:{name}"
            taken.add(key)
            out.append(_Thing(key, kind, name, vid))
        return out

    # --- what each drawn thing reads ---------------------------------------------------------
    def _walk(self, key: str, root: int) -> _Reads:
        """Back from ``root`` through the values that belong to ``key`` to the drawn things
        they read. A problem is entered through its objective and, apart, each constraint; a
        scan through its initial carry and its new carry."""
        by: dict[str, set[str]] = {}
        ops: set[str] = set()
        problems: list[int] = []
        stack: list[tuple[int, str]] = [(root, "")]
        seen: set[tuple[int, str]] = set()
        while stack:
            vid, how = stack.pop()
            if (vid, how) in seen:
                continue
            seen.add((vid, how))
            other = self.owner.get(vid)
            if other is not None and other != key:
                by.setdefault(other, set()).add(how)
                continue
            v = self.g.values[vid]
            ops.add(v.op)
            if v.op == "layer":
                by.setdefault(f"p:{v.attr('param')}", set()).add(how)
            if v.op == "argmin":
                p = v.attr("problem")
                if vid not in problems:
                    problems.append(vid)
                stack.append((p.objective, how))
                for c in p.constraints:
                    stack.append((c.value, how or self._constraint(c.span)))
            elif v.op == "scan":
                stack += [(v.inputs[0], how), (v.attr("scan").result, how)]
            else:
                stack += [(i, how) for i in v.inputs]
        return _Reads(by, frozenset(ops), tuple(problems))

    def _constraint(self, span: Span) -> str:
        where = (span.file, span.line, span.column)
        return self.decls.constraints.get(where, f"constraint at {span.line}:{span.column}")

    # --- nodes -----------------------------------------------------------------------------
    def nodes(self) -> tuple[Node, ...]:
        outputs = {vid for _, vid in self.g.outputs}
        out = []
        for t in self.things:
            v = self.g.values[t.vid] if t.vid is not None else None
            where = f" ({v.span.line}:{v.span.column})" if v is not None else ""
            out.append(
                Node(
                    t.key,
                    self._kind(t),
                    "\n".join(self._label(t, v)),
                    f"{t.kind} {t.name}".rstrip() + where,
                    output=t.kind == "node" and t.vid in outputs,
                )
            )
        return tuple(out)

    def _kind(self, t: _Thing) -> str:
        if t.kind != "node":
            return t.kind
        ops = self.reads[t.key].ops
        return "sequential" if "scan" in ops else "declarative" if "argmin" in ops else "imperative"

    def _label(self, t: _Thing, v: Value | None) -> list[str]:
        g, decls = self.g, self.decls
        if t.kind == "input":
            return [t.name, str(g.input(t.name).type)]
        if t.kind == "param":
            p = g.param(t.name)
            if p.is_layer and t.name in decls.params:
                return _wrap(_shorten(f"{t.name} = {format_expr(decls.params[t.name].init)}"))
            return [t.name, str(p.type)]
        assert v is not None
        if t.kind == "rule":
            rule = next(r for r in g.rules if r.name == t.name)
            lines = _wrap(_shorten(f"rule {t.name}" + (f": {rule.intent}" if rule.intent else "")))
            decl = decls.rules.get(t.name)
            for entry in decl.entries if decl else ():
                lines += _wrap(_shorten(f"{entry.key} {format_expr(entry.value)}"))
            return lines
        if t.kind == "loss":
            decl = decls.losses.get(t.name or None)
            head = f"loss {t.name}" if t.name else "loss"
            return _defined(head, decl.value if decl else None) + [str(v.type)]
        if t.kind == "metric":
            decl = decls.metrics.get(t.name)
            return _defined(f"metric {t.name}", decl.value if decl else None) + [str(v.type)]
        decl = decls.nodes.get(t.name)
        if decl is not None and isinstance(decl.value, ast.Argmin):
            lines = self._argmin(t, decl.value)
        elif decl is not None and isinstance(decl.value, ast.Scan):
            lines = _scan(t.name, decl.value)
        else:
            lines = _defined(t.name, decl.value if decl else None)
        for gd in g.guards:
            if gd.target == t.name:
                lines += _wrap(_shorten(f"guard {gd.name}: {gd.limit} ({gd.action})"))
        problems = self.reads[t.key].problems
        if len(problems) == 1 and "scan" not in self.reads[t.key].ops:
            p = g.values[problems[0]].attr("problem")
            return lines + [f"{v.type} · class {p.klass}, {p.solver}, {p.backward}"]
        return lines + [str(v.type)]

    def _argmin(self, t: _Thing, e: ast.Argmin) -> list[str]:
        lines = [f"{t.name} = {e.sense} {e.var}: {_type(e.var_type)}"]
        lines += _wrap(_shorten(format_expr(e.objective)))
        on_edges = {how for hows in self.reads[t.key].by.values() for how in hows}
        on_edges = {line for how in on_edges for line in how.split("\n")}
        for c in e.constraints:
            text = format_expr(c)
            if text not in on_edges:  # it reads no named value: no edge carries it
                lines += _wrap(_shorten(f"subject to {text}"))
        return lines

    # --- edges -----------------------------------------------------------------------------
    def edges(self) -> tuple[Edge, ...]:
        things = {t.key: t for t in self.things}
        order = {t.key: i for i, t in enumerate(self.things)}
        out: list[Edge] = []
        for t in self.things:
            reads = self.reads.get(t.key)
            if reads is None:
                continue
            for src in sorted(reads.by, key=lambda k: order.get(k, len(order))):
                if src not in things or src == t.key:
                    continue  # a folded metric's, or a node reading itself through an alias
                s = things[src]
                back = t.vid in self.differentiable and (
                    s.vid is None or s.vid in self.differentiable  # a layer feeds the path
                )
                hows = reads.by[src]
                if "" in hows:
                    out.append(Edge(src, t.key, self._tensor(s), back))
                    back = False  # one adjoint edge between two things
                if hows - {""}:  # the constraints it enters through, one edge for them all
                    text = "\n".join(sorted(hows - {""}))
                    out.append(Edge(src, t.key, self._tensor(s), back, constraint=text))
        return tuple(out)

    def _tensor(self, t: _Thing) -> str:
        if t.vid is None:
            return f"{t.name}: {self.g.param(t.name).type}"
        return f"{t.name or 'loss'}: {self.g.values[t.vid].type}"


def _defined(head: str, value: ast.Expr | None) -> list[str]:
    """``head = value`` as written, cut and wrapped (``head`` alone without the source)."""
    return _wrap(
        _shorten(head if value is None else f"{head} = {format_expr(value)}"), head=len(head)
    )


def _scan(name: str, e: ast.Scan) -> list[str]:
    """``NAME = scan t in N, c: T = init`` and the step's value (its ``let`` lines aside)."""
    head = f"{name} = scan {e.index} in {e.length.value}, {e.carry}: {_type(e.carry_type)}"
    return _wrap(_shorten(f"{head} = {format_expr(e.init)}")) + _wrap(
        _shorten(f"{{ {format_expr(e.result)} }}")
    )


def _type(t: ast.TypeExpr) -> str:
    dims = ", ".join(str(d.value) for d in t.dims)
    return t.dtype + (f"[{dims}]" if dims else "")


def _introduced(g: Graph) -> set[int]:
    """The values rules and guards introduced as named nodes (told apart without the source
    by their value ids; a guarded node's value before enforcement is not among them)."""
    ids: set[int] = set()
    for r in g.rules:
        ids |= {r.trigger, r.penalty, r.weight, r.term}
    for gd in g.guards:
        ids |= {gd.violated, gd.breached}
    return ids


# --- text -----------------------------------------------------------------------------------

# binding levels of the operators a line may break before, loosest first (the formatter's)
_LEVEL = {"or": 0, "and": 1, **{op: 2 for op in ast.COMPARISONS}, "+": 3, "-": 3}
_LEVEL |= {"*": 4, "/": 4, "@": 4, "**": 5}
_CLOSE = {"(": ")", "[": "]", "{": " }"}


def _scan_brackets(text: str) -> tuple[list[tuple[int, int]], list[str]]:
    """(position, bracket depth) of each space in ``text`` outside string literals, and the
    brackets ``text`` leaves open, outermost first."""
    spaces: list[tuple[int, int]] = []
    stack: list[str] = []
    quoted = escaped = False
    for i, ch in enumerate(text):
        if quoted:
            quoted = escaped or ch != '"'
            escaped = not escaped and ch == "\\"
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            stack.append(ch)
        elif ch in ")]}":
            stack[-1:] = []
        elif ch == " ":
            spaces.append((i, len(stack)))
    return spaces, stack


def _spaces(text: str) -> list[tuple[int, int]]:
    return _scan_brackets(text)[0]


def _open(text: str) -> list[str]:
    return _scan_brackets(text)[1]


def _shorten(text: str, limit: int = LONGEST) -> str:
    """``text``, or its longest head that ends where a line could break — before an operator
    or after a bracket outside brackets, after a comma or a ``{ }`` block inside them (prose:
    at a space) — followed by "…" and the brackets it leaves open, in at most ``limit``
    characters."""
    if len(text) <= limit:
        return text
    best = ""
    spaces = [(i, depth) for i, depth in _spaces(text[: limit + 1]) if i < limit]
    for i, depth in spaces:
        head, rest = text[:i], text[i + 1 :]
        if (
            depth == 0
            and (rest.split(" ", 1)[0] in _LEVEL or head.endswith((")", "]", "}")))
            or head.endswith((",", "}"))
        ):
            cut = head + " …" + "".join(_CLOSE[b] for b in reversed(_open(head)))
            if len(best) < len(cut) <= limit:
                best = cut
    if not best and spaces:  # no break point of an expression: prose, or one long name
        cut = max((i for i, _ in spaces if i <= limit - 2), default=0)
        best = text[:cut] + " …" if cut > 0 else ""
    return best or text[: limit - 1] + "…"


def _pieces(text: str, width: int, head: int) -> list[str]:
    """``text`` cut where a line may break: before its loosest operators outside brackets
    (its first ``head`` characters, and a ``NAME =``, stay with what follows them); a piece
    still wider than ``width`` after each comma of its outermost bracket level that has one."""
    parts, start = [], 0
    for i, depth in _spaces(text):
        if depth == 0 and i >= head:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    levels = [_LEVEL[p] for p in parts[:-1] if p in _LEVEL]
    loosest = min(levels, default=None)
    pieces: list[str] = []
    glue = True  # the first part, and what follows an operator or "="
    for part in parts:
        if glue or part in _LEVEL and _LEVEL[part] != loosest or part == "=":
            pieces[-1:] = [f"{pieces[-1]} {part}" if pieces else part]
        else:
            pieces.append(part)
        glue = part in _LEVEL or part in ("=", "not")
    out = []
    for piece in pieces:
        if len(piece) <= width:
            out.append(piece)
            continue
        commas = [(d, i) for i, d in _spaces(piece) if d > 0 and piece[i - 1] == ","]
        top = min((d for d, _ in commas), default=None)
        start = 0
        for d, i in commas:
            if d == top:
                out.append(piece[start:i])
                start = i + 1
        out.append(piece[start:])
    return out


def _wrap(text: str, width: int = WRAP, head: int = 0) -> list[str]:
    """``text`` on as few lines of at most ``width`` characters as its break points allow
    (a piece wider than that gets a line of its own, a closing "…)" stays on the line before),
    the lines as even as they can be. The first ``head`` characters are never broken."""
    pieces = _pieces(text, width, head)

    def fill(w: int) -> list[str]:
        lines: list[str] = []
        for piece in pieces:
            if lines and (len(lines[-1]) + 1 + len(piece) <= w or piece.startswith("…")):
                lines[-1] += " " + piece
            else:
                lines.append(piece)
        return lines

    fewest = len(fill(width))
    for w in range(min(len(text) // fewest, width), width + 1):
        lines = fill(w)
        if len(lines) == fewest:
            return lines
    return fill(width)
