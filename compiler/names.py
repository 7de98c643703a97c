"""The names an expression reads: the one walk that name resolution and the desugaring of
guards share (it knows which names an ``argmin`` or a ``scan`` binds locally).

>>> from ddm.dsl.parser import parse
>>> module = parse("node y = f(x) + sum(argmin v: f32 { (v - x) ** 2 })", "<doc>")
>>> [(n.id, called) for n, called in iter_names(module.items[0].value)]
[('f', True), ('x', False), ('sum', True), ('x', False)]
"""

from __future__ import annotations

from typing import Iterator

from ddm.dsl import ast
from ddm.dsl.diagnostics import NameDiagnostic


def iter_names(expr) -> Iterator[tuple[ast.Name, bool]]:
    """Every Name in ``expr`` with whether it stands in call position (iterative)."""
    stack = [(expr, False, frozenset())]
    while stack:
        e, called, bound = stack.pop()
        if isinstance(e, ast.Name):
            if e.id not in bound:  # an argmin's decision variable is local to its problem
                yield e, called
            elif called:  # a decision variable, scan index, carry or scan let
                raise NameDiagnostic(e.span, f"'{e.id}' is a value, not a function")
            continue
        if isinstance(e, ast.Argmin):
            inner = bound | {e.var}
            if e.using is not None:
                stack += [(k.value, False, bound) for k in reversed(e.using.options)]
            parts = [e.objective, *e.constraints]
            stack += [(x, False, inner) for x in reversed(parts)]
            continue
        if isinstance(e, ast.Scan):
            # the init sees the outer names; each let sees the index, the carry and the lets
            # before it (pushed in reverse: the stack pops in source order)
            inner = bound | {e.index, e.carry}
            scoped = []
            for s in e.body:
                scoped.append((s.value, False, inner))
                inner = inner | {s.name}
            scoped.append((e.result, False, inner))
            stack += list(reversed(scoped)) + [(e.init, False, bound)]
            continue
        stack += [(x, c, bound) for x, c in children(e)]


def children(e):
    """The sub-expressions of ``e`` in reverse source order, each with its call position."""
    out = []
    if isinstance(e, ast.BinOp):
        out += [(e.right, False), (e.left, False)]
    elif isinstance(e, ast.UnaryOp):
        out.append((e.operand, False))
    elif isinstance(e, ast.Call):
        out += [(k.value, False) for k in reversed(e.kwargs)]
        out += [(a, False) for a in reversed(e.args)]
        out.append((e.func, True))
    elif isinstance(e, ast.Index):
        for it in reversed(e.items):
            if isinstance(it, ast.Slice):
                out += [(x, False) for x in (it.hi, it.lo) if x is not None]
            else:
                out.append((it, False))
        out.append((e.base, False))
    elif isinstance(e, ast.ListExpr):
        out += [(x, False) for x in reversed(e.items)]
    elif isinstance(e, ast.Attr) and not isinstance(e.base, ast.Name):
        out.append((e.base, False))  # alias.fn is checked with the call
    return out
