"""Text → AST. ``parse(text, file)`` is the phase's one entry point; ``read_source`` guards I/O.

Lark (LALR, contextual lexer, positions on) builds a parse tree; ``_Builder`` turns it into the
frozen AST of :mod:`ddm.dsl.ast`. Syntax errors become :class:`SyntaxDiagnostic` with a caret.
"""

from __future__ import annotations

import os
from functools import lru_cache
from importlib import resources

import lark
from lark import Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ddm.dsl import ast
from ddm.dsl.diagnostics import InputDiagnostic, SyntaxDiagnostic
from ddm.dsl.span import Span

MAX_NESTING = 200  # deeper expressions are rejected before any recursive pass sees them
MAX_BYTES = 16 * 1024 * 1024
MAX_INT = 2**63 - 1  # an integer literal, a dim's size: what an int64 holds
BOM = "\ufeff"  # a UTF-8 byte-order mark some editors write first: not part of the program
# Binary operations that chain to the left (``a + b - c``, ``p and q and r``): the parse tree
# of a chain is as deep as it is long, so the passes that walk expressions follow a chain's
# left spine with a loop, and it does not count as nesting (a sum of 10,000 terms is flat).
CHAINS = frozenset({"binop", "compare", "or_op", "and_op"})


@lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    grammar = resources.files("ddm.dsl").joinpath("grammar.lark").read_text(encoding="utf-8")
    return lark.Lark(
        grammar,
        parser="lalr",
        lexer="contextual",
        propagate_positions=True,
        maybe_placeholders=True,
        cache=_cache_path(grammar),
    )


def _cache_path(grammar: str) -> str | bool:
    # Lark's own cache keys on the grammar text; keep it in a per-user directory we can write.
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = os.path.join(base, "ddm")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    import hashlib

    digest = hashlib.sha256((grammar + lark.__version__).encode()).hexdigest()[:16]
    return os.path.join(path, f"grammar-{digest}.lark.cache")


def read_source(path: str) -> str:
    """Read a ``.ddm`` file, turning every I/O problem into an :class:`InputDiagnostic`."""
    where = Span(path, 0, 0, 0, 0)
    if not os.path.exists(path):
        raise InputDiagnostic(where, f"no such file: '{path}'")
    if os.path.isdir(path):
        raise InputDiagnostic(where, f"'{path}' is a directory, not a .ddm file")
    try:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise InputDiagnostic(
                where, f"'{path}' is {size} bytes; ddm reads files up to {MAX_BYTES} bytes"
            )
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputDiagnostic(where, f"cannot read '{path}': {exc.strerror or exc}") from None
    return decode_source(data, path)


def decode_source(data: bytes, path: str) -> str:
    """The text of a ``.ddm`` file: UTF-8, a leading byte-order mark dropped."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputDiagnostic(
            Span(path, 1, 1, 1, 1),
            "file is UTF-16 text (it starts with a UTF-16 byte-order mark); ddm reads UTF-8",
            hint="save it as UTF-8",
        )
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise InputDiagnostic(
            Span(path, line, 1, line, 1), "file contains NUL bytes; is this a binary file?"
        )
    try:
        return data.decode("utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputDiagnostic(
            Span(path, line, col, line, col + 1),
            f"file is not valid UTF-8 (byte 0x{data[exc.start]:02x})",
        ) from None


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse a whole ``.ddm`` program.

    >>> parse("dim N = 4").items[0].name
    'N'
    """
    text = text.removeprefix(BOM)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        raise _syntax_error(exc, text, file) from None
    _check_nesting(tree, file)
    module = _Builder(file).module(tree)
    return ast.Module(file, module, _comments(text))


# --- syntax errors ---------------------------------------------------------------------------

_READABLE = {
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "DTYPE": "a dtype (f32, f64, i32, bool)",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "MINUS": "'-'",
    "PLUS": "'+'",
    "STAR": "'*'",
    "SLASH": "'/'",
    "AT": "'@'",
    "POW": "'**'",
    "COMP_OP": "a comparison",
    "DOT": "'.'",
    "$END": "end of file",
    "__ANON_0": "'->'",
    "POSITIVE": "'positive'",
    "NODE": "'node'",
    "LET": "'let'",
    "SENSE": "'argmin' or 'argmax'",
}
_DECL_START = {
    "IMPORT",
    "DIM",
    "INPUT",
    "PARAM",
    "NODE",
    "LET",
    "OUTPUT",
    "LOSS",
    "METRIC",
    "RULE",
    "GUARD",
    "FN",
    "RUN",
}


