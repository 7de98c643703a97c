"""The example experiments' reduced configurations, run as CI runs them (`--reduced`): every
baseline kind, every ablation of trading.ddm, PPO and the DP optimum end to end, and the
scorecard filled — whatever the outcome, every row measured or said not to be."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _run(name: str, out: str) -> dict:
    path = os.path.join(ROOT, "examples", "experiments", f"{name}.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "ddm.cli.main", "experiment", path, "--reduced", "--out", out],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.load(open(os.path.join(out, "results.json")))


@pytest.mark.timeout(900)
def test_the_trading_experiment_compares_every_method_on_the_same_days(tmp_path):
    results = _run("trading", str(tmp_path / "out"))
    m = results["markets"]["default"]
    names = set(m["metrics"])
    assert names == {
        "e2e", "no_rules", "blocked_predictor", "raw_returns", "soft_guard", "fixed_risk",
        "equal_weight", "min_variance", "vol_target", "two_stage_ridge", "two_stage_gbt",
        "phi_only", "ppo",
    }  # fmt: skip
    assert len(m["comparisons"]) == 12
    card = m["scorecard"]
    for row in ("performance", "robustness", "gradient_health", "reproducibility"):
        assert card[row]["pass"] in (True, False), row
    assert card["phi_integration"]["value"] is not None
    assert card["hybrid_efficiency"]["note"].startswith("steps to target per seed")
    assert card["interpretability"]["pass"] is None  # no expert reference: not measured
    timing = json.load(open(tmp_path / "out" / "timing.json"))
    assert timing["markets.default.scorecard.latency"]["pass"] in (True, False)
    report = open(tmp_path / "out" / "report.md").read()
    assert "## Scorecard (e2e, market default)" in report and "Kill criteria" in report


@pytest.mark.slow  # its pieces run in test_experiment.py on a five-date hedge
@pytest.mark.timeout(900)
def test_the_hedging_experiment_reaches_the_dp_optimum_s_own_value(tmp_path):
    results = _run("hedging", str(tmp_path / "out"))
    m = results["markets"]["bs_cost1e-3"]
    dp = m["baselines"]["dp"]
    # the DP policy simulated on the test paths agrees with its computed optimum
    assert abs(dp["simulated_risk"] - dp["computed_risk"]) < 4 * dp["simulated_se"]
    hyp = [c for c in m["comparisons"] if "within" in c]
    assert {(c["method"], c["within"]) for c in hyp} == {("band", 0.005), ("net", 0.01)}
    assert set(m["metrics"]) == {"net", "band", "delta", "whalley_wilmott", "dp", "ppo"}
    assert m["curves"]["ppo"][0][-1]["step"] > 0
