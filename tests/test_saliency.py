"""Jacobian saliency of a decision w.r.t. input features (run config ``saliency =
jacobian(of=, wrt=, top=, reference=)``): exact on a linear decision, right on the credit
generator whose model is known, and checked against the program before training starts."""

import json

import numpy as np
import pytest

import ddm
from ddm.runtime import train
from ddm.runtime.config import RunConfig
from ddm.runtime.data import Dataset, Source
from ddm.runtime.errors import ConfigDiagnostic

from conftest import EXAMPLES
from test_examples import ddmc

LINEAR = """input x: f32[4]
input y: f32
param b: f32 = 0.0
node d = dot([0.1, 5.0, -3.0, 0.0], x) * 2.0 + b
output d
loss = mean((d - y) ** 2)
"""


def _config(monkeypatch, **sal):
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    data = Dataset({"x": x, "y": x[:, 0]}, {"x": x, "y": x[:, 0]})
    sources = {"lin": Source("lin", (), lambda: data, "")}
    monkeypatch.setattr(train, "SOURCES", sources)
    cfg = RunConfig.defaults()
    cfg.values.update(data={"name": "lin"}, steps=2, batch=64, saliency={"name": "jacobian", **sal})
    return cfg.validate(sources)


def test_saliency_of_a_linear_decision_is_its_absolute_coefficients(monkeypatch, tmp_path):
    cfg = _config(monkeypatch, of="d", wrt="x", top=2, reference=[1, 3])
    m = train.run(ddm.loads(LINEAR, file="lin.ddm"), cfg, str(tmp_path)).metrics["saliency"]
    assert m["top_overall"] == [1, 2] and m["features"] == 4
    np.testing.assert_allclose(m["saliency_overall"], [10.0, 6.0], rtol=1e-6)
    assert m["overlap"] == 0.5  # feature 1 of the reference is in the top 2, feature 3 not


@pytest.mark.parametrize(
    "sal, message",
    [
        ({"of": "nope", "wrt": "x"}, "'nope' is not a node"),
        ({"of": "d", "wrt": "y"}, "'d' does not depend on 'y'"),
        ({"of": "d", "wrt": "x", "reference": [9]}, "outside the 4 features"),
    ],
)
def test_a_saliency_naming_what_is_not_there_stops_before_training(
    monkeypatch, tmp_path, sal, message
):
    cfg = _config(monkeypatch, **sal)  # (d does not use the input y: only the loss does)
    with pytest.raises(ConfigDiagnostic, match=message):
        train.run(ddm.loads(LINEAR, file="lin.ddm"), cfg, str(tmp_path))


def test_credit_saliency_finds_the_generators_strongest_features(tmp_path):
    """In raw units the generator's repayment logit moves most with the debt-to-income ratio
    (slope 7–14 per unit above 0.3), utilisation (5u, plus a step at 0.3) and delinquencies
    (0.9 per count, plus the clean-record bonus); income enters as log(income/50) in thousands
    and history as log1p(years), both flat per unit: features 1, 4, 3 lead."""
    r = ddmc(
        "train",
        str(EXAMPLES / "credit.ddm"),
        "--out",
        str(tmp_path),
        "--set",
        "steps=300",
        "--set",
        "saliency={name: jacobian, of: p, wrt: x, top: 3, reference: [1, 3, 4]}",
    )
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "metrics.json").read_text())["saliency"]
    assert set(m["top_overall"]) == {1, 3, 4} and m["overlap"] == 1.0
    assert "saliency of p w.r.t. x" in r.stdout
