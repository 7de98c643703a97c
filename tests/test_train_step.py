"""The training step is a pure factory (runtime/train_step.py): ``init(params, key) -> state``
and ``step(state, batch) -> (state, report)``, composable with ``jit`` and ``vmap`` — what
``ddmc --run``'s host loop jits, and what seeds vmapped together or several devices reuse."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ddm
from ddm.runtime import train_step

SOURCE = """
input x: f32[3]
input y: f32
param w: f32[3] = normal(std=0.1)
param lam: f32 = 0.5 positive
node p = sigmoid(dot(w, x))
node keep = argmin v: f32 { lam * (v - p) ** 2 + 0.1 * v ** 2 } subject to { v >= 0, v <= 1 }
output keep
loss = bce(p, y) + mean(keep ** 2)
"""


@pytest.fixture(scope="module")
def prog():
    return ddm.loads(SOURCE, "step.ddm")


def batch_of(seed: int, n: int = 16):
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(n, 3)).astype(np.float32),
        "y": (rng.random(n) < 0.5).astype(np.float32),
    }


def test_a_step_is_one_optimiser_update_of_the_loss(prog):
    opt = optax.sgd(0.1)
    train = train_step.make(prog.product, opt)
    params = prog.init(jax.random.key(0))
    state = train.init(params, jax.random.key(2))
    batch = batch_of(0)
    new, report = jax.jit(train.step)(state, batch)
    loss, grads = jax.value_and_grad(lambda p: prog.product.loss(p, batch)[0])(params)
    want = optax.apply_updates(params, opt.update(grads, opt.init(params), params)[0])
    assert float(report.loss) == pytest.approx(float(loss), rel=1e-6)
    assert float(report.grad_norm) == pytest.approx(float(optax.tree.norm(grads)), rel=1e-5)
    for k in params:
        np.testing.assert_allclose(new.params[k], want[k], rtol=1e-5, atol=1e-7)
    assert int(new.step) == 1 and bool(report.ok) and bool(report.finite)
    (stats,) = report.solvers.values()  # the argmin's statuses, counted on device
    assert int(stats["failed"]) == 0


def test_the_step_is_pure_state_in_state_out(prog):
    train = train_step.make(prog.product, optax.adam(1e-2))
    state = train.init(prog.init(jax.random.key(0)), jax.random.key(2))
    step = jax.jit(train.step)
    a, _ = step(state, batch_of(0))
    b, _ = step(state, batch_of(0))  # the same state and batch: the same bits
    for x, y in zip(bits(a), bits(b)):
        np.testing.assert_array_equal(x, y)


def bits(tree) -> list:
    """The leaves of ``tree`` as NumPy arrays (a key as its data)."""
    return [
        np.asarray(jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
        for x in jax.tree.leaves(tree)
    ]


def test_seeds_vmapped_together_train_as_they_would_one_by_one(prog):
    """Eight seeds in one vmapped step equal eight separate steps (the experiments of issue 13
    rely on it)."""
    train = train_step.make(prog.product, optax.adam(1e-2))
    seeds = jnp.arange(8)
    init = jax.vmap(
        lambda s: train.init(prog.init(jax.random.key(s)), jax.random.fold_in(jax.random.key(s), 2))
    )
    states = init(seeds)
    batch = batch_of(3)
    stepped, reports = jax.jit(jax.vmap(train.step, in_axes=(0, None)))(states, batch)
    for s in range(8):
        one = train.init(prog.init(jax.random.key(s)), jax.random.fold_in(jax.random.key(s), 2))
        alone, report = jax.jit(train.step)(one, batch)
        np.testing.assert_allclose(stepped.params["w"][s], alone.params["w"], rtol=1e-5, atol=1e-7)
        assert float(reports.loss[s]) == pytest.approx(float(report.loss), rel=1e-5)


def test_a_failed_solve_keeps_the_state_and_says_so():
    prog = ddm.loads(
        """
input b: f32[2]
param lam: f32 = 1.0 positive
node w = argmin v: f32[2] { lam * sum(v ** 2) - dot(b, v) } subject to { sum(v) == 1, v >= 0.8 }
loss = mean(sum(w * w, axis=1))
""",
        "infeasible.ddm",
    )
    train = train_step.make(prog.product, optax.sgd(0.1))
    state = train.init(prog.init(jax.random.key(0)), jax.random.key(2))
    new, report = jax.jit(train.step)(state, {"b": np.ones((4, 2), np.float32)})
    assert not bool(report.ok) and not bool(report.finite)
    assert float(new.params["lam"]) == float(state.params["lam"])  # no update applied
    (stats,) = report.solvers.values()
    assert int(stats["failed"]) == 4
