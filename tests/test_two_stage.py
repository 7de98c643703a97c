"""The two-stage baseline's predictors (ddm.runtime.baselines.two_stage): ridge is the closed form
of its documented objective and recovers known coefficients; its α is chosen on the training
set's time-ordered tail alone; gradient-boosted trees learn a nonlinear signal that ridge cannot
and are reproducible for a seed; a user's mistake is a clear error, and a missing optional
dependency names the extra that installs it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from ddm.runtime.baselines import two_stage as ts


def linear(n: int, seed: int, noise: float = 0.1):
    """X [n, 5] on different scales and offsets; Y [n, 3] = X·B + c + noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + np.arange(5.0)
    B = rng.normal(size=(5, 3))
    Y = X @ B + np.array([0.5, -1.0, 2.0]) + noise * rng.normal(size=(n, 3))
    return X, Y, B


def nonlinear(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2.0, 2.0, size=(n, 3))
    Y = np.stack([np.sin(2.0 * X[:, 0]), np.abs(X[:, 1]) - 1.0], axis=1)
    return X, Y + 0.1 * rng.normal(size=Y.shape)


def test_ridge_is_the_closed_form_of_its_objective():
    """(1/n)‖Y_c − Zβ‖² + α‖β‖² on standardised Z is least squares on [Z; √(nα)·I] β = [Y_c; 0]."""
    X, Y, _ = linear(300, seed=1, noise=1.0)
    alpha = 0.3
    p = ts.fit_ridge(X, Y, alphas=(alpha,))
    Z = (X - X.mean(0)) / X.std(0)
    n, F = Z.shape
    A = np.vstack([Z, np.sqrt(n * alpha) * np.eye(F)])
    b = np.vstack([Y - Y.mean(0), np.zeros((F, Y.shape[1]))])
    beta = np.linalg.lstsq(A, b, rcond=None)[0]
    np.testing.assert_allclose(p.coef, beta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p.predict(X), Z @ beta + Y.mean(0), rtol=1e-10, atol=1e-10)


def test_ridge_recovers_known_coefficients():
    X, Y, B = linear(2000, seed=2)
    p = ts.fit_ridge(X, Y)
    assert p.info["alpha"] == min(ts.ALPHAS)  # a clean linear signal wants the least shrinkage
    # on the features' own scale: ordinary least squares (α = 1e-4 shrinks by about 1e-4) …
    A = np.hstack([X, np.ones((len(X), 1))])
    ols = np.linalg.lstsq(A, Y, rcond=None)[0]
    np.testing.assert_allclose(p.coef / p.scale[:, None], ols[:5], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(p.predict(X), A @ ols, atol=1e-2)
    # … and the truth, within 4 standard errors (0.1 noise on a feature of scale 0.1: 0.022)
    np.testing.assert_allclose(p.coef / p.scale[:, None], B, atol=0.09)
    assert p.info["validation_r2"] > 0.99


def test_alpha_is_chosen_on_the_training_sets_tail_only():
    """The validation rows are the last 20 % of the rows given (the training set): α is the grid
    value whose fit on the rows before them scores best there; the test rows never enter."""
    rng = np.random.default_rng(0)
    # a weak signal in much noise: shrinkage pays, and the best α is inside the grid
    X = rng.normal(size=(250, 5))
    Y = X @ (0.1 * rng.normal(size=(5, 2))) + rng.normal(size=(250, 2))
    X_test = rng.normal(size=(1000, 5))
    p = ts.fit_ridge(X, Y)
    assert (p.info["n_fit"], p.info["n_validation"]) == (200, 50)
    by_hand = {}
    for a in ts.ALPHAS:
        fit = ts.fit_ridge(X[:200], Y[:200], alphas=(a,))  # refit on the first 200 rows: its model
        by_hand[a] = ts.r2(Y[200:], fit.predict(X[200:]))
    assert p.info["validation_r2s"] == pytest.approx(by_hand, rel=1e-12)
    assert p.info["alpha"] == max(by_hand, key=lambda a: by_hand[a])
    assert min(ts.ALPHAS) < p.info["alpha"] < max(ts.ALPHAS)
    # …and the final model is the refit on all 250 training rows with that α
    refit = ts.fit_ridge(X, Y, alphas=(p.info["alpha"],))
    np.testing.assert_array_equal(p.predict(X_test), refit.predict(X_test))


def test_r2_is_scikit_learns_uniform_average():
    Y = np.array([[1.0, 0.0], [2.0, 1.0], [3.0, 5.0]])
    Yhat = np.array([[1.5, 0.0], [2.0, 2.0], [2.5, 4.0]])
    per_column = [1 - 0.5 / 2.0, 1 - 2.0 / 14.0]  # SSE / SST about each column's own mean
    assert ts.r2(Y, Yhat) == pytest.approx(np.mean(per_column))


def test_gbt_learns_a_nonlinear_signal_that_ridge_cannot():
    X, Y = nonlinear(1500, seed=4)
    X_test, Y_test = nonlinear(2000, seed=5)
    ridge, gbt = ts.fit_ridge(X, Y), ts.fit_gbt(X, Y)
    assert ts.r2(Y_test, gbt.predict(X_test)) > 0.9
    assert ts.r2(Y_test, ridge.predict(X_test)) < 0.1
    assert gbt.info["validation_r2"] > 0.9 > ridge.info["validation_r2"]
    assert len(gbt.info["best_iterations"]) == 2
    assert all(1 <= k <= 500 for k in gbt.info["best_iterations"])


def test_gbt_is_reproducible_for_a_seed():
    X, Y = nonlinear(600, seed=6)
    X_test, _ = nonlinear(200, seed=7)
    a, b = ts.fit_gbt(X, Y, seed=3), ts.fit_gbt(X, Y, seed=3)
    np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))
    assert a.info == b.info


