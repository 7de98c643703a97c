"""The run folder is checked before any training, and results survive a failed write.

``--out`` naming a file, a folder that cannot be written, or a disk without room for the run
ends at once in a clear error — before data is loaded or anything compiles. A write that fails
after training keeps the results in a fresh temporary folder and says where.
"""

import errno
import os
import shutil
from pathlib import Path

import pytest

from ddm.cli.main import main
from ddm.runtime import outdir
from ddm.runtime.errors import ConfigDiagnostic

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUICK = ("--set", "steps=5", "--set", "eval_every=0", "--set", "log_every=5")


def ddmc(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def train(capsys, out, *extra):
    return ddmc(capsys, "compile", EXAMPLES / "credit.ddm", "--run", *QUICK, *extra, "--out", out)


def test_out_naming_a_file_is_refused_before_training(capsys, tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    rc, out, err = train(capsys, target)
    assert rc == 1
    assert f"--out {target}: exists and is not a folder" in err
    assert "step" not in out  # nothing trained
    assert target.read_text() == "mine"


def test_out_in_an_unwritable_place_is_refused_before_training(capsys):
    # /proc refuses new folders even to root, unlike a chmod-ed folder
    rc, out, err = train(capsys, "/proc/ddm-run")
    assert rc == 1
    assert "--out /proc/ddm-run: cannot write there" in err
    assert "step" not in out


def test_out_on_a_full_disk_is_refused_before_training(capsys, tmp_path, monkeypatch):
    real = shutil.disk_usage

    def almost_full(path):
        return real(path)._replace(free=4096)

    monkeypatch.setattr(outdir.shutil, "disk_usage", almost_full)
    rc, out, err = train(capsys, tmp_path / "run")
    assert rc == 1
    assert "the disk has 4.1 kB free; this run writes about" in err
    assert "step" not in out


def test_prepare_names_the_reason():
    with pytest.raises(ConfigDiagnostic, match="exists and is not a folder"):
        outdir.prepare(os.devnull, 0)
    with pytest.raises(ConfigDiagnostic, match="cannot write there"):
        outdir.prepare("/proc/self/ddm", 0)


def test_a_write_that_fails_after_training_keeps_the_results_and_says_where(
    capsys, tmp_path, monkeypatch
):
    import ddm.runtime.train as train_module

    wanted = tmp_path / "run"
    real = train_module.write_json

    def disk_full_in_the_run_folder(path, obj):
        if str(path).startswith(str(wanted)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, obj)

    monkeypatch.setattr(train_module, "write_json", disk_full_in_the_run_folder)
    rc, out, err = train(capsys, wanted)
    assert rc == 1
    line = next(x for x in err.splitlines() if x.startswith("error: could not write"))
    assert f"could not write the results to {wanted} (No space left on device)" in line
    kept = Path(line.rsplit("they are kept in ", 1)[1])
    assert kept != wanted and (kept / "metrics.json").is_file() and (kept / "params.npz").is_file()
    shutil.rmtree(kept)
