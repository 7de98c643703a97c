"""The canonical formatter: AST (with its comments) → text. ``ddmc fmt`` is a thin wrapper.

>>> format_source("dim N=4\\nnode y=f(x,lr = 1e-3)*-2   # why")
'dim N = 4\\nnode y = f(x, lr=1e-3) * -2  # why\\n'

The output parses back to an equal AST (spans are not compared) and formatting it again changes
nothing. Every comment survives: own-line comments stay before the declaration or statement that
follows them, trailing comments stay after the line they trailed; a comment that sat inside a
multi-line expression moves to just after that declaration.

Parentheses are minimal: an operand is wrapped only when the grammar would otherwise read it
differently. The levels below mirror the ``?expr`` chain of ``grammar.lark`` (Python's order).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from ddm.dsl import ast
from ddm.dsl.parser import parse

INDENT = "    "

# Binding levels, loosest first; one per rule of the ?expr chain in grammar.lark.
OR, AND, NOT, COMPARE, SUM, TERM, UNARY, POWER, POSTFIX, ATOM = range(10)

# op -> (level of the whole, least level of the left operand, least level of the right operand).
# E.g. ``sum: sum PLUS term`` makes + left-associative: a right operand must be a term or
# tighter, so ``a - (b - c)`` keeps its parentheses and ``(a - b) - c`` loses them.
# Comparisons take sums on both sides: they do not chain, so ``(a < b) < c`` keeps its parens.
# ``power: postfix POW unary``: the right side may be ``-x`` (``2 ** -x``), the left may not.
_BINARY = {
    "or": (OR, OR, AND),
    "and": (AND, AND, NOT),
    **{op: (COMPARE, SUM, SUM) for op in ast.COMPARISONS},
    "+": (SUM, SUM, TERM),
    "-": (SUM, SUM, TERM),
    "*": (TERM, TERM, UNARY),
    "/": (TERM, TERM, UNARY),
    "@": (TERM, TERM, UNARY),
    "**": (POWER, POSTFIX, UNARY),
}
# op -> (level of the whole, least level of the operand): ``not not_expr``, ``MINUS unary``.
_UNARY = {"not": (NOT, NOT), "-": (UNARY, UNARY)}


# --- expressions -----------------------------------------------------------------------------


def format_expr(e: ast.Expr) -> str:
    """One expression on one line.

    >>> format_expr(ast.BinOp("*", ast.BinOp("+", ast.Name("a"), ast.Name("b")), ast.Name("c")))
    '(a + b) * c'
    """
    return _expr(e)[0]


def _expr(e: ast.Expr) -> tuple[str, int]:
    """The text of ``e`` and the binding level of that text."""
    return _EXPR[type(e)](e)


def _operand(e: ast.Expr, least: int) -> str:
    """``e`` as an operand that must bind at least as tightly as ``least``."""
    text, level = _expr(e)
    return text if level >= least else f"({text})"


def _name(e: ast.Name) -> tuple[str, int]:
    return e.id, ATOM


def _number(e: ast.Number) -> tuple[str, int]:
    # The original spelling (``1e-3``, ``1.``) is kept; ASTs built by hand may have none.
    if e.text:
        return e.text, ATOM
    if not math.isfinite(e.value) or e.value < 0:
        # The grammar has no such literal (``-3`` is a unary minus applied to ``3``).
        raise ValueError(f"no literal for the number {e.value!r}")
    return repr(e.value), ATOM


def _string(e: ast.String) -> tuple[str, int]:
    return _quote(e.value), ATOM


def _quote(value: str) -> str:
    # STRING is /"[^"\\\n]*"/: no escapes exist, so some strings cannot be written at all.
    if any(ch in value for ch in '"\\\n'):
        raise ValueError(f"no literal for the string {value!r}")
    return f'"{value}"'


def _bool(e: ast.Bool) -> tuple[str, int]:
    return ("true" if e.value else "false"), ATOM


def _list(e: ast.ListExpr) -> tuple[str, int]:
    return "[" + ", ".join(format_expr(i) for i in e.items) + "]", ATOM


def _binop(e: ast.BinOp) -> tuple[str, int]:
    # A chain ``a + b - c …`` is as deep as it is long: follow its left spine with a loop.
    # Each step wraps all the text so far, so its opening parentheses all go in front.
    spine: list[ast.BinOp] = []
    head: ast.Expr = e
    while isinstance(head, ast.BinOp):
        spine.append(head)
        head = head.left
    text, level = _expr(head)
    parts, opens = [text], 0
    for node in reversed(spine):
        whole, left, right = _BINARY[node.op]
        if level < left:
            opens += 1
            parts.append(")")
        parts.append(f" {node.op} {_operand(node.right, right)}")
        level = whole
    return "(" * opens + "".join(parts), level


def _unary(e: ast.UnaryOp) -> tuple[str, int]:
    level, operand = _UNARY[e.op]
    sep = " " if e.op == "not" else ""
    return f"{e.op}{sep}{_operand(e.operand, operand)}", level


def _call(e: ast.Call) -> tuple[str, int]:
    # Keyword arguments come last: the AST keeps them apart from the positional ones.
    args = [format_expr(a) for a in e.args]
    args += [f"{k.name}={format_expr(k.value)}" for k in e.kwargs]
    return f"{_operand(e.func, POSTFIX)}({', '.join(args)})", POSTFIX


def _index(e: ast.Index) -> tuple[str, int]:
    items = ", ".join(_slice(i) if isinstance(i, ast.Slice) else format_expr(i) for i in e.items)
    return f"{_operand(e.base, POSTFIX)}[{items}]", POSTFIX


def _slice(s: ast.Slice) -> str:
    lo = format_expr(s.lo) if s.lo is not None else ""
    hi = format_expr(s.hi) if s.hi is not None else ""
    return f"{lo}:{hi}"


def _attr(e: ast.Attr) -> tuple[str, int]:
    base = _operand(e.base, POSTFIX)
    if isinstance(e.base, ast.Number):
        base = f"({base})"  # ``1.x`` would lex as the float ``1.`` followed by ``x``
    return f"{base}.{e.name}", POSTFIX


def _argmin(e: ast.Argmin) -> tuple[str, int]:
    """``argmin v: f32[N] { … } subject to { a, b } using ipm(tol=1e-8) backward unroll(5)``,
    on one line (declarations are one line each; comments inside move after it)."""
    text = f"{e.sense} {e.var}: {_type(e.var_type)} {{ {format_expr(e.objective)} }}"
    if e.constraints:
        text += " subject to { " + ", ".join(format_expr(c) for c in e.constraints) + " }"
    if e.using is not None:
        opts = ", ".join(f"{k.name}={format_expr(k.value)}" for k in e.using.options)
        text += f" using {e.using.name}" + (f"({opts})" if opts else "")
    if e.backward is not None:
        steps = f"({e.backward.steps})" if e.backward.steps is not None else ""
        text += f" backward {e.backward.mode}{steps}"
    return text, ATOM


def _scan_header(e: ast.Scan) -> str:
    return (
        f"scan {e.index} in {e.length.value}, {e.carry}: {_type(e.carry_type)} = "
        f"{format_expr(e.init)} {{"
    )


def _scan(e: ast.Scan) -> tuple[str, int]:
    """``scan t in N, prev: f32 = 0.0 { let a = … return a + prev }`` on one line; a node
    whose value is a scan with ``let`` statements is laid out over lines by :func:`_lines`."""
    lets = "".join(f"{_node(s, 'let')} " for s in e.body)
    ret = "return " if e.body else ""
    return f"{_scan_header(e)} {lets}{ret}{format_expr(e.result)} }}", ATOM


_EXPR = {
    ast.Argmin: _argmin,
    ast.Scan: _scan,
    ast.Name: _name,
    ast.Number: _number,
    ast.String: _string,
    ast.Bool: _bool,
    ast.ListExpr: _list,
    ast.BinOp: _binop,
    ast.UnaryOp: _unary,
    ast.Call: _call,
    ast.Index: _index,
    ast.Attr: _attr,
}


# --- declarations ----------------------------------------------------------------------------


def _type(t: ast.TypeExpr) -> str:
    """``f32``, ``f32[N, 3]``."""
    if not t.dims:
        return t.dtype
    return f"{t.dtype}[{', '.join(str(d.value) for d in t.dims)}]"


def _annotation(t: ast.TypeExpr | None) -> str:
    return f": {_type(t)}" if t is not None else ""


def _import(d: ast.Import) -> str:
    alias = f" as {d.alias}" if d.alias is not None else ""
    return f"import {_quote(d.path)}{alias}"


def _dim(d: ast.DimDecl) -> str:
    return f"dim {d.name}" + (f" = {d.value}" if d.value is not None else "")


def _input(d: ast.InputDecl) -> str:
    return f"input {d.name}: {_type(d.type)}"


def _param(d: ast.ParamDecl) -> str:
    positive = " positive" if d.positive else ""
    return f"param {d.name}{_annotation(d.type)} = {format_expr(d.init)}{positive}"


def _node(d: ast.NodeDecl, keyword: str | None = None) -> str:
    return f"{keyword or d.keyword} {d.name}{_annotation(d.type)} = {format_expr(d.value)}"


def _output(d: ast.OutputDecl) -> str:
    return "output " + ", ".join(n.id for n in d.names)


def _loss(d: ast.LossDecl) -> str:
    name = f" {d.name}" if d.name else ""
    return f"loss{name} = {format_expr(d.value)}"


def _metric(d: ast.MetricDecl) -> str:
    return f"metric {d.name} = {format_expr(d.value)}"


_DECL = {
    ast.Import: _import,
    ast.DimDecl: _dim,
    ast.InputDecl: _input,
    ast.ParamDecl: _param,
    ast.NodeDecl: _node,
    ast.OutputDecl: _output,
    ast.LossDecl: _loss,
    ast.MetricDecl: _metric,
}


# --- layout: declarations → lines, then comments and blank lines around them -----------------


@dataclass
class _Line:
    """One output line of code and the source lines it came from (0 when unknown)."""

    text: str
    depth: int
    start: int
    end: int
    kind: str = "decl"  # "open" ends with '{', "close" is the '}' (no blank lines next to them)

    @property
    def comment_depth(self) -> int:
        # Own-line comments just before a closing brace still belong inside the block.
        return self.depth + 1 if self.kind == "close" else self.depth


def _lines(module: ast.Module) -> list[_Line]:
    out: list[_Line] = []
    for d in module.items:
        if isinstance(d, ast.FnDecl):
            out += _fn_lines(d)
        elif isinstance(d, ast.RunDecl):
            out += _run_lines(d)
        elif isinstance(d, (ast.RuleDecl, ast.GuardDecl)):
            out += _rule_lines(d)
        elif isinstance(d, ast.NodeDecl) and isinstance(d.value, ast.Scan) and d.value.body:
            out += _scan_lines(d)
        else:
            out.append(_Line(_DECL[type(d)](d), 0, d.span.line, d.span.end_line))
    return out


def _fn_lines(d: ast.FnDecl) -> list[_Line]:
    """``fn f(a: f32[N]) -> f32 {``, one ``let`` per line, ``return ...``, ``}``."""
    params = ", ".join(f"{p.name}: {_type(p.type)}" for p in d.params)
    # The header ends at the result type; the '{' after it has no span of its own.
    header_end = d.result_type.span.end_line or d.span.line
    head = _Line(
        f"fn {d.name}({params}) -> {_type(d.result_type)} {{", 0, d.span.line, header_end, "open"
    )
    return _let_block(head, d.body, d.result, d.span.end_line)


def _let_block(head: _Line, lets, result, end_line: int) -> list[_Line]:
    """``head {``, one ``let`` per line, ``return …``, ``}``: fn and scan bodies. A body
    admits only ``let``: a hand-built "node" statement would not parse back."""
    out = [head] + [_Line(_node(s, "let"), 1, s.span.line, s.span.end_line) for s in lets]
    out.append(_Line(f"return {format_expr(result)}", 1, result.span.line, result.span.end_line))
    out.append(_Line("}", 0, end_line, end_line, "close"))
    return out


def _scan_lines(d: ast.NodeDecl) -> list[_Line]:
    """``node h = scan t in N, c: f32 = 0.0 {``, one ``let`` per line, ``return ...``, ``}``."""
    e = d.value
    assert isinstance(e, ast.Scan)  # _lines sends only scan nodes here
    head = f"{d.keyword} {d.name}{_annotation(d.type)} = {_scan_header(e)}"
    return _let_block(
        _Line(head, 0, d.span.line, e.init.span.end_line or d.span.line, "open"),
        e.body,
        e.result,
        d.span.end_line,
    )


def _rule_lines(d: ast.RuleDecl | ast.GuardDecl) -> list[_Line]:
    """``rule NAME "intent" {`` (``guard NAME "intent" on NODE {``), one ``key value`` per
    line, ``}``."""
    intent = f" {_quote(d.intent)}" if d.intent is not None else ""
    head = (
        f"guard {d.name}{intent} on {d.target} {{"
        if isinstance(d, ast.GuardDecl)
        else f"rule {d.name}{intent} {{"
    )
    out = [_Line(head, 0, d.span.line, d.span.line, "open")]
    out += [
        _Line(f"{e.key} {format_expr(e.value)}", 1, e.span.line, e.span.end_line) for e in d.entries
    ]
    out.append(_Line("}", 0, d.span.end_line, d.span.end_line, "close"))
    return out


def _run_lines(d: ast.RunDecl) -> list[_Line]:
    """``run {``, one ``key = value`` per line, ``}``; an empty block is ``run {}``."""
    if not d.entries:
        return [_Line("run {}", 0, d.span.line, d.span.end_line)]
    out = [_Line("run {", 0, d.span.line, d.span.line, "open")]
    out += [
        _Line(f"{e.key} = {format_expr(e.value)}", 1, e.span.line, e.span.end_line)
        for e in d.entries
    ]
    out.append(_Line("}", 0, d.span.end_line, d.span.end_line, "close"))
    return out


def _place_comments(lines: list[_Line], comments: tuple[ast.Comment, ...]):
    """Split comments into those printed before each line, after each line, and at the end.

    A comment on a source line that some output line covers goes after the last such line
    (that is the code it trailed, or the multi-line expression it sat in); any other comment goes
    before the first line that starts after it, or at the end of the file.
    """
    before: list[list[ast.Comment]] = [[] for _ in lines]
    after: list[list[ast.Comment]] = [[] for _ in lines]
    tail: list[ast.Comment] = []
    known = [i for i, ln in enumerate(lines) if ln.start]  # in source order
    starts = [lines[i].start for i in known]
    for c in sorted(comments, key=lambda c: c.line):
        k = bisect.bisect_right(starts, c.line)  # known[k] is the first line starting later
        # Output lines never nest (a header ends before its body starts), so only the last
        # line starting at or before the comment can cover it.
        if k and lines[known[k - 1]].end >= c.line:
            after[known[k - 1]].append(c)
        elif k < len(known):
            before[known[k]].append(c)
        else:
            tail.append(c)
    return before, after, tail


def format_module(module: ast.Module) -> str:
    """The canonical text of a module, comments included; ``""`` for an empty one.

    >>> format_module(parse("run { steps = 100 }"))
    'run {\\n    steps = 100\\n}\\n'
    """
    lines = _lines(module)
    before, after, tail = _place_comments(lines, module.comments)
    out: list[str] = []
    last_line, last_kind = 0, "close"  # source line and kind of the last thing printed

    def emit(text: str, depth: int, start: int, end: int, kind: str) -> None:
        nonlocal last_line, last_kind
        # One blank line stands for any run of blank lines in the source, except just inside
        # braces; lines with unknown positions (hand-built ASTs) never get one.
        if (
            out
            and last_line
            and start
            and start - last_line > 1
            and last_kind != "open"
            and kind != "close"
        ):
            out.append("")
        out.append(INDENT * depth + text)
        last_line, last_kind = end, kind

    for i, line in enumerate(lines):
        for c in before[i]:
            emit(c.text, line.comment_depth, c.line, c.line, "comment")
        trailing = after[i]
        emit(
            line.text + (f"  {trailing[0].text}" if trailing else ""),
            line.depth,
            line.start,
            line.end,
            line.kind,
        )
        # Two comments cannot share a line (the second would become part of the first), so
        # the rest go on lines of their own, where a second pass sees them as own-line
        # comments before the next line and prints them in the same place.
        depth = lines[i + 1].comment_depth if i + 1 < len(lines) else 0
        for c in trailing[1:]:
            out.append(INDENT * depth + c.text)
            last_kind = "comment"
    for c in tail:
        emit(c.text, 0, c.line, c.line, "comment")
    return "\n".join(out) + "\n" if out else ""


def format_source(text: str, file: str = "<string>") -> str:
    """Parse ``text`` and format it; syntax errors propagate as :class:`SyntaxDiagnostic`.

    >>> format_source("output a,b")
    'output a, b\\n'
    """
    return format_module(parse(text, file))