def test_the_decisions_edge_is_the_prediction_annualised():
    """trading.ddm holds 5 days and its Σ is annual (252·cov): the edge is 50× the prediction."""
    np.testing.assert_allclose(ts.annualised_edge(np.array([0.002, -0.001])), [0.1008, -0.0504])
    np.testing.assert_allclose(ts.annualised_edge(1.0, horizon=21), 12.0)


@pytest.mark.parametrize("fit", [ts.fit_ridge, ts.fit_gbt], ids=["ridge", "gbt"])
def test_mistakes_are_clear_errors(fit):
    X, Y, _ = linear(200, seed=8)
    with pytest.raises(ValueError, match="one row per sample each, got 200 and 199"):
        fit(X, Y[:-1])
    with pytest.raises(ValueError, match=r"X must be a 2-D array \[n, X\], got shape \(200,\)"):
        fit(X[:, 0], Y)
    with pytest.raises(ValueError, match=r"Y has non-finite values \(NaN or ±inf\) in 1 row"):
        fit(X, np.where(np.arange(200)[:, None] == 7, np.nan, Y))
    with pytest.raises(ValueError, match="X has non-finite"):
        fit(np.where(X > 5, np.inf, X), Y)
    with pytest.raises(ValueError, match="too few samples: 6 rows give 5 to fit and 1"):
        fit(X[:6], Y[:6])
    with pytest.raises(ValueError, match=r"validation is the share of rows held out, in \(0, 1\)"):
        fit(X, Y, validation=1.0)
    model = fit(X, Y)
    with pytest.raises(ValueError, match="X has 4 columns but the predictor was fitted on 5"):
        model.predict(X[:, :4])


def test_more_mistakes():
    X, Y, _ = linear(200, seed=9)
    with pytest.raises(ValueError, match="alphas must be finite and > 0"):
        ts.fit_ridge(X, Y, alphas=(0.0, 1.0))
    with pytest.raises(ValueError, match="too few samples: 60 rows give 48 to fit.*at least 50"):
        ts.fit_gbt(X[:60], Y[:60], min_data_in_leaf=25)
    with pytest.raises(ValueError, match="learning_rate > 0"):
        ts.fit_gbt(X, Y, learning_rate=0.0)


def test_a_missing_lightgbm_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm → ImportError
    X, Y, _ = linear(200, seed=10)
    with pytest.raises(ImportError, match=r"needs lightgbm.*pip install 'ddmc\[experiments\]'"):
        ts.fit_gbt(X, Y)
    ts.fit_ridge(X, Y)  # ridge is NumPy alone
