"""The canonical formatter: round-trips to an equal AST, is idempotent, keeps every comment."""

from __future__ import annotations

import collections
import glob
import os
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddm.dsl import ast
from ddm.dsl.diagnostics import SyntaxDiagnostic
from ddm.dsl.format import format_expr, format_module, format_source
from ddm.dsl.parser import parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KEYWORDS = set(
    "dim input param node let output loss metric fn run import as return true false "
    "and or not positive f32 f64 i32 bool".split()
)


def comment_texts(text: str) -> collections.Counter:
    return collections.Counter(c.text for c in parse(text).comments)


def check_canonical(text: str) -> str:
    """Format ``text``; assert round-trip, idempotence and comment preservation; return it."""
    module = parse(text)
    out = format_module(module)
    assert parse(out) == module
    assert format_source(out) == out
    assert comment_texts(out) == comment_texts(text)
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n"))
    return out


# --- hand-written programs -------------------------------------------------------------------

MESSY = """\
# header comment

import "lib.ddm"   # trailing
import "nn.ddm" as nn
dim N=4
dim F
input x : f32[N,F]
param lam:f32=1.0 positive



param net = nn.mlp(F, 32, N)
node h = net(x)   # hidden
let y: f32[N] = -h ** 2 + (a - b) - (c - d)
output y,h
loss = mean((y - x[:, 0]) ** 2) + lam * sum(x[1:3])
metric acc = mean(y == x[:,0])   # acc
fn f(a: f32[N],   # first
     b: f32) -> f32 {

  # own-line in fn
  let q = a*2   # double


  let r = f(q,  # inside
      # own inside
      b)
  return sum(q)
  # before close
}
run { steps = 100  optimizer = adam(lr=1e-3) }
run {
}
# tail
"""

MESSY_CANONICAL = """\
# header comment

import "lib.ddm"  # trailing
import "nn.ddm" as nn
dim N = 4
dim F
input x: f32[N, F]
param lam: f32 = 1.0 positive

param net = nn.mlp(F, 32, N)
node h = net(x)  # hidden
let y: f32[N] = -h ** 2 + (a - b) - (c - d)
output y, h
loss = mean((y - x[:, 0]) ** 2) + lam * sum(x[1:3])
metric acc = mean(y == x[:, 0])  # acc
fn f(a: f32[N], b: f32) -> f32 {  # first
    # own-line in fn
    let q = a * 2  # double

    let r = f(q, b)  # inside
    # own inside
    return sum(q)
    # before close
}
run {
    steps = 100
    optimizer = adam(lr=1e-3)
}
run {}
# tail
"""

OPERATORS = """\
node a = (x+y)*z   # (a + b) keeps its parentheses
node b = ((x - y) - z) - (u - (v - w))
node c = (-x) ** 2 + -x ** 2 + 2 ** -x + 2 ** 3 ** 4 + (2 ** 3) ** 4
node d = (a < b) == (c >= d)
node e = not (a and b) or not a == b and (c or d)
node f = m.g(x, k=[1, 2.5, true], s="a # not a comment")[1:, :3, :, 0].T
node g = (1).x + (-3)[0] + -(a @ b) / c
loss = a / (b * c) - (a * b) / c
"""

OPERATORS_CANONICAL = """\
node a = (x + y) * z  # (a + b) keeps its parentheses
node b = x - y - z - (u - (v - w))
node c = (-x) ** 2 + -x ** 2 + 2 ** -x + 2 ** 3 ** 4 + (2 ** 3) ** 4
node d = (a < b) == (c >= d)
node e = not (a and b) or not a == b and (c or d)
node f = m.g(x, k=[1, 2.5, true], s="a # not a comment")[1:, :3, :, 0].T
node g = (1).x + (-3)[0] + -(a @ b) / c
loss = a / (b * c) - a * b / c
"""

ONE_LINERS = """\
fn sq(x: f32) -> f32 { return x ** 2 }  # square
fn g() -> f32 { let a = 1 let b: f32[3] = [a, a, a] return sum(b) }
param p = positive   # a name, not the flag
"""

ONE_LINERS_CANONICAL = """\
fn sq(x: f32) -> f32 {
    return x ** 2
}  # square
fn g() -> f32 {
    let a = 1
    let b: f32[3] = [a, a, a]
    return sum(b)
}
param p = positive  # a name, not the flag
"""

COMMENTS_ONLY = "\n\n# one\n\n\n# two\n   # three\n\n"


@pytest.mark.parametrize(
    "text, expected",
    [
        (MESSY, MESSY_CANONICAL),
        (OPERATORS, OPERATORS_CANONICAL),
        (ONE_LINERS, ONE_LINERS_CANONICAL),
        (COMMENTS_ONLY, "# one\n\n# two\n# three\n"),
        ("", ""),
        ("\n  \n", ""),
    ],
)
def test_golden(text, expected):
    assert check_canonical(text) == expected


