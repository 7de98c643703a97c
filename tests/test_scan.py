"""``scan``: a sequential sub-graph with a carried state, lowered to one ``lax.scan``.

Specifications: the value is the stacked carries of a Python loop; gradients through the steps
(layers, transaction costs, an argmin in the body) match finite differences in float64; an
argmin inside a scan reports its solver infos per sample and step; the formatter round-trips.
"""

import numpy as np
import pytest

import ddm
from ddm.dsl.format import format_source
from ddm.dsl.parser import parse
from ddm.library.lazy import jax

from conftest import fd_grad, flat

pytestmark = pytest.mark.usefixtures("float64")


def test_scan_value_is_the_stack_of_carries_of_a_loop():
    prog = ddm.loads("""dim N = 4
input x: f32[N]
node run = scan t in N, s: f32[2] = [0.0, 1.0] {
    let inc = x[t] * s[1]
    return stack([s[0] + inc, 0.5 * s[1]])
}
output run
""")
    x = np.array([1.0, 2.0, 3.0, 4.0])
    got = np.asarray(prog.apply({}, x=x)["run"])
    s, want = np.array([0.0, 1.0]), []
    for t in range(4):
        s = np.array([s[0] + x[t] * s[1], 0.5 * s[1]])
        want.append(s)
    np.testing.assert_allclose(got, np.array(want), rtol=1e-12)
    assert got.shape == (4, 2)


def test_scalar_init_broadcasts_to_the_carry_and_the_index_is_an_i32_step_count():
    prog = ddm.loads("""input x: f32[3]
node c = scan t in 3, s: f32[2] = 1.0 { s + f32(t) }
output c
""")
    np.testing.assert_allclose(
        prog.apply({}, x=np.zeros(3))["c"], [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    )


POLICY = """dim N = 5
dim N1 = 6
input S: f32[N1]
param phi = mlp(2, 4, 1, act="tanh")
node h = scan t in N, prev: f32 = 0.0 {
    return phi(stack([log(S[t] / 100.0), prev]))[0]
}
node pnl = hedge_pnl(S, h, cost=0.01, strike=100.0)
output h, pnl
loss = mean(pnl ** 2)
"""


def test_gradients_through_a_recurrent_policy_with_costs_match_finite_differences():
    prog = ddm.loads(POLICY, x64=True)
    params = prog.init(jax.random.key(1))
    S = 100.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.02, (8, 6)), axis=1))
    f = lambda p: prog.loss(p, {"S": S})  # noqa: E731
    grads, fd = flat(jax.grad(f)(params)), fd_grad(f, params)
    assert np.max(np.abs(grads - fd)) / np.max(np.abs(fd)) < 1e-6


def test_the_carry_feeds_the_next_step():
    # the previous hedge is an input of the policy: perturbing step 0's output moves step 1's
    prog = ddm.loads(POLICY, x64=True)
    params = prog.init(jax.random.key(1))
    S = np.full(6, 101.0)
    h = np.asarray(prog.apply(params, S=S)["h"])
    assert len(set(np.round(h, 12))) > 1  # constant prices, yet h moves: it depends on prev


BAND = """dim N = 5
input d: f32[N]
param w: f32 = 0.1 positive
node h = scan t in N, prev: f32 = 0.0 {
    return argmin v: f32 { (v - prev) ** 2 } subject to { v >= d[t] - w, v <= d[t] + w } %s
}
output h
loss = mean(sum(h))
"""


# a tight interior-point tolerance: finite differences of a 1e-8 solve would be noise
@pytest.mark.parametrize("using", ["using ipm(tol=1e-12)", "using prox"])
def test_an_argmin_in_the_body_projects_onto_the_band_with_implicit_gradients(using):
    prog = ddm.loads(BAND % using, x64=True)
    params = prog.init(jax.random.key(0))
    d = np.array(
        [[0.5, 0.52, 0.3, 0.31, 0.9], [0.0, 0.05, -0.2, 0.4, 0.45]]
    )  # no ties at a band edge: IPM degenerate
    w = float(np.exp(params["w"]))
    want = []
    for row in d:
        prev, out = 0.0, []
        for x in row:
            prev = float(np.clip(prev, x - w, x + w))
            out.append(prev)
        want.append(out)
    np.testing.assert_allclose(prog.apply_batch(params, d=d)["h"], want, atol=1e-8)
    f = lambda p: prog.loss(p, {"d": d})  # noqa: E731
    g = float(jax.grad(f)(params)["w"])
    # h is piecewise linear in w: a wide step is exact away from kinks and steps over the
    # solver's 1e-12 residual noise
    assert abs(g - float(fd_grad(f, params, eps=1e-4)[0])) < 1e-6 * max(1.0, abs(g))


