r"""Proximal policy optimisation (PPO, Schulman et al. 2017) in JAX and Optax: the
reinforcement-learning baseline a learned ddm policy is compared with, trained and scored on the
program's own observations, actions, costs and P&L, on the same paths.

Two environments
----------------
**Hedging** (``examples/deep_hedge.ddm``): a short call, S₀ = K = 100, 30 days in N = 30
rebalances, proportional cost c on every trade (the first one too), no final unwind, the call
sold for 2.2871. At date t the policy sees exactly what the program's ``phi`` network sees,

    obs_t = (x_t, u_t, h_{t−1}),   x_t = log(S_t/100)/(0.2·√τ_t),   u_t = τ_t/0.08219,

(h_{−1} = 0) and its action is the new hedge h_t ∈ ℝ (a Gaussian around the actor's mean, with
a state-independent log standard deviation). An episode is one training path; its P&L is
``hedge_pnl``'s (``dp_hedge.pnl``):

    X = p − (S_N − K)⁺ + Σ_t h_t·(S_{t+1} − S_t) − c·Σ_t |h_t − h_{t−1}|·S_t.

The ddm policies minimise the entropic risk ρ(X) = (1/λ)·log E[exp(−λX)] (λ = 1). Minimising
E[exp(−λX)] is the same problem (log is increasing), so the default reward is terminal:
r_t = 0 for t < N − 1 and r_{N−1} = −exp(−λX) (``reward="entropic"``). The return to go from
date t is then −exp(−λ·w_t)·E[exp(−λ·(X − w_t)) | S_t, h_{t−1}] with w_t the P&L so far, which
the policy's observation does not hold; the *critic* (a training device, never used to act) is
therefore given (obs_t, w_t) — the actor sees the program's observation only.
``reward="mean_variance"`` is the alternative of Kolm & Ritter (2019): per-step increments of
the hedged book valued at the Black–Scholes price C_t (σ = 0.2, the program's), with a
variance penalty,

    δw_t = h_t·ΔS_t − c·|Δh_t|·S_t − (C_{t+1} − C_t)  (+ p − C_0 at t = 0,  C_N = (S_N − K)⁺),
    r_t  = δw_t − (λ/2)·δw_t²,

so Σ_t δw_t = X exactly, and Σ_t δw_t² estimates the P&L's variance (the increments are nearly
uncorrelated): −ρ(X) ≈ E[X] − (λ/2)·Var X when the risk is small. Either way the policy is scored
by its entropic risk on the test paths, in the ddm policies' own units.

**Bandit** (``examples/trading.ddm`` and any one-decision program): each episode is one sample
i: the observation is the program's feature vector ``obs[i]``, the action a position vector
w ∈ ℝᴺ (Gaussian), optionally clipped to [−limit, limit] (the program's position guard), and
the reward is the program's P&L, ``dot(w, returns[i]) − cost·Σ|w − w_prev[i]|``
(:class:`TradingReward`), or any traceable ``reward(w [B, N], index [B]) → [B]``.

The algorithm
-------------
A rollout is ``n_envs`` whole episodes (their length is fixed: N for hedging, 1 for the bandit),
so no episode is cut and bootstrapped — a terminal reward would otherwise reach the policy only
through the critic. Advantages are GAE(γ, λ_GAE) (Schulman et al. 2016), normalised per
minibatch; the loss is PPO's clipped surrogate, a squared value error and an entropy bonus.
Actor and critic are separate tanh MLPs (orthogonal initialisation, the actor's last layer
scaled by 0.01 so that the first mean action is near 0: no hedge) with separate Adam states and
gradient clipping, so the critic's errors (heavy-tailed under the entropic reward) never rescale
the actor's step. The whole training is one jitted ``lax.scan`` over updates; randomness comes
only from ``PPOConfig.seed``, so the same seed gives the same parameters bit for bit.

Training takes minutes (see docs/baselines.md); what the environment credits is cheap to check:

>>> import numpy as np
>>> from ddm.runtime.baselines import dp_hedge as dp
>>> S = dp.sample_paths(4, seed=0)
>>> delta = dp.delta_hedges(S, 0.2)
>>> X = episode_pnl(S, hedge_tau(), delta, cost=0.001)
>>> bool(np.allclose(X, dp.pnl(S, delta, 0.001, 100.0, dp.DEEP_HEDGE_PREMIUM), atol=1e-4))
True
>>> PPOConfig(n_envs=100, minibatches=8)
Traceback (most recent call last):
ValueError: PPOConfig: minibatches must be a divisor of n_envs = 100, got 8
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, NamedTuple

import numpy as np

from ddm.runtime.baselines.dp_hedge import DEEP_HEDGE_PREMIUM

#: deep_hedge.ddm's observation scales: x = log(S/100)/(0.2·√τ), u = τ/0.08219 (T = 30/365)
OBS_SIGMA = 0.2
OBS_MATURITY = 0.08219
STRIKE = 100.0


@dataclass(frozen=True)
class PPOConfig:
    """PPO's hyper-parameters. ``total_steps``: the budget in environment steps (decisions:
    N per hedging episode, 1 per bandit sample); one update collects ``n_envs`` whole episodes
    (the rollout length is the episode's, see the module docstring), then makes ``epochs``
    passes over them in ``minibatches`` minibatches. ``lr`` decays linearly to 0 over the run
    when ``anneal_lr``. ``hidden``: the actor's and the critic's hidden layer sizes.
    ``init_log_std``: the Gaussian's initial log standard deviation (a learned vector)."""

    total_steps: int = 20_000_000
    n_envs: int = 1024
    epochs: int = 4
    minibatches: int = 8
    lr: float = 1e-3
    clip: float = 0.2
    gamma: float = 1.0
    gae_lambda: float = 0.95
    entropy_coef: float = 0.0
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: tuple[int, ...] = (32, 32)
    init_log_std: float = -1.0
    anneal_lr: bool = True
    seed: int = 0

    def __post_init__(self):
        def need(ok: bool, name: str, what: str):
            if not ok:
                raise ValueError(f"PPOConfig: {name} must be {what}, got {getattr(self, name)!r}")

        for name in ("total_steps", "n_envs", "epochs", "minibatches"):
            value = getattr(self, name)
            need(isinstance(value, int) and value >= 1, name, "an integer >= 1")
        for name in ("lr", "clip", "max_grad_norm"):
            need(getattr(self, name) > 0, name, "> 0")
        for name in ("gamma", "gae_lambda"):
            need(0 <= getattr(self, name) <= 1, name, "in [0, 1]")
        for name in ("entropy_coef", "value_coef"):
            need(getattr(self, name) >= 0, name, ">= 0")
        need(
            isinstance(self.hidden, tuple)
            and all(isinstance(h, int) and h >= 1 for h in self.hidden),
            "hidden",
            "a tuple of positive layer sizes",
        )
        need(math.isfinite(self.init_log_std), "init_log_std", "finite")
        need(isinstance(self.seed, int), "seed", "an integer")
        need(
            self.n_envs % self.minibatches == 0,
            "minibatches",
            f"a divisor of n_envs = {self.n_envs}",
        )


@dataclass(frozen=True, eq=False)
class PPOResult:
    """A trained policy. ``params``: {"actor": [(W, b), …], "critic": …, "log_std": [A]};
    ``curve: [U, 2]``: per update, (environment steps so far, the training objective on that
    update's rollout: the sampled policy's entropic risk for hedging, its mean reward for a
    bandit); ``steps``: environment steps used (updates × n_envs × episode length)."""

    params: Any = field(repr=False)
    curve: np.ndarray = field(repr=False)
    steps: int
    config: PPOConfig
    env: str  # "hedging" or "bandit"
    info: dict = field(default_factory=dict)


# --- networks: tanh MLPs as lists of (W, b) ------------------------------------------------


def _mlp_init(key, sizes, last_scale: float):
    import jax

    layers = []
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (k, d_in, d_out) in enumerate(zip(keys, sizes[:-1], sizes[1:])):
        scale = last_scale if i == len(sizes) - 2 else math.sqrt(2.0)
        w = jax.nn.initializers.orthogonal(scale)(k, (d_in, d_out))
        layers.append((w, jax.numpy.zeros(d_out)))
    return layers


def _mlp(layers, x):
    import jax.numpy as jnp

    for w, b in layers[:-1]:
        x = jnp.tanh(x @ w + b)
    w, b = layers[-1]
    return x @ w + b


def _log_prob(mean, log_std, a):
    """log N(a; mean, diag(exp(log_std))²) summed over the action's last axis."""
    import jax.numpy as jnp

    z = (a - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2 * math.pi), axis=-1)