def test_canonical_text_is_a_fixed_point():
    for text in (MESSY_CANONICAL, OPERATORS_CANONICAL, ONE_LINERS_CANONICAL):
        assert format_source(text) == text


@pytest.mark.parametrize(
    "source, canonical",
    [
        ("-x ** 2", "-x ** 2"),
        ("(-x) ** 2", "(-x) ** 2"),
        ("-(x ** 2)", "-x ** 2"),
        ("2 ** (3 ** 4)", "2 ** 3 ** 4"),
        ("2 ** (-x)", "2 ** -x"),
        ("a * (-b)", "a * -b"),
        ("a - (-b)", "a - -b"),
        ("- - x", "--x"),
        ("-(-3)", "--3"),
        ("-(a + b)", "-(a + b)"),
        ("-(not a)", "-(not a)"),
        ("not (not a)", "not not a"),
        ("not (a == b)", "not a == b"),
        ("(a == b) == c", "(a == b) == c"),
        ("a == (b == c)", "a == (b == c)"),
        ("(a + b) < c", "a + b < c"),
        ("(a and b) and c", "a and b and c"),
        ("a and (b and c)", "a and (b and c)"),
        ("(a or b) and c", "(a or b) and c"),
        ("a @ (b @ c)", "a @ (b @ c)"),
        ("(a + b)[0]", "(a + b)[0]"),
        ("(f)(x)", "f(x)"),
        ("(m.f)(x)", "m.f(x)"),
        ("f(a, k = 1, b)", "f(a, b, k=1)"),  # keywords are stored apart from positionals
        ("x[ : ]", "x[:]"),
        ("1 .x", "(1).x"),
        ("1e-3", "1e-3"),
        ("[ ]", "[]"),
    ],
)
def test_parentheses(source, canonical):
    out = check_canonical(f"node v = {source}\n")
    assert out == f"node v = {canonical}\n"


def _operator_pairs():
    """Every operator as the left and as the right operand of every binary operator, and as
    the operand of every unary one: each cell of the precedence table, checked one by one."""
    a, b, c = ast.Name("a"), ast.Name("b"), ast.Name("c")
    inner = [ast.BinOp(op, a, b) for op in BINARY_OPS] + [ast.UnaryOp(op, a) for op in ("-", "not")]
    for child in inner:
        for op in BINARY_OPS:
            yield ast.BinOp(op, child, c)
            yield ast.BinOp(op, c, child)
        for op in ("-", "not"):
            yield ast.UnaryOp(op, child)


def test_every_operator_pairing_round_trips():
    for expr in _operator_pairs():
        text = format_expr(expr)
        assert parse(f"loss = {text}").items[0].value == expr, text
        assert text.count("(") <= 1  # at most the one pair the child needs


def test_hand_built_ast_without_text_or_spans():
    module = ast.Module(
        "<built>",
        (
            ast.DimDecl("N", 4),
            ast.NodeDecl("node", "y", None, ast.BinOp("*", ast.Number(1e-05), ast.Number(3))),
            ast.FnDecl(
                "f",
                (),
                ast.TypeExpr("f32", ()),
                (ast.NodeDecl("node", "a", None, ast.Number(0.5)),),
                ast.Name("a"),
            ),
        ),
    )
    out = format_module(module)
    assert out == (
        "dim N = 4\nnode y = 1e-05 * 3\nfn f() -> f32 {\n    let a = 0.5\n    return a\n}\n"
    )
    with pytest.raises(ValueError):
        format_expr(ast.String('say "hi"'))
    with pytest.raises(ValueError):
        format_expr(ast.Number(float("inf")))


def test_example_files_round_trip():
    """Every .ddm file in the tree; the corpus's deliberately malformed ones must be refused."""
    paths = sorted(
        glob.glob(os.path.join(ROOT, "examples", "**", "*.ddm"), recursive=True)
        + glob.glob(os.path.join(ROOT, "tests", "**", "*.ddm"), recursive=True)
    )
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        try:
            parse(text, path)
        except SyntaxDiagnostic:
            with pytest.raises(SyntaxDiagnostic):
                format_source(text, path)
            continue
        check_canonical(text)


# --- random ASTs -----------------------------------------------------------------------------

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,5}", fullmatch=True).filter(
    lambda s: s not in KEYWORDS
)
ints = st.integers(0, 10**6).flatmap(
    lambda v: st.sampled_from([ast.Number(v, str(v)), ast.Number(v)])
)
floats = st.floats(0, 1e20, allow_nan=False, allow_infinity=False).map(lambda v: ast.Number(abs(v)))
strings = st.text(string.ascii_letters + string.digits + " _-#.:", max_size=8).map(ast.String)
leaves = st.one_of(names.map(ast.Name), ints, floats, st.booleans().map(ast.Bool))
BINARY_OPS = ["or", "and", *ast.COMPARISONS, "+", "-", "*", "/", "@", "**"]
# One precedence level at a time, so the rare levels are drawn as often as the comparisons.
binary_ops = st.sampled_from(
    [["or"], ["and"], ast.COMPARISONS, ["+", "-"], ["*", "/", "@"], ["**"]]
).flatmap(st.sampled_from)


