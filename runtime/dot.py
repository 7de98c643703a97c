"""A :class:`~ddm.runtime.diagram.Diagram` as DOT text, and DOT as a file (DOT, SVG, PNG, PDF).

Kinds have distinct shapes and colours (a legend is included); forward edges are solid and
labelled with their tensor; backward edges — the adjoint flowing from the loss to the params,
on exactly the edges that carry it — are dashed and point the other way, and with measured
norms are labelled ‖∂L/∂value‖ and coloured from blue (vanishing) to red (exploding).
Only :func:`render_file` runs graphviz's ``dot`` binary, to turn the text into a picture.

>>> from ddm.compiler.driver import front_end
>>> from ddm.runtime.diagram import diagram
>>> g, _ = front_end("input x: f32[3]\\nparam w: f32[3] = 0.0\\nnode y = dot(w, x)\\n"
...                  "output y\\nloss = mean(y ** 2)", "<doc>")
>>> text = to_dot(diagram(g))
>>> text.startswith("digraph ddm {") and '"v2" -> "v3"' in text
True
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from typing import Mapping

from ddm.runtime.diagram import Cluster, Diagram, Edge, Node

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
    "rule": ("note", "#fce8e6", "filled"),  # the named-node view's Φ-rules
}
CLUSTER_COLOUR = {
    "argmin": "#93c47d",
    "scan": "#8e7cc3",
    "fn": "#9fc5e8",
    "rule": "#e06666",
    "guard": "#cc0000",
}
LEGEND = (
    ("input", "input (data)"),
    ("param", "param (trained)"),
    ("imperative", "imperative node"),
    ("declarative", "declarative node (argmin)"),
    ("decision", "decision variable"),
    ("sequential", "sequential node (scan)"),
    ("state", "step index / carry"),
    ("loss", "loss"),
    ("metric", "metric"),
)
# the named-node view lists the kinds it drew, in this order
NODES_LEGEND = (
    ("input", "input (data)"),
    ("param", "param (trained)"),
    ("imperative", "node: an expression"),
    ("declarative", "node: argmin / argmax (class, solver, backward)"),
    ("sequential", "node: scan"),
    ("rule", "Φ-rule: its term is added to the loss"),
    ("loss", "loss"),
    ("metric", "metric"),
)
CONSTRAINT_COLOUR = "#38761d"
# PNG is 96 dpi: a named-node diagram wider than this many inches is scaled down to fit
NODES_MAX_WIDTH_IN = 26
METRICS_PER_ROW = 4  # drawn metrics (--metrics) stacked in rows of this many


def to_dot(d: Diagram) -> str:
    """The DOT text of ``d``: every IR value (``d.detail == "ops"``) or the named things
    (``"nodes"``, :func:`_named_dot`)."""
    if d.detail == "nodes":
        return _named_dot(d)
    out = [
        "digraph ddm {",
        f'  graph [rankdir={d.rankdir}, fontname="Helvetica", fontsize=11, newrank=true, '
        f"compound=true, label={_q(d.title)}, labelloc=t];",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8];',
    ]
    by_key = {n.key: n for n in d.nodes}
    placed = {k for c in d.clusters for k in c.members}
    out += ["  " + _node(n) for n in d.nodes if n.key not in placed]
    for c in d.clusters:
        if c.parent is None:
            out += _cluster(c, d.clusters, by_key, "  ")
    for e in d.edges:
        if d.show in ("forward", "both"):
            out.append(f'  "{e.src}" -> "{e.dst}" [label={_q(e.label)}];')
        if d.show in ("backward", "both") and e.backward:
            out.append("  " + _backward_edge(e, d.grads))
    out += _legend(d.show, d.grads is not None)
    out.append("}")
    return "\n".join(out) + "\n"


def _named_dot(d: Diagram) -> str:
    """The named-node view: no clusters (bodies are inside their nodes), edges unlabelled
    (the nodes say what they hold; the label is the tooltip) but for constraints, outputs with
    a double border, a legend of the kinds drawn, and a width cap."""
    out = [
        "digraph ddm {",
        f'  graph [rankdir={d.rankdir}, fontname="Helvetica", fontsize=11, newrank=true, '
        f"label={_q(d.title)}, labelloc=t, nodesep=0.25, ranksep=0.35, "
        f'size="{NODES_MAX_WIDTH_IN},1000"];',
        '  node [fontname="Helvetica", fontsize=10, margin="0.12,0.04"];',
        '  edge [fontname="Helvetica", fontsize=8, color="#666666"];',
    ]
    for n in d.nodes:
        line = _node(n)
        out.append("  " + (line[:-2] + ", peripheries=2];" if n.output else line))
    for e in d.edges:
        if d.show in ("forward", "both"):
            if e.constraint:
                attrs = (
                    f"label={_q(e.constraint)}, "
                    f'color="{CONSTRAINT_COLOUR}", fontcolor="{CONSTRAINT_COLOUR}", '
                    f"tooltip={_q(e.label)}"
                )
            else:
                attrs = f"tooltip={_q(e.label)}"
            out.append(f'  "{e.src}" -> "{e.dst}" [{attrs}];')
        if d.show in ("backward", "both") and e.backward:
            out.append("  " + _backward_edge(e, d.grads))
    # metrics are sinks, so dot puts them all on its last rank: stack them in rows instead
    metrics = [n.key for n in d.nodes if n.kind == "metric"]
    for above, below in zip(metrics, metrics[METRICS_PER_ROW:]):
        out.append(f'  "{above}" -> "{below}" [style=invis];')
    out += _named_legend(d)
    out.append("}")
    return "\n".join(out) + "\n"


def _named_legend(d: Diagram) -> list[str]:
    kinds = {n.kind for n in d.nodes}
    rows = []
    for kind, text in NODES_LEGEND:
        if kind in kinds:
            _, fill, _ = STYLE[kind]
            rows.append(
                f'<tr><td bgcolor="{fill}" border="1">  </td><td align="left">{text}</td></tr>'
            )
    if any(n.output for n in d.nodes):
        rows.append('<tr><td border="3" sides="ltrb">  </td><td align="left">output</td></tr>')
    if d.show != "backward":
        rows.append('<tr><td>→</td><td align="left">reads</td></tr>')
        if any(e.constraint for e in d.edges):
            rows.append(
                f'<tr><td><font color="{CONSTRAINT_COLOUR}">→</font></td>'
                '<td align="left">enters the problem through this constraint</td></tr>'
            )
    if d.show != "forward":
        back = (
            "backward: ‖∂L/∂·‖ measured (blue vanishing, red exploding)"
            if d.grads is not None
            else "backward (dashed): the adjoint ∂L/∂·"
        )
        rows.append(f'<tr><td>⇠</td><td align="left">{back}</td></tr>')
    if d.folded_metrics:
        many = "s" if d.folded_metrics > 1 else ""
        rows.append(
            f'<tr><td></td><td align="left">{d.folded_metrics} metric{many} not drawn '
            "(ddmc render --metrics)</td></tr>"
        )
    table = "".join(rows)
    return [
        f'  legend [shape=plaintext, fontsize=9, label=<<table border="0" cellspacing="2">'
        f"{table}</table>>];",
    ]


def _node(n: Node) -> str:
    shape, fill, style = STYLE[n.kind]
    attrs = [f"shape={shape}", f"label={_q(n.label)}", f'fillcolor="{fill}"']
    if n.tooltip:
        attrs.append(f"tooltip={_q(n.tooltip)}")
    if style:
        attrs.append(f'style="{style}"')
    if n.kind == "const":
        attrs += ["fontsize=8", 'fontcolor="#777777"']
    return f'"{n.key}" [{", ".join(attrs)}];'


def _cluster(c: Cluster, clusters, by_key: Mapping[str, Node], indent: str) -> list[str]:
    lines = [
        f'{indent}subgraph "cluster_{c.key}" {{',
        f"{indent}  label={_q(c.title)};",
        f'{indent}  color="{CLUSTER_COLOUR[c.kind]}"; style="rounded"; fontsize=10;',
    ]
    lines += [f"{indent}  " + _node(by_key[k]) for k in c.members]
    for inner in clusters:
        if inner.parent == c.key:
            lines += _cluster(inner, clusters, by_key, indent + "  ")
    lines.append(f"{indent}}}")
    return lines


def _backward_edge(e: Edge, grads: Mapping[str, float] | None) -> str:
    attrs = ["style=dashed", "constraint=false", "arrowhead=empty"]
    if grads is None:
        attrs += ['color="#888888"', 'fontcolor="#888888"', f"label={_q('∂L/∂' + _name(e))}"]
    else:
        g = grads.get(e.src)
        colour = _heat(g)
        text = "∂L: n/a" if g is None else f"‖∂L/∂{_name(e)}‖ {g:.2g}"
        attrs += [
            f'color="{colour}"',
            f'fontcolor="{colour}"',
            f"label={_q(text)}",
            f"penwidth={_pen(g)}",
        ]
    return f'"{e.dst}" -> "{e.src}" [{", ".join(attrs)}];'


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
        _, fill, _ = STYLE[kind]
        rows.append(f'<tr><td bgcolor="{fill}" border="1">  </td><td align="left">{text}</td></tr>')
    rows.append('<tr><td>→</td><td align="left">forward: tensor name and type</td></tr>')
    if show != "forward":
        back = (
            "backward: ‖∂L/∂·‖ measured (blue vanishing, red exploding)"
            if measured
            else "backward (dashed): the adjoint ∂L/∂·"
        )
        rows.append(f'<tr><td>⇠</td><td align="left">{back}</td></tr>')
    table = "".join(rows)
    return [
        "  subgraph cluster_legend {",
        '    label="legend"; style="rounded"; color="#cccccc"; fontsize=9;',
        f'    legend [shape=plaintext, fontsize=9, label=<<table border="0" '
        f'cellspacing="2">{table}</table>>];',
        "  }",
    ]


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# --- files -------------------------------------------------------------------------------------

FORMATS = ("dot", "svg", "png", "pdf")


class DotMissing(RuntimeError):
    """The graphviz ``dot`` binary is not installed."""


def render_file(dot_text: str, path: str, fmt: str | None = None) -> str:
    """Write ``dot_text`` to ``path`` as DOT, SVG, PNG or PDF (from ``fmt`` or the
    extension); returns the format written. All but DOT need graphviz's ``dot``
    (:class:`DotMissing`)."""
    from ddm.runtime.checkpoint import atomic_write

    fmt = fmt or os.path.splitext(path)[1].lstrip(".").lower() or "dot"
    if fmt not in FORMATS:
        raise ValueError(f"unknown format '{fmt}': {', '.join(FORMATS)}")
    if fmt == "dot":
        atomic_write(path, dot_text.encode("utf-8"))
        return fmt
    exe = shutil.which("dot")
    if exe is None:
        raise DotMissing(
            "graphviz's 'dot' is not installed, so only DOT can be written; "
            "install graphviz (apt-get install graphviz, or `make dot`) or "
            "write a .dot file"
        )
    proc = subprocess.run(
        [exe, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True, timeout=300
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dot failed: {proc.stderr.decode(errors='replace').strip()}")
    atomic_write(path, proc.stdout)
    return fmt