# --- environments: fixed-length episodes as pure functions over a data pytree --------------


class _Env(NamedTuple):
    """``reset(data, key, n) → state``; ``observe(data, state, t) → (obs [n, F],
    critic_obs [n, G])``; ``step(data, state, action [n, A], t) → (state, reward [n])``;
    ``objective(data, state, rewards [T, n]) → scalar`` (for the learning curve)."""

    name: str
    length: int
    obs_dim: int
    critic_dim: int
    action_dim: int
    reset: Callable
    observe: Callable
    step: Callable
    objective: Callable


def _hedge_observation(S, tau):
    """deep_hedge.ddm's (x, u) per path and date: S [n, N + 1], tau [n, N] → two [n, N]."""
    import jax.numpy as jnp

    x = jnp.log(S[:, :-1] / STRIKE) / (OBS_SIGMA * jnp.sqrt(tau))
    return x, tau / OBS_MATURITY


def _bs_call(S, tau, sigma: float, strike: float):
    """Black–Scholes call price at r = 0; the payoff where τ = 0."""
    import jax.numpy as jnp
    from jax.scipy.special import ndtr

    vol = sigma * jnp.sqrt(jnp.maximum(tau, 1e-12))
    d1 = (jnp.log(S / strike) + 0.5 * vol**2) / vol
    price = S * ndtr(d1) - strike * ndtr(d1 - vol)
    return jnp.where(tau > 0, price, jnp.maximum(S - strike, 0.0))


