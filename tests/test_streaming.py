"""Metrics accumulated over chunks of samples (runtime/streaming.py): the same numbers as all
samples at once, memory that does not grow with the samples, and a named refusal for a metric
that needs every sample at once."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import ddm
from ddm.runtime import streaming
from ddm.runtime.data import path_ids

from conftest import EXAMPLES

STATS = """\
input x: f32[3]
input y: f32
param a: f32 = 0.5
node z = a * y + x[0]
node gap = abs(x - y)
output z
loss = mean(z)
metric total = sum(z)
metric var1 = var(z, ddof=1)
metric sd = std(z)
metric hi = max(z)
metric lo = min(x)
metric lse = logsumexp(z)
metric sr = sharpe(z, periods=252)
metric er = entropic_risk(z, lam=2.0)
metric es = expected_shortfall(z, 0.03)
metric hinge = hinge_return(z, threshold=0.1)
metric gap_mean = mean(gap)
metric ratio = mean(z) / std(z) + a
metric pos = mean(f32(z > 0.0))
metric ss = smooth_sharpe(z)
metric err = mse(z, y)
metric hit = accuracy(sigmoid(z), f32(y > 0.0))
metric ce = bce(sigmoid(z), f32(y > 0.0))
metric cel = bce_logits(z, f32(y > 0.0))
metric lam = a * 2.0
"""


def _data(n: int):
    r = np.random.default_rng(0)
    return {"x": r.normal(size=(n, 3)), "y": r.normal(size=n) * 2.0}


@pytest.mark.parametrize("x64, rel", [(True, 1e-12), (False, 2e-5)])
def test_every_statistic_accumulated_over_chunks_is_the_whole_batchs(x64, rel, float64):
    prog = ddm.loads(STATS, x64=x64)
    params = prog.init(None)
    data = _data(1003)
    if not x64:
        data = {k: v.astype(np.float32) for k, v in data.items()}
    whole = {k: float(v) for k, v in prog.metrics(params, data).items()}
    whole["loss"] = float(prog.loss(params, data))
    chunked = streaming.evaluate(prog.product, params, streaming.chunked(data, 128), 1003)
    assert sorted(chunked) == sorted(whole)
    for k in whole:
        assert chunked[k] == pytest.approx(whole[k], rel=rel, abs=rel), k


@pytest.mark.parametrize(
    "metric",
    [
        "max(log(z))",  # NaN where z < 0: kept, as the library keeps it
        "min(log(z))",
        "logsumexp(-log(0.0 * z))",  # +inf
        "logsumexp(log(0.0 * z))",  # every value -inf
        "var(z, ddof=1003)",  # n − ddof = 0
        "sharpe(0.0 * z, eps=0.0)",  # 0 / 0
    ],
)
def test_nan_and_infinities_come_out_as_from_the_whole_batch(metric):
    prog = ddm.loads(STATS + f"metric edge = {metric}\n", x64=True)
    params = prog.init(None)
    data = _data(1003)
    whole = float(prog.metrics(params, data)["edge"])
    chunked = streaming.evaluate(prog.product, params, streaming.chunked(data, 128), 1003)
    assert chunked["edge"] == pytest.approx(whole, nan_ok=True), (whole, chunked["edge"])


@pytest.mark.parametrize(
    "metric, reason",
    [
        ("quantile(z, 0.5)", "quantile needs every sample at once"),
        ("mean(z - mean(z))", "sub combines per-sample values with a statistic of the batch"),
        ("max(mean(x, axis=1))", "mean along an axis keeps one value per sample"),
        ("mean(z, keepdims=true)[0]", "mean with keepdims keeps the samples' axis"),
    ],
)
def test_a_metric_that_needs_every_sample_at_once_is_named(tmp_path, metric, reason):
    src = STATS + f"metric bad = {metric}\n"
    prog = ddm.loads(src, file="stats.ddm")
    with pytest.raises(streaming.NotStreamable) as info:
        streaming.plan(prog.product)
    assert f"metric 'bad' cannot be accumulated over chunks of samples: {reason}" in str(info.value)
    assert info.value.span is not None and info.value.span.line == src.count("\n")


def test_path_ids_rows_are_the_rows_of_the_whole_split():
    kw = dict(n_train=50, n_test=40, cost=0.01, days=10, steps=5, offset=7)
    d = path_ids.load(**kw)
    for split in ("train", "test"):
        whole = getattr(d, split)
        part = path_ids.rows(split, 13, 29, **kw)
        for k in whole:
            np.testing.assert_array_equal(part[k], whole[k][13:29])
        assert path_ids.rows(split, 30, 90, **kw)["path"].tolist() == (whole["path"][30:].tolist())


def _ddmc(*args):
    return subprocess.run(
        [sys.executable, "-m", "ddm.cli.main", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def sim_params(tmp_path_factory):
    """deep_hedge_sim.ddm's params after a short run."""
    out = tmp_path_factory.mktemp("sim")
    done = _ddmc(
        "train",
        str(EXAMPLES / "deep_hedge_sim.ddm"),
        "--out",
        str(out),
        "--no-plots",
        "--set",
        "steps=20",
        "--set",
        "data.n_train=2048",
        "--set",
        "data.n_test=256",
    )
    assert done.returncode == 0, done.stderr
    return str(out)


def test_ddmc_eval_in_chunks_scores_as_all_at_once_on_simulated_paths(sim_params):
    prog = str(EXAMPLES / "deep_hedge_sim.ddm")
    common = ["--params", sim_params, "--json", "--set", "data.n_test=5000"]
    whole = _ddmc("eval", prog, *common, "--split", "test")
    chunked = _ddmc("eval", prog, *common, "--split", "test", "--chunk", "1536")
    assert whole.returncode == 0 and chunked.returncode == 0, whole.stderr + chunked.stderr
    a, b = json.loads(whole.stdout)["test"], json.loads(chunked.stdout)["test"]
    assert sorted(a) == sorted(b) and "entropic__net" in a
    for k in a:
        # float32 sums at once, float64 accumulators in chunks (float64: the test above)
        assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k


def _peak_rss(args) -> tuple[int, dict]:
    """Peak resident memory (bytes) of ``ddmc eval`` run in a child, and what it printed."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(p.stderr)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "print(p.stdout)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, sys.executable, "-m", "ddm.cli.main", "eval", *args],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    first, rest = done.stdout.split("\n", 1)
    return int(first) * 1024, json.loads(rest)


def test_memory_does_not_grow_with_the_number_of_paths(sim_params):
    """50 000 and 500 000 simulated paths × 30 dates, 8192 at a time: the peak resident memory
    of the whole process differs by less than 20 % (all at once, 500 000 paths would hold
    ~60 MB of prices alone, and several times that in intermediates)."""
    prog = str(EXAMPLES / "deep_hedge_sim.ddm")
    peaks = {}
    for n in (50_000, 500_000):
        args = [prog, "--params", sim_params, "--json", "--split", "test", "--chunk", "8192"]
        peaks[n], scores = _peak_rss(args + ["--set", f"data.n_test={n}"])
        assert np.isfinite(scores["test"]["entropic__net"])
    assert peaks[500_000] < 1.2 * peaks[50_000], peaks


def test_a_split_of_another_file_is_refused(sim_params, tmp_path):
    data = tmp_path / "paths.npz"
    np.savez(data, path=np.arange(4, dtype=np.int32))
    args = ["--params", sim_params, "--data", str(data), "--split", "test"]
    done = _ddmc("eval", str(EXAMPLES / "deep_hedge_sim.ddm"), *args)
    assert done.returncode == 1 and "--data scores every sample of its file" in done.stderr
