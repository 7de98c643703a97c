"""Φ-rules: ``rule NAME "intent" { when … sharpness … penalty … weight … }`` — a soft trigger
(the relaxation of a condition), a penalty and a weight, added to the loss; their activation
and effective penalty are metrics and are logged on every log step beside the intent."""
import json

import numpy as np
import pytest

import ddm
from ddm.compiler.rules import relax
from ddm.dsl import ast
from ddm.dsl.diagnostics import DdmError
from ddm.dsl.format import format_source
from ddm.runtime import train
from ddm.runtime.config import RunConfig
from ddm.runtime.data import Dataset, Source

PROGRAM = """input vol: f32
input r: f32
param phi = mlp(1, 8, 1)
node w = tanh(phi(stack([vol]))[0])
node pnl = w * r
output w
{rule}
loss = -mean(pnl)
"""
RULE = """rule high_vol "reduce position in high volatility" {
    when vol > 0.3
    sharpness 20.0
    penalty w ** 2
    weight 0.5
}"""


def _train(monkeypatch, tmp_path, text):
    rng = np.random.default_rng(0)
    vol = np.where(np.arange(512) % 2 == 0, 0.1, 0.5).astype(np.float32)
    r = (0.05 + vol * rng.normal(size=512)).astype(np.float32)
    data = Dataset({"vol": vol, "r": r}, {"vol": vol, "r": r})
    sources = {"regimes": Source("regimes", (), lambda: data, "")}
    monkeypatch.setattr(train, "SOURCES", sources)
    cfg = RunConfig.defaults()
    cfg.values.update(data={"name": "regimes"}, batch=128, steps=400, log_every=100,
                      optimizer={"name": "adam", "lr": 0.01})
    cfg.validate(sources)
    prog = ddm.loads(text, file="rule.ddm")
    result = train.run(prog, cfg, str(tmp_path))
    w = prog.apply_batch(result.params, vol=np.array([0.1, 0.5], np.float32),
                         r=np.zeros(2, np.float32))["w"]
    return result, np.asarray(w)


def test_a_rule_reduces_the_position_where_it_fires_and_only_there(monkeypatch, tmp_path):
    free, w_free = _train(monkeypatch, tmp_path / "free", PROGRAM.format(rule=""))
    ruled, w_rule = _train(monkeypatch, tmp_path / "rule", PROGRAM.format(rule=RULE))
    # low volatility: long, rule or not (the shared network lets some of the rule spill over)
    assert w_free[0] > 0.8 and w_free[1] > 0.8 and w_rule[0] > 0.5
    # high volatility: max w·0.05 − 0.5·σ(4)·w² gives w ≈ 0.05, far below the free 0.9+
    assert w_rule[1] < 0.2 < w_free[1]
    m = ruled.metrics["test"]
    assert abs(m["rule_high_vol_activation"] - 0.5) < 0.02  # half the samples are high-vol
    assert m["rule_high_vol_effective_penalty"] >= 0
    lines = [json.loads(x) for x in (tmp_path / "rule" / "log.jsonl").read_text().splitlines()]
    logged = [x["rules"]["high_vol"] for x in lines if "rules" in x]
    assert len(logged) == 4
    assert logged[-1]["intent"] == "reduce position in high volatility"
    assert abs(logged[-1]["activation"] - 0.5) < 0.05


def test_relaxations_of_conditions():
    a, b, k = ast.Name("a"), ast.Name("b"), ast.Number(2.0, "2.0")
    gt = relax(ast.BinOp(">", a, b), k)
    assert gt.func.id == "sigmoid" and gt.args[0].right.left == a
    lt = relax(ast.BinOp("<", a, b), k)
    assert lt.args[0].right.left == b  # σ(κ·(b − a))
    both = relax(ast.BinOp("and", ast.BinOp(">", a, b), ast.BinOp("<", a, b)), k)
    assert both.op == "*"
    either = relax(ast.BinOp("or", ast.BinOp(">", a, b), ast.BinOp("<", a, b)), k)
    assert either.op == "-"  # 1 − (1 − p)(1 − q)
    assert relax(ast.UnaryOp("not", ast.BinOp(">", a, b)), k).op == "-"
    assert relax(a, k) == a  # already a soft trigger


def test_a_soft_trigger_from_the_program_is_used_as_is_and_learned_knobs_train():
    text = PROGRAM.format(rule="""param kappa: f32 = 5.0 positive
param lam: f32 = 0.1 positive
rule r "x" { when sigmoid(vol) penalty w ** 2 weight lam }
rule q "y" { when vol > 0.3 or vol < 0.05 sharpness kappa penalty abs(w) }""")
    prog = ddm.loads(text, file="soft.ddm")
    import jax
    params = prog.init(jax.random.key(0))
    g = jax.grad(prog.loss)(params, {"vol": np.array([0.1, 0.5], np.float32),
                                     "r": np.array([0.01, 0.02], np.float32)})
    assert float(g["lam"]) != 0.0 and float(g["kappa"]) != 0.0


@pytest.mark.parametrize("body, message", [
    ("when vol == 0.3 penalty w ** 2", "'==' has no smooth relaxation"),
    ("when vol > 0.3", "rule 'bad' needs 'penalty'"),
    ("when vol > 0.3 penalty w ** 2 scale 2.0", "rule 'bad' has no entry 'scale'"),
    ("when vol > 0.3 penalty w ** 2 penalty w", "'penalty' is given twice"),
    ("when vol > 0.3 penalty stack([w, w])", "is declared f32 but its value is f32\\[2\\]"),
])
def test_bad_rules_are_located(body, message):
    with pytest.raises(DdmError, match=message) as info:
        ddm.loads(PROGRAM.format(rule=f'rule bad "intent" {{ {body} }}'), file="bad.ddm")
    assert info.value.span is not None and info.value.span.line >= 7


def test_format_round_trips_a_rule():
    text = PROGRAM.format(rule=RULE)
    assert format_source(text) == text


def test_a_rule_is_its_own_cluster_in_the_diagram():
    from ddm.compiler.driver import front_end
    from ddm.compiler.render import to_dot
    g, _ = front_end(PROGRAM.format(rule=RULE), "rule.ddm")
    text = to_dot(g)
    assert 'label="rule high_vol: reduce position in high volatility"' in text
    block = text.split('subgraph "cluster_rule:high_vol"')[1].split("\n  }")[0]
    for name in ("rule_high_vol_trigger", "rule_high_vol_term"):
        vid = g.nodes[name]
        assert f'"v{vid}"' in block, name
