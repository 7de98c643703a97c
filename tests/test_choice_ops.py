"""Hard choices: ``argmax(x, axis=-1)`` and ``one_hot(i, K)``, the ops of a decision rule.

Specifications:

- shape rules: the inferred types of good calls (``argmax`` drops its axis and gives ``i32``,
  ``one_hot`` appends ``K`` and gives ``f32``), and located diagnostics for bad ones;
- ``argmax(x)`` is a call of the op, while ``argmax v: T { … }`` is still a problem, in the same
  program; the formatter round-trips both;
- values: the first index on ties, along any axis; ``one_hot`` is 1.0 at the index and 0.0
  elsewhere, a row of zeros outside 0 … K − 1;
- no gradient flows back through them (their ``no_grad`` declarations), while their relaxation
  ``softmax`` passes one: the loss of a hard rule is flat in the scores, a soft rule's is not.

Float64 for the whole module: gradients are compared.
"""

from __future__ import annotations

import numpy as np
import pytest

import ddm
from ddm.dsl.format import format_module, format_source
from ddm.dsl.parser import parse
from ddm.library import OPS
from ddm.library.lazy import jax

from conftest import column_of, compile_error, type_of

pytestmark = pytest.mark.usefixtures("float64")


# --- shape rules ---------------------------------------------------------------------------------


def test_shape_rules_of_good_calls():
    prog = ddm.loads("""dim K = 3
dim T = 5
input z: f32[T, K]
input n: i32
node last = argmax(z)
node first = argmax(z, axis=0)
node pick = one_hot(argmax(z), K)
node unit = one_hot(n, 4)
output last, first, pick, unit
""")
    assert type_of(prog, "last") == "i32[T]"
    assert type_of(prog, "first") == "i32[K]"
    assert type_of(prog, "pick") == "f32[T, K]"
    assert type_of(prog, "unit") == "f32[4]"


@pytest.mark.parametrize(
    "decl,kind,message,needle",
    [
        (
            "input z: f32\nnode c = argmax(z)",
            "shape",
            "argmax picks along an axis, got a scalar f32",
            "z)",
        ),
        (
            "input z: bool[3]\nnode c = argmax(z)",
            "dtype",
            "argmax expects numbers, got bool[3]",
            "z)",
        ),
        (
            "input z: f32[3]\nnode c = argmax(z, axis=1)",
            "shape",
            "argmax: axis 1 is out of range for a tensor of rank 1",
            "z,",
        ),
        (
            "input z: f32[3]\nnode c = one_hot(z, 3)",
            "dtype",
            "one_hot encodes integer indices, got f32[3]",
            "z,",
        ),
    ],
)
def test_bad_calls_are_located(decl, kind, message, needle):
    text = decl + "\noutput c\n"
    err = compile_error(text)
    assert err.kind == kind
    assert message in err.message
    assert (err.span.line, err.span.column) == (2, column_of(text, 2, needle))


def test_one_hot_needs_a_static_class_count():
    err = compile_error("input i: i32\ninput k: f32\nnode c = one_hot(i, k)\noutput c\n")
    assert "'k' is not a dim" in err.message and err.span.line == 3


# --- syntax: the op and the problem --------------------------------------------------------------

PROGRAM = """dim K = 3
input z: f32[K]
node i = argmax(z, axis=-1)
node w = argmax v: f32[K] { dot(z, v) - sum(v ** 2) }
output i, w
"""


def test_argmax_call_and_argmax_problem_live_side_by_side():
    prog = ddm.loads(PROGRAM)
    g = prog.graph
    assert g.values[g.nodes["i"]].op == "argmax"
    assert g.values[g.nodes["w"]].op == "argmin"  # a maximisation problem, solved
    out = prog.apply({}, z=np.array([0.2, 1.0, -0.4]))
    assert int(out["i"]) == 1
    np.testing.assert_allclose(out["w"], [0.1, 0.5, -0.2], atol=1e-6)  # z / 2


def test_formatter_round_trips_the_call_and_the_problem():
    out = format_module(parse(PROGRAM))
    assert parse(out) == parse(PROGRAM)
    assert format_source(out) == out
    assert "argmax(z, axis=-1)" in out


# --- values --------------------------------------------------------------------------------------


def test_argmax_takes_the_first_index_on_ties_along_any_axis():
    x = np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 2.0]])
    assert np.asarray(OPS["argmax"].impl(x)).tolist() == [1, 0]
    assert np.asarray(OPS["argmax"].impl(x, axis=0)).tolist() == [1, 0, 0]
    assert np.asarray(OPS["argmax"].impl(x, axis=-2)).tolist() == [1, 0, 0]


def test_one_hot_marks_the_index_and_leaves_a_zero_row_outside_the_range():
    out = np.asarray(OPS["one_hot"].impl(np.array([0, 2, 3, -1]), 3))
    assert out.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0]]


def test_a_decision_rule_of_a_program_picks_the_best_regime():
    prog = ddm.loads("""dim K = 3
dim T = 2
input z: f32[T, K]
node pick = one_hot(argmax(z), K)
output pick
""")
    z = np.array([[0.1, -2.0, 0.3], [5.0, 5.0, 1.0]])
    assert np.asarray(prog.apply({}, z=z)["pick"]).tolist() == [[0, 0, 1], [1, 0, 0]]


# --- gradients -----------------------------------------------------------------------------------

RULE = """dim K = 3
input z: f32[K]
input payoff: f32[K]
param scale: f32[K] = [1.0, 0.5, 2.0]
node choice = {choice}
node gain = dot(choice, payoff)
loss = -mean(gain)
"""


@pytest.mark.parametrize(
    "choice,trains", [("one_hot(argmax(scale * z), K)", False), ("softmax(scale * z)", True)]
)
def test_the_hard_rule_passes_no_gradient_and_its_relaxation_does(choice, trains):
    prog = ddm.loads(RULE.format(choice=choice), x64=True)
    rng = np.random.default_rng(0)
    batch = {"z": rng.normal(size=(16, 3)), "payoff": rng.normal(size=(16, 3))}
    params = prog.init(jax.random.key(0))
    grad = np.asarray(jax.grad(lambda p: prog.loss(p, batch))(params)["scale"])
    assert np.all(np.isfinite(grad))
    assert bool(np.any(grad != 0)) is trains
    assert [w.span.line for w in prog.warnings] == ([] if trains else [4])
