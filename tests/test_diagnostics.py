"""Every mistake is reported as a located diagnostic, never a traceback.

The corpus ``tests/corpus/bad/*.ddm`` holds one bad program per file; its first line states the
diagnostic it must produce::

    # expect: [FILE:]LINE:COL KIND: SUBSTRING OF THE MESSAGE

``FILE`` (relative to the corpus folder) is given only when the error lies in another file (an
imported one, or a ``.yaml`` config). ``config`` cases are compiled and then go through the run
configuration (the ``run`` section, then ``NAME.yaml`` beside the file when there is one), as
``ddmc compile --run`` does before it trains. Helper files live in ``lib/`` and are not cases.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from ddm.cli.main import main
from ddm.compiler.driver import front_end, front_end_file
from ddm.dsl.diagnostics import DdmError

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus" / "bad"
CASES = sorted(CORPUS.glob("*.ddm"))  # not recursive: lib/ holds helpers
KINDS = {
    "syntax",
    "name",
    "cycle",
    "shape",
    "dtype",
    "arity",
    "import",
    "config",
    "data",
    "input",
    "problem",
}
HEADER = re.compile(
    r"# expect: (?:(?P<file>[^\s:]+):)?(?P<line>\d+):(?P<col>\d+) "
    r"(?P<kind>\w+): (?P<message>.+)$"
)


@dataclasses.dataclass(frozen=True)
class Expect:
    file: str  # absolute, normalised
    line: int
    col: int
    kind: str
    message: str


def expectation(path: pathlib.Path) -> Expect:
    first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    m = HEADER.fullmatch(first)
    assert m, f"{path.name}: first line must be '# expect: LINE:COL kind: message', got {first!r}"
    file = os.path.normpath(CORPUS / m["file"]) if m["file"] else str(path)
    return Expect(file, int(m["line"]), int(m["col"]), m["kind"], m["message"])


def compile_case(path: pathlib.Path, kind: str) -> None:
    """Compile ``path``; for config cases also build and validate its run configuration."""
    graph, sources = front_end_file(str(path))
    if kind == "config":
        from ddm.runtime.config import RunConfig
        from ddm.runtime.data import SOURCES

        cfg = RunConfig.defaults()
        cfg.apply_run_section(graph.run, sources.texts.get(graph.file, ""))
        yaml_path = path.with_suffix(".yaml")
        if yaml_path.exists():
            cfg.apply_yaml(str(yaml_path))
        cfg.validate(SOURCES)


def source_line(file: str, line: int) -> str:
    return pathlib.Path(file).read_text(encoding="utf-8").split("\n")[line - 1]


def assert_located(text: str, exp: Expect, message: str | None = None) -> None:
    """``text`` starts FILE:LINE:COL: error: …, then the source line, then a caret under COL."""
    lines = text.splitlines()
    head = f"{exp.file}:{exp.line}:{exp.col}: error: "
    assert lines[0].startswith(head), text
    assert exp.message in lines[0], text
    if message is not None:
        assert lines[0] == head + message, text
    gutter = f"{exp.line:>4} | "
    assert len(lines) >= 3, f"no source line and caret:\n{text}"
    assert lines[1] == gutter + source_line(exp.file, exp.line), text
    caret = lines[2]
    assert caret.strip()[0] == "^" and set(caret.strip()) <= {"^", "~"}, text
    assert caret.index("^") == len(gutter) + exp.col - 1, text


def test_corpus_is_large_and_well_formed():
    assert len(CASES) >= 45
    kinds = {expectation(p).kind for p in CASES}
    assert kinds <= KINDS
    assert {"syntax", "name", "cycle", "shape", "dtype", "arity", "import", "config"} <= kinds
    for sub in (CORPUS / "lib").glob("*.ddm"):
        assert not sub.read_text(encoding="utf-8").startswith("# expect:"), sub


# --- (a) the diagnostic itself -----------------------------------------------------------------


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_corpus_diagnostic(path):
    exp = expectation(path)
    with pytest.raises(DdmError) as info:
        compile_case(path, exp.kind)
    err = info.value
    where = f"{err.span.where() if err.span else '?'} {err.kind}: {err.message}"
    assert err.kind == exp.kind, where
    assert err.span is not None, where
    assert os.path.normpath(err.span.file) == exp.file, where
    assert (err.span.line, err.span.column) == (exp.line, exp.col), where
    assert exp.message in err.message, where
    assert_located(str(err), exp, err.message)


# --- (b) the same through `ddmc check` ---------------------------------------------------------


def _ddmc() -> list[str]:
    script = pathlib.Path(sys.executable).with_name("ddmc")
    return [str(script)] if script.exists() else [sys.executable, "-m", "ddm.cli.main"]


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT, **kwargs)


CLI_CASES = [p for p in CASES if expectation(p).kind != "config"]


@functools.lru_cache(maxsize=1)
def _cli_results() -> dict[pathlib.Path, subprocess.CompletedProcess]:
    """``ddmc check`` of every non-config case, a few processes at a time, once per session."""
    workers = max(1, min(4, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = {p: pool.submit(_run, _ddmc() + ["check", str(p)]) for p in CLI_CASES}
        return {p: f.result() for p, f in futures.items()}


@pytest.mark.parametrize("path", CLI_CASES, ids=lambda p: p.stem)
def test_corpus_cli(path):
    exp = expectation(path)
    proc = _cli_results()[path]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    assert_located(proc.stderr, exp)


# --- golden: the full formatted text -----------------------------------------------------------


def _diagnostic(text: str, file: str = "golden.ddm") -> str:
    with pytest.raises(DdmError) as info:
        front_end(textwrap.dedent(text).lstrip("\n"), file)
    return str(info.value)


def test_golden_undefined_name_with_suggestion():
    got = _diagnostic("""
        input weight: f32
        node p = 2 * wieght
    """)
    assert got == textwrap.dedent("""\
        golden.ddm:2:14: error: undefined name 'wieght'
           2 | node p = 2 * wieght
                            ^~~~~~
          hint: did you mean 'weight'?""")


def test_golden_duplicate_declaration_with_note():
    got = _diagnostic("""
        input x: f32
        node a = x + 1
        node a = x - 1
    """)
    assert got == textwrap.dedent("""\
        golden.ddm:3:6: error: 'a' is already declared as a node
           3 | node a = x - 1
                    ^
        golden.ddm:2:6: note: first declared here as a node
          hint: choose another name""")


def test_golden_shape_mismatch():
    got = _diagnostic("""
        dim N
        dim M
        input v: f32[N]
        input A: f32[N, M]
        node s = v + A
    """)
    assert got == textwrap.dedent("""\
        golden.ddm:5:10: error: cannot add f32[N] and f32[N, M]: shapes do not broadcast
           5 | node s = v + A
                        ^~~~~""")


def test_golden_syntax_error():
    got = _diagnostic("""
        input x: f32
        node c = x = 1.0
    """)
    assert got == textwrap.dedent("""\
        golden.ddm:2:12: error: unexpected '='; expected '(', ')', '*', '**', '+', ',', '-', \
