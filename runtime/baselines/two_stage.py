r"""The modular two-stage baseline, stage 1: predict each asset's return over the holding
period from the features the end-to-end network sees, fitted to the training set alone.

The research plan's "modular ML" baseline (seed 004, §4.1) predicts first and optimises after,
each stage fitted on its own: a predictor is trained for accuracy (squared error), and the
decision maker then receives its prediction as the edge, with no gradient from the P&L reaching
the predictor. For ``examples/trading.ddm`` the inputs are

- ``X: [n, F]``, the program's node ``x`` (F = 12: mom5/4, mom20/2, 4·vol per asset), the
  same features its network ``net`` reads;
- ``Y: [n, N]``, the target: each asset's summed simple return over the held days,
  ``sum(R, axis=0)``, the per-asset factor of the program's P&L ``dot(w, sum(R, axis=0))``.

Two predictors, each selecting its hyper-parameters on a **time-ordered validation tail**: the
last ``round(validation·n)`` rows of the training set (never the test set, which neither
function sees):

- :func:`fit_ridge`: ridge regression on standardised features, all assets jointly, in closed
  form. With Z the features standardised by the fitting rows' mean and standard deviation and
  Y_c the targets centred by their mean (the intercept is not penalised),

      β(α) = argmin_β (1/n)·‖Y_c − Zβ‖² + α·‖β‖²  =  (ZᵀZ + n·α·I)⁻¹ ZᵀY_c,

  which is scikit-learn's ``Ridge(alpha=n·α)`` on Z. α is the grid value with the highest
  validation R² for a fit on the rows before the tail; the model is then refitted on every
  training row with that α.
- :func:`fit_gbt`: gradient-boosted trees (LightGBM), one model per asset (LightGBM has no
  multi-output regression), single-threaded and deterministic for a seed; each stops early on
  the validation tail (its best iteration), then is refitted on every training row for that
  many rounds. Needs the ``experiments`` extra: ``pip install 'ddmc[experiments]'``.

R² is scikit-learn's ``r2_score`` with its default uniform average: per asset
1 − Σ(y − ŷ)² / Σ(y − ȳ)² over the validation rows (ȳ their own mean), averaged over assets.

Stage 2 — the decision — is the program's own argmin with its hyper-parameters fixed and its
node ``b`` replaced by the prediction (a graph rewrite, outside this module). The prediction is
in the target's units: the expected return of each asset summed over the holding period (for
trading.ddm about 0.003 on average, five days of a 0.15 annual drift). The decision's risk term
is in annual units (``Sigma = 252·cov(daily returns)``), so mean-variance consistency asks for
an annual edge too: :func:`annualised_edge` multiplies by days/horizon (252/5 = 50). Given the
raw prediction, trading.ddm's argmin (λ_risk = 1, λ_cost = 0.1) barely moves from ``w_prev``:
the edge is 50 times too small for its Σ and its cost term.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(500, 3))
>>> Y = X @ np.array([[1.0], [0.0], [-2.0]]) + 0.1 * rng.normal(size=(500, 1))
>>> p = fit_ridge(X, Y)
>>> p.predict(X[:2]).shape, round(p.info["validation_r2"], 2)
((2, 1), 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Protocol

import numpy as np

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
INSTALL = "pip install 'ddmc[experiments]'"


class Predictor(Protocol):
    """A fitted stage-1 model: ``predict(X: [m, F]) → [m, N]``; ``info`` says what was chosen
    (α or the best iterations) and the validation R²."""

    info: Mapping[str, Any]

    def predict(self, X) -> np.ndarray: ...


def _require(module: str, what: str):
    """Import an optional dependency of the ``experiments`` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{what} needs {module}, which is not installed: {INSTALL} (or: pip install {module})"
        ) from None


def _matrix(name: str, a, columns: int | None = None) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, {name[-1]}], got shape {arr.shape}")
    if columns is not None and arr.shape[1] != columns:
        raise ValueError(
            f"{name} has {arr.shape[1]} columns but the predictor was fitted on {columns}"
        )
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.all(np.isfinite(arr), axis=1)))
        raise ValueError(f"{name} has non-finite values (NaN or ±inf) in {bad} row(s)")
    return arr


