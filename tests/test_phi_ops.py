"""Φ-layer relaxations (seed §7.2–7.3): ``gumbel_softmax`` and ``retrieve``.

Specifications:

- shape rules: the inferred types of good calls, and located diagnostics for bad ones;
- ``gumbel_softmax`` without a key (evaluation) is ``softmax(logits / τ)``; with a key
  (training) it draws Gumbel noise: rows on the simplex, the same key gives the same bits, other
  keys, other samples of a batch and other steps of a scan draw other noise, hard draws are
  exact one-hots whose frequencies are ``softmax(logits)`` (the Gumbel-max trick), and the
  gradient with the noise fixed by its key matches finite differences (hard: the soft
  gradient, straight-through);
- ``retrieve`` is ``Σₖ aₖ Eₖ`` with ``a = softmax(prior + E·q / √D)`` = ``retrieve_weights``,
  its gradient matches finite differences in float64;
- the formatter round-trips programs calling them.

Float64 for the whole module: gradients are compared to finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest

import ddm
from ddm.dsl.format import format_module, format_source
from ddm.dsl.parser import parse
from ddm.library.lazy import jax

from conftest import column_of, compile_error, fd_grad, flat, type_of

pytestmark = pytest.mark.usefixtures("float64")


# --- helpers -------------------------------------------------------------------------------------


def node_values(prog, name: str, batch, key=None, params=None):
    """The named node's values over ``batch`` (a dict of inputs with a leading axis), drawn
    with ``key`` (``None``: deterministic), as a training step evaluates it."""
    vid = prog.graph.nodes[name]
    inputs = {k: np.asarray(v) for k, v in batch.items()}
    run = jax.jit(lambda p, k: prog.product.values(p, inputs, (vid,), None, k)[0])
    return np.asarray(run(params or {}, key)[vid])


def softmax(z):
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


LOGITS = np.array([0.3, -0.4, 1.1])


# --- shape rules ---------------------------------------------------------------------------------


def test_shape_rules_of_good_calls():
    prog = ddm.loads("""dim K = 3
