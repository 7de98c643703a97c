"""A learning rate trained with the model: ``optimizer = adam(lr=…, hypergradient=β)``.

The plan's meta-parameter ``learning_rate = exp(log_lr)``, updated from the agreement of each
gradient with the last step's direction. Specifications: a rate started far too small grows and
reaches a loss the fixed rate does not; it is logged per step and reported; it survives a
checkpoint and resume bit for bit; it refuses a schedule beside it.
"""

import json

import numpy as np
import pytest

import ddm
from ddm.runtime import train
from ddm.runtime.config import RunConfig
from ddm.runtime.data import Dataset, Source
from ddm.runtime.errors import ConfigDiagnostic

PROGRAM = """input x: f32[4]
param w: f32[4] = 0.0
loss = mean(sum((w - x) ** 2, axis=1))
"""


def _run(monkeypatch, tmp_path, steps=200, **optimizer):
    x = np.tile(np.array([3.0, -2.0, 5.0, 1.0], np.float32), (64, 1))
    sources = {"const": Source("const", (), lambda: Dataset({"x": x}, {"x": x}), "")}
    monkeypatch.setattr(train, "SOURCES", sources)
    cfg = RunConfig.defaults()
    cfg.values.update(
        data={"name": "const"},
        batch=64,
        steps=steps,
        log_every=50,
        optimizer={"name": "adam", **optimizer},
    )
    cfg.validate(sources)
    return train.run(ddm.loads(PROGRAM, file="hg.ddm"), cfg, str(tmp_path))


def test_a_too_small_learning_rate_grows_and_reaches_a_lower_loss(monkeypatch, tmp_path):
    fixed = _run(monkeypatch, tmp_path / "fixed", lr=1e-4)
    learned = _run(monkeypatch, tmp_path / "learned", lr=1e-4, hypergradient=0.05)
    assert learned.metrics["learned_lr"] > 100 * 1e-4
    assert learned.metrics["test"]["loss"] < 1e-2 * fixed.metrics["test"]["loss"]
    lines = [json.loads(s) for s in (tmp_path / "learned" / "log.jsonl").read_text().splitlines()]
    rates = [line["lr"] for line in lines if "lr" in line]
    assert len(rates) == 4 and rates[0] < rates[-1]
    assert "learned_lr" not in fixed.metrics


def test_a_learned_rate_resumes_bit_for_bit(monkeypatch, tmp_path):
    whole = _run(monkeypatch, tmp_path / "whole", steps=120, lr=1e-3, hypergradient=0.05)
    d = tmp_path / "parts"
    x = np.tile(np.array([3.0, -2.0, 5.0, 1.0], np.float32), (64, 1))
    sources = {"const": Source("const", (), lambda: Dataset({"x": x}, {"x": x}), "")}
    monkeypatch.setattr(train, "SOURCES", sources)
    # a first run checkpoints at step 30 and ends at 60; the resumed one goes on from 30 to 120
    for steps, resume in ((60, False), (120, True)):
        cfg = RunConfig.defaults()
        cfg.values.update(
            data={"name": "const"},
            batch=64,
            steps=steps,
            log_every=50,
            checkpoint_every=30,
            optimizer={"name": "adam", "lr": 1e-3, "hypergradient": 0.05},
        )
        cfg.validate(sources)
        parts = train.run(ddm.loads(PROGRAM, file="hg.ddm"), cfg, str(d), resume=resume)
    assert parts.metrics["learned_lr"] == whole.metrics["learned_lr"]
    assert parts.metrics["params"] == whole.metrics["params"]


def test_a_learned_rate_refuses_a_schedule_beside_it():
    cfg = RunConfig.defaults()
    cfg.values.update(
        data={"name": "gbm_paths"},
        optimizer={"name": "adam", "lr": 1e-3, "hypergradient": 0.05, "schedule": "cosine"},
    )
    from ddm.runtime.data import SOURCES

    with pytest.raises(ConfigDiagnostic, match="replaces the schedule"):
        cfg.validate(SOURCES)
