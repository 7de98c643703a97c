"""The Python API contract of DESIGN.md: load/loads → Program; init, apply, apply_batch, loss,
all pure and composable with jax.jit, jax.grad and jax.vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ddm
from ddm.dsl.diagnostics import DataDiagnostic, DdmError

SRC = """
dim N
input x: f32[N]
input y: f32
param w: f32[N] = ones()
param s: f32 = 2.0 positive
node p = sigmoid(s * dot(w, x))
output p
loss = bce(p, y)
metric acc = accuracy(p, y)
"""


@pytest.fixture(scope="module")
def prog():
    return ddm.loads(SRC, "api.ddm")


def test_init_needs_the_sizes_of_symbolic_dims(prog):
    with pytest.raises(DdmError, match="dim 'N' has no value"):
        prog.init(jax.random.key(0))
    params = prog.init(jax.random.key(0), N=3)
    assert params["w"].shape == (3,)
    assert np.isclose(float(params["s"]), np.log(2.0))  # stored as its logarithm
    assert np.isclose(float(prog.param_values(params)["s"]), 2.0)


def test_apply_batch_equals_vmap_of_apply(prog):
    params = prog.init(jax.random.key(0), N=3)
    xs = jax.random.normal(jax.random.key(1), (5, 3))
    batched = prog.apply_batch(params, x=xs)["p"]
    mapped = jax.vmap(lambda x: prog.apply(params, x=x)["p"])(xs)
    np.testing.assert_allclose(batched, mapped, rtol=1e-6)
    assert batched.shape == (5,)


def test_loss_composes_with_jit_and_grad(prog):
    params = prog.init(jax.random.key(0), N=3)
    batch = {"x": jnp.ones((4, 3)), "y": jnp.array([1.0, 0.0, 1.0, 1.0])}
    value, grads = jax.jit(jax.value_and_grad(prog.loss))(params, batch)
    assert value.shape == () and set(grads) == {"w", "s"}
    assert prog.metrics(params, batch)["acc"] == pytest.approx(0.75)


def test_call_time_shape_errors_name_the_input_axis_and_dim(prog):
    params = prog.init(jax.random.key(0), N=3)
    with pytest.raises(DataDiagnostic) as err:
        prog.loss(params, {"x": jnp.ones((4, 3)), "y": jnp.ones((5,))})
    assert "input 'y' has batch size 5, but 'x' has 4" in str(err.value)
    with pytest.raises(DataDiagnostic, match="rank 1"):
        prog.apply(params, x=jnp.ones((2, 3)))
    with pytest.raises(DataDiagnostic, match="unknown input 'z'"):
        prog.apply(params, x=jnp.ones(3), z=1.0)
    with pytest.raises(DataDiagnostic, match="missing input 'x'"):
        prog.apply(params)


def test_literal_dims_are_checked_at_call_time():
    prog = ddm.loads("dim N = 3\ninput x: f32[N]\nnode y = 2 * x\noutput y", "lit.ddm")
    with pytest.raises(DataDiagnostic) as err:
        prog.apply({}, x=jnp.ones(4))
    text = str(err.value)
    assert text.startswith("lit.ddm:2:1: error: apply: input 'x' axis 0 is N = 3")
    assert "input x: f32[N]" in text  # the source line is shown


def test_batch_statistics_need_a_batch():
    prog = ddm.loads('input x: f32[2]\nnode z = zscore(x, stats="batch")\noutput z', "z.ddm")
    out = prog.apply_batch({}, x=jnp.array([[1.0, 2.0], [3.0, 6.0]]))["z"]
    np.testing.assert_allclose(out, [[-1, -1], [1, 1]], atol=1e-6)
    with pytest.raises(DataDiagnostic, match="needs a batch"):
        prog.apply({}, x=jnp.ones(2))


def test_f64_needs_x64():
    with pytest.raises(DdmError, match="needs float64"):
        ddm.loads("input x: f64[2]\nnode y = x * 2\noutput y", "d.ddm")


def test_load_reads_files_and_reports_io_problems(tmp_path):
    with pytest.raises(DdmError, match="no such file"):
        ddm.load(tmp_path / "missing.ddm")
    (tmp_path / "ok.ddm").write_text("input x: f32\nnode y = x + 1\noutput y\n")
    assert float(ddm.load(tmp_path / "ok.ddm").apply({}, x=1.0)["y"]) == 2.0


def test_imports_and_generic_fns(tmp_path):
    (tmp_path / "lib.ddm").write_text(
        "fn centre(v: f32[K]) -> f32[K] { let m = mean(v) return v - m }\n"
    )
    (tmp_path / "main.ddm").write_text(
        'import "lib.ddm" as lib\ninput a: f32[3]\ninput b: f32[5]\n'
        "node ca = lib.centre(a)\nnode cb = lib.centre(b)\noutput ca, cb\n"
    )
    prog = ddm.load(tmp_path / "main.ddm")
    out = prog.apply({}, a=jnp.arange(3.0), b=jnp.arange(5.0))
    np.testing.assert_allclose(out["ca"], [-1, 0, 1])
    assert out["cb"].shape == (5,)


BUDGET_NODE = """\
input b: f32[2]
param lam: f32 = 1.0 positive
node w = argmin v: f32[2] { lam * sum(v ** 2) - dot(b, v) } subject to { sum(v) == 1 }
output w
"""


def test_apply_is_one_call_that_reads_back_one_failure_flag():
    """The single-decision fast path: ``apply`` compiles the outputs with one flag (did a solve
    of an error-policy node fail?) rather than every node's solver infos; the flag is None
    when no node can fail that way. A failed decision still raises the located error, and a
    non-strict program returns it."""
    from ddm.runtime.errors import SolverDiagnostic

    prog = ddm.loads(BUDGET_NODE, "budget.ddm")
    params = prog.init(jax.random.key(0))
    b = jnp.asarray([0.2, -0.1], jnp.float32)
    out, flag = prog._decide(params, {"b": b})
    assert set(out) == {"w"} and flag.shape == () and not bool(flag)
    np.testing.assert_allclose(prog.apply(params, b=b)["w"], out["w"])
    net = ddm.loads("input x: f32\nnode y = 2.0 * x\noutput y\n")
    assert net._decide({}, {"x": jnp.float32(1.0)})[1] is None
    bad = jnp.asarray([np.nan, 0.0], jnp.float32)
    with pytest.raises(SolverDiagnostic, match="budget.ddm:3:10"):
        prog.apply(params, b=bad)
    loose = ddm.loads(BUDGET_NODE, "budget.ddm", strict=False)
    assert np.isnan(np.asarray(loose.apply(params, b=bad)["w"])).all()