def _readable(term: str) -> str:
    if term in _READABLE:
        return _READABLE[term]
    if term.isupper() and term.isalpha():
        return f"'{term.lower()}'"
    return term


def _expected(names) -> str:
    names = set(names)
    if names & _DECL_START and len(names & _DECL_START) >= 5:
        names = (names - _DECL_START) | {
            "a declaration (dim, input, param, node, output, loss, "
            "metric, rule, guard, fn, import, run)"
        }
        items = sorted(_readable(n) if not n.startswith("a declaration") else n for n in names)
    else:
        items = sorted({_readable(n) for n in names})
    if len(items) > 8:
        items = items[:8] + ["…"]
    return ", ".join(items)


def _syntax_error(exc: UnexpectedInput, text: str, file: str) -> SyntaxDiagnostic:
    line, col = getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if exc.pos_in_stream < len(text) else ""
        span = Span(file, line, col, line, col + 1)
        if ch == '"':
            return SyntaxDiagnostic(
                span, "unterminated string literal", hint="strings end with '\"' on the same line"
            )
        return SyntaxDiagnostic(span, f"unexpected character {ch!r}")
    if isinstance(exc, UnexpectedEOF):
        end = text.rstrip()
        line = end.count("\n") + 1
        col = len(end) - (end.rfind("\n") + 1) + 1
        return SyntaxDiagnostic(
            Span(file, line, col, line, col),
            f"unexpected end of file; expected {_expected(exc.expected)}",
        )
    assert isinstance(exc, UnexpectedToken)
    tok = exc.token
    if tok.type == "$END":
        end = text.rstrip()
        line = end.count("\n") + 1
        col = len(end) - (end.rfind("\n") + 1) + 1
        return SyntaxDiagnostic(
            Span(file, line, col, line, col),
            f"unexpected end of file; expected {_expected(exc.expected)}",
        )
    span = Span(
        file,
        tok.line,
        tok.column,
        tok.end_line or tok.line,
        tok.end_column or tok.column + len(tok),
    )
    hint = None
    if tok.type == "EQUAL" and "COMP_OP" in exc.expected:
        hint = "use '==' to compare"
    elif tok.value == "=" and exc.expected and "EQUAL" not in exc.expected:
        hint = "'=' is only allowed in declarations and keyword arguments; use '==' to compare"
    return SyntaxDiagnostic(
        span, f"unexpected {tok.value!r}; expected {_expected(exc.expected)}", hint=hint
    )


def _check_nesting(tree: Tree, file: str) -> None:
    """Reject absurdly deep expressions iteratively, before any recursive pass. The left
    operand of a chained binary operation is not nested in it (see ``CHAINS``)."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            meta = node.meta
            line = getattr(meta, "line", 1)
            col = getattr(meta, "column", 1)
            raise SyntaxDiagnostic(
                Span(file, line, col, line, col + 1),
                f"expression nested more than {MAX_NESTING} levels deep",
                hint="split it into several 'let' nodes",
            )
        for i, child in enumerate(node.children):
            if isinstance(child, Tree):
                flat = i == 0 and node.data in CHAINS and child.data in CHAINS
                stack.append((child, depth if flat else depth + 1))


def excerpt_digits(text: str, limit: int = 30) -> str:
    """A long run of digits as its first ones and its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} digits)"


def _comments(text: str) -> tuple[ast.Comment, ...]:
    out = []
    for number, line in enumerate(text.split("\n"), 1):  # as Lark counts lines
        in_string = False
        for i, ch in enumerate(line):
            if ch == '"':
                in_string = not in_string
            elif ch == "#" and not in_string:
                out.append(ast.Comment(line[i:].rstrip(), number, not line[:i].strip(), i + 1))
                break
    return tuple(out)


# --- parse tree → AST ------------------------------------------------------------------------


