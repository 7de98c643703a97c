"""The canonical formatter: AST (with its comments) → text. ``ddmc fmt`` is a thin wrapper.

>>> format_source("dim N=4\\nnode y=f(x,lr = 1e-3)*-2   # why")
'dim N = 4\\nnode y = f(x, lr=1e-3) * -2  # why\\n'

The output parses back to an equal AST (spans are not compared) and formatting it again changes
nothing. Every comment survives: own-line comments stay before the declaration or statement that
follows them, trailing comments stay after the line they trailed; a comment that sat inside a
multi-line expression moves to just after that declaration.

Lines are at most :data:`WIDTH` columns where the code allows it (a name, number, string or
type is never split, and a trailing comment may run past the edge). A declaration too long for
one line breaks first at its outermost brackets or operators: inside ``( )``, ``[ ]`` and
``{ }`` its contents move to lines of their own, one level deeper, all on one line if they fit
there and else one item per line (list literals and ``output`` fill their lines instead); a
chain of operators breaks before each operator of the loosest level, the continuation lines
one level deeper (and a tighter chain among its operands, if it breaks too, deeper still); a
line never starts with ``**``. The trailing comment of a declaration laid out over several
lines goes on its first line.

Trailing comments aligned in the source stay aligned: a run of them that started in one column
(lines without a trailing comment in between do not end the run; a blank line, or a trailing
comment in another column, does) starts in one column again, two spaces after the longest code
among their lines. Any other trailing comment is two spaces after its code.

Parentheses are minimal: an operand is wrapped only when the grammar would otherwise read it
differently. The levels below mirror the ``?expr`` chain of ``grammar.lark`` (Python's order).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from ddm.dsl import ast
from ddm.dsl.parser import parse
from ddm.dsl.pretty import LINE, SOFT, Doc, Group, Nest, flat, join, layout

INDENT = "    "
WIDTH = 100  # columns, as in the Python code of ddm (ruff's line-length)

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


# --- layout of brackets and lists ------------------------------------------------------------


def _bracket(open_: str, items: list[Doc], close: str, fill: bool = False) -> Doc:
    """``f(a, b)``'s ``(a, b)``: on one line if it fits; else the items on lines of their own,
    one level deeper, all on one line if they fit there and else one per line (``fill``: as
    many per line as fit, for lists of numbers)."""
    if not items:
        return open_ + close
    return Group((open_, Nest(len(INDENT), (SOFT, _items(items, fill))), SOFT, close))


def _items(items: list[Doc], fill: bool) -> Doc:
    if not fill:
        return Group(join((",", LINE), items))
    # Each break with the item after it is a group of its own: it breaks only when that item
    # does not fit on what is left of the line.
    return (items[0], *(part for item in items[1:] for part in (",", Group((LINE, item)))))


def _parens(doc: Doc) -> Doc:
    return _bracket("(", [doc], ")")


def _braces(body: Doc) -> Doc:
    """``{ body }``, or ``{``, the body one level deeper, ``}`` on three lines."""
    return Group(("{", Nest(len(INDENT), (LINE, body)), LINE, "}"))


# --- expressions -----------------------------------------------------------------------------


def format_expr(e: ast.Expr) -> str:
    """One expression on one line.

    >>> format_expr(ast.BinOp("*", ast.BinOp("+", ast.Name("a"), ast.Name("b")), ast.Name("c")))
    '(a + b) * c'
    """
    return flat(_expr(e)[0])


def _expr(e: ast.Expr) -> tuple[Doc, int]:
    """The layout of ``e`` and the binding level of its text."""
    return _EXPR[type(e)](e)


def _operand(e: ast.Expr, least: int) -> Doc:
    """``e`` as an operand that must bind at least as tightly as ``least``."""
    doc, level = _expr(e)
    return doc if level >= least else _parens(doc)


def _name(e: ast.Name) -> tuple[Doc, int]:
    return e.id, ATOM


def _number(e: ast.Number) -> tuple[Doc, int]:
    # The original spelling (``1e-3``, ``1.``) is kept; ASTs built by hand may have none.
    if e.text:
        return e.text, ATOM
    if not math.isfinite(e.value) or e.value < 0:
        # The grammar has no such literal (``-3`` is a unary minus applied to ``3``).
        raise ValueError(f"no literal for the number {e.value!r}")
    return repr(e.value), ATOM


def _string(e: ast.String) -> tuple[Doc, int]:
    return _quote(e.value), ATOM


def _quote(value: str) -> str:
    # STRING is /"[^"\\\n]*"/: no escapes exist, so some strings cannot be written at all.
    if any(ch in value for ch in '"\\\n'):
        raise ValueError(f"no literal for the string {value!r}")
    return f'"{value}"'


def _bool(e: ast.Bool) -> tuple[Doc, int]:
    return ("true" if e.value else "false"), ATOM


def _list(e: ast.ListExpr) -> tuple[Doc, int]:
    return _bracket("[", [_expr(i)[0] for i in e.items], "]", fill=True), ATOM


def _binop(e: ast.BinOp) -> tuple[Doc, int]:
    # A chain ``a + b - c …`` is as deep as it is long: follow its left spine with a loop.
    # Operators of one level in a row form one group, which breaks before each of them; the
    # chain so far becomes the head of the next group where the level changes.
    spine: list[ast.BinOp] = []
    head: ast.Expr = e
    while isinstance(head, ast.BinOp):
        spine.append(head)
        head = head.left
    doc, level = _expr(head)
    tail: list[Doc] = []  # " op operand" of the current level, each after a break
    for node in reversed(spine):
        whole, left, right = _BINARY[node.op]
        if level < left:
            doc, level, tail = _parens(_chain(doc, tail)), ATOM, []
        elif tail and level != whole:
            # The chain so far binds tighter than the one it starts: its own continuation
            # lines go one level deeper than this chain's.
            doc, tail = Nest(len(INDENT), _chain(doc, tail)), []
        # ``x ** 2`` is kept whole: a line never starts with ``** 2``.
        op = (" ** ",) if node.op == "**" else (LINE, f"{node.op} ")
        tail += [*op, _operand(node.right, right)]
        level = whole
    return _chain(doc, tail), level


def _chain(head: Doc, tail: list[Doc]) -> Doc:
    return Group((head, Nest(len(INDENT), tuple(tail)))) if tail else head


def _unary(e: ast.UnaryOp) -> tuple[Doc, int]:
    level, operand = _UNARY[e.op]
    sep = " " if e.op == "not" else ""
    return (f"{e.op}{sep}", _operand(e.operand, operand)), level


def _call(e: ast.Call) -> tuple[Doc, int]:
    # Keyword arguments come last: the AST keeps them apart from the positional ones.
    args = [_expr(a)[0] for a in e.args] + [_keyword(k) for k in e.kwargs]
    return (_operand(e.func, POSTFIX), _bracket("(", args, ")")), POSTFIX


def _keyword(k: ast.Keyword) -> Doc:
    return (f"{k.name}=", _expr(k.value)[0])


def _index(e: ast.Index) -> tuple[Doc, int]:
    items = [_slice(i) if isinstance(i, ast.Slice) else _expr(i)[0] for i in e.items]
    return (_operand(e.base, POSTFIX), _bracket("[", items, "]")), POSTFIX


def _slice(s: ast.Slice) -> Doc:
    lo = _expr(s.lo)[0] if s.lo is not None else ""
    hi = _expr(s.hi)[0] if s.hi is not None else ""
    return (lo, ":", hi)


def _attr(e: ast.Attr) -> tuple[Doc, int]:
    base = _operand(e.base, POSTFIX)
    if isinstance(e.base, ast.Number):
        base = ("(", base, ")")  # ``1.x`` would lex as the float ``1.`` followed by ``x``
    return (base, f".{e.name}"), POSTFIX


def _argmin(e: ast.Argmin) -> tuple[Doc, int]:
    """``argmin v: f32[N] { … } subject to { a, b } using ipm(tol=1e-8) backward unroll(5)``;
    when too long, the braces' contents go on lines of their own, the last braces first."""
    parts: list[Doc] = [f"{e.sense} {e.var}: {_type(e.var_type)} ", _braces(_expr(e.objective)[0])]
    if e.constraints:
        constraints = Group(join((",", LINE), [_expr(c)[0] for c in e.constraints]))
        parts += [" subject to ", _braces(constraints)]
    if e.using is not None:
        parts.append(f" using {e.using.name}")
        if e.using.options:
            parts.append(_bracket("(", [_keyword(k) for k in e.using.options], ")"))
    if e.backward is not None:
        steps = f"({e.backward.steps})" if e.backward.steps is not None else ""
        parts.append(f" backward {e.backward.mode}{steps}")
    return tuple(parts), ATOM


