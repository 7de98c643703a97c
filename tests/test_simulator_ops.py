"""Market simulators inside the compiled graph: ``gbm_path``, ``heston_path``, ``merton_path``,
``regime_path``, the hybrid ``mix_by_regime``, and the ``path_ids`` source.

Specifications:

- a fixed key per path: the same path id gives the same bits in any batch, in any order, in
  any program, with or without a training key; different ids give different paths; each op's
  path ``k`` is path ``k`` of the host generator of :mod:`ddm.library.market` with
  ``key(seed)``;
- ``path_ids``: training ids ``0 … n_train − 1``, test ids from ``2³⁰`` (disjoint), ``tau``
  as ``gbm_paths``';
- moments: GBM log-returns have mean (μ − σ²/2)dt and variance σ²dt, Merton's E[S_T] =
  S₀e^{μT} and its jump counts are Poisson(λdt) per step, Heston's variance v⁺ never falls
  below 0 (full truncation) where the Feller condition fails, the regime chain leaves a state at
  rate 1 − stay and each state's steps have its volatility;
- gradients (float64): ∂E[S_T²]/∂σ of GBM against its closed form 2σT·S₀²e^{(2μ+σ²)T}
  (within Monte Carlo error) and against finite differences on the same paths (exactly, up
  to rounding); every op's parameters against finite differences; Merton's ``lam`` only
  through the compensator; under ``jit``, ``vmap`` and ``grad`` together;
- a bad call is a located diagnostic; the example compiles and trains.

Float64 for the whole module: gradients are compared with finite differences.
"""

from __future__ import annotations

import contextlib
import functools

import numpy as np
import pytest

import ddm
from ddm.library import OPS, market
from ddm.library.lazy import jax, jnp
from ddm.runtime.data import SOURCES
from ddm.runtime.data.path_ids import TEST_BASE

from conftest import EXAMPLES, column_of, compile_error, type_of

pytestmark = pytest.mark.usefixtures("float64")

IDS = jnp.arange(64, dtype=jnp.int32)


def paths(name, ids=IDS, *args, **static):
    """``[len(ids), steps + 1]``: the op's impl for each id, as lowering runs it (vmapped)."""
    f = _vmapped(name, len(args), tuple(sorted(static.items())), jax.config.jax_enable_x64)
    return np.asarray(f(ids, *args))


@functools.cache
def _vmapped(name, n_args, static, x64):
    """One compiled function per op, arity, static arguments and precision (jit's cache would
    not keep a fresh lambda's)."""
    del x64  # a key of the cache only: jit traces again in the other precision
    return jax.jit(
        jax.vmap(lambda p, *a: OPS[name].impl(p, *a, **dict(static)), (0,) + (None,) * n_args)
    )


HESTON = (0.04, 1.5, 0.04, 0.5, -0.7)  # v0, κ, θ, ξ, ρ
MERTON = (0.2, 3.0, -0.1, 0.15)  # σ, λ, jump mean, jump sd
REGIME = (jnp.array([0.1, -0.2]), jnp.array([0.15, 0.45]))  # μ, σ per state


# --- shape rules ---------------------------------------------------------------------------------


def test_types_of_good_calls():
    prog = ddm.loads(
        """dim N = 10
input path: i32
input sig: f64
input r: f32[N]
param s: f32 = 0.2 positive
node a = gbm_path(path, s, steps=10)
node b = gbm_path(path, sig, mu=0.05, s0=1.0, days=365, steps=4, seed=7)
node c = heston_path(path, 0.04, 1.5, 0.04, 0.5, -0.7, steps=10)
node cv = heston_path(path, 0.04, 1.5, 0.04, 0.5, -0.7, steps=10, output="variance")
node d = merton_path(path, s, 3.0, -0.1, 0.15, steps=10)
node e = regime_path(path, [0.1, -0.2], [0.15, 0.45], stay=[0.99, 0.9], steps=10)
node er = regime_path(path, [0.1, -0.2], [0.15, 0.45], steps=10, output="regime")
node m = mix_by_regime(r, log(a[1:11] / a[0:10]), er[1:11])
output a, b, c, cv, d, e, er, m
""",
        x64=True,
    )
    assert type_of(prog, "a") == "f32[11]"
    assert type_of(prog, "b") == "f64[5]"  # the parameters' precision
    assert type_of(prog, "c") == type_of(prog, "cv") == "f32[11]"
    assert type_of(prog, "d") == type_of(prog, "e") == "f32[11]"
    assert type_of(prog, "er") == "i32[11]"
    assert type_of(prog, "m") == "f32[N]"


