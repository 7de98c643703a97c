"""Compiled training steps: ddm's loss vs the same maths written by hand in JAX.

One step = forward + backward (``jax.value_and_grad``) + Adam update + ``optax.apply_updates``,
built exactly as :mod:`ddm.runtime.train` builds it (same return values: new params, new optimiser
state, loss, global gradient norm; params and optimiser state donated), jitted. The ddm step
differentiates the compiled product's loss; the hand step differentiates a loss written
directly with ``jax.numpy`` / ``jax.nn`` over the batch (no vmap), on the same params pytree.
Both see the same
batches and start from the same param values, in the same process, timed alternately.

Before timing, the benchmark checks that both losses (and gradients) agree, so the ratio compares
two implementations of the same function. A second, separately jitted copy of the hand step is
timed alongside (``aa_ratio`` = its median / the hand step's): on a shared machine that A/A ratio
is the noise floor against which ddm / hand should be read.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

TARGET_RATIO = 1.05  # ddm step / hand-written step
LOSS_RTOL = 1e-5

# credit.ddm's fixed z-score statistics (the generator's population mean and std)
CREDIT_MEAN = (56.6, 0.2285, 11.99, 0.4, 0.4, 1.0)
CREDIT_STD = (30.15, 0.1277, 6.866, 0.6313, 0.2, 1.0)


# --- the hand-written losses ----------------------------------------------------------------------


def _mlp(p, x, act):
    """mlp(d_in, hidden, d_out): x @ w0 + b0 → act → @ w1 + b1 (ddm.library.layers order)."""
    h = act(x @ p["w0"] + p["b0"])
    return h @ p["w1"] + p["b1"]


def _bce(p, y, eps=1e-7):
    import jax.numpy as jnp

    p = jnp.clip(p, eps, 1 - eps)
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))


def credit_loss(params, batch):
    """examples/credit.ddm: z-score → mlp(6, 32, 1, relu) and linear(6, 1) → sigmoid → bce."""
    import jax
    import jax.numpy as jnp

    x, y = batch["x"], batch["y"]
    z = (x - jnp.asarray(CREDIT_MEAN, jnp.float32)) / (jnp.asarray(CREDIT_STD, jnp.float32) + 1e-8)
    p = jax.nn.sigmoid(_mlp(params["net"], z, jax.nn.relu)[:, 0])
    base = params["baseline"]
    p_logistic = jax.nn.sigmoid((z @ base["w0"] + base["b0"])[:, 0])
    return _bce(p, y) + _bce(p_logistic, y)


def hedge_loss(params, batch):
    """examples/hedge.ddm: b = 1e-4·mlp(x), Σ = cov(R, shrink 0.1) + 1e-6·I,
    w = argmin λvᵀΣv − bᵀv s.t. 1ᵀv = 1 by its KKT conditions (2λΣ w = b − ν1, 1ᵀw = 1:
    two solves with 2λΣ and a scalar Schur complement, differentiated by JAX),
    pnl = w·r_next, loss = −(mean(pnl) − 100·var(pnl))."""
    import jax
    import jax.numpy as jnp

    x, R, r_next = batch["x"], batch["R"], batch["r_next"]
    t, n = R.shape[1], R.shape[2]
    b = 1e-4 * _mlp(params["phi"], x, jax.nn.tanh)  # [B, N]
    centred = R - jnp.mean(R, axis=1, keepdims=True)  # [B, W, N]
    s = jnp.einsum("bti,btj->bij", centred, centred) / (t - 1)  # [B, N, N]
    eye = jnp.eye(n, dtype=s.dtype)
    target = jnp.trace(s, axis1=1, axis2=2)[:, None, None] / n * eye
    sigma = (1 - 0.1) * s + 0.1 * target + 1e-6 * eye
    lam = jnp.exp(params["lam"])
    rhs = jnp.stack([b, jnp.ones_like(b)], axis=-1)  # [B, N, 2]
    y = jnp.linalg.solve(2 * lam * sigma, rhs)
    y1, y2 = y[..., 0], y[..., 1]
    nu = (jnp.sum(y1, axis=1) - 1.0) / jnp.sum(y2, axis=1)
    w = y1 - nu[:, None] * y2  # [B, N]
    pnl = jnp.sum(w * r_next, axis=1)  # [B]
    return -(jnp.mean(pnl) - 100.0 * jnp.var(pnl))


# --- cases ---------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    program: str
    source: str
    source_kwargs: dict
    lr: float
    batch: int
    hand_loss: Callable


CASES = (
    Case(
        "credit",
        "credit.ddm",
        "credit_applicants",
        # n_test = n_train: the generator's eager jax.random ops compile once per size
        {"n_train": 4096, "n_test": 4096, "seed": 1},
        3e-3,
        256,
        credit_loss,
    ),
    Case(
        "hedge",
        "hedge.ddm",
        "sp500_windows",
        {"window": 60, "test_from": "2016-01-01"},
        1e-3,
        128,
        hedge_loss,
    ),
)


def make_step(loss_fn, opt):
    """The step of ddm.runtime.train.run, minus its gather (both sides get ready batches)."""
    import jax
    import optax

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

    return jax.jit(step, donate_argnums=(0, 1))


def _copy(tree):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def primitive_counts(fn, *args) -> dict[str, int]:
    """Primitives in the jaxpr of ``fn(*args)``, nested jaxprs included."""
    import jax
    from jax.extend.core import jaxprs_in_params

    counts: dict[str, int] = {}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
            for sub in jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return counts


def _time_steps(
    steps: dict[str, Any], states: dict[str, Any], batches, n_steps: int, repeats: int
) -> dict[str, list[float]]:
    """Seconds per step of each step function: ``repeats`` runs of ``n_steps`` steps each, the
    functions taking turns (the order rotates every repeat) so load drift hits all alike."""
    import jax

    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            step = steps[name]
            params, opt_state = states[name]
            jax.block_until_ready((params, opt_state))
            t0 = time.perf_counter()
            for i in range(n_steps):
                params, opt_state, loss, _ = step(params, opt_state, batches[i % len(batches)])
            jax.block_until_ready((params, opt_state, loss))
            times[name].append((time.perf_counter() - t0) / n_steps)
            states[name] = (params, opt_state)
    return times


def run_case(case: Case, quick: bool = False) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import ddm
    from ddm.runtime.data import SOURCES

    prog = ddm.load(os.path.join(EXAMPLES, case.program))
    t0 = time.perf_counter()
    data = SOURCES[case.source].load(**case.source_kwargs)
    load_s = time.perf_counter() - t0
    names = [s.name for s in prog.graph.inputs_needed([prog.graph.loss])]
    n = data.n("train")
    n_batches = 4
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(n_batches):
        idx = rng.choice(n, case.batch, replace=False)
        batches.append({k: jnp.asarray(np.asarray(data.train[k])[idx], jnp.float32) for k in names})

    params = prog.init(jax.random.key(0))
    opt = optax.adam(case.lr, b1=0.9, b2=0.999)  # what adam(lr=…) in the run section builds

    # Honesty check: same loss and gradient on the same params and batch.
    ddm_loss = lambda p, b: prog.product.loss(p, b)[0]  # noqa: E731
    loss_ddm_fn = jax.jit(ddm_loss)
    loss_hand_fn = jax.jit(case.hand_loss)
    l_ddm = float(loss_ddm_fn(params, batches[0]))
    l_hand = float(loss_hand_fn(params, batches[0]))
    loss_rel = abs(l_ddm - l_hand) / max(abs(l_hand), 1e-30)
    g_ddm = jax.jit(jax.grad(ddm_loss))(params, batches[0])
    g_hand = jax.jit(jax.grad(case.hand_loss))(params, batches[0])
    if jax.tree_util.tree_structure(g_ddm) != jax.tree_util.tree_structure(g_hand):
        raise AssertionError(f"{case.name}: ddm and hand gradients have different pytrees")
    grad_rel = max(
        _rel(a, b)
        for a, b in zip(jax.tree_util.tree_leaves(g_ddm), jax.tree_util.tree_leaves(g_hand))
    )

    step_ddm = make_step(ddm_loss, opt)
    step_hand = make_step(case.hand_loss, opt)
    prims_ddm = primitive_counts(step_ddm, params, opt.init(params), batches[0])
    prims_hand = primitive_counts(step_hand, params, opt.init(params), batches[0])

    # "hand_again": a second, separately jitted copy of the hand step, timed like the others.
    # hand_again / hand is an A/A ratio: how far apart two identical programs time on this
    # machine right now, the noise floor against which ddm / hand should be read.
    steps = {"ddm": step_ddm, "hand": step_hand, "hand_again": make_step(case.hand_loss, opt)}
    states = {k: (_copy(params), opt.init(params)) for k in steps}
    compile_s = {}
    for name, step in steps.items():  # compile + warm up
        t0 = time.perf_counter()
        p, s = states[name]
        p, s, loss, _ = step(p, s, batches[0])
        jax.block_until_ready(loss)
        compile_s[name] = time.perf_counter() - t0
        states[name] = (p, s)
    _time_steps(steps, states, batches, n_steps=5 if quick else 20, repeats=1)  # warm caches

    # Many short blocks (~25 ms of the slower step; quick: ~15 ms), the three steps taking
    # turns: neighbouring blocks see the same load, which a shared machine changes by the second.
    probe = _time_steps(steps, states, batches, n_steps=10, repeats=1)
    per = max(max(v[0] for v in probe.values()), 1e-6)
    n_steps = int(min(max((0.015 if quick else 0.025) / per, 3), 5000))
    repeats = 15 if quick else 61
    times = _time_steps(steps, states, batches, n_steps, repeats)

    ddm_s = statistics.median(times["ddm"])
    hand_s = statistics.median(times["hand"])
    ratio = ddm_s / hand_s
    ratio_min = min(times["ddm"]) / min(times["hand"])
    ratio_paired = statistics.median(a / b for a, b in zip(times["ddm"], times["hand"]))
    aa = statistics.median(times["hand_again"]) / hand_s
    return {
        "name": f"train_step.{case.name}",
        "kind": "ratio",
        "program": f"examples/{case.program}",
        "batch": case.batch,
        "ddm_step_s": ddm_s,
        "hand_step_s": hand_s,
        "ratio": ratio,
        "ratio_of_minima": ratio_min,
        "ratio_paired_median": ratio_paired,
        "aa_ratio": aa,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "ddm_step_s_all": times["ddm"],
        "hand_step_s_all": times["hand"],
        "hand_again_step_s_all": times["hand_again"],
        "steps_per_repeat": n_steps,
        "repeats": repeats,
        "loss_ddm": l_ddm,
        "loss_hand": l_hand,
        "loss_rel_diff": loss_rel,
        "loss_agrees": loss_rel <= LOSS_RTOL,
        "grad_max_rel_diff": grad_rel,
        "compile_and_first_step_s": compile_s,
        "jaxpr_eqns": {"ddm": sum(prims_ddm.values()), "hand": sum(prims_hand.values())},
        "jaxpr_primitives": {"ddm": prims_ddm, "hand": prims_hand},
        "data_load_s": load_s,
    }


NAMES = tuple(c.name for c in CASES)


def run(quick: bool = False, only: str | None = None) -> list[dict]:
    out = []
    for case in CASES:
        full = f"train_step.{case.name}"
        if only and only not in ("train_step", case.name, full):
            continue
        out.append(run_case(case, quick))
    return out
