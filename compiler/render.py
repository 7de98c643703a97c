"""The IR as a diagram, drawn as the seed article draws decision pipelines: DOT text.

Inputs, params, constants, imperative nodes and declarative nodes have distinct shapes and
colours (a legend is included); every edge carries its tensor's name and type (``Sigma:
f32[N, N]``). Forward edges are solid; backward edges — the adjoint flowing from the loss to
the params, on exactly the edges that carry it — are dashed and point the other way. The body of
an ``argmin`` (its objective and constraints over the decision variable), of a ``scan`` (the
policy run at every step) and each inlined ``fn`` call are clusters. With measured gradient
norms (``ddmc render --grads RUN_DIR``, from a run's ``grad_norms.json``) backward edges are
labelled with ‖∂L/∂value‖ and coloured from blue (vanishing) to red (exploding).

Nothing here imports JAX or graphviz: the text is built directly, and the ``dot`` binary, when
present, turns it into SVG or PNG (:func:`render_file`).

>>> from ddm.compiler.driver import front_end
>>> g, _ = front_end("input x: f32[3]\\nparam w: f32[3] = 0.0\\nnode y = dot(w, x)\\n"
...                  "output y\\nloss = mean(y ** 2)", "<doc>")
>>> text = to_dot(g)
>>> text.startswith("digraph ddm {") and '"v2" -> "v3"' in text
True
"""
from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Mapping

from ddm.compiler.ir import Graph, Value, gradient_path

# kind → (shape, fill colour, style) — the article's vocabulary: data, knobs, computations,
# and the declarative steps that solve a problem
STYLE = {
    "input": ("ellipse", "#cfe2f3", "filled"),
    "param": ("box3d", "#fce5cd", "filled"),
    "const": ("plaintext", "white", ""),
    "imperative": ("box", "#ffffff", "rounded,filled"),
    "declarative": ("hexagon", "#d9ead3", "filled,bold"),
    "decision": ("diamond", "#d9ead3", "filled"),
    "sequential": ("box", "#e6d7f0", "rounded,filled,bold"),
    "state": ("ellipse", "#e6d7f0", "filled,dashed"),
    "loss": ("doubleoctagon", "#f4cccc", "filled,bold"),
    "metric": ("octagon", "#fff2cc", "filled"),
}
LEGEND = (("input", "input (data)"), ("param", "param (trained)"),
          ("imperative", "imperative node"), ("declarative", "declarative node (argmin)"),
          ("decision", "decision variable"), ("sequential", "sequential node (scan)"),
          ("state", "step index / carry"), ("loss", "loss"), ("metric", "metric"))
SHOW_BACKWARD = ("forward", "backward", "both")


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    label: str
    backward: bool  # the adjoint flows along it (from dst back to src)


def to_dot(graph: Graph, show: str = "forward", grads: Mapping[str, float] | None = None,
           rankdir: str = "LR") -> str:
    """DOT text of ``graph``. ``show``: forward | backward | both. ``grads``: measured
    ‖∂L/∂tensor‖ by drawn node (``"v12"`` a value, ``"p:phi"`` a layer's weights; see
    :func:`measured`) labelling each backward edge with its tensor's adjoint."""
    if show not in SHOW_BACKWARD:
        raise ValueError(f"show must be one of {SHOW_BACKWARD}, got {show!r}")
    d = _Drawing(graph)
    out = ["digraph ddm {",
           f'  graph [rankdir={rankdir}, fontname="Helvetica", fontsize=11, newrank=true, '
           f'compound=true, label={_q(os.path.basename(graph.file))}, labelloc=t];',
           '  node [fontname="Helvetica", fontsize=10];',
           '  edge [fontname="Helvetica", fontsize=8];']
    clusters, parent = d.clusters()
    placed = {vid for members in clusters.values() for vid in members}
    for vid in range(len(graph.values)):
        if vid not in placed:
            out.append("  " + d.node(vid))
    for p in graph.params:
        if p.is_layer:
            out.append("  " + d.layer_node(p.name))
    for key in clusters:
        if parent.get(key) is None:
            out += d.cluster(key, clusters, parent, "  ")
    for e in d.edges():
        if show in ("forward", "both"):
            out.append(f'  "{e.src}" -> "{e.dst}" [label={_q(e.label)}];')
        if show in ("backward", "both") and e.backward:
            out.append("  " + _backward_edge(e, grads))
    out += _legend(show, grads is not None)
    out.append("}")
    return "\n".join(out) + "\n"


