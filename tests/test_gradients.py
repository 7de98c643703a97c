"""Gradients of compiled pipelines equal gradients of their hand-written JAX equivalents.

Everything runs in float64 (``x64=True``), so compiled and hand-written losses agree to rounding
and their gradients can be compared to ``rtol=1e-10``. Each hand-written function takes the
same params pytree the program's ``init`` returns: layers as ``{"w0", "b0", "w1", "b1"}``,
positive params as their logarithm.
"""

from __future__ import annotations

import jax

_X64_BEFORE = bool(jax.config.jax_enable_x64)
jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import ddm  # noqa: E402

RTOL = 1e-10


@pytest.fixture(autouse=True, scope="module")
def _x64_on():
    """Another module may have switched float64 off since this one was imported; afterwards,
    leave the setting as it was before this module was imported."""
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", _X64_BEFORE)


def assert_trees_close(got, want, rtol=RTOL, atol=0.0):
    got_leaves, got_def = jax.tree.flatten(got)
    want_leaves, want_def = jax.tree.flatten(want)
    assert got_def == want_def, f"{got_def} != {want_def}"
    for path_got, g, w in zip(jax.tree_util.tree_leaves_with_path(got), got_leaves, want_leaves):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == np.float64, (path_got[0], g.dtype)
        assert g.shape == w.shape, (path_got[0], g.shape, w.shape)
        # a leaf's tolerance scales with the leaf's size, so that tiny entries of a large
        # gradient (e.g. exact zeros computed two ways) do not fail on rounding alone
        scale = max(np.max(np.abs(w)), 1e-300)
        np.testing.assert_allclose(
            g, w, rtol=rtol, atol=atol + rtol * scale, err_msg=jax.tree_util.keystr(path_got[0])
        )


# Random data comes from explicit jax.random keys through one fixed-size draw, compiled once and
# sliced with NumPy: drawing each shape eagerly would compile a generator per shape, which on a
# small machine costs more than the tests themselves.
POOL = 4096
_pool = jax.jit(lambda key: jax.random.normal(key, (POOL,), jnp.float64))


def normal(key, shape) -> np.ndarray:
    n = int(np.prod(shape))
    assert n <= POOL
    return np.asarray(_pool(key))[:n].reshape(shape)


def init(prog, seed: int):
    """Fresh params from ``prog.init``, compiled once (its eager random draws are slow)."""
    return jax.jit(prog.init)(jax.random.key(seed))


def perturb(params, key, scale=0.3):
    """Random params with non-zero biases (init gives zeros, whose gradients say less)."""
    leaves, treedef = jax.tree.flatten(params)
    noise = normal(key, (sum(leaf.size for leaf in leaves),))
    out, k = [], 0
    for leaf in leaves:
        step = noise[k : k + leaf.size].reshape(leaf.shape)
        out.append(jnp.asarray(np.asarray(leaf) + scale * step))
        k += leaf.size
    return jax.tree.unflatten(treedef, out)


def mlp(p, x, act, layers):
    """``apply_layer`` by hand: activation between layers, none after the last."""
    for i in range(layers):
        x = x @ p[f"w{i}"] + p[f"b{i}"]
        if i < layers - 1:
            x = act(x)
    return x


# --- (a) credit: zscore with fixed stats → mlp → sigmoid → bce ------------------------------------

CREDIT_MEAN = [56.6, 0.2285, 11.99, 0.4, 0.4, 1.0]
CREDIT_STD = [30.15, 0.1277, 6.866, 0.6313, 0.2, 1.0]

CREDIT = f"""
dim F = 6
input x: f32[F]
input y: f32
param net = mlp(F, 16, 1, act="relu")
param baseline = linear(F, 1)
node z = zscore(x, mean={CREDIT_MEAN}, std={CREDIT_STD})
node p = sigmoid(net(z)[0])
node p_logistic = sigmoid(baseline(z)[0])
output p, p_logistic
loss = bce(p, y) + bce(p_logistic, y)
"""


