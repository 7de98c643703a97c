"""Synthetic loan applicants from a known, non-linear repayment model.

No real credit-approval data set ships inside an installable package, so ddm generates one.
Because the true repayment probability ``p_true`` of every applicant is known, a learned
scorer can be compared with the Bayes-optimal one (AUC of ``p_true`` on the same labels).

Features, in order (``x: f32[6]``):

==  ==================  ============================================  ==========
i   feature             distribution                                  unit
==  ==================  ============================================  ==========
0   income              exp(N(log 50, 0.5²))                          thousands
1   debt-to-income      0.8 · Beta(2, 5)                              ratio
2   credit history      Gamma(3, 4) clipped to [0, 40]                years
3   delinquencies       Poisson(0.4)                                  count
4   utilisation         Beta(2, 3)                                    ratio
5   recent inquiries    Poisson(1.0)                                  count
==  ==================  ============================================  ==========

Repayment logit (``y = 1``: repaid, approve)::

    z = 1.6 + 0.9·log(income/50) − 7·relu(dti − 0.3)·(1 + σ(−log(income/50)/0.3))
        − 0.9·delinquencies + 0.55·log1p(history) − 2.5·utilisation²
        − 0.25·inquiries + 0.8·[utilisation < 0.3]·[delinquencies = 0]

The debt burden hurts more at low income (an interaction), utilisation acts quadratically and
clean files with low utilisation get a bonus (a threshold): a logistic regression on the raw
features cannot represent it, a small network can.
"""

from __future__ import annotations

import numpy as np

from ddm.library.op import Arg
from ddm.runtime.data.base import Dataset, Source
from ddm.runtime.ranges import COUNT, SEED

FEATURES = ("income", "dti", "history", "delinquencies", "utilization", "inquiries")

# Population mean and std of each feature (10⁶ draws), for z-scores by fixed statistics.
POPULATION_MEAN = (56.6, 0.2285, 11.99, 0.4, 0.4, 1.0)
POPULATION_STD = (30.15, 0.1277, 6.866, 0.6313, 0.2, 1.0)


def applicants(key, n: int):
    """``n`` applicants: features ``x: [n, 6]``, labels ``y: [n]`` and ``p_true: [n]``."""
    import jax

    global _DRAW
    if _DRAW is None:
        # one compiled program per size instead of one per eager random op (beta, gamma and
        # poisson each compile their rejection loops): seconds saved at every load
        _DRAW = jax.jit(_draw, static_argnums=1)
    x, y, p = _DRAW(key, n)
    return np.asarray(x, np.float32), np.asarray(y, np.float32), np.asarray(p, np.float32)


_DRAW = None


def _draw(key, n: int):
    import jax
    import jax.numpy as jnp

    k = jax.random.split(key, 7)
    income = jnp.exp(jnp.log(50.0) + 0.5 * jax.random.normal(k[0], (n,)))
    dti = 0.8 * jax.random.beta(k[1], 2.0, 5.0, (n,))
    history = jnp.clip(4.0 * jax.random.gamma(k[2], 3.0, (n,)), 0.0, 40.0)
    delinq = jax.random.poisson(k[3], 0.4, (n,)).astype(jnp.float32)
    util = jax.random.beta(k[4], 2.0, 3.0, (n,))
    inquiries = jax.random.poisson(k[5], 1.0, (n,)).astype(jnp.float32)
    rel_income = jnp.log(income / 50.0)
    z = (
        1.6
        + 0.9 * rel_income
        - 7.0 * jax.nn.relu(dti - 0.3) * (1.0 + jax.nn.sigmoid(-rel_income / 0.3))
        - 0.9 * delinq
        + 0.55 * jnp.log1p(history)
        - 2.5 * util**2
        - 0.25 * inquiries
        + 0.8 * (util < 0.3) * (delinq == 0)
    )
    p = jax.nn.sigmoid(z)
    y = jax.random.bernoulli(k[6], p).astype(jnp.float32)
    x = jnp.stack([income, dti, history, delinq, util, inquiries], axis=1)
    return x, y, p


def load(n_train: int = 20000, n_test: int = 20000, seed: int = 1) -> Dataset:
    import jax

    key = jax.random.key(seed)
    xtr, ytr, ptr = applicants(jax.random.fold_in(key, 0), n_train)
    xte, yte, pte = applicants(jax.random.fold_in(key, 1), n_test)
    return Dataset(
        {"x": xtr, "y": ytr, "p_true": ptr},
        {"x": xte, "y": yte, "p_true": pte},
        {
            "description": f"synthetic applicants (seed {seed}): {n_train} train, "
            f"{n_test} test; features {', '.join(FEATURES)}"
        },
    )


SOURCE = Source(
    "credit_applicants",
    (Arg("n_train", "int", 20000), Arg("n_test", "int", 20000), Arg("seed", "int", 1)),
    load,
    "Synthetic loan applicants with known repayment probabilities "
    "(inputs x: f32[6], y: f32, p_true: f32).",
    {"n_train": COUNT, "n_test": COUNT, "seed": SEED},
    lambda n_train, n_test, seed: 4 * (n_train + n_test) * (len(FEATURES) + 2),
)
