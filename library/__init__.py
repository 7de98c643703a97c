"""The operations a program may call, each a record with its shape rule beside its JAX
implementation, plus network layers and initialisers. ``OPS`` is built once, immutable.

No import of JAX happens here: implementations reach it lazily (:mod:`ddm.library.lazy`).
"""

from __future__ import annotations

from ddm.library import (
    choices,
    elementwise,
    guards,
    hedging,
    linalg,
    losses,
    order,
    reductions,
    relaxations,
    shape_ops,
    simulators,
    stats,
)
from ddm.library.layers import INITIALIZERS, LAYERS
from ddm.library.op import Arg, Op, table

OPS = table(
    elementwise.OPS,
    reductions.OPS,
    linalg.OPS,
    shape_ops.OPS,
    stats.OPS,
    losses.OPS,
    hedging.OPS,
    guards.OPS,
    relaxations.OPS,
    choices.OPS,
    order.OPS,
    simulators.OPS,
)

# What the expression syntax means in terms of ops.
BINARY_OPERATORS = {
    "+": "add",
    "-": "sub",
    "*": "mul",
    "/": "div",
    "**": "pow",
    "@": "matmul",
    "==": "eq",
    "!=": "ne",
    "<": "lt",
    "<=": "le",
    ">": "gt",
    ">=": "ge",
    "and": "logical_and",
    "or": "logical_or",
}
UNARY_OPERATORS = {"-": "neg", "not": "logical_not"}

__all__ = ["OPS", "LAYERS", "INITIALIZERS", "BINARY_OPERATORS", "UNARY_OPERATORS", "Arg", "Op"]