# --- a fixed key per path ------------------------------------------------------------------------

CALLS = [
    ("gbm_path", (0.2,), {}),
    ("heston_path", HESTON, {"output": "variance"}),
    ("merton_path", MERTON, {}),
    ("regime_path", REGIME, {"output": "regime"}),
]


@contextlib.contextmanager
def float32():
    """JAX's default float32 inside (this module runs in float64), restored afterwards."""
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", True)


@pytest.mark.parametrize("name,args,static", CALLS, ids=lambda x: str(x)[:20])
def test_a_path_is_its_id_whatever_the_batch(name, args, static):
    whole = paths(name, IDS, *args, steps=12, **static)
    order = np.array([17, 3, 63, 0, 3])  # another batch: other size, order, a repeat
    part = paths(name, jnp.asarray(order, jnp.int32), *args, steps=12, **static)
    np.testing.assert_array_equal(part, whole[order])  # bit for bit
    # one sample compiled on its own: the same draws, the arithmetic rounded its own way
    one = np.asarray(jax.jit(lambda p: OPS[name].impl(p, *args, steps=12, **static))(17))
    np.testing.assert_allclose(one, whole[17], rtol=1e-14)
    if static.get("output") != "regime":  # most 12-step regime paths never leave state 0
        assert len({row.tobytes() for row in whole}) == len(IDS)  # other ids, other paths


def test_the_draws_do_not_depend_on_the_precision():
    """float32 noise in every precision: a float64 path is the float32 one, more finely
    rounded."""
    wide = paths("heston_path", IDS, *HESTON, steps=30)
    with float32():
        narrow = paths("heston_path", IDS, *HESTON, steps=30)
    assert narrow.dtype == np.float32 and wide.dtype == np.float64
    np.testing.assert_allclose(narrow, wide, rtol=1e-5)


def test_each_op_draws_what_the_host_generator_draws_for_the_same_key():
    """In float32, the precision the host generators draw in by default."""
    with float32():
        _host_agreement()


def _host_agreement():
    dt, n = 30 / 365 / 30, len(IDS)
    key = jax.random.key(0)
    got = paths("gbm_path", IDS, 0.2, mu=0.05, days=30.0, steps=30)
    np.testing.assert_array_equal(got, market.gbm(key, 100.0, 0.05, 0.2, dt, 30, n)[..., 0])
    s, v = market.heston(key, 100.0, *HESTON, dt, 30, n)
    np.testing.assert_allclose(paths("heston_path", IDS, *HESTON, steps=30), s, rtol=1e-6)
    got = paths("heston_path", IDS, *HESTON, steps=30, output="variance")
    np.testing.assert_allclose(got, np.maximum(v, 0.0), rtol=1e-5, atol=1e-7)
    want = market.merton(key, 100.0, 0.0, *MERTON, dt, 30, n)
    np.testing.assert_allclose(paths("merton_path", IDS, *MERTON, steps=30), want, rtol=1e-6)
    P = jnp.array([[0.98, 0.02], [0.02, 0.98]])
    s, r = market.regime(key, 100.0, *REGIME, P, 0, dt, 30, n)
    np.testing.assert_allclose(paths("regime_path", IDS, *REGIME, steps=30), s, rtol=1e-6)
    np.testing.assert_array_equal(paths("regime_path", IDS, *REGIME, output="regime"), r)
    other = paths("gbm_path", IDS, 0.2, mu=0.05, steps=30, seed=1)
    assert not np.any(other[:, 1:] == got[:, 1:])  # another seed, other paths


