"""Whatever a user feeds ddm — sizes, signs, depths, encodings, configs, command-line values —
it answers with a located diagnostic, exit code 1, no traceback and a few lines of output, or
it works. The cases are tables, one per class; each goes through ``ddmc``'s entry point in
this process (``main``), except the sweep over every numeric setting's range, which reads the
settings through :class:`RunConfig` as ``ddmc`` does (thousands of cases, no compilation).

The front end's own long-standing cases (random mutations, nesting, NUL bytes) live in
``test_robustness.py``; golden located messages in ``tests/corpus/bad``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from ddm.cli.main import main
from ddm.dsl.diagnostics import DdmError
from ddm.runtime import checkpoint
from ddm.runtime.config import (
    CALL_KINDS,
    CALL_RANGES,
    MAX_YAML_VALUES,
    OPTIMIZER_RANGES,
    OPTIMIZERS,
    SCALARS,
    RunConfig,
)
from ddm.runtime.data import SOURCES
from ddm.runtime.errors import ConfigDiagnostic
from ddm.runtime.ranges import FLOAT32_MAX

MAX_OUTPUT = 10_000  # characters a refusal may print, whatever the input's size


def ddmc(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def refused(result, needle: str) -> str:
    """``result`` is a clean refusal that says ``needle``; returns its stderr."""
    rc, out, err = result
    assert "Traceback" not in out + err and "RecursionError" not in out + err, err[-3000:]
    assert len(out) + len(err) < MAX_OUTPUT, f"{len(out) + len(err)} characters"
    assert rc == 1, err[-3000:]
    assert ": error: " in err.splitlines()[0] or err.startswith("error: "), err[:500]
    assert needle in err, err[:3000]
    return err


def accepted(result) -> None:
    rc, out, err = result
    assert rc == 0 and "Traceback" not in err, err[-3000:]


def chain(term: str, op: str, n: int) -> str:
    return f" {op} ".join([term] * n)


def nest(open_: str, close: str, n: int, inner: str = "x") -> str:
    return open_ * n + inner + close * n


# --- sizes: dims, axes, literals (ddmc check) --------------------------------------------------

PROGRAM = "input x: f32\nnode a = {}\noutput a\n"
SIZES = {
    # name: (program text, what the error says; None: it checks)
    "dim_beyond_int64": (
        "dim N = 99999999999999999999\ninput x: f32[N]\nnode a = sum(x)\noutput a\n",
        "integer 99999999999999999999 is too large",
    ),
    "dim_a_million_digits": ("dim N = " + "9" * 10**6 + "\n", "(1000000 digits) is too large"),
    "dim_zero": ("dim N = 0\ninput x: f32[N]\nnode a = sum(x)\noutput a\n", "at least 1, got 0"),
    "dim_negative": ("dim N = -3\n", "unexpected '-'; expected an integer"),
    "dim_float": ("dim N = 2.5\n", "unexpected '2.5'"),
    "axis_zero": ("input x: f32[3, 0]\nnode a = sum(x)\noutput a\n", "at least 1, got 0"),
    "axis_beyond_int64": ("input x: f32[9223372036854775808]\n", "is too large"),
    "scan_zero_steps": (
        PROGRAM.format("scan t in 0, s: f32 = x { s + 1 }"),
        "a scan runs at least one step",
    ),
    "layer_size_zero": (
        "input x: f32[3]\nparam net = mlp(3, 0, 1)\nnode a = net(x)\noutput a\n",
        "must be a dim or a positive integer",
    ),
    "eye_zero": (PROGRAM.format("sum(eye(0))"), "must be a dim or a positive integer"),
    "one_hot_zero": (
        "input i: i32\nnode a = one_hot(i, 0)\noutput a\n",
        "must be a dim or a positive integer",
    ),
    "int_beyond_i32": (PROGRAM.format("x + 2147483648"), "does not fit an i32 value"),
    "negative_int_beyond_i32": (PROGRAM.format("x - 3000000000"), "does not fit an i32 value"),
    "int_beyond_int64": (PROGRAM.format("x + 99999999999999999999"), "is too large"),
    "float_overflow": (PROGRAM.format("x * 1e400"), "too large for a float"),
    "float_a_million_digits": (PROGRAM.format("x * 1" + "0" * 10**6 + ".0"), "too large"),
    # a huge dim that int64 holds checks: refusing what cannot fit is --run's memory estimate
    "dim_a_billion": ("dim N = 1000000000\ninput x: f32[N]\nnode a = sum(x)\noutput a\n", None),
    "int_min_i32": ("input i: i32\nnode a = i + -2147483648\noutput a\n", None),
    "float_tiny": (PROGRAM.format("x * 1e-400"), None),
}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_sizes(capsys, tmp_path, name):
    text, needle = SIZES[name]
    path = tmp_path / f"{name}.ddm"
    path.write_text(text, encoding="utf-8")
    result = ddmc(capsys, "check", "-q", path)
    if needle is None:
        accepted(result)
    else:
        assert refused(result, needle).startswith(f"{path}:")


# --- depths: flat chains are not nesting, real nesting is refused ------------------------------

DEPTHS = {
    "sum_10000": (PROGRAM.format(chain("x", "+", 10_000)), None),
    "difference_10000": (PROGRAM.format(chain("x", "-", 10_000)), None),
    "product_10000": (PROGRAM.format(chain("x", "*", 10_000)), None),
    "quotient_3000": (PROGRAM.format(chain("x", "/", 3000)), None),
    "mixed_chain_10000": (PROGRAM.format(chain("x * 2", "+", 5000)), None),
    "parenthesised_left_5000": (PROGRAM.format(nest("(", " + 1)", 5000)), None),
    "and_chain_3000": (PROGRAM.format(f"where({chain('x > 0', 'and', 3000)}, x, 0.0)"), None),
    "or_chain_3000": (PROGRAM.format(f"where({chain('x > 0', 'or', 3000)}, x, 0.0)"), None),
    "sum_in_loss_3000": (
        "input x: f32\nparam w: f32 = 1.0\nnode p = w * x\n"
        f"loss = {chain('mean(p * p)', '+', 3000)}\n",
        None,
    ),
    "sum_in_fn_3000": (
        f"input x: f32\nfn f(y: f32) -> f32 {{ return {chain('y', '+', 3000)} }}\n"
        "node a = f(x)\noutput a\n",
        None,
    ),
    "sum_in_scan_3000": (
        f"dim T = 3\ninput x: f32\nnode a = scan t in T, s: f32 = x {{ {chain('s', '+', 3000)} }}"
        "\noutput a\n",
        None,
    ),
    "objective_of_3000_terms": (
        "input c: f32\nnode a = argmin v: f32 { "
        + chain("(v - c) ** 2", "+", 3000)
        + " }\noutput a\n",
        None,
    ),
    "rule_trigger_and_3000": (
        "input x: f32\nparam w: f32 = 1.0\nnode a = w * x\nloss = mean(a * a)\n"
        f"rule r {{ when {chain('a > 0', 'and', 3000)} penalty a weight 1.0 }}\n",
        None,
    ),
    "right_nested_sum_5000": (
        PROGRAM.format("x + (" * 5000 + "x" + ")" * 5000),
        "nested more than 200 levels deep",
    ),
    "nested_calls_5000": (PROGRAM.format(nest("exp(", ")", 5000)), "nested more than 200"),
    "negations_5000": (PROGRAM.format("- " * 5000 + "x"), "nested more than 200"),
    "nots_5000": (PROGRAM.format("not " * 5000 + "x > 0"), "nested more than 200"),
    "powers_5000": (PROGRAM.format(chain("x", "**", 5000)), "nested more than 200"),
    "nested_lists_5000": (PROGRAM.format(nest("[", "]", 5000, "1.0")), "nested more than 200"),
    "indexing_5000": (PROGRAM.format("x" + "[0]" * 5000), "nested more than 200"),
    "nested_parens_right_of_a_product": (
        PROGRAM.format("x * (" * 300 + "x" + ")" * 300),
        "nested more than 200",
    ),
}


@pytest.mark.parametrize("name", sorted(DEPTHS))
def test_depths(capsys, tmp_path, name):
    text, needle = DEPTHS[name]
    path = tmp_path / f"{name}.ddm"
    path.write_text(text, encoding="utf-8")
    result = ddmc(capsys, "check", "-q", path)
    if needle is None:
        accepted(result)
    else:
        refused(result, needle)


def test_a_flat_sum_of_10000_terms_compiles_runs_and_formats(capsys, tmp_path):
    """Every pass walks a chain along its left spine with a loop: check, lower, run, fmt —
    under the default recursion limit (the Python API does not raise it as ddmc does)."""
    import ddm

    text = "input x: f32\nnode a = " + chain("x", "+", 10_000) + "\noutput a\n"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        prog = ddm.loads(text)
    finally:
        sys.setrecursionlimit(limit)
    assert float(prog.apply({}, x=0.5)["a"]) == 5000.0
    path = tmp_path / "flat.ddm"
    path.write_text(text, encoding="utf-8")
    rc, out, _ = ddmc(capsys, "fmt", path)
    assert rc == 0 and out == "input x: f32\nnode a = x\n" + "    + x\n" * 9_999 + "output a\n"
    path.write_text(out, encoding="utf-8")
    assert ddmc(capsys, "fmt", "--check", path)[0] == 0


def test_formatting_a_chain_keeps_the_parentheses_it_needs():
    from ddm.dsl.format import format_source

    text = "node a = ((x - y) - (z - w)) * (p + q) / r\n"
    assert format_source(text) == "node a = (x - y - (z - w)) * (p + q) / r\n"
    left_nested = "node a = " + nest("(", " - 1) * 2", 100) + "\n"
    out = format_source(left_nested)  # laid out over lines: it is 1,100 columns long
    assert "".join(out.split()) == "".join(left_nested.split())  # each pair is needed
    assert format_source(out) == out


# --- encodings ---------------------------------------------------------------------------------

GOOD = "input x: f32\nnode a = x + 1\noutput a\n"
ENCODINGS = {
    # name: (file bytes, what the error says; None: it checks)
    "utf8_bom": (b"\xef\xbb\xbf" + GOOD.encode(), None),
    "utf8_bom_crlf": (b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode(), None),
    "utf8_bom_then_error": (b"\xef\xbb\xbfnode a = x +\n", "unexpected end of file"),
    "bom_mid_file": (("input x: f32\n\ufeffnode a = x\noutput a\n").encode(), "unexpected"),
    "utf16_le_bom": (b"\xff\xfe" + GOOD.encode("utf-16-le"), "UTF-16"),
    "utf16_be_bom": (b"\xfe\xff" + GOOD.encode("utf-16-be"), "UTF-16"),
    "utf16_without_bom": (GOOD.encode("utf-16-le"), "NUL bytes"),
    "utf32": (GOOD.encode("utf-32"), "UTF-16"),  # its BOM starts like UTF-16 LE's
    "latin1": ("input x: f32  # café\n".encode("latin-1"), "not valid UTF-8 (byte 0xe9)"),
    "cp1252_quotes": (b"node a = \x93x\x94\n", "not valid UTF-8 (byte 0x93)"),
    "overlong_utf8": (b"input x: f32\nnode a = \xc0\xafx\n", "not valid UTF-8"),
    "surrogate_utf8": (b"input x: f32 # \xed\xa0\x80\n", "not valid UTF-8"),
    "nul_at_start": (b"\x00" + GOOD.encode(), "NUL bytes"),
    "zero_width_space_in_name": ("input x\u200b: f32\n".encode(), "unexpected character"),
    "non_breaking_space": ("input\u00a0x: f32\n".encode(), "unexpected character"),
    "greek_name": ("input σ: f32\n".encode(), "unexpected character"),
    "comment_in_greek": (("# σ and ρ\n" + GOOD).encode(), None),
    "string_with_emoji": (
        ('input x: f32[3]\nparam net = mlp(3, 1, act="😀")\n').encode(),
        "must be one of",
    ),
    "form_feed": (b"input x: f32\x0c\nnode a = x\noutput a\n", None),
    "vertical_tab": (b"input x: f32\x0bnode a = x\noutput a\n", "unexpected character"),
    "lone_cr_line_ends": (GOOD.replace("\n", "\r").encode(), None),
}


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_encodings(capsys, tmp_path, name):
    data, needle = ENCODINGS[name]
    path = tmp_path / f"{name}.ddm"
    path.write_bytes(data)
    result = ddmc(capsys, "check", "-q", path)
    if needle is None:
        accepted(result)
    else:
        assert refused(result, needle).startswith(f"{path}:")


def test_a_byte_order_mark_is_not_part_of_the_program(tmp_path):
    from ddm.compiler.driver import front_end_file
    from ddm.dsl.parser import parse

    path = tmp_path / "bom.ddm"
    path.write_bytes(b"\xef\xbb\xbfinput x: f32\nnode a = x + \n")
    with pytest.raises(DdmError) as info:
        front_end_file(str(path))
    assert (info.value.span.line, info.value.span.column) == (2, 13)
    assert str(info.value).splitlines()[1] == "   2 | node a = x + "
    assert parse("\ufeffdim N = 4").items[0].name == "N"


# --- long values: every quote is an excerpt, every source line a window ------------------------

MB = 10**6
LONG = {
    "a_long_name": (PROGRAM.format("x + " + "y" * MB), "undefined name"),
    "a_long_string": (PROGRAM.format('x + "' + "s" * MB + '"'), "a string is not a tensor"),
    "a_long_line_then_an_error": (" " * MB + "node a = +\n", "unexpected '+'"),
    "an_error_at_the_end_of_a_long_line": (
        "input x: f32\nnode a = " + chain("x", "+", 20_000) + " +\n",
        "unexpected end of file",
    ),
    "a_long_comment": ("# " + "c" * MB + "\n" + GOOD, None),
    "a_long_unknown_setting": (
        GOOD + "run { " + "k" * MB + " = 1 }\n",
        None,  # ddmc check does not read the run section
    ),
}


@pytest.mark.parametrize("name", sorted(LONG))
def test_long_values(capsys, tmp_path, name):
    text, needle = LONG[name]
    path = tmp_path / f"{name}.ddm"
    path.write_text(text, encoding="utf-8")
    result = ddmc(capsys, "check", "-q", path)
    if needle is None:
        accepted(result)
    else:
        err = refused(result, needle)
        assert max(len(line) for line in err.splitlines()) < 2200


def test_a_source_line_is_shown_as_a_window_around_the_caret():
    from ddm.dsl.diagnostics import SyntaxDiagnostic
    from ddm.dsl.span import Span

    line = "a" * 5000 + " BAD " + "b" * 5000
    err = SyntaxDiagnostic(Span("f.ddm", 1, 5002, 1, 5005), "here").with_source(line)
    shown, caret = str(err).splitlines()[1:3]
    assert len(shown) < 200 and shown.startswith("   1 | …") and shown.endswith("…")
    assert shown[caret.index("^") : caret.index("^") + 3] == "BAD"


# --- the run configuration: one program, hostile YAML files ------------------------------------

RUN_PROGRAM = """input x: f32
param w: f32 = 1.0
node p = w * x
loss = mean(p * p)
loss quartic = mean(p * p * p * p)
run {
    data = credit_applicants(n_train=64, n_test=64)
    steps = 2
}
"""


def laughs(levels: int) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, levels + 1):
        prev, name = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


YAML = {
    # name: (file bytes, what the error says)
    "laughs_4_levels": (laughs(4).encode(), "expands to more than"),
    "laughs_6_levels": (laughs(6).encode(), "expands to more than"),
    "laughs_8_levels": (laughs(8).encode(), "expands to more than"),
    "laughs_in_one_line": (
        b"steps: [&a [1, 1, 1, 1, 1, 1, 1, 1, 1], &b [*a, *a, *a, *a, *a, *a, *a, *a, *a], "
        b"&c [*b, *b, *b, *b, *b, *b, *b, *b, *b], &d [*c, *c, *c, *c, *c, *c, *c, *c, *c], "
        b"&e [*d, *d, *d, *d, *d, *d, *d, *d, *d]]\n",
        "expands to more than",
    ),
    "laughs_in_mappings": (
        b"a: &a {k1: x, k2: x, k3: x, k4: x, k5: x, k6: x, k7: x, k8: x, k9: x}\n"
        + b"".join(
            f"{c}: &{c} {{{', '.join(f'k{j}: *{p}' for j in range(9))}}}\n".encode()
            for p, c in zip("abcdefg", "bcdefgh")
        ),
        "expands to more than",
    ),
    "alias_of_itself": (b"steps: &a [*a]\n", "refers to a value containing it"),
    "mapping_alias_of_itself": (b"steps: &a {b: *a}\n", "refers to a value containing it"),
    "undefined_alias": (b"steps: *nope\n", "found undefined alias"),
    "deep_block_mappings": (
        ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 1500))).encode(),
        "nested more than 32 levels deep",
    ),
    "deep_flow_lists": (("steps: " + nest("[", "]", 5000, "1") + "\n").encode(), "nested more"),
    "deep_flow_mappings": (("steps: " + nest("{a: ", "}", 5000, "1") + "\n").encode(), "nested"),
    "deep_block_lists": (("".join(" " * i + "-\n" for i in range(1500))).encode(), "nested"),
    "a_1MB_string_value": (b'steps: "' + b"x" * MB + b'"\n', "must be an integer, got 'xxx"),
    "a_1MB_plain_value": (b"loss: " + b"x" * MB + b"\n", "characters long; a setting has at most"),
    "a_1MB_key": (b"x" * MB + b": 1\n", "invalid YAML"),
    "a_long_key": (b"k" * 1000 + b": 1\n", "unknown run setting 'kkkk"),
    "a_1MB_list": (b"steps: [" + b"1, " * (MB // 3) + b"1]\n", "holds more than 10000 values"),
    "a_long_data_name": (b"data: " + b"d" * 100_000 + b"\n", "unknown data source 'ddd"),
    "int_key": (b"100: steps\n", "a setting's name is a word"),
    "null_key": (b"~: 1\n", "a setting's name is a word"),
    "list_key": (b"? [a, b]\n: 1\n", "unhashable key"),
    "nested_int_key": (b"optimizer: {name: adam, 1: 2}\n", "a setting's name is a word"),
    "python_tag": (b"steps: !!python/object/apply:os.system ['echo hi']\n", "constructor"),
    "python_name_tag": (b"steps: !!python/name:os.system\n", "constructor"),
    "custom_tag": (b"steps: !custom 3\n", "could not determine a constructor"),
    "binary_tag": (b"loss: !!binary aGVsbG8=\n", "'loss' must be a string, got b'hello'"),
    "set_tag": (b"loss: !!set {a, b}\n", "'loss' must be a string"),
    "timestamp_for_an_int": (b"steps: 2001-12-14t21:59:43.10-05:00\n", "must be an integer"),
    "top_level_list": (b"- steps\n- 3\n", "a run config is a mapping"),
    "top_level_scalar": (b"steps\n", "a run config is a mapping"),
    "two_documents": (b"steps: 1\n---\nsteps: 2\n", "but found another document"),
    "tab_indent": (b"optimizer:\n\tname: adam\n", "invalid YAML"),
    "null_value": (b"steps:\n", "'steps' must be an integer, got None"),
    "optimizer_a_number": (b"optimizer: 3\n", "optimizer must name an optimiser"),
    "optimizer_named_by_a_list": (b"optimizer: {name: [1, 2]}\n", "unknown optimizer [1, 2]"),
    "data_a_list": (b"data: [1, 2]\n", "unknown data source [1, 2]"),
    "data_named_by_a_mapping": (b"data: {name: {a: 1}}\n", "unknown data source {'a': 1}"),
    "unknown_nested_key": (b"optimizer: {name: adam, lrr: 0.1}\n", "adam has no setting 'lrr'"),
    "utf16": ("steps: 5\n".encode("utf-16"), "UTF-16"),
    "latin1": ("steps: 5  # café\n".encode("latin-1"), "config is not valid UTF-8 (byte 0xe9)"),
    "nul": (b"steps: 5\x00\n", "NUL bytes"),
    "control_character": (b"steps: 5\x07\n", "special characters are not allowed"),
    "bom_then_a_bad_value": (b"\xef\xbb\xbfsteps: -1\n", "'steps' must be at least 1, got -1"),
    "bom_crlf_then_a_bad_value": (
        b"\xef\xbb\xbfsteps: 3\r\nbatch: 0\r\n",
        "'batch' must be at least 1, got 0",
    ),
    "merge_key_then_a_bad_value": (
        b"base: &b {name: adam, lr: -1}\n",
        "unknown run setting 'base'",
    ),
    "merged_optimizer_with_a_bad_value": (
        b"optimizer:\n  <<: {name: adam, lr: -1}\n  b1: 0.5\n",
        "'optimizer.lr' must be greater than 0, got -1",
    ),
    "wrong_types_everywhere": (
        b"steps: [1]\nbatch: {a: 1}\nseed: true\n",
        "'steps' must be an integer, got [1]",
    ),
    "nan_for_a_count": (b"steps: .nan\n", "'steps' must be an integer, got nan"),
    "inf_for_a_rate": (b"optimizer: {name: adam, lr: .inf}\n", "must be finite, got inf"),
    "a_date_for_a_rate": (b"optimizer: {name: adam, lr: 2016-01-01}\n", "must be a number"),
}


@pytest.mark.parametrize("name", sorted(YAML))
def test_yaml_configs(capsys, tmp_path, name):
    data, needle = YAML[name]
    program, config = tmp_path / "run.ddm", tmp_path / f"{name}.yaml"
    program.write_text(RUN_PROGRAM, encoding="utf-8")
    config.write_bytes(data)
    err = refused(ddmc(capsys, "compile", program, "--run", "--config", config), needle)
    assert err.startswith(f"{config}:") or err.startswith("error: "), err[:300]


def test_a_config_file_beyond_the_size_limit_is_refused_unread(capsys, tmp_path):
    from ddm.runtime.config import MAX_CONFIG_BYTES

    program, config = tmp_path / "run.ddm", tmp_path / "huge.yaml"
    program.write_text(RUN_PROGRAM, encoding="utf-8")
    with open(config, "wb") as fh:
        fh.truncate(MAX_CONFIG_BYTES + 1)
    refused(ddmc(capsys, "compile", program, "--run", "--config", config), "bytes; ddm reads")


@pytest.mark.parametrize("what", ["directory", "missing"])
def test_a_config_that_is_not_a_file(capsys, tmp_path, what):
    program = tmp_path / "run.ddm"
    program.write_text(RUN_PROGRAM, encoding="utf-8")
    config = tmp_path if what == "directory" else tmp_path / "no.yaml"
    needle = "a directory" if what == "directory" else "cannot read config"
    refused(ddmc(capsys, "compile", program, "--run", "--config", config), needle)


def test_the_alias_budget_is_counted_before_anything_is_built(monkeypatch):
    """A 9-level bomb would be 3.9e8 values: refused in milliseconds, nothing constructed."""
    import yaml

    from ddm.runtime.config import load_yaml

    built = []
    original = yaml.SafeLoader.construct_document
    monkeypatch.setattr(
        yaml.SafeLoader,
        "construct_document",
        lambda self, node: built.append(node) or original(self, node),
    )
    with pytest.raises(ConfigDiagnostic, match=f"more than {MAX_YAML_VALUES} values"):
        load_yaml(laughs(9), "bomb.yaml")
    assert built == []
    node, value = load_yaml("a: &a [1, 2]\nb: [*a, *a]\n", "ok.yaml")
    assert value == {"a": [1, 2], "b": [[1, 2], [1, 2]]}


# --- every numeric setting: the wrong sign, zero, huge, a string, nan, inf ---------------------


def _numeric_settings():
    """(key, kind, range, the --set assignments that choose the call it belongs to)."""
    out = []
    for key, (kind, _, rng) in SCALARS.items():
        if rng is not None:  # devices: a count, or the word all (tested in test_devices.py)
            kind = "int" if kind == "devices" else kind
            out.append((key, kind, rng, ["data=credit_applicants"]))
    for opt, args in OPTIMIZERS.items():
        for a in args:
            if a.kind not in ("int", "float"):
                continue
            pick = ["data=credit_applicants", f"optimizer={opt}"]
            out.append((f"optimizer.{a.name}", a.kind, OPTIMIZER_RANGES[a.name], pick))
    for call, (kinds, _) in CALL_KINDS.items():
        for kind_name, args in kinds.items():
            for a in args:
                if a.name in CALL_RANGES[call]:
                    required = {"of": "w", "wrt": "x", "metric": "m", "value": 1.0}
                    spec = {"name": kind_name}
                    spec.update({x.name: required[x.name] for x in args if x.required})
                    fields = ", ".join(f"{k}: {v}" for k, v in spec.items())
                    pick = ["data=credit_applicants", f"{call}={{{fields}}}"]
                    if call == "target":
                        pick.append("eval_every=10")
                    rng = CALL_RANGES[call][a.name]
                    out.append((f"{call}.{a.name}", a.kind, rng, pick))
    for src in SOURCES.values():
        for a in src.kwargs:
            if a.name in src.ranges:
                pick = [f"data={src.name}"] + (
                    [f"data.path={src.name}.file"] if src.maps_inputs else []
                )  # a file source's required path (never read: validation only)
                out.append((f"data.{a.name}", a.kind, src.ranges[a.name], pick))
    return out


def _bad_values(kind: str, rng) -> list[tuple[str, str]]:
    """(YAML text, what the refusal says) for each way a value can be wrong."""
    out = [
        ("abc", "must be"),
        ("''", "must be"),
        ("true", "must be"),
        ("[1]", "must be"),
        ("{a: 1}", "must be"),
        ("2016-01-01", "must be"),
    ]
    if kind == "int":
        out += [(".nan", "must be an integer"), (".inf", "must be an integer"), ("2.5", "integer")]
    else:
        out += [
            (".nan", "must be finite"),
            (".inf", "must be finite"),
            ("-.inf", "must be finite"),
            ("1e39", "the largest float32"),
            ("-1e300", "the largest float32"),
        ]
    step = 1 if kind == "int" else 0.5
    if rng.lo is not None:
        out.append((repr(rng.lo if rng.lo_open else rng.lo - step), "must be"))
        out.append(("-99999999999999999999999", "must be"))
    if rng.hi is not None:
        out.append((repr(rng.hi if rng.hi_open else rng.hi + step), "must be"))
    if kind == "int" and rng.hi is None:
        raise AssertionError("every integer setting has an upper bound")
    return out


CASES = [
    (key, text, needle, pick)
    for key, kind, rng, pick in _numeric_settings()
    for text, needle in _bad_values(kind, rng)
]


def test_every_numeric_setting_has_a_range_and_the_sweep_covers_them():
    keys = {key for key, *_ in _numeric_settings()}
    assert {"steps", "batch", "seed", "clip_norm", "optimizer.lr", "data.n_train"} <= keys
    for src in SOURCES.values():
        for a in src.kwargs:
            assert a.kind not in ("int", "float") or a.name in src.ranges, (src.name, a.name)
    assert len(CASES) > 800


def test_a_bad_value_of_any_numeric_setting_is_located_and_names_its_range():
    failures = []
    for key, text, needle, pick in CASES:
        cfg = RunConfig.defaults()
        sets = pick + [f"{key}={text}"]
        try:
            for i, s in enumerate(sets, 1):
                cfg.apply_set(s, i)
            cfg.validate(SOURCES, ("quartic",))
        except ConfigDiagnostic as err:
            shown = str(err)
            where = f"<--set {len(sets)}>:1:"
            ok = needle in err.message and f"'{key}'" in err.message and shown.startswith(where)
            if not ok or len(shown) > 2000:
                failures.append((key, text, shown[:300]))
            continue
        except Exception as exc:  # noqa: BLE001 - the point is that nothing else escapes
            failures.append((key, text, f"{type(exc).__name__}: {exc}"[:300]))
            continue
        failures.append((key, text, "accepted"))
    assert not failures, "\n".join(map(str, failures[:20]))


def test_a_value_inside_every_range_is_accepted():
    for key, kind, rng, pick in _numeric_settings():
        lo = rng.lo if rng.lo is not None else -5
        inside = lo + (1 if rng.lo_open or rng.lo is None else 0)
        if rng.hi is not None and inside > rng.hi:
            inside = rng.hi
        if rng.hi_open and inside >= rng.hi:
            inside = (lo + rng.hi) / 2
        value = int(inside) if kind == "int" else float(inside)
        cfg = RunConfig.defaults()
        for i, s in enumerate(pick + [f"{key}={value}"], 1):
            cfg.apply_set(s, i)
        cfg.validate(SOURCES, ("quartic",))
        head, _, sub = key.partition(".")
        got = cfg.values[head][sub] if sub else cfg.values[head]
        assert got == value, (key, value, got)


SETS = {
    # the issue's own case: a negative count reached the generator as a TypeError
    "n_train_negative": (["data.n_train=-1"], "'data.n_train' must be at least 1, got -1"),
    "n_train_beyond_int32": (["data.n_train=2147483648"], "must be at most 2147483647"),
    "n_train_beyond_int64": (["data.n_train=" + "9" * 30], "must be at most 2147483647"),
    "n_train_a_million_digits": (["data.n_train=" + "9" * 10**6], "1000000 digits is too large"),
    "steps_zero": (["steps=0"], "'steps' must be at least 1, got 0"),
    "seed_negative": (["seed=-1"], "'seed' must be at least 0, got -1"),
    "batch_a_string": (["batch=lots"], "'batch' must be an integer, got 'lots'"),
    "lr_nan": (["optimizer.lr=.nan"], "must be finite"),
    "lr_negative": (["optimizer.lr=-3e-4"], "'optimizer.lr' must be greater than 0"),
    "clip_norm_negative": (["clip_norm=-1"], "'clip_norm' must be at least 0"),
    "data_arrays_beyond_memory": (
        ["data=gbm_paths(n_train=2147483647, steps=100000)"],
        "unknown data source",  # a call is not YAML: --set data=NAME, then its fields
    ),
    "data_arrays_beyond_memory_by_fields": (
        ["data=gbm_paths", "data.n_train=2147483647", "data.steps=100000"],
        "of arrays; this machine has",
    ),
    "no_equals": (["steps"], "--set takes KEY=VALUE, got 'steps'"),
    "no_key": (["=3"], "--set takes KEY=VALUE"),
    "unknown_key": (["stepz=3"], "unknown run setting 'stepz'"),
    "field_of_a_scalar": (["steps.x=3"], "'steps' has no fields"),
    "field_before_its_call": (["saliency.top=3"], "set saliency first"),
    "unknown_field": (["data.n_trian=3"], "credit_applicants has no setting 'n_trian'"),
    "empty_value": (["optimizer.lr="], "'optimizer.lr' must be a number, got None"),
    "a_1MB_assignment": (["loss=" + "l" * MB], "characters long; a setting has at most"),
    "a_1MB_key": (["k" * MB + "=1"], "unknown run setting 'kkk"),
    "a_1MB_field": (["data." + "f" * MB + "=1"], "has no setting 'fff"),
    "deep_value": (["steps=" + nest("[", "]", 5000, "1")], "nested more than 32 levels"),
    "alias_bomb_value": (
        [
            "steps=[&a [1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a], "
            "&c [*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c], "
            "&e [*d,*d,*d,*d,*d,*d,*d,*d,*d]]"
        ],
        "expands to more than",
    ),
    "python_tag_value": (["steps=!!python/object/apply:os.system [echo]"], "must be an integer"),
    "loss_unknown": (["loss=cubic"], "the program has no loss named 'cubic'"),
    "unknown_optimizer": (["optimizer=adamm"], "unknown optimizer 'adamm'"),
    "diagnostics_unknown": (["diagnostics=verbose"], "diagnostics must be basic, full or off"),
}


@pytest.mark.parametrize("name", sorted(SETS))
def test_set_values(capsys, tmp_path, name):
    assignments, needle = SETS[name]
    program = tmp_path / "run.ddm"
    program.write_text(RUN_PROGRAM.replace("credit_applicants", "gbm_paths"), encoding="utf-8")
    if name in ("unknown_field", "field_before_its_call", "n_train_negative"):
        program.write_text(RUN_PROGRAM, encoding="utf-8")
    argv = ["compile", program, "--run", "--out", tmp_path / "out"]
    for a in assignments:
        argv += ["--set", a]
    err = refused(ddmc(capsys, *argv), needle)
    assert err.startswith("<--set ") or err.startswith(f"{program}:"), err[:300]
    assert not (tmp_path / "out").exists()


# --- --dim NAME=SIZE ---------------------------------------------------------------------------

DIM_PROGRAM = "dim N\ndim K = 4\ninput x: f32[N, K]\nnode a = sum(x)\noutput a\n"
DIMS = {
    "unknown_name": (["M=3"], "the program has no dim 'M'", "its dims: N, K"),
    "misspelt_name": (["NN=3"], "the program has no dim 'NN'", "did you mean 'N'?"),
    "zero": (["N=0"], "--dim N must be at least 1, got '0'", None),
    "negative": (["N=-5"], "--dim N must be at least 1, got '-5'", None),
    "not_an_integer": (["N=abc"], "--dim N: a size is an integer, got 'abc'", None),
    "a_float": (["N=2.5"], "a size is an integer, got '2.5'", None),
    "exponent": (["N=1e3"], "a size is an integer, got '1e3'", None),
    "beyond_int64": (["N=9223372036854775808"], "at most 9223372036854775807 (int64)", None),
    "a_million_digits": (["N=" + "9" * MB], "at most 9223372036854775807", None),
    "empty_size": (["N="], "a size is an integer, got ''", None),
    "no_equals": (["N"], "--dim takes NAME=SIZE, got 'N'", None),
    "no_name": (["=3"], "--dim takes NAME=SIZE", None),
    "a_1MB_name": (["n" * MB + "=3"], "the program has no dim 'nnn", "its dims: N, K"),
    "declared_differently": (["K=5"], "dim 'K' is declared = 4 in the program", None),
    "second_bad": (["N=3", "M=2"], "<--dim 2>:1:1: error: the program has no dim 'M'", None),
}


@pytest.mark.parametrize("name", sorted(DIMS))
def test_dim_values(capsys, tmp_path, name):
    pairs, needle, hint = DIMS[name]
    program = tmp_path / "dims.ddm"
    program.write_text(DIM_PROGRAM, encoding="utf-8")
    argv = ["compile", program, "--emit", "jaxpr"]
    for p in pairs:
        argv += ["--dim", p]
    err = refused(ddmc(capsys, *argv), needle)
    assert err.startswith("<--dim "), err[:200]
    if hint:
        assert f"hint: {hint}" in err


def test_dim_values_that_fit_are_used(capsys, tmp_path):
    program = tmp_path / "dims.ddm"
    program.write_text(DIM_PROGRAM, encoding="utf-8")
    rc, out, err = ddmc(capsys, "compile", program, "--emit", "jaxpr", "--dim", "N=7")
    assert rc == 0, err
    assert "f32[7,4]" in out
    # a dim as large as int64 allows is only abstract here: nothing is allocated
    rc, out, err = ddmc(capsys, "compile", program, "--emit", "jaxpr", "--dim", "N=1000000000")
    assert rc == 0 and "f32[1000000000,4]" in out, err
    rc, _, err = ddmc(capsys, "compile", program, "--emit", "jaxpr", "--dim", "K=4", "--dim", "N=2")
    assert rc == 0, err


def test_dim_without_an_emit_is_refused(capsys, tmp_path):
    program = tmp_path / "dims.ddm"
    program.write_text(DIM_PROGRAM, encoding="utf-8")
    refused(ddmc(capsys, "compile", program, "--dim", "N=3"), "--dim sizes dims for --emit")


# --- loss = NAME in the run section ------------------------------------------------------------


def _config_of(text: str, *sets: str) -> RunConfig:
    from ddm.compiler.driver import front_end

    graph, sources = front_end(text, "run.ddm")
    cfg = RunConfig.defaults()
    cfg.apply_run_section(graph.run, sources.texts["run.ddm"])
    for i, s in enumerate(sets, 1):
        cfg.apply_set(s, i)
    return cfg.validate(SOURCES, tuple(name for name, _ in graph.losses))


@pytest.mark.parametrize("written", ['loss = "quartic"', "loss = quartic"])
def test_loss_in_the_run_section_selects_a_named_loss_as_set_does(written):
    import ddm
    from ddm.runtime.train import variant

    in_run = RUN_PROGRAM.replace("    steps = 2\n", f"    steps = 2\n    {written}\n")
    by_run = _config_of(in_run)
    by_set = _config_of(RUN_PROGRAM, "loss=quartic")
    assert by_run.values["loss"] == by_set.values["loss"] == "quartic"
    prog = ddm.loads(in_run)
    trained = variant(prog, by_run).graph.loss
    assert trained == variant(ddm.loads(RUN_PROGRAM), by_set).graph.loss
    assert trained == dict(prog.graph.losses)["quartic"] != prog.graph.loss


def test_loss_in_the_run_section_naming_no_loss_is_located(capsys, tmp_path):
    program = tmp_path / "run.ddm"
    program.write_text(RUN_PROGRAM.replace("steps = 2", 'steps = 2\n    loss = "cubic"'))
    err = refused(ddmc(capsys, "compile", program, "--run"), "no loss named 'cubic'")
    assert err.startswith(f"{program}:9:12: error: ")


def test_loss_in_the_run_section_formats_and_checks(capsys, tmp_path):
    from ddm.dsl.format import format_source

    text = RUN_PROGRAM.replace("steps = 2", 'steps = 2\n    loss = "quartic"')
    assert format_source(text) == text
    path = tmp_path / "run.ddm"
    path.write_text(text)
    accepted(ddmc(capsys, "check", "-q", path))


# --- temporary files of atomic writes ----------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "params.npz"
    target.write_bytes(b"old")

    def broken(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.atomic_write(str(target), b"new")
    assert sorted(os.listdir(tmp_path)) == ["params.npz"]
    assert target.read_bytes() == b"old"  # the old content, whole
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError):
        checkpoint.save_params(str(target), {"w": [1.0]})
    assert sorted(os.listdir(tmp_path)) == ["params.npz"]


def test_a_write_interrupted_by_kill_is_cleaned_up_by_the_next_one(tmp_path):
    """kill -9 mid-write leaves the temporary file; the next write into the folder, or the
    next read of a checkpoint there, removes it — only ours, and only a dead writer's."""
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f"{checkpoint.TEMP_PREFIX}{dead}-abc123"
    live = tmp_path / f"{checkpoint.TEMP_PREFIX}{alive}-def456"
    theirs = [tmp_path / n for n in (".tmp-xyz", f"{checkpoint.TEMP_PREFIX}notapid", "a.txt")]
    for p in [stale, live, *theirs]:
        p.write_bytes(b"partial")
    checkpoint.write_json(str(tmp_path / "metrics.json"), {"a": 1})
    left = set(os.listdir(tmp_path))
    assert stale.name not in left
    assert {live.name, "metrics.json"} | {p.name for p in theirs} == left

    stale.write_bytes(b"partial")
    live.unlink()
    digest = checkpoint.save_params(str(tmp_path / "checkpoint.npz"), {"w": [1.0, 2.0]})
    assert digest and stale.name not in os.listdir(tmp_path)
    stale.write_bytes(b"partial")
    assert float(checkpoint.load_params(str(tmp_path / "checkpoint.npz"))["w"][1]) == 2.0
    assert stale.name not in os.listdir(tmp_path)


