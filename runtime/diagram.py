"""The IR as a diagram, drawn as the seed article draws decision pipelines — built as data.

Two levels of detail share the data types here: the named things a program declares
(``ddm.runtime.pipeline_view.pipeline``, ``ddmc render``'s default, ``--detail nodes``), and
every IR value (:func:`diagram`, ``--detail ops``), described below.

:func:`diagram` turns a graph into a :class:`Diagram`: nodes (each with its kind, which the
article's vocabulary colours: inputs, params, imperative and declarative nodes, decisions,
sequential nodes, losses, metrics), edges carrying their tensor's name and type, whether the
adjoint flows back along them, and clusters — the body of an ``argmin`` (its objective and
constraints over the decision variable), of a ``scan`` (the policy at every step), each inlined
``fn`` call, each Φ-rule and each guard. ``ddm.runtime.dot`` writes it as DOT text, and the
``dot`` binary turns that into SVG or PNG. Nothing here imports JAX or graphviz.

With measured gradient norms (``ddmc render --grads RUN_DIR``, :func:`measured`) the backward
edges carry ‖∂L/∂value‖.

>>> from ddm.compiler.driver import front_end
>>> g, _ = front_end("input x: f32[3]\\nparam w: f32[3] = 0.0\\nnode y = dot(w, x)\\n"
...                  "output y\\nloss = mean(y ** 2)", "<doc>")
>>> d = diagram(g)
>>> [n.label for n in d.nodes][:3], [(e.src, e.dst, e.backward) for e in d.edges][:2]
(['x\\nf32[3]', 'w\\nf32[3]', 'y = dot'], [('v1', 'v2', True), ('v0', 'v2', False)])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ddm.compiler.ir import Graph, Value, gradient_path

SHOW = ("forward", "backward", "both")


@dataclass(frozen=True)
class Node:
    key: str  # "v12" for value 12, "p:phi" for the weights of layer param phi
    kind: str  # input | param | const | imperative | declarative | … | loss | metric
    label: str
    tooltip: str = ""
    output: bool = False  # an output of the program (drawn in the named-node view)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str
    backward: bool  # the adjoint flows along it (from dst back to src)
    constraint: str = ""  # the constraint, where src enters the argmin dst through one


@dataclass(frozen=True)
class Cluster:
    key: str
    title: str
    kind: str  # argmin | scan | fn | rule | guard
    members: tuple[str, ...]  # node keys placed directly in it
    parent: str | None  # the enclosing cluster's key


@dataclass(frozen=True)
class Diagram:
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...]
    show: str = "forward"  # which edges to draw: forward | backward | both
    grads: Mapping[str, float] | None = None  # measured ‖∂L/∂·‖ by node key
    rankdir: str = "LR"
    detail: str = "ops"  # ops: every IR value (this module) | nodes: named things (pipeline_view)
    folded_metrics: int = 0  # metrics left out of a named-node view


DETAILS = ("nodes", "ops")


def diagram(
    graph: Graph,
    show: str = "forward",
    grads: Mapping[str, float] | None = None,
    rankdir: str = "LR",
) -> Diagram:
    """The diagram of ``graph``. ``show``: forward | backward | both. ``grads``: measured
    ‖∂L/∂tensor‖ by node key (:func:`measured`)."""
    import os

    if show not in SHOW:
        raise ValueError(f"show must be one of {SHOW}, got {show!r}")
    b = _Builder(graph)
    clusters = b.clusters()
    layers = tuple(
        Node(f"p:{p.name}", "param", f"{p.name}\n{p.type}") for p in graph.params if p.is_layer
    )
    nodes = tuple(b.node(v) for v in graph.values) + layers
    return Diagram(
        os.path.basename(graph.file), nodes, tuple(b.edges()), clusters, show, grads, rankdir
    )


def measured(graph: Graph, norms: Mapping) -> dict[str, float]:
    """``grad_norms.json``'s ``values`` (by value id) and ``params`` (by name) keyed by the
    drawn nodes: ``v12``, and ``p:phi`` for a layer (a plain param is a value too)."""
    out = {f"v{k}": float(x) for k, x in norms.get("values", {}).items()}
    params = norms.get("params", {})
    for v in graph.values:
        if v.op == "param" and v.name in params:
            out[f"v{v.id}"] = float(params[v.name])
    for p in graph.params:
        if p.is_layer and p.name in params:
            out[f"p:{p.name}"] = float(params[p.name])
    return out


class _Builder:
    def __init__(self, graph: Graph):
        self.g = graph
        self.loss = graph.loss
        self.metrics = {vid: name for name, vid in graph.metrics}
        self.losses = {vid: name for name, vid in graph.losses}
        self.differentiable = gradient_path(graph)

    # --- nodes -----------------------------------------------------------------------------
    def kind(self, v: Value) -> str:
        if v.id == self.loss or v.id in self.losses:
            return "loss"
        if v.id in self.metrics:
            return "metric"
        return v.kind

    def node(self, v: Value) -> Node:
        kind = self.kind(v)
        return Node(
            f"v{v.id}",
            kind,
            self.label(v, kind),
            f"%{v.id} {v.op} : {v.type}  ({v.span.line}:{v.span.column})",
        )

    def label(self, v: Value, kind: str) -> str:
        if kind == "const":
            return _short(repr(v.attr("value")))
        if kind == "loss":
            name = "loss" if v.id == self.loss else f"loss {self.losses[v.id]}"
            return f"{name}\n{v.op}"
        if kind == "metric":
            return f"metric {self.metrics[v.id]}\n{v.op}"
        if v.op in ("input", "param"):
            return f"{v.name}\n{v.type}"
        if v.op == "argmin":
            p = v.attr("problem")
            head = v.name or p.sense
            return f"{head} = {p.sense}\nclass {p.klass}, {p.solver}, {p.backward}"
        if v.op == "scan":
            s = v.attr("scan")
            return f"{v.name or 'scan'} = scan {s.index_name} < {s.length}\n{v.type}"
        if v.op in ("decision", "scan_index", "scan_carry"):
            return f"{v.attr('name')}\n{v.type}"
        if v.op == "layer":
            return f"{v.name + ' = ' if v.name else ''}{v.attr('param')}(·)"
        return f"{v.name + ' = ' if v.name else ''}{v.op}"

    # --- clusters ---------------------------------------------------------------------------
    def clusters(self) -> tuple[Cluster, ...]:
        """Problem and scan bodies, nested as they nest (a projection inside a policy), then
        the values of each inlined fn call outside them, then each rule's and guard's."""
        bodies = []
        for v in self.g.values:
            if v.op in ("argmin", "scan"):
                lo, hi = (v.attr("problem") if v.op == "argmin" else v.attr("scan")).body
                bodies.append((hi - lo, lo, hi, f"body{v.id}", v.id))
        owner: dict[int, str] = {}
        parent: dict[str, str | None] = {}
        for _, lo, hi, key, vid in sorted(bodies, reverse=True):  # outer first
            parent[key] = owner.get(vid)  # the body the node itself sits in
            for i in range(lo, hi):
                owner[i] = key
        for v in self.g.values:
            if v.id not in owner and v.scope:
                owner[v.id] = f"fn:{v.scope}"
                parent.setdefault(f"fn:{v.scope}", None)
        # the values a rule's or a guard's text stands for
        for kind, items in (("rule", self.g.rules), ("guard", self.g.guards)):
            for item in items:
                span = item.span
                for v in self.g.values:
                    if (
                        v.id not in owner
                        and v.span.file == span.file
                        and span.line <= v.span.line <= span.end_line
                    ):
                        owner[v.id] = f"{kind}:{item.name}"
                        parent.setdefault(f"{kind}:{item.name}", None)
        members: dict[str, list[str]] = {key: [] for key in parent}
        for vid, key in sorted(owner.items()):
            members[key].append(f"v{vid}")
        return tuple(
            Cluster(key, *self.title(key), tuple(members[key]), parent[key]) for key in parent
        )

    def title(self, key: str) -> tuple[str, str]:
        """(title, kind) of a cluster."""
        if key.startswith("body"):
            v = self.g.values[int(key[4:])]
            if v.op == "argmin":
                return f"{v.name or v.attr('problem').sense}: objective and constraints", "argmin"
            return f"{v.name or 'scan'}: the policy at each step", "scan"
        if key.startswith("rule:"):
            rule = next(r for r in self.g.rules if r.name == key[5:])
            return f"rule {rule.name}: {rule.intent}", "rule"
        if key.startswith("guard:"):
            guard = next(x for x in self.g.guards if x.name == key[6:])
            return (
                f"guard {guard.name} on {guard.target}: {guard.limit} ({guard.action}) — "
                f"{guard.intent}",
                "guard",
            )
        return f"fn {key[3:]}", "fn"

    # --- edges ------------------------------------------------------------------------------
    def edges(self) -> list[Edge]:
        out = []
        for v in self.g.values:
            if v.op in ("argmin", "scan"):
                out += self.special_edges(v)
                continue
            for i in v.inputs:
                out.append(self.edge(i, v.id))
            if v.op == "layer":
                name = v.attr("param")
                out.append(
                    Edge(
                        f"p:{name}",
                        f"v{v.id}",
                        f"{name}: {self.g.param(name).type}",
                        v.id in self.differentiable,
                    )
                )
        return out

    def edge(self, src: int, dst: int, label: str | None = None) -> Edge:
        s = self.g.values[src]
        text = label or f"{s.name or s.op}: {s.type}"
        back = src in self.differentiable and dst in self.differentiable
        return Edge(f"v{src}", f"v{dst}", text, back)

    def special_edges(self, v: Value) -> list[Edge]:
        """An argmin's value comes from its objective (the body captures the outer values
        with its own edges); a scan's from its initial carry and the body's new carry."""
        if v.op == "argmin":
            p = v.attr("problem")
            return [
                self.edge(p.objective, v.id, "objective"),
                self.edge(p.var, v.id, f"{p.var_name}*: {v.type}"),
            ]
        s = v.attr("scan")
        return [
            self.edge(v.inputs[0], v.id, f"initial carry: {s.carry_type}"),
            self.edge(s.result, v.id, f"new carry: {s.carry_type}"),
        ]


def _short(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
