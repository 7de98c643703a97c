"""Optax optimisers from a validated run config (``{"name": "adam", "lr": 1e-3, …}``)."""
from __future__ import annotations


def make_optimizer(cfg: dict, clip_norm: float = 0.0):
    import optax

    name = cfg["name"]
    if name == "adam":
        opt = optax.adam(cfg["lr"], b1=cfg["b1"], b2=cfg["b2"])
    elif name == "adamw":
        opt = optax.adamw(cfg["lr"], b1=cfg["b1"], b2=cfg["b2"],
                          weight_decay=cfg["weight_decay"])
    elif name == "sgd":
        opt = optax.sgd(cfg["lr"], momentum=cfg["momentum"] or None)
    elif name == "rmsprop":
        opt = optax.rmsprop(cfg["lr"], decay=cfg["decay"])
    else:  # validated earlier; kept for a clear failure if the table and this drift apart
        raise ValueError(f"unknown optimizer {name!r}")
    if clip_norm > 0:
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    return opt