@jax.jit
def credit_hand_loss(params, batch):
    z = (batch["x"] - jnp.array(CREDIT_MEAN)) / (jnp.array(CREDIT_STD) + 1e-8)
    p = jax.nn.sigmoid(mlp(params["net"], z, jax.nn.relu, 2)[:, 0])
    p_log = jax.nn.sigmoid(mlp(params["baseline"], z, None, 1)[:, 0])

    def bce(p, y, eps=1e-7):
        p = jnp.clip(p, eps, 1 - eps)
        return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log1p(-p))

    return bce(p, batch["y"]) + bce(p_log, batch["y"])


def credit_batch(key, n=16):
    draws = normal(key, (n, 7))
    x = np.array(CREDIT_MEAN) + np.array(CREDIT_STD) * draws[:, :6]
    y = (draws[:, 6] > -0.25).astype(np.float64)
    return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


@pytest.fixture(scope="module")
def credit():
    return ddm.loads(CREDIT, x64=True)


def test_credit_params_are_the_documented_pytree(credit):
    params = init(credit, 0)
    assert set(params) == {"net", "baseline"}
    assert set(params["net"]) == {"w0", "b0", "w1", "b1"}
    assert params["net"]["w0"].shape == (6, 16) and params["net"]["b1"].shape == (1,)
    assert set(params["baseline"]) == {"w0", "b0"}
    assert params["net"]["w0"].dtype == jnp.float64


def test_credit_loss_and_gradient_match_hand_written(credit):
    params = perturb(init(credit, 1), jax.random.key(2))
    batch = credit_batch(jax.random.key(3))
    np.testing.assert_allclose(
        credit.loss(params, batch), credit_hand_loss(params, batch), rtol=RTOL
    )
    got = jax.grad(credit.loss)(params, batch)
    want = jax.grad(credit_hand_loss)(params, batch)
    assert_trees_close(got, want)
    assert float(jnp.abs(got["net"]["b0"]).max()) > 0  # the comparison is not vacuous


def test_credit_outputs_match_hand_written(credit):
    params = perturb(init(credit, 4), jax.random.key(5))
    batch = credit_batch(jax.random.key(6), n=5)
    out = credit.apply_batch(params, x=batch["x"])
    z = (batch["x"] - jnp.array(CREDIT_MEAN)) / (jnp.array(CREDIT_STD) + 1e-8)
    p = jax.nn.sigmoid(mlp(params["net"], z, jax.nn.relu, 2)[:, 0])
    np.testing.assert_allclose(out["p"], p, rtol=RTOL)
    one = credit.apply(params, x=batch["x"][2])
    np.testing.assert_allclose(one["p"], out["p"][2], rtol=RTOL)


# --- (b) hedge: mlp → cov with shrink → solve(2 λ Σ, b) → pnl → mean-variance ---------------------

N, W, F_H = 4, 10, 6
SHRINK, RISK = 0.1, 5.0

HEDGE = f"""
dim N = {N}
dim W = {W}
dim F = {F_H}
input x: f32[F]
input R: f32[W, N]
input r_next: f32[N]
param phi = mlp(F, 8, N, act="tanh")
param lam: f32 = 1.5 positive
node b = 1e-2 * phi(x)
node Sigma = cov(R, shrink={SHRINK}) + 1e-6 * eye(N)
node w = solve(2 * lam * Sigma, b)
node pnl = dot(w, r_next)
output w, pnl
loss = -(mean(pnl) - {RISK} * var(pnl))
"""


@jax.jit
def hedge_pnl(params, batch):
    lam = jnp.exp(params["lam"])

    def one(x, r, r_next):
        b = 1e-2 * mlp(params["phi"], x, jnp.tanh, 2)
        c = r - r.mean(axis=0)
        s = c.T @ c / (W - 1)
        sigma = (1 - SHRINK) * s + SHRINK * jnp.trace(s) / N * jnp.eye(N) + 1e-6 * jnp.eye(N)
        w = jnp.linalg.solve(2 * lam * sigma, b)
        return w, w @ r_next

    return jax.vmap(one)(batch["x"], batch["R"], batch["r_next"])


