"""The canonical formatter: round-trips to an equal AST, is idempotent, keeps every comment,
wraps at 100 columns and keeps aligned comments aligned."""

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
from ddm.dsl.format import WIDTH, format_expr, format_module, format_source
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


# --- lines wrapped at 100 columns -------------------------------------------------------------

WRAPPED = """\
param net = nn.mlp(features_in, 64, 64, 64, 64, N, act="tanh", init="glorot", dropout=0.1, seed=1234)  # big
node z = zscore(x, mean=[56.6, 0.2285, 11.99, 0.4, 0.4, 1.0, 3.5, 2.25], std=[30.15, 0.1277, 6.866, 0.6313, 0.2, 1.0])
node w = argmin v: f32[N] { lam * quad(v, Sigma) - dot(b, v) } subject to { sum(v) == 1, v >= 0, v <= 0.2 }
node d = argmin v: f32[N] { lam * quad(w0 + v, Sigma) - dot(b, v) + kappa * sum(abs(v)) } subject to { v >= -w0 }
node h = scan t in N, c: f32 = 0.0 { let step_size = some_long_function_name(x[t], c) let next_value = c + step_size return next_value }
node g = scan t in N, c: f32 = 0.0 { c + some_long_function_name(x[t], c) * another_long_function_name(y[t], c) }
fn score(features: f32[N], weights: f32[N], bias: f32, temperature: f32, calibration: f32[N]) -> f32 {
    let s = dot(features, weights) + bias  # raw
    return sigmoid(s / temperature) * mean(calibration) + (1.0 - mean(calibration)) * 0.5 * temperature
}
output first_output, second_output, third_output, fourth_output, fifth_output, sixth_output, seventh, eighth
loss = entropic_risk(pnl_net) + entropic_risk(pnl_band) + 0.1 * mean(turnover(h_net)) + 0.1 * mean(turnover(h_band))
metric share = sum(f32(regime) * sum(abs(w), axis=1)) / sum(f32(regime)) > 0.5 and mean(w) < 1.0 or true
node k = f(  # inside
    a, b)
run {
    data = regime_windows(assets=4, window=20, horizon=5, turbulent_mu=0.0, stay=0.99, n_train=2000, n_test=20000)
}
"""  # noqa: E501 (the long lines are the point)

WRAPPED_CANONICAL = """\
param net = nn.mlp(  # big
    features_in, 64, 64, 64, 64, N, act="tanh", init="glorot", dropout=0.1, seed=1234
)
node z = zscore(
    x,
    mean=[56.6, 0.2285, 11.99, 0.4, 0.4, 1.0, 3.5, 2.25],
    std=[30.15, 0.1277, 6.866, 0.6313, 0.2, 1.0]
)
node w = argmin v: f32[N] { lam * quad(v, Sigma) - dot(b, v) } subject to {
    sum(v) == 1, v >= 0, v <= 0.2
}
node d = argmin v: f32[N] {
    lam * quad(w0 + v, Sigma) - dot(b, v) + kappa * sum(abs(v))
} subject to { v >= -w0 }
node h = scan t in N, c: f32 = 0.0 {
    let step_size = some_long_function_name(x[t], c)
    let next_value = c + step_size
    return next_value
}
node g = scan t in N, c: f32 = 0.0 {
    c + some_long_function_name(x[t], c) * another_long_function_name(y[t], c)
}
fn score(
    features: f32[N], weights: f32[N], bias: f32, temperature: f32, calibration: f32[N]
) -> f32 {
    let s = dot(features, weights) + bias  # raw
    return sigmoid(s / temperature) * mean(calibration)
        + (1.0 - mean(calibration)) * 0.5 * temperature
}
output first_output, second_output, third_output, fourth_output, fifth_output, sixth_output,
    seventh, eighth
loss = entropic_risk(pnl_net)
    + entropic_risk(pnl_band)
    + 0.1 * mean(turnover(h_net))
    + 0.1 * mean(turnover(h_band))
metric share = sum(f32(regime) * sum(abs(w), axis=1)) / sum(f32(regime)) > 0.5 and mean(w) < 1.0
    or true
node k = f(a, b)  # inside
run {
    data = regime_windows(
        assets=4, window=20, horizon=5, turbulent_mu=0.0, stay=0.99, n_train=2000, n_test=20000
    )
}
"""

# The same rules at 40 columns: brackets hold one item per line when their items do not fit
# on one; a tighter chain among the operands of a broken one breaks one level deeper.
NARROW = """\
node z = zscore(x, mean=[56.6, 0.2285, 11.99, 0.4, 0.4, 1.0, 3.5], std=[30.15, 0.1277])
node w = argmin v: f32[N] { lam * quad(v, Sigma) - dot(b, v) } subject to { sum(v) == 1, v >= 0 }
fn score(features: f32[N], weights: f32[N], bias: f32) -> f32 {
    return sigmoid(s / temperature) * mean(calibration) + (1.0 - mean(calibration)) * 0.5
}
output first_output, second_output, third_output, fourth_output, fifth
node p = (mean(x) - 2 * sum(y)) ** 2
"""

