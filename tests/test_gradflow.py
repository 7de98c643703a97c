"""The gradient-flow lint of ``ddmc check``: every param that no loss can train is named.

The corpus ``tests/corpus/gradflow/*.ddm`` holds one program per file; its first lines state
exactly the warnings it must produce, one a line::

    # expect-warning: LINE:COL: SUBSTRING OF THE MESSAGE

or ``# expect: clean``. Specifications:

- each program gets exactly its expected warnings and no other;
- the warnings are true: on a random batch a flagged param's gradient is exactly zero under every
  loss, and every other param's is not (a Φ-rule's memory excepted: stopped by design);
- ``ddmc check`` prints each as ``FILE:LINE:COL: warning: …``, the line, a caret and the
  relaxation as ``hint:``, and exits 0; it never imports JAX to do so;
- every program in examples/ is lint-clean;
- the ops that block a gradient declare it in their record (``Op.no_grad``), at exactly the
  arguments that do, and the declarations match the implementations' derivatives.

Float64 for the whole module: gradients are compared with zero.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ddm
from ddm.compiler.driver import front_end, front_end_file
from ddm.compiler.gradflow import lint
from ddm.library import OPS
from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg, NoGrad, Op
from ddm.library.types import SymDim, TensorType

pytestmark = pytest.mark.usefixtures("float64")

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "corpus" / "gradflow"
CASES = sorted(CORPUS.glob("*.ddm"))
EXAMPLES = sorted((ROOT / "examples").glob("*.ddm"))
WARNING = re.compile(r"# expect-warning: (?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


@dataclasses.dataclass(frozen=True)
class Expect:
    line: int
    col: int
    message: str


def expectations(path: pathlib.Path) -> list[Expect]:
    """The header's expected warnings ([] for ``# expect: clean``)."""
    head = []
    for line in path.read_text(encoding="utf-8").split("\n"):
        if not line.startswith("# expect"):
            break
        head.append(line)
    assert head, f"{path.name}: starts with '# expect-warning: …' lines or '# expect: clean'"
    if head == ["# expect: clean"]:
        return []
    found = [WARNING.fullmatch(h) for h in head]
    assert all(found), f"{path.name}: malformed header {head}"
    return [Expect(int(m["line"]), int(m["col"]), m["message"]) for m in found]


def test_corpus_is_large_and_covers_both_outcomes():
    assert len(CASES) >= 10
    outcomes = [bool(expectations(p)) for p in CASES]
    assert sum(outcomes) >= 8 and outcomes.count(False) >= 5


# --- (a) the warnings ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_corpus_warnings(path):
    graph, _ = front_end_file(str(path))
    got = [(w.span.line, w.span.column, w.message) for w in graph.warnings]
    want = expectations(path)
    assert len(got) == len(want), got
    for exp in want:
        assert any(
            (line, col) == (exp.line, exp.col) and exp.message in message
            for line, col, message in got
        ), (exp, got)
    assert all(w.hint for w in graph.warnings)


# --- (b) the warnings are true -------------------------------------------------------------------


def _batch(graph, rng, size=32) -> dict:
    def dim(d):
        return int(d.value if isinstance(d, SymDim) else d)

    return {
        i.name: rng.normal(size=(size,) + tuple(dim(d) for d in i.type.shape)) for i in graph.inputs
    }


TRAINED = [p for p in CASES if front_end_file(str(p))[0].loss is not None]


@pytest.mark.parametrize("path", TRAINED, ids=lambda p: p.stem)
def test_a_flagged_param_gets_no_gradient_and_every_other_one_does(path):
    prog = ddm.load(str(path), x64=True)
    graph = prog.graph
    params = prog.init(jax.random.key(0))
    batch = _batch(graph, np.random.default_rng(0))
    size: dict[str, float] = dict.fromkeys(params, 0.0)
    for loss in [None] + [name for name, _ in graph.losses]:
        chosen = prog if loss is None else prog.with_loss(loss)
        grads = jax.grad(lambda p, chosen=chosen: chosen.loss(p, batch))(params)
        for name, g in grads.items():
            leaves = [np.abs(np.asarray(x)) for x in jax.tree_util.tree_leaves(g)]
            assert all(np.all(np.isfinite(x)) for x in leaves), (loss, name)
            size[name] = max(size[name], max((float(x.max()) for x in leaves), default=0.0))
    flagged = {re.match(r"param '([^']+)'", w.message)[1] for w in graph.warnings}
    memories = {r.memory for r in graph.rules if r.memory}
    assert {n for n, s in size.items() if s == 0.0} - memories == flagged, size


# --- (c) through ddmc check ----------------------------------------------------------------------


