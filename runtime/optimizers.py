"""Optax optimisers and learning-rate schedules from a validated run config
(``{"name": "adam", "lr": 1e-3, "schedule": "cosine", "warmup": 100, …}``)."""
from __future__ import annotations


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


def make_optimizer(cfg: dict, clip_norm: float = 0.0, steps: int = 1):
    import optax

    name = cfg["name"]
    lr = make_schedule(cfg, steps)
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
