"""The Φ-only baseline (ddm.runtime.baselines.phi_only): its features, rule trigger and P&L are
trading.ddm's own; tuning by TPE is reproducible for a seed, never ends below its start on the
data it tunes on, and in a market where the rule is right (turbulent days have no drift) the
tuned rule beats the untuned one on fresh episodes; mistakes are clear errors, and a missing
optuna names the extra that installs it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ddm.runtime.baselines import phi_only as po

from conftest import EXAMPLES


def market(n: int, seed: int, N: int = 4, prices: bool = False):
    """trading.ddm's episodes in a market where calm_down is right: each episode is calm
    (drift 0.3 a year, volatility 0.12) or turbulent (no drift, volatility 0.45), a coin flip,
    over its 20-day window and its 5 held days alike. ``prices``: the program's inputs instead."""
    rng = np.random.default_rng(seed)
    turbulent = rng.random(n) < 0.5
    mu = np.where(turbulent, 0.0, 0.3)[:, None, None] / 252
    sd = np.where(turbulent, 0.45, 0.12)[:, None, None] / np.sqrt(252)
    r = mu + sd * rng.normal(size=(n, 25, N))
    P = np.concatenate([np.ones((n, 1, N)), np.cumprod(1 + r[:, :20], axis=1)], axis=1)
    w_prev = rng.uniform(-0.5, 0.5, (n, N))
    if prices:
        f32 = np.float32
        return {
            "P": P.astype(f32),
            "R": r[:, 20:].astype(f32),
            "w_prev": w_prev.astype(f32),
            "cost": np.full(n, 5e-4, f32),
            "regime": turbulent.astype(np.int32),
        }
    return po.episodes(P, r[:, 20:], w_prev, 5e-4)


@pytest.fixture(scope="module")
def program_values():
    """trading.ddm's own nodes on 64 episodes of :func:`market` (float32, as the program's
    inputs): (the inputs, {node: its values})."""
    import jax

    import ddm

    prog = ddm.load(str(EXAMPLES / "trading.ddm"))
    data = market(64, seed=0, prices=True)
    names = ("mom5", "mom20", "vol", "rule_calm_down_trigger", "w", "pnl")
    roots = tuple(prog.graph.nodes[k] for k in names)
    values, _ = jax.jit(prog.product.values, static_argnums=(2,))(
        prog.init(jax.random.key(0)), data, roots
    )
    return data, {k: np.asarray(values[prog.graph.nodes[k]], np.float64) for k in names}


def test_features_trigger_and_pnl_are_the_programs(program_values):
    data, v = program_values
    ep = po.episodes(data["P"], data["R"], data["w_prev"], data["cost"])
    for k in ("mom5", "mom20", "vol"):  # float32 in the program
        np.testing.assert_allclose(getattr(ep, k), v[k], rtol=1e-5, atol=1e-5)
    # bias 1, no trend, c = 1: w = 1 − calm_down's trigger σ(20·(market_vol − 0.3))
    flat_when_fired = po.Rule(bias=1.0, a=0.0, b=0.0, c=1.0, threshold=0.3, sharpness=20.0)
    np.testing.assert_allclose(
        po.positions(flat_when_fired, ep)[:, 0], 1.0 - v["rule_calm_down_trigger"], atol=1e-5
    )
    np.testing.assert_allclose(po.pnl(v["w"], ep), v["pnl"], rtol=1e-5, atol=1e-7)


def test_positions_follow_the_formula():
    ep = market(50, seed=1)
    rule = po.Rule(bias=0.1, a=0.3, b=-0.2, c=0.5, threshold=0.25, sharpness=7.0)
    s = 0.1 + (0.3 * ep.mom20 - 0.2 * ep.mom5) / ep.vol
    t = 1 / (1 + np.exp(-7.0 * (ep.vol.mean(1, keepdims=True) - 0.25)))
    np.testing.assert_allclose(po.positions(rule, ep), np.clip(s, -1, 1) * (1 - 0.5 * t))
    assert po.sharpe([1.0, 2.0, 3.0], periods=4) == pytest.approx(2.0 / np.sqrt(2 / 3) * 2)


