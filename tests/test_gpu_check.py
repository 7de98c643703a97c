"""The GPU check (bench/gpu_check.py) runs in one command; without a GPU it says so, and on the
CPU (--allow-cpu) every part of it runs at small sizes — so the script a GPU session relies on
is known to work before one is available."""

from __future__ import annotations

import json
import subprocess
import sys


def _check(*args):
    return subprocess.run(
        [sys.executable, "-m", "ddm.bench.gpu_check", *args], capture_output=True, text=True
    )


def test_without_a_gpu_the_check_says_so_and_fails_nothing():
    done = _check()
    assert done.returncode == 0, done.stderr
    assert "backend cpu" in done.stdout and "no GPU" in done.stdout


def test_every_part_of_the_check_runs_on_the_cpu_when_allowed(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = _check("--allow-cpu", "--quick", "--no-tests", "--out", str(out))
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    sim = report["simulator"]
    assert sim["path_steps_per_s"] > 0 and 0 < sim["share_of_bound"] < 10
    assert [r["problem"] for r in report["argmin"]] == ["budget", "long_only"]
    for r in report["argmin"]:
        assert r["statuses"] == {"converged": r["batch"]}
    assert "skipped" in report["deep_hedge"] or report["deep_hedge"]["loss_agrees"]
