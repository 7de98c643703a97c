"""Named losses: ``loss NAME = …`` declares an alternative objective a run may train instead of
the default (``loss = "NAME"`` in the run section, ``--set loss=NAME``, ``with_loss`` in
Python) — one program for, say, the entropic-risk and the variance hedge."""

import numpy as np
import pytest

import ddm
from ddm.dsl.diagnostics import DataDiagnostic, NameDiagnostic
from ddm.dsl.format import format_source
from ddm.runtime import train
from ddm.runtime.config import RunConfig
from ddm.runtime.data import Dataset, Source
from ddm.runtime.errors import ConfigDiagnostic

PROGRAM = """input x: f32
param a: f32 = 0.0
node y = x - a
output y
loss = mean(y ** 2)
loss absolute = mean(abs(y))
"""


def test_the_unnamed_loss_is_the_default_and_with_loss_switches():
    prog = ddm.loads(PROGRAM)
    batch = {"x": [1.0, -3.0]}
    assert float(prog.loss({"a": 0.0}, batch)) == 5.0
    assert float(prog.with_loss("absolute").loss({"a": 0.0}, batch)) == 2.0
    assert [n for n, _ in prog.graph.losses] == ["absolute"]


def test_only_named_losses_make_the_first_the_default():
    prog = ddm.loads(PROGRAM.replace("loss = mean(y ** 2)\n", ""))
    assert float(prog.loss({"a": 0.0}, {"x": [1.0, -3.0]})) == 2.0


def test_an_unknown_or_repeated_name_is_an_error():
    with pytest.raises(DataDiagnostic, match="no loss named 'absolut'") as info:
        ddm.loads(PROGRAM).with_loss("absolut")
    assert "did you mean 'absolute'" in str(info.value)
    with pytest.raises(NameDiagnostic, match="loss 'absolute' is declared twice") as info:
        ddm.loads(PROGRAM + "loss absolute = mean(y)\n", file="twice.ddm")
    assert info.value.span.line == 7 and info.value.span.column == 6


def test_format_keeps_the_name():
    assert format_source(PROGRAM) == PROGRAM


def _config(monkeypatch, loss):
    x = np.linspace(-2.0, 6.0, 64).astype(np.float32)
    sources = {"line": Source("line", (), lambda: Dataset({"x": x}, {"x": x}), "")}
    monkeypatch.setattr(train, "SOURCES", sources)
    cfg = RunConfig.defaults()
    cfg.values.update(
        data={"name": "line"},
        batch=64,
        steps=400,
        log_every=400,
        optimizer={"name": "adam", "lr": 0.05},
    )
    cfg.apply_set(f"loss={loss}", 0)
    return cfg, sources


def test_a_run_trains_the_loss_its_config_names(monkeypatch, tmp_path):
    # the mean of x minimises the squared loss, the median the absolute one: 2.0 both here,
    # so skew the data: median 2.0, mean pulled up by one far point
    results = {}
    for loss in ("absolute", ""):
        cfg, sources = _config(monkeypatch, loss)
        x = np.concatenate([np.linspace(-2.0, 6.0, 63), [200.0]]).astype(np.float32)
        sources["line"] = Source("line", (), lambda x=x: Dataset({"x": x}, {"x": x}), "")
        cfg.validate(sources, ("absolute",))
        out = tmp_path / (loss or "default")
        results[loss] = train.run(ddm.loads(PROGRAM), cfg, str(out)).metrics["params"]["a"]
    assert abs(results["absolute"] - 2.0) < 0.2  # the median
    assert results[""] > 4.0  # the mean, 2 + 200/64 ≈ 5.1, on its way


def test_a_config_naming_no_loss_of_the_program_is_located(monkeypatch):
    cfg, sources = _config(monkeypatch, "absolut")
    with pytest.raises(ConfigDiagnostic, match="no loss named 'absolut'") as info:
        cfg.validate(sources, ("absolute",))
    assert "did you mean 'absolute'" in str(info.value)
    assert info.value.span.file == "<--set 0>"
