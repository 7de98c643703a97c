"""What the checker shares with the modules that check declarative and sequential nodes: the
scope an expression is checked in, the checker's interface, and literal readers.

``check.py`` drives; ``declarative.py`` and ``sequential.py`` receive the checker as a
:class:`Checker` and never import ``check.py`` (no import circle).

>>> int_literal(parse_expr("-3")), num_literal(parse_expr("2.5")), literal(parse_expr("[1, 2]"))
(-3, 2.5, (1, 2))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from ddm.dsl import ast
from ddm.dsl.span import Span
from ddm.library.op import Op
from ddm.library.types import Dim, SymDim, TensorType


@dataclass
class Scope:
    """What names mean where an expression is checked."""

    context: str  # "sample" (nodes, fn bodies) or "batch" (loss, metrics)
    local: dict[str, int] = field(default_factory=dict)
    dims: Mapping[str, SymDim] = field(default_factory=dict)
    fn: Any = None  # the FnDef whose body this is (None: the program's top level)
    tag: str | None = None  # scope label of inlined fn values

    def inner(self) -> "Scope":
        """A scope for a nested body: the same context, a copy of the locals."""
        return Scope(self.context, dict(self.local), self.dims, self.fn, self.tag)


class Checker(Protocol):
    """The part of the checker (``compiler/check.py``) that checks nested constructs."""

    values: list
    ops: Mapping[str, Op]
    scan_index: dict[int, tuple[str, Dim]]  # a scan's step index value → (name, length)

    def add(
        self,
        op: str,
        kind: str,
        inputs,
        attrs,
        typ: TensorType,
        span: Span,
        scope: Scope | None = None,
        name: str | None = None,
        stage: str | None = None,
    ) -> int: ...

    def expr(self, e, scope: Scope) -> int: ...

    def type_of(self, vid: int) -> TensorType: ...

    def type_expr(
        self, t: ast.TypeExpr, dims: Mapping[str, SymDim], generic: bool, bound: dict | None = None
    ) -> TensorType: ...

    def expect(self, t: ast.TypeExpr, vid: int, what: str, dims) -> None: ...

    def apply_op(self, op: Op, tensors, exprs, static, span, scope, node, layout=None) -> int: ...


def span_of(e) -> Span:
    return getattr(e, "span", Span("<unknown>", 0, 0, 0, 0))


def int_literal(e) -> int | None:
    """An integer literal (``-3`` included) as an int, else None."""
    # isinstance(value, int) is Number.is_int, spelled so that the type narrows
    if isinstance(e, ast.Number) and isinstance(e.value, int):
        return e.value
    if (
        isinstance(e, ast.UnaryOp)
        and e.op == "-"
        and isinstance(e.operand, ast.Number)
        and isinstance(e.operand.value, int)
    ):
        return -e.operand.value
    return None


def num_literal(e):
    """A number literal (``-2.5`` included), else None."""
    if isinstance(e, ast.Number):
        return e.value
    if isinstance(e, ast.UnaryOp) and e.op == "-" and isinstance(e.operand, ast.Number):
        return -e.operand.value
    return None


def literal(e):
    """A number or nested list of numbers as Python values (tuples), else None."""
    n = num_literal(e)
    if n is not None:
        return n
    if isinstance(e, ast.ListExpr):
        items = tuple(literal(x) for x in e.items)
        return None if any(i is None for i in items) else items
    return None


def parse_expr(text: str):
    """An expression parsed on its own (for examples and tests)."""
    from ddm.dsl.parser import parse

    node = parse(f"node _ = {text}", "<expr>").items[0]
    assert isinstance(node, ast.NodeDecl)  # the one item parsed is the node written above
    return node.value
