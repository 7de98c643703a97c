"""A run's metrics in chunks (runtime/train.py ``Run.per_sample``): the per-sample values of
both splits come from one compiled function over chunks of one size, and the reductions are
compiled per split — one compilation of the sample stage (the argmins, the scans) instead of
one per split.

Specifications: the metrics are those of the whole split evaluated at once (float64, to
rounding), with an argmin and a scan in the sample stage, through one chunk (the smaller split
padded up) and through many (the last one padded); the per-sample function is compiled once
and nothing recompiles; the padding rows' solves are not counted; a program whose sample stage
reads its batch (``zscore(stats="batch")``) is evaluated whole.
"""

import warnings

import numpy as np
import pytest

import ddm
from ddm.runtime import train as training
from ddm.runtime.api import _config
from ddm.runtime.compiled import RecompileWarning
from ddm.runtime.train import _metric_chunk

pytestmark = pytest.mark.usefixtures("float64")

BAND = """\
dim N = 5
dim N1 = 6
input S: f32[N1]
input tau: f32[N]
input cost: f32
param psi = mlp(2, 8, 2)
node x = log(S[0:5] / 100.0) / (0.2 * sqrt(tau))
node u = tau / 0.0137
node delta = norm_cdf(x + 0.1 * sqrt(tau))
node h = scan t in N, prev: f32 = 0.0 {{
    let w = softplus(psi(stack([{feature}, u[t]])) - 2.0)
    return argmin v: f32 {{ (v - prev) ** 2 }} subject to {{
        v >= delta[t] - w[0], v <= delta[t] + w[1]
    }} using prox
}}
node pnl = hedge_pnl(S, h, cost=cost, strike=100.0, premium=0.936)
output h, pnl
loss = entropic_risk(pnl)
metric risk = entropic_risk(pnl)
metric es = expected_shortfall(pnl, 0.05)
metric sd = std(pnl)
run {{
    data = gbm_paths(sigma=0.2, days=5, steps=5, cost=0.01, n_train={n_train}, n_test={n_test})
    optimizer = adam(lr=0.01)
    steps = 3
    batch = 64
}}
"""


def test_the_chunk_is_the_larger_split_when_small_else_the_smaller_one():
    assert _metric_chunk(1030, 301) == 1030  # the test set padded up: one chunk each
    assert _metric_chunk(4096, 8192) == 4096  # the training set in two chunks
    assert _metric_chunk(10_000, 300) is None  # 34 chunks: too many, each split whole
    assert _metric_chunk(9000, 300) == 300  # 30 chunks
    assert _metric_chunk(100_000, 100) is None  # a chunk too small to be worth it
    assert _metric_chunk(50, 0) is None  # no test set


@pytest.mark.parametrize(
    "n_train, n_test, chunks",
    [(1030, 301, (1, 1)), (5000, 600, (9, 1))],
    ids=["one-chunk", "many-chunks"],
)
def test_a_runs_metrics_are_the_whole_splits_with_one_compilation(n_train, n_test, chunks):
    source = BAND.format(feature="x[t]", n_train=n_train, n_test=n_test)
    prog = ddm.loads(source, "band.ddm", x64=True)
    assert prog.product.chunkable
    calls: list[int] = []
    original = training._Run.per_sample

    def spy(self, params, arrays):
        size = self.chunk
        calls.append(-(-len(next(iter(arrays.values()))) // size))
        return original(self, params, arrays)

    training._Run.per_sample = spy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RecompileWarning)  # one chunk size: no recompile
            r = ddm.train(prog, plots=False)
    finally:
        training._Run.per_sample = original
    assert tuple(sorted(calls, reverse=True)) == chunks
    compiled = r.timing["compilations"]
    assert "metrics: per-sample values" in compiled and r.timing["recompilations"] == 0

    data = _data(prog)
    for split, arrays in (("train", data.train), ("test", data.test)):
        whole = prog.metrics(r.params, arrays)
        for name, value in r.metrics[split].items():
            np.testing.assert_allclose(value, float(whole[name]), rtol=1e-12, err_msg=name)
    # every test instance's solve once, at every step of the scan: none of the padding rows
    (solves,) = r.metrics["solvers"].values()
    assert solves["instances"] == n_test * 5


def test_a_sample_stage_that_reads_its_batch_is_evaluated_whole():
    source = BAND.format(feature='zscore(x, stats="batch")[t]', n_train=300, n_test=100)
    prog = ddm.loads(source, "band.ddm", x64=True)
    assert not prog.product.chunkable
    r = ddm.train(prog, plots=False)
    assert "metrics: per-sample values" not in r.timing["compilations"]
    whole = prog.metrics(r.params, _data(prog).test)
    assert r.metrics["test"]["risk"] == pytest.approx(float(whole["risk"]), rel=1e-12)


def _data(prog):
    """The run's data, built as the run builds it (the same source and seed)."""
    cfg, _ = _config(prog, None, {})
    return training.load_data(prog, cfg)
