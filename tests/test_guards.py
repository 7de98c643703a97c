"""Guardrails: ``guard NAME "intent" on X { limit … action project|reject fallback … }`` — hard
limits on a decision, enforced where it is made (everything downstream sees the enforced
value), counted on every training step and reported per run (compliance.json)."""

import contextlib
import json

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ddm
from ddm.dsl.diagnostics import DdmError
from ddm.dsl.format import format_source
from ddm.library.guards import _keep_largest, _project_l1, _project_l2
from ddm.runtime import train
from ddm.runtime.config import RunConfig
from ddm.runtime.data import Dataset, Source

CHAIN = """dim N = 3
input x: f32[N]
input p: f32[N]
node w = 3.0 * x
guard pos "at most one unit per asset" on w { limit abs(w) <= 1.0  action project }
guard gross "gross exposure at most 2" on w { limit sum(abs(w)) <= 2.0 action project }
guard turn "turnover at most 0.5" on w { limit sum(abs(w - p)) <= 0.5 action project }
guard few "at most 2 trades" on w { limit nonzero(w - p) <= 2 action project }
output w
loss = mean(sum(w ** 2))
"""


@contextlib.contextmanager
def _x64():
    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def _apply(text, **inputs):
    prog = ddm.loads(text, file="g.ddm")
    arrays = {k: np.asarray(v, np.float32) for k, v in inputs.items()}
    return prog, prog.apply_batch({}, **arrays), prog.metrics({}, arrays)


def test_guards_on_one_decision_apply_in_program_order_and_everything_downstream_sees_the_result():
    x = [[0.1, -0.5, 0.9], [0.0, 0.0, 0.01]]
    prog, out, m = _apply(CHAIN, x=x, p=np.zeros((2, 3)))
    # row 0: 3x = (0.3, -1.5, 2.7) → clip (0.3, -1, 1) → L1 ball of 2: θ = 0.1 → (0.2, -0.9, 0.9)
    #        → turnover 0.5 around p = 0: θ = 0.65 → (0, -0.25, 0.25): two trades, kept
    np.testing.assert_allclose(out["w"][0], [0.0, -0.25, 0.25], atol=1e-6)
    np.testing.assert_allclose(out["w"][1], [0.0, 0.0, 0.03], atol=1e-6)
    assert m["guard_pos_violation_rate"] == 0.5 and m["guard_gross_violation_rate"] == 0.5
    assert m["guard_turn_violation_rate"] == 0.5 and m["guard_few_violation_rate"] == 0.0
    for g in ("pos", "gross", "turn", "few"):  # the final decision meets every limit
        assert m[f"guard_{g}_breach_rate"] == 0.0
    # the loss sums the enforced decisions of the batch (sum over [B, N] in the loss)
    np.testing.assert_allclose(m["loss"], np.sum(np.asarray(out["w"]) ** 2), rtol=1e-6)
    assert [g.name for g in prog.graph.guards] == ["pos", "gross", "turn", "few"]
    assert prog.graph.guards[2].limit == "sum(abs(w - p)) <= 0.5"