class _Drawing:
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

    def node(self, vid: int) -> str:
        v = self.g.values[vid]
        kind = self.kind(v)
        shape, fill, style = STYLE[kind]
        label = self.label(v, kind)
        attrs = [f"shape={shape}", f"label={_q(label)}", f'fillcolor="{fill}"',
                 f'tooltip={_q(f"%{vid} {v.op} : {v.type}  ({v.span.line}:{v.span.column})")}']
        if style:
            attrs.append(f'style="{style}"')
        if kind == "const":
            attrs += ['fontsize=8', 'fontcolor="#777777"']
        return f'"v{vid}" [{", ".join(attrs)}];'

    def layer_node(self, name: str) -> str:
        p = self.g.param(name)
        shape, fill, style = STYLE["param"]
        label = _q(f"{name}\n{p.type}")
        return f'"p:{name}" [shape={shape}, label={label}, fillcolor="{fill}", style="{style}"];'


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
    def clusters(self) -> tuple[dict[str, list[int]], dict[str, str | None]]:
        """(cluster key → its own member value ids, cluster key → enclosing cluster key):
        problem and scan bodies, nested as they nest (a projection inside a policy), then the
        values of each inlined fn call outside them."""
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
                    if v.id not in owner and v.span.file == span.file \
                            and span.line <= v.span.line <= span.end_line:
                        owner[v.id] = f"{kind}:{item.name}"
                        parent.setdefault(f"{kind}:{item.name}", None)
        out: dict[str, list[int]] = {key: [] for key in parent}
        for vid, key in sorted(owner.items()):
            out[key].append(vid)
        return out, parent

    def cluster(self, key: str, clusters, parent, indent: str) -> list[str]:
        if key.startswith("body"):
            v = self.g.values[int(key[4:])]
            if v.op == "argmin":
                title = f"{v.name or v.attr('problem').sense}: objective and constraints"
                colour = "#93c47d"
            else:
                title = f"{v.name or 'scan'}: the policy at each step"
                colour = "#8e7cc3"
        elif key.startswith("rule:"):
            rule = next(r for r in self.g.rules if r.name == key[5:])
            title, colour = f"rule {rule.name}: {rule.intent}", "#e06666"
        elif key.startswith("guard:"):
            guard = next(x for x in self.g.guards if x.name == key[6:])
            title = (f"guard {guard.name} on {guard.target}: {guard.limit} ({guard.action}) — "
                     f"{guard.intent}")
            colour = "#cc0000"
        else:
            title, colour = f"fn {key[3:]}", "#9fc5e8"
        lines = [f'{indent}subgraph "cluster_{key}" {{', f"{indent}  label={_q(title)};",
                 f'{indent}  color="{colour}"; style="rounded"; fontsize=10;']
        lines += [f"{indent}  " + self.node(vid) for vid in clusters[key]]
        for inner, outer in parent.items():
            if outer == key:
                lines += self.cluster(inner, clusters, parent, indent + "  ")
        lines.append(f"{indent}}}")
        return lines

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
                out.append(Edge(f"p:{name}", f"v{v.id}", f"{name}: {self.g.param(name).type}",
                                v.id in self.differentiable))
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
            return [self.edge(p.objective, v.id, "objective"),
                    self.edge(p.var, v.id, f"{p.var_name}*: {v.type}")]
        s = v.attr("scan")
        return [self.edge(v.inputs[0], v.id, f"initial carry: {s.carry_type}"),
                self.edge(s.result, v.id, f"new carry: {s.carry_type}")]


def _backward_edge(e: Edge, grads: Mapping[str, float] | None) -> str:
    attrs = ['style=dashed', 'constraint=false', 'arrowhead=empty']
    if grads is None:
        attrs += ['color="#888888"', 'fontcolor="#888888"', f"label={_q('∂L/∂' + _name(e))}"]
    else:
        g = grads.get(e.src)
        colour = _heat(g)
        text = "∂L: n/a" if g is None else f"‖∂L/∂{_name(e)}‖ {g:.2g}"
        attrs += [f'color="{colour}"', f'fontcolor="{colour}"', f"label={_q(text)}",
                  f"penwidth={_pen(g)}"]
    return f'"{e.dst}" -> "{e.src}" [{", ".join(attrs)}];'


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


def _name(e: Edge) -> str:
    return e.label.split(":")[0]


def _heat(g: float | None) -> str:
    """Blue below 1e-6 (vanishing), grey around 1e-6…1e2, red above 1e3 (exploding)."""
    if g is None or not math.isfinite(g):
        return "#cc0000" if g is not None else "#bbbbbb"
    if g < 1e-6:
        return "#3d85c6"
    if g > 1e3:
        return "#cc0000"
    if g > 1e2:
        return "#e69138"
    return "#555555"


def _pen(g: float | None) -> str:
    if g is None or not math.isfinite(g) or g <= 0:
        return "1"
    return f"{min(max(1 + math.log10(g) / 3, 0.5), 4):.2f}"


def _legend(show: str, measured: bool) -> list[str]:
    rows = []
    for kind, text in LEGEND:
        shape, fill, style = STYLE[kind]
        rows.append(f'<tr><td bgcolor="{fill}" border="1">  </td><td align="left">{text}</td>'
                    "</tr>")
    rows.append('<tr><td>→</td><td align="left">forward: tensor name and type</td></tr>')
    if show != "forward":
        back = ("backward: ‖∂L/∂·‖ measured (blue vanishing, red exploding)" if measured
                else "backward (dashed): the adjoint ∂L/∂·")
        rows.append(f'<tr><td>⇠</td><td align="left">{back}</td></tr>')
    table = "".join(rows)
    return ['  subgraph cluster_legend {', '    label="legend"; style="rounded"; '
            'color="#cccccc"; fontsize=9;',
            f'    legend [shape=plaintext, fontsize=9, label=<<table border="0" '
            f'cellspacing="2">{table}</table>>];', '  }']


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _short(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --- files -------------------------------------------------------------------------------------

FORMATS = ("dot", "svg", "png")


class DotMissing(RuntimeError):
    """The graphviz ``dot`` binary is not installed."""


def render_file(dot_text: str, path: str, fmt: str | None = None) -> str:
    """Write ``dot_text`` to ``path`` as DOT, SVG or PNG (from ``fmt`` or the extension);
    returns the format written. SVG and PNG need graphviz's ``dot`` (:class:`DotMissing`)."""
    fmt = fmt or os.path.splitext(path)[1].lstrip(".").lower() or "dot"
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}': {', '.join(FORMATS)}")
    from ddm.runtime.checkpoint import atomic_write
    if fmt == "dot":
        atomic_write(path, dot_text.encode("utf-8"))
        return fmt
    exe = shutil.which("dot")
    if exe is None:
        raise DotMissing("graphviz's 'dot' is not installed, so only DOT can be written; "
                         "install graphviz (apt-get install graphviz, or `make dot`) or "
                         "write a .dot file")
    proc = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"),
                          capture_output=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    atomic_write(path, proc.stdout)
    return fmt
