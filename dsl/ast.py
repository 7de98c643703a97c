"""The untyped AST: frozen, slotted dataclasses, each with the :class:`Span` it came from.

Spans are excluded from equality, so two parses of differently formatted but equivalent text
compare equal (the formatter's round-trip property relies on this).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ddm.dsl.span import UNKNOWN, Span


def _span() -> Span:
    return field(default=UNKNOWN, compare=False, repr=False)


# --- expressions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Name:
    id: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Number:
    value: float | int
    text: str = field(default="", compare=False)
    span: Span = _span()

    @property
    def is_int(self) -> bool:
        return isinstance(self.value, int)


@dataclass(frozen=True, slots=True)
class String:
    value: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Bool:
    value: bool
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class ListExpr:
    items: tuple["Expr", ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BinOp:
    op: str  # + - * / @ ** == != < <= > >= and or
    left: "Expr"
    right: "Expr"
    span: Span = _span()
    op_span: Span = _span()


@dataclass(frozen=True, slots=True)
class UnaryOp:
    op: str  # - not
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Keyword:
    name: str
    value: "Expr"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Call:
    func: "Expr"  # Name, or Attr for an imported module's fn
    args: tuple["Expr", ...]
    kwargs: tuple[Keyword, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Slice:
    lo: "Expr | None"
    hi: "Expr | None"
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Index:
    base: "Expr"
    items: tuple["Expr | Slice", ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Attr:
    base: "Expr"
    name: str
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class SolverHint:
    """``using ipm(tol=1e-8, max_iter=100)``: which solver, and its options."""

    name: str
    options: tuple[Keyword, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class BackwardHint:
    """``backward implicit`` | ``backward unroll(20)`` | ``backward truncated(5)``."""

    mode: str
    steps: int | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class Argmin:
    """``argmin v: f32[N] { objective } subject to { constraints } using … backward …``.

    The decision variable ``var`` is in scope in the objective and the constraints only.
    ``sense`` is "argmin" or "argmax".
    """

    sense: str
    var: str
    var_type: "TypeExpr"
    objective: "Expr"
    constraints: tuple["Expr", ...]
    using: SolverHint | None
    backward: BackwardHint | None
    span: Span = _span()
    var_span: Span = _span()


@dataclass(frozen=True, slots=True)
class Scan:
    """``scan t in N, prev: f32 = init { let … ; new_prev }``: a sequential sub-graph.

    The body runs once per step ``t = 0 … N−1`` (``t`` an i32 scalar) with ``carry`` holding
    the previous step's value (``init`` at the first); the body's value is the new carry. The
    expression's value stacks the carries of every step: ``f32[N, *carry]``. ``index``,
    ``carry`` and the ``let`` names are in scope in the body only.
    """

    index: str
    length: "DimRef"
    carry: str
    carry_type: "TypeExpr"
    init: "Expr"
    body: tuple["NodeDecl", ...]  # let statements
    result: "Expr"
    span: Span = _span()
    index_span: Span = _span()
    carry_span: Span = _span()


Expr = Union[Name, Number, String, Bool, ListExpr, BinOp, UnaryOp, Call, Index, Attr, Argmin, Scan]

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")


# --- types -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DimRef:
    """One axis in a written type: a dim's name or a literal size."""

    value: str | int
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class TypeExpr:
    dtype: str  # f32 f64 i32 bool
    dims: tuple[DimRef, ...]  # () for a scalar
    span: Span = _span()


# --- declarations ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Import:
    path: str
    alias: str | None
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class DimDecl:
    name: str
    value: int | None
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class InputDecl:
    name: str
    type: TypeExpr
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class ParamDecl:
    name: str
    type: TypeExpr | None  # None for a layer (``param net = mlp(F, 32, N)``)
    init: Expr
    positive: bool
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class NodeDecl:
    keyword: str  # "node" or "let": the same thing, two spellings
    name: str
    type: TypeExpr | None
    value: Expr
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class OutputDecl:
    names: tuple[Name, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class LossDecl:
    """``loss = …`` (the default) or ``loss NAME = …``, an alternative a run may choose
    (``loss = "NAME"`` in the run section, ``--set loss=NAME``)."""

    value: Expr
    span: Span = _span()
    name: str | None = None
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class MetricDecl:
    name: str
    value: Expr
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class FnParam:
    name: str
    type: TypeExpr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class FnDecl:
    name: str
    params: tuple[FnParam, ...]
    result_type: TypeExpr
    body: tuple[NodeDecl, ...]  # let statements, keyword "let"
    result: Expr
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class RunEntry:
    key: str
    value: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RunDecl:
    entries: tuple[RunEntry, ...]
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RuleEntry:
    key: str  # rule: when | sharpness | penalty | weight | …; guard: limit | action | fallback
    value: Expr
    span: Span = _span()


@dataclass(frozen=True, slots=True)
class RuleDecl:
    """``rule NAME "intent" { when … sharpness … penalty … weight … }``: a Φ-rule."""

    name: str
    intent: str | None
    entries: tuple[RuleEntry, ...]
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True, slots=True)
class GuardDecl:
    """``guard NAME "intent" on NODE { limit … action … fallback … }``: a hard limit."""

    name: str
    intent: str | None
    target: str
    entries: tuple[RuleEntry, ...]
    span: Span = _span()
    name_span: Span = _span()
    target_span: Span = _span()


Decl = Union[
    Import,
    DimDecl,
    InputDecl,
    ParamDecl,
    NodeDecl,
    OutputDecl,
    LossDecl,
    MetricDecl,
    FnDecl,
    RunDecl,
    RuleDecl,
    GuardDecl,
]


@dataclass(frozen=True, slots=True)
class Comment:
    text: str
    line: int
    own_line: bool  # on a line of its own (else it trails code)
    column: int = 0  # of the '#', from 1 (0: unknown); the formatter keeps aligned ones aligned


@dataclass(frozen=True, slots=True)
class Module:
    file: str
    items: tuple[Decl, ...]
    comments: tuple[Comment, ...] = field(default=(), compare=False, repr=False)