@functools.lru_cache(maxsize=8)  # one environment per setting, so that its training compiles once
def _hedging_env(
    n_steps: int, risk_aversion: float, strike: float, premium: float, reward: str
) -> _Env:
    import jax
    import jax.numpy as jnp

    lam = risk_aversion

    class State(NamedTuple):
        index: Any  # [n] the path of each episode
        prev: Any  # [n] h_{t−1}
        wealth: Any  # [n] the P&L so far (no premium, no payoff)

    def reset(data, key, n):
        index = jax.random.randint(key, (n,), 0, data["S"].shape[0])
        zero = jnp.zeros(n, data["S"].dtype)
        return State(index, zero, zero)

    def observe(data, st, t):
        x, u = data["x"][st.index, t], data["u"][st.index, t]
        obs = jnp.stack([x, u, st.prev], axis=-1)
        return obs, jnp.concatenate([obs, lam * st.wealth[:, None]], axis=-1)

    def step(data, st, action, t):
        S = data["S"][st.index]
        h = action[:, 0]
        s_t, s_next = S[:, t], S[:, t + 1]
        cost = data["cost"] * jnp.abs(h - st.prev) * s_t
        gain = h * (s_next - s_t) - cost
        wealth = st.wealth + gain
        final = premium - jnp.maximum(S[:, -1] - strike, 0.0) + wealth  # X, when t = N − 1
        last = t == n_steps - 1
        if reward == "entropic":
            r = jnp.where(last, -jnp.exp(-lam * final), 0.0)
        else:  # mean_variance: the increments of the book valued at C_t
            c = data["value"][st.index]  # [n, N + 1] C_t along the path, C_N the payoff
            dw = gain - (c[:, t + 1] - c[:, t]) + jnp.where(t == 0, premium - c[:, 0], 0.0)
            r = dw - 0.5 * lam * dw**2
        return State(st.index, h, wealth), r

    def objective(data, st, rewards):
        S = data["S"][st.index]
        x = premium - jnp.maximum(S[:, -1] - strike, 0.0) + st.wealth
        return (jax.nn.logsumexp(-lam * x) - jnp.log(x.size)) / lam

    return _Env("hedging", n_steps, 3, 4, 1, reset, observe, step, objective)


