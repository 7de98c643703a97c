"""Training, evaluating and reusing a program from Python and the CLI (issue 12): the bilevel
ridge example trains from its CSV through ``ddmc compile --run`` and ``ddm.train`` to the same
bits, evaluates with ``ddmc eval``, and its params are refused by another program."""

from __future__ import annotations

import contextlib
import io
import json
import warnings

import numpy as np
import pytest

import ddm
from ddm.cli.main import main

from conftest import EXAMPLES

RIDGE = EXAMPLES / "ridge.ddm"
SHORT = {"steps": 20, "batch": 32}


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The ridge example trained twice: by the CLI and by ddm.train, same settings."""
    base = tmp_path_factory.mktemp("ridge")
    code, _, err = cli(
        "compile", RIDGE, "--run", "--out", base / "cli", "--set", "steps=20", "--set", "batch=32"
    )
    assert code == 0, err
    result = ddm.train(RIDGE, out=str(base / "py"), **SHORT)
    return base, result


def test_the_cli_and_ddm_train_give_the_same_bits(runs):
    base, result = runs
    cli_metrics = json.loads((base / "cli" / "metrics.json").read_text())
    assert cli_metrics["train"] == result.metrics["train"]
    assert cli_metrics["test"] == result.metrics["test"]
    saved = ddm.load_params(str(base / "cli"))
    np.testing.assert_array_equal(saved["lam"], result.params["lam"])
    assert result.history and result.history[-1]["step"] == 20
    assert tuple(result.metrics["data"]["test_dates"]) == ("2020-09-01", "2021-04-14")
    assert result.out_dir == str(base / "py")


def test_ddmc_eval_scores_a_run_as_the_run_did(runs):
    base, result = runs
    code, out, err = cli("eval", RIDGE, "--params", base / "py", "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["test"] == pytest.approx(result.metrics["test"], rel=1e-6)
    assert set(scores) == {"train", "test"}
    # a new file: every one of its samples, the program's own mapping of columns
    code, out, err = cli(
        "eval", RIDGE, "--params", base / "py", "--data", EXAMPLES / "data" / "ridge.csv", "--json"
    )
    assert code == 0, err
    assert set(json.loads(out)) == {"all"}


def test_ddm_evaluate_takes_a_run_folder_and_a_batch_of_arrays(runs):
    base, result = runs
    prog = ddm.load(str(RIDGE))
    both = ddm.evaluate(prog, str(base / "py"))
    assert both["test"] == pytest.approx(result.metrics["test"], rel=1e-6)
    rng = np.random.default_rng(0)
    batch = {
        "X": rng.normal(size=(5, 30, 16)),
        "ys": rng.normal(size=(5, 30)),
        "x": rng.normal(size=(5, 16)),
        "y": rng.normal(size=5),
    }
    one = ddm.evaluate(prog, result.params, batch)
    assert set(one) == {"loss", "mse", "mse_ols", "mse_shrunk"} and one["loss"] == one["mse"]


def test_params_of_another_program_are_refused_by_name(runs, tmp_path):
    base, _ = runs
    other = tmp_path / "other.ddm"
    other.write_text(
        RIDGE.read_text()
        .replace("param lam: f32 = 1.0 positive", "param lam: f32[2] = 1.0")
        .replace("+ lam * sum", "+ lam[0] * sum")
    )
    code, _, err = cli("eval", other, "--params", base / "py")
    assert code == 1
    assert "holds the params of ridge.ddm, not of other.ddm: 'lam' is [] float32, the " in err
    assert "Traceback" not in err
    renamed = tmp_path / "renamed.ddm"
    renamed.write_text(RIDGE.read_text().replace("lam", "shrink"))
    with pytest.raises(ddm.DdmError, match="missing 'shrink'; unexpected 'lam'"):
        ddm.load_params(str(base / "py"), ddm.load(str(renamed)))


def test_params_of_an_edited_program_load_with_a_warning(runs, tmp_path):
    base, _ = runs
    edited = tmp_path / "ridge.ddm"
    edited.write_text(RIDGE.read_text() + "\n# a comment added after training\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = ddm.load_params(str(base / "py"), ddm.load(str(edited)))
    assert "lam" in params
    assert any("another version of ridge.ddm" in str(w.message) for w in caught)


def test_a_corrupt_params_file_is_named(runs, tmp_path):
    base, _ = runs
    bad = tmp_path / "params.npz"
    data = bytearray((base / "py" / "params.npz").read_bytes())
    data[-40] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "params.npz.sha256").write_text((base / "py" / "params.npz.sha256").read_text())
    with pytest.raises(ddm.DdmError, match="checksum mismatch"):
        ddm.load_params(str(bad))


def test_save_and_load_params_round_trip_a_layer_tree(tmp_path):
    prog = ddm.loads("input x: f32[3]\nparam net = mlp(3, 4, 1)\nnode y = net(x)\noutput y")
    import jax

    params = prog.init(jax.random.key(0))
    ddm.save_params(str(tmp_path / "p.npz"), params, prog)
    back = ddm.load_params(str(tmp_path / "p.npz"), prog)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(back)):
        np.testing.assert_array_equal(a, b)
    out = prog.apply(back, x=[1.0, 2.0, 3.0])["y"]
    assert np.all(np.isfinite(out))


def test_ddm_train_on_arrays_and_settings_checked_as_the_cli_checks_them():
    prog = ddm.loads(
        "dim D = 2\ninput x: f32[D]\ninput y: f32\nparam w: f32[D] = 0.0\n"
        "node p = dot(w, x)\noutput p\nloss = mean((p - y) ** 2)\n"
    )
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (x @ np.float32([1.0, -2.0])).astype(np.float32)
    data = {"train": {"x": x[:48], "y": y[:48]}, "test": {"x": x[48:], "y": y[48:]}}
    run = ddm.train(prog, data, steps=300, batch=16, optimizer={"name": "adam", "lr": 0.05})
    np.testing.assert_allclose(run.params["w"], [1.0, -2.0], atol=0.05)
    assert run.metrics["test"]["loss"] < 1e-2
    assert run.out_dir is None
    again = ddm.train(prog, data, steps=300, batch=16, optimizer={"name": "adam", "lr": 0.05})
    np.testing.assert_array_equal(again.params["w"], run.params["w"])  # same seed, same bits
    with pytest.raises(ddm.DdmError, match="'steps' must be at least 1, got -1"):
        ddm.train(prog, data, steps=-1)
    with pytest.raises(ddm.DdmError, match="unknown run setting 'stepz'"):
        ddm.train(prog, data, stepz=3)
    with pytest.raises(ddm.DdmError, match="provides inputs x; the program also needs y"):
        ddm.train(prog, {"train": {"x": x}}, steps=1)


def test_the_learned_shrinkage_beats_both_fixed_ones_on_the_test_days(tmp_path):
    """The README's claim about examples/ridge.ddm, at its own settings (300 steps)."""
    result = ddm.train(RIDGE, out=str(tmp_path / "full"))
    test = result.metrics["test"]
    assert test["mse"] < test["mse_ols"] and test["mse"] < test["mse_shrunk"]
    assert round(test["mse"], 2) == 1.88 and round(test["mse_ols"], 2) == 2.54
    assert round(test["mse_shrunk"], 2) == 3.29
