"""PPO baseline (runtime/baselines/ppo.py): it finds a known optimum, it hedges, it credits the
program's P&L, it is deterministic, and it refuses bad settings."""

import numpy as np
import pytest

from ddm.runtime.baselines import dp_hedge as dp
from ddm.runtime.baselines import ppo

pytestmark = pytest.mark.usefixtures("float64")  # the P&L is compared to dp_hedge's float64

SMALL = ppo.PPOConfig(total_steps=256 * 60, n_envs=256, minibatches=4, lr=3e-3, hidden=(16,))


def _linear_bandit(n=2048, seed=0):
    """Targets w*(x) = A·x; reward −‖w − w*(x)‖²: the optimal mean action is A·x."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((n, 2))
    A = np.array([[0.5, -0.3], [0.2, 0.4]])
    return obs, obs @ A.T


def test_bandit_finds_the_known_optimum():
    import jax.numpy as jnp

    obs, target = _linear_bandit()
    t = jnp.asarray(target)
    res = ppo.train_bandit(
        obs, lambda w, i: -jnp.sum((w - t[i]) ** 2, axis=-1), SMALL, action_dim=2
    )
    w = ppo.bandit_positions(res, obs)
    assert w.shape == (2048, 2)
    assert np.sqrt(np.mean((w - target) ** 2)) < 0.05  # targets have sd ≈ 0.45
    assert res.curve[-1, 1] > res.curve[0, 1]  # mean reward rose
    assert res.steps == res.curve[-1, 0] == 256 * 60


def test_trading_reward_goes_with_the_signal_within_the_limit():
    # the held return is +1 % when the feature is positive, −1 % otherwise; the cost is 0.1 %:
    # the best position is the limit, with the feature's sign
    rng = np.random.default_rng(1)
    obs = rng.standard_normal((2048, 1))
    returns = 0.01 * np.sign(obs) + 0.002 * rng.standard_normal((2048, 1))
    reward = ppo.TradingReward(returns, cost=0.001)
    res = ppo.train_bandit(obs, reward, SMALL, limit=1.0)
    w = ppo.bandit_positions(res, obs)
    assert np.all(np.abs(w) <= 1.0)
    assert np.mean(np.sign(w) == np.sign(obs)) > 0.95


def test_hedging_beats_no_hedge_on_held_out_paths():
    tau = ppo.hedge_tau()
    cfg = ppo.PPOConfig(total_steps=30 * 256 * 30, n_envs=256, minibatches=4, lr=3e-3)
    res = ppo.train_hedging(dp.sample_paths(8192, seed=1), tau, 0.0, cfg)
    test = dp.sample_paths(20_000, seed=2)
    h = ppo.hedge_positions(res, test, tau)
    risk = dp.entropic_risk(dp.pnl(test, h, 0.0, 100.0, dp.DEEP_HEDGE_PREMIUM))[0]
    none = dp.entropic_risk(dp.pnl(test, 0 * h, 0.0, 100.0, dp.DEEP_HEDGE_PREMIUM))[0]
    assert risk < 0.1 * none  # about 0.47 against 15.9 (seeds 0, 1, 2); the DP optimum: 0.066
    # the batch-1 policy is the same network: the first hedge of the first path
    x0 = np.log(test[0, 0] / 100.0) / (0.2 * np.sqrt(tau[0]))
    first = ppo.policy_fn(res)(np.array([x0, tau[0] / 0.08219, 0.0]))
    assert first.shape == (1,)
    np.testing.assert_allclose(first[0], h[0, 0], rtol=1e-6)


@pytest.mark.parametrize("cost", [0.0, 0.01])
def test_the_environment_credits_the_programs_pnl(cost):
    rng = np.random.default_rng(3)
    S = dp.sample_paths(500, seed=3)
    h = rng.uniform(-0.5, 1.5, (500, 30))
    got = ppo.episode_pnl(S, ppo.hedge_tau(), h, cost)
    np.testing.assert_allclose(got, dp.pnl(S, h, cost, 100.0, dp.DEEP_HEDGE_PREMIUM), atol=1e-10)


def test_same_seed_same_bits_other_seed_other_params():
    import jax

    obs, target = _linear_bandit(256)
    reward = ppo.TradingReward(target)  # any reward will do
    cfg = ppo.PPOConfig(total_steps=64 * 5, n_envs=64, minibatches=2, hidden=(8,))
    a, b = (ppo.train_bandit(obs, reward, cfg) for _ in range(2))
    c = ppo.train_bandit(obs, reward, ppo.PPOConfig(**{**vars(cfg), "seed": 1}))
    same = jax.tree.map(lambda x, y: x.tobytes() == y.tobytes(), a.params, b.params)
    assert all(jax.tree.leaves(same))
    assert a.curve.tobytes() == b.curve.tobytes()
    assert not np.array_equal(a.params["actor"][0][0], c.params["actor"][0][0])


@pytest.mark.parametrize(
    "bad, says",
    [
        ({"n_envs": 0}, "n_envs must be an integer >= 1"),
        ({"lr": -1e-3}, "lr must be > 0"),
        ({"gae_lambda": 1.5}, "gae_lambda must be in [0, 1]"),
        ({"hidden": [32]}, "hidden must be a tuple of positive layer sizes"),
        ({"n_envs": 100, "minibatches": 8}, "minibatches must be a divisor of n_envs = 100"),
        ({"entropy_coef": -0.1}, "entropy_coef must be >= 0"),
    ],
)
def test_bad_config_is_refused_by_name(bad, says):
    with pytest.raises(ValueError, match=f"PPOConfig: {_escape(says)}"):
        ppo.PPOConfig(**bad)


def _escape(s):
    import re

    return re.escape(s)


def test_bad_inputs_are_refused_with_their_shapes():
    tau = ppo.hedge_tau()
    S = dp.sample_paths(10, seed=0)
    with pytest.raises(ValueError, match="less than one update"):
        ppo.train_hedging(S, tau, 0.0, ppo.PPOConfig(total_steps=100, n_envs=8, minibatches=1))
    with pytest.raises(ValueError, match=r"tau must be \[N\] or \[n, N\]"):
        ppo.train_hedging(S, tau[:10], 0.0)
    with pytest.raises(ValueError, match="reward must be"):
        ppo.train_hedging(S, tau, 0.0, reward="sharpe")
    with pytest.raises(ValueError, match="needs action_dim"):
        ppo.train_bandit(np.zeros((4, 2)), lambda w, i: w[:, 0])
    res = ppo.PPOResult({}, np.zeros((0, 2)), 0, ppo.PPOConfig(), "bandit")
    with pytest.raises(ValueError, match="this is a bandit policy, not a hedging one"):
        ppo.hedge_positions(res, S, tau)
