"""The baselines an experiment can name (``baselines: {NAME: {kind: KIND, …}}``), each evaluated
on exactly the experiment's test paths and returning one value per path (its P&L).

- ``node``: a node of the program that depends on no param (``pnl_delta``, ``pnl_equal``…);
- ``bs_delta``, ``whalley_wilmott``, ``dp_optimum``: one-asset hedging of a short call under
  proportional costs (runtime/baselines/classical.py, dp_hedge.py), on the paths of the input
  named by ``paths`` (default ``S``), the market's σ and cost read from the data source unless
  given;
- ``ppo_hedge``, ``ppo_bandit``: reinforcement learning (runtime/baselines/ppo.py);
- ``two_stage``: predict with ridge or gradient-boosted trees, then the program's own decision
  with the prediction substituted for a node (runtime/baselines/two_stage.py);
- ``phi_only``: the rules alone, their weights tuned by Bayesian optimisation
  (runtime/baselines/phi_only.py);
- ``portfolio``: equal weight, minimum variance or volatility targeting held over an
  episode, for the trading programs' layout (prices P, held returns R, w_prev, cost).

A baseline function takes a :class:`Context` and its keyword arguments from the file and
returns a :class:`BaselineResult`. Unknown arguments are errors naming the known ones.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ddm.runtime.errors import ConfigDiagnostic

__all__ = ["KINDS", "Context", "BaselineResult", "run_baseline"]


@dataclass
class BaselineResult:
    """Per-path values ``[runs, n_test]`` (one row per seed of a baseline that trains, one row
    otherwise), facts for the report, a learning curve if it trains, and a batch-1 policy
    callable for the latency measurement."""

    values: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    curve: list[dict] | None = None
    policy: Callable | None = None  # policy(*inputs_of_one_sample) for latency, jitted
    policy_inputs: tuple = ()


@dataclass
class Context:
    """What a baseline may read: the experiment's program (the unmodified one), its dataset,
    the data source's keywords, the seeds, and per-path node values on either split."""

    prog: Any
    data: Any  # Dataset
    source: Mapping[str, Any]  # the data source call, e.g. {"name": "gbm_paths", "sigma": 0.2}
    seeds: tuple[int, ...]
    cfg: Any  # the learned methods' RunConfig
    trained: Mapping[str, Any] = field(default_factory=dict)  # group → [SeedRun]

    def values(self, names, split: str = "test", params=None) -> dict[str, np.ndarray]:
        """Per-sample values of parameter-free nodes (or inputs) on a split."""
        import jax

        from ddm.runtime.experiment.evaluate import per_path
        from ddm.runtime.experiment.seeds import bound_dims

        if params is None:
            dims = bound_dims(self.prog, self.data, self.cfg)
            params = self.prog.init(jax.random.key(0), **dims)
        return per_path(self.prog, params, getattr(self.data, split), list(names), what=split)


def _market(ctx: Context, args: dict):
    from ddm.runtime.baselines import dp_hedge

    src = ctx.source
    keys = ("sigma", "cost", "days", "steps", "s0", "strike", "premium", "risk_aversion")
    kw = {k: args.pop(k) for k in keys if k in args}
    for k in ("sigma", "cost", "days", "steps", "s0"):
        if k not in kw and k in src:
            kw[k] = src[k]
    if "sigma" not in kw:
        kw["sigma"] = 0.2
    counts = {k: int(kw.pop(k)) for k in ("steps", "days") if k in kw}
    return dp_hedge.Market(**{k: float(v) for k, v in kw.items()}, **counts)


def _paths(ctx: Context, args: dict, split: str = "test") -> np.ndarray:
    name = args.pop("paths", "S")
    return np.asarray(ctx.values([name], split)[name], np.float64)


