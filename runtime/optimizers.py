"""Optax optimisers and learning-rate schedules from a validated run config
(``{"name": "adam", "lr": 1e-3, "schedule": "cosine", "warmup": 100, …}``), and a learning
rate trained with the model (``hypergradient=β``).

A trained learning rate is the research plan's meta-parameter ``learning_rate = exp(log_lr)``
updated by the gradient of the loss: after the step θₜ = θₜ₋₁ − η·dₜ₋₁ (dₜ₋₁ the optimiser's
direction), ∂L(θₜ)/∂log η = −η·gₜ·dₜ₋₁ (hypergradient descent, Baydin et al. 2018). ddm takes
the scale-free step ``log η += β·cos(gₜ, dₜ₋₁)``: η grows while successive gradients keep
agreeing with the last direction and shrinks when they oppose it, whatever the loss's scale.
"""

from __future__ import annotations

from typing import Any, NamedTuple


def make_schedule(cfg: dict, steps: int):
    """The learning rate as a function of the step: ``lr`` itself (constant, no warmup) or an
    optax schedule — linear warmup from 0 over ``warmup`` steps, then constant, or a cosine,
    linear or exponential decay to ``final_lr · lr`` at ``steps``."""
    import optax

    lr, kind = cfg["lr"], cfg.get("schedule", "constant")
    warmup, final = min(cfg.get("warmup", 0), steps), cfg.get("final_lr", 0.0) * cfg["lr"]
    if kind == "constant" and warmup == 0:
        return lr
    decay_steps = max(steps - warmup, 1)
    if kind == "constant":
        after = optax.constant_schedule(lr)
    elif kind == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=final / lr if lr else 0.0)
    elif kind == "linear":
        after = optax.linear_schedule(lr, final, decay_steps)
    else:  # exponential: lr · (final/lr)^(t/decay_steps), final > 0
        rate = (final / lr) if final > 0 and lr > 0 else 1e-3
        after = optax.exponential_decay(lr, decay_steps, rate)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


class HypergradientState(NamedTuple):
    inner: Any  # the direction transform's state
    log_lr: Any  # scalar: the learned log learning rate
    previous: Any  # the last direction dₜ₋₁, a pytree like the params


def hypergradient(inner, lr: float, beta: float):
    """``inner`` (an optax transform giving the direction, e.g. ``scale_by_adam()``) followed
    by a learned learning rate starting at ``lr``: updates = −exp(log η)·direction.

    >>> import jax.numpy as jnp, optax
    >>> opt = hypergradient(optax.identity(), 0.1, 0.5)
    >>> p = {"w": jnp.ones(2)}
    >>> s = opt.init(p)
    >>> u, s = opt.update({"w": jnp.ones(2)}, s, p)        # no previous direction: η stays
    >>> u, s = opt.update({"w": jnp.ones(2)}, s, p)        # agrees with it: η grows by e^0.5
    >>> round(float(jnp.exp(s.log_lr)), 4), [round(float(x), 4) for x in u["w"]]
    (0.1649, [-0.1649, -0.1649])
    """
    import jax
    import jax.numpy as jnp
    import optax

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return HypergradientState(inner.init(params), jnp.log(jnp.asarray(lr, jnp.float32)), zeros)

    def update(updates, state, params=None):
        dot = optax.tree.vdot(updates, state.previous)
        norms = optax.tree.norm(updates) * optax.tree.norm(state.previous)
        cos = jnp.where(norms > 0, dot / jnp.where(norms > 0, norms, 1.0), 0.0)
        log_lr = state.log_lr + beta * cos.astype(state.log_lr.dtype)
        direction, inner_state = inner.update(updates, state.inner, params)
        rate = jnp.exp(log_lr)
        steps = jax.tree.map(lambda d: (-rate * d).astype(d.dtype), direction)
        return steps, HypergradientState(inner_state, log_lr, direction)

    return optax.GradientTransformation(init, update)


def learned_lr(opt_state):
    """The current learned learning rate in an optimiser state, or None without one."""
    import jax
    import jax.numpy as jnp

    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, HypergradientState))
        if isinstance(s, HypergradientState)
    ]
    return jnp.exp(found[0].log_lr) if found else None


def _direction(cfg: dict):
    """The optimiser without its learning rate: what ``hypergradient`` scales."""
    import optax

    name = cfg["name"]
    if name == "adam":
        return optax.scale_by_adam(b1=cfg["b1"], b2=cfg["b2"])
    if name == "adamw":
        return optax.chain(
            optax.scale_by_adam(b1=cfg["b1"], b2=cfg["b2"]),
            optax.add_decayed_weights(cfg["weight_decay"]),
        )
    if name == "sgd":
        return optax.trace(decay=cfg["momentum"]) if cfg["momentum"] else optax.identity()
    return optax.scale_by_rms(decay=cfg["decay"])


def make_optimizer(cfg: dict, clip_norm: float = 0.0, steps: int = 1):
    import optax

    name = cfg["name"]
    lr = make_schedule(cfg, steps)
    if cfg.get("hypergradient", 0.0) > 0:
        opt = hypergradient(_direction(cfg), cfg["lr"], cfg["hypergradient"])
        return optax.chain(optax.clip_by_global_norm(clip_norm), opt) if clip_norm > 0 else opt
    if name == "adam":
        opt = optax.adam(lr, b1=cfg["b1"], b2=cfg["b2"])
    elif name == "adamw":
        opt = optax.adamw(lr, b1=cfg["b1"], b2=cfg["b2"], weight_decay=cfg["weight_decay"])
    elif name == "sgd":
        opt = optax.sgd(lr, momentum=cfg["momentum"] or None)
    elif name == "rmsprop":
        opt = optax.rmsprop(lr, decay=cfg["decay"])
    else:  # validated earlier; kept for a clear failure if the table and this drift apart
        raise ValueError(f"unknown optimizer {name!r}")
    if clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return opt
