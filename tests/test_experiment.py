"""``ddmc experiment``: the experiment file, paired per-path results, resume, seeds trained
together, and what the report computes (docs/experiments.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ddm.runtime import stats
from ddm.runtime.experiment import analysis, experiment, spec

HERE = os.path.join(os.path.dirname(__file__), "experiment")
EXP = os.path.join(HERE, "hedge5.yaml")


def _copy(tmp_path) -> str:
    for name in os.listdir(HERE):
        shutil.copy(os.path.join(HERE, name), tmp_path / name)
    return str(tmp_path / "hedge5.yaml")


def _ddmc(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "ddm.cli.main", *args], capture_output=True, text=True, cwd=cwd
    )


# --- the experiment file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, message, line",
    [
        (("methods:", "method:"), "unknown experiment key 'method'", None),
        (("seeds: 2", "seeds: -1"), "'seeds' is a count", 2),
        (("against: [delta, ww, ppo]", "against: [delat, ww, ppo]"), "did you mean 'delta'", 17),
        (("stat: sharpe", "stat: sharp"), "unknown stat 'sharp'", None),
        (("kind: whalley_wilmott", "kind: whaley_wilmott"), "did you mean 'whalley_wilmott'", None),
        (("resamples: 300", "resamples: 10"), "resamples must be at least 100", None),
        (("program: hedge5.ddm", "program: missing.ddm"), "no such program", 1),
        (("delta: {node: pnl_delta}", "delta:"), "baseline 'delta' names no kind", 9),
        (("against: [delta, ww, ppo]", "against: 3"), "is a name or a list of names", 17),
        (("- {method: net, against: [delta, ww, ppo]}", "- {method: net}"), "'against'", 17),
        (("net: {output: pnl}", "net: {output: pnl}\n  net: {output: pnl}"), "given twice", 8),
        (("stat: entropic_risk,", "stat: entropic_risk, risk_aversoin: 2,"), "did you mean", 14),
        (("performance: {against: delta}", "performance: delta"), "must be a mapping", None),
        (("performance: {against: delta}", "performance: {against: dleta}"), "dleta", None),
        (("resamples: 300", "resamples: 300, effect: 0"), "effect must be positive", None),
    ],
)
def test_a_mistake_in_the_experiment_file_is_located_with_a_caret(tmp_path, edit, message, line):
    from ddm.runtime.errors import ConfigDiagnostic

    path = _copy(tmp_path)
    text = open(path).read()
    assert edit[0] in text
    open(path, "w").write(text.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigDiagnostic) as caught:
        spec.load(path)
    shown = str(caught.value)
    assert message in shown
    first = shown.splitlines()[0]
    assert first.startswith(path + ":") and ": error: " in first
    if line is not None:
        assert first.split(":")[1] == str(line)
    assert "^" in shown


def test_ddmc_experiment_reports_a_mistake_with_exit_1_and_no_traceback(tmp_path):
    path = _copy(tmp_path)
    text = open(path).read()
    open(path, "w").write(text.replace("methods:", "method:"))
    done = _ddmc("experiment", path, "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{path}:6:1: error: unknown experiment key 'method'")
    assert "did you mean 'methods'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "edit, message, where",
    [
        # a method's settings, the reduced section's, a market's data keyword, a value
        (("net: {output: pnl}", "net: {output: pnl, settings: {stpes: 3}}"),
         "unknown run setting 'stpes'", (7, 33)),
        (("settings: {steps: 5}", "settings: {steps: 5, n_train: 9}"),
         "unknown run setting 'n_train'", (27, 42)),
        (("cost1e-3: {cost: 0.001}", "cost1e-3: {cost: 0.001, n_trian: 9}"),
         "gbm_paths has no setting 'n_trian'", (4, 13)),
        (("net: {output: pnl}", "net: {output: pnl, settings: {steps: -3}}"),
         "'steps' must be at least 1, got -3", (7, 40)),
    ],
)  # fmt: skip
def test_ddmc_check_locates_a_run_setting_of_the_experiment_in_its_file(tmp_path, edit, message,
                                                                          where):  # fmt: skip
    """Settings and data keywords are checked as each market's and method's run will take
    them — by ``ddmc check`` too, for the full and the reduced run."""
    path = _copy(tmp_path)
    text = open(path).read()
    assert edit[0] in text
    open(path, "w").write(text.replace(edit[0], edit[1], 1))
    done = _ddmc("check", path)
    assert done.returncode == 1, done.stdout
    first = done.stderr.splitlines()[0]
    assert first == f"{path}:{where[0]}:{where[1]}: error: {message}", done.stderr
    assert "^" in done.stderr and "Traceback" not in done.stderr


def test_reduced_overrides_the_file_and_must_exist(tmp_path):
    exp = spec.load(EXP, reduced=True)
    assert exp.seeds == (0,) and exp.settings["steps"] == 5
    path = _copy(tmp_path)
    text = open(path).read().split("reduced:")[0]
    open(path, "w").write(text)
    with pytest.raises(Exception, match="no 'reduced' section"):
        spec.load(path, reduced=True)


def test_methods_with_the_same_variant_share_their_training():
    exp = spec.load(EXP)
    (net,) = exp.methods
    assert net.group == spec.Method("other", "pnl_delta").group
    assert net.group != spec.Method("x", "pnl", variant={"freeze": ["phi"]}).group


# --- statistics of per-path values --------------------------------------------------------------


def test_a_comparison_is_the_paired_difference_oriented_so_that_positive_is_better():
    rng = np.random.default_rng(0)
    b = rng.normal(0.0, 1.0, (1, 400))
    a = b + 0.3 + rng.normal(0.0, 0.5, (2, 400))  # two seeds, better by 0.3 on every path
    settings = {**{k: d for k, (_, d) in spec.STATISTICS.items()}, "resamples": 500}
    mean = spec.Metric("mean", "mean", "higher")
    c = analysis.compare(spec.Comparison("a", "b", "mean"), mean, a, b, settings, 0)
    assert c["delta"] == pytest.approx(np.mean(a) - np.mean(b))
    assert c["ci"][0] < c["delta"] < c["ci"][1] and c["ci"][0] > 0
    # the effect size: the paired g of each trained run against the baseline, averaged
    per_run = [stats.hedges_g(run, b[0], paired=True) for run in a]
    assert c["hedges_g"] == pytest.approx(np.mean(per_run))
    # on a Sharpe metric, g standardises the Sharpe difference: per-path values over their sd
    sharpe = spec.Metric("sharpe", "sharpe", "higher")
    e = analysis.compare(spec.Comparison("a", "b", "sharpe"), sharpe, a, b, settings, 0)
    scaled = [stats.hedges_g(r / r.std(), b[0] / b[0].std(), paired=True) for r in a]
    assert e["hedges_g"] == pytest.approx(np.mean(scaled))
    assert np.sign(e["hedges_g"]) == np.sign(e["delta"])
    # "lower is better": the same data, the sign flips so that Δ > 0 still means better
    low = spec.Metric("mean", "mean", "lower")
    d = analysis.compare(spec.Comparison("a", "b", "mean"), low, a, b, settings, 0)
    assert d["delta"] == pytest.approx(-c["delta"])
    assert d["p_value"] == c["p_value"]
    assert c["power"] == pytest.approx(stats.power(0.3, 400))


def test_every_metric_matches_its_textbook_definition():
    x = np.array([[0.5, -1.0, 2.0, 0.25, -0.5, 1.5, 0.0, -2.0]])
    m = lambda stat, **a: analysis.metric_value(spec.Metric("m", stat, "higher", a), x)["value"]  # noqa: E731
    assert m("mean") == pytest.approx(x.mean())
    assert m("std") == pytest.approx(x.std(ddof=1))
    assert m("entropic_risk", risk_aversion=2.0) == pytest.approx(
        np.log(np.mean(np.exp(-2 * x))) / 2
    )
    assert m("expected_shortfall", level=0.25) == pytest.approx(1.5)  # worst two: −2, −1
    # the Sharpe ratio as the language's sharpe op computes it: population sd
    assert m("sharpe", periods=4) == pytest.approx(2 * x.mean() / x.std())


# --- running an experiment ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The reduced hedging experiment, run once for the tests below — in a process switched to
    float64, as an earlier test may leave it: a float32 experiment computes in float32 all the
    same, so ``ddmc`` resuming it in a fresh process gives the same bits (the resume test)."""
    import jax

    folder = tmp_path_factory.mktemp("experiment")
    path = _copy(folder)
    out = str(folder / "out")
    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    try:
        results = experiment(path, out, figures=True)
    finally:
        jax.config.update("jax_enable_x64", before)
    return path, out, results


