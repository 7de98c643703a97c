"""A run's metrics in chunks (runtime/train.py ``Run.per_sample``): the per-sample values of
both splits come from one compiled function over chunks of one size, and the reductions are
compiled per split — one compilation of the sample stage (the argmins, the scans) instead of
one per split.

Specifications: the metrics are those of the whole split evaluated at once (float64, to
rounding), with an argmin and a scan in the sample stage, through one chunk (the training set
padded up to the test set's size) and through many (the last one padded); the per-sample
function is compiled once and nothing recompiles; the padding rows' solves are not counted; a
program whose sample stage reads its batch (``zscore(stats="batch")``) is evaluated whole; the
P&L per test sample that a run saves for its plot (``pnl.npz``) comes out of the final test
metrics' pass, not out of a compilation of its own, and equals the program's values.
"""

import warnings

import jax
import numpy as np
import pytest
from test_devices import BAND

import ddm
from ddm.runtime import plots
from ddm.runtime import train as training
from ddm.runtime.api import _config
from ddm.runtime.compiled import RecompileWarning
from ddm.runtime.train import _metric_chunk

pytestmark = pytest.mark.usefixtures("float64")


def band(n_train: int, n_test: int, feature: str = "x[t]") -> str:
    """test_devices' program (a scan whose steps solve an argmin, a risk measure as the loss)
    with these split sizes and this first feature of the band's network."""
    return BAND.replace("n_train=1030, n_test=1001", f"n_train={n_train}, n_test={n_test}").replace(
        "stack([x[t], u[t]])", f"stack([{feature}, u[t]])"
    )


def test_the_chunk_is_the_test_set_unless_the_training_set_needs_too_many():
    # the periodic evaluations (the test set) compute no padding row
    assert _metric_chunk(1030, 301) == 301  # the training set in four chunks
    assert _metric_chunk(4096, 8192) == 8192  # the training set padded up, once, at the end
    assert _metric_chunk(9000, 300) == 300  # 30 chunks
    assert _metric_chunk(10_000, 300) is None  # 34 chunks: too many, each split whole
    assert _metric_chunk(50, 0) is None  # no test set


@pytest.mark.parametrize(
    "n_train, n_test, chunks",
    [(300, 1001, (1, 1)), (5000, 600, (9, 1))],
    ids=["one-chunk", "many-chunks"],
)
def test_a_runs_metrics_are_the_whole_splits_with_one_compilation(n_train, n_test, chunks):
    prog = ddm.loads(band(n_train, n_test), "band.ddm", x64=True)
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
    source = band(300, 100, feature='zscore(x, stats="batch")[t]')
    prog = ddm.loads(source, "band.ddm", x64=True)
    assert not prog.product.chunkable
    r = ddm.train(prog, plots=False)
    assert "metrics: per-sample values" not in r.timing["compilations"]
    whole = prog.metrics(r.params, _data(prog).test)
    assert r.metrics["test"]["risk"] == pytest.approx(float(whole["risk"]), rel=1e-12)


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "whole"])
def test_the_saved_pnl_is_the_final_test_passs_and_the_programs_values(tmp_path, chunked):
    feature = "x[t]" if chunked else 'zscore(x, stats="batch")[t]'
    prog = ddm.loads(band(300, 101, feature), "band.ddm", x64=True)
    product = prog.product
    assert product.chunkable == chunked
    (pnl,) = [i for name, i in plots.pnl_names(prog.graph) if name == "pnl"]
    own: list = []  # the P&L's own evaluations: a compilation of the sample stage each
    values = product.values

    def spy(params, batch, roots, *args, **kwargs):
        own.append(tuple(roots))
        return values(params, batch, roots, *args, **kwargs)

    object.__setattr__(product, "values", spy)
    try:
        r = ddm.train(prog, out=str(tmp_path), plots=False, steps=3)
    finally:
        object.__setattr__(product, "values", values)
    assert own == ([] if chunked else [(pnl,)])  # evaluated whole: its own pass, as before
    saved = np.load(tmp_path / "pnl.npz")
    expected, _ = jax.jit(lambda p, b: values(p, b, (pnl,)))(r.params, _data(prog).test)
    assert saved["pnl"].shape == (101,)
    np.testing.assert_allclose(saved["pnl"], np.asarray(expected[pnl]), rtol=1e-12)


def _data(prog):
    """The run's data, built as the run builds it (the same source and seed)."""
    cfg, _ = _config(prog, None, {})
    return training.load_data(prog, cfg)
