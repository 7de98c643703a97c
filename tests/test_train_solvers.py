"""Training a program with a declarative node whose solve fails on some samples.

The error policy stops training at the step that met the failure, names the node, the step and
the training sample, and applies no update from that step; the nan policy skips steps whose loss
or gradient its NaNs reach, counts them and trains on; ``backward unroll(k)`` accepts its k-th
iterate. The data come from a small synthetic source: ``lo`` makes ``v >= lo, sum(v) == 1``
infeasible where ``lo > 1/3``.
"""

import json

import numpy as np
import pytest

import ddm
from ddm.runtime import train
from ddm.runtime.config import RunConfig
from ddm.runtime.data import Dataset, Source
from ddm.runtime.errors import SolverDiagnostic

PROGRAM = """
dim N = 3
input lo: f32
input y: f32[N]
param a: f32[N] = 0.0
node w = argmin v: f32[N] { sum((v - a - y) ** 2) } subject to { sum(v) == 1, v >= lo }{using}
output w
loss = mean(sum((w - y) ** 2, axis=1))
"""


def config(monkeypatch, data: Dataset, steps: int, batch: int) -> RunConfig:
    """A run on ``data`` (served as the source ``lows``), logging every step."""
    sources = {"lows": Source("lows", (), lambda: data, "synthetic lower bounds")}
    monkeypatch.setattr(train, "SOURCES", sources)
    cfg = RunConfig.defaults()
    cfg.values.update(steps=steps, batch=batch, log_every=1, eval_every=0, data={"name": "lows"})
    return cfg.validate(sources)


def run(monkeypatch, tmp_path, lo, using="", steps=8, batch=4):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(len(lo), 3)).astype(np.float32)
    data = Dataset({"lo": lo, "y": y}, {"lo": np.zeros(4, np.float32), "y": y[:4]})
    cfg = config(monkeypatch, data, steps, batch)
    prog = ddm.loads(PROGRAM.replace("{using}", using), file="lows.ddm")
    return train.run(prog, cfg, str(tmp_path)), tmp_path


def test_error_policy_stops_at_the_failing_step_and_names_the_sample(monkeypatch, tmp_path):
    lo = np.zeros(16, np.float32)
    lo[11] = 0.5  # the only infeasible training sample
    with pytest.raises(SolverDiagnostic) as info:
        run(monkeypatch, tmp_path, lo, steps=8, batch=4)  # 2 epochs: sample 11 comes up
    text = str(info.value)
    assert "lows.ddm:6:10" in text
    assert "argmin node 'w' failed at step" in text
    assert "on training sample 11" in text and "infeasible" in text
    assert "training stopped before applying that step's update" in text


def test_nan_policy_skips_the_steps_it_poisons_and_trains_on(monkeypatch, tmp_path):
    lo = np.zeros(16, np.float32)
    lo[11] = 0.5
    result, out = run(
        monkeypatch, tmp_path, lo, using=' using ipm(on_infeasible="nan")', steps=8, batch=4
    )
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "step" in x and "test" not in x]
    skipped = [x for x in steps if x.get("skipped")]
    assert len(skipped) == 2  # sample 11 is in one batch per epoch
    assert all(x["solvers"]["w"]["failed"] == 1 for x in skipped)
    # each log step counts the statuses it met: the infeasible instance beside the others
    assert all(x["solvers"]["w"]["status"] == {"converged": 3, "infeasible": 1} for x in skipped)
    assert all(
        x["solvers"]["w"]["status"] == {"converged": 4} for x in steps if not x.get("skipped")
    )
    assert result.metrics["skipped_steps"] == 2
    assert all(np.isfinite(x["loss"]) for x in steps if not x.get("skipped"))
    assert np.all(np.isfinite(result.metrics["params"]["a"]))  # no NaN update was applied


def test_a_nan_loss_without_a_nan_policy_is_named(monkeypatch, tmp_path):
    lo = np.zeros(16, np.float32)
    bad = PROGRAM.replace("mean(sum((w - y) ** 2, axis=1))", "mean(log(w[:, 0] - 2.0))")
    data = Dataset(
        {"lo": lo, "y": np.ones((16, 3), np.float32)},
        {"lo": lo[:4], "y": np.ones((4, 3), np.float32)},
    )
    cfg = config(monkeypatch, data, steps=3, batch=4)
    prog = ddm.loads(bad.replace("{using}", ""), file="lows.ddm")
    with pytest.raises(ddm.DdmError) as info:
        train.run(prog, cfg, str(tmp_path))
    assert "the loss became nan at step 1" in str(info.value)