dim D = 4
dim T = 5
input z: f32[T, K]
input q: f32[D]
param tau: f32 = 0.5 positive
param tau_k: f32[K] = 1.0 positive
param E: f32[K, D] = normal(std=0.1)
param phi: f32[K] = zeros()
node r = gumbel_softmax(z, tau)
node r_hard = gumbel_softmax(z, temperature=tau_k, hard=true)
node r_default = gumbel_softmax(z)
node h = retrieve(q, E, phi)
node a = retrieve_weights(q, E, phi)
output r, r_hard, r_default, h, a
""")
    assert type_of(prog, "r") == "f32[T, K]"
    assert type_of(prog, "r_hard") == "f32[T, K]"
    assert type_of(prog, "r_default") == "f32[T, K]"
    assert type_of(prog, "h") == "f32[D]"
    assert type_of(prog, "a") == "f32[K]"


def test_gumbel_softmax_refuses_scalar_logits():
    text = "input z: f32\nnode r = gumbel_softmax(z)\noutput r\n"
    err = compile_error(text)
    assert err.kind == "shape"
    assert "last axis of its logits" in err.message
    assert (err.span.line, err.span.column) == (2, column_of(text, 2, "z)"))


def test_gumbel_softmax_temperature_must_broadcast_to_the_logits():
    text = (
        "input z: f32[3]\nparam tau: f32[2] = 1.0 positive\n"
        "node r = gumbel_softmax(z, tau)\noutput r\n"
    )
    err = compile_error(text)
    assert err.kind == "shape"
    assert "temperature f32[2] does not broadcast to its logits f32[3]" in err.message
    assert (err.span.line, err.span.column) == (3, column_of(text, 3, "tau)"))


def test_gumbel_softmax_refuses_a_negative_literal_temperature_and_a_non_literal_hard():
    text = "input z: f32[3]\nnode r = gumbel_softmax(z, -1.0)\noutput r\n"
    err = compile_error(text)
    assert "temperature must be at least 0" in err.message
    assert err.span.line == 2
    text = "input z: f32[3]\ninput b: bool\nnode r = gumbel_softmax(z, hard=b)\noutput r\n"
    err = compile_error(text)
    assert err.kind == "arity" and "must be true or false" in err.message


RETRIEVE = """dim K = 3
input q: f32[{qd}]
param E: f32[K, 4] = normal(std=0.1)
param phi: f32[{pk}] = zeros()
node h = {op}(q, E, phi)
output h
"""


@pytest.mark.parametrize("op", ["retrieve", "retrieve_weights"])
def test_retrieve_refuses_mismatched_widths_at_the_embeddings(op):
    text = RETRIEVE.format(qd=5, pk="K", op=op)
    err = compile_error(text)
    assert err.kind == "shape"
    assert (
        "the embeddings f32[K, 4] have rows of length 4, the query f32[5] has length 5"
        in err.message
    )
    assert (err.span.line, err.span.column) == (5, column_of(text, 5, "E,"))


@pytest.mark.parametrize("op", ["retrieve", "retrieve_weights"])
def test_retrieve_refuses_a_prior_of_another_count_at_the_prior(op):
    text = RETRIEVE.format(qd=4, pk=2, op=op)
    err = compile_error(text)
    assert err.kind == "shape"
    assert f"{op}'s prior must be [K], one weight per concept" in err.message
    assert "got f32[2]" in err.message
    assert (err.span.line, err.span.column) == (5, column_of(text, 5, "phi)"))


def test_retrieve_refuses_a_query_that_is_not_a_vector():
    text = RETRIEVE.format(qd="2, 4", pk="K", op="retrieve")
    err = compile_error(text)
    assert "retrieve's query must be a vector [D], got f32[2, 4]" in err.message
    assert (err.span.line, err.span.column) == (5, column_of(text, 5, "q,"))


def test_formatter_round_trips_calls_of_the_new_ops():
    text = (
        "input z: f32[3]\ninput q: f32[4]\nparam E: f32[3, 4] = zeros()\n"
        "param phi: f32[3] = zeros()\n"
        "node r = gumbel_softmax(z, temperature = 0.5, hard = true)\n"
        "node h = retrieve(q, E, phi)\nnode a = retrieve_weights(q, E, phi)\n"
        "output r, h, a\n"
    )
    out = format_module(parse(text))
    assert parse(out) == parse(text)
    assert format_source(out) == out
    assert "gumbel_softmax(z, temperature=0.5, hard=true)" in out


# --- gumbel_softmax ------------------------------------------------------------------------------

GUMBEL = """dim K = 3
input z: f32[K]
param tau: f32 = {tau} positive
node soft = gumbel_softmax(z, tau)
node hard = gumbel_softmax(z, tau, hard=true)
output soft, hard
loss = mean(soft[:, 0])
"""


def gumbel_prog(tau=0.5):
    prog = ddm.loads(GUMBEL.format(tau=tau), x64=True)
    return prog, prog.init(jax.random.key(0))


def test_without_a_key_gumbel_softmax_is_the_tempered_softmax():
    prog, params = gumbel_prog(tau=0.5)
    out = prog.apply(params, z=LOGITS)
    np.testing.assert_allclose(out["soft"], softmax(LOGITS / 0.5), rtol=1e-12)
    np.testing.assert_array_equal(out["hard"], [0.0, 0.0, 1.0])
    # evaluation paths without a key agree: apply_batch, the loss
    batch = {"z": np.stack([LOGITS, -LOGITS])}
    both = prog.apply_batch(params, **batch)["soft"]
    np.testing.assert_allclose(both, softmax(batch["z"] / 0.5), rtol=1e-12)
    np.testing.assert_allclose(prog.loss(params, batch), both[:, 0].mean(), rtol=1e-12)


def test_with_a_key_rows_are_on_the_simplex_and_the_same_key_gives_the_same_bits():
    prog, params = gumbel_prog()
    batch = {"z": np.tile(LOGITS, (64, 1))}
    key = jax.random.key(7)
    a = node_values(prog, "soft", batch, key, params)
    b = node_values(prog, "soft", batch, key, params)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=1e-12)
    assert np.all(a >= 0)
    # other keys draw other noise; so do other samples of one batch (same inputs)
    c = node_values(prog, "soft", batch, jax.random.key(8), params)
    assert not np.allclose(a, c)
    assert len({tuple(row) for row in a}) == len(a)
    # and a loss given a key is reproducible, and differs from the deterministic one
    assert float(prog.loss(params, batch, key)) == float(prog.loss(params, batch, key))
    assert float(prog.loss(params, batch, key)) != float(prog.loss(params, batch))


def test_hard_draws_are_one_hot_with_the_softmax_probabilities():
    """Gumbel-max: argmax(logits + g) is distributed as softmax(logits), whatever τ."""
    prog, params = gumbel_prog(tau=0.5)
    draws = node_values(prog, "hard", {"z": np.tile(LOGITS, (20000, 1))}, jax.random.key(3), params)
    assert set(np.unique(draws)) <= {0.0, 1.0}
    np.testing.assert_array_equal(draws.sum(axis=-1), 1.0)
    np.testing.assert_allclose(draws.mean(axis=0), softmax(LOGITS), atol=0.02)


GRAD = """dim K = 3
input x: f32[K]
param z: f32[K] = [0.3, -0.4, 1.1]
param tau: f32 = 0.7 positive
node r = gumbel_softmax(z + x, tau{hard})
loss = mean(r[:, 0] - 2.0 * r[:, 2])
"""


def test_gradient_with_the_noise_fixed_by_its_key_matches_finite_differences():
    prog = ddm.loads(GRAD.format(hard=""), x64=True)
    params = prog.init(jax.random.key(0))
    batch = {"x": np.linspace(-1, 1, 12).reshape(4, 3)}
    key = jax.random.key(5)
    grad = flat(jax.grad(prog.loss)(params, batch, key))
    assert np.all(np.isfinite(grad)) and np.all(grad != 0)
    np.testing.assert_allclose(
        grad, fd_grad(lambda p: prog.loss(p, batch, key), params), rtol=1e-6, atol=1e-9
    )


def test_hard_gradient_is_the_soft_gradient_straight_through():
    soft = ddm.loads(GRAD.format(hard=""), x64=True)
    hard = ddm.loads(GRAD.format(hard=", hard=true"), x64=True)
    params = soft.init(jax.random.key(0))
    batch = {"x": np.linspace(-1, 1, 12).reshape(4, 3)}
    key = jax.random.key(5)
    np.testing.assert_allclose(
        flat(jax.grad(hard.loss)(params, batch, key)),
        flat(jax.grad(soft.loss)(params, batch, key)),
        rtol=1e-12,
    )


def test_inside_a_scan_every_step_draws_fresh_noise():
    prog = ddm.loads(
        """dim N = 4
