"""Hedging a short option along one price path (a sample): P&L and turnover of a sequence of
positions. The arithmetic is :mod:`ddm.library.market.trading`'s; these are its language ops,
each with its shape rule beside it.

``S: f32[N + 1]`` prices at the rebalancing dates, ``h: f32[N]`` positions held over each
period, starting from flat (the first trade is charged), no final unwind.
"""

from __future__ import annotations

from ddm.library.lazy import jnp
from ddm.library.losses import vector_rule
from ddm.library.op import Arg, Op
from ddm.library.types import DtypeError, ShapeError, TensorType, promote


def _path_rule(name):
    def rule(types, static):
        s, h, *rates = types
        for i, t in enumerate((s, h)):
            if t.ndim != 1:
                raise ShapeError(f"{name} takes one path: S[N + 1] and h[N], got {t}", arg=i)
            if not t.is_float:
                raise DtypeError(f"{name} expects floats, got {t}", arg=i)
        # cost and impact are scalars: numbers in the program, or a market's inputs
        for i, (key, t) in enumerate(zip(("cost", "impact"), rates), start=2):
            if t.ndim != 0:
                raise ShapeError(f"{name}: {key} is a scalar rate, got {t}", arg=i)
            if t.dtype == "bool":
                raise DtypeError(f"{name}: {key} is a number, got {t}", arg=i)
        n_s, n_h = s.shape[0], h.shape[0]
        if isinstance(n_s, int) and isinstance(n_h, int) and n_s != n_h + 1:
            raise ShapeError(
                f"{name}: S has {n_s} prices, so h needs {n_s - 1} positions "
                f"(one per period), got {n_h}",
                arg=1,
            )
        return TensorType(promote(s, h, name), ())

    return rule


def _hedge_pnl(S, h, cost=0.0, impact=0.0, strike=100.0, option="call", premium=0.0):
    from ddm.library.market import trading

    payoff = trading.call_payoff if option == "call" else trading.put_payoff
    return trading.hedged_short_option_pnl(
        S, h, lambda s: payoff(s, strike), premium, proportional=cost, quadratic=impact
    )


def _trading_pnl(S, h, cost=0.0, impact=0.0):
    from ddm.library.market import trading

    return trading.trading_pnl(S, h, proportional=cost, quadratic=impact)


def _turnover(h):
    from ddm.library.market import trading

    if not jnp.issubdtype(h.dtype, jnp.floating):
        h = h.astype(jnp.float32)
    return trading.turnover(h)


OPS = (
    Op(
        "hedge_pnl",
        (
            Arg("S"),
            Arg("h"),
            Arg("strike", "float", 100.0),
            Arg("option", "str", "call", choices=("call", "put")),
            Arg("cost", "tensor", 0.0),
            Arg("impact", "tensor", 0.0),
            Arg("premium", "float", 0.0),
        ),
        _path_rule("hedge_pnl"),
        _hedge_pnl,
        "P&L of selling a European option (call or put at strike) for premium and holding h "
        "over the path S: premium − payoff(S[-1]) + Σ h·ΔS − Σ (cost·|Δh| + impact·Δh²)·S.",
        family="path",
        extra={"nonnegative": ("cost", "impact")},
    ),
    Op(
        "trading_pnl",
        (Arg("S"), Arg("h"), Arg("cost", "tensor", 0.0), Arg("impact", "tensor", 0.0)),
        _path_rule("trading_pnl"),
        _trading_pnl,
        "Σ h·ΔS less proportional (cost) and quadratic (impact) transaction costs.",
        family="path",
        extra={"nonnegative": ("cost", "impact")},
    ),
    Op(
        "turnover",
        (Arg("h"),),
        vector_rule("turnover", "positions"),
        _turnover,
        "Σ |Δh|, the units traded along the path, from a flat start.",
        family="vector",
    ),
)