@dataclass(frozen=True, eq=False)
class TradingReward:
    """The P&L of a one-period trading program (``trading.ddm``'s ``pnl``) for positions w:
    ``dot(w, returns[i]) − cost·Σ|w − w_prev[i]|``. ``returns: [n, N]`` (the held returns,
    summed over the holding days), ``w_prev: [n, N]`` (zeros if None), ``cost``: a scalar
    or ``[n]``."""

    returns: Any
    w_prev: Any = None
    cost: Any = 0.0


@functools.lru_cache(maxsize=8)
def _bandit_env(obs_dim: int, action_dim: int, limit: float | None, reward_fn) -> _Env:
    import jax
    import jax.numpy as jnp

    def reset(data, key, n):
        return jax.random.randint(key, (n,), 0, data["obs"].shape[0])

    def observe(data, index, t):
        obs = data["obs"][index]
        return obs, obs

    def clipped(a):
        return a if limit is None else jnp.clip(a, -limit, limit)

    def step(data, index, action, t):
        w = clipped(action)
        if reward_fn is None:
            r = jnp.sum(w * data["returns"][index], axis=-1) - data["cost"][index] * jnp.sum(
                jnp.abs(w - data["w_prev"][index]), axis=-1
            )
        else:
            r = reward_fn(w, index)
        return index, r

    def objective(data, index, rewards):
        return jnp.mean(rewards)

    return _Env("bandit", 1, obs_dim, obs_dim, action_dim, reset, observe, step, objective)


# --- the training loop -----------------------------------------------------------------------


def _init(key, env: _Env, cfg: PPOConfig):
    import jax
    import jax.numpy as jnp

    ka, kc = jax.random.split(key)
    return {
        "actor": _mlp_init(ka, (env.obs_dim, *cfg.hidden, env.action_dim), 0.01),
        "critic": _mlp_init(kc, (env.critic_dim, *cfg.hidden, 1), 1.0),
        "log_std": jnp.full((env.action_dim,), cfg.init_log_std),
    }


def _gae(rewards, values, gamma: float, lam: float):
    """Advantages and value targets of whole episodes: rewards, values [T, n]; the state after
    the last step is terminal (value 0)."""
    import jax
    import jax.numpy as jnp

    def back(carry, x):
        adv_next, v_next = carry
        r, v = x
        delta = r + gamma * v_next - v
        adv = delta + gamma * lam * adv_next
        return (adv, v), adv

    zero = jnp.zeros_like(values[0])
    _, adv = jax.lax.scan(back, (zero, zero), (rewards, values), reverse=True)
    return adv, adv + values


