"""A run's pictures (issue 12): ``--run`` and ``ddm.train`` draw learning curves, gradient norms
and the P&L distribution against the program's baselines into the run folder; ``ddmc plot``
redraws them. The images are checked for drawn curves, not only for their presence."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

import ddm
from ddm.cli.main import main

PROGRAM = """\
dim N = 4
input r: f32[N]
param w: f32[N] = 0.25
node pnl = dot(w, r)
node pnl_equal = mean(r)
output pnl
loss = -(mean(pnl) - 2.0 * var(pnl))
metric sharpe = mean(pnl) / std(pnl)
metric sharpe_equal = mean(pnl_equal) / std(pnl_equal)
"""


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def pixels(path, rgb: str, tol: float = 0.08) -> int:
    """How many pixels of the PNG are the colour ``#rrggbb`` (a drawn line of it)."""
    import matplotlib.image

    img = matplotlib.image.imread(str(path))[..., :3]
    want = np.array([int(rgb[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int(np.sum(np.all(np.abs(img - want) < tol, axis=-1)))


C0, C1, BLACK = "#1f77b4", "#ff7f0e", "#000000"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rng = np.random.default_rng(0)
    r = (0.001 + 0.01 * rng.normal(size=(400, 4))).astype(np.float32)
    data = {"train": {"r": r[:300]}, "test": {"r": r[300:]}}
    out = tmp_path_factory.mktemp("plots") / "run"
    prog = ddm.loads(PROGRAM, "toy.ddm")
    result = ddm.train(prog, data, out=str(out), steps=60, batch=50, log_every=5, eval_every=10)
    return out, result


def test_a_run_draws_its_three_pictures(run):
    out, result = run
    assert sorted(p.rsplit("/", 1)[1] for p in result.plots) == [
        "gradients.png",
        "learning.png",
        "pnl.png",
    ]
    # learning curves: the training loss (C0) and the test curves (C1) are drawn
    assert pixels(out / "learning.png", C0) > 300
    assert pixels(out / "learning.png", C1) > 300
    # gradient norms: the total (black) and the param w (C0)
    assert pixels(out / "gradients.png", BLACK) > 300
    assert pixels(out / "gradients.png", C0) > 200
    # P&L: the decision's histogram (C0) against equal weight's (C1)
    assert pixels(out / "pnl.png", C0) > 300 and pixels(out / "pnl.png", C1) > 300
    with np.load(out / "pnl.npz") as npz:
        assert sorted(npz.files) == ["pnl", "pnl_equal"] and npz["pnl"].shape == (100,)


def test_ddmc_plot_redraws_a_run_and_names_a_folder_that_is_not_one(run, tmp_path):
    out, _ = run
    (out / "learning.png").unlink()
    code, text, err = cli("plot", out)
    assert code == 0, err
    assert "learning.png" in text and (out / "learning.png").exists()
    code, _, err = cli("plot", tmp_path)
    assert code == 1
    assert "not a finished run (no metrics.json / log.jsonl)" in err and "Traceback" not in err


def test_no_plots_draws_nothing(tmp_path):
    prog_path = tmp_path / "toy.ddm"
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "r.npz", r=(0.01 * rng.normal(size=(200, 4))).astype(np.float32))
    prog_path.write_text(PROGRAM + 'run {\n    data = npz(path="r.npz")\n    steps = 5\n}\n')
    code, _, err = cli("compile", prog_path, "--run", "--out", tmp_path / "run", "--no-plots")
    assert code == 0, err
    assert not list((tmp_path / "run").glob("*.png"))
