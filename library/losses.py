"""Losses and evaluation metrics. Each reduces to a scalar and checks its operands' shapes
before any arithmetic. Inside ``loss``/``metric``, a per-sample node denotes its batch of values,
so ``bce(p, y)`` averages over the batch."""
from __future__ import annotations

from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, promote


def _pair_rule(name):
    def rule(types, static):
        a, b = types
        for i, t in enumerate(types):
            if t.dtype == "bool":
                raise DtypeError(f"{name} expects numbers, got {t}", arg=i,
                                 hint="cast labels with f32(...)")
        if a.shape != b.shape and not (a.weak or b.weak):
            raise ShapeError(f"{name} needs operands of the same shape, got {a} and {b}", arg=1)
        dtype = promote(a, b, name)
        return TensorType(dtype if dtype in ("f32", "f64") else "f32", ())
    return rule


def _vector_pair_rule(name):
    base = _pair_rule(name)

    def rule(types, static):
        if types[0].ndim != 1:
            raise ShapeError(f"{name} takes vectors (one value per sample), got {types[0]}",
                             arg=0)
        return base(types, static)
    return rule


def _vector_rule(name):
    def rule(types, static):
        (r,) = types
        if r.ndim != 1:
            raise ShapeError(f"{name} takes a vector of returns, got {r}", arg=0)
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


OPS = (
    Op("bce", (Arg("p"), Arg("y"), Arg("eps", "float", 1e-7)), _pair_rule("bce"), _bce,
       "Binary cross-entropy of probabilities p against labels y in {0, 1}, averaged; p is "
       "clipped to [eps, 1 − eps].", family="pair"),
    Op("bce_logits", (Arg("z"), Arg("y")), _pair_rule("bce_logits"), _bce_logits,
       "Binary cross-entropy from logits z (σ(z) = p), averaged; overflow-safe.",
       family="pair"),
    Op("mse", (Arg("a"), Arg("b")), _pair_rule("mse"), lambda a, b: jnp.mean(jnp.square(a - b)),
       "Mean squared error.", family="pair"),
    Op("accuracy", (Arg("p"), Arg("y"), Arg("threshold", "float", 0.5)), _pair_rule("accuracy"),
       _accuracy, "Share of samples with (p > threshold) == (y > 0.5).", family="pair"),
    Op("auc", (Arg("score"), Arg("label")), _vector_pair_rule("auc"), _auc,
       "Area under the ROC curve of scores against labels in {0, 1} (rank statistic; ties "
       "count half). Not differentiable in any useful sense: a metric.", family="vector_pair"),
    Op("sharpe", (Arg("r"), Arg("periods", "int", 1), Arg("eps", "float", 1e-12)),
       _vector_rule("sharpe"), _sharpe,
       "mean(r) / sqrt(var(r) + eps) · sqrt(periods): periods=252 annualises daily returns.",
       family="vector"),
)
