"""Programs that cannot fit the device are refused before compiling, naming the dim.

The estimate (ddm/compiler/footprint.py) is a lower bound: params (with gradient and optimiser
state when training), one batch of inputs and the largest single value. Refusing above it never
refuses a program that could run.
"""

from pathlib import Path

import jax
import numpy as np
import pytest

import ddm
from ddm.cli.main import main
from ddm.compiler.driver import front_end
from ddm.compiler.footprint import estimate
from ddm.runtime import memory
from ddm.runtime.errors import ResourceDiagnostic

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

WIDE = """\
dim F = 6
dim H = {h}
input x: f32[F]
input y: f32
param w: f32[F, H] = zeros()
node h = x @ w
node p = sigmoid(sum(h))
output p
loss = bce(p, y)
run {{
    data = credit_applicants
    steps = 2
}}
"""


def test_run_of_a_program_beyond_memory_is_a_located_error(capsys, tmp_path):
    path = tmp_path / "wide.ddm"
    path.write_text(WIDE.format(h=10**9))
    rc = main(["compile", str(path), "--run", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in out + err
    assert err.startswith(f"{path}:2:5: error: training this program needs at least 1.1 TB")
    assert "at H = 1,000,000,000; this device has" in err
    assert "note: the largest part: node 'h' for 256 samples" in err
    assert "hint: make H smaller or the batch" in err


def test_init_refuses_params_beyond_memory_before_allocating():
    prog = ddm.loads(WIDE.format(h=10**12), "wide.ddm")
    with pytest.raises(ResourceDiagnostic) as err:
        prog.init(jax.random.key(0))
    msg = str(err.value)
    assert msg.startswith(
        "wide.ddm:2:5: error: initialising the params needs at least 24.0 TB at "
        "H = 1,000,000,000,000; this device has"
    ), msg
    assert "param 'w'" in msg


def test_the_estimate_is_a_lower_bound_of_the_params_jax_allocates():
    for name in ("hedge_longonly.ddm", "deep_hedge.ddm", "credit.ddm", "trading.ddm"):
        prog = ddm.load(str(EXAMPLES / name))
        shapes = jax.eval_shape(prog.product.init, jax.random.key(0))
        real = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(shapes))
        fp = estimate(prog.graph, {}, batch=1, training=False)
        assert fp.params <= real, name


def test_a_small_device_refuses_and_names_the_dim_of_the_largest_part():
    g, _ = front_end(WIDE.format(h=1000), "wide.ddm")
    memory.check(g, {}, 256, True, "training", available=10**9)  # fits: no error
    with pytest.raises(ResourceDiagnostic, match=r"needs at least .* at H = 1,000; this device"):
        memory.check(g, {}, 256, True, "training", available=10**5)


def test_examples_fit_this_machine():
    for path in sorted(EXAMPLES.glob("*.ddm")):
        g, _ = front_end(path.read_text(), str(path))
        memory.check(g, {}, 1024, True, "training")  # data-bound dims left out: no error