def test_tuning_is_reproducible_for_a_seed():
    ep = market(400, seed=2)
    a, b = po.tune(ep, n_trials=25, seed=7), po.tune(ep, n_trials=25, seed=7)
    assert a.rule == b.rule and a.train_sharpe == b.train_sharpe
    assert po.tune(ep, n_trials=25, seed=8).rule != a.rule


def test_tuning_beats_its_start_where_the_rule_is_right():
    train, test = market(1500, seed=3), market(5000, seed=4)
    tuned = po.tune(train, n_trials=80, seed=0)
    assert tuned.train_sharpe >= tuned.start_sharpe  # the start is the first trial
    start_test = po.sharpe(po.pnl(po.positions(po.Rule(), test), test))
    tuned_test = po.sharpe(po.pnl(po.positions(tuned.rule, test), test))
    # the start half trusts noisy trends; the tuned rule learns "long when calm, flat otherwise"
    assert tuned_test > start_test + 0.3  # 1.49 → 2.01 here
    assert tuned.rule.c > 0.8
    assert 0.12 < tuned.rule.threshold < 0.45  # between the two regimes' volatilities


def test_a_validation_tail_selects_among_the_trials():
    ep = market(500, seed=5)
    t = po.tune(ep, n_trials=20, seed=0, validation=0.2)
    tail = ep.rows(slice(400, 500))
    assert t.validation_sharpe == po.sharpe(po.pnl(po.positions(t.rule, tail), tail))
    fit = ep.rows(slice(0, 400))
    assert t.train_sharpe == po.sharpe(po.pnl(po.positions(t.rule, fit), fit))
    assert po.tune(ep, n_trials=20, seed=0).validation_sharpe is None


def test_mistakes_are_clear_errors():
    ep = market(40, seed=6)
    P = np.ones((40, 21, 4))
    R, w = ep.R, ep.w_prev
    with pytest.raises(ValueError, match=r"P must be price windows \[n, 21, N\]"):
        po.episodes(P[:, :20], R, w, 0.0)
    with pytest.raises(ValueError, match=r"R must be held returns \[n, H, N\] = \[40, H, 4\]"):
        po.episodes(None, R[:39], w, 0.0, features=(ep.mom5, ep.mom20, ep.vol))
    with pytest.raises(ValueError, match=r"w_prev must be \[n, N\] = \[40, 4\], got \(40, 3\)"):
        po.episodes(None, R, w[:, :3], 0.0, features=(ep.mom5, ep.mom20, ep.vol))
    with pytest.raises(ValueError, match="mom5, mom20 and vol must be"):
        po.episodes(None, R, w, 0.0, features=(ep.mom5, ep.mom20[:, :3], ep.vol))
    with pytest.raises(ValueError, match=r"R has non-finite values \(NaN or ±inf\)"):
        po.episodes(None, np.where(R > 0, np.nan, R), w, 0.0, features=(ep.mom5, ep.mom20, ep.vol))
    with pytest.raises(ValueError, match="vol must be > 0"):
        po.episodes(P, R, w, 0.0)  # constant prices
    with pytest.raises(ValueError, match="too few samples: 40 episodes give 39 to tune on and 1"):
        po.tune(ep, validation=0.02)
    with pytest.raises(ValueError, match="too few samples"):
        po.tune(ep.rows(slice(0, 1)))
    with pytest.raises(ValueError, match="n_trials must be at least 1"):
        po.tune(ep, n_trials=0)
    with pytest.raises(ValueError, match="the start's threshold = 2.0 is outside"):
        po.tune(ep, start=po.Rule(threshold=2.0))


def test_a_missing_optuna_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna → ImportError
    with pytest.raises(ImportError, match=r"needs optuna.*pip install 'ddmc\[experiments\]'"):
        po.tune(market(40, seed=7))