'.', …
           2 | node c = x = 1.0
                          ^
          hint: use '==' to compare""")


def test_golden_fn_result_with_note():
    got = _diagnostic("""
        dim N = 3
        fn total(v: f32[N]) -> f32 {
            return v * 2
        }
    """)
    assert got == textwrap.dedent("""\
        golden.ddm:3:12: error: fn 'total' declares result f32 but returns f32[N]
           3 |     return v * 2
                          ^~~~~
        golden.ddm:2:24: note: declared here""")


def test_golden_config_unknown_setting():
    from ddm.runtime.config import RunConfig

    text = "input x: f32\nnode p = 2 * x\nloss = mean(p)\nrun {\n    stpes = 100\n}\n"
    graph, sources = front_end(text, "golden.ddm")
    with pytest.raises(DdmError) as info:
        RunConfig.defaults().apply_run_section(graph.run, text)
    assert str(info.value) == textwrap.dedent("""\
        golden.ddm:5:5: error: unknown run setting 'stpes'
           5 |     stpes = 100
                   ^~~~~~~~~~~
          hint: did you mean 'steps'?""")


def test_golden_caret_on_the_right_line_with_form_feeds():
    # The parser counts lines by '\n' only; the context line must agree with it.
    got = _diagnostic("input x: f32\f\nnode a = x  # \u2028 not a line break\nnode b = y\n")
    assert got == textwrap.dedent("""\
        golden.ddm:3:10: error: undefined name 'y'
           3 | node b = y
                        ^""")


def test_config_set_and_yaml_errors_are_located(tmp_path):
    from ddm.runtime.config import RunConfig

    cfg = RunConfig.defaults()
    with pytest.raises(DdmError) as info:
        cfg.apply_set("stesp=5", 1)
    assert info.value.kind == "config"
    assert "unknown run setting 'stesp'" in str(info.value)
    bad = tmp_path / "run.yaml"
    bad.write_text("steps: [1,\n", encoding="utf-8")
    with pytest.raises(DdmError) as info:
        RunConfig.defaults().apply_yaml(str(bad))
    assert info.value.kind == "config" and "invalid YAML" in info.value.message
    assert str(info.value).startswith(f"{bad}:")
    with pytest.raises(DdmError) as info:
        RunConfig.defaults().apply_yaml(str(tmp_path / "missing.yaml"))
    assert info.value.kind == "config"
    assert str(info.value).startswith(f"{tmp_path / 'missing.yaml'}: error: cannot read config")


# --- usage errors and cold start ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [[], ["check"], ["fmt", "-w", "--check", "a"], ["frobnicate"], ["check", "--bogus", "a.ddm"]],
)
def test_bad_usage_exits_2(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_bad_usage_exits_2_from_the_shell():
    proc = _run(_ddmc() + ["check"])
    assert proc.returncode == 2
    assert "usage:" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "target",
    [
        ROOT / "examples" / "credit.ddm",
        CORPUS / "shape_matmul_inner.ddm",
        CORPUS / "import_with_input.ddm",
    ],
    ids=lambda p: p.stem,
)
def test_check_does_not_import_jax(target):
    code = textwrap.dedent(f"""
        import sys
        from ddm.cli.main import main
        rc = main(["check", "-q", {str(target)!r}])
        assert 'jax' not in sys.modules, sorted(m for m in sys.modules if m.startswith('jax'))
        sys.exit(rc)
    """)
    proc = _run([sys.executable, "-c", code])
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1), proc.stderr


def test_input_errors_have_no_position(tmp_path, capsys):
    missing = tmp_path / "nope.ddm"
    assert main(["check", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"{missing}: error: no such file: '{missing}'"
    assert main(["check", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith(f"{tmp_path}: error: ")


# --- call-time data through the Python API -----------------------------------------------------

DATA_PROGRAM = """\
dim N
dim K = 3
input x: f32[N]
input M: f32[N, K]
input y: f32
input k: i32
param w: f32[K] = zeros()
node p = sigmoid(dot(M @ w, x))
node q = k + 1
output p
loss = bce(p, y)
"""


@pytest.fixture(scope="module")
def data_prog():
    import jax

    import ddm

    prog = ddm.loads(DATA_PROGRAM, file="data.ddm")
    return prog, prog.init(jax.random.key(0))


def _data_error(call) -> DdmError:
    with pytest.raises(DdmError) as info:
        call()
    err = info.value
    assert err.kind == "data", str(err)
    return err


ONES = np.ones


@pytest.mark.parametrize(
    "case, inputs, fragments",
    [
        (
            "wrong rank",
            dict(x=ONES((4, 2)), M=ONES((4, 3))),
            ["input 'x' must be f32[N] (rank 1)", "shape (4, 2)"],
        ),
        (
            "declared dim",
            dict(x=ONES(4), M=ONES((4, 5))),
            ["input 'M' axis 1 is K = 3 (from its declaration), got 5"],
        ),
        (
            "dim bound by another input",
            dict(x=ONES(4), M=ONES((5, 3))),
            ["input 'M' axis 0 is N = 4 (from input 'x'), got 5"],
        ),
        ("missing input", dict(x=ONES(4)), ["missing input 'M' (f32[N, K])"]),
        (
            "unknown input",
            dict(x=ONES(4), M=ONES((4, 3)), z=ONES(3)),
            ["unknown input 'z'", "M, k, x, y"],
        ),
        ("string", dict(x="abc", M=ONES((4, 3))), ["input 'x' must be an array of numbers"]),
        ("ragged list", dict(x=[[1.0, 2.0], [3.0]], M=ONES((4, 3))), ["ragged"]),
        ("None", dict(x=None, M=ONES((4, 3))), ["input 'x' must be an array of numbers"]),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_apply_data_errors(data_prog, case, inputs, fragments):
    prog, params = data_prog
    err = _data_error(lambda: prog.apply(params, **inputs))
    for fragment in fragments:
        assert fragment in err.message
    if err.span is not None:  # located at the input's declaration, with its line
        assert str(err).startswith("data.ddm:")
        assert " | input " in str(err)


def test_batch_data_errors(data_prog):
    prog, params = data_prog
    batch = {"x": ONES((8, 4)), "M": ONES((8, 4, 3)), "y": ONES(8)}
    assert np.isfinite(float(prog.loss(params, batch)))
    err = _data_error(lambda: prog.loss(params, {**batch, "y": ONES(7)}))
    assert "input 'y' has batch size 7, but 'x' has 8" in err.message
    err = _data_error(lambda: prog.loss(params, {**batch, "y": 1.0}))
    assert "input 'y' needs a leading batch axis" in err.message
    err = _data_error(lambda: prog.apply_batch(params, x=ONES((8, 4)), M=ONES((8, 5, 3))))
    assert "input 'M' axis 0 is N = 4 (from input 'x'), got 5" in err.message
    err = _data_error(lambda: prog.loss(params, {"x": ONES((8, 4)), "M": ONES((8, 4, 3))}))
    assert "missing input 'y'" in err.message


def test_dtype_data_error():
    import ddm

    prog = ddm.loads("input k: i32\nnode q = k + 1\noutput q\n", file="ints.ddm")
    err = _data_error(lambda: prog.apply({}, k=np.float32(1.5)))
    assert "input 'k' is i32 but got float32 values" in err.message
    assert str(err).startswith("ints.ddm:1:1: error:")