@jax.jit
def hedge_hand_loss(params, batch):
    _, pnl = hedge_pnl(params, batch)
    return -(jnp.mean(pnl) - RISK * jnp.var(pnl))


def hedge_batch(key, n=8):
    draws = normal(key, (n, F_H + W * N + N))
    return {
        "x": jnp.asarray(draws[:, :F_H]),
        "R": jnp.asarray(0.02 * draws[:, F_H : F_H + W * N].reshape(n, W, N) + 0.001),
        "r_next": jnp.asarray(0.02 * draws[:, F_H + W * N :] + 0.001),
    }


@pytest.fixture(scope="module")
def hedge():
    return ddm.loads(HEDGE, x64=True)


def test_hedge_loss_and_gradient_match_hand_written(hedge):
    params = perturb(init(hedge, 10), jax.random.key(11))
    batch = hedge_batch(jax.random.key(12))
    np.testing.assert_allclose(hedge.loss(params, batch), hedge_hand_loss(params, batch), rtol=RTOL)
    got = jax.grad(hedge.loss)(params, batch)
    want = jax.grad(hedge_hand_loss)(params, batch)
    assert_trees_close(got, want)
    assert float(jnp.abs(got["lam"])) > 0
    out = hedge.apply_batch(params, **{k: batch[k] for k in ("x", "R", "r_next")})
    w, pnl = hedge_pnl(params, batch)
    np.testing.assert_allclose(out["w"], w, rtol=1e-9)
    np.testing.assert_allclose(out["pnl"], pnl, rtol=1e-9)