def _split(X, Y, validation: float, least_fit: int = 2) -> tuple[np.ndarray, np.ndarray, int]:
    """Checked float64 copies of X and Y and the number of fitting rows: the validation tail
    is ``X[n_fit:]``, the last ``round(validation·n)`` rows."""
    X, Y = _matrix("X", X), _matrix("Y", Y)
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y need one row per sample each, got {X.shape[0]} and {Y.shape[0]}")
    if not 0 < validation < 1:
        raise ValueError(f"validation is the share of rows held out, in (0, 1); got {validation}")
    n = X.shape[0]
    n_val = int(round(validation * n))
    if n_val < 2 or n - n_val < least_fit:
        raise ValueError(
            f"too few samples: {n} rows give {n - n_val} to fit and {n_val} to validate "
            f"(validation={validation}); need at least {least_fit} and 2"
        )
    return X, Y, n - n_val


def r2(Y, Yhat) -> float:
    """R² of ``Yhat`` for ``Y`` (both ``[n, N]``): per column 1 − SSE/SST around the column's
    own mean, averaged over columns (scikit-learn's ``r2_score``, uniform average). A constant
    column scores 1 if predicted exactly, else 0 (scikit-learn's convention)."""
    Y, Yhat = np.asarray(Y, np.float64), np.asarray(Yhat, np.float64)
    sse = np.sum((Y - Yhat) ** 2, axis=0)
    sst = np.sum((Y - Y.mean(axis=0)) ** 2, axis=0)
    score = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), (sse == 0) * 1.0)
    return float(np.mean(score))


def annualised_edge(pred, horizon: int = 5, days: int = 252) -> np.ndarray:
    """A prediction of the return summed over ``horizon`` days as an annual expected return,
    ``pred · days / horizon``: the units of trading.ddm's Σ (252·cov of daily returns), in
    which ``lam_risk·vᵀΣv − bᵀv`` is annual mean-variance with risk aversion 2·λ_risk.

    >>> round(float(annualised_edge(0.003)), 6)
    0.1512
    """
    if horizon < 1 or days < 1:
        raise ValueError(f"need horizon >= 1 and days >= 1, got {horizon}, {days}")
    return np.asarray(pred, np.float64) * (days / horizon)