NARROW_CANONICAL = """\
node z = zscore(
    x,
    mean=[
        56.6, 0.2285, 11.99, 0.4, 0.4,
        1.0, 3.5
    ],
    std=[30.15, 0.1277]
)
node w = argmin v: f32[N] {
    lam * quad(v, Sigma) - dot(b, v)
} subject to { sum(v) == 1, v >= 0 }
fn score(
    features: f32[N],
    weights: f32[N],
    bias: f32
) -> f32 {
    return sigmoid(s / temperature)
            * mean(calibration)
        + (1.0 - mean(calibration))
            * 0.5
}
output first_output, second_output,
    third_output, fourth_output, fifth
node p = (mean(x) - 2 * sum(y)) ** 2
"""


def test_long_lines_are_wrapped():
    out = check_canonical(WRAPPED)
    assert out == WRAPPED_CANONICAL
    assert max(len(line) for line in out.splitlines()) <= WIDTH


def test_wrapping_at_another_width():
    module = parse(NARROW)
    out = format_module(module, width=40)
    assert out == NARROW_CANONICAL
    assert parse(out) == module
    assert format_source(out, width=40) == out
    # wider, the same program takes fewer lines, and the default width undoes it all
    assert len(format_module(module, width=60).splitlines()) < len(out.splitlines())
    assert format_source(out) == format_source(NARROW)


def test_what_cannot_be_broken_runs_past_the_edge():
    long_name = "a" * 120
    for text in (
        f"node {long_name} = 1\n",
        f'import "{long_name}"\n',
        f"input x: f32[{long_name}, {long_name}]\n",
        f"node x = {long_name}  # and a comment\n",
    ):
        assert check_canonical(text) == text


_ARG = "argument"
_LONG = f"node b = f({', '.join(f'{_ARG}_{i}' for i in range(1, 9))})"

ALIGNED = f"""\
dim N = 4    # assets
dim NN = 16  # squared
node x = 1
dim M = 2    # an uncommented line does not end the run

dim K = 3      # alone in its paragraph: two spaces
node y = f(x)   # y
node z = g(y)  # another column ends the run
node w = h(z)   # so this one is alone again

{"node a = 1".ljust(len(_LONG))}  # first
{_LONG}  # on the first line of a wrapped declaration
{"node c = 2".ljust(len(_LONG))}  # third
"""

ALIGNED_CANONICAL = """\
dim N = 4    # assets
dim NN = 16  # squared
node x = 1
dim M = 2    # an uncommented line does not end the run

dim K = 3  # alone in its paragraph: two spaces
node y = f(x)  # y
node z = g(y)  # another column ends the run
node w = h(z)  # so this one is alone again

node a = 1   # first
node b = f(  # on the first line of a wrapped declaration
    argument_1, argument_2, argument_3, argument_4, argument_5, argument_6, argument_7, argument_8
)
node c = 2   # third
"""


def test_aligned_trailing_comments_stay_aligned():
    assert len(_LONG) > WIDTH
    assert check_canonical(ALIGNED) == ALIGNED_CANONICAL


def test_formatting_section_of_the_language_docs_is_canonical():
    """docs/language.md shows the wrapping rules on a block of code: that block is the
    formatter's own output."""
    with open(os.path.join(ROOT, "docs", "language.md"), encoding="utf-8") as fh:
        docs = fh.read()
    section = docs[docs.index("### Formatting: `ddmc fmt`") :]
    block = section.split("```\n")[1]
    assert block.count("\n") > 5
    assert check_canonical(block) == block


def test_every_example_is_canonical_and_fits_in_100_columns(capsys):
    """What ``ddmc fmt --check examples/`` says: nothing to change (stdout carries no diff).
    Only a trailing comment may run past column 100."""
    from ddm.cli.main import main

    examples = os.path.join(ROOT, "examples")
    assert main(["fmt", "--check", examples]) == 0, capsys.readouterr().out
    out, err = capsys.readouterr()
    assert out == "" and err.endswith("files checked, all canonical\n")
    for path in sorted(glob.glob(os.path.join(examples, "*.ddm"))):
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        for c in parse("\n".join(lines), path).comments:
            lines[c.line - 1] = lines[c.line - 1][: c.column - 1].rstrip()
        assert max(len(line) for line in lines) <= WIDTH, path


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


# Narrow widths make nearly every bracket and chain break, and deep ones break again inside.
widths = st.sampled_from([1, 10, 20, 40, 60, WIDTH])


@settings(max_examples=200, deadline=None)
@given(modules, widths)
def test_random_ast_round_trips_at_every_width(module, width):
    text = format_module(module, width)
    assert parse(text, module.file) == module
    assert format_source(text, width=width) == text


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
    sit inside multi-line expressions, and trailing comments after 1 to 6 spaces (so some
    runs of them line up): all survive, and a second pass changes nothing."""
    width = data.draw(widths)
    lines = []
    for i, line in enumerate(format_module(module, width).replace(", ", ",\n").splitlines()):
        where = data.draw(st.sampled_from(["", "", "own", "blank", "trailing"]))
        if where == "own":
            lines.append(f"  # own {i}")
        elif where == "blank":
            lines.append("")
        if where == "trailing":
            line += " " * data.draw(st.integers(1, 6)) + f"# trailing {i}"
        lines.append(line)
    text = "\n".join(lines)
    out = format_source(text, module.file, width)
    assert parse(out, module.file) == module
    assert comment_texts(out) == comment_texts(text)
    assert format_source(out, width=width) == out
