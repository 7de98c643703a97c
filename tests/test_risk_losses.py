"""Risk losses: values against their definitions, robustness where naive formulas break,
gradients in float64, and their use from the language."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ddm
from ddm.library.losses import OPS

pytestmark = pytest.mark.usefixtures("float64")
IMPL = {op.name: op.impl for op in OPS}
PNL = np.array([0.3, -1.2, 0.5, -0.1, 2.0, -3.0, 0.7, 0.0, -0.4, 1.1])


def test_entropic_risk_matches_its_definition_and_does_not_overflow():
    lam = 0.7
    direct = math.log(np.mean(np.exp(-lam * PNL))) / lam
    assert float(IMPL["entropic_risk"](jnp.asarray(PNL), lam=lam)) == pytest.approx(
        direct, rel=1e-12
    )
    huge = jnp.array([-1000.0, 0.0, 5.0])  # exp(1000) overflows float64
    assert float(IMPL["entropic_risk"](huge, lam=1.0)) == pytest.approx(
        1000 - math.log(3), rel=1e-12
    )
    # λ → 0: the mean loss
    assert float(IMPL["entropic_risk"](jnp.asarray(PNL), lam=1e-6)) == pytest.approx(
        -PNL.mean(), abs=1e-5
    )


def test_expected_shortfall_is_the_mean_of_the_worst_losses_with_their_gradient():
    es = IMPL["expected_shortfall"]
    assert float(es(jnp.asarray(PNL), alpha=0.2)) == pytest.approx((3.0 + 1.2) / 2)
    assert float(es(jnp.asarray(PNL), alpha=1.0)) == pytest.approx(-PNL.mean())
    assert float(es(jnp.asarray(PNL), alpha=0.01)) == pytest.approx(3.0)  # at least one sample
    g = np.asarray(jax.grad(lambda p: es(p, alpha=0.2))(jnp.asarray(PNL)))
    expected = np.zeros_like(PNL)
    expected[[1, 5]] = -0.5
    np.testing.assert_array_equal(g, expected)
    assert IMPL["cvar"] is es


def test_smooth_sharpe_is_finite_with_a_finite_gradient_on_bad_returns():
    ss = IMPL["smooth_sharpe"]
    r = jnp.asarray(PNL)
    assert float(ss(r)) == pytest.approx(PNL.mean() / math.sqrt(PNL.var() + 1e-6))
    g = jax.grad(lambda r: ss(r))(r)
    h = 1e-6
    fd = [(float(ss(r.at[i].add(h))) - float(ss(r.at[i].add(-h)))) / (2 * h) for i in range(r.size)]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)
    bad = r.at[3].set(jnp.inf)
    assert float(ss(bad, cap=50.0)) == 50.0
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda r: ss(r))(bad))))
    assert float(ss(jnp.zeros(4))) == 0.0  # constant returns: eps keeps the ratio finite


def test_hinge_return_averages_the_shortfall_below_the_threshold():
    assert float(IMPL["hinge_return"](jnp.asarray(PNL), threshold=0.5)) == pytest.approx(
        np.mean(np.maximum(0.5 - PNL, 0))
    )


def test_risk_losses_train_from_the_language_and_check_their_arguments(tmp_path):
    prog = ddm.loads(
        """
        input r: f32
        param w: f32 = 1.0
        node pnl = w * r
        loss = entropic_risk(pnl, lam=2.0) + expected_shortfall(pnl, alpha=0.1)
            - smooth_sharpe(pnl) + hinge_return(pnl)
        metric es = cvar(pnl, alpha=0.5)
    """,
        x64=True,
    )
    params = prog.init(jax.random.key(0))
    batch = {"r": jnp.asarray(PNL)}
    g = jax.grad(prog.loss)(params, batch)
    assert np.isfinite(float(g["w"]))
    with pytest.raises(ddm.DdmError) as info:
        ddm.loads("input r: f32\nloss = expected_shortfall(r, alpha=1.5)\n", file="es.ddm")
    assert "es.ddm:2:8" in str(info.value) and "alpha must be in (0, 1]" in str(info.value)
