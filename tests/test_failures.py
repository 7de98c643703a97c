"""A failed solve never becomes a plausible number (docs/language.md § Failed solves).

The matrix: the three policies (``error``, ``nan``, ``closest``) × the ways a user calls the
public functions (eagerly, under ``jax.jit``, ``jax.grad``, ``jax.vmap`` and
``jax.jit(jax.vmap(jax.grad(…)))``), on the issue's infeasible portfolio: five caps of 0.1
cannot sum to 1.

- ``error``: eagerly a located error; under a transformation NaN in the value and in every
  gradient, and ``prog.checked(f)`` raises the located error;
- ``nan``: NaN everywhere, never an error;
- ``closest``: the closest point (finite, the same under every transformation), its status
  ``closest`` in the aux.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ddm
from ddm.library.solvers.status import STATUS_NAMES
from ddm.runtime.errors import SolverDiagnostic

SOURCE = """
dim N = 5
input b: f32[N]
param lam: f32 = 1.0 positive
node w = argmin v: f32[N] {{ lam * sum(v ** 2) - dot(b, v) }}
    subject to {{ sum(v) == 1, v >= 0, v <= {cap} }}{using}
output w
loss = mean(sum(w * w, axis=1))
"""
POLICIES = ("error", "nan", "closest")
MODES = ("eager", "jit", "grad", "vmap", "jit_vmap_grad")
# jit, grad and vmap alone are also inside jit_vmap_grad: for the policies whose programs take
# long to compile (closest: three interior points), `make test` runs eager and the composition,
# `make test-slow` each transformation alone
COMPOSED = [
    pytest.param(m, marks=pytest.mark.slow) if m in ("jit", "grad", "vmap") else m for m in MODES
]
INFEASIBLE = {"b": np.ones((4, 5), np.float32)}
STACKED = {"b": np.ones((2, 4, 5), np.float32)}  # two batches, for the vmapped modes


def program(policy: str, cap: float = 0.1):
    using = "" if policy == "error" else f' using ipm(on_infeasible="{policy}")'
    return ddm.loads(SOURCE.format(cap=cap, using=using), f"{policy}.ddm")


@pytest.fixture(scope="module")
def programs():
    return {p: program(p) for p in POLICIES}


def call(prog, mode: str, params):
    """The loss's value (``eager``, ``jit``, ``vmap``) or gradient (``grad``,
    ``jit_vmap_grad``) as ``mode`` computes it, as a flat NumPy array."""
    fn = {
        "eager": prog.loss,
        "jit": jax.jit(prog.loss),
        "grad": jax.grad(prog.loss),
        "vmap": jax.vmap(prog.loss, in_axes=(None, 0)),
        "jit_vmap_grad": jax.jit(jax.vmap(jax.grad(prog.loss), in_axes=(None, 0))),
    }[mode]
    out = fn(params, STACKED if mode in ("vmap", "jit_vmap_grad") else INFEASIBLE)
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(out)])


def transformed(prog, mode: str):
    return {
        "jit": jax.jit(prog.loss),
        "grad": jax.grad(prog.loss),
        "vmap": jax.vmap(prog.loss, in_axes=(None, 0)),
        "jit_vmap_grad": jax.jit(jax.vmap(jax.grad(prog.loss), in_axes=(None, 0))),
    }[mode]


@pytest.mark.parametrize("mode", MODES)
def test_the_error_policy_raises_eagerly_and_is_nan_under_every_transformation(programs, mode):
    prog = programs["error"]
    params = prog.init(jax.random.key(0))
    if mode == "eager":
        with pytest.raises(SolverDiagnostic) as info:
            call(prog, mode, params)
        assert "error.ddm:5:10: error: argmin node 'w' failed on instance 0 of 4" in str(
            info.value
        ) and "infeasible" in str(info.value)
        return
    assert np.all(np.isnan(call(prog, mode, params))), mode


@pytest.mark.parametrize("mode", COMPOSED[1:])
def test_checked_raises_the_located_error_under_every_transformation(programs, mode):
    prog = programs["error"]
    params = prog.init(jax.random.key(0))
    f = prog.checked(transformed(prog, mode))
    with pytest.raises(SolverDiagnostic) as info:
        f(params, STACKED if mode in ("vmap", "jit_vmap_grad") else INFEASIBLE)
    text = str(info.value)
    assert text.startswith("error.ddm:5:10: error: argmin node 'w' failed on instance 0 of 4")
    assert (
        "infeasible" in text and "   5 | node w = argmin" in text and "\n" + " " * 16 + "^" in text
    )


@pytest.mark.parametrize("mode", MODES)
def test_the_nan_policy_is_nan_everywhere_and_never_raises(programs, mode):
    prog = programs["nan"]
    params = prog.init(jax.random.key(0))
    assert np.all(np.isnan(call(prog, mode, params))), mode
    if mode != "eager":
        out = prog.checked(transformed(prog, mode))(
            params, STACKED if mode in ("vmap", "jit_vmap_grad") else INFEASIBLE
        )
        assert np.all(np.isnan(np.concatenate([np.ravel(x) for x in jax.tree.leaves(out)])))


@pytest.mark.parametrize("mode", COMPOSED)
def test_the_closest_policy_is_the_same_finite_point_under_every_transformation(programs, mode):
    prog = programs["closest"]
    params = prog.init(jax.random.key(0))
    got = call(prog, mode, params)
    assert np.all(np.isfinite(got)), mode
    # the closest point violates the budget and the caps least in the squared sense: by
    # symmetry w = t with 5 (5t − 1) + 5 (t − 0.1) = 0, t = 11/60; float32 resolves it to √ε
    t = 11 / 60
    if mode in ("eager", "jit", "vmap"):
        np.testing.assert_allclose(got, 5 * t**2, rtol=2e-3)
    w = prog.apply_batch(params, **INFEASIBLE)["w"]
    np.testing.assert_allclose(w, t, atol=2e-4)
    info = prog.solver_info(params, **INFEASIBLE)["w"]
    assert {STATUS_NAMES[int(s)] for s in np.asarray(info.status)} == {"closest"}


def test_a_feasible_batch_is_untouched_by_every_policy():
    feasible = {"b": np.tile(np.linspace(0.0, 1.0, 5, dtype=np.float32), (4, 1))}
    values = []
    for policy in POLICIES:
        prog = program(policy, cap=0.5)
        params = prog.init(jax.random.key(0))
        # one compilation for the value, the gradient and the solver infos (the documented
        # pattern for a training loop of one's own: loss_and_info, then check_solvers)
        step = jax.jit(jax.value_and_grad(prog.loss_and_info, has_aux=True))
        (value, aux), grad = step(params, feasible)
        prog.check_solvers(aux, "loss")  # raises for a failed instance: there is none
        assert np.isfinite(float(value)) and np.isfinite(float(grad["lam"]))
        info = next(iter(aux.solvers.values()))
        assert {STATUS_NAMES[int(s)] for s in np.asarray(info.status)} == {"converged"}
        values.append(float(value))
    assert values[0] == values[1] == values[2]


def test_one_failed_instance_poisons_the_batch_it_is_in(programs):
    """A failure cannot hide among good instances: the mean over the batch is NaN."""
    prog = program("error", cap=0.3)
    params = prog.init(jax.random.key(0))
    b = np.tile(np.linspace(0.0, 1.0, 5, dtype=np.float32), (4, 1))
    b[2] = np.nan  # non-finite data in one instance
    assert np.isnan(float(jax.jit(prog.loss)(params, {"b": b})))
    with pytest.raises(SolverDiagnostic, match="failed on instance 2 of 4( during loss)?: non-fin"):
        prog.checked(jax.jit(prog.loss))(params, {"b": b})
    with pytest.raises(SolverDiagnostic, match="failed on instance 2 of 4 during loss: non-fin"):
        prog.loss(params, {"b": b})


@pytest.mark.parametrize(
    "kind, source, data",
    [
        (
            "max-iter",
            """
