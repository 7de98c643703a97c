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
from ddm.runtime.phi import orthogonality

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
    cfg.values.update(
        data={"name": "regimes"},
        batch=128,
        steps=400,
        log_every=100,
        optimizer={"name": "adam", "lr": 0.01},
    )
    cfg.validate(sources)
    prog = ddm.loads(text, file="rule.ddm")
    result = train.run(prog, cfg, str(tmp_path))
    w = prog.apply_batch(
        result.params, vol=np.array([0.1, 0.5], np.float32), r=np.zeros(2, np.float32)
    )["w"]
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
    text = PROGRAM.format(
        rule="""param kappa: f32 = 5.0 positive
param lam: f32 = 0.1 positive
rule r "x" { when sigmoid(vol) penalty w ** 2 weight lam }
rule q "y" { when vol > 0.3 or vol < 0.05 sharpness kappa penalty abs(w) }"""
    )
    prog = ddm.loads(text, file="soft.ddm")
    import jax

    params = prog.init(jax.random.key(0))
    g = jax.grad(prog.loss)(
        params, {"vol": np.array([0.1, 0.5], np.float32), "r": np.array([0.01, 0.02], np.float32)}
    )
    assert float(g["lam"]) != 0.0 and float(g["kappa"]) != 0.0


@pytest.mark.parametrize(
    "body, message",
    [
        ("when vol == 0.3 penalty w ** 2", "'==' has no smooth relaxation"),
        ("when vol > 0.3", "rule 'bad' needs 'penalty'"),
        ("when vol > 0.3 penalty w ** 2 scale 2.0", "rule 'bad' has no entry 'scale'"),
        ("when vol > 0.3 penalty w ** 2 penalty w", "'penalty' is given twice"),
        ("when vol > 0.3 penalty stack([w, w])", "is declared f32 but its value is f32\\[2\\]"),
    ],
)
def test_bad_rules_are_located(body, message):
    with pytest.raises(DdmError, match=message) as info:
        ddm.loads(PROGRAM.format(rule=f'rule bad "intent" {{ {body} }}'), file="bad.ddm")
    assert info.value.span is not None and info.value.span.line >= 7


def test_format_round_trips_a_rule():
    text = PROGRAM.format(rule=RULE)
    assert format_source(text) == text


def test_a_rule_is_its_own_cluster_in_the_diagram():
    from ddm.compiler.driver import front_end
    from ddm.runtime.diagram import diagram
    from ddm.runtime.dot import to_dot

    g, _ = front_end(PROGRAM.format(rule=RULE), "rule.ddm")
    text = to_dot(diagram(g))
    assert 'label="rule high_vol: reduce position in high volatility"' in text
    block = text.split('subgraph "cluster_rule:high_vol"')[1].split("\n  }")[0]
    for name in ("rule_high_vol_trigger", "rule_high_vol_term"):
        vid = g.nodes[name]
        assert f'"v{vid}"' in block, name


# --- memory: decay and saliency boost -------------------------------------------------------


def _toy(monkeypatch, n=128, noise=False):
    rng = np.random.default_rng(1)
    vol = np.where(np.arange(n) % 2 == 0, 0.1, 0.5).astype(np.float32)
    r = (0.05 + vol * rng.normal(size=n)).astype(np.float32)
    arrays = {"vol": vol, "r": r}
    if noise:
        arrays["junk"] = rng.normal(size=n).astype(np.float32)
    data = Dataset(arrays, arrays)
    monkeypatch.setattr(train, "SOURCES", {"toy": Source("toy", (), lambda: data, "")})
    return data


def _cfg(**extra):
    cfg = RunConfig.defaults()
    cfg.values.update(
        {
            "data": {"name": "toy"},
            "batch": 128,
            "steps": 20,
            "log_every": 10,
            "optimizer": {"name": "adam", "lr": 0.01},
            **extra,
        }
    )
    cfg.validate(train.SOURCES)
    return cfg


MEMORY = PROGRAM.replace("output w\n", "output w\nparam g: f32 = 2.0\n")


