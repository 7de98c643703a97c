"""Variants (compiler/variants.py): ablations as typed rewrites of the compiled graph. Each
rewrite changes exactly what it says — a gradient stopped, a param frozen (bit for bit, under
adamw's weight decay too), a guard softened into a penalty of stated weight, a subset of the
rules trained on, a named loss, a node read from the data — and nothing else; unknown names
are errors that say what exists."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ddm
from ddm.compiler import gradflow
from ddm.compiler.ir import format_ir
from ddm.compiler.variants import Variant, apply, describe, variant_from_mapping
from ddm.dsl.diagnostics import DataDiagnostic
from ddm.runtime import train_step
from ddm.runtime.program import Program

pytestmark = pytest.mark.usefixtures("float64")

GUARD = 'guard position "cap" on pos { limit abs(pos) <= 1.0 action project }\n'
SRC = (
    """dim K = 2
input x: f32[K]
input r: f32[K]
param net: f32[K] = 0.5
param scale: f32 = 1.5
node y = tanh(net * x)
node pos = scale * y * 2.0
"""
    + GUARD
    + """rule calm "quiet" { when sum(x) > 1.0 penalty sum(pos ** 2) weight 0.1 }
rule other "loud" { when sum(x) < 0.0 penalty sum(pos ** 4) }
output pos
loss = -mean(sum(pos * r, axis=1))
loss raw = mean(sum(pos ** 2, axis=1))
"""
)
BATCH = {
    "x": np.array([[2.0, 1.0], [-1.0, 0.5], [0.3, -2.0]]),
    "r": np.array([[0.5, -0.2], [0.1, 0.3], [-0.4, 0.2]]),
}


@pytest.fixture(scope="module")
def prog():
    return ddm.loads(SRC, "v.ddm", x64=True)


@pytest.fixture(scope="module")
def params(prog):
    return prog.init(None)


def _grads(p, params, batch=BATCH):
    return jax.grad(p.loss)(params, batch)


def _well_formed(g):
    for i, v in enumerate(g.values):
        assert v.id == i and all(j < i for j in v.inputs)
        assert all(g.values[j].stage != "batch" for j in v.inputs) or v.stage == "batch"
    for spec in g.inputs:
        assert g.values[spec.value].op == "input"
    if g.loss is not None:
        assert g.values[g.loss].stage == "batch" and g.values[g.loss].type.shape == ()


# --- stop_gradient -------------------------------------------------------------------------------
def test_stop_gradient_cuts_every_param_upstream_and_keeps_the_value(prog, params):
    held = prog.variant(Variant("held", stop_gradient=("y",)))
    before, after = _grads(prog, params), _grads(held, params)
    assert np.all(np.abs(before["net"]) > 1e-3)
    assert np.all(after["net"] == 0.0)
    assert np.isclose(after["scale"], before["scale"])  # downstream of y: untouched
    assert float(held.loss(params, BATCH)) == float(prog.loss(params, BATCH))
    assert gradflow.trained(held.graph) == {"scale"} and gradflow.trained(prog.graph) == {
        "net",
        "scale",
    }
    assert "stop_gradient" in format_ir(held.graph) and "stop_gradient" not in format_ir(prog.graph)


SEQ = """dim N = 3
input x: f32[N]
param a: f32 = 0.7
node b = a * x
node h = scan t in N, prev: f32 = 0.0 { prev + b[t] ** 2 }
node w = argmin v: f32[N] { sum((v - b) ** 2) + 0.5 * sum(v ** 2) }
loss = mean(sum(h, axis=1)) + mean(sum(w ** 2, axis=1))
"""


def test_stop_gradient_is_honoured_through_scans_and_argmins():
    # loss = L_h(b) + L_w(b): a stop at the scan h (or the argmin w) leaves the other's part of
    # ∂L/∂a; a stop at b, which both read, leaves nothing
    prog = ddm.loads(SEQ, "seq.ddm", x64=True)
    params, batch = prog.init(None), {"x": np.array([[1.0, -2.0, 0.5]])}

    value = float(prog.loss(params, batch))

    def grad_a(*stopped):
        held = prog.variant(Variant("held", stop_gradient=stopped))
        loss, grads = jax.value_and_grad(held.product.loss, has_aux=True)(params, batch)
        assert np.isclose(float(loss[0]), value)
        return float(grads["a"])

    full, no_h, no_w = grad_a(), grad_a("h"), grad_a("w")
    assert abs(no_h) > 1e-3 and abs(no_w) > 1e-3
    assert np.isclose(no_h + no_w, full)
    assert grad_a("b") == 0.0


def test_a_stopped_value_inside_a_scan_body_is_honoured_by_its_step():
    # no variant can name a body value (nodes are never declared in a body); the evaluator
    # still stops any marked value wherever it is computed
    prog = ddm.loads(SEQ, "seq.ddm", x64=True)
    g = prog.graph
    scan = next(v for v in g.values if v.op == "scan").attr("scan")
    inside = next(
        i for i in range(*scan.body) if g.values[i].op == "pow" and g.values[i].type.is_float
    )
    values = list(g.values)
    values[inside] = dataclasses.replace(
        values[inside], attrs=values[inside].attrs + (("_stop_gradient", True),)
    )
    marked = Program.compile(dataclasses.replace(g, values=tuple(values)), prog.sources, True)
    w_held = Variant("w_held", stop_gradient=("w",))  # what is left is the scan's part
    params, batch = prog.init(None), {"x": np.array([[1.0, -2.0, 0.5]])}
    assert float(_grads(marked.variant(w_held), params, batch)["a"]) == 0.0
    assert float(_grads(prog.variant(w_held), params, batch)["a"]) != 0.0


# --- freeze --------------------------------------------------------------------------------------
def test_a_frozen_param_gets_no_gradient_and_keeps_its_bits_under_adamw(prog, params):
    frozen = prog.variant(Variant("frozen", freeze=("scale",)))
    assert float(_grads(frozen, params)["scale"]) == 0.0
    step = train_step.make(frozen.product, optax.adamw(0.1, weight_decay=0.5))
    state, run = step.init(params, jax.random.key(0)), jax.jit(step.step)
    for _ in range(3):
        state, report = run(state, {k: jnp.asarray(v) for k, v in BATCH.items()})
        assert float(report.grads["scale"]["norm"]) == 0.0
    assert np.array_equal(np.asarray(state.params["scale"]), np.asarray(params["scale"]))
    assert not np.allclose(state.params["net"], params["net"])
    # the same steps without the freeze move it (weight decay alone would)
    plain = train_step.make(prog.product, optax.adamw(0.1, weight_decay=0.5))
    other = plain.init(params, jax.random.key(0))
    other, _ = jax.jit(plain.step)(other, {k: jnp.asarray(v) for k, v in BATCH.items()})
    assert not np.array_equal(np.asarray(other.params["scale"]), np.asarray(params["scale"]))
    assert "frozen" in format_ir(frozen.graph)
    assert not any("scale" in w.message for w in gradflow.lint(frozen.graph))


def test_ddm_train_keeps_a_frozen_param():
    prog = ddm.loads(SRC.replace(GUARD, ""), "v.ddm", x64=True)
    rng = np.random.default_rng(0)
    arrays = {k: rng.normal(size=(16, 2)) for k in ("x", "r")}
    result = ddm.train(
        prog.variant(Variant("f", freeze=("scale",))),
        {"train": arrays, "test": arrays},
        steps=3,
        batch=4,
        optimizer={"name": "adamw", "lr": 0.1, "weight_decay": 0.5},
        plots=False,
    )
    assert float(result.params["scale"]) == 1.5
    assert not np.allclose(result.params["net"], 0.5)


# --- loss and rules ------------------------------------------------------------------------------
def test_loss_picks_the_named_loss_and_composes_with_the_rules(prog, params):
    raw = prog.variant(Variant("raw", loss="raw"))
    assert float(raw.loss(params, BATCH)) == float(prog.with_loss("raw").loss(params, BATCH))
    task = prog.variant(Variant("raw_task", loss="raw", rules="off"))
    assert np.isclose(
        float(task.loss(params, BATCH)),
        float(prog.with_loss("raw").without_rules().loss(params, BATCH)),
    )


def test_a_subset_of_rules_is_trained_on_and_all_are_measured(prog, params):
    m = prog.metrics(params, BATCH)
    off = float(prog.without_rules().loss(params, BATCH))
    calm = prog.variant(Variant("calm", rules=("calm",)))
    assert np.isclose(
        float(calm.loss(params, BATCH)), off + float(m["rule_calm_effective_penalty"])
    )
    measured = calm.metrics(params, BATCH)
    assert np.isclose(measured["rule_other_activation"], m["rule_other_activation"])
    # its named losses too, and with_loss afterwards keeps the choice
    raw_off = float(prog.with_loss("raw").without_rules().loss(params, BATCH))
    assert np.isclose(
        float(calm.with_loss("raw").loss(params, BATCH)),
        raw_off + float(m["rule_calm_effective_penalty"]),
    )
    none = prog.variant(Variant("none", rules=()))
    assert np.isclose(float(none.loss(params, BATCH)), off)
    _well_formed(calm.graph)


# --- soft guards ---------------------------------------------------------------------------------
def test_a_soft_guard_lets_the_decision_out_and_pays_its_weighted_penalty(prog, params):
    params = {**params, "net": jnp.array([2.0, 2.0])}  # |pos| up to 3: the cap binds
    soft = prog.variant(Variant("soft", soft_guards=(("position", 10.0),)))
    bare = ddm.loads(SRC.replace(GUARD, ""), "bare.ddm", x64=True)  # the oracle: no guard
    pos = bare.apply_batch(params, **BATCH)["pos"]
    assert np.max(np.abs(pos)) > 1.5
    np.testing.assert_allclose(soft.apply_batch(params, **BATCH)["pos"], pos)
    assert np.max(np.abs(prog.apply_batch(params, **BATCH)["pos"])) <= 1.0
    excess = np.max(np.abs(pos), axis=1) - 1.0
    penalty = 10.0 * np.mean(np.maximum(excess, 0.0) ** 2)
    assert penalty > 0
    for view in (lambda p: p, lambda p: p.without_rules(), lambda p: p.with_loss("raw")):
        assert np.isclose(
            float(view(soft).loss(params, BATCH)), float(view(bare).loss(params, BATCH)) + penalty
        )
    m = soft.metrics(params, BATCH)
    assert float(m["guard_position_violation_rate"]) == float(np.mean(excess > 0))
    assert float(m["guard_position_breach_rate"]) == float(np.mean(excess > 0))  # not enforced
    assert prog.metrics(params, BATCH)["guard_position_breach_rate"] == 0.0
    assert soft.graph.guards[0].action == "soft, weight 10"
    _well_formed(soft.graph)
    # the gradient of the penalty reaches the params that make the decision
    assert np.all(np.abs(_grads(soft, params)["net"]) > 0)


def test_chained_guards_soften_one_and_keep_the_other():
    src = SRC.replace(
        GUARD, GUARD + 'guard small "gross" on pos { limit sum(abs(pos)) <= 1.5 action project }\n'
    )
    prog = ddm.loads(src, "chain.ddm", x64=True)
    params = {**prog.init(None), "net": jnp.array([2.0, 2.0])}
    first = prog.variant(Variant("s", soft_guards=(("position", 1.0),)))
    pos = first.apply_batch(params, **BATCH)["pos"]
    assert np.all(np.sum(np.abs(pos), axis=1) <= 1.5 + 1e-9)  # 'small' still enforced
    assert np.max(np.abs(pos)) > 1.0 - 1e-9
    _well_formed(first.graph)


# --- substitute ----------------------------------------------------------------------------------
def test_a_substituted_node_is_read_from_the_data(prog, params):
    sub = prog.variant(Variant("two_stage", substitute=("y",)))
    assert "y" in [s.name for s in sub.graph.inputs_needed([sub.graph.loss])]
    with pytest.raises(DataDiagnostic, match="missing input 'y'"):
        sub.loss(params, BATCH)
    y = np.array([[0.1, -0.2], [0.3, 0.05], [-0.25, 0.0]])
    out = sub.apply_batch(params, **BATCH, y=y)["pos"]
    np.testing.assert_allclose(out, np.clip(1.5 * y * 2.0, -1, 1))
    grads = _grads(sub, params, {**BATCH, "y": y})
    assert np.all(grads["net"] == 0.0) and float(grads["scale"]) != 0.0
    assert gradflow.trained(sub.graph) == {"scale"}
    _well_formed(sub.graph)


# --- the trading example -------------------------------------------------------------------------
TRADING = [
    {"stop_gradient": "x"},
    {"freeze": "net"},
    {"rules": "off"},
    {"soft_guards": {"position": 10.0}},
    {"substitute": "b"},
]


def test_trading_variants_compile_evaluate_and_say_what_they_change(examples_dir):
    prog = ddm.load(str(examples_dir / "trading.ddm"))
    params = prog.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {
        "P": np.exp(np.cumsum(rng.normal(0, 0.01, (2, 21, 4)), axis=1)),
        "R": rng.normal(0, 0.01, (2, 5, 4)),
        "w_prev": np.zeros((2, 4)),
        "cost": np.full(2, 1e-3),
        "regime": np.zeros(2, np.int32),
        "b": rng.normal(0, 0.05, (2, 4)),
    }
    batch = {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in batch.items()}
    g = prog.graph
    at = {n: g.values[g.nodes[n]].span.line for n in ("x", "b")}  # where the example has them
    at |= {"net": g.param("net").span.line, "calm_down": g.rules[0].span.line}
    at |= {"position": g.guards[0].span.line}
    lines = {}
    for mapping in TRADING:
        v = variant_from_mapping("v", mapping)
        p = prog.variant(v)
        _well_formed(p.graph)
        needed = {s.name for s in p.graph.inputs_needed([p.graph.loss])}
        assert np.isfinite(float(p.loss(params, {k: batch[k] for k in needed})))
        lines[next(iter(mapping))] = lines.get(next(iter(mapping)), []) + describe(prog.graph, v)
    assert lines["stop_gradient"] == [
        f"stop_gradient after node x (trading.ddm:{at['x']}): no param's gradient passes "
        "through it: the stop changes no gradient"
    ]
    assert describe(prog.graph, Variant("v", stop_gradient=("b",))) == [
        f"stop_gradient after node b (trading.ddm:{at['b']}): no gradient reaches param net "
        "through it; params left without any gradient path: net"
    ]
    assert lines["freeze"] == [
        f"freeze param net (trading.ddm:{at['net']}): no gradient, and training keeps its "
        "initial value bit for bit, weight decay included"
    ]
    assert lines["rules"] == [
        f"rules off: the loss drops the terms of calm_down (trading.ddm:{at['calm_down']}); "
        "still measured"
    ]
    assert lines["soft_guards"][0].startswith(
        f"soft guard 'position' (trading.ddm:{at['position']}): node w takes "
        "w_before_position, the limit abs(w) <= 1.0 is no longer enforced; the loss gains "
        "10 · mean over the batch of relu(guard_position_excess)²"
    )
    assert lines["substitute"] == [
        f"substitute node b (trading.ddm:{at['b']}): read from the data as input 'b' (f32[N]); no "
        "longer computed: param net; params left without any gradient path: net"
    ]


def test_describe_an_unchanged_variant_and_a_combined_one(prog):
    g = prog.graph
    assert describe(g, Variant("full")) == ["no change: the program as written"]
    lines = describe(g, Variant("both", substitute=("y",), freeze=("scale",), loss="raw"))
    assert [line.split(" (")[0] for line in lines] == [
        "substitute node y",
        "loss 'raw'",
        "freeze param scale",
    ]
    assert lines[0].endswith(
        "no longer computed: param net; params left without any gradient path: net"
    )


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variant, message, hint",
    [
        (Variant("v", stop_gradient=("yy",)), "stop_gradient: there is no node 'yy'", "'y'"),
        (Variant("v", freeze=("nett",)), "freeze: there is no param 'nett'", "'net'"),
        (Variant("v", freeze=("pos",)), "there is no param 'pos'", "stop_gradient: [pos]"),
        (Variant("v", soft_guards=(("positon", 1.0),)), "no guard 'positon'", "'position'"),
        (Variant("v", rules=("clam",)), "rules: there is no rule 'clam'", "'calm'"),
        (Variant("v", loss="rawx"), "loss: there is no loss named 'rawx'", "'raw'"),
        (Variant("v", substitute=("zz",)), "substitute: there is no node 'zz'", "the nodes: y"),
        (Variant("v", stop_gradient=("net",)), "'net' is a param, not a node", "freeze: [net]"),
    ],
)
def test_unknown_names_say_what_exists(prog, variant, message, hint):
    with pytest.raises(DataDiagnostic) as err:
        prog.variant(variant)
    assert message in err.value.message and hint in (err.value.hint or "")
    assert err.value.message.startswith("variant 'v': ")


def test_senseless_rewrites_are_refused_where_they_point(prog):
    with pytest.raises(DataDiagnostic, match="no gradient flows into the data") as err:
        prog.variant(Variant("v", stop_gradient=("x",)))
    assert err.value.span is not None and err.value.span.line == 2
    assert "v.ddm:2:" in str(err.value)  # at the input, with a caret
    with pytest.raises(DataDiagnostic, match="constants only"):
        prog.variant(Variant("v", substitute=("rule_calm_weight",)))
    with pytest.raises(DataDiagnostic, match="softened twice"):
        prog.variant(Variant("v", soft_guards=(("position", 1.0),))).variant(
            Variant("w", soft_guards=(("position", 2.0),))
        )
    with pytest.raises(DataDiagnostic, match="substituted by an input"):
        prog.variant(Variant("v", substitute=("pos",), soft_guards=(("position", 1.0),)))
    with pytest.raises(DataDiagnostic, match="has no Φ-rules"):
        ddm.loads(SEQ, "seq.ddm").variant(Variant("v", rules="off"))
    with pytest.raises(DataDiagnostic, match="weight > 0"):
        apply(prog.graph, Variant("v", soft_guards=(("position", -1.0),)))


def test_variant_from_mapping_reads_yaml_shapes():
    v = variant_from_mapping(
        "abl",
        {
            "stop_gradient": "x",
            "freeze": ["net", "lam_risk"],
            "loss": "raw",
            "soft_guards": {"position": 10},
            "rules": ["calm_down"],
            "substitute": "b",
        },
    )
    assert v == Variant(
        "abl", ("x",), ("net", "lam_risk"), "raw", (("position", 10.0),), ("calm_down",), ("b",)
    )
    assert variant_from_mapping("a", {"rules": False}).rules == "off"  # YAML reads off as False
    assert variant_from_mapping("a", {"rules": "all"}).unchanged
    assert variant_from_mapping("a", None) == Variant("a")
    assert variant_from_mapping("a", {"rules": "calm"}).rules == ("calm",)
    assert variant_from_mapping("a", {"freeze": None, "soft_guards": None}).unchanged


@pytest.mark.parametrize(
    "mapping, message",
    [
        ({"stop_gradients": ["x"]}, "unknown rewrite 'stop_gradients'"),
        ({"freeze": 3}, "'freeze' is a name or a list of names"),
        ({"soft_guards": ["position"]}, "maps each guard to its penalty weight"),
        ({"soft_guards": {"position": 0}}, "finite weight > 0"),
        ({"soft_guards": {"position": True}}, "(a number)"),
        ({"loss": ["a"]}, "'loss' is the name of a loss"),
        ({"rules": 3}, "'rules' is all, off or a list of rule names"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_variant_from_mapping_refuses_wrong_shapes(mapping, message):
    with pytest.raises(DataDiagnostic) as err:
        variant_from_mapping("m", mapping)
    assert message in err.value.message
    if "stop_gradients" in str(mapping):
        assert err.value.hint == "did you mean 'stop_gradient'?"


def test_lint_names_the_variants_stop(prog):
    held = apply(prog.graph, Variant("held", stop_gradient=("y",)))
    (warning,) = gradflow.lint(held)
    assert "param 'net' reaches the loss only through node 'y'" in warning.message
    assert "where the variant stops the gradient" in warning.message


def test_variants_compose_across_calls(prog, params):
    # a stop put by one variant survives a guard softened by the next on the same node
    params = {**params, "net": jnp.array([2.0, 2.0])}
    both = prog.variant(Variant("a", stop_gradient=("pos",))).variant(
        Variant("b", soft_guards=(("position", 1.0),))
    )
    assert both.graph.values[both.graph.nodes["pos"]].stopped
    assert np.all(_grads(both, params)["net"] != 0.0)  # only the penalty's path is left
    once = prog.variant(Variant("ab", stop_gradient=("pos",), soft_guards=(("position", 1.0),)))
    assert np.isclose(float(both.loss(params, BATCH)), float(once.loss(params, BATCH)))
