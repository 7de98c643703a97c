"""Losses and evaluation metrics. Each reduces to a scalar and checks its operands' shapes
before any arithmetic. Inside ``loss``/``metric``, a per-sample node denotes its batch of values,
so ``bce(p, y)`` averages over the batch."""

from __future__ import annotations

import math

from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, NoGrad, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, promote


def _pair_rule(name):
    def rule(types, static):
        a, b = types
        for i, t in enumerate(types):
            if t.dtype == "bool":
                raise DtypeError(
                    f"{name} expects numbers, got {t}", arg=i, hint="cast labels with f32(...)"
                )
        if a.shape != b.shape and not (a.weak or b.weak):
            raise ShapeError(f"{name} needs operands of the same shape, got {a} and {b}", arg=1)
        dtype = promote(a, b, name)
        return TensorType(dtype if dtype in ("f32", "f64") else "f32", ())

    return rule


def _vector_pair_rule(name):
    base = _pair_rule(name)

    def rule(types, static):
        if types[0].ndim != 1:
            raise ShapeError(f"{name} takes vectors (one value per sample), got {types[0]}", arg=0)
        return base(types, static)

    return rule


def vector_rule(name, what="returns"):
    """One vector (a value per sample) → a scalar; floats kept, integers give f32."""

    def rule(types, static):
        (r,) = types
        if r.ndim != 1:
            raise ShapeError(f"{name} takes a vector of {what}, got {r}", arg=0)
        if r.dtype == "bool":
            raise DtypeError(f"{name} expects numbers, got {r}", arg=0)
        return TensorType(r.dtype if r.is_float else "f32", ())

    return rule


def _bce(p, y, eps=1e-7):
    p = jnp.clip(p, eps, 1 - eps)
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))


def _bce_logits(z, y):
    # −[y log σ(z) + (1 − y) log σ(−z)], written with log_sigmoid so large |z| cannot overflow.
    return -jnp.mean(y * jax.nn.log_sigmoid(z) + (1 - y) * jax.nn.log_sigmoid(-z))