def _rule(extra: str) -> str:
    return RULE.replace("    weight 0.5\n", f"    weight 0.5\n{extra}")


def test_a_decaying_rule_forgets_as_gamma_to_the_t_without_reinforcement(monkeypatch, tmp_path):
    _toy(monkeypatch)
    prog = ddm.loads(MEMORY.format(rule=_rule("    decay 0.9\n")), file="rule.ddm")
    result = train.run(prog, _cfg(), str(tmp_path))
    logged = [
        json.loads(x)["rules"]["high_vol"]["memory"]
        for x in (tmp_path / "log.jsonl").read_text().splitlines()
    ]
    np.testing.assert_allclose(logged, [0.9**10, 0.9**20], rtol=1e-5)
    assert result.metrics["params"]["rule_high_vol_memory"] == pytest.approx(0.9**20, rel=1e-5)


def test_a_learned_decay_is_part_of_the_gradient(monkeypatch, tmp_path):
    import jax

    data = _toy(monkeypatch)
    prog = ddm.loads(MEMORY.format(rule=_rule("    decay sigmoid(g)\n")), file="rule.ddm")
    params = prog.init(jax.random.key(0))
    grad = jax.grad(prog.loss)(params, dict(data.train))
    # the rule's term is w·γ·memory·trigger·penalty ≥ 0: a larger γ costs loss
    assert float(grad["g"]) > 0
    assert float(grad["rule_high_vol_memory"]) == 0.0  # a state, not a parameter
    result = train.run(prog, _cfg(), str(tmp_path))
    assert result.metrics["params"]["g"] < 2.0


def test_boost_adds_the_saliency_of_the_rules_features(monkeypatch, tmp_path):
    import jax
    import jax.numpy as jnp

    data = _toy(monkeypatch)
    prog = ddm.loads(MEMORY.format(rule=_rule("    decay 0.5\n    boost 0.2\n")), file="rule.ddm")
    params = prog.init(jax.random.fold_in(jax.random.key(0), 0))  # what the run starts from
    batch = {k: jnp.asarray(v) for k, v in data.train.items()}
    xg = jax.grad(lambda x: prog.loss(params, x))(batch)
    sal = {k: float(jnp.mean(jnp.abs(g))) for k, g in xg.items()}
    ratio = sal["vol"] / ((sal["vol"] + sal["r"]) / 2)
    result = train.run(prog, _cfg(steps=1, log_every=1), str(tmp_path))
    # one step: memory = γ · 1 + η · saliency(vol) / mean saliency (the batch is every row)
    assert result.metrics["params"]["rule_high_vol_memory"] == pytest.approx(
        0.5 + 0.2 * ratio, rel=1e-4
    )


@pytest.mark.parametrize(
    "entries, message",
    [
        ("    boost 0.1\n", "boosts its memory but never lets it decay"),
        ("    decay 1.5\n", "a rule's decay γ is in (0, 1)"),
        ("    decay -0.5\n", "a rule's decay γ is in (0, 1)"),
        ("    decay sigmoid(g + vol)\n", "this decay depends on the sample"),
        ("    decay 0.9\n    boost -1.0\n", "a rule's boost is a number >= 0"),
    ],
)
def test_mistaken_memory_entries_are_located_errors(entries, message):
    with pytest.raises(DdmError) as err:
        ddm.loads(MEMORY.format(rule=_rule(entries)), file="rule.ddm")
    assert message in str(err.value) and "rule.ddm:" in str(err.value)


# --- orthogonality, pure DP and curriculum ----------------------------------------------------


