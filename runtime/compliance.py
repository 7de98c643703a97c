"""The compliance report of a run: every guardrail, how often its limit was broken before it
acted (training steps and test set) and whether any decision still broke it after.

>>> report = {"guards": [], "compliant": True}
>>> report["compliant"]
True
"""

from __future__ import annotations

import numpy as np


def report(product, params, test, train_violations, train_checks: int) -> dict:
    """``train_violations``: per guard, the samples of all training steps that broke it
    (counted inside the train step); the test set is checked here, before and after, from the
    guards' checks in the aux of one evaluation."""
    import jax

    g = product.graph
    roots = tuple(i for x in g.guards for i in (x.violated, x.breached))
    values, _ = jax.jit(product.values, static_argnums=(2,))(params, test, roots)
    out = []
    for k, x in enumerate(g.guards):
        violated = np.asarray(values[x.violated]) > 0.5
        breached = np.asarray(values[x.breached]) > 0.5
        out.append(
            {
                "guard": x.name,
                "intent": x.intent,
                "decision": x.target,
                "limit": x.limit,
                "action": x.action,
                "train": {
                    "checks": train_checks,
                    "violations": int(train_violations[k]),
                    "rate": int(train_violations[k]) / max(train_checks, 1),
                },
                "test": {
                    "checks": int(violated.size),
                    "violations": int(violated.sum()),
                    "rate": float(violated.mean()) if violated.size else 0.0,
                    "breaches_after_enforcement": int(breached.sum()),
                },
            }
        )
    return {
        "guards": out,
        "compliant": all(e["test"]["breaches_after_enforcement"] == 0 for e in out),
    }