def test_every_method_is_evaluated_on_the_same_test_paths_and_kept_per_path(finished):
    path, out, results = finished
    m = results["markets"]["cost1e-3"]
    with np.load(os.path.join(out, "cost1e-3", "paths.npz")) as z:
        assert z["net"].shape == (2, 1024)  # two seeds × the test paths
        assert z["delta"].shape == z["ww"].shape == z["dp"].shape == z["ppo"].shape == (1, 1024)
        vol_regimes = z["_regime"]
    assert np.bincount(vol_regimes).tolist() == m["regimes"]["paths"] == [256, 512, 205, 51]
    # the DP optimum simulated on the test paths agrees with its computed value
    dp = m["baselines"]["dp"]
    assert abs(dp["z"]) < 4
    # every comparison carries its interval, effect size, BH-adjusted p and power
    assert len(m["comparisons"]) == 7  # 3 baselines × 2 metrics, and the hypothesis
    for c in m["comparisons"]:
        assert c["ci"][0] <= c["delta"] <= c["ci"][1]
        assert 0 < c["p_adjusted"] <= 1 and c["p_adjusted"] >= c["p_value"] - 1e-15
    (hyp,) = [c for c in m["comparisons"] if "within" in c]
    assert hyp["holds"] == (hyp["ci"][0] >= -0.5)  # decided on the interval
    # Benjamini–Hochberg runs over every market's comparisons together
    other = results["markets"]["cost0"]
    assert len(other["comparisons"]) == 5  # ww skipped at cost 0: 2 baselines × 2 + 1
    assert "ww" not in other["metrics"]
    ps = [c["p_value"] for r in results["markets"].values() for c in r["comparisons"]]
    adjusted = stats.benjamini_hochberg(ps).adjusted
    got = [c["p_adjusted"] for r in results["markets"].values() for c in r["comparisons"]]
    assert got == pytest.approx(list(adjusted))
    timing = json.load(open(os.path.join(out, "timing.json")))
    assert all(how.startswith("vmapped") for how in timing["markets.cost1e-3.training"].values())
    # the landscape over seeds: losses, param angles, output distances, gradient noise
    (land,) = m["landscape"].values()
    assert len(land["final_losses"]) == len(land["gradient_variance"]) == 2
    assert 0 <= land["param_angle_mean"] <= np.pi and 0 <= land["fisher_rao_mean"] <= np.pi
    assert all(v > 0 for v in land["gradient_variance"])


