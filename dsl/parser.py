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
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise InputDiagnostic(
            Span(path, line, 1, line, 1), "file contains NUL bytes; is this a binary file?"
        )
    try:
        return data.decode("utf-8")
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
    """Reject absurdly deep expressions iteratively, before any recursive pass."""
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
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth + 1))


def _comments(text: str) -> tuple[ast.Comment, ...]:
    out = []
    for number, line in enumerate(text.split("\n"), 1):  # as Lark counts lines
        in_string = False
        for i, ch in enumerate(line):
            if ch == '"':
                in_string = not in_string
            elif ch == "#" and not in_string:
                out.append(ast.Comment(line[i:].rstrip(), number, not line[:i].strip()))
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

    def d_dim_decl(self, t, span):
        name, value = t.children
        return ast.DimDecl(
            str(name), int(value) if value is not None else None, span, self.span(name)
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
        return ast.DimRef(str(token) if t.data == "dim_name" else int(token), self.span(t))

    # expressions
    def expr(self, t) -> ast.Expr:
        return getattr(self, "e_" + t.data)(t, self.span(t))

    def e_name(self, t, span):
        return ast.Name(str(t.children[0]), span)

    def e_int_lit(self, t, span):
        return ast.Number(int(t.children[0]), str(t.children[0]), span)

    def e_float_lit(self, t, span):
        return ast.Number(float(t.children[0]), str(t.children[0]), span)

    def e_string_lit(self, t, span):
        return ast.String(str(t.children[0])[1:-1], span)

    def e_true_lit(self, t, span):
        return ast.Bool(True, span)

    def e_false_lit(self, t, span):
        return ast.Bool(False, span)

    def e_list_lit(self, t, span):
        return ast.ListExpr(tuple(self.expr(c) for c in t.children if c is not None), span)

    def e_binop(self, t, span):
        left, op, right = t.children
        return ast.BinOp(str(op), self.expr(left), self.expr(right), span, self.span(op))

    def e_compare(self, t, span):
        return self.e_binop(t, span)

    def e_or_op(self, t, span):
        left, right = t.children
        return ast.BinOp("or", self.expr(left), self.expr(right), span, span)

    def e_and_op(self, t, span):
        left, right = t.children
        return ast.BinOp("and", self.expr(left), self.expr(right), span, span)

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