@pytest.mark.parametrize(
    "limit, x, want",
    [
        ("w <= 0.5", [1.0, 0.2, -3.0], [0.5, 0.2, -3.0]),
        ("w >= -0.5", [1.0, 0.2, -3.0], [1.0, 0.2, -0.5]),
        ("abs(w - p) <= 0.1", [1.0, 0.2, -3.0], [0.6, 0.3, 0.4]),
        ("norm(w) <= 1.0", [3.0, 0.0, 4.0], [0.6, 0.0, 0.8]),
        ("norm(w - p) <= 1.0", [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ("nonzero(w) <= 1", [1.0, -2.0, 0.5], [0.0, -2.0, 0.0]),
    ],
)
def test_each_limit_form_projects_onto_its_nearest_feasible_point(limit, x, want):
    text = (
        "dim N = 3\ninput x: f32[N]\ninput p: f32[N]\nnode w = x\n"
        f'guard g "limit" on w {{ limit {limit} action project }}\noutput w\n'
        "loss = mean(sum(w))\n"
    )
    p = np.array([[0.5, 0.4, 0.5]], np.float32)
    _, out, m = _apply(text, x=[x], p=p)
    np.testing.assert_allclose(out["w"][0], want, atol=1e-6)
    assert m["guard_g_breach_rate"] == 0.0


def test_reject_replaces_a_breaking_decision_by_its_fallback_and_keeps_the_others():
    budget = (
        'guard budget "risk budget" on w { limit sum(w ** 2) <= 1.0 action reject fallback keep }\n'
    )
    text = (
        "dim N = 2\ninput x: f32[N]\ninput keep: f32[N]\nnode w = x\n"
        + budget
        + "{more}output w\nloss = mean(sum(w ** 2))\n"
    )
    x = [[0.3, 0.4], [3.0, 4.0], [30.0, 40.0]]
    keep = [[9.0, 9.0], [0.1, 0.2], [7.0, 7.0]]
    _, out, m = _apply(text.replace("{more}", ""), x=x, keep=keep)
    np.testing.assert_allclose(out["w"], [[0.3, 0.4], [0.1, 0.2], [7.0, 7.0]])
    assert m["guard_budget_violation_rate"] == pytest.approx(2 / 3)
    # the fallback (7, 7) itself breaks the budget: the report says so instead of hiding it
    assert m["guard_budget_breach_rate"] == pytest.approx(1 / 3)
    # a second guard without a fallback goes flat where the first one's fallback failed
    flat = (
        'guard flat "flat when the fallback is too big" on w '
        "{ limit norm(w) <= 5.0 action reject }\n"
    )
    _, out, m = _apply(text.replace("{more}", flat), x=x, keep=keep)
    np.testing.assert_allclose(out["w"], [[0.3, 0.4], [0.1, 0.2], [0.0, 0.0]])
    assert m["guard_flat_violation_rate"] == pytest.approx(1 / 3)
    assert m["guard_budget_breach_rate"] == 0.0  # re-checked on the final decision


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=1, max_size=8), st.floats(0.05, 6))
def test_l1_projection_is_the_nearest_point_of_the_ball(x, radius):
    x = np.asarray(x, np.float64)
    with _x64():
        y = np.asarray(_project_l1(jax.numpy.asarray(x), radius))
    assert np.sum(np.abs(y)) <= radius * (1 + 1e-9) + 1e-12
    if np.sum(np.abs(x)) <= radius:
        np.testing.assert_array_equal(y, x)
        return
    # optimality: y = soft-threshold(x, θ) for one θ ≥ 0, on the boundary
    assert np.sum(np.abs(y)) == pytest.approx(radius, rel=1e-9)
    theta = np.max(np.abs(x) - np.abs(y))
    np.testing.assert_allclose(y, np.sign(x) * np.maximum(np.abs(x) - theta, 0), atol=1e-9)
    # and no random feasible point is nearer
    rng = np.random.default_rng(0)
    for _ in range(50):
        z = rng.normal(size=x.size)
        z *= radius / max(np.sum(np.abs(z)), 1e-12) * rng.uniform(0, 1)
        assert np.sum((z - x) ** 2) >= np.sum((y - x) ** 2) - 1e-9


def test_projections_of_the_other_forms():
    np.testing.assert_allclose(_project_l2(np.array([3.0, 4.0]), 1.0), [0.6, 0.8])
    np.testing.assert_allclose(_project_l2(np.array([0.3, 0.4]), 1.0), [0.3, 0.4])
    np.testing.assert_allclose(
        _keep_largest(np.array([1.0, -3.0, 2.0, 0.5]), 2), [0.0, -3.0, 2.0, 0.0]
    )
    np.testing.assert_allclose(_keep_largest(np.array([1.0, 2.0]), 5), [1.0, 2.0])


def test_the_gradient_flows_through_a_projection_where_the_limit_is_active():
    text = """dim N = 3
input x: f32[N]
param a: f32 = 0.7
node w = a * x
guard gross "gross at most 1" on w { limit sum(abs(w)) <= 1.0 action project }
output w
loss = mean(sum(w * x))
"""
    with _x64():
        prog = ddm.loads(text, file="g.ddm", x64=True)
        params = prog.init(jax.random.key(0))
        x = np.array([[0.5, -1.0, 2.0]])
        g = jax.grad(prog.loss)(params, {"x": x})["a"]
        eps = 1e-6
        up = prog.loss({"a": params["a"] + eps}, {"x": x})
        down = prog.loss({"a": params["a"] - eps}, {"x": x})
        np.testing.assert_allclose(g, (up - down) / (2 * eps), rtol=1e-6)
        # by hand: two assets stay active, θ = (3a − 1)/2, w = (0, θ − a, 2a − θ), dL/da = 0.5
        np.testing.assert_allclose(g, 0.5, rtol=1e-9)


