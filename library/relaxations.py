"""Differentiable relaxations of Φ artifacts (seed §7.2–7.3): regime detection and concept
retrieval.

``gumbel_softmax`` relaxes an if-then regime switch: a categorical choice among the last axis's
regimes, drawn by the Gumbel-max trick and softened by a temperature. It is the library's one
random op (``extra["random"]``): lowering hands it ``key=`` — a JAX key folded from the
evaluation's key with the sample's position in the batch, the value's id and, inside a ``scan``,
the step — only when the evaluation has a key. Training draws noise (the train step passes a
key per step); evaluation (``apply``, ``metrics``, a loss without a key) is deterministic:
``softmax(logits / temperature)``, the noise's mode.

``retrieve`` replaces hard set matching by attention: concepts with embeddings ``E: [K, D]``
and Φ-weights (a prior) ``p: [K]`` are read by a query ``q: [D]`` as
``a = softmax(p + E·q / √D)``, ``h = Σₖ aₖ Eₖ`` — the seed's ``c = softmax(W_phi);
h = Σᵢ cᵢ · embed(Φᵢ)`` with the similarity added to the prior's logits.

>>> import jax.numpy as jnp
>>> _gumbel_softmax(jnp.array([0.0, 0.0]), 1.0).tolist()
[0.5, 0.5]
>>> _retrieve(jnp.zeros(2), jnp.eye(2), jnp.zeros(2)).tolist()
[0.5, 0.5]
"""

from __future__ import annotations

import math

from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, broadcast_shapes, promote


def _number(t: TensorType, name: str, what: str, arg: int) -> None:
    if t.dtype == "bool":
        raise DtypeError(
            f"{name}'s {what} must be numbers, got {t}", arg=arg, hint="cast with f32(...) first"
        )


def _float_dtype(*types: TensorType, verb: str) -> str:
    """The promoted dtype of ``types``, integers computed in the working float (f32)."""
    acc = types[0]
    for t in types[1:]:
        acc = TensorType(promote(acc, t, verb), (), acc.weak and t.weak)
    return acc.dtype if acc.is_float else "f32"


def _to_float(x):
    if isinstance(x, (bool, int)):
        return float(x)
    if isinstance(x, float):
        return x
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(float)


# --- regime detection: Gumbel-softmax ------------------------------------------------------------


def _gumbel_rule(types, static):
    logits, tau = types
    _number(logits, "gumbel_softmax", "logits", 0)
    _number(tau, "gumbel_softmax", "temperature", 1)
    if logits.ndim == 0:
        raise ShapeError(
            f"gumbel_softmax chooses along the last axis of its logits (the "
            f"regimes), got a scalar {logits}",
            arg=0,
            hint="give one logit per regime, e.g. f32[K]",
        )
    if broadcast_shapes(logits.shape, tau.shape) != tuple(logits.shape):
        raise ShapeError(
            f"gumbel_softmax's temperature {tau} does not broadcast to its logits {logits}",
            arg=1,
            hint="a scalar temperature, e.g. param tau: f32 = 1.0 positive",
        )
    return TensorType(_float_dtype(logits, tau, verb="divide"), logits.shape)


def _gumbel_softmax(logits, temperature=1.0, hard=False, key=None):
    """``logits: [..., K]``, ``temperature`` broadcasting to them → ``[..., K]``, each row on
    the simplex. With ``key``: ``softmax((logits + g) / τ)``, ``g`` standard Gumbel noise drawn
    from ``key``; without: ``softmax(logits / τ)``. ``hard``: the row's one-hot argmax forward,
    the soft row's gradient backward (straight-through)."""
    z = _to_float(logits)
    if key is not None:
        z = z + jax.random.gumbel(key, jnp.shape(z), jnp.result_type(z))
    y = jax.nn.softmax(z / _to_float(temperature), axis=-1)
    if hard:
        one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), y.shape[-1], dtype=y.dtype)
        # y − sg(y) is exactly 0 forward (the one-hot stays exact) and the identity backward
        y = one_hot + (y - jax.lax.stop_gradient(y))
    return y