def test_the_orthogonality_penalty_is_the_squared_inner_product_of_the_two_gradients():
    import jax

    prog = ddm.loads(PROGRAM.format(rule=RULE), file="rule.ddm")
    params = prog.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = {
        "vol": rng.uniform(0, 0.6, 16).astype(np.float32),
        "r": rng.normal(size=16).astype(np.float32),
    }
    w = np.asarray(prog.apply_batch(params, **batch)["w"], np.float64)
    trig = 1 / (1 + np.exp(-20.0 * (batch["vol"] - 0.3)))
    g_task = -batch["r"] / 16  # ∂(−mean(w·r))/∂w
    g_rule = 0.5 * trig * 2 * w / 16  # ∂mean(0.5·trigger·w²)/∂w
    got = orthogonality(prog.product, params, as_arrays(batch), prog.graph.nodes["w"])
    assert float(got) == pytest.approx(float(np.sum(g_task * g_rule) ** 2), rel=1e-4)
    cos2 = np.sum(g_task * g_rule) ** 2 / (np.sum(g_task**2) * np.sum(g_rule**2))
    got = orthogonality(prog.product, params, as_arrays(batch), prog.graph.nodes["w"], cosine=True)
    assert float(got) == pytest.approx(float(cos2), rel=1e-4) and 0 <= float(got) <= 1


def test_orthogonality_trains_and_is_logged(monkeypatch, tmp_path):
    _toy(monkeypatch)
    prog = ddm.loads(PROGRAM.format(rule=RULE), file="rule.ddm")
    result = train.run(
        prog, _cfg(orthogonality={"name": "penalty", "wrt": "w", "weight": 10.0}), str(tmp_path)
    )
    lines = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(line["orthogonality_penalty"] >= 0 for line in lines)
    assert result.metrics["orthogonality_penalty"] == lines[-1]["orthogonality_penalty"]


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"orthogonality": {"name": "penalty", "wrt": "nope"}}, "the program has no node 'nope'"),
        (
            {"orthogonality": {"name": "penalty", "wrt": "rule_high_vol_weight"}},
            "is the same for every sample",
        ),
        (
            {"target": {"name": "reach", "metric": "nope", "value": 1.0}, "eval_every": 5},
            "the program has no metric 'nope'",
        ),
        (
            {"orthogonality": {"name": "penalty", "wrt": "w"}, "rules": "off"},
            "there is nothing to keep orthogonal",
        ),
    ],
)
def test_orthogonality_settings_are_checked(monkeypatch, tmp_path, setting, message):
    _toy(monkeypatch)
    prog = ddm.loads(PROGRAM.format(rule=RULE), file="rule.ddm")
    with pytest.raises(DdmError) as err:
        train.run(prog, _cfg(**setting), str(tmp_path))
    assert message in str(err.value)


def test_rules_off_trains_the_task_loss_and_still_measures_the_rules(monkeypatch, tmp_path):
    import jax

    data = _toy(monkeypatch)
    prog = ddm.loads(PROGRAM.format(rule=RULE), file="rule.ddm")
    bare = ddm.loads(PROGRAM.format(rule=""), file="rule.ddm")
    params = prog.init(jax.random.key(0))
    assert float(prog.without_rules().loss(params, dict(data.train))) == pytest.approx(
        float(bare.loss(params, dict(data.train)))
    )
    off = train.run(prog, _cfg(rules="off"), str(tmp_path / "off"))
    free = train.run(bare, _cfg(), str(tmp_path / "free"))
    np.testing.assert_array_equal(
        np.asarray(off.params["phi"]["w0"]), np.asarray(free.params["phi"]["w0"])
    )
    assert "rule_high_vol_activation" in off.metrics["test"]


def test_curriculum_draws_episodes_in_proportion_to_the_rules_weight(monkeypatch, tmp_path):
    _toy(monkeypatch, n=512)
    prog = ddm.loads(PROGRAM.format(rule=RULE), file="rule.ddm")
    share = {}
    for strength in (0.0, 1.0):
        result = train.run(
            prog,
            _cfg(
                batch=64, steps=40, curriculum={"name": "rules", "strength": strength, "every": 10}
            ),
            str(tmp_path / str(strength)),
        )
        lines = [
            json.loads(x) for x in (tmp_path / str(strength) / "log.jsonl").read_text().splitlines()
        ]
        share[strength] = np.mean([line["curriculum"]["oversampling"] for line in lines])
        assert result.metrics["curriculum"]["refreshes"] == 4
    # half the episodes are high-vol (trigger σ(4) ≈ 0.98, the others σ(−4) ≈ 0.02): drawing
    # ∝ weight·trigger takes high-vol ones 98 % of the time, ≈ 2× the uniform rule weight
    assert 0.8 < share[0.0] < 1.2 and share[1.0] > 1.8