@pytest.mark.parametrize(
    "guard, where, message",
    [
        (
            'guard a "i" on w { limit w ** 2 <= 1.0 action project }',
            "4:26",
            "guard 'a' cannot project onto this limit",
        ),
        (
            'guard a "i" on x { limit abs(x) <= 1.0 action project }',
            "4:16",
            "'x' is an input: a guard limits a decision",
        ),
        (
            'guard a "i" on zz { limit abs(w) <= 1.0 action project }',
            "4:16",
            "there is no node 'zz'",
        ),
        (
            'guard a "i" on w { limit abs(w) <= w action project }',
            "4:36",
            "the bound of guard 'a' depends on the decision 'w'",
        ),
        (
            'guard a "i" on w { limit abs(x) <= 1.0 action project }',
            "4:26",
            "does not mention the decision 'w'",
        ),
        (
            'guard a "i" on w { limit abs(w) <= 1.0 action clamp }',
            "4:47",
            "a guard's action is 'project' or 'reject'",
        ),
        ('guard a "i" on w { limit abs(w) <= 1.0 }', "4:7", "guard 'a' needs 'action'"),
        (
            'guard a "i" on w { limit abs(w) <= 1.0 action project fallback 0.0 }',
            "4:55",
            "only 'action reject' takes a fallback",
        ),
        (
            'guard a "i" on w { limit nonzero(w) <= 1.5 action project }',
            "4:40",
            "takes an integer k",
        ),
        (
            'guard a "i" on w { limit abs(w) == 1.0 action project }',
            "4:26",
            "a guard's limit is a comparison",
        ),
        (
            'guard a "i" on w { limit abs(w) <= 1.0 action reject fallback w }',
            "4:63",
            "the fallback of guard 'a' depends on the decision 'w'",
        ),
        (
            'guard a "i" on w { limit abs(w) <= 1.0 action project tol 1.0 }',
            "4:55",
            "guard 'a' has no entry 'tol'",
        ),
        (
            'guard a "i" on w { limit sum(abs(w)) <= 1.0 action project }\n'
            'guard a "i" on w { limit abs(w) <= 1.0 action project }',
            "5:7",
            "guard 'a' is declared twice",
        ),
    ],
)
def test_a_mistaken_guard_is_a_located_error(guard, where, message):
    text = f"dim N = 3\ninput x: f32[N]\nnode w = 3.0 * x\n{guard}\nloss = mean(sum(w))\n"
    with pytest.raises(DdmError) as err:
        ddm.loads(text, file="e.ddm")
    rendered = str(err.value)
    assert f"e.ddm:{where}: error: {message}" in rendered.splitlines()[0] or (
        f"e.ddm:{where}" in rendered and message in rendered
    ), rendered


def test_a_guard_round_trips_through_the_formatter():
    text = (
        "dim N = 3\ninput x: f32[N]\nnode w = x\n"
        'guard g "at most one" on w {\n    limit abs(w) <= 1.0\n    action project\n}\n'
        "loss = mean(sum(w))\n"
    )
    assert format_source(text) == text


def _source(monkeypatch, n=512):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    r = (0.1 + rng.normal(size=(n, 3))).astype(np.float32)
    data = Dataset({"x": x, "r": r}, {"x": x[:256], "r": r[:256]})
    monkeypatch.setattr(train, "SOURCES", {"toy": Source("toy", (), lambda: data, "")})
    return data


PROGRAM = """dim N = 3
input x: f32[N]
input r: f32[N]
param net = mlp(N, 8, N)
node w = 2.0 * net(x)
guard gross "gross exposure at most 1" on w { limit sum(abs(w)) <= 1.0 action project }
node pnl = dot(w, r)
output w
loss = -mean(pnl) + 0.1 * var(pnl)
"""


def _config(**extra):
    cfg = RunConfig.defaults()
    cfg.values.update(
        {
            "data": {"name": "toy"},
            "batch": 64,
            "steps": 40,
            "log_every": 10,
            "optimizer": {"name": "adam", "lr": 0.01},
            **extra,
        }
    )
    return cfg