input z: f32[3]
node s = scan t in N, prev: f32[3] = 0.0 {
    return gumbel_softmax(z, 1.0)
}
output s
""",
        x64=True,
    )
    batch = {"z": LOGITS[None, :]}
    fixed = node_values(prog, "s", batch)[0]
    np.testing.assert_allclose(fixed, np.tile(softmax(LOGITS), (4, 1)), rtol=1e-12)
    drawn = node_values(prog, "s", batch, jax.random.key(1))[0]
    np.testing.assert_allclose(drawn.sum(axis=-1), 1.0, rtol=1e-12)
    assert len({tuple(row) for row in drawn}) == 4
    np.testing.assert_array_equal(drawn, node_values(prog, "s", batch, jax.random.key(1))[0])


# --- retrieve ------------------------------------------------------------------------------------

RETRIEVAL = """dim K = 4
dim D = 3
input q: f32[D]
param E: f32[K, D] = normal(std=1.0)
param phi: f32[K] = normal(std=1.0)
node h = retrieve(q, E, phi)
node a = retrieve_weights(q, E, phi)
output h, a
loss = mean(sum(h * h, axis=1)) + mean(a[:, 0])
"""


def retrieval_prog():
    prog = ddm.loads(RETRIEVAL, x64=True)
    return prog, prog.init(jax.random.key(2))


def test_retrieve_is_the_prior_plus_similarity_attention_over_the_embeddings():
    prog, params = retrieval_prog()
    q = np.array([0.5, -1.0, 2.0])
    E, phi = np.asarray(params["E"]), np.asarray(params["phi"])
    a = softmax(phi + E @ q / np.sqrt(3))
    out = prog.apply(params, q=q)
    np.testing.assert_allclose(out["a"], a, rtol=1e-12)
    np.testing.assert_allclose(out["h"], a @ E, rtol=1e-12)
    np.testing.assert_allclose(np.sum(out["a"]), 1.0, rtol=1e-12)


def test_retrieve_with_a_uniform_prior_and_orthogonal_embeddings_reads_the_query():
    # E = I, prior 0: attention softmax(q / √D), the retrieved vector that same attention
    prog, _ = retrieval_prog()
    params = {"E": np.eye(4, 3), "phi": np.zeros(4)}
    q = np.array([1.0, 0.0, -1.0])
    out = prog.apply(params, q=q)
    a = softmax(np.append(q, 0.0) / np.sqrt(3))
    np.testing.assert_allclose(out["a"], a, rtol=1e-12)
    np.testing.assert_allclose(out["h"], a[:3], rtol=1e-12)


def test_retrieve_gradient_matches_finite_differences():
    prog, params = retrieval_prog()
    batch = {"q": np.linspace(-1.5, 1.5, 6).reshape(2, 3)}
    grad = flat(jax.grad(prog.loss)(params, batch))
    assert np.all(np.isfinite(grad)) and np.any(grad != 0)
    np.testing.assert_allclose(
        grad, fd_grad(lambda p: prog.loss(p, batch), params), rtol=1e-6, atol=1e-9
    )