def _auc(score, label):
    # Mann–Whitney U: P(score of a positive > score of a negative), ties counted half via
    # average ranks.
    n = score.shape[0]
    order = jnp.argsort(score)
    sorted_scores = score[order]
    # 1-based average rank of each run of equal scores
    first = jnp.searchsorted(sorted_scores, sorted_scores, side="left")
    last = jnp.searchsorted(sorted_scores, sorted_scores, side="right")
    avg = (first + last + 1) / 2.0
    ranks = jnp.zeros(n, score.dtype).at[order].set(avg.astype(score.dtype))
    pos = (label > 0.5).astype(score.dtype)
    n_pos = jnp.sum(pos)
    n_neg = n - n_pos
    return (jnp.sum(ranks * pos) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _sharpe(r, periods=1, eps=1e-12):
    return jnp.mean(r) / jnp.sqrt(jnp.var(r) + eps) * jnp.sqrt(periods)


def _accuracy(p, y, threshold=0.5):
    return jnp.mean(((p > threshold) == (y > 0.5)).astype(p.dtype))


def _risk_rule(name, check=None):
    """A vector of P&L or returns → a scalar; ``check(static)`` validates static arguments."""
    base = vector_rule(name)

    def rule(types, static):
        if check is not None:
            problem = check(static)
            if problem:
                raise ShapeError(f"{name}: {problem}")
        return base(types, static)

    return rule


def _smooth_sharpe(r, eps=1e-6, cap=100.0):
    # The plan's surrogate: mean / sqrt(var + eps), and ±cap (by the sign of the mean) where
    # that is not finite. The ratio is computed on finite stand-ins, so the branch not taken
    # never puts NaN into the gradient (jnp.where differentiates both branches).
    finite = jnp.all(jnp.isfinite(r))
    safe = jnp.where(finite, r, 0.0)
    ratio = jnp.mean(safe) / jnp.sqrt(jnp.var(safe) + eps)
    fallback = jnp.sign(jnp.nan_to_num(jnp.mean(r), nan=0.0)) * cap
    return jnp.where(finite & jnp.isfinite(ratio), ratio, jax.lax.stop_gradient(fallback))


def _expected_shortfall(pnl, alpha=0.05):
    # The mean of the worst ⌈αn⌉ losses (−pnl): exact for the empirical distribution, with
    # the subgradient of a sort. n is static, so k is too.
    n = pnl.shape[0]
    k = max(1, min(n, math.ceil(alpha * n - 1e-9)))  # 1e-9: 0.05·100 may round above 5
    worst, _ = jax.lax.top_k(-pnl, k)
    return jnp.mean(worst)


def _entropic_risk(pnl, lam=1.0):
    # (1/λ) log E[exp(−λ·pnl)] as a log-sum-exp: no overflow for large losses.
    n = pnl.shape[0]
    return (jax.nn.logsumexp(-lam * pnl) - jnp.log(float(n))) / lam


def _positive(name):
    return lambda static: (
        f"{name} must be positive, got {static[name]}" if not static[name] > 0 else None
    )


def _alpha(static):
    a = static["alpha"]
    return None if 0 < a <= 1 else f"alpha must be in (0, 1], got {a}"


OPS = (
    Op(
        "bce",
        (Arg("p"), Arg("y"), Arg("eps", "float", 1e-7)),
        _pair_rule("bce"),
        _bce,
        "Binary cross-entropy of probabilities p against labels y in {0, 1}, averaged; p is "
        "clipped to [eps, 1 − eps].",
        family="pair",
    ),
    Op(
        "bce_logits",
        (Arg("z"), Arg("y")),
        _pair_rule("bce_logits"),
        _bce_logits,
        "Binary cross-entropy from logits z (σ(z) = p), averaged; overflow-safe.",
        family="pair",
    ),
    Op(
        "mse",
        (Arg("a"), Arg("b")),
        _pair_rule("mse"),
        lambda a, b: jnp.mean(jnp.square(a - b)),
        "Mean squared error.",
        family="pair",
    ),
    Op(
        "accuracy",
        (Arg("p"), Arg("y"), Arg("threshold", "float", 0.5)),
        _pair_rule("accuracy"),
        _accuracy,
        "Share of samples with (p > threshold) == (y > 0.5). A metric: no gradient.",
        family="pair",
        no_grad=NoGrad(("p", "y"), "metric"),
    ),
    Op(
        "auc",
        (Arg("score"), Arg("label")),
        _vector_pair_rule("auc"),
        _auc,
        "Area under the ROC curve of scores against labels in {0, 1} (rank statistic; ties "
        "count half). Not differentiable in any useful sense: a metric.",
        family="vector_pair",
        no_grad=NoGrad(("score", "label"), "metric"),
    ),
    Op(
        "sharpe",
        (Arg("r"), Arg("periods", "int", 1), Arg("eps", "float", 1e-12)),
        vector_rule("sharpe"),
        _sharpe,
        "mean(r) / sqrt(var(r) + eps) · sqrt(periods): periods=252 annualises daily returns.",
        family="vector",
    ),
    Op(
        "smooth_sharpe",
        (Arg("r"), Arg("eps", "float", 1e-6), Arg("cap", "float", 100.0)),
        _risk_rule("smooth_sharpe", _positive("eps")),
        _smooth_sharpe,
        "A Sharpe ratio safe to train on: mean(r) / sqrt(var(r) + eps), and sign(mean)·cap "
        "(no gradient) where that is not finite. Maximise it: loss = -smooth_sharpe(pnl).",
        family="vector",
    ),
    Op(
        "hinge_return",
        (Arg("r"), Arg("threshold", "float", 0.0)),
        _risk_rule("hinge_return"),
        lambda r, threshold=0.0: jnp.mean(jax.nn.relu(threshold - r)),
        "mean(max(threshold − r, 0)): the average shortfall of returns below a threshold.",
        family="vector",
    ),
    Op(
        "expected_shortfall",
        (Arg("pnl"), Arg("alpha", "float", 0.05)),
        _risk_rule("expected_shortfall", _alpha),
        _expected_shortfall,
        "Expected shortfall (CVaR) at level alpha: the mean loss (−pnl) over the worst "
        "⌈alpha·n⌉ samples of the batch. alpha=1 is the mean loss.",
        family="vector",
    ),
    Op(
        "cvar",
        (Arg("pnl"), Arg("alpha", "float", 0.05)),
        _risk_rule("cvar", _alpha),
        _expected_shortfall,
        "Same as expected_shortfall.",
        family="vector",
    ),
    Op(
        "entropic_risk",
        (Arg("pnl"), Arg("lam", "float", 1.0)),
        _risk_rule("entropic_risk", _positive("lam")),
        _entropic_risk,
        "Entropic risk (1/λ)·log E[exp(−λ·pnl)] with risk aversion λ, overflow-safe "
        "(log-sum-exp). λ → 0 gives the mean loss; larger λ weighs losses more.",
        family="vector",
    ),
)