def check_node(prog, node: str) -> None:
    """A node baseline must be a per-path node that learns nothing (checked before training)."""
    from ddm.runtime.experiment.evaluate import value_ids

    (vid,) = value_ids(prog, [node], "a baseline")
    g = prog.graph
    uses = set()
    seen, todo = set(), [vid]
    while todo:  # ancestors, through the bodies of scans and argmins
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        v = g.values[i]
        todo += list(v.inputs)
        if v.op == "scan":
            todo += list(range(*v.attr("scan").body))
        elif v.op == "argmin":
            todo += list(range(*v.attr("problem").body))
    for i in seen:
        v = g.values[i]
        if v.op == "param":
            uses.add(v.attr("name"))
        elif v.op == "layer":
            uses.add(v.attr("param"))
    if uses:
        raise ConfigDiagnostic(
            None,
            f"baseline node '{node}' depends on the params {', '.join(sorted(uses))}: "
            "it is learned, so list it under methods",
        )


def node(ctx: Context, node: str) -> BaselineResult:
    check_node(ctx.prog, node)
    values = ctx.values([node])[node]
    return BaselineResult(values.reshape(1, -1), {"node": node})


def _policy_baseline(ctx: Context, args: dict, kind: str, policy) -> BaselineResult:
    """A hedge ``policy(paths, market) -> positions`` on the test paths, the program's P&L."""
    from ddm.runtime.baselines import dp_hedge

    market = _market(ctx, args)
    s = _paths(ctx, args)
    _no_more(args, kind)
    values = dp_hedge.pnl(s, policy(s, market), market.cost, market.strike, market.premium)
    return BaselineResult(values[None], {"market": _plain(market)})


def bs_delta(ctx: Context, **args) -> BaselineResult:
    from ddm.runtime.baselines import classical

    return _policy_baseline(ctx, args, "bs_delta", classical.bs_delta_policy)


def whalley_wilmott(ctx: Context, **args) -> BaselineResult:
    from ddm.runtime.baselines import classical

    return _policy_baseline(ctx, args, "whalley_wilmott", classical.whalley_wilmott)


def dp_optimum(ctx: Context, **args) -> BaselineResult:
    """The exact optimum by dynamic programming; ``info`` holds its computed risk ρ* beside the
    simulated one, which must agree within Monte Carlo error."""
    from ddm.runtime.baselines import dp_hedge

    market = _market(ctx, args)
    grid = dp_hedge.Grid(**{k: args.pop(k) for k in ("n_price", "n_hedge", "n_quad") if k in args})
    s = _paths(ctx, args)
    _no_more(args, "dp_optimum")
    started = time.perf_counter()
    sol = dp_hedge.solve(
        market.sigma,
        market.cost,
        market.steps,
        market.days,
        market.s0,
        market.strike,
        market.premium,
        market.risk_aversion,
        grid,
    )
    solve_s = time.perf_counter() - started
    values = dp_hedge.simulate(sol, s)
    risk, se = dp_hedge.entropic_risk(values, market.risk_aversion)
    return BaselineResult(
        values[None],
        {
            "market": _plain(market),
            "computed_risk": sol.risk,
            "simulated_risk": risk,
            "simulated_se": se,
            "z": (risk - sol.risk) / se if se > 0 else 0.0,
            "solve_s": round(solve_s, 2),
        },
    )


