"""Every example compiles and runs end to end through the CLI, as a user would run it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import EXAMPLES, ROOT

DDMC = [sys.executable, "-m", "ddm.cli.main"]


def ddmc(*args, cwd=ROOT, timeout=600):
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        DDMC + list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.ddm")))
def test_every_example_checks(name):
    r = ddmc("check", str(EXAMPLES / name))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout


def test_credit_reaches_the_bayes_auc(tmp_path):
    """The acceptance run of the credit example: held-out AUC within 0.02 of Bayes-optimal."""
    r = ddmc("compile", str(EXAMPLES / "credit.ddm"), "--run", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    test = m["test"]
    assert test["auc_bayes"] - test["auc"] <= 0.02
    assert test["auc"] > test["auc_logistic"]  # the network sees the non-linearity
    assert 0.75 < test["accuracy"] < 0.9
    for name in ("auc", "auc_bayes", "auc_logistic", "accuracy", "loss"):
        assert name in r.stdout
    assert "compile: trace" in r.stdout
    assert (tmp_path / "params.npz").exists() and (tmp_path / "params.npz.sha256").exists()


@pytest.mark.parametrize(
    "name, klass",
    [
        ("hedge.ddm", 1),
        ("hedge_longonly.ddm", 2),
        # class 4 trains in the deep-hedge smoke test (its band is a prox argmin) and the
        # hedging experiment's reduced run; this one-minute run is in make test-slow
        pytest.param("sparse_hedge.ddm", 4, marks=pytest.mark.slow),
    ],
)
def test_hedge_short_run_reports_sharpe_beside_the_baselines(tmp_path, name, klass):
    """Each portfolio example says its decision's class, trains, and reports out-of-sample
    Sharpe beside equal weight and minimum variance, with every test solve converged."""
    r = ddmc("check", str(EXAMPLES / name))
    assert f"class {klass}" in r.stdout
    r = ddmc(
        "compile",
        str(EXAMPLES / name),
        "--run",
        "--out",
        str(tmp_path),
        "--set",
        "steps=20",
        "--set",
        "log_every=10",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert set(m["test"]) >= {"sharpe", "sharpe_equal_weight", "sharpe_min_variance", "loss"}
    assert all(np.isfinite(x) for x in m["test"].values())
    assert m["params"]["lam"] > 0
    assert m["data"]["test_dates"][0] >= "2016"
    for node, report in m["solvers"].items():
        assert report["status"] == {"converged": report["instances"]}, node
    assert m["skipped_steps"] == 0
    assert "sharpe_min_variance" in r.stdout and "test solves" in r.stdout


def test_same_seed_same_bits(tmp_path):
    """Two runs with the same seed and config write identical metrics.json files."""
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        r = ddmc(
            "compile",
            str(EXAMPLES / "credit.ddm"),
            "--run",
            "--out",
            str(out),
            "--set",
            "steps=200",
            "--set",
            "data.n_train=2000",
            "--set",
            "data.n_test=1000",
        )
        assert r.returncode == 0, r.stderr
        outs.append((out / "metrics.json").read_bytes())
        outs.append((out / "params.npz.sha256").read_bytes())
    assert outs[0] == outs[2] and outs[1] == outs[3]


def test_yaml_config_overrides_run_section(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "steps: 30\nbatch: 64\noptimizer: {name: sgd, lr: 0.1}\n"
        "data: {name: credit_applicants, n_train: 500, n_test: 300}\n"
    )
    r = ddmc(
        "compile",
        str(EXAMPLES / "credit.ddm"),
        "--run",
        "--config",
        str(cfg),
        "--out",
        str(tmp_path / "out"),
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["steps"] == 30 and m["config"]["optimizer"]["name"] == "sgd"
    assert m["config"]["data"]["n_train"] == 500


def test_bad_config_value_is_located_in_the_yaml(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("steps: 30\nbatch: -4\n")
    r = ddmc("compile", str(EXAMPLES / "credit.ddm"), "--run", "--config", str(cfg))
    assert r.returncode == 1
    assert f"{cfg}:2:8: error: 'batch' must be at least 1, got -4" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_set_value_is_located_in_the_argument():
    r = ddmc("compile", str(EXAMPLES / "credit.ddm"), "--run", "--set", "optimizer.lr=fast")
    assert r.returncode == 1
    assert "<--set 1>:1:14: error: 'optimizer.lr' must be a number, got 'fast'" in r.stderr
    assert "optimizer.lr=fast" in r.stderr and "^" in r.stderr


@pytest.mark.parametrize(
    "stage,needle", [("ir", "declarative"), ("jaxpr", "lambda"), ("hlo", "module")]
)
def test_emit_each_stage(stage, needle):
    r = ddmc("compile", str(EXAMPLES / "hedge.ddm"), "--emit", stage)
    assert r.returncode == 0, r.stderr
    assert needle in r.stdout


def test_emit_asks_for_unbound_dims(tmp_path):
    prog = tmp_path / "p.ddm"
    prog.write_text("dim N\ninput x: f32[N]\nnode y = 2 * x\noutput y\n")
    r = ddmc("compile", str(prog), "--emit", "jaxpr")
    assert r.returncode == 1 and "--dim N=SIZE" in r.stderr
    r = ddmc("compile", str(prog), "--emit", "jaxpr", "--dim", "N=3")
    assert r.returncode == 0 and "f32[3]" in r.stdout


def test_trading_compares_pure_dp_with_phi_guided_and_draws_the_diagram(tmp_path):
    """examples/trading.ddm: features → predictor → argmin (λ_risk, λ_cost) → regime market →
    smooth Sharpe, one Φ-rule and one guard; --run trains both variants from one seed."""
    r = ddmc(
        "compile",
        str(EXAMPLES / "trading.ddm"),
        "--run",
        "--out",
        str(tmp_path),
        "--set",
        "steps=50",
        "--set",
        "data.n_test=2000",
        "--set",
        "log_every=25",
    )
    assert r.returncode == 0, r.stderr
    for needle in (
        "pure DP vs Φ-guided",
        "steps to sharpe >= 1.0",
        "gradient variance",
        "compliance report: compliant",
        'rule calm_down "reduce position in high volatility"',
        "‖∂L/∂node‖",
        "wrote ",
    ):
        assert needle in r.stdout, needle
    c = json.loads((tmp_path / "comparison.json").read_text())
    for variant in ("pure_dp", "phi_guided"):
        m = json.loads((tmp_path / variant / "metrics.json").read_text())
        assert m["config"]["rules"] == ("off" if variant == "pure_dp" else "on")
        assert m["compliance"]["compliant"] and m["target"]["evaluated_every"] == 25
        assert c[variant]["gradient_variance"] > 0
        assert 0.5 < m["test"]["rule_precision"] <= 1  # the trigger finds turbulent windows
        assert m["test"]["guard_position_breach_rate"] == 0
    diagram = next(tmp_path.glob("diagram.*"))
    text = diagram.read_text()
    assert "rule calm_down" in text and "guard position" in text
