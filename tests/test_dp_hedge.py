"""The DP optimum of hedging a short call under proportional costs and the entropic risk
(ddm.runtime.baselines.dp_hedge), in examples/deep_hedge.ddm's market: its P&L is the
library's, its computed risk ρ* is what its own policy achieves on independent paths (within
Monte Carlo error), no feasible hedge (Black–Scholes delta) does better, and the grid has
converged. The figures are in docs/baselines.md."""

from __future__ import annotations

import numpy as np
import pytest

from ddm.runtime.baselines import dp_hedge as dp

COSTS = (0.0, 1e-3, 1e-2)
# a grid that solves in well under a second and is within 2e-4 of the default one (see
# test_a_coarser_grid_changes_the_optimum_by_less_than_2e_4)
FAST = dp.Grid(n_price=201, n_hedge=101, n_quad=20)
N_PATHS = 100_000
Z = 3.0  # a check passes within Z standard errors


def delta(t, S):
    return dp.bs_delta(S, t, 0.2)


@pytest.fixture(scope="module")
def paths():
    return dp.sample_paths(N_PATHS, seed=20261203)


@pytest.fixture(scope="module")
def delta_positions(paths):
    return dp.delta_hedges(paths, 0.2)


@pytest.fixture(scope="module")
def solutions():
    return {c: dp.solve(sigma=0.2, cost=c, grid=FAST) for c in COSTS}


def test_the_pnl_and_the_risk_are_the_librarys():
    import jax
    import jax.numpy as jnp

    from ddm.library.losses import _entropic_risk
    from ddm.library.market import trading

    s = dp.sample_paths(64, seed=1)
    h = np.random.default_rng(2).uniform(0, 1, (64, 30))
    library = jax.vmap(
        lambda s, h: trading.hedged_short_option_pnl(
            s, h, lambda x: trading.call_payoff(x, 100.0), 2.2871, proportional=0.01
        )
    )(jnp.asarray(s, jnp.float32), jnp.asarray(h, jnp.float32))
    ours = dp.pnl(s, h, 0.01, 100.0, 2.2871)
    np.testing.assert_allclose(ours, np.asarray(library), rtol=1e-4, atol=1e-4)
    risk, _ = dp.entropic_risk(ours)
    assert risk == pytest.approx(float(_entropic_risk(jnp.asarray(ours, jnp.float32))), abs=1e-5)


def test_the_standard_error_is_the_delta_methods():
    x = np.random.default_rng(3).normal(0.0, 0.5, 200_000)
    risk, se = dp.entropic_risk(x)
    # X ~ N(0, s²): ρ = s²/2 and Var(e^{−X})/E[e^{−X}]² = e^{s²} − 1
    assert risk == pytest.approx(0.125, abs=4 * se)
    assert se == pytest.approx(np.sqrt(np.expm1(0.25) / x.size), rel=0.05)


@pytest.mark.parametrize("cost", COSTS)
def test_the_optimal_policy_is_a_no_trade_band(solutions, cost):
    sol = solutions[cost]
    assert sol.band_gap < 1e-9  # the band attains the exact grid minimum at every date
    assert np.all(sol.lower <= sol.upper)
    if cost == 0.0:
        np.testing.assert_array_equal(sol.lower, sol.upper)  # no costs: no band
    else:
        assert np.max(sol.upper - sol.lower) > 0.05


def test_at_zero_cost_the_dp_is_at_most_the_delta_hedge_and_both_near_zero(
    solutions, paths, delta_positions
):
    """Without costs the residual risk is that of hedging 30 times rather than continuously:
    small, and the DP's is at most the (feasible) delta hedge's."""
    optimum = solutions[0.0].risk
    by_grid = dp.evaluate(delta, dp.Market(0.2, 0.0), FAST)
    by_mc, se = dp.entropic_risk(dp.pnl(paths, delta_positions, 0.0, 100.0, 2.2871))
    assert abs(by_mc - by_grid) < Z * se  # the delta's grid evaluation is right
    assert 0.0 < optimum <= by_grid + 1e-4 < 0.1


@pytest.mark.parametrize("cost", COSTS)
def test_the_dp_policy_simulated_has_the_computed_risk(solutions, paths, cost):
    sol = solutions[cost]
    risk, se = dp.entropic_risk(dp.simulate(sol, paths))
    assert abs(risk - sol.risk) < Z * se, (risk, se, sol.risk)


@pytest.mark.parametrize("cost", COSTS)
def test_no_delta_hedge_beats_the_dp(solutions, paths, delta_positions, cost):
    sol = solutions[cost]
    by_grid = dp.evaluate(delta, dp.Market(0.2, cost), FAST)
    ours, se = dp.entropic_risk(dp.simulate(sol, paths))
    theirs, se_delta = dp.entropic_risk(dp.pnl(paths, delta_positions, cost, 100.0, 2.2871))
    assert abs(theirs - by_grid) < Z * se_delta
    assert sol.risk <= by_grid + 1e-4
    assert ours <= theirs + Z * (se + se_delta)


def test_the_policy_on_the_programs_own_paths():
    """gbm_paths' float32 test paths (the ones a program is scored on): the same risk."""
    from ddm.runtime.data.simulated import load_gbm

    data = load_gbm(sigma=0.2, cost=0.01, n_train=1, n_test=50_000)
    sol = dp.solve(sigma=0.2, cost=0.01, grid=FAST)
    risk, se = dp.entropic_risk(dp.simulate(sol, data.test["S"], cost=float(data.test["cost"][0])))
    assert abs(risk - sol.risk) < Z * se


def test_a_coarser_grid_changes_the_optimum_by_less_than_2e_4(solutions):
    fine = dp.solve(sigma=0.2, cost=1e-2)  # the default grid: 301 prices, 201 hedges, 40 nodes
    assert abs(fine.risk - solutions[1e-2].risk) < 2e-4


def test_hedges_outside_0_1_are_never_optimal(solutions):
    """A short call is hedged within [0, 1]: the same hedge spacing on [−0.2, 1.2] finds
    nothing better."""
    wider = dp.solve(
        sigma=0.2, cost=1e-2, grid=dp.Grid(201, 141, n_quad=20, hedge_min=-0.2, hedge_max=1.2)
    )
    assert abs(wider.risk - solutions[1e-2].risk) < 1e-9


@pytest.mark.slow
def test_refining_every_grid_changes_the_optimum_by_less_than_1e_4():
    """The default grid against one twice as fine in price and hedge, with twice the nodes
    and a wider price range (about 35 s for the three costs)."""
    for cost in COSTS:
        default = dp.solve(sigma=0.2, cost=cost)
        fine = dp.solve(sigma=0.2, cost=cost, grid=dp.Grid(601, 401, width=8.0, n_quad=80))
        assert abs(fine.risk - default.risk) < 1e-4, cost


def test_bad_grids_and_markets_are_refused():
    with pytest.raises(ValueError, match="odd"):
        dp.Grid(n_price=100)
    with pytest.raises(ValueError, match="sigma > 0"):
        dp.solve(sigma=0.0, cost=0.0)