def two_stage(
    ctx: Context,
    predictor: str = "ridge",
    features: str = "x",
    target: str = "R",
    substitute: str = "b",
    output: str = "pnl",
    scale: float = 1.0,
    seed: int = 0,
) -> BaselineResult:
    """Predict, then optimise: stage 1 fits ``predictor`` (ridge | gbt) from the program's
    ``features`` node to ``target`` (a per-sample node or input; one with a leading time axis,
    such as held returns R [H, N], is summed over it) on the training split; stage 2 is the
    program itself with node ``substitute`` read from the data — the prediction times
    ``scale`` (a unit conversion, e.g. 252/5 for a 5-day return as an annual edge) — and every
    param at its declared initial value (the decision's hyper-parameters fixed)."""
    import jax

    from ddm.compiler.variants import Variant
    from ddm.runtime.baselines import two_stage as ts
    from ddm.runtime.experiment.evaluate import per_path
    from ddm.runtime.experiment.seeds import bound_dims

    if predictor not in ("ridge", "gbt"):
        raise ValueError(f"predictor is ridge or gbt, got {predictor!r}")
    train = ctx.values([features, target], "train")
    test = ctx.values([features, target], "test")

    def xy(v):
        x = np.asarray(v[features], np.float64).reshape(len(v[features]), -1)
        y = np.asarray(v[target], np.float64)
        y = y.sum(axis=1) if y.ndim == 3 else y.reshape(len(y), -1)
        return x, y

    X, Y = xy(train)
    Xt, Yt = xy(test)
    fit = ts.fit_ridge(X, Y) if predictor == "ridge" else ts.fit_gbt(X, Y, seed=seed)
    pred = fit.predict(Xt) * float(scale)
    stage2 = ctx.prog.variant(Variant(f"two_stage_{predictor}", substitute=(substitute,)))
    params = stage2.init(jax.random.key(0), **bound_dims(ctx.prog, ctx.data, ctx.cfg))
    arrays = {**ctx.data.test, substitute: pred.reshape((len(pred), *_shape(ctx.prog, substitute)))}
    values = per_path(stage2, params, arrays, [output])[output]
    info = {
        "predictor": predictor,
        "best": {k: v for k, v in fit.info.items()},
        "test_r2": ts.r2(Yt, fit.predict(Xt)),
        "note": f"prediction × {scale} fed to node '{substitute}'; params at their initial values",
    }
    return BaselineResult(np.asarray(values, np.float64).reshape(1, -1), info)


def _shape(prog, node: str) -> tuple[int, ...]:
    from ddm.compiler.binding import resolve as resolve_dim

    t = prog.graph.values[prog.graph.nodes[node]].type
    return tuple(resolve_dim(d, prog.graph.dim_values(), None) for d in t.shape)


def phi_only(ctx: Context, n_trials: int = 200, seed: int = 0, periods: int = 50) -> BaselineResult:
    """The rules alone (runtime/baselines/phi_only.py): a symbolic momentum-and-volatility
    position with the program's rule as its gate, weights tuned by Optuna's seeded TPE on the
    training split's Sharpe ratio, evaluated on the test split. Reads the inputs P, R, w_prev,
    cost of trading.ddm's layout."""
    from ddm.runtime.baselines import phi_only as po

    def episodes(split):
        d = getattr(ctx.data, split)
        return po.episodes(d["P"], d["R"], d["w_prev"], d["cost"])

    tuned = po.tune(episodes("train"), n_trials=int(n_trials), seed=int(seed), periods=int(periods))
    test = episodes("test")
    values = po.pnl(po.positions(tuned.rule, test), test)
    info = {
        "best": {k: float(v) for k, v in vars(tuned.rule).items()},
        "train_sharpe": tuned.train_sharpe,
        "budget": f"{n_trials} TPE trials (seed {seed}) on the training split",
    }
    return BaselineResult(values.reshape(1, -1), info)


