r"""The Φ-only baseline: pure symbolic rules, their weights tuned by Bayesian optimisation
(the research plan, seed 004 §4.2), made concrete for ``examples/trading.ddm``.

No network and no argmin: the position is a rule written in the program's own interpretable
quantities — 20- and 5-day momentum, volatility, and the trigger of its rule ``calm_down``
("reduce position in high volatility", ``when market_vol > 0.3 sharpness 20``):

    s_i = bias + a · mom20_i / vol_i + b · mom5_i / vol_i        (a trend score per asset)
    t   = σ(κ · (market_vol − θ))                                 (calm_down's trigger)
    w_i = clip(s_i, −1, 1) · (1 − c · t)

with mom5, mom20 and vol annualised exactly as the program computes them (see
:func:`trading_features`), market_vol = mean_i vol_i, and σ the logistic function, the relaxation
the compiler gives a rule's ``when a > b`` (``compiler/rules.py``). The clip is the program's
guard ``position`` (``abs(w) <= 1``, projected). ``bias`` is the rule "the market drifts" (a
constant tilt, long if > 0), a and b trust the trends, c ∈ [0, 1] says how far to cut the
position when the trigger fires, θ and κ are the trigger's threshold and sharpness.

The P&L is the program's, sample by sample, with its inputs ``R: [H, N]``, ``w_prev: [N]`` and
``cost``:

    pnl = dot(w, sum(R, axis=0)) − cost · sum(|w − w_prev|)

and the score is the program's metric ``sharpe(pnl, periods=50)``:
mean / √(var + 10⁻¹²) · √50 (var with ddof 0).

:func:`tune` chooses (bias, a, b, c, θ, κ) in :data:`SPACE` with Optuna's TPE sampler (a
tree-structured Parzen estimator, seeded: the same seed gives the same trials and the same
answer), maximising the Sharpe ratio on the training set. The first trial is the untuned start
(:class:`Rule`'s defaults: 20-day momentum, and ``calm_down`` as the program states it, going
flat above a market volatility of 0.3), so the tuned rule never scores below it on the data it
was tuned on. With ``validation`` > 0 the trials score on the rows before a time-ordered tail
of the training set and the answer is the trial with the best Sharpe ratio on the tail. Needs
the ``experiments`` extra: ``pip install 'ddmc[experiments]'``.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> P = np.cumprod(1 + rng.normal(0.001, 0.01, (300, 21, 4)), axis=1)
>>> P = P / P[:, :1]
>>> R = rng.normal(0.001, 0.01, (300, 5, 4))
>>> ep = episodes(P, R, np.zeros((300, 4)), 5e-4)
>>> t = tune(ep, n_trials=20, seed=0)
>>> positions(t.rule, ep).shape, t.train_sharpe >= t.start_sharpe
((300, 4), True)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Mapping

import numpy as np

from ddm.runtime.baselines.two_stage import _require

PERIODS = 50  # trading.ddm's metric: 252 days a year / 5 days held


@dataclass(frozen=True)
class Rule:
    """The rule's weights (module doc); the defaults are the untuned start."""

    bias: float = 0.0  # constant tilt (long if > 0)
    a: float = 0.2  # weight of mom20/vol (a 20-day Sharpe ratio, so 0.2 is full size at 5)
    b: float = 0.0  # weight of mom5/vol
    c: float = 1.0  # how far to cut when calm_down fires: 0 ignores it, 1 goes flat
    threshold: float = 0.3  # θ, on market_vol (calm_down's 0.3)
    sharpness: float = 20.0  # κ (calm_down's 20)


# name → (low, high, log scale): the box TPE searches
SPACE: Mapping[str, tuple[float, float, bool]] = {
    "bias": (-1.0, 1.0, False),
    "a": (-1.0, 1.0, False),
    "b": (-1.0, 1.0, False),
    "c": (0.0, 1.0, False),
    "threshold": (0.05, 1.0, False),
    "sharpness": (1.0, 100.0, True),
}


