"""``ddmc export`` (issue 12): the trained decision, serialised with ``jax.export``, loads in a
fresh process that imports nothing of ddm and gives the same bits as ``Program.apply_batch``,
for any batch size, with guard checks and solver statuses beside the decisions."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import jax
import numpy as np
import pytest

import ddm
from ddm.cli.main import main
from ddm.runtime import export

from conftest import EXAMPLES

# What a deployment runs: JAX and NumPy only. It reports which ddm modules it imported.
LOADER = r"""
import json, sys
import numpy as np, jax
folder, data, out = sys.argv[1:4]
exported = jax.export.deserialize(open(folder + "/decision.jaxexport", "rb").read())
manifest = json.load(open(folder + "/manifest.json"))
stored = np.load(folder + "/params.npz")
params = [stored[name] for name in manifest["params"]]
batch = np.load(data)
result = exported.call(params, *(batch[i["name"]] for i in manifest["inputs"]))
np.savez(out, **{k.replace(":", "__"): np.asarray(v) for k, v in result.items()})
print(json.dumps(sorted(m for m in sys.modules if m == "ddm" or m.startswith("ddm."))))
"""


def cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def fresh_call(folder, batch: dict, tmp_path) -> dict:
    data, out = tmp_path / "batch.npz", tmp_path / "result.npz"
    np.savez(data, **batch)
    r = subprocess.run(
        [sys.executable, "-c", LOADER, str(folder), str(data), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []  # no ddm module in that process
    with np.load(out) as res:
        return {k.replace("__", ":"): res[k] for k in res.files}


def random_batch(manifest, size, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i in manifest["inputs"]:
        shape = [size, *i["shape"][1:]]
        if i["dtype"] == "int32":
            out[i["name"]] = rng.integers(0, 2, size=shape).astype(np.int32)
        else:
            out[i["name"]] = (1.0 + 0.01 * rng.normal(size=shape)).astype(i["dtype"])
    return out


def test_the_ridge_decision_exports_from_a_run_and_reloads_to_the_same_bits(tmp_path):
    run, out = tmp_path / "run", tmp_path / "export"
    code, _, err = cli("compile", EXAMPLES / "ridge.ddm", "--run", "--out", run, "--set", "steps=5")
    assert code == 0, err
    code, text, err = cli("export", EXAMPLES / "ridge.ddm", "--params", run, "-o", out)
    assert code == 0, err
    assert "X: float32['batch', 30, 16]" in text  # the dims the run trained with
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dims"] == {"D": 16, "W": 30}
    assert [o["name"] for o in manifest["outputs"]] == ["beta", "pred", "status:beta"]
    prog = ddm.load(str(EXAMPLES / "ridge.ddm"))
    params = ddm.load_params(str(run), prog)
    for size in (1, 37):  # one export, any batch
        batch = random_batch(manifest, size, seed=size)
        got = fresh_call(out, batch, tmp_path)
        want = prog.apply_batch(params, **batch)
        for name in ("beta", "pred"):
            np.testing.assert_array_equal(got[name], np.asarray(want[name]))
        assert np.all(got["status:beta"] == 0)


def test_guards_and_statuses_travel_with_the_decision(tmp_path):
    prog = ddm.load(str(EXAMPLES / "trading.ddm"))
    params = prog.init(jax.random.key(0))
    manifest = export.export(prog, params, str(tmp_path / "out"))
    names = [o["name"] for o in manifest["outputs"]]
    assert "guard:position:violated" in names and "guard:position:breached" in names
    assert "status:w_before_position" in names
    batch = random_batch(manifest, 9)
    got = fresh_call(tmp_path / "out", batch, tmp_path)
    want = prog.apply_batch(params, **batch)
    np.testing.assert_array_equal(got["w"], np.asarray(want["w"]))
    assert set(np.unique(got["guard:position:breached"])) <= {0.0}


def test_an_export_needs_its_dims_and_an_output(tmp_path):
    prog = ddm.loads("dim D\ninput x: f32[D]\nparam w: f32 = 2.0\nnode y = w * x\noutput y")
    with pytest.raises(ddm.DdmError, match="input 'x' has the dim D, whose size the export"):
        export.export(prog, prog.init(jax.random.key(0)), str(tmp_path / "a"))
    manifest = export.export(prog, prog.init(jax.random.key(0)), str(tmp_path / "b"), {"D": 3})
    assert manifest["inputs"] == [{"name": "x", "shape": ["batch", 3], "dtype": "float32"}]
    silent = ddm.loads("input x: f32\nparam w: f32 = 2.0\nnode y = w * x")
    with pytest.raises(ddm.DdmError, match="declares no output: nothing to export"):
        export.export(silent, silent.init(jax.random.key(0)), str(tmp_path / "c"))


def test_export_refuses_another_programs_params(tmp_path):
    prog = ddm.loads("input x: f32\nparam w: f32 = 2.0\nnode y = w * x\noutput y", "a.ddm")
    ddm.save_params(str(tmp_path / "p.npz"), prog.init(jax.random.key(0)), prog)
    other = tmp_path / "b.ddm"
    other.write_text("input x: f32\nparam v: f32 = 2.0\nnode y = v * x\noutput y\n")
    code, _, err = cli("export", other, "--params", tmp_path / "p.npz", "-o", tmp_path / "o")
    assert code == 1 and "missing 'v'; unexpected 'w'" in err and "Traceback" not in err


def test_an_unknown_platform_and_an_output_that_is_a_file_are_named(tmp_path):
    prog = ddm.loads("input x: f32\nparam w: f32 = 2.0\nnode y = w * x\noutput y", "a.ddm")
    params = prog.init(jax.random.key(0))
    with pytest.raises(ddm.DdmError, match="unknown platform 'bogus' to export for"):
        export.export(prog, params, str(tmp_path / "o"), platforms=("bogus",))
    (tmp_path / "file").write_text("")
    with pytest.raises(ddm.DdmError, match="exists and is not a folder"):
        export.export(prog, params, str(tmp_path / "file"))