def portfolio(
    ctx: Context,
    rule: str = "equal_weight",
    prices: str = "P",
    returns: str = "R",
    previous: str = "w_prev",
    cost: str = "cost",
    target: float = 0.10,
    long_only: bool = False,
) -> BaselineResult:
    """A classical portfolio held over each episode (runtime/baselines/classical.py):
    ``equal_weight``, ``min_variance`` (Σ from the window's daily log returns, as the
    examples' cov(shrink=0.1)) or ``vol_target`` (equal weight scaled to an annualised
    ``target`` volatility, no leverage). P&L with the program's accounting:
    dot(w, Σ_t R_t) − cost·Σ|w − w_prev|."""
    from ddm.runtime.baselines import classical

    d = ctx.data.test
    P, R = np.asarray(d[prices], np.float64), np.asarray(d[returns], np.float64)
    w_prev = np.asarray(d[previous], np.float64)
    c = np.broadcast_to(np.asarray(d[cost], np.float64), (len(R),))
    daily = np.log(P[:, 1:] / P[:, :-1])
    n = P.shape[-1]
    if rule == "equal_weight":
        w = np.broadcast_to(classical.equal_weight(n), (len(R), n))
    elif rule == "min_variance":
        w = classical.minimum_variance(daily, long_only=bool(long_only))
    elif rule == "vol_target":
        w = classical.volatility_target(daily, target=float(target))
    else:
        raise ValueError(f"rule is equal_weight, min_variance or vol_target, got {rule!r}")
    values = np.einsum("ni,ni->n", w, R.sum(axis=1)) - c * np.abs(w - w_prev).sum(axis=1)
    return BaselineResult(values.reshape(1, -1), {"note": f"{rule} held for each episode"})


def _ppo_config(args: dict, seed: int):
    from ddm.runtime.baselines import ppo

    keys = {f.name for f in dataclasses.fields(ppo.PPOConfig)}
    given = {k: args.pop(k) for k in list(args) if k in keys}
    if "hidden" in given:
        given["hidden"] = tuple(given["hidden"])
    return ppo.PPOConfig(**{**given, "seed": seed})


def _ppo_curve(result) -> list[dict]:
    return [{"step": int(s), "loss": float(v)} for s, v in np.asarray(result.curve)]


def ppo_hedge(ctx: Context, **args) -> BaselineResult:
    """PPO (runtime/baselines/ppo.py) on the hedging program's observations (moneyness, time,
    previous hedge), actions (the hedge), costs and reward (terminal −exp(−λ·P&L)), trained on
    the training paths, its mean action evaluated on the test paths; ``seeds`` (default 1)
    policies, one per seed of the experiment; PPOConfig fields as arguments."""
    from ddm.runtime.baselines import dp_hedge, ppo

    market = _market(ctx, args)
    paths = args.pop("paths", "S")
    tau_name = args.pop("tau", "tau")
    reward = args.pop("reward", "entropic")
    n_seeds = int(args.pop("seeds", 1))
    configs = [_ppo_config(dict(args), s) for s in ctx.seeds[:n_seeds]]
    train = ctx.values([paths, tau_name], "train")
    test = ctx.values([paths, tau_name], "test")
    rows, curves, result = [], [], None
    for cfg in configs:
        result = ppo.train_hedging(
            train[paths],
            train[tau_name],
            market.cost,
            cfg,
            reward=reward,
            risk_aversion=market.risk_aversion,
            strike=market.strike,
            premium=market.premium,
        )
        h = ppo.hedge_positions(result, test[paths], test[tau_name])
        rows.append(dp_hedge.pnl(test[paths], h, market.cost, market.strike, market.premium))
        curves.append(_ppo_curve(result))
    assert result is not None
    obs = np.asarray([0.0, 1.0, 0.5], np.float32)
    return BaselineResult(
        np.stack(rows),
        {
            "budget": f"{result.steps} environment steps per policy, {len(configs)} seed(s)",
            "reward": reward,
            "config": {k: v for k, v in vars(result.config).items()},
        },
        curve=curves[0],
        policy=ppo.policy_fn(result),
        policy_inputs=(obs,),
    )