def _scan_header(e: ast.Scan) -> Doc:
    return (
        f"scan {e.index} in {e.length.value}, {e.carry}: {_type(e.carry_type)} = ",
        _expr(e.init)[0],
        " {",
    )


def _scan(e: ast.Scan) -> tuple[Doc, int]:
    """``scan t in N, prev: f32 = 0.0 { let a = … return a + prev }`` on one line if it
    fits, else one statement per line; a node whose value is a scan with ``let`` statements is
    laid out over lines by :func:`_lines` whatever its length."""
    statements = [_node(s, "let") for s in e.body]
    statements.append(("return ", _expr(e.result)[0]) if e.body else _expr(e.result)[0])
    body = Nest(len(INDENT), (LINE, *join(LINE, statements)))
    return (_scan_header(e), Group((body, LINE, "}"))), ATOM


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


def _import(d: ast.Import) -> Doc:
    alias = f" as {d.alias}" if d.alias is not None else ""
    return f"import {_quote(d.path)}{alias}"


def _dim(d: ast.DimDecl) -> Doc:
    return f"dim {d.name}" + (f" = {d.value}" if d.value is not None else "")


def _input(d: ast.InputDecl) -> Doc:
    return f"input {d.name}: {_type(d.type)}"


def _param(d: ast.ParamDecl) -> Doc:
    positive = " positive" if d.positive else ""
    return (f"param {d.name}{_annotation(d.type)} = ", _expr(d.init)[0], positive)