# --- concept retrieval: similarity attention -----------------------------------------------------


def _retrieval_types(types, name: str) -> str:
    q, emb, prior = types
    _number(q, name, "query", 0)
    _number(emb, name, "embeddings", 1)
    _number(prior, name, "prior", 2)
    if q.ndim != 1:
        raise ShapeError(f"{name}'s query must be a vector [D], got {q}", arg=0)
    if emb.ndim != 2:
        raise ShapeError(
            f"{name}'s embeddings must be a matrix [K, D], one row per concept, got {emb}", arg=1
        )
    if emb.shape[1] != q.shape[0]:
        raise ShapeError(
            f"{name}: the embeddings {emb} have rows of length {emb.shape[1]}, "
            f"the query {q} has length {q.shape[0]}",
            arg=1,
            hint="embeddings are [K, D] for a query [D]: one row per concept",
        )
    if prior.ndim != 1 or prior.shape[0] != emb.shape[0]:
        raise ShapeError(
            f"{name}'s prior must be [{emb.shape[0]}], one weight per concept "
            f"(row of the embeddings {emb}), got {prior}",
            arg=2,
        )
    return _float_dtype(q, emb, prior, verb="retrieve with")


def _retrieve_rule(types, static):
    q, emb, _ = types
    return TensorType(_retrieval_types(types, "retrieve"), (q.shape[0],))


def _weights_rule(types, static):
    _, emb, _ = types
    return TensorType(_retrieval_types(types, "retrieve_weights"), (emb.shape[0],))


def _retrieve_weights(query, embeddings, prior):
    """``a = softmax(prior + E·q / √D)``: ``q: [D]``, ``E: [K, D]``, ``prior: [K]`` → ``[K]``."""
    q, emb, prior = _to_float(query), _to_float(embeddings), _to_float(prior)
    # the shape rule makes q: [D] and E: [K, D] arrays, not the Python numbers _to_float passes
    assert not isinstance(q, (int, float)) and not isinstance(emb, (int, float))
    scores = prior + emb @ q / math.sqrt(q.shape[-1])
    return jax.nn.softmax(scores, axis=-1)


def _retrieve(query, embeddings, prior):
    """``h = Σₖ aₖ Eₖ = aᵀE`` with ``a`` the attention of :func:`_retrieve_weights` → ``[D]``."""
    return _retrieve_weights(query, embeddings, prior) @ _to_float(embeddings)


RETRIEVAL = (Arg("query"), Arg("embeddings"), Arg("prior"))

OPS = (
    Op(
        "gumbel_softmax",
        (Arg("logits"), Arg("temperature", "tensor", 1.0), Arg("hard", "bool", False)),
        _gumbel_rule,
        _gumbel_softmax,
        "Regime detection: a relaxed one-hot choice along the last axis of logits [..., K]. "
        "Training draws Gumbel noise, softmax((logits + g) / temperature), from the run's "
        "key; evaluation (apply, metrics, no key) is deterministic, softmax(logits / "
        "temperature). temperature (> 0) may be a positive param; hard=true gives the one-hot "
        "argmax forward and the soft gradient backward (straight-through).",
        family="gumbel",
        extra={"random": True, "nonnegative": ("temperature",)},
    ),
    Op(
        "retrieve",
        RETRIEVAL,
        _retrieve_rule,
        _retrieve,
        "Differentiable concept retrieval: query [D], embeddings [K, D], prior [K] (Φ-weights) "
        "→ [D] = Σₖ aₖ·embeddings[k] with attention a = softmax(prior + embeddings @ query / "
        "sqrt(D)).",
        family="retrieval",
    ),
    Op(
        "retrieve_weights",
        RETRIEVAL,
        _weights_rule,
        _retrieve_weights,
        "The attention of retrieve(query, embeddings, prior): [K] = softmax(prior + "
        "embeddings @ query / sqrt(D)), summing to 1 (to log or penalise).",
        family="retrieval",
    ),
)
