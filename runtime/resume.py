"""Training checkpoints: everything needed to continue a run so that it ends bit for bit where
an uninterrupted one would.

A checkpoint in a run's directory is these files, each written atomically:

- ``checkpoint.npz`` (with its ``.sha256``, by :func:`~ddm.runtime.checkpoint.save_params`):
  params (``params/a/b``), the optimiser state's leaves (``opt/0000`` …, in ``jax.tree``
  order) and the loop's own state (``state/guards``, ``state/curriculum``), NumPy arrays,
  no pickle;
- ``checkpoint.json``: the step reached, the SHA-256 of ``checkpoint.npz``, a fingerprint of
  the program text and run config (resuming with different ones is refused), the log lines so
  far and the count of skipped steps. It is written last and names the digest it expects, so a
  crash between the two files leaves a checkpoint that is refused as incomplete, never a
  mixed one.

The batch order is a function of (seed, epoch) and the step function is deterministic, so
restoring params, optimiser state and step is enough for bit-identical continuation.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddm.runtime.checkpoint import load_params, save_params, write_json

STATE, META = "checkpoint.npz", "checkpoint.json"


@dataclass
class Resumed:
    step: int
    params: Any
    opt_state: Any
    log: list
    skipped: int
    clipped: int
    state: dict  # the loop's own arrays: guard counts, curriculum probabilities


def fingerprint(program_text: str, config: dict) -> str:
    """What must not change between a run and its resumption: the program and every setting
    but the number of steps (a run may be extended, unless its learning rate follows a
    schedule, which depends on the total)."""
    opt = config.get("optimizer") or {}
    scheduled = opt.get("schedule", "constant") != "constant" or opt.get("warmup", 0)
    # a schedule is a function of the total steps: then they may not change either
    kept = {k: v for k, v in config.items() if k != "steps" or scheduled}
    blob = json.dumps({"program": program_text, "config": kept}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def save(
    out_dir: str,
    step: int,
    params,
    opt_state,
    log: list,
    skipped: int,
    print_: str,
    clipped: int = 0,
    state: dict | None = None,
    config: dict | None = None,
) -> str:
    """Write the checkpoint of ``step`` into ``out_dir``; returns the state file's path."""
    import jax

    path = os.path.join(out_dir, STATE)
    opt = {f"{i:04d}": leaf for i, leaf in enumerate(jax.tree.leaves(opt_state))}
    blob = {"params": params, "opt": opt}
    if state:
        blob["state"] = {k: np.asarray(a) for k, a in state.items()}
    digest = save_params(path, blob)
    write_json(
        os.path.join(out_dir, META),
        {
            "step": step,
            "state_sha256": digest,
            "fingerprint": print_,
            "skipped_steps": skipped,
            "clipped_steps": clipped,
            "log": log,
            "config": config,  # the run's effective settings: what --resume continues with
        },
    )
    return path


def saved_config(out_dir: str) -> dict | None:
    """The effective settings of the run whose checkpoint is in ``out_dir`` (None when there is
    no readable checkpoint, or an older one without them: then the caller's settings stand,
    and :func:`load` checks them)."""
    try:
        with open(os.path.join(out_dir, META), encoding="utf-8") as fh:
            config = json.load(fh).get("config")
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def load(out_dir: str, params_like, opt_state_like, print_: str) -> Resumed:
    """Read the checkpoint in ``out_dir``; ``params_like``/``opt_state_like`` give the
    structure (a fresh init). Raises ``ValueError`` with the reason when it cannot be used."""
    import jax
    import jax.numpy as jnp

    meta_path, state_path = os.path.join(out_dir, META), os.path.join(out_dir, STATE)
    if not os.path.exists(meta_path) or not os.path.exists(state_path):
        raise ValueError(f"no checkpoint in {out_dir} (expected {META} and {STATE})")
    with open(meta_path) as fh:
        meta = json.load(fh)
    with open(state_path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    if digest != meta.get("state_sha256"):
        raise ValueError(
            f"{state_path} does not match {META} (corrupt, or written by an interrupted save)"
        )
    if meta.get("fingerprint") != print_:
        raise ValueError(
            "the checkpoint was written by a different program or run config; "
            "resume with the same ones (only steps may change)"
        )
    state = load_params(state_path)
    params = jax.tree.map(
        lambda like, a: jnp.asarray(a, dtype=jnp.asarray(like).dtype), params_like, state["params"]
    )
    leaves, treedef = jax.tree.flatten(opt_state_like)
    opt = state.get("opt", {})
    saved = [opt.get(f"{i:04d}") for i in range(len(leaves))]
    if len(opt) != len(leaves) or any(
        a is None or np.shape(a) != np.shape(b) for a, b in zip(saved, leaves)
    ):
        raise ValueError("the checkpoint's optimiser state does not fit this optimiser")
    opt_state = jax.tree.unflatten(
        treedef, [jnp.asarray(a, dtype=jnp.asarray(b).dtype) for a, b in zip(saved, leaves)]
    )
    return Resumed(
        int(meta["step"]),
        params,
        opt_state,
        list(meta.get("log", [])),
        int(meta.get("skipped_steps", 0)),
        int(meta.get("clipped_steps", 0)),
        dict(state.get("state", {})),
    )


def differences(saved: dict, now: dict) -> list[str]:
    """``KEY: saved → now`` for every setting but ``steps`` that a resumed run would change."""

    def plain(x):
        return json.loads(json.dumps(x, sort_keys=True, default=str))

    out = []
    for key in sorted(set(saved) | set(now)):
        if key == "steps":
            continue
        a, b = plain(saved.get(key)), plain(now.get(key))
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                for sub in sorted(set(a) | set(b)):
                    if a.get(sub) != b.get(sub):
                        out.append(f"{key}.{sub}: {a.get(sub)!r} → {b.get(sub)!r}")
            else:
                out.append(f"{key}: {a!r} → {b!r}")
    return out