def test_curriculum_and_memory_resume_bit_for_bit(monkeypatch, tmp_path):
    _toy(monkeypatch, n=512)
    prog = ddm.loads(
        MEMORY.format(rule=_rule("    decay sigmoid(g)\n    boost 0.1\n")), file="rule.ddm"
    )
    spec = {"curriculum": {"name": "rules", "strength": 0.5, "every": 7}, "batch": 64, "steps": 30}
    full = train.run(prog, _cfg(**spec), str(tmp_path / "full"))
    train.run(prog, _cfg(**{**spec, "steps": 20, "checkpoint_every": 10}), str(tmp_path / "cut"))
    again = train.run(
        prog, _cfg(**{**spec, "checkpoint_every": 10}), str(tmp_path / "cut"), resume=True
    )
    for key in ("params", "test", "train", "curriculum"):
        assert again.metrics[key] == full.metrics[key], key


def test_boost_follows_the_trigger_through_nodes_to_its_inputs(monkeypatch, tmp_path):
    _toy(monkeypatch)
    text = MEMORY.replace("output w\n", "output w\nnode level = 2.0 * vol\n").format(
        rule=_rule("    decay 0.5\n    boost 0.2\n").replace("when vol > 0.3", "when level > 0.6")
    )
    result = train.run(ddm.loads(text, file="rule.ddm"), _cfg(steps=1, log_every=1), str(tmp_path))
    assert result.metrics["params"]["rule_high_vol_memory"] > 0.5  # reinforced through level


def test_rules_off_holds_whichever_loss_is_chosen_after():
    import jax

    text = PROGRAM.format(rule=RULE) + "loss alt = -mean(pnl) + 1.0\n"
    prog = ddm.loads(text, file="rule.ddm")
    bare = ddm.loads(PROGRAM.format(rule="") + "loss alt = -mean(pnl) + 1.0\n", file="r.ddm")
    params = prog.init(jax.random.key(0))
    batch = {"vol": np.array([0.5, 0.1], np.float32), "r": np.array([1.0, 2.0], np.float32)}
    got = prog.without_rules().with_loss("alt").loss(params, batch)
    assert float(got) == pytest.approx(float(bare.with_loss("alt").loss(params, batch)))
    assert float(prog.with_loss("alt").loss(params, batch)) != pytest.approx(float(got))


def test_a_bare_name_sets_rules_off_in_the_run_section():
    from ddm.runtime.data import SOURCES

    prog = ddm.loads(PROGRAM.format(rule=RULE) + "run {\n    rules = off\n}\n", file="rule.ddm")
    cfg = RunConfig.defaults()
    cfg.apply_run_section(prog.graph.run, "")
    cfg.values["data"] = {"name": "credit_applicants"}
    assert cfg.validate(SOURCES).values["rules"] == "off"


def test_compare_rules_resumes_each_variant_from_its_checkpoint(monkeypatch, tmp_path):
    from ddm.runtime.compare import run_both

    _toy(monkeypatch)
    prog = ddm.loads(PROGRAM.format(rule=RULE), file="rule.ddm")
    # --no-plots (draw=False) reaches both variants; by default each draws its own pictures
    fresh = run_both(prog, _cfg(steps=30), str(tmp_path / "fresh"), draw=False)["comparison"]
    run_both(prog, _cfg(steps=20, checkpoint_every=10), str(tmp_path / "cut"))
    again = run_both(prog, _cfg(steps=30, checkpoint_every=10), str(tmp_path / "cut"), resume=True)[
        "comparison"
    ]
    for variant in ("pure_dp", "phi_guided"):
        assert again[variant]["test"] == fresh[variant]["test"]
        assert not list((tmp_path / "fresh" / variant).glob("*.png"))
        assert (tmp_path / "cut" / variant / "learning.png").exists()