@dataclass(frozen=True)
class Episodes:
    """trading.ddm's per-sample quantities, float64: ``mom5``, ``mom20``, ``vol``: ``[n, N]``
    (annualised, as the program's nodes), ``R: [n, H, N]``, ``w_prev: [n, N]``, ``cost: [n]``."""

    mom5: np.ndarray
    mom20: np.ndarray
    vol: np.ndarray
    R: np.ndarray
    w_prev: np.ndarray
    cost: np.ndarray

    @property
    def n(self) -> int:
        return self.mom5.shape[0]

    def rows(self, index) -> "Episodes":
        return Episodes(*(getattr(self, f.name)[index] for f in fields(self)))


def trading_features(P) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mom5, mom20, vol), each ``[n, N]``, from price windows ``P: [n, 21, N]``, as
    trading.ddm's nodes: ret = log(P[1:]/P[:-1]) (20 daily log returns), mom5 = 252·mean of the
    last 5, mom20 = 252·mean of all 20, vol = √252·std (ddof 0)."""
    P = np.asarray(P, np.float64)
    if P.ndim != 3 or P.shape[1] != 21:
        raise ValueError(
            f"P must be price windows [n, 21, N] (trading.ddm's W = 21), got {P.shape}"
        )
    if not np.all(np.isfinite(P)) or not np.all(P > 0):
        raise ValueError("P must hold finite, positive prices")
    ret = np.log(P[:, 1:] / P[:, :-1])
    return 252.0 * ret[:, 15:20].mean(axis=1), 252.0 * ret.mean(axis=1), np.sqrt(252.0) * ret.std(1)


def episodes(P, R, w_prev, cost, features=None) -> Episodes:
    """Checked :class:`Episodes` from the program's inputs: ``P: [n, 21, N]`` (or
    ``features=(mom5, mom20, vol)``, each ``[n, N]``, taken from the program's nodes, with
    ``P=None``), ``R: [n, H, N]``, ``w_prev: [n, N]``, ``cost``: a scalar or ``[n]``."""
    if features is None:
        if P is None:
            raise ValueError("give the price windows P or features=(mom5, mom20, vol)")
        features = trading_features(P)
    mom5, mom20, vol = (np.asarray(f, np.float64) for f in features)
    R, w_prev = np.asarray(R, np.float64), np.asarray(w_prev, np.float64)
    if mom5.ndim != 2 or mom5.shape != mom20.shape or mom5.shape != vol.shape:
        raise ValueError(
            f"mom5, mom20 and vol must be [n, N] alike, got {mom5.shape}, {mom20.shape}, "
            f"{vol.shape}"
        )
    n, N = mom5.shape
    if R.ndim != 3 or R.shape[0] != n or R.shape[2] != N:
        raise ValueError(f"R must be held returns [n, H, N] = [{n}, H, {N}], got {R.shape}")
    if w_prev.shape != (n, N):
        raise ValueError(f"w_prev must be [n, N] = [{n}, {N}], got {w_prev.shape}")
    cost = np.broadcast_to(np.asarray(cost, np.float64), (n,)).copy()
    ep = Episodes(mom5, mom20, vol, R, w_prev, cost)
    for f in fields(ep):
        if not np.all(np.isfinite(getattr(ep, f.name))):
            raise ValueError(f"{f.name} has non-finite values (NaN or ±inf)")
    if np.any(vol <= 0):
        raise ValueError("vol must be > 0 (a window of constant prices has no trend score)")
    if np.any(cost < 0):
        raise ValueError("cost must be >= 0")
    return ep


def positions(rule: Rule, ep: Episodes) -> np.ndarray:
    """The rule's positions ``w: [n, N]`` (module doc)."""
    score = rule.bias + (rule.a * ep.mom20 + rule.b * ep.mom5) / ep.vol
    market_vol = ep.vol.mean(axis=1, keepdims=True)
    # σ(κ(m − θ)) as 1/2·(1 + tanh(κ(m − θ)/2)): the same logistic, without exp overflow
    trigger = 0.5 * (1.0 + np.tanh(0.5 * rule.sharpness * (market_vol - rule.threshold)))
    return np.clip(score, -1.0, 1.0) * (1.0 - rule.c * trigger)