def _node(d: ast.NodeDecl, keyword: str | None = None) -> Doc:
    return (f"{keyword or d.keyword} {d.name}{_annotation(d.type)} = ", _expr(d.value)[0])


def _output(d: ast.OutputDecl) -> Doc:
    return ("output ", Nest(len(INDENT), _items([n.id for n in d.names], fill=True)))


def _loss(d: ast.LossDecl) -> Doc:
    name = f" {d.name}" if d.name else ""
    return (f"loss{name} = ", _expr(d.value)[0])


def _metric(d: ast.MetricDecl) -> Doc:
    return (f"metric {d.name} = ", _expr(d.value)[0])


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
    """One declaration, header or statement (laid out on one or more output lines) and the
    source lines it came from (0 when unknown)."""

    doc: Doc
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
    params = _bracket("(", [f"{p.name}: {_type(p.type)}" for p in d.params], ")")
    # The header ends at the result type; the '{' after it has no span of its own.
    header_end = d.result_type.span.end_line or d.span.line
    head = _Line(
        (f"fn {d.name}", params, f" -> {_type(d.result_type)} {{"),
        0,
        d.span.line,
        header_end,
        "open",
    )
    return _let_block(head, d.body, d.result, d.span.end_line)


def _let_block(head: _Line, lets, result, end_line: int) -> list[_Line]:
    """``head {``, one ``let`` per line, ``return …``, ``}``: fn and scan bodies. A body
    admits only ``let``: a hand-built "node" statement would not parse back."""
    out = [head] + [_Line(_node(s, "let"), 1, s.span.line, s.span.end_line) for s in lets]
    out.append(_Line(("return ", _expr(result)[0]), 1, result.span.line, result.span.end_line))
    out.append(_Line("}", 0, end_line, end_line, "close"))
    return out


def _scan_lines(d: ast.NodeDecl) -> list[_Line]:
    """``node h = scan t in N, c: f32 = 0.0 {``, one ``let`` per line, ``return ...``, ``}``."""
    e = d.value
    assert isinstance(e, ast.Scan)  # _lines sends only scan nodes here
    head = (f"{d.keyword} {d.name}{_annotation(d.type)} = ", _scan_header(e))
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
        _Line((f"{e.key} ", _expr(e.value)[0]), 1, e.span.line, e.span.end_line) for e in d.entries
    ]
    out.append(_Line("}", 0, d.span.end_line, d.span.end_line, "close"))
    return out