@functools.lru_cache(maxsize=8)
def _make_train(env: _Env, cfg: PPOConfig, n_updates: int):
    """The jitted ``train(data, key) → (params, objectives [U])``, cached per environment and
    settings (``cfg.seed`` is not used: the key carries it), so that another seed, cost or
    set of paths of the same shapes reuses the compiled loop."""
    import jax
    import jax.numpy as jnp
    import optax

    n, T = cfg.n_envs, env.length
    mb = n * T // cfg.minibatches
    n_opt_steps = n_updates * cfg.epochs * cfg.minibatches
    lr = optax.linear_schedule(cfg.lr, 0.0, n_opt_steps) if cfg.anneal_lr else cfg.lr

    def tx():
        return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm), optax.adam(lr, eps=1e-5))

    # actor (its layers and log-std) and critic: separate clipping and Adam states
    opt = optax.multi_transform(
        {"actor": tx(), "critic": tx()},
        {"actor": "actor", "critic": "critic", "log_std": "actor"},
    )

    def loss_fn(params, batch):
        obs, cobs, a, logp_old, adv, target = batch
        mean = _mlp(params["actor"], obs)
        logp = _log_prob(mean, params["log_std"], a)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        ratio = jnp.exp(logp - logp_old)
        surrogate = jnp.minimum(
            ratio * adv, jnp.clip(ratio, 1 - cfg.clip, 1 + cfg.clip) * adv
        ).mean()
        value = _mlp(params["critic"], cobs)[:, 0]
        value_loss = 0.5 * jnp.mean((value - target) ** 2)
        entropy = jnp.sum(params["log_std"] + 0.5 * math.log(2 * math.pi * math.e))
        return -surrogate + cfg.value_coef * value_loss - cfg.entropy_coef * entropy

    def rollout(params, data, key):
        k_reset, k_act = jax.random.split(key)
        state = env.reset(data, k_reset, n)

        def one(state, xs):
            t, k = xs
            obs, cobs = env.observe(data, state, t)
            mean = _mlp(params["actor"], obs)
            a = mean + jnp.exp(params["log_std"]) * jax.random.normal(k, mean.shape, mean.dtype)
            value = _mlp(params["critic"], cobs)[:, 0]
            state, r = env.step(data, state, a, t)
            return state, (obs, cobs, a, _log_prob(mean, params["log_std"], a), value, r)

        return jax.lax.scan(one, state, (jnp.arange(T), jax.random.split(k_act, T)))

    @jax.jit
    def train(data, key):
        def update(carry, _):
            params, opt_state, key = carry
            key, k_roll, k_perm = jax.random.split(key, 3)
            state, (obs, cobs, a, logp, value, r) = rollout(params, data, k_roll)
            objective = env.objective(data, state, r)
            adv, target = _gae(r, value, cfg.gamma, cfg.gae_lambda)
            flat = jax.tree.map(
                lambda z: z.reshape((n * T,) + z.shape[2:]), (obs, cobs, a, logp, adv, target)
            )

            def epoch(carry, k):
                order = jax.random.permutation(k, n * T)  # every sample, shuffled
                batches = jax.tree.map(
                    lambda z: z[order].reshape((cfg.minibatches, mb) + z.shape[1:]), flat
                )

                def minibatch(carry, batch):
                    params, opt_state = carry
                    grads = jax.grad(loss_fn)(params, batch)
                    updates, opt_state = opt.update(grads, opt_state, params)
                    return (optax.apply_updates(params, updates), opt_state), None

                return jax.lax.scan(minibatch, carry, batches)[0], None

            (params, opt_state), _ = jax.lax.scan(
                epoch, (params, opt_state), jax.random.split(k_perm, cfg.epochs)
            )
            return (params, opt_state, key), objective

        k_init, k_run = jax.random.split(key)
        params = _init(k_init, env, cfg)
        carry = (params, opt.init(params), k_run)
        (params, _, _), objectives = jax.lax.scan(update, carry, None, length=n_updates)
        return params, objectives

    return train


def _run(env: _Env, data: dict, cfg: PPOConfig, info: dict) -> PPOResult:
    import jax

    per_update = cfg.n_envs * env.length
    n_updates = cfg.total_steps // per_update
    if n_updates < 1:
        raise ValueError(
            f"PPOConfig: total_steps = {cfg.total_steps} is less than one update "
            f"(n_envs × episode length = {cfg.n_envs} × {env.length} = {per_update})"
        )
    train = _make_train(env, replace(cfg, seed=0), n_updates)
    params, objectives = train(data, jax.random.key(cfg.seed))
    params = jax.tree.map(np.asarray, params)
    steps = per_update * np.arange(1, n_updates + 1)
    curve = np.stack([steps, np.asarray(objectives, np.float64)], axis=1)
    return PPOResult(params, curve, int(steps[-1]), cfg, env.name, info)


# --- hedging ---------------------------------------------------------------------------------


def hedge_tau(days: int = 30, steps: int = 30) -> np.ndarray:
    """The time to maturity at each date, as ``gbm_paths``'s ``tau``: [steps]."""
    T = days / 365
    return (T - T / steps * np.arange(steps)).astype(np.float32)