PROGRAM_A = """input path: i32
param sigma: f32 = 0.2 positive
node S = gbm_path(path, sigma, steps=20)
output S
"""
PROGRAM_B = """input path: i32
input cost: f32
param net = mlp(1, 4, 2)
param sigma: f32 = 0.2 positive
node noise = gumbel_softmax(net(stack([cost])))
node V = heston_path(path, 0.04, 1.5, 0.04, 0.5, -0.7, steps=20)
node S = gbm_path(path, sigma, steps=20)
node pnl = sum(S) + noise[0]
output pnl, V, S
loss = mean(pnl)
"""


def test_the_same_id_is_the_same_path_in_every_program_and_with_any_training_key():
    a, b = ddm.loads(PROGRAM_A), ddm.loads(PROGRAM_B)
    pa, pb = a.init(jax.random.key(0)), b.init(jax.random.key(1))
    ids = np.array([5, 2, 9], np.int32)
    sa = np.asarray(a.apply_batch(pa, path=ids)["S"])
    sb = np.asarray(b.apply_batch(pb, path=ids[::-1], cost=np.zeros(3, np.float32))["S"])
    np.testing.assert_array_equal(sa, sb[::-1])
    want = paths("gbm_path", jnp.asarray(ids), jnp.float32(0.2), steps=20)  # a float32 program
    np.testing.assert_allclose(sa, want, rtol=1e-6)
    # the training key reaches the random op (gumbel_softmax), never the simulator: the loss
    # moves with the key, its derivative in sigma (through S alone) does not
    taps = {"path": ids, "cost": np.zeros(3, np.float32)}
    losses, grads = zip(
        *(
            jax.value_and_grad(lambda p, k=k: b.loss(p, taps, key=k))(pb)
            for k in (jax.random.key(1), jax.random.key(2))
        )
    )
    assert losses[0] != losses[1]
    assert grads[0]["sigma"] == grads[1]["sigma"]


# --- the source ----------------------------------------------------------------------------------


def test_path_ids_gives_disjoint_train_and_test_ids_and_the_gbm_paths_time_grid():
    d = SOURCES["path_ids"].load(n_train=50, n_test=20, days=30, steps=10, cost=0.01)
    train, test = d.train["path"], d.test["path"]
    assert train.dtype == np.int32 and train.tolist() == list(range(50))
    assert test.tolist() == list(range(TEST_BASE, TEST_BASE + 20))
    assert not set(train.tolist()) & set(test.tolist())
    more = SOURCES["path_ids"].load(n_train=5000, n_test=20, days=30, steps=10)
    assert more.test["path"].tolist() == test.tolist()  # the test paths do not move
    shifted = SOURCES["path_ids"].load(n_train=5, n_test=5, days=30, steps=10, offset=1000)
    assert shifted.train["path"].tolist() == list(range(1000, 1005))
    gbm = SOURCES["gbm_paths"].load(n_train=4, n_test=4, days=30, steps=10)
    np.testing.assert_array_equal(d.train["tau"][:4], gbm.train["tau"])
    assert np.all(d.train["cost"] == np.float32(0.01))


def test_path_ids_settings_have_ranges():
    from ddm.runtime.config import RunConfig
    from ddm.runtime.errors import ConfigDiagnostic

    cfg = RunConfig.defaults()
    cfg.apply_set("data=path_ids", 1)
    cfg.apply_set("data.n_train=1073741824", 2)
    with pytest.raises(ConfigDiagnostic, match="'data.n_train' must be at most"):
        cfg.validate(SOURCES, ())


# --- moments -------------------------------------------------------------------------------------

MANY = jnp.arange(4000, dtype=jnp.int32)


def test_gbm_log_returns_have_the_model_mean_and_variance():
    mu, sigma, days, steps = 0.05, 0.3, 365.0, 10
    s = paths("gbm_path", MANY, sigma, mu=mu, days=days, steps=steps)
    r = np.diff(np.log(s), axis=1).ravel()
    dt = days / 365 / steps
    n = r.size
    assert abs(r.mean() - (mu - sigma**2 / 2) * dt) < 4 * sigma * np.sqrt(dt / n)
    # the sample variance of n normals has sd σ²dt·√(2 / (n − 1))
    assert abs(r.var() - sigma**2 * dt) < 4 * sigma**2 * dt * np.sqrt(2 / (n - 1))