def test_the_report_fills_the_scorecard_from_the_results(finished):
    path, out, results = finished
    card = results["markets"]["cost1e-3"]["scorecard"]
    assert card["reproducibility"]["pass"] is True
    assert card["gradient_health"]["value"] is not None
    assert card["interpretability"]["pass"] is None  # not configured: not measured, not passed
    assert "latency" not in card  # a clock reading: in timing.json, not results.json
    timing = json.load(open(os.path.join(out, "timing.json")))
    assert timing["markets.cost1e-3.scorecard.latency"]["pass"] in (True, False)
    assert results["markets"]["cost1e-3"]["curves"]["ppo"][0][-1]["step"] > 0
    report = open(os.path.join(out, "report.md")).read()
    perf = card["performance"]
    assert f"{perf['value']:.4g}" in report  # formatted from the results, not typed
    assert ("**pass**" if perf["pass"] else "**fail**") in report.split("| performance |")[1]
    for name in ("learning_curves", "gradient_norms", "effect_sizes", "pnl", "pnl_by_regime"):
        for market in ("cost1e-3", "cost0"):
            assert os.path.getsize(os.path.join(out, "figures", f"{name}_{market}.png")) > 1000


def test_the_same_experiment_and_seed_twice_give_identical_results(finished, tmp_path):
    path, out, _ = finished
    again = str(tmp_path / "again")
    experiment(path, again, figures=False)
    first = open(os.path.join(out, "results.json"), "rb").read()
    assert open(os.path.join(again, "results.json"), "rb").read() == first


