"""Hedging in the language: simulated path sources, the hedge_pnl / trading_pnl / turnover
ops, and the zero-cost deep-hedging example against the Black–Scholes delta hedge."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ddm
from ddm.library.market import trading
from ddm.runtime.data import SOURCES

from conftest import EXAMPLES
from test_examples import ddmc


def test_path_sources_are_reproducible_and_keep_test_paths_apart():
    a = SOURCES["gbm_paths"].load(n_train=64, n_test=32, steps=10, days=10)
    b = SOURCES["gbm_paths"].load(n_train=64, n_test=32, steps=10, days=10)
    assert a.train["S"].shape == (64, 11) and a.train["tau"].shape == (64, 10)
    assert np.array_equal(a.train["S"], b.train["S"]) and np.array_equal(a.test["S"], b.test["S"])
    assert not np.array_equal(a.train["S"][:32], a.test["S"])
    assert np.all(a.train["S"][:, 0] == 100.0)
    np.testing.assert_allclose(a.train["tau"][0], (10 - np.arange(10)) / 365, rtol=1e-6)
    h = SOURCES["heston_paths"].load(n_train=8, n_test=8, steps=5)
    assert h.train["S"].shape == (8, 6) and np.all(np.isfinite(h.train["S"]))


PROGRAM = """
dim N = 3
input S: f32[4]
input h: f32[N]
node pnl = hedge_pnl(S, h, strike=100.0, cost=0.01, premium=2.0)
node gains = trading_pnl(S, h)
node traded = turnover(h)
output pnl, gains, traded
"""


def test_hedge_ops_compute_what_the_trading_library_does():
    prog = ddm.loads(PROGRAM, x64=True)
    S, h = np.array([100.0, 102.0, 99.0, 103.0]), np.array([0.5, 0.6, 0.2])
    out = prog.apply({}, S=S, h=h)
    want = trading.hedged_short_option_pnl(
        jnp.asarray(S),
        jnp.asarray(h),
        lambda s: trading.call_payoff(s, 100.0),
        2.0,
        proportional=0.01,
    )
    assert float(out["pnl"]) == pytest.approx(float(want))
    assert float(out["gains"]) == pytest.approx(0.5 * 2 - 0.6 * 3 + 0.2 * 4)
    assert float(out["traded"]) == pytest.approx(1.0)
    g = jax.grad(lambda h: prog.apply({}, S=S, h=h)["pnl"])(jnp.asarray(h))
    assert np.all(np.isfinite(np.asarray(g)))


def test_a_path_and_positions_of_mismatched_length_are_located():
    with pytest.raises(ddm.DdmError) as info:
        ddm.loads(
            "input S: f32[31]\ninput h: f32[29]\nnode p = hedge_pnl(S, h)\n", file="hedge.ddm"
        )
    text = str(info.value)
    assert "hedge.ddm:3:23" in text and "h needs 30 positions" in text


def test_hedge_call_example_smoke_run_approaches_the_delta_hedge(tmp_path):
    """The CI smoke configuration of the zero-cost case (loose: std ≤ 1.3 × delta's); the full
    run's figures are in the README's examples section."""
    r = ddmc(
        "train",
        str(EXAMPLES / "hedge_call.ddm"),
        "--out",
        str(tmp_path),
        "--set",
        "steps=300",
        "--set",
        "batch=1024",  # half the batch and the training set: net 1.15 × delta's std, band 1.00
        "--set",
        "data.n_train=4096",
        "--set",
        "data.n_test=8192",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert m["std_pnl"] <= 1.3 * m["std_delta"]
    assert m["entropic"] < 0.2 * m["entropic_none"]  # far better than not hedging
    assert m["mean_abs_gap_to_delta"] < 0.05


def test_lengths_known_only_from_the_data_are_checked_when_the_dims_are_bound():
    """Over symbolic dims the rule cannot relate N to M; once the data bind them, a mismatch
    is a located diagnostic, not an error from inside JAX."""
    prog = ddm.loads(
        "dim N\ndim M\ninput S: f32[N]\ninput h: f32[M]\nnode p = hedge_pnl(S, h)\noutput p\n",
        file="sym.ddm",
    )
    with pytest.raises(ddm.DdmError) as info:
        prog.apply({}, S=np.ones(5), h=np.ones(2))
    assert "sym.ddm:5:10" in str(info.value) and "h needs 4 positions" in str(info.value)
    assert float(prog.apply({}, S=np.ones(5), h=np.ones(4))["p"]) == 0.0


def test_deep_hedge_example_smoke_run_both_policies_approach_the_delta_hedge(tmp_path):
    """The CI smoke configuration of examples/deep_hedge.ddm at zero cost (loose: std ≤ 1.3 ×
    delta's): the recurrent net and the no-transaction band, trained by one run; the full grid
    is docs/results/deep_hedge.md."""
    r = ddmc(
        "train",
        str(EXAMPLES / "deep_hedge.ddm"),
        "--out",
        str(tmp_path),
        "--set",
        "data.cost=0",
        "--set",
        "steps=300",
        "--set",
        "batch=1024",  # half the batch and the training set: net 1.15 × delta's std, band 1.00
        "--set",
        "data.n_train=4096",
        "--set",
        "data.n_test=4096",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "metrics.json").read_text())
    m = out["test"]
    for policy in ("net", "band"):
        assert m[f"std__{policy}"] <= 1.3 * m["std__delta"], policy
        assert m[f"entropic__{policy}"] < 0.2 * m["entropic__none"], policy
    # the band's projection is an argmin inside the scan: every test solve converged
    (solves,) = out["solvers"].values()
    assert solves["status"] == {"converged": solves["instances"]}
    assert solves["instances"] == 4096 * 30
    assert "test set (train values in metrics.json)" in r.stdout  # the comparison table