def test_compare_rules_trains_pure_dp_and_phi_guided_from_one_seed(monkeypatch, tmp_path):
    from ddm.runtime.compare import run_both

    _toy(monkeypatch)
    prog = ddm.loads(PROGRAM.format(rule=RULE) + "metric gain = mean(pnl)\n", file="rule.ddm")
    cfg = _cfg(steps=40, eval_every=10, target={"name": "reach", "metric": "gain", "value": -10.0})
    both = run_both(prog, cfg, str(tmp_path))
    c = json.loads((tmp_path / "comparison.json").read_text())
    assert set(c) >= {"pure_dp", "phi_guided", "speedup", "variance_ratio"}
    # a target every run meets at once: reached at the first evaluation by both
    assert c["pure_dp"]["steps_to_target"] == c["phi_guided"]["steps_to_target"] == 10
    assert c["speedup"] == 1.0 and c["pure_dp"]["gradient_variance"] > 0
    assert both["runs"]["pure_dp"].metrics["config"]["rules"] == "off"
    assert both["runs"]["phi_guided"].metrics["config"]["diagnostics"] == "full"


def test_a_regime_trigger_by_gumbel_softmax_trains_with_the_runs_keys(monkeypatch, tmp_path):
    """Regime detection by Gumbel-softmax over learned regime logits: training draws noise from
    fold_in(fold_in(key(seed), 2), step), so the same seed gives the same bits and another
    seed other ones; evaluation is deterministic (softmax at the temperature)."""
    _toy(monkeypatch)
    text = PROGRAM.replace(
        "output w\n",
        """output w
param regime_net = linear(1, 2)
node regimes = gumbel_softmax(regime_net(stack([vol])), temperature=0.5)
""",
    ).format(rule=RULE.replace("when vol > 0.3", "when regimes[1]"))
    prog = ddm.loads(text, file="rule.ddm")
    runs = [
        train.run(prog, _cfg(seed=s), str(tmp_path / f"{s}-{k}"))
        for s, k in ((0, "a"), (0, "b"), (1, "a"))
    ]
    same = [np.asarray(r.params["regime_net"]["w0"]) for r in runs]
    np.testing.assert_array_equal(same[0], same[1])
    assert not np.array_equal(same[0], same[2])
    # the step's noise reaches the loss: with the run's key of step 1 it differs from the
    # deterministic loss at the same params
    import jax

    params = prog.init(jax.random.fold_in(jax.random.key(0), 0))
    batch = {k: np.asarray(v) for k, v in train.SOURCES["toy"].load().train.items()}
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 2), 0)
    assert float(prog.loss(params, batch, key=key)) != float(prog.loss(params, batch))
    # evaluation is the noise-free softmax, so two evaluations agree
    assert runs[0].metrics["test"] == train.run(prog, _cfg(seed=0), None).metrics["test"]


def test_a_nan_under_curriculum_is_located_on_the_batch_the_curriculum_drew(monkeypatch):
    x = np.linspace(0.1, 1.0, 64).astype(np.float32)
    data = Dataset({"x": x}, {"x": x})
    monkeypatch.setattr(train, "SOURCES", {"toy": Source("toy", (), lambda: data, "")})
    text = """input x: f32
param a: f32 = 1.0
node y = log(a * x)
rule big "x large" { when x > 0.5 penalty 0.0 * a }
loss = mean(a * x) + 0.0 * mean(y)
"""
    cfg = RunConfig.defaults()
    cfg.values.update(
        {
            "data": {"name": "toy"},
            "batch": 16,
            "steps": 50,
            "log_every": 10,
            "optimizer": {"name": "sgd", "lr": 2.0},
            "curriculum": {"name": "rules", "strength": 1.0, "every": 5},
        }
    )
    cfg.validate(train.SOURCES)
    with pytest.raises(DdmError) as err:  # a < 0 after one step: log of a negative
        train.run(ddm.loads(text, file="n.ddm"), cfg, None)
    assert "n.ddm:3:10" in str(err.value) and "first non-finite value is node 'y'" in str(err.value)


def as_arrays(batch):
    return {k: np.asarray(v) for k, v in batch.items()}
