"""Whatever text it is given, the front end answers with a diagnostic or a graph, never a crash.

Random mutations of the example programs go through parse → resolve → check and may only raise
:class:`DdmError`; pathological files go through ``ddmc check`` and the Python API and must end
in exit 0 (valid) or a located diagnostic with exit 1, without a traceback or a RecursionError.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddm.compiler.driver import front_end
from ddm.dsl.diagnostics import DdmError

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = [ROOT / "examples" / "credit.ddm", ROOT / "examples" / "hedge.ddm"]
TEXTS = {str(p): p.read_text(encoding="utf-8") for p in EXAMPLES}

# Tokens: runs of whitespace, names, numbers, strings, comments, and single punctuation marks.
TOKEN = re.compile(r'\s+|[A-Za-z_]\w*|\d+\.?\d*(?:[eE][-+]?\d+)?|"[^"\n]*"|#[^\n]*|[^\w\s]')


def tokens(text: str) -> list[str]:
    out = TOKEN.findall(text)
    assert "".join(out) == text
    return out


TOKENS = {path: tokens(text) for path, text in TEXTS.items()}


@st.composite
def mutated(draw):
    path = draw(st.sampled_from(sorted(TOKENS)))
    toks = list(TOKENS[path])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert"]))
        i = draw(st.integers(0, len(toks) - 1))
        if op == "delete":
            del toks[i]
        elif op == "duplicate":
            toks.insert(i, toks[i])
        elif op == "swap":
            j = draw(st.integers(0, len(toks) - 1))
            toks[i], toks[j] = toks[j], toks[i]
        else:
            junk = draw(st.binary(min_size=1, max_size=8)).decode("utf-8", errors="replace")
            toks.insert(i, junk)
        if not toks:
            break
    return path, "".join(toks)


def _check_context(err: DdmError, text: str, path: str) -> None:
    """The formatted diagnostic shows the line (counted by '\\n') its position names."""
    formatted = str(err)
    assert formatted.splitlines()[0].count(": error: ") >= 1
    span = err.span
    if span is None or span.line <= 0 or span.file != path:
        return
    lines = text.split("\n")
    assert span.line <= len(lines), formatted
    shown = formatted.split("\n")[1]
    assert shown.startswith(f"{span.line:>4} | "), formatted
    want = lines[span.line - 1].rstrip("\r")
    assert len(shown) - len(f"{span.line:>4} | ") == len(want), formatted


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_raise_only_diagnostics(case):
    path, text = case
    try:
        front_end(text, path)
    except DdmError as err:
        _check_context(err, text, path)


@pytest.mark.parametrize("path", sorted(TEXTS))
def test_unmutated_examples_check(path):
    front_end(TEXTS[path], path)


# --- pathological inputs -----------------------------------------------------------------------


def _nested_parens(n: int) -> str:
    return "input x: f32\nnode a = " + "(" * n + "x" + ")" * n + "\noutput a\n"


def _long_sum(n: int) -> str:
    return "input x: f32\nnode a = " + " + ".join(["x"] * n) + "\noutput a\n"


def _chain(n: int) -> str:
    body = "".join(f"node n{i} = n{i - 1} + 1\n" for i in range(1, n))
    return f"input x: f32\nnode n0 = x\n{body}output n{n - 1}\n"


def _nested_calls(n: int) -> str:
    return "input x: f32\nnode a = " + "exp(" * n + "x" + ")" * n + "\noutput a\n"


PATHOLOGICAL = {
    # name: (file contents, expected exit code or None for "0 or 1")
    "empty": (b"", 0),
    "whitespace": (b"  \n\t\n\r\n   ", 0),
    "nul_bytes": (b"dim N = 4\n\x00\x01\x02binary", 1),
    "invalid_utf8": (b"input x: f32\nnode a = x  # caf\xe9\n", 1),
    "nested_parens_5000": (_nested_parens(5000).encode(), None),
    "sum_5000_terms": (_long_sum(5000).encode(), 0),  # a chain is flat, not nested
    "chain_3000_nodes": (_chain(3000).encode(), 0),
    "nested_calls_1000": (_nested_calls(1000).encode(), None),
    "unclosed_parens_5000": (("input x: f32\nnode a = " + "(" * 5000 + "x").encode(), 1),
    "only_comments": (b"# nothing here\n# at all\n", 0),
    "lone_carriage_returns": (b"input x: f32\rnode a = x + 1\routput a\r", 0),
}


def _ddmc() -> list[str]:
    script = pathlib.Path(sys.executable).with_name("ddmc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ddm.cli.main"]


def _check_cli(target: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _ddmc() + ["check", "-q", target],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        errors="replace",
    )


def _assert_clean(proc: subprocess.CompletedProcess, target: str, want: int | None) -> None:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out and "RecursionError" not in out, out[-3000:]
    assert proc.returncode in ((0, 1) if want is None else (want,)), out[-3000:]
    if proc.returncode == 1:
        assert proc.stderr.startswith(f"{target}:"), proc.stderr[:500]
        assert ": error: " in proc.stderr.splitlines()[0]


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_files_cli(tmp_path, name):
    data, want = PATHOLOGICAL[name]
    target = tmp_path / f"{name}.ddm"
    target.write_bytes(data)
    _assert_clean(_check_cli(str(target)), str(target), want)


@pytest.mark.parametrize("name", sorted(PATHOLOGICAL))
def test_pathological_files_api(tmp_path, name):
    from ddm.compiler.driver import front_end_file

    data, want = PATHOLOGICAL[name]
    target = tmp_path / f"{name}.ddm"
    target.write_bytes(data)
    try:
        front_end_file(str(target))
    except DdmError as err:
        assert want in (None, 1), str(err)[:500]
        assert str(err).startswith(f"{target}:")
    else:
        assert want in (None, 0)


def test_chain_of_3000_nodes_checks_in_full():
    graph, _ = front_end(_chain(3000), "chain.ddm")
    assert len(graph.nodes) == 3000
    assert [n for n, _ in graph.outputs] == ["n2999"]


@pytest.mark.parametrize(
    "make", [_nested_parens, _long_sum, _nested_calls], ids=["parens", "sum", "calls"]
)
def test_deep_expressions_api_under_default_recursion_limit(make):
    """The Python API does not raise the recursion limit as ddmc does."""
    code = (
        "import sys\nsys.setrecursionlimit(1000)\n"
        "from ddm.compiler.driver import front_end\nfrom ddm.dsl.diagnostics import DdmError\n"
        f"text = {make.__name__}(5000)\n"
        "try:\n    front_end(text, 'deep.ddm')\nexcept DdmError as err:\n    print(err.kind)\n"
    )
    defs = "\n".join(_source_of(f) for f in (_nested_parens, _long_sum, _nested_calls))
    proc = subprocess.run(
        [sys.executable, "-c", defs + "\n" + code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]


def _source_of(fn) -> str:
    import inspect

    return inspect.getsource(fn)


@pytest.mark.parametrize("target", ["directory", "missing"])
def test_directory_and_missing_path_cli(tmp_path, target):
    path = str(tmp_path) if target == "directory" else str(tmp_path / "no" / "such.ddm")
    proc = _check_cli(path)
    _assert_clean(proc, path, 1)
    assert proc.stderr.startswith(f"{path}: error: ")