def _ddmc(*args: str) -> subprocess.CompletedProcess:
    script = pathlib.Path(sys.executable).with_name("ddmc")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "ddm.cli.main"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_ddmc_check_prints_the_warning_located_with_its_hint_and_succeeds():
    path = "tests/corpus/gradflow/comparison.ddm"
    r = _ddmc("check", "-q", path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == textwrap.dedent(f"""\
        {path}:8:1: warning: param 'threshold' reaches the loss only through the comparison \
'>' at 10:16, whose derivative is zero
           8 | param threshold: f32 = 0.0
               ^~~~~~~~~~~~~~~~~~~~~~~~~~
          hint: relax it: sigmoid(κ * (a - b)) is a smooth 'a > b' (what a Φ-rule's 'when' \
computes)
        """)


def test_ddmc_check_prints_every_warning_of_a_program(tmp_path):
    text = (
        "input x: f32\ninput y: f32\nparam a: f32 = 1.0\nparam k: f32 = 0.0\n"
        "param u: f32 = 0.0\nnode z = a * x * f32(x > k)\nloss = mean((z - y) ** 2)\n"
    )
    path = tmp_path / "two_warnings.ddm"
    path.write_text(text, encoding="utf-8")
    r = _ddmc("check", "-q", str(path))
    assert r.returncode == 0, r.stderr
    heads = [line for line in r.stderr.splitlines() if ": warning: " in line]
    assert [h.split(": warning: ")[0] for h in heads] == [f"{path}:4:1", f"{path}:5:1"]
    assert r.stderr.count("  hint: ") == 2
    assert "Traceback" not in r.stderr


def test_the_lint_needs_no_jax():
    code = (
        "import sys\nfrom ddm.compiler.driver import front_end_file\n"
        "graph, _ = front_end_file('tests/corpus/gradflow/guard_reject_bound.ddm')\n"
        "assert graph.warnings\nprint('jax' in sys.modules)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


# --- (d) the examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_is_lint_clean(path):
    graph, _ = front_end_file(str(path))
    assert lint(graph) == ()


# --- (e) the walk --------------------------------------------------------------------------------


def _warnings(text: str) -> list[str]:
    graph, _ = front_end(textwrap.dedent(text).lstrip("\n"), "walk.ddm")
    return [w.message for w in lint(graph)]


def test_a_program_without_a_loss_gets_no_warning():
    assert _warnings("param k: f32 = 0.0\ninput x: f32\nnode d = x > k\noutput d\n") == []


def test_one_passing_path_is_enough():
    """k is compared and also multiplied in: the product carries its gradient."""
    assert (
        _warnings("""
        input x: f32
        param k: f32 = 0.5
        node z = k * x + f32(x > k)
        loss = mean(z ** 2)
    """)
        == []
    )


def test_the_same_value_in_a_blocked_and_a_passing_argument_passes():
    """The bound of a reject guard that is also its fallback is trained through the fallback."""
    assert (
        _warnings("""
        input x: f32
        param c: f32 = 1.0
        node d = guard_reject(x, x - c, c, c)
        loss = mean(d ** 2)
    """)
        == []
    )


def test_an_integer_loss_trains_nothing():
    assert _warnings("""
        input x: f32
        param k: f32 = 0.5
        loss = sum(i32(k * x))
    """) == [
        "param 'k' reaches the loss only through the cast i32(…) at 3:12, whose derivative is zero"
    ]


def test_a_param_only_a_named_loss_reaches_is_named_with_that_loss():
    assert _warnings("""
        input x: f32
        param w: f32 = 1.0
        param k: f32 = 0.5
        loss = mean((w * x) ** 2)
        loss gated = mean(f32(x > k))
    """) == [
        "param 'k' reaches loss 'gated' only through the comparison '>' at 5:23, whose "
        "derivative is zero"
    ]


def test_a_blocking_operation_in_an_imported_fn_names_its_file(tmp_path):
    lib = tmp_path / "gates.ddm"
    lib.write_text(
        "fn gate(s: f32, c: f32) -> f32 {\n    return s * f32(s > c)\n}\n", encoding="utf-8"
    )
    main = tmp_path / "main.ddm"
    main.write_text(
        'import "gates.ddm"\ninput x: f32\nparam c: f32 = 0.0\n'
        "node z = gate(x, c)\nloss = mean(z ** 2)\n",
        encoding="utf-8",
    )
    graph, _ = front_end_file(str(main))
    (w,) = lint(graph)
    assert (w.span.file, w.span.line) == (str(main), 3)
    assert f"through the comparison '>' at {lib}:2:20," in w.message


# --- (f) the ops' declarations -------------------------------------------------------------------

BLOCKING = {
    "eq": ("x", "y"),
    "ne": ("x", "y"),
    "lt": ("x", "y"),
    "le": ("x", "y"),
    "gt": ("x", "y"),
    "ge": ("x", "y"),
    "logical_and": ("x", "y"),
    "logical_or": ("x", "y"),
    "logical_not": ("x",),
    "i32": ("x",),
    "bool": ("x",),
    "sign": ("x",),
    "stop_gradient": ("x",),
    "where": ("cond",),
    "accuracy": ("p", "y"),
    "auc": ("score", "label"),
    "nonzero": ("x",),
    "guard_violated": ("excess", "bound"),
    "guard_reject": ("excess", "bound"),
    "argmax": ("x",),
    "one_hot": ("i",),
    "argsort": ("x",),
    "rank": ("x",),
}


def test_exactly_the_blocking_ops_declare_it_at_their_blocking_arguments():
    declared = {name: op.no_grad.args for name, op in OPS.items() if op.no_grad is not None}
    assert declared == BLOCKING


def test_no_grad_positions_follow_the_calls_layout():
    op = Op(
        "pick",
        (Arg("xs", "tensors"), Arg("mask"), Arg("scale", "tensor", None), Arg("w")),
        lambda t, s: t[1],
        lambda *a: a[1],
        "test",
        family="test",
        no_grad=NoGrad(("mask", "scale"), "condition"),
    )
    assert op.no_grad_inputs((2, -1, 0, -1), 4) == {2}  # xs: 0, 1; mask: 2; w: 3
    assert op.no_grad_inputs((3, -1, -1, -1), 6) == {3, 4}
    assert OPS["guard_reject"].no_grad_inputs(None, 4) == {1, 2}
    assert OPS["add"].no_grad_inputs(None, 2) == frozenset()


def test_a_declaration_must_name_tensor_arguments_and_a_known_reason():
    with pytest.raises(ValueError, match="not tensor arguments"):
        Op(
            "bad",
            (Arg("x"), Arg("k", "int")),
            lambda t, s: t[0],
            lambda x, k: x,
            "",
            family="test",
            no_grad=NoGrad(("k",), "count"),
        )
    with pytest.raises(ValueError, match="unknown no-gradient reason"):
        NoGrad(("x",), "flat")


# float-valued calls of the blocking ops whose result is a float: (op, arguments, static)
FLOAT_CALLS = [
    ("stop_gradient", (np.array([0.3, -1.2]),), {}),
    ("sign", (np.array([0.3, -1.2]),), {}),
    ("accuracy", (np.array([0.2, 0.7, 0.9]), np.array([0.0, 1.0, 0.0])), {}),
    ("auc", (np.array([0.2, 0.7, 0.9, 0.4]), np.array([0.0, 1.0, 0.0, 1.0])), {}),
    ("nonzero", (np.array([0.0, 0.5, -2.0]),), {"tol": 1e-6}),
    ("rank", (np.array([0.3, -1.2, 0.3, 2.0]),), {}),
    ("guard_violated", (np.array(0.3), np.array(1.0)), {}),
    (
        "guard_reject",
        (np.array([0.5, 2.0]), np.array(0.3), np.array(1.0), np.array([0.1, 0.2])),
        {},
    ),
    (
        "guard_reject",
        (np.array([0.5, 0.2]), np.array(-0.3), np.array(1.0), np.array([0.1, 0.2])),
        {},
    ),
]


@pytest.mark.parametrize("name,args,static", FLOAT_CALLS, ids=lambda x: str(x)[:20])
def test_declarations_match_the_implementations_derivatives(name, args, static):
    """Where the result is a float, the derivative in each declared argument is exactly zero
    and in the others (a reject's decision or fallback, whichever is taken) it is not."""
    op = OPS[name]
    tensors = [a.name for a in op.params if a.kind == "tensor"]
    for k, arg in enumerate(tensors):

        def f(v, k=k):
            xs = list(args)
            xs[k] = v
            return jnp.sum(op.impl(*xs, **static))

        grad = np.asarray(jax.grad(f)(jnp.asarray(args[k], float)))
        if arg in op.no_grad.args:
            assert np.all(grad == 0), (arg, grad)
    if name == "guard_reject":
        taken = 3 if float(args[1]) > 0 else 0  # the fallback where the limit breaks
        grad = jax.grad(
            lambda v: jnp.sum(op.impl(*[v if i == taken else a for i, a in enumerate(args)]))
        )
        assert np.all(np.asarray(grad(jnp.asarray(args[taken], float))) == 1.0)


def test_every_op_with_an_integer_or_bool_result_from_floats_declares_it():
    """A float argument whose op returns an integer or bool loses its gradient: the record
    says so, so the lint can name the reason."""
    float_in = TensorType("f32", (3,))
    for name, op in OPS.items():
        if not op.params or any(a.kind == "tensors" for a in op.params):
            continue
        tensors = [a for a in op.params if a.kind == "tensor"]
        if not tensors or any(
            a.kind not in ("tensor", "int", "float", "bool", "str", "axes") for a in op.params
        ):
            continue
        static = {
            a.name: (a.default if not a.required else 1) for a in op.params if a.kind != "tensor"
        }
        try:
            out = op.rule(tuple(float_in for _ in tensors), static)
        except Exception:  # noqa: BLE001 — this shape does not suit the op: not our question
            continue
        if not out.is_float:
            assert op.no_grad is not None, name