def _check_paths(S, tau):
    S = np.asarray(S)
    tau = np.asarray(tau)
    if S.ndim != 2 or S.shape[1] < 2:
        raise ValueError(f"S must be paths [n, N + 1], got shape {S.shape}")
    n, N = S.shape[0], S.shape[1] - 1
    if tau.ndim == 1:
        tau = np.broadcast_to(tau, (n, tau.shape[0]))
    if tau.shape != (n, N):
        raise ValueError(f"tau must be [N] or [n, N] = [{n}, {N}] for S {S.shape}, got {tau.shape}")
    if not (np.all(S > 0) and np.all(tau > 0)):
        raise ValueError("prices S and times to maturity tau must be positive")
    return S, tau


def _hedging_data(S, tau, cost: float, strike: float, with_value: bool):
    import jax.numpy as jnp

    S, tau = _check_paths(S, tau)
    dtype = jnp.result_type(float)
    S = jnp.asarray(S, dtype)
    tau = jnp.asarray(tau, dtype)
    x, u = _hedge_observation(S, tau)
    data = {"S": S, "x": x, "u": u, "cost": jnp.asarray(cost, dtype)}
    if with_value:
        tau_all = jnp.concatenate([tau, jnp.zeros_like(tau[:, :1])], axis=1)
        data["value"] = _bs_call(S, tau_all, OBS_SIGMA, strike)
    return data


def train_hedging(
    S,
    tau,
    cost: float,
    config: PPOConfig = PPOConfig(),
    *,
    reward: str = "entropic",
    risk_aversion: float = 1.0,
    strike: float = STRIKE,
    premium: float = DEEP_HEDGE_PREMIUM,
) -> PPOResult:
    """Train a hedging policy on the training paths ``S: [n, N + 1]`` with times to maturity
    ``tau: [N]`` or ``[n, N]`` and proportional ``cost`` (module docstring). ``reward``:
    "entropic" (terminal −exp(−λX)) or "mean_variance" (per-step, Kolm & Ritter)."""
    if reward not in ("entropic", "mean_variance"):
        raise ValueError(f'reward must be "entropic" or "mean_variance", got {reward!r}')
    if not (cost >= 0 and risk_aversion > 0):
        raise ValueError(f"need cost >= 0 and risk_aversion > 0, got {cost}, {risk_aversion}")
    data = _hedging_data(S, tau, cost, strike, reward == "mean_variance")
    env = _hedging_env(data["S"].shape[1] - 1, risk_aversion, strike, premium, reward)
    info = {"cost": float(cost), "reward": reward, "risk_aversion": risk_aversion}
    return _run(env, data, config, info)


def _require(result: PPOResult, env: str):
    if result.env != env:
        raise ValueError(f"this is a {result.env} policy, not a {env} one")


def hedge_positions(result: PPOResult, S, tau) -> np.ndarray:
    """The deterministic policy (the mean action) along each path: S [n, N + 1], tau [N] or
    [n, N] → hedges [n, N], from a flat start. (The cost is not an input: the policy does not
    observe it, as the program's ``phi`` does not.)"""
    import jax
    import jax.numpy as jnp

    _require(result, "hedging")
    S, tau = _check_paths(S, tau)
    dtype = jnp.result_type(float)
    x, u = _hedge_observation(jnp.asarray(S, dtype), jnp.asarray(tau, dtype))
    actor = jax.tree.map(lambda z: jnp.asarray(z, dtype), result.params["actor"])

    @jax.jit
    def run(x, u):
        def one(prev, xu):
            h = _mlp(actor, jnp.stack([xu[0], xu[1], prev], axis=-1))[:, 0]
            return h, h

        return jax.lax.scan(one, jnp.zeros(x.shape[0], dtype), (x.T, u.T))[1].T

    return np.asarray(run(x, u))