def test_resume_reads_finished_work_back_and_refuses_another_experiment(finished, tmp_path):
    path, out, _ = finished
    copy = str(tmp_path / "copy")
    shutil.copytree(out, copy)
    os.remove(os.path.join(copy, "cost1e-3", "baselines", "dp.npz"))  # interrupted before dp
    os.remove(os.path.join(copy, "results.json"))
    done = _ddmc("experiment", path, "--out", copy, "--no-figures")
    assert done.returncode == 1 and "--resume" in done.stderr
    done = _ddmc("experiment", path, "--out", copy, "--resume", "--no-figures")
    assert done.returncode == 0, done.stderr
    assert "seeds [0, 1] read back" in done.stderr and "training seeds" not in done.stderr
    assert (
        "baseline delta: read back" in done.stderr
        and done.stderr.count("baseline dp: read back") == 1  # cost0's
    )
    resumed = json.load(open(os.path.join(copy, "results.json")))
    first = json.load(open(os.path.join(out, "results.json")))
    assert resumed.pop("command").startswith("ddmc experiment")  # the CLI's; first: the API's
    first.pop("command")
    assert resumed == first  # the same bits: read back, never retrained

    # a group with a seed missing is trained again as a whole, as the same group: same bits
    (group,) = os.listdir(os.path.join(copy, "cost1e-3", "runs"))
    shutil.rmtree(os.path.join(copy, "cost1e-3", "runs", group, "seed1"))
    done = _ddmc("experiment", path, "--out", copy, "--resume", "--no-figures")
    assert done.returncode == 0 and "training seeds [0, 1]" in done.stderr
    again = json.load(open(os.path.join(copy, "results.json")))
    again.pop("command")
    assert again == first

    # statistics are recomputed on a resume; what trained the saved results must not change
    text = open(path).read()
    open(path, "w").write(text.replace("resamples: 300", "resamples: 400"))
    done = _ddmc("experiment", path, "--out", copy, "--resume", "--no-figures")
    assert done.returncode == 0, done.stderr
    open(path, "w").write(text.replace("seeds: 2", "seeds: 3"))
    done = _ddmc("experiment", path, "--out", copy, "--resume", "--no-figures")
    assert done.returncode == 1 and "changed: seeds" in done.stderr
    open(path, "w").write(text)


def test_seeds_trained_together_match_seeds_trained_one_by_one(float64):
    import jax

    from ddm.runtime import train as training
    from ddm.runtime.experiment import run as running
    from ddm.runtime.experiment import seeds as seeding
    from ddm.runtime.program import load

    exp = spec.load(EXP, reduced=True)
    prog = load(exp.program, x64=True)
    cfg = running.config_for(exp, prog, {"n_train": 512, "n_test": 64})
    data = training.load_data(prog, cfg)
    together = seeding.train_vmapped(prog, cfg, data, [3, 7])
    for run in together:
        alone = seeding.train_sequential(prog, cfg, data, run.seed)
        for a, b in zip(jax.tree.leaves(run.params), jax.tree.leaves(alone.params)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-12)
        assert [x["loss"] for x in run.curve] == pytest.approx(
            [x["loss"] for x in alone.curve if "loss" in x], rel=1e-9
        )


def test_a_baseline_node_that_learns_is_refused(tmp_path):
    path = _copy(tmp_path)
    text = open(path).read().replace("delta: {node: pnl_delta}", "delta: {node: pnl}")
    open(path, "w").write(text)
    done = _ddmc("experiment", path, "--out", str(tmp_path / "o"), "--no-figures")
    assert done.returncode == 1
    assert "depends on the params phi" in done.stderr and "Traceback" not in done.stderr


def test_ddmc_check_prints_what_a_variant_changes():
    trading = os.path.join(
        os.path.dirname(__file__), "..", "examples", "experiments", "trading.yaml"
    )
    done = _ddmc("check", trading, "--variant", "blocked_predictor")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "blocked_predictor: 1 change to trading.ddm"
    assert "stop_gradient after node b (trading.ddm:31)" in done.stdout
    assert "params left without any gradient path: net" in done.stdout
    done = _ddmc("check", trading, "--variant", "e2f")
    assert done.returncode == 1 and "did you mean 'e2e'" in done.stderr


def test_a_source_draws_the_same_data_whether_or_not_float64_is_on(float64):
    # a resumed experiment compares its data with the saved digest: a process that turned
    # float64 on (--x64, or a float64 program loaded earlier) must draw the same paths
    import hashlib

    from ddm.runtime import train as training
    from ddm.runtime.experiment import run as running
    from ddm.runtime.program import load

    exp = spec.load(EXP)
    prog = load(exp.program)
    cfg = running.config_for(exp, prog, {"n_train": 64, "n_test": 64})
    here = hashlib.sha256(np.asarray(training.load_data(prog, cfg).test["S"]).tobytes())
    code = (
        "import hashlib, numpy as np\n"
        "from ddm.runtime import train as t\n"
        "from ddm.runtime.experiment import run as r, spec\n"
        "from ddm.runtime.program import load\n"
        f"e = spec.load({EXP!r}); p = load(e.program)\n"
        "c = r.config_for(e, p, {'n_train': 64, 'n_test': 64})\n"
        "print(hashlib.sha256(np.asarray(t.load_data(p, c).test['S']).tobytes()).hexdigest())\n"
    )
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.strip() == here.hexdigest()