def test_merton_jumps_come_at_the_poisson_rate_and_the_mean_is_compensated():
    lam, m, days, steps = 20.0, 0.1, 365.0, 8
    # no diffusion, jumps of fixed size m: each step's log-return is drift + n·m
    s = paths("merton_path", MANY, 0.0, lam, m, 0.0, days=days, steps=steps)
    dt = days / 365 / steps
    drift = -lam * (np.exp(m) - 1.0) * dt
    counts = np.round((np.diff(np.log(s), axis=1) - drift) / m).ravel()
    rate, n = lam * dt, counts.size
    assert abs(counts.mean() - rate) < 4 * np.sqrt(rate / n)
    assert abs(counts.var() - rate) < 0.05 * rate
    s = paths("merton_path", MANY, *MERTON, 0.1, days=days, steps=steps)
    se = s[:, -1].std() / np.sqrt(len(MANY))
    assert abs(s[:, -1].mean() - 100.0 * np.exp(0.1)) < 4 * se  # E[S_T] = S₀e^{μT}


def test_heston_variance_never_falls_below_zero_with_full_truncation():
    # Feller violated (2κθ < ξ²): the scheme's state goes negative, what the steps see does not
    args = (0.02, 1.0, 0.02, 1.5, -0.5)
    v = paths("heston_path", IDS, *args, days=365.0, steps=50, output="variance")
    assert np.all(v >= 0) and np.any(v == 0)  # truncation happened, and held


def test_regime_chain_switches_at_its_rates_and_each_state_has_its_volatility():
    mu, sigma = jnp.array([0.0, 0.0]), jnp.array([0.1, 0.5])
    stay, steps = (0.9, 0.7), 40
    r = paths("regime_path", MANY[:1000], mu, sigma, stay=stay, steps=steps, output="regime")
    s = paths("regime_path", MANY[:1000], mu, sigma, stay=stay, steps=steps)
    now, nxt = r[:, :-1].ravel(), r[:, 1:].ravel()
    for state in (0, 1):
        left = np.mean(nxt[now == state] != state)
        n = np.sum(now == state)
        p = 1 - stay[state]
        assert abs(left - p) < 4 * np.sqrt(p * (1 - p) / n)
    ret, during = np.diff(np.log(s), axis=1).ravel(), r[:, 1:].ravel()
    dt = 30 / 365 / steps
    for state in (0, 1):
        got = ret[during == state].std() / np.sqrt(dt)
        assert abs(got / float(sigma[state]) - 1) < 0.05


# --- gradients -----------------------------------------------------------------------------------


def test_gbm_gradient_of_the_second_moment_matches_its_closed_form():
    mu, sigma, T = 0.05, 0.3, 1.0

    def per_path(sig, p):
        return OPS["gbm_path"].impl(p, sig, mu=mu, days=365.0, steps=5)[-1] ** 2

    grads = np.asarray(jax.jit(jax.vmap(jax.grad(per_path), (None, 0)))(sigma, MANY))
    want = 2 * sigma * T * 100.0**2 * np.exp((2 * mu + sigma**2) * T)
    assert abs(grads.mean() - want) < 4 * grads.std() / np.sqrt(grads.size)

    def moment(sig):
        return jnp.mean(jax.vmap(lambda p: per_path(sig, p))(MANY))

    eps = 1e-6
    fd = (moment(sigma + eps) - moment(sigma - eps)) / (2 * eps)
    np.testing.assert_allclose(grads.mean(), fd, rtol=1e-7)


FD_CASES = [
    ("gbm_path", (0.25, 0.03, 100.0), {}),
    ("heston_path", (0.04, 1.5, 0.05, 0.4, -0.6, 0.02, 100.0), {}),
    ("heston_path", (0.04, 1.5, 0.05, 0.4, -0.6, 0.02, 100.0), {"output": "variance"}),
    ("merton_path", (0.2, 3.0, -0.1, 0.15, 0.02, 100.0), {}),
    ("regime_path", (jnp.array([0.1, -0.2]), jnp.array([0.15, 0.45]), 100.0), {}),
]