class _Builder:
    def __init__(self, file: str):
        self.file = file

    def span(self, node) -> Span:
        if isinstance(node, Token):
            # the lexer positions every token it makes (Lark types the fields optional)
            assert node.line is not None and node.column is not None
            return Span(
                self.file,
                node.line,
                node.column,
                node.end_line or node.line,
                node.end_column or node.column + len(node),
            )
        meta = node.meta
        if getattr(meta, "empty", True):
            return Span(self.file, 0, 0, 0, 0)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    def module(self, tree: Tree) -> tuple[ast.Decl, ...]:
        return tuple(self.decl(item) for item in tree.children)

    # declarations
    def decl(self, t: Tree) -> ast.Decl:
        return getattr(self, "d_" + t.data)(t, self.span(t))

    def d_import_decl(self, t, span):
        path, alias = t.children
        return ast.Import(path[1:-1], str(alias) if alias else None, span)

    def integer(self, token: Token) -> int:
        """An integer literal, at most :data:`MAX_INT` (a larger one cannot be a size, an
        index or an int32/int64 value)."""
        digits = str(token).lstrip("0")
        # more digits than int64 has: too large, and too long for int() to read
        value = MAX_INT + 1 if len(digits) > len(str(MAX_INT)) else int(token)
        if value > MAX_INT:
            raise SyntaxDiagnostic(
                self.span(token),
                f"integer {excerpt_digits(str(token))} is too large; integers and sizes "
                f"are at most {MAX_INT} (int64)",
                hint="write a number too large for an integer as a float: 1e20",
            )
        return value

    def d_dim_decl(self, t, span):
        name, value = t.children
        return ast.DimDecl(
            str(name), self.integer(value) if value is not None else None, span, self.span(name)
        )

    def d_input_decl(self, t, span):
        name, typ = t.children
        return ast.InputDecl(str(name), self.type(typ), span, self.span(name))

    def d_param_decl(self, t, span):
        name, typ, init, positive = t.children
        return ast.ParamDecl(
            str(name),
            self.type(typ) if typ is not None else None,
            self.expr(init),
            positive is not None,
            span,
            self.span(name),
        )

    def d_node_decl(self, t, span) -> ast.NodeDecl:
        kw, name, typ, value = t.children
        return ast.NodeDecl(
            str(kw),
            str(name),
            self.type(typ) if typ is not None else None,
            self.expr(value),
            span,
            self.span(name),
        )

    d_let_stmt = d_node_decl

    def lets(self, stmts) -> tuple[ast.NodeDecl, ...]:
        """The ``let`` statements of a fn or scan body: the grammar admits nothing else there."""
        return tuple(self.d_let_stmt(s, self.span(s)) for s in stmts)

    def d_output_decl(self, t, span):
        return ast.OutputDecl(tuple(ast.Name(str(n), self.span(n)) for n in t.children), span)

    def d_loss_decl(self, t, span):
        name, value = t.children
        return ast.LossDecl(
            self.expr(value),
            span,
            str(name) if name is not None else None,
            self.span(name) if name is not None else span,
        )

    def d_metric_decl(self, t, span):
        name, value = t.children
        return ast.MetricDecl(str(name), self.expr(value), span, self.span(name))

    def d_fn_decl(self, t, span):
        name, *rest = t.children
        params = []
        i = 0
        while i < len(rest) and (rest[i] is None or rest[i].data == "fn_param"):
            if rest[i] is not None:
                pname, ptype = rest[i].children
                params.append(ast.FnParam(str(pname), self.type(ptype), self.span(rest[i])))
            i += 1
        result_type = self.type(rest[i])
        body = self.lets(rest[i + 1 : -1])
        return ast.FnDecl(
            str(name), tuple(params), result_type, body, self.expr(rest[-1]), span, self.span(name)
        )

    def d_rule_decl(self, t, span):
        name, intent, *entries = t.children
        return ast.RuleDecl(
            str(name),
            intent[1:-1] if intent is not None else None,
            tuple(
                ast.RuleEntry(str(e.children[0]), self.expr(e.children[1]), self.span(e))
                for e in entries
            ),
            span,
            self.span(name),
        )

    def d_guard_decl(self, t, span):
        name, intent, target, *entries = t.children
        return ast.GuardDecl(
            str(name),
            intent[1:-1] if intent is not None else None,
            str(target),
            tuple(
                ast.RuleEntry(str(e.children[0]), self.expr(e.children[1]), self.span(e))
                for e in entries
            ),
            span,
            self.span(name),
            self.span(target),
        )

    def d_run_decl(self, t, span):
        entries = tuple(
            ast.RunEntry(str(e.children[0]), self.expr(e.children[1]), self.span(e))
            for e in t.children
        )
        return ast.RunDecl(entries, span)

    def type(self, t: Tree) -> ast.TypeExpr:
        dtype, *dims = t.children
        refs = tuple(self.dim_ref(d) for d in dims if d is not None)
        return ast.TypeExpr(str(dtype), refs, self.span(t))

    def dim_ref(self, t: Tree) -> ast.DimRef:
        """A ``dim_name`` (its NAME token) or a literal size (its INT token)."""
        token = t.children[0]
        assert isinstance(token, Token)  # both rules hold one token
        if t.data == "dim_name":
            return ast.DimRef(str(token), self.span(t))
        return ast.DimRef(self.integer(token), self.span(t))

    # expressions
    def expr(self, t) -> ast.Expr:
        return getattr(self, "e_" + t.data)(t, self.span(t))

    def e_name(self, t, span):
        return ast.Name(str(t.children[0]), span)

    def e_int_lit(self, t, span):
        return ast.Number(self.integer(t.children[0]), str(t.children[0]), span)

    def e_float_lit(self, t, span):
        value = float(t.children[0])
        if value == float("inf"):
            raise SyntaxDiagnostic(
                span,
                f"number {excerpt_digits(str(t.children[0]))} is too large for a float "
                "(it would be infinite)",
            )
        return ast.Number(value, str(t.children[0]), span)

    def e_string_lit(self, t, span):
        return ast.String(str(t.children[0])[1:-1], span)

    def e_true_lit(self, t, span):
        return ast.Bool(True, span)

    def e_false_lit(self, t, span):
        return ast.Bool(False, span)

    def e_list_lit(self, t, span):
        return ast.ListExpr(tuple(self.expr(c) for c in t.children if c is not None), span)

    def e_binop(self, t, span):
        """A chain ``a + b - c …`` (any of ``CHAINS``), built along its left spine by a loop."""
        spine = []
        while isinstance(t, Tree) and t.data in CHAINS:
            spine.append(t)
            t = t.children[0]
        out = self.expr(t)
        for node in reversed(spine):
            if node.data in ("or_op", "and_op"):
                whole = self.span(node)
                out = ast.BinOp(node.data[:-3], out, self.expr(node.children[1]), whole, whole)
            else:
                _, op, right = node.children
                out = ast.BinOp(str(op), out, self.expr(right), self.span(node), self.span(op))
        return out

    e_compare = e_or_op = e_and_op = e_binop

    def e_not_op(self, t, span):
        return ast.UnaryOp("not", self.expr(t.children[0]), span)

    def e_neg(self, t, span):
        return ast.UnaryOp("-", self.expr(t.children[1]), span)

    def e_call(self, t, span):
        func, *args = t.children
        return ast.Call(self.expr(func), *self.call_args(args), span)

    def e_sense_call(self, t, span):
        """``argmax(x, …)``: a call of the library op (``argmax v: T { … }`` is a problem)."""
        sense, *args = t.children
        return ast.Call(ast.Name(str(sense), self.span(sense)), *self.call_args(args), span)

    def call_args(self, args) -> tuple[tuple, tuple]:
        pos, kws = [], []
        for a in args:
            if a is None:
                continue
            if isinstance(a, Tree) and a.data == "kwarg":
                name, value = a.children
                kws.append(ast.Keyword(str(name), self.expr(value), self.span(a)))
            else:
                pos.append(self.expr(a))
        return tuple(pos), tuple(kws)

    def e_index(self, t, span):
        base, *items = t.children
        return ast.Index(self.expr(base), tuple(self.subscript(i) for i in items), span)

    def subscript(self, t):
        if isinstance(t, Tree) and t.data == "slice":
            lo, hi = t.children
            return ast.Slice(
                self.expr(lo) if lo is not None else None,
                self.expr(hi) if hi is not None else None,
                self.span(t),
            )
        return self.expr(t)

    def e_argmin_expr(self, t, span):
        sense, var, typ, objective, subject, using, backward = t.children
        constraints = ()
        if subject is not None:
            constraints = tuple(self.expr(c) for c in subject.children if c is not None)
        hint = None
        if using is not None:
            name, *opts = using.children
            hint = ast.SolverHint(
                str(name),
                tuple(
                    ast.Keyword(str(o.children[0]), self.expr(o.children[1]), self.span(o))
                    for o in opts
                    if o is not None
                ),
                self.span(using),
            )
        back = None
        if backward is not None:
            mode, steps = backward.children
            back = ast.BackwardHint(
                str(mode), int(steps) if steps is not None else None, self.span(backward)
            )
        return ast.Argmin(
            str(sense),
            str(var),
            self.type(typ),
            self.expr(objective),
            constraints,
            hint,
            back,
            span,
            self.span(var),
        )

    def e_scan_expr(self, t, span):
        index, length, carry, typ, init, body = t.children
        *lets, result = body.children
        return ast.Scan(
            str(index),
            self.dim_ref(length),
            str(carry),
            self.type(typ),
            self.expr(init),
            self.lets(lets),
            self.expr(result),
            span,
            self.span(index),
            self.span(carry),
        )

    def e_attr(self, t, span):
        base, name = t.children
        return ast.Attr(self.expr(base), str(name), span)