def test_solver_infos_of_an_argmin_in_a_scan_come_per_sample_and_step():
    prog = ddm.loads(BAND % "using prox", x64=True)
    params = prog.init(jax.random.key(0))
    infos = prog.solver_info(params, d=np.zeros((3, 5)))
    (info,) = infos.values()
    assert np.asarray(info.status).shape == (3, 5)
    assert np.all(np.asarray(info.status) == 0)


def test_a_failed_solve_inside_a_scan_names_the_sample_and_the_step():
    # an empty band (lower > upper) at step 2 of sample 1 only
    src = BAND.replace("v >= d[t] - w", "v >= d[t] - w + 10.0 * f32(d[t] > 5.0)") % ""
    prog = ddm.loads(src, x64=True, strict=True)
    params = prog.init(jax.random.key(0))
    d = np.zeros((2, 5))
    d[1, 2] = 6.0
    with pytest.raises(ddm.DdmError) as info:
        prog.loss(params, {"d": d})
    assert "instance 1, step 2" in info.value.message


def test_format_round_trips_scans_with_and_without_lets():
    text = """dim N = 3
input x: f32[N]
node a = scan t in N, s: f32 = 0.0 { s + x[t] }
node b = scan t in N, s: f32 = 0.0 {
    let y = x[t] * 2
    return s + y
}
output a, b
"""
    assert format_source(text) == text
    assert parse(format_source(text)).items == parse(text).items


def test_check_and_the_ir_show_each_scan_and_what_it_carries():
    from ddm.cli.main import summary_table
    from ddm.compiler.ir import format_ir

    prog = ddm.loads(BAND % "using prox", file="band.ddm")
    text = format_ir(prog.graph)
    assert "scan over t < N, carrying prev: f32" in text and "new carry %" in text
    table = summary_table(prog.graph)
    assert "h (4:10): scan over t < N, carrying prev: f32" in table
    assert "(in scan h) (5:12): argmin over v: f32" in table


def test_scans_nest_and_live_in_fns_over_their_generic_dims():
    prog = ddm.loads("""dim N = 3
input x: f32[N]
fn cums(a: f32[K]) -> f32[K] { return scan t in K, s: f32 = 0.0 { s + a[t] } }
node c = cums(x)
node m = scan i in 2, acc: f32[N] = 0.0 {
    acc + scan t in N, s: f32 = 0.0 { s + x[t] * f32(i + 1) } }
output c, m
""")
    out = prog.apply({}, x=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(out["c"], [1.0, 3.0, 6.0])
    np.testing.assert_allclose(out["m"], [[1.0, 3.0, 6.0], [3.0, 9.0, 18.0]])


def test_one_sample_names_the_step_of_a_failed_solve_inside_a_scan():
    src = BAND.replace("v >= d[t] - w", "v >= d[t] - w + 10.0 * f32(d[t] > 5.0)") % ""
    prog = ddm.loads(src, x64=True, strict=True)
    params = prog.init(jax.random.key(0))
    d = np.zeros(5)
    d[2] = 6.0
    with pytest.raises(ddm.DdmError) as info:
        prog.apply(params, d=d)
    assert "failed on step 2 during apply" in info.value.message


def test_training_stops_at_a_failed_solve_inside_a_scan_naming_sample_and_step(
    monkeypatch, tmp_path
):
    from ddm.runtime import train
    from ddm.runtime.config import RunConfig
    from ddm.runtime.data import Dataset, Source

    d = np.zeros((8, 5))
    d[3, 4] = 6.0  # only training sample 3, at step 4
    sources = {"bands": Source("bands", (), lambda: Dataset({"d": d}, {"d": d[:2]}), "")}
    monkeypatch.setattr(train, "SOURCES", sources)
    cfg = RunConfig.defaults()
    cfg.values.update(data={"name": "bands"}, batch=8, steps=3, x64=True)
    cfg.validate(sources)
    src = BAND.replace("v >= d[t] - w", "v >= d[t] - w + 10.0 * f32(d[t] > 5.0)") % ""
    with pytest.raises(ddm.DdmError) as info:
        train.run(ddm.loads(src, file="band.ddm", x64=True), cfg, str(tmp_path))
    msg = info.value.message
    assert "failed at step 1 on training sample 3" in msg and "scan step 4" in msg, msg