@pytest.mark.parametrize("name,args,static", FD_CASES, ids=lambda x: str(x)[:20])
def test_every_parameter_gradient_matches_finite_differences(name, args, static):
    """On fixed paths (the noise held, Merton's counts and the regimes fixed by the key), the
    derivative of a smooth functional of the path in each tensor parameter, under jit, vmap
    and grad together."""
    ids = MANY[:100]

    def f(params):
        s = jax.vmap(lambda p: OPS[name].impl(p, *params, days=365.0, steps=8, **static))(ids)
        return jnp.mean(jnp.log1p(s[:, -1]) + 0.1 * s[:, 3])

    f = jax.jit(f)
    got = jax.grad(f)(tuple(jnp.asarray(a, jnp.float64) for a in args))
    for k, a in enumerate(args):
        a = np.asarray(a, np.float64)
        for j in np.ndindex(a.shape):
            eps = 1e-6 * max(1.0, abs(float(a[j])))
            up = [jnp.asarray(x, jnp.float64) for x in args]
            down = list(up)
            up[k], down[k] = a.copy(), a.copy()
            up[k][j] += eps
            down[k][j] -= eps
            fd = (f(tuple(up)) - f(tuple(down))) / (2 * eps)
            np.testing.assert_allclose(np.asarray(got[k])[j], fd, rtol=2e-5, atol=1e-9)


def test_merton_lam_gets_only_the_compensators_gradient():
    """∂ log S_T / ∂λ on a fixed path is −k·T (k = e^{m + s²/2} − 1): the counts stay put."""
    m, s = -0.1, 0.15

    def log_end(lam, p):
        return jnp.log(OPS["merton_path"].impl(p, 0.2, lam, m, s, days=365.0, steps=8)[-1])

    g = np.asarray(jax.vmap(jax.grad(log_end), (None, 0))(3.0, MANY[:50]))
    np.testing.assert_allclose(g, -(np.exp(m + s**2 / 2) - 1) * 1.0, rtol=1e-10)


def test_regime_states_steps_get_their_own_gradient_and_the_hybrid_mixes_by_regime():
    p = jnp.int32(11)
    r = OPS["regime_path"].impl(p, *REGIME, stay=(0.8, 0.8), steps=30, output="regime")
    assert 0 < int(r[1:].sum()) < 30  # both states occur on this path

    def log_end(mu):
        return jnp.log(OPS["regime_path"].impl(p, mu, REGIME[1], stay=(0.8, 0.8), steps=30)[-1])

    g = np.asarray(jax.grad(log_end)(REGIME[0]))
    dt = 30 / 365 / 30
    np.testing.assert_allclose(g, [np.sum(r[1:] == 0) * dt, np.sum(r[1:] == 1) * dt])
    # the hybrid: history where the regime is turbulent (1), synthetic elsewhere
    replayed, synthetic = jnp.linspace(-1, 1, 30), jnp.linspace(5, 6, 30)
    got = OPS["mix_by_regime"].impl(replayed, synthetic, r[1:])
    want = market.hybrid(r[None, 1:], replayed[None, :, None], synthetic[None, :, None], [0, 1])
    np.testing.assert_array_equal(got, np.asarray(want)[0, :, 0])
    flipped = OPS["mix_by_regime"].impl(replayed, synthetic, r[1:] == 1, history=0)
    np.testing.assert_array_equal(flipped, np.where(r[1:] == 1, synthetic, replayed))
    gs = jax.grad(lambda x: jnp.sum(OPS["mix_by_regime"].impl(replayed, x, r[1:])))(synthetic)
    np.testing.assert_array_equal(gs, np.asarray(r[1:] == 0, float))  # only the steps used