input b: f32[3]
node w = argmin v: f32[3] { sum(v ** 2) - dot(b, v) } subject to { v >= 0, sum(v) <= 1 }
    using ipm(max_iter=1)
loss = mean(sum(w, axis=1))
""",
            {"b": np.array([[0.3, 0.5, 0.9]], np.float32)},
        ),
        (
            "singular",
            """
input b: f32[3]
node w = argmin v: f32[3] { (v[0] - b[0]) ** 2 } subject to { sum(v) == 1 }
loss = mean(sum(w, axis=1))
""",
            {"b": np.array([[0.3, 0.5, 0.9]], np.float32)},
        ),
    ],
)
def test_not_converged_and_singular_solves_are_nan_and_located_under_jit(kind, source, data):
    prog = ddm.loads(source, f"{kind}.ddm")
    # the value and the gradient w.r.t. the data, in one compiled function
    f = jax.jit(jax.value_and_grad(lambda b: prog.loss({}, {"b": b})))
    value, grad = f(data["b"])
    assert np.isnan(float(value))
    assert np.isnan(np.asarray(grad)[0, 0])  # b[0] feeds the failed solve
    with pytest.raises(SolverDiagnostic, match=f"failed on instance 0( during loss)?: {kind}"):
        prog.checked(f)(data["b"])


def test_checked_costs_nothing_when_the_result_is_finite(programs, monkeypatch):
    """A finite result is returned as is: no second run, no collector."""
    from ddm.compiler import failures

    prog = program("error", cap=0.5)
    params = prog.init(jax.random.key(0))
    opened = []
    monkeypatch.setattr(failures, "collect", lambda: opened.append(1))
    feasible = {"b": np.tile(np.linspace(0.0, 1.0, 5, dtype=np.float32), (4, 1))}
    assert np.isfinite(float(prog.checked(jax.jit(prog.loss))(params, feasible)))
    assert opened == []


def test_nothing_is_reported_outside_a_collector(programs):
    """Ordinary calls emit no host callback: the traced loss holds none."""
    prog = programs["error"]
    params = prog.init(jax.random.key(0))
    text = str(
        jax.make_jaxpr(prog.loss)(params, {k: jnp.asarray(v) for k, v in INFEASIBLE.items()})
    )
    assert "callback" not in text
