"""``ddmc render``: the IR drawn as the seed article draws pipelines (DOT; SVG/PNG via dot).

Specifications: every IR value and every edge is in the DOT, kinds have their colours, edges
carry tensor names and types, backward edges run exactly along the gradient path, bodies of
argmin, scan and fn calls are clusters, measured gradient norms colour the backward edges, and
the picture renders when graphviz is installed (a clear message when it is not)."""

import json
import re
import shutil
import subprocess

import pytest

from ddm.compiler.driver import front_end, front_end_file
from ddm.compiler.ir import gradient_path
from ddm.runtime.diagram import diagram, measured
from ddm.runtime.dot import STYLE, DotMissing, render_file
from ddm.runtime.dot import to_dot as dot_text

from conftest import EXAMPLES
from test_examples import ddmc


def to_dot(graph, show="forward", grads=None, rankdir="LR"):
    return dot_text(diagram(graph, show, grads, rankdir))


NODE = re.compile(r'^\s*"(v\d+|p:\w+)" \[(.*)\];$', re.M)
EDGE = re.compile(r'^\s*"(v\d+|p:\w+)" -> "(v\d+|p:\w+)" \[(.*)\];$', re.M)


def parse(text):
    nodes = {m.group(1): m.group(2) for m in NODE.finditer(text)}
    edges = [(m.group(1), m.group(2), m.group(3)) for m in EDGE.finditer(text)]
    return nodes, edges


@pytest.mark.parametrize("name", ["hedge.ddm", "deep_hedge.ddm", "credit.ddm", "sparse_hedge.ddm"])
def test_every_value_and_every_edge_is_drawn(name):
    g, _ = front_end_file(str(EXAMPLES / name))
    nodes, edges = parse(to_dot(g))
    assert {f"v{v.id}" for v in g.values} <= set(nodes)
    assert {f"p:{p.name}" for p in g.params if p.is_layer} <= set(nodes)
    drawn = {(s, d) for s, d, _ in edges}
    for v in g.values:
        if v.op == "argmin":  # its value comes from the objective and the decision variable
            p = v.attr("problem")
            assert {(f"v{p.objective}", f"v{v.id}"), (f"v{p.var}", f"v{v.id}")} <= drawn
        elif v.op == "scan":
            s = v.attr("scan")
            assert {(f"v{v.inputs[0]}", f"v{v.id}"), (f"v{s.result}", f"v{v.id}")} <= drawn
        else:
            assert {(f"v{i}", f"v{v.id}") for i in v.inputs} <= drawn, v
            if v.op == "layer":
                assert (f"p:{v.attr('param')}", f"v{v.id}") in drawn


def test_kinds_have_their_shapes_and_colours_and_edges_their_tensors():
    g, _ = front_end_file(str(EXAMPLES / "hedge.ddm"))
    nodes, edges = parse(to_dot(g))
    by_name = {v.name: v.id for v in g.values if v.name}
    for name, kind in (
        ("x", "input"),
        ("lam", "param"),
        ("w", "declarative"),
        ("Sigma", "imperative"),
    ):
        attrs = nodes[f"v{by_name[name]}"]
        shape, fill, _ = STYLE[kind]
        assert f"shape={shape}" in attrs and f'fillcolor="{fill}"' in attrs, (name, attrs)
    loss = nodes[f"v{g.loss}"]
    assert f"shape={STYLE['loss'][0]}" in loss
    sigma = by_name["Sigma"]
    labels = [a for s, _, a in edges if s == f"v{sigma}"]
    assert labels and all('label="Sigma: f32[N, N]"' in a for a in labels)


def test_backward_edges_follow_exactly_the_gradient_path():
    g, _ = front_end_file(str(EXAMPLES / "hedge.ddm"))
    forward = [e for e in parse(to_dot(g, "forward"))[1]]
    backward = [e for e in parse(to_dot(g, "backward"))[1]]
    assert all("style=dashed" in a for _, _, a in backward)
    assert not any("style=dashed" in a for _, _, a in forward)
    path = gradient_path(g)
    r_next = next(v.id for v in g.values if v.name == "r_next")
    assert r_next not in path  # data: no adjoint flows into it
    assert not any(d == f"v{r_next}" for _, d, _ in backward)
    lam = next(v.id for v in g.values if v.name == "lam")
    assert any(d == f"v{lam}" for _, d, _ in backward)  # reversed: from consumer to lam
    both = parse(to_dot(g, "both"))[1]
    assert len(both) == len(forward) + len(backward)