# --- located errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decl,kind,message,needle",
    [
        (
            "node c = gbm_path(path, 0.2, steps=0)",
            "shape",
            "gbm_path: steps must be from 1 to 1048576, got 0",
            "gbm_path",
        ),
        (
            "node c = merton_path(path, 0.2, 1.0, 0.0, 0.1, days=0)",
            "shape",
            "merton_path: days must be greater than 0, got 0.0",
            "merton_path",
        ),
        (
            "node c = gbm_path(path, 0.2, seed=-1)",
            "shape",
            "gbm_path: seed must be from 0 to 4294967295, got -1",
            "gbm_path",
        ),
        (
            "node c = gbm_path(x, 0.2)",
            "dtype",
            "gbm_path: path is the sample's path id, an i32 scalar; got f32",
            "x,",
        ),
        ("node c = gbm_path(path, -0.2)", "shape", "sigma must be at least 0, got -0.2", "-0.2"),
        (
            "node c = gbm_path(path, [0.2, 0.3])",
            "shape",
            "gbm_path: sigma is a scalar, got f32[2]",
            "[0.2",
        ),
        (
            "node c = heston_path(path, 0.04, 1.5, 0.04, 0.5, -0.7, steps=x)",
            "arity",
            "heston_path()'s argument 'steps' must be a literal integer",
            "x)",
        ),
        (
            'node c = heston_path(path, 0.04, 1.5, 0.04, 0.5, -0.7, output="vol")',
            "arity",
            "heston_path()'s argument 'output' must be one of",
            '"vol"',
        ),
        (
            "node c = regime_path(path, [0.1, 0.2], [0.1, 0.2], stay=[0.9, 0.9, 0.9])",
            "shape",
            "regime_path: stay is one probability per state (2), got 3",
            "regime_path",
        ),
        (
            "node c = regime_path(path, [0.1, 0.2], [0.1, 0.2], stay=1.5)",
            "shape",
            "must lie in [0, 1], got 1.5",
            "1.5",
        ),
        (
            "node c = regime_path(path, 0.1, [0.1, 0.2])",
            "shape",
            "regime_path: mu is a vector of 2, one per state, got f32",
            "0.1,",
        ),
        (
            "node c = mix_by_regime(r, r, x)",
            "dtype",
            "mix_by_regime: regime is an i32 state (or a bool) per step, got f32",
            "x)",
        ),
        (
            "node c = mix_by_regime(r, r[0:3], path)",
            "shape",
            "mix_by_regime: replayed f32[4] and simulated f32[3] differ in shape",
            "r[0:3]",
        ),
    ],
)
def test_bad_calls_are_located(decl, kind, message, needle):
    head = "input path: i32\ninput x: f32\ninput r: f32[4]\n"
    text = head + decl + "\noutput c\n"
    err = compile_error(text)
    line = head.count("\n") + 1
    assert err.kind == kind
    assert message in err.message, err.message
    assert (err.span.line, err.span.column) == (line, column_of(text, line, needle))


# --- the example ---------------------------------------------------------------------------------


def test_the_example_trains_and_its_simulator_can_be_cut_off():
    prog = ddm.load(str(EXAMPLES / "deep_hedge_sim.ddm"))
    assert prog.warnings == ()
    data = {"name": "path_ids", "n_train": 256, "n_test": 256}
    run = ddm.train(prog, data, steps=5, batch=64, plots=False)
    init = prog.init(jax.random.key(0))
    assert run.params["sigma_sim"] != init["sigma_sim"]  # the simulator learns …
    assert np.isfinite(run.metrics["test"]["loss"])
    # … unless its gradient is stopped (the plan's ablation): the policy's still flows
    text = (EXAMPLES / "deep_hedge_sim.ddm").read_text(encoding="utf-8")
    cut = ddm.loads(text.replace("(path, sigma_sim,", "(path, stop_gradient(sigma_sim),"))
    batch = {k: v[:32] for k, v in SOURCES["path_ids"].load(n_train=32, n_test=1).train.items()}
    grads = [jax.grad(lambda p, q=q: q.loss(p, batch))(init) for q in (prog, cut)]
    assert grads[0]["sigma_sim"] != 0 and grads[1]["sigma_sim"] == 0
    np.testing.assert_array_equal(grads[0]["phi"]["w0"], grads[1]["phi"]["w0"])