def test_training_counts_every_check_and_the_run_writes_a_compliance_report(monkeypatch, tmp_path):
    data = _source(monkeypatch)
    cfg = _config()
    cfg.validate(train.SOURCES)
    prog = ddm.loads(PROGRAM, file="g.ddm")
    result = train.run(prog, cfg, str(tmp_path))
    report = json.loads((tmp_path / "compliance.json").read_text())
    assert report == result.metrics["compliance"] and report["compliant"]
    (entry,) = report["guards"]
    assert entry["guard"] == "gross" and entry["action"] == "project"
    assert entry["limit"] == "sum(abs(w)) <= 1.0"
    assert entry["train"]["checks"] == 40 * 64
    # the test set's count, by hand, from the raw decision (the node before the guard)
    raw, _ = prog.product.values(
        result.params,
        {k: np.asarray(v) for k, v in data.test.items()},
        (prog.graph.nodes["w_before_gross"],),
    )
    raw = np.asarray(next(iter(raw.values())))
    assert entry["test"]["violations"] == int(np.sum(np.sum(np.abs(raw), 1) > 1.0 + 1e-5))
    assert entry["test"]["violations"] > 0 and entry["test"]["breaches_after_enforcement"] == 0
    w = np.asarray(prog.apply_batch(result.params, x=data.test["x"], r=data.test["r"])["w"])
    assert np.all(np.sum(np.abs(w), 1) <= 1.0 + 1e-5)
    logged = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    counts = [line["guard_violations"]["gross"] for line in logged if "guard_violations" in line]
    assert counts == sorted(counts) and counts[-1] == entry["train"]["violations"] > 0


def test_guard_counts_survive_resume_bit_for_bit(monkeypatch, tmp_path):
    _source(monkeypatch)
    prog = ddm.loads(PROGRAM, file="g.ddm")
    whole = _config()
    whole.validate(train.SOURCES)
    full = train.run(prog, whole, str(tmp_path / "full"))
    first = _config(steps=20, checkpoint_every=10)
    first.validate(train.SOURCES)
    train.run(prog, first, str(tmp_path / "cut"))
    rest = _config(checkpoint_every=10)
    rest.validate(train.SOURCES)
    # resuming may extend the steps of a run without a schedule
    resumed = train.run(prog, rest, str(tmp_path / "cut"), resume=True)
    assert resumed.metrics["compliance"] == full.metrics["compliance"]


def test_a_guard_beside_named_losses_checks_and_guards_every_loss():
    text = CHAIN.replace(
        "loss = mean(sum(w ** 2))\n", "loss alt = mean(sum(w))\nloss = mean(sum(w ** 2))\n"
    )
    prog = ddm.loads(text, file="g.ddm")
    x = np.array([[0.1, -0.5, 0.9]], np.float32)
    both = {"x": x, "p": np.zeros((1, 3), np.float32)}
    assert float(prog.with_loss("alt").loss({}, both)) == pytest.approx(0.0, abs=1e-6)


def test_a_zero_radius_and_a_zero_vector_are_projected_exactly_and_differentiably():
    np.testing.assert_array_equal(_project_l1(np.array([1.0, -2.0]), 0.0), [0.0, 0.0])
    g = jax.grad(lambda x: _project_l2(x, 1.0).sum())(jax.numpy.zeros(3))
    assert np.all(np.isfinite(np.asarray(g)))
    text = (
        "dim N = 2\ninput x: f32[N]\ninput p: f32[N]\nnode w = x\n"
        'guard still "no turnover" on w { limit sum(abs(w - p)) <= 0.0 action project }\n'
        "output w\nloss = mean(sum(w))\n"
    )
    _, out, m = _apply(text, x=[[1.0, 2.0]], p=[[0.5, 0.5]])
    np.testing.assert_allclose(out["w"], [[0.5, 0.5]])
    assert m["guard_still_breach_rate"] == 0.0


def test_a_guard_on_a_scan_is_refused_with_where_to_limit_instead():
    text = (
        "dim N = 3\ninput x: f32[N]\n"
        "node h = scan t in N, prev: f32 = 0.0 { return prev + x[t] }\n"
        'guard g "cap" on h { limit abs(h) <= 1.0 action project }\n'
        "loss = mean(sum(h))\n"
    )
    with pytest.raises(DdmError) as err:
        ddm.loads(text, file="s.ddm")
    assert "s.ddm:4:18" in str(err.value) and "a scan" in str(err.value)