def episode_pnl(S, tau, positions, cost: float, strike=STRIKE, premium=DEEP_HEDGE_PREMIUM):
    """The P&L [n] the training environment credits for taking actions ``positions: [n, N]``
    along paths S (one episode per path, stepped as in training): equals ``dp_hedge.pnl``."""
    import jax
    import jax.numpy as jnp

    data = _hedging_data(S, tau, cost, strike, False)
    env = _hedging_env(data["S"].shape[1] - 1, 1.0, strike, premium, "entropic")
    n = data["S"].shape[0]
    pos = jnp.asarray(positions, data["S"].dtype)
    st = env.reset(data, jax.random.key(0), n)._replace(index=jnp.arange(n))
    for t in range(env.length):
        st, _ = env.step(data, st, pos[:, t : t + 1], t)
    return np.asarray(premium - jnp.maximum(data["S"][:, -1] - strike, 0.0) + st.wealth)


# --- bandit ----------------------------------------------------------------------------------


def train_bandit(
    obs,
    reward: TradingReward | Callable,
    config: PPOConfig = PPOConfig(),
    *,
    action_dim: int | None = None,
    limit: float | None = None,
) -> PPOResult:
    """Train a one-step policy on samples ``obs: [n, F]``. ``reward``: a
    :class:`TradingReward` (the program's P&L from arrays) or a traceable
    ``reward(w [B, N], index [B]) → [B]`` (then ``action_dim`` N is required). ``limit``:
    positions are clipped to [−limit, limit] before the reward (the program's guard)."""
    import jax.numpy as jnp

    obs = np.asarray(obs)
    if obs.ndim != 2 or obs.shape[0] < 1:
        raise ValueError(f"obs must be features [n, F], got shape {obs.shape}")
    if limit is not None and not limit > 0:
        raise ValueError(f"limit must be > 0 or None, got {limit}")
    dtype = jnp.result_type(float)
    data: dict = {"obs": jnp.asarray(obs, dtype)}
    n = obs.shape[0]
    if isinstance(reward, TradingReward):
        returns = np.asarray(reward.returns)
        if returns.ndim != 2 or returns.shape[0] != n:
            raise ValueError(f"returns must be [n, N] = [{n}, N], got shape {returns.shape}")
        w_prev = np.zeros_like(returns) if reward.w_prev is None else np.asarray(reward.w_prev)
        if w_prev.shape != returns.shape:
            raise ValueError(f"w_prev must be {returns.shape}, got {w_prev.shape}")
        action_dim = returns.shape[1]
        data["returns"] = jnp.asarray(returns, dtype)
        data["w_prev"] = jnp.asarray(w_prev, dtype)
        data["cost"] = jnp.broadcast_to(jnp.asarray(reward.cost, dtype), (n,))
        fn = None
    elif callable(reward):
        if action_dim is None or action_dim < 1:
            raise ValueError("a reward function needs action_dim, the number of positions")
        fn = reward
    else:
        raise ValueError(f"reward must be a TradingReward or a function, got {type(reward)}")
    env = _bandit_env(obs.shape[1], action_dim, limit, fn)
    return _run(env, data, config, {"limit": limit, "action_dim": action_dim})


def bandit_positions(result: PPOResult, obs) -> np.ndarray:
    """The deterministic policy's positions (the mean action, clipped to the limit it was
    trained with): obs [n, F] → [n, N]."""
    import jax.numpy as jnp

    _require(result, "bandit")
    w = np.asarray(policy_fn(result, batch=True)(jnp.asarray(obs, jnp.result_type(float))))
    limit = result.info.get("limit")
    return w if limit is None else np.clip(w, -limit, limit)


def policy_fn(result: PPOResult, batch: bool = False) -> Callable:
    """The jitted deterministic policy: obs [F] → mean action [A] (``batch``: [B, F] →
    [B, A]); for hedging obs = (x_t, u_t, h_{t−1}). For timing inference latency."""
    import jax
    import jax.numpy as jnp

    actor = jax.tree.map(jnp.asarray, result.params["actor"])
    if batch:
        return jax.jit(lambda obs: _mlp(actor, obs))
    return jax.jit(lambda obs: _mlp(actor, obs[None, :])[0])


__all__ = [
    "PPOConfig",
    "PPOResult",
    "TradingReward",
    "bandit_positions",
    "episode_pnl",
    "hedge_positions",
    "hedge_tau",
    "policy_fn",
    "train_bandit",
    "train_hedging",
]