def test_hedge_lambda_gradient_matches_finite_differences(hedge):
    params = perturb(init(hedge, 13), jax.random.key(14))
    batch = hedge_batch(jax.random.key(15))
    g = jax.grad(hedge.loss)(params, batch)["lam"]  # d loss / d log λ

    def loss_at(log_lam):
        return hedge.loss({**params, "lam": jnp.asarray(log_lam, jnp.float64)}, batch)

    h = 1e-4
    log_lam = float(params["lam"])
    fd = (loss_at(log_lam + h) - loss_at(log_lam - h)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    # and in λ itself: d loss / d λ = (d loss / d log λ) / λ
    lam = np.exp(log_lam)
    fd_lam = (loss_at(np.log(lam + h * lam)) - loss_at(np.log(lam - h * lam))) / (2 * h * lam)
    np.testing.assert_allclose(g / lam, fd_lam, rtol=1e-6)


# --- (c) fn, indexing, where, softmax, logsumexp, concat, batch-statistics zscore ----------------

PIPELINE = """
dim F = 4
dim K = 3
input x: f32[F]
input y: f32
param net = mlp(F, 8, K, act="tanh")
param v: f32[K] = normal(std=0.5)
param c: f32 = 0.1

fn gate(h: f32[K], t: f32) -> f32[K] {
    let s = softmax(h)
    return where(h > t, s, -s)
}

node z = ZSCORE
node h = net(z)
node g = gate(h, c)
node u = concat([g, z[1:3], h[0:1]])
node score = logsumexp(u) + dot(v, g) + h[0] * z[2]
output score, u
loss = mse(score, y)
"""
FIXED_MEAN = [0.5, -0.25, 1.0, 0.0]
FIXED_STD = [2.0, 0.5, 1.5, 1.0]


def pipeline_sample(params, z):
    """One sample, given its z-scored features."""
    h = mlp(params["net"], z, jnp.tanh, 2)
    s = jax.nn.softmax(h)
    g = jnp.where(h > params["c"], s, -s)
    u = jnp.concatenate([g, z[1:3], h[0:1]])
    score = jax.scipy.special.logsumexp(u) + jnp.dot(params["v"], g) + h[0] * z[2]
    return score, u


@jax.jit
def pipeline_batch_stats(params, x):
    z = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    return jax.vmap(pipeline_sample, in_axes=(None, 0))(params, z)


@jax.jit
def pipeline_fixed_stats(params, x):
    z = (x - jnp.array(FIXED_MEAN)) / (jnp.array(FIXED_STD) + 1e-8)
    return jax.vmap(pipeline_sample, in_axes=(None, 0))(params, z)


def pipeline_batch(key, n=12):
    draws = normal(key, (n, 5))
    return {"x": jnp.asarray(1.5 * draws[:, :4] + 0.3), "y": jnp.asarray(draws[:, 4])}


@pytest.fixture(scope="module")
def batch_stats():
    return ddm.loads(PIPELINE.replace("ZSCORE", 'zscore(x, stats="batch")'), x64=True)


@pytest.fixture(scope="module")
def fixed_stats():
    return ddm.loads(
        PIPELINE.replace("ZSCORE", f"zscore(x, mean={FIXED_MEAN}, std={FIXED_STD})"), x64=True
    )


def test_pipeline_with_batch_statistics_matches_hand_written(batch_stats):
    params = perturb(init(batch_stats, 20), jax.random.key(21))
    batch = pipeline_batch(jax.random.key(22))
    out = batch_stats.apply_batch(params, x=batch["x"])
    score, u = pipeline_batch_stats(params, batch["x"])
    assert out["u"].shape == (12, 6)
    np.testing.assert_allclose(out["u"], u, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(out["score"], score, rtol=RTOL)

    @jax.jit
    def hand_loss(params, batch):
        score, _ = pipeline_batch_stats(params, batch["x"])
        return jnp.mean(jnp.square(score - batch["y"]))

    np.testing.assert_allclose(batch_stats.loss(params, batch), hand_loss(params, batch), rtol=RTOL)
    got = jax.grad(batch_stats.loss)(params, batch)
    assert_trees_close(got, jax.grad(hand_loss)(params, batch))
    # the batch statistics are differentiated too: the gradient in x couples the samples
    gx = jax.grad(lambda x: batch_stats.loss(params, {**batch, "x": x}))(batch["x"])
    assert_trees_close(gx, jax.grad(lambda x: hand_loss(params, {**batch, "x": x}))(batch["x"]))
    # and under an outer jit
    assert_trees_close(jax.jit(jax.grad(batch_stats.loss))(params, batch), got)


def test_batch_statistics_refuse_a_single_sample(batch_stats):
    params = init(batch_stats, 23)
    with pytest.raises(Exception, match="batch"):
        batch_stats.apply(params, x=jnp.ones(4))


def test_pipeline_with_fixed_statistics_matches_hand_written(fixed_stats):
    params = perturb(init(fixed_stats, 24), jax.random.key(25))
    batch = pipeline_batch(jax.random.key(26))

    @jax.jit
    def hand_loss(params, batch):
        score, _ = pipeline_fixed_stats(params, batch["x"])
        return jnp.mean(jnp.square(score - batch["y"]))

    got = jax.grad(fixed_stats.loss)(params, batch)
    assert_trees_close(got, jax.grad(hand_loss)(params, batch))
    assert float(jnp.abs(got["c"])) == 0.0  # c only sets where's condition: no gradient
    assert float(jnp.abs(got["v"]).max()) > 0


def test_apply_composes_with_jit_and_vmap(fixed_stats):
    params = perturb(init(fixed_stats, 27), jax.random.key(28))
    x = pipeline_batch(jax.random.key(29))["x"]
    batched = fixed_stats.apply_batch(params, x=x)
    vmapped = jax.vmap(lambda xi: fixed_stats.apply(params, x=xi))(x)
    jitted = jax.jit(jax.vmap(lambda p, xi: fixed_stats.apply(p, x=xi), in_axes=(None, 0)))(
        params, x
    )
    score, u = pipeline_fixed_stats(params, x)
    for out in (batched, vmapped, jitted):
        assert set(out) == {"score", "u"}
        np.testing.assert_allclose(out["score"], batched["score"], rtol=1e-13)
        np.testing.assert_allclose(out["u"], batched["u"], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(out["score"], score, rtol=RTOL)
    one = jax.jit(lambda p, xi: fixed_stats.apply(p, x=xi))(params, x[3])
    np.testing.assert_allclose(one["score"], score[3], rtol=RTOL)

    # gradients through vmap(apply) equal those of the hand-written per-sample function
    def via_apply(p):
        return jnp.sum(jax.vmap(lambda xi: fixed_stats.apply(p, x=xi)["score"])(x) ** 2)

    @jax.jit
    def by_hand(p):
        return jnp.sum(pipeline_fixed_stats(p, x)[0] ** 2)

    assert_trees_close(jax.jit(jax.grad(via_apply))(params), jax.grad(by_hand)(params))
    # per-sample gradients: vmap of grad of apply
    per_sample = jax.vmap(
        jax.grad(lambda p, xi: fixed_stats.apply(p, x=xi)["score"]), in_axes=(None, 0)
    )(params, x)
    want = jax.jit(
        jax.vmap(jax.grad(lambda p, xi: pipeline_fixed_stats(p, xi[None])[0][0]), in_axes=(None, 0))
    )(params, x)
    assert_trees_close(per_sample, want)


# --- (d) positive params: stored as log(value), gradients chain-ruled -----------------------------

POSITIVE = """
dim F = 3
input x: f32[F]
input y: f32
param lam: f32 = 2.5 positive
param s: f32[F] = 0.5 positive
param w: f32[F] = normal(std=1.0)
node pred = lam * dot(w, x) + sum(s * x * x)
output pred
loss = mse(pred, y)
"""


def test_positive_params_are_stored_as_logs_and_chain_ruled():
    prog = ddm.loads(POSITIVE, x64=True)
    params = prog.init(jax.random.key(30))
    np.testing.assert_allclose(params["lam"], np.log(2.5), rtol=1e-15)
    np.testing.assert_allclose(params["s"], np.log([0.5, 0.5, 0.5]), rtol=1e-15)
    values = prog.param_values(params)
    np.testing.assert_allclose(values["lam"], 2.5, rtol=1e-15)
    np.testing.assert_allclose(values["s"], [0.5, 0.5, 0.5], rtol=1e-15)
    np.testing.assert_allclose(values["w"], params["w"], rtol=0)

    params = perturb(params, jax.random.key(31), scale=0.2)
    draws = normal(jax.random.key(32), (10, 4))
    batch = {"x": jnp.asarray(draws[:, :3]), "y": jnp.asarray(draws[:, 3])}

    @jax.jit
    def loss_of_values(lam, s, w):  # in the program's own terms: λ and s, not their logs
        pred = lam * batch["x"] @ w + jnp.sum(s * batch["x"] ** 2, axis=1)
        return jnp.mean((pred - batch["y"]) ** 2)

    lam, s = jnp.exp(params["lam"]), jnp.exp(params["s"])
    np.testing.assert_allclose(
        prog.loss(params, batch), loss_of_values(lam, s, params["w"]), rtol=RTOL
    )
    g = jax.grad(prog.loss)(params, batch)
    d_lam, d_s, d_w = jax.grad(loss_of_values, argnums=(0, 1, 2))(lam, s, params["w"])
    # d loss / d log λ = (d loss / d λ) · λ
    np.testing.assert_allclose(g["lam"], d_lam * lam, rtol=RTOL)
    np.testing.assert_allclose(g["s"], d_s * s, rtol=RTOL)
    np.testing.assert_allclose(g["w"], d_w, rtol=RTOL)
    out = prog.apply(params, x=batch["x"][0])
    np.testing.assert_allclose(
        out["pred"], lam * batch["x"][0] @ params["w"] + jnp.sum(s * batch["x"][0] ** 2), rtol=RTOL
    )
