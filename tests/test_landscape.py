"""The landscape measures (issue 13 item 4): defined quantities with known values — identical
seeds give zero spread, orthogonal centred params are π/2 apart, disjoint output distributions π,
the Fisher–Rao distance against the Bhattacharyya coefficient by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ddm.runtime import landscape as L


def test_identical_seeds_have_no_spread():
    params = [{"net": {"w0": np.arange(6.0).reshape(2, 3), "b0": np.ones(3)}}] * 4
    out = L.landscape([0.5] * 4, params, outputs=[np.linspace(0, 1, 100)] * 4)
    assert out["loss_variance"] == 0.0 and out["convergence_consistency"] == 0.0
    assert out["param_angle_mean"] == 0.0 and out["fisher_rao_mean"] == pytest.approx(0.0, abs=1e-7)


def test_centring_removes_a_shift_common_to_a_layer():
    a = {"w": np.array([1.0, 2.0, 3.0])}
    b = {"w": np.array([11.0, 12.0, 13.0])}  # the same up to a constant
    assert L.param_angle(L.centred(a), L.centred(b)) == pytest.approx(0.0, abs=1e-7)
    c = {"w": np.array([1.0, -2.0, 1.0])}  # centred: orthogonal to (−1, 0, 1)
    assert L.param_angle(L.centred(a), L.centred(c)) == pytest.approx(math.pi / 2)


def test_fisher_rao_by_hand():
    p, q = np.array([0.2, 0.3, 0.5]), np.array([0.5, 0.3, 0.2])
    bc = np.sqrt(0.1) + 0.3 + np.sqrt(0.1)
    assert L.fisher_rao(p, q) == pytest.approx(2 * np.arccos(bc))
    assert L.fisher_rao(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(math.pi)
    assert L.fisher_rao(2 * p, p) == pytest.approx(0.0, abs=1e-7)  # normalised first
    with pytest.raises(ValueError, match="same categories"):
        L.fisher_rao(p, q[:2])


def test_loss_spread_is_the_plans_ratio():
    losses = [1.0, 2.0, 3.0]
    out = L.landscape(losses, [{"w": np.array([float(i), 0.0])} for i in range(3)])
    assert out["loss_variance"] == pytest.approx(np.var(losses))
    assert out["convergence_consistency"] == pytest.approx(np.std(losses) / 2.0)


def test_output_distributions_share_their_bins():
    rng = np.random.default_rng(0)
    hist = L.output_distributions([rng.normal(size=1000), rng.normal(3.0, 1.0, 1000)], bins=20)
    assert hist.shape == (2, 20) and np.allclose(hist.sum(axis=1), 1.0)
    assert L.fisher_rao(hist[0], hist[1]) > 1.0  # shifted by three sds: far apart


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="one finite loss per seed"):
        L.landscape([float("nan")], [{"w": np.zeros(1)}])
    with pytest.raises(ValueError, match="2 losses but 1 params"):
        L.landscape([1.0, 2.0], [{"w": np.zeros(1)}])
    with pytest.raises(ValueError, match="non-finite"):
        L.output_distributions([np.array([np.inf])])


def test_steps_to_target_and_latency():
    assert L.steps_to_target([5, 10], [3.0, 1.0], 2.0, below=True) == 10
    assert L.steps_to_target([5, 10], [3.0, 4.0], 5.0) is None
    timing = L.latency(lambda x: x + 1, np.ones(3), calls=5, warmup=1)
    assert set(timing) == {"median_s", "p90_s", "mean_s", "calls"} and timing["calls"] == 5