def pnl(w, ep: Episodes) -> np.ndarray:
    """trading.ddm's P&L per sample: dot(w, sum(R, axis=0)) − cost·sum(|w − w_prev|), ``[n]``."""
    w = np.asarray(w, np.float64)
    return np.sum(w * ep.R.sum(axis=1), axis=1) - ep.cost * np.sum(np.abs(w - ep.w_prev), axis=1)


def sharpe(x, periods: int = PERIODS) -> float:
    """The program's ``sharpe(pnl, periods)``: mean/√(var + 10⁻¹²)·√periods (var ddof 0)."""
    x = np.asarray(x, np.float64)
    return float(np.mean(x) / math.sqrt(np.var(x) + 1e-12) * math.sqrt(periods))


@dataclass(frozen=True)
class Tuned:
    """What :func:`tune` found: the ``rule``; Sharpe ratios on the rows it scored trials on
    (``train_sharpe``; all of the training set without validation), of the untuned start there
    (``start_sharpe``) and on the validation tail (``validation_sharpe``, None without one);
    ``n_trials`` and the wall-clock ``seconds`` the search took."""

    rule: Rule
    train_sharpe: float
    start_sharpe: float
    validation_sharpe: float | None
    n_trials: int
    seconds: float


def tune(
    ep: Episodes,
    n_trials: int = 200,
    seed: int = 0,
    validation: float = 0.0,
    periods: int = PERIODS,
    start: Rule = Rule(),
) -> Tuned:
    """The rule's weights maximising the training set's Sharpe ratio, by Optuna's seeded TPE
    sampler over :data:`SPACE` (``start`` is the first trial). ``validation`` in [0, 1): the
    share of rows, at the end, that selects among the trials instead (module doc).
    Deterministic: the same data, ``n_trials`` and ``seed`` give the same rule."""
    optuna = _require("optuna", "the Φ-only baseline's Bayesian optimisation")
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if not 0 <= validation < 1:
        raise ValueError(f"validation is the share of rows held out, in [0, 1); got {validation}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    n_val = int(round(validation * ep.n))
    if ep.n - n_val < 2 or (validation > 0 and n_val < 2):
        raise ValueError(
            f"too few samples: {ep.n} episodes give {ep.n - n_val} to tune on and {n_val} to "
            f"validate (validation={validation}); need at least 2 each"
        )
    fit, tail = ep.rows(slice(0, ep.n - n_val)), ep.rows(slice(ep.n - n_val, ep.n))

    def score(rule: Rule, rows: Episodes) -> float:
        return sharpe(pnl(positions(rule, rows), rows), periods)

    def objective(trial) -> float:
        rule = Rule(
            **{k: trial.suggest_float(k, lo, hi, log=log) for k, (lo, hi, log) in SPACE.items()}
        )
        return score(rule, fit)

    for k, (lo, hi, _) in SPACE.items():
        if not lo <= getattr(start, k) <= hi:
            raise ValueError(
                f"the start's {k} = {getattr(start, k)} is outside SPACE's [{lo}, {hi}]"
            )
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial
    try:
        clock = time.perf_counter()
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True)
        )
        study.enqueue_trial(asdict(start))
        study.optimize(objective, n_trials=n_trials)
        seconds = time.perf_counter() - clock
    finally:
        optuna.logging.set_verbosity(verbosity)
    if n_val:
        # ties go to the earlier trial: max keeps the first
        best = max(study.trials, key=lambda t: score(Rule(**t.params), tail))
    else:
        best = study.best_trial
    rule = Rule(**best.params)
    return Tuned(
        rule,
        score(rule, fit),
        score(start, fit),
        score(rule, tail) if n_val else None,
        n_trials,
        seconds,
    )