def _pick(*strategies):
    """Draw from one of ``strategies``, a repeated one more often. (``one_of`` cannot weight:
    it flattens nested ``one_of``s into one uniform choice and drops repeats.)"""
    return st.sampled_from(strategies).flatmap(lambda strategy: strategy)


def _compound(children):
    small = lambda s: st.lists(s, max_size=2).map(tuple)  # noqa: E731
    kwargs = small(st.builds(ast.Keyword, names, children | strings))
    funcs = names.map(ast.Name) | st.builds(lambda m, f: ast.Attr(ast.Name(m), f), names, names)
    slices = st.builds(ast.Slice, st.none() | children, st.none() | children)
    # Operators inside operators are the interesting cases, so half the compound nodes are
    # binary operators.
    return _pick(
        st.builds(ast.BinOp, binary_ops, children, children),
        st.builds(ast.BinOp, binary_ops, children, children),
        st.builds(ast.BinOp, binary_ops, children, children),
        st.builds(ast.UnaryOp, st.sampled_from(["-", "not"]), children),
        small(children).map(ast.ListExpr),
        st.builds(ast.Call, funcs, small(children), kwargs),
        st.builds(
            ast.Index, children, st.lists(children | slices, min_size=1, max_size=2).map(tuple)
        ),
        st.builds(ast.Attr, children, names),
    )


def _exprs(depth: int):
    """Expressions nested up to ``depth`` levels; one node in four is a leaf."""
    if depth == 0:
        return leaves
    compound = _compound(_exprs(depth - 1))
    return _pick(leaves, compound, compound, compound)


exprs = _exprs(4)
# Operators over names only: every pairing of parent and child operator, on either side,
# comes up often, so each rule of the precedence table is exercised.
operator_trees = st.recursive(
    names.map(ast.Name),
    lambda children: _pick(
        st.builds(ast.BinOp, binary_ops, children, children),
        st.builds(ast.UnaryOp, st.sampled_from(["-", "not"]), children),
    ),
    max_leaves=16,
)
types = st.builds(
    ast.TypeExpr,
    st.sampled_from(["f32", "f64", "i32", "bool"]),
    st.lists(st.builds(ast.DimRef, names | st.integers(1, 999)), max_size=3).map(tuple),
)
lets = st.builds(ast.NodeDecl, st.just("let"), names, st.none() | types, exprs)
decls = st.one_of(
    st.builds(ast.NodeDecl, st.sampled_from(["node", "let"]), names, st.none() | types, exprs),
    st.builds(ast.ParamDecl, names, st.none() | types, exprs, st.booleans()),
    st.builds(ast.DimDecl, names, st.none() | st.integers(1, 999)),
    st.builds(ast.InputDecl, names, types),
    st.builds(ast.OutputDecl, st.lists(names.map(ast.Name), min_size=1, max_size=3).map(tuple)),
    st.builds(ast.LossDecl, exprs),
    st.builds(ast.MetricDecl, names, exprs),
    st.builds(ast.Import, st.text(string.ascii_letters + "./_-", max_size=10), st.none() | names),
    st.builds(
        ast.FnDecl,
        names,
        st.lists(st.builds(ast.FnParam, names, types), max_size=3).map(tuple),
        types,
        st.lists(lets, max_size=3).map(tuple),
        exprs,
    ),
    st.builds(ast.RunDecl, st.lists(st.builds(ast.RunEntry, names, exprs), max_size=3).map(tuple)),
)
modules = st.builds(ast.Module, st.just("<gen>"), st.lists(decls, max_size=5).map(tuple))


@settings(max_examples=200, deadline=None)
@given(modules)
def test_random_ast_round_trips(module):
    text = format_module(module)
    assert parse(text, module.file) == module
    assert format_source(text) == text


@settings(max_examples=200, deadline=None)
@given(exprs | operator_trees)
def test_random_expression_round_trips(expr):
    text = f"loss = {format_expr(expr)}\n"
    assert parse(text).items[0].value == expr


@settings(max_examples=200, deadline=None)
@given(modules, st.data())
def test_random_comments_and_blank_lines_survive(module, data):
    """Comments and blank lines scattered through a random program, with its expressions
    broken over lines at every ', ' (no generated string holds a comma), so some comments
    sit inside multi-line expressions: all survive, and a second pass changes nothing."""
    lines = []
    for i, line in enumerate(format_module(module).replace(", ", ",\n").splitlines()):
        where = data.draw(st.sampled_from(["", "", "own", "blank", "trailing"]))
        if where == "own":
            lines.append(f"  # own {i}")
        elif where == "blank":
            lines.append("")
        lines.append(line + (f"  # trailing {i}" if where == "trailing" else ""))
    text = "\n".join(lines)
    out = format_source(text, module.file)
    assert parse(out, module.file) == module
    assert comment_texts(out) == comment_texts(text)
    assert format_source(out) == out