# --- ridge --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RidgePredictor:
    """Ŷ = ((X − mean)/scale)·coef + intercept; coef ``[F, N]``, intercept ``[N]``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    info: Mapping[str, Any] = field(default_factory=dict)

    def predict(self, X) -> np.ndarray:
        Z = (_matrix("X", X, self.mean.size) - self.mean) / self.scale
        return Z @ self.coef + self.intercept


def _ridge(X: np.ndarray, Y: np.ndarray, alpha: float) -> RidgePredictor:
    mean = X.mean(axis=0)
    # a constant feature standardises to 0 (scale 1 keeps it there instead of dividing by 0)
    std = X.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    Z = (X - mean) / scale
    y_mean = Y.mean(axis=0)
    n, F = Z.shape
    # the normal equations of (1/n)‖Y_c − Zβ‖² + α‖β‖²: (ZᵀZ + nαI) β = ZᵀY_c; symmetric
    # positive definite for α > 0
    coef = np.linalg.solve(Z.T @ Z + n * alpha * np.eye(F), Z.T @ (Y - y_mean))
    return RidgePredictor(mean, scale, coef, y_mean)


def fit_ridge(X, Y, alphas=ALPHAS, validation: float = 0.2) -> RidgePredictor:
    """Ridge regression of ``Y: [n, N]`` on ``X: [n, F]`` (module doc), α chosen from ``alphas``
    (each > 0, on the scale of standardised features: 1e-2 shrinks as 1 % of a feature's own
    variance) by R² on the last ``validation`` share of the rows, then refitted on all rows.

    ``info``: ``alpha`` (chosen), ``validation_r2`` (its R² on the tail), ``validation_r2s``
    (α → R² for the whole grid), ``n_fit`` and ``n_validation``.
    """
    alphas = tuple(float(a) for a in np.atleast_1d(np.asarray(alphas, dtype=np.float64)))
    if not alphas or not all(a > 0 and math.isfinite(a) for a in alphas):
        raise ValueError(f"alphas must be finite and > 0, got {alphas}")
    X, Y, n_fit = _split(X, Y, validation)
    scores = {}
    for a in alphas:
        scores[a] = r2(Y[n_fit:], _ridge(X[:n_fit], Y[:n_fit], a).predict(X[n_fit:]))
    # ties go to the larger α (the simpler model): the grid is scanned from the top
    best = max(sorted(alphas, reverse=True), key=lambda a: scores[a])
    model = _ridge(X, Y, best)
    info = {
        "alpha": best,
        "validation_r2": scores[best],
        "validation_r2s": scores,
        "n_fit": n_fit,
        "n_validation": X.shape[0] - n_fit,
    }
    return RidgePredictor(
        model.mean, model.scale, model.coef, model.intercept, MappingProxyType(info)
    )


# --- gradient-boosted trees --------------------------------------------------------------------
@dataclass(frozen=True)
class GBTPredictor:
    """One LightGBM booster per asset (column of Y); ``predict`` stacks their predictions."""

    boosters: tuple
    features: int
    info: Mapping[str, Any] = field(default_factory=dict)

    def predict(self, X) -> np.ndarray:
        X = _matrix("X", X, self.features)
        return np.stack([b.predict(X) for b in self.boosters], axis=1)


def fit_gbt(
    X,
    Y,
    validation: float = 0.2,
    seed: int = 0,
    learning_rate: float = 0.05,
    num_leaves: int = 15,
    min_data_in_leaf: int = 20,
    max_rounds: int = 500,
    patience: int = 50,
) -> GBTPredictor:
    """Gradient-boosted regression trees (LightGBM, squared error), one model per column of
    ``Y: [n, N]`` on ``X: [n, F]``: each is trained on the rows before the validation tail
    with early stopping on the tail (``patience`` rounds without improvement, at most
    ``max_rounds``), then refitted on all rows for its best number of rounds. Deterministic:
    ``seed``, ``deterministic=True``, one thread, no bagging.

    ``info``: ``best_iterations`` (per asset), ``validation_r2`` (the early-stopped models' R²
    on the tail), ``n_fit``, ``n_validation``. Needs ``pip install 'ddmc[experiments]'``.
    """
    lgb = _require("lightgbm", "the two-stage baseline's gradient-boosted trees")
    if not (learning_rate > 0 and num_leaves >= 2 and min_data_in_leaf >= 1):
        raise ValueError(
            f"need learning_rate > 0, num_leaves >= 2, min_data_in_leaf >= 1; got "
            f"{learning_rate}, {num_leaves}, {min_data_in_leaf}"
        )
    if not (max_rounds >= 1 and patience >= 1):
        raise ValueError(f"need max_rounds >= 1 and patience >= 1, got {max_rounds}, {patience}")
    X, Y, n_fit = _split(X, Y, validation, least_fit=2 * min_data_in_leaf)
    params = {
        "objective": "regression",
        "learning_rate": learning_rate,
        "num_leaves": num_leaves,
        "min_data_in_leaf": min_data_in_leaf,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,  # the choice LightGBM would time otherwise: not reproducible
        "num_threads": 1,
        "verbosity": -1,
    }
    early, full, best = [], [], []
    for j in range(Y.shape[1]):
        train = lgb.Dataset(X[:n_fit], Y[:n_fit, j], params={"verbosity": -1})
        valid = lgb.Dataset(X[n_fit:], Y[n_fit:, j], reference=train)
        booster = lgb.train(
            params,
            train,
            num_boost_round=max_rounds,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(patience, verbose=False)],
        )
        rounds = max(int(booster.best_iteration), 1)
        early.append(booster.predict(X[n_fit:], num_iteration=rounds))
        best.append(rounds)
        full.append(lgb.train(params, lgb.Dataset(X, Y[:, j]), num_boost_round=rounds))
    info = {
        "best_iterations": tuple(best),
        "validation_r2": r2(Y[n_fit:], np.stack(early, axis=1)),
        "n_fit": n_fit,
        "n_validation": X.shape[0] - n_fit,
    }
    return GBTPredictor(tuple(full), X.shape[1], MappingProxyType(info))