def test_bodies_and_fn_calls_are_clusters():
    text = to_dot(front_end_file(str(EXAMPLES / "deep_hedge.ddm"))[0])
    assert 'label="h_band: the policy at each step"' in text
    assert 'label="h_net: the policy at each step"' in text
    assert "objective and constraints" in text  # the band's projection, inside its scan
    g, _ = front_end(
        "input x: f32[3]\nfn sq(a: f32[K]) -> f32 { return sum(a * a) }\n"
        "node y = sq(x)\noutput y\n",
        "fn.ddm",
    )
    assert 'label="fn sq@3:10"' in to_dot(g)


def test_measured_norms_colour_the_backward_edges(tmp_path):
    r = ddmc("train", str(EXAMPLES / "hedge.ddm"), "--out", str(tmp_path), "--set", "steps=20")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "grad_norms.json").exists()  # a run does not pay for them
    out = ddmc("render", str(EXAMPLES / "hedge.ddm"), "--grads", str(tmp_path))
    assert out.returncode == 0 and "‖∂L/∂lam‖" in out.stdout, out.stderr
    norms = json.loads((tmp_path / "grad_norms.json").read_text())  # measured, then cached
    assert norms["values"] and norms["params"].keys() == {"lam", "phi"}
    g, _ = front_end_file(str(EXAMPLES / "hedge.ddm"))
    grads = measured(g, norms)
    text = to_dot(g, "both", grads)
    assert "‖∂L/∂phi‖" in text and "‖∂L/∂lam‖" in text
    # an exploding and a vanishing value get the extreme colours
    some = next(k for k in grads if k.startswith("v"))
    hot = to_dot(g, "backward", {**grads, some: 1e6})
    assert "#cc0000" in hot
    cold = to_dot(g, "backward", {**grads, some: 1e-9})
    assert "#3d85c6" in cold


def test_grads_without_a_run_is_a_clear_error(tmp_path):
    r = ddmc("render", str(EXAMPLES / "hedge.ddm"), "--grads", str(tmp_path))
    assert r.returncode == 1 and "params.npz" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="graphviz's dot is not installed "
    "(make dot installs it); test_dot_missing_is_a_clear_message covers this",
)
def test_svg_and_png_render_with_dot(tmp_path):
    for ext in ("svg", "png"):
        r = ddmc("render", str(EXAMPLES / "deep_hedge.ddm"), "-o", str(tmp_path / f"g.{ext}"))
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "g.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dot_missing_is_a_clear_message(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DotMissing, match="install graphviz"):
        render_file("digraph {}", str(tmp_path / "g.svg"))
    render_file("digraph {}", str(tmp_path / "g.dot"))  # DOT needs no binary
    assert (tmp_path / "g.dot").read_text() == "digraph {}"


def test_a_200_node_program_stays_a_valid_graph(tmp_path):
    lines = ["input x: f32[4]", "param w: f32[4] = 0.1", "node n0 = x * w"]
    lines += [f"node n{i} = tanh(n{i - 1}) + 0.5 * n{max(i - 7, 0)}" for i in range(1, 200)]
    lines += ["output n199", "loss = mean(sum(n199 ** 2, axis=1))"]
    g, _ = front_end("\n".join(lines) + "\n", "big.ddm")
    text = to_dot(g, "both", rankdir="TB")
    nodes, _ = parse(text)
    assert len(nodes) >= 200
    # graphviz reads it (its parser, `nop`: laying out 200 nodes and their gradient edges
    # takes graphviz a minute here; the SVG of a diagram is tested on smaller programs above)
    if shutil.which("nop"):
        proc = subprocess.run(["nop"], input=text.encode(), capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        assert proc.stdout.decode().count("->") == text.count("->")


def test_guards_and_rules_are_clusters_titled_with_their_text():
    graph, _ = front_end(
        """dim N = 2
input x: f32[N]
node w = 2.0 * x
guard cap "at most one unit" on w { limit abs(w) <= 1.0 action project }
rule calm "keep it small" { when mean(x) > 0.5 penalty sum(w ** 2) }
loss = mean(sum(w))
""",
        "g.ddm",
    )
    dot = to_dot(graph, "both")
    assert 'subgraph "cluster_guard:cap"' in dot and 'subgraph "cluster_rule:calm"' in dot
    assert "guard cap on w: abs(w) <= 1.0 (project)" in dot and "rule calm: keep it small" in dot