def test_a_real_kill_during_a_write_leaves_a_file_the_next_run_removes(tmp_path):
    code = (
        "import os, signal\n"
        "from ddm.runtime import checkpoint\n"
        "def die(fd):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "os.fsync = die\n"
        f"checkpoint.atomic_write({str(tmp_path / 'checkpoint.npz')!r}, b'x' * 1000)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9
    left = [n for n in os.listdir(tmp_path) if n.startswith(checkpoint.TEMP_PREFIX)]
    assert len(left) == 1  # the killed writer's
    checkpoint.write_json(str(tmp_path / "checkpoint.json"), {"step": 1})
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.json"]


def test_data_that_cannot_fit_in_memory_is_refused_before_it_is_built(monkeypatch):
    from ddm.runtime.data import simulated

    monkeypatch.setattr(simulated, "load_gbm", lambda **_: pytest.fail("generated"))
    cfg = RunConfig.defaults()
    for i, s in enumerate(["data=gbm_paths", "data.n_train=2000000000", "data.steps=100000"], 1):
        cfg.apply_set(s, i)
    with pytest.raises(ConfigDiagnostic, match=r"would build \d+\.\d [KMGTP]B of arrays"):
        cfg.validate(SOURCES)


def test_a_number_beyond_float32_is_refused_with_its_limit():
    cfg = RunConfig.defaults()
    cfg.apply_set("clip_norm=1e39", 1)
    limit = re.escape(f"at most {FLOAT32_MAX:.3g} in magnitude")
    with pytest.raises(ConfigDiagnostic, match=limit):
        cfg.validate(SOURCES)
