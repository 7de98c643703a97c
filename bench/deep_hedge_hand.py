"""Deep hedging written by hand in JAX (Buehler et al. 2019): the reference that
``examples/deep_hedge.ddm`` will be measured against, and a standalone check of the issue's
acceptance figures before the language can state the policy.

Black–Scholes market S₀ = K = 100, σ = 0.2, r = 0, T = 30/365, N = 30 rebalances; a short call
hedged by an MLP on (normalised log-moneyness log(S/K)/(σ√τ), τ/T, previous hedge), 3→32→32→1
ReLU; proportional costs charged on the first trade and every rebalance, no final unwind; loss =
entropic risk (λ = 1) of the P&L −payoff + gains − costs (no premium). Fresh GBM paths every step
(``fold_in(key, step)``), Adam with a cosine-decayed learning rate from 3e-3. Evaluated on 100 000
test paths beside the Black–Scholes delta hedge and no hedge.

    python -m ddm.bench.deep_hedge_hand [COST] [STEPS] [BATCH]     # defaults 0 1500 8192

Not yet part of ``python -m ddm.bench`` (the ddm side needs the sequential policy construct).
"""

from __future__ import annotations

import math
import sys
import time

S0 = K = 100.0
SIGMA, N, T = 0.2, 30, 30 / 365
DT = T / N


def init(key, sizes=(3, 32, 32, 1)):
    import jax
    import jax.numpy as jnp

    return [
        (
            jax.random.normal(jax.random.fold_in(key, i), (a, b)) * jnp.sqrt(2.0 / (a + b)),
            jnp.zeros(b),
        )
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
    ]


def mlp(ps, x):
    import jax

    for w, b in ps[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = ps[-1]
    return (x @ w + b)[..., 0]


def hedges(ps, prices):
    """Hedge ratios ``[P, N]`` for price paths ``[P, N + 1]``, the previous hedge carried."""
    import jax
    import jax.numpy as jnp

    tau = T - DT * jnp.arange(N)

    def step(prev, t):
        x = jnp.stack(
            [
                jnp.log(prices[:, t] / K) / (SIGMA * jnp.sqrt(tau[t])),
                jnp.full_like(prev, tau[t] / T),
                prev,
            ],
            -1,
        )
        h = mlp(ps, x)
        return h, h

    return jax.lax.scan(step, jnp.zeros(prices.shape[0], prices.dtype), jnp.arange(N))[1].T


def delta_hedge(prices):
    import jax.numpy as jnp
    from jax.scipy.stats import norm

    tau = T - DT * jnp.arange(N)
    return norm.cdf((jnp.log(prices[:, :-1] / K) + 0.5 * SIGMA**2 * tau) / (SIGMA * jnp.sqrt(tau)))


def pnl(prices, hs, cost):
    import jax

    from ddm.library.market import trading

    return jax.vmap(
        lambda s, h: trading.hedged_short_option_pnl(
            s, h, lambda x: trading.call_payoff(x, K), proportional=cost
        )
    )(prices, hs)


def entropic(p, lam=1.0):
    import jax
    import jax.numpy as jnp

    return (jax.nn.logsumexp(-lam * p) - jnp.log(p.shape[0])) / lam


def main(argv=None) -> int:
    import jax
    import jax.numpy as jnp
    import optax
    from jax.scipy.stats import norm

    from ddm.library.market import gbm

    args = (argv if argv is not None else sys.argv[1:]) + [None] * 3
    cost = float(args[0] or 0.0)
    steps = int(args[1] or 1500)
    batch = int(args[2] or 8192)
    key = jax.random.key(0)
    ps = init(jax.random.fold_in(key, 1))
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, steps, 0.05))
    state = opt.init(ps)

    @jax.jit
    def train_step(ps, state, k):
        prices = gbm(k, S0, 0.0, SIGMA, DT, N, batch)[..., 0]
        loss, g = jax.value_and_grad(lambda ps: entropic(pnl(prices, hedges(ps, prices), cost)))(ps)
        updates, state = opt.update(g, state, ps)
        return optax.apply_updates(ps, updates), state, loss

    started = time.perf_counter()
    for s in range(steps):
        ps, state, loss = train_step(ps, state, jax.random.fold_in(key, 1000 + s))
        if (s + 1) % 500 == 0:
            print(
                f"step {s + 1}  entropic risk {float(loss):.4f}  "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    test = gbm(jax.random.key(99), S0, 0.0, SIGMA, DT, N, 100_000)[..., 0]
    learned, delta = hedges(ps, test), delta_hedge(test)
    for name, hs in (("learned", learned), ("delta", delta), ("no hedge", jnp.zeros_like(delta))):
        p = pnl(test, hs, cost)
        es = jnp.mean(jax.lax.top_k(-p, 5000)[0])
        trades = jnp.abs(jnp.diff(hs, axis=1, prepend=0.0))
        print(
            f"{name:9s} mean {float(p.mean()):+.4f}  std {float(p.std()):.4f}  entropic "
            f"{float(entropic(p)):.4f}  ES5% {float(es):.4f}  turnover "
            f"{float(jnp.mean(jnp.sum(trades, axis=1))):.3f}"
        )
    print(f"mean |learned − delta| {float(jnp.mean(jnp.abs(learned - delta))):.4f}")
    vega = S0 * float(norm.pdf(0.5 * SIGMA * math.sqrt(T))) * math.sqrt(T)
    print(f"Derman–Kamal std {math.sqrt(math.pi / 4) * SIGMA * vega / math.sqrt(N):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