def _run_lines(d: ast.RunDecl) -> list[_Line]:
    """``run {``, one ``key = value`` per line, ``}``; an empty block is ``run {}``."""
    if not d.entries:
        return [_Line("run {}", 0, d.span.line, d.span.end_line)]
    out = [_Line("run {", 0, d.span.line, d.span.line, "open")]
    out += [
        _Line((f"{e.key} = ", _expr(e.value)[0]), 1, e.span.line, e.span.end_line)
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


@dataclass
class _Row:
    """One output line: its code (indentation included) and the comment that trails it, with
    the column that comment started in in the source (0: unknown)."""

    code: str
    comment: str | None = None
    column: int = 0


def _aligned(rows: list[_Row | None]) -> list[str]:
    """The text of each row (``None``: a blank line), trailing comments placed.

    A run of trailing comments that started in one source column shares one column again,
    two spaces after the longest code among their rows. Rows without a trailing comment do not
    end a run; a blank line or a trailing comment from another column does. A second pass
    finds the same runs (or joins neighbouring runs that landed in one column, which moves
    nothing): the output is a fixed point.
    """
    group: list[int] = []  # group[i]: the run of row i's comment (rows without one: -1)
    widest: list[int] = []  # per run, its longest code
    column = 0  # the source column of the current run (0: no run)
    for row in rows:
        if row is None:
            column = 0
        elif row.comment is not None:
            if not row.column or row.column != column:
                widest.append(0)
            column = row.column
            widest[-1] = max(widest[-1], len(row.code))
        group.append(len(widest) - 1 if row is not None and row.comment is not None else -1)
    out = []
    for row, g in zip(rows, group):
        if row is None:
            out.append("")
        elif row.comment is None:
            out.append(row.code)
        else:
            out.append(f"{row.code.ljust(widest[g])}  {row.comment}")
    return out


def format_module(module: ast.Module, width: int = WIDTH) -> str:
    """The canonical text of a module, comments included, in ``width`` columns where the
    code allows; ``""`` for an empty module.

    >>> format_module(parse("run { steps = 100 }"))
    'run {\\n    steps = 100\\n}\\n'
    """
    lines = _lines(module)
    before, after, tail = _place_comments(lines, module.comments)
    rows: list[_Row | None] = []
    last_line, last_kind = 0, "close"  # source line and kind of the last thing printed

    def emit(
        doc: Doc, depth: int, start: int, end: int, kind: str, comment: ast.Comment | None = None
    ) -> None:
        nonlocal last_line, last_kind
        # One blank line stands for any run of blank lines in the source, except just inside
        # braces; lines with unknown positions (hand-built ASTs) never get one.
        if (
            rows
            and last_line
            and start
            and start - last_line > 1
            and last_kind != "open"
            and kind != "close"
        ):
            rows.append(None)
        first, *rest = layout(doc, width, len(INDENT) * depth).split("\n")
        rows.append(_Row(INDENT * depth + first))
        if comment is not None:
            rows[-1] = _Row(INDENT * depth + first, comment.text, comment.column)
        rows.extend(_Row(r) for r in rest)
        last_line, last_kind = end, kind

    for i, line in enumerate(lines):
        for c in before[i]:
            emit(c.text, line.comment_depth, c.line, c.line, "comment")
        trailing = after[i]
        emit(
            line.doc,
            line.depth,
            line.start,
            line.end,
            line.kind,
            trailing[0] if trailing else None,
        )
        # Two comments cannot share a line (the second would become part of the first), so
        # the rest go on lines of their own, where a second pass sees them as own-line
        # comments before the next line and prints them in the same place.
        depth = lines[i + 1].comment_depth if i + 1 < len(lines) else 0
        for c in trailing[1:]:
            rows.append(_Row(INDENT * depth + c.text))
            last_kind = "comment"
    for c in tail:
        emit(c.text, 0, c.line, c.line, "comment")
    return "\n".join(_aligned(rows)) + "\n" if rows else ""


def format_source(text: str, file: str = "<string>", width: int = WIDTH) -> str:
    """Parse ``text`` and format it; syntax errors propagate as :class:`SyntaxDiagnostic`.

    >>> format_source("output a,b")
    'output a, b\\n'
    """
    return format_module(parse(text, file), width)