def ppo_bandit(
    ctx: Context,
    features: str = "x",
    returns: str = "R",
    previous: str = "w_prev",
    cost: str = "cost",
    limit: float = 1.0,
    seeds: int = 1,
    **args,
) -> BaselineResult:
    """PPO as a contextual bandit on a trading program: the observation is the program's
    feature node, the action the positions (clipped to ``limit``, the program's guard), the
    reward the program's P&L dot(w, Σ_t R_t) − cost·Σ|w − w_prev|."""
    from ddm.runtime.baselines import ppo

    configs = [_ppo_config(dict(args), s) for s in ctx.seeds[: int(seeds)]]
    rows, curves, result = [], [], None
    tr = ctx.values([features], "train")[features]
    te = ctx.values([features], "test")[features]
    d_tr, d_te = ctx.data.train, ctx.data.test
    for cfg in configs:
        reward = ppo.TradingReward(
            np.asarray(d_tr[returns]).sum(axis=1),
            np.asarray(d_tr[previous]),
            np.asarray(d_tr[cost]),
        )
        result = ppo.train_bandit(tr, reward, cfg, limit=float(limit))
        w = ppo.bandit_positions(result, te)
        c = np.asarray(d_te[cost], np.float64)
        r = np.asarray(d_te[returns], np.float64).sum(axis=1)
        rows.append(
            np.einsum("ni,ni->n", w, r) - c * np.abs(w - np.asarray(d_te[previous])).sum(axis=1)
        )
        curves.append(_ppo_curve(result))
    assert result is not None
    return BaselineResult(
        np.stack(rows),
        {"budget": f"{result.steps} environment steps per policy, {len(configs)} seed(s)"},
        curve=curves[0],
        policy=ppo.policy_fn(result),
        policy_inputs=(np.asarray(te[0], np.float32),),
    )


def _plain(market) -> dict:
    from dataclasses import asdict

    return asdict(market)


def _no_more(args: dict, kind: str) -> None:
    if args:
        raise ConfigDiagnostic(
            None, f"baseline kind {kind} takes no argument {', '.join(sorted(args))}"
        )


KINDS: dict[str, Callable[..., BaselineResult]] = {
    "node": node,
    "bs_delta": bs_delta,
    "whalley_wilmott": whalley_wilmott,
    "dp_optimum": dp_optimum,
    "two_stage": two_stage,
    "phi_only": phi_only,
    "portfolio": portfolio,
    "ppo_hedge": ppo_hedge,
    "ppo_bandit": ppo_bandit,
}


MARKET_ARGS = ("sigma", "cost", "days", "steps", "s0", "strike", "premium", "risk_aversion")


def _extra_args(kind: str) -> tuple[str, ...]:
    """The keywords a kind reads from ``**args``."""
    from ddm.runtime.baselines.ppo import PPOConfig

    ppo = tuple(f.name for f in dataclasses.fields(PPOConfig) if f.name != "seed")
    return {
        "bs_delta": (*MARKET_ARGS, "paths"),
        "whalley_wilmott": (*MARKET_ARGS, "paths"),
        "dp_optimum": (*MARKET_ARGS, "paths", "n_price", "n_hedge", "n_quad"),
        "ppo_hedge": (*MARKET_ARGS, "paths", "tau", "reward", "seeds", *ppo),
        "ppo_bandit": ppo,
    }.get(kind, ())


def check_args(kind: str, args: Mapping[str, Any], name: str) -> None:
    """The baseline's arguments are ones its kind takes (before anything is trained)."""
    fn = KINDS[kind]
    params = inspect.signature(fn).parameters
    known = [p for p in params if p != "ctx" and params[p].kind is not params[p].VAR_KEYWORD]
    extra = _extra_args(kind)
    for k in args:
        if k not in known and k not in extra:
            raise ConfigDiagnostic(
                None,
                f"baseline '{name}' ({kind}) has no argument '{k}'",
                hint="its arguments: " + ", ".join([*known, *extra]),
            )


def run_baseline(kind: str, ctx: Context, args: Mapping[str, Any], name: str) -> BaselineResult:
    check_args(kind, args, name)
    try:
        return KINDS[kind](ctx, **dict(args))
    except (ValueError, TypeError) as err:
        raise ConfigDiagnostic(None, f"baseline '{name}' ({kind}): {err}") from None
    except KeyError as err:  # an input or node of another program's layout
        raise ConfigDiagnostic(
            None, f"baseline '{name}' ({kind}): the data have no {err}", hint=KINDS[kind].__doc__
        ) from None
