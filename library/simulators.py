"""Market simulators as ops: one price path per sample, computed inside the compiled graph, so a
simulator's parameters are tensors — numbers, inputs, nodes or ``param``s the loss may train
(or that a run freezes, or that ``stop_gradient`` cuts).

A fixed key per path
--------------------
``path: i32`` names the path. Its noise comes from ``fold_in(key(seed), path)`` and step ``t``
of it from ``fold_in(fold_in(key(seed), path), t)`` — never from the training key (these ops
are not ``random`` ops: lowering hands them no key). So path ``k`` is the same bits whenever
and wherever it is evaluated: in any batch, in any order, in any program, in training and in
evaluation, for every method an experiment compares. The draws are float32 in every
precision (a float64 draw from the same key would be other numbers), so a float64 program
sees the same paths to float32's grain of the noise. In float32 path ``k`` is path ``k`` of
the host-side generators of :mod:`ddm.library.market` called with ``key(seed)`` (the same
draws in the same order). Within one compiled function a path's bits do not depend on the
batch around it; two differently compiled functions (a jit of one sample, a vmap of many) may
round the arithmetic on the same draws differently, in the last bit. ``seed`` is a
compile-time integer; the data source ``path_ids`` gives each sample its ``path`` (training
ids ``0 … n_train − 1``, test ids from ``2³⁰``: disjoint).

Time: ``steps`` steps of ``dt = days / 365 / steps`` years (``gbm_paths``' grid); the result is
``f32[steps + 1]``, the start value first. Rates and volatilities are annualised.

Gradients are pathwise (the noise held fixed):

- ``gbm_path``: exact log-normal steps, differentiable in ``sigma``, ``mu``, ``s0``;
- ``heston_path``: full-truncation Euler (``v⁺ = max(v, 0)`` in drift and diffusion),
  differentiable in every parameter almost everywhere (``max`` has a kink at 0; where the
  variance is truncated, ``√v⁺`` gets derivative 0, not NaN);
- ``merton_path``: the jump counts are Poisson draws fixed by the key (at the rate ``λ·dt``,
  the rate's gradient stopped), the jump sizes reparameterised (``n·m + √n·s·z``): the gradient
  flows to ``sigma``, ``mu``, ``jump_mean``, ``jump_std``, ``s0``, and to ``lam`` only through
  the drift's compensator ``λ·k`` — the counts are piecewise constant in ``λ``, so this is the
  derivative of the path, not of an expectation over the counts;
- ``regime_path``: the chain's path is fixed by the key (``stay`` is a compile-time number: the
  chain is piecewise constant in it, its derivative zero), each state's ``mu`` and ``sigma``
  are differentiable.

>>> import jax.numpy as jnp
>>> s = _gbm_path(jnp.int32(3), 0.2, days=30.0, steps=30)
>>> s.shape, float(s[0])
((31,), 100.0)
>>> bool((s == _gbm_path(jnp.int32(3), 0.2, days=30.0, steps=30)).all())
True
"""

from __future__ import annotations

from ddm.library.lazy import jax, jnp, lax
from ddm.library.op import Arg, Op
from ddm.library.types import DtypeError, ShapeError, TensorType

YEAR = 365.0  # days in a year: dt = days / YEAR / steps, as gbm_paths
MAX_STEPS = 1 << 20  # a path is one sample's value: a million steps is already a lot of memory
SEED_MAX = 2**32 - 1  # jax.random.key keeps 32 bits of a seed

# --- shape rules ---------------------------------------------------------------------------------


def _check_static(name: str, static) -> None:
    steps, days, seed = static["steps"], static["days"], static["seed"]
    if not 1 <= steps <= MAX_STEPS:
        raise ShapeError(
            f"{name}: steps must be from 1 to {MAX_STEPS}, got {steps}",
            hint="the number of time steps; the path has steps + 1 prices",
        )
    if not days > 0:
        raise ShapeError(
            f"{name}: days must be greater than 0, got {days}",
            hint="the path's length in calendar days: dt = days / 365 / steps years",
        )
    if not 0 <= seed <= SEED_MAX:
        raise ShapeError(f"{name}: seed must be from 0 to {SEED_MAX}, got {seed}")


def _path_arg(name: str, t: TensorType) -> None:
    if t.dtype != "i32" or t.ndim != 0:
        raise DtypeError(
            f"{name}: path is the sample's path id, an i32 scalar; got {t}",
            arg=0,
            hint="give each sample an id: the data source path_ids provides input path: i32",
        )


def _float_dtype(name: str, types, names, start: int = 1, shapes=None) -> str:
    """The result's float dtype from the numeric parameters ``types`` (scalars unless
    ``shapes`` says otherwise): their non-weak float dtype, else f32."""
    floats = set()
    for i, (t, what) in enumerate(zip(types, names), start=start):
        want = shapes.get(what, ()) if shapes else ()
        if t.dtype == "bool":
            raise DtypeError(f"{name}: {what} is a number, got {t}", arg=i)
        if tuple(t.shape) != want:
            shown = "a scalar" if not want else f"a vector of {want[0]}, one per state"
            raise ShapeError(f"{name}: {what} is {shown}, got {t}", arg=i)
        if t.is_float and not t.weak:
            floats.add(t.dtype)
    if len(floats) > 1:
        raise DtypeError(
            f"{name}: parameters of mixed precision ({', '.join(sorted(floats))})",
            hint="cast them to one float type with f32(...) or f64(...)",
        )
    return floats.pop() if floats else "f32"


def _scalar_rule(name: str, names: tuple[str, ...]):
    def rule(types, static):
        path, *rest = types
        _path_arg(name, path)
        dtype = _float_dtype(name, rest, names)
        _check_static(name, static)
        return TensorType(dtype, (static["steps"] + 1,))

    return rule


def _regime_rule(types, static):
    path, *rest = types
    _path_arg("regime_path", path)
    dtype = _float_dtype(
        "regime_path", rest, ("mu", "sigma", "s0"), shapes={"mu": (2,), "sigma": (2,)}
    )
    _check_static("regime_path", static)
    stay = static["stay"]
    if isinstance(stay, tuple) and len(stay) != 2:
        raise ShapeError(
            f"regime_path: stay is one probability per state (2), got {len(stay)}",
            hint="stay=[0.99, 0.95] (calm, turbulent), or one number for both",
        )
    if static["start"] not in (0, 1):
        raise ShapeError(f"regime_path: start is the first state, 0 or 1; got {static['start']}")
    return TensorType("i32" if static["output"] == "regime" else dtype, (static["steps"] + 1,))


def _mix_rule(types, static):
    replayed, simulated, regime = types
    for i, t in enumerate((replayed, simulated)):
        if not t.is_float:
            raise DtypeError(f"mix_by_regime mixes floats (log-returns), got {t}", arg=i)
    if tuple(replayed.shape) != tuple(simulated.shape):
        raise ShapeError(
            f"mix_by_regime: replayed {replayed} and simulated {simulated} differ in shape",
            arg=1,
            hint="one value per step in both: e.g. log-returns f32[N]",
        )
    if regime.dtype not in ("i32", "bool"):
        raise DtypeError(
            f"mix_by_regime: regime is an i32 state (or a bool) per step, got {regime}",
            arg=2,
            hint='e.g. regime_path(path, …, output="regime")[1:], or i32(vol > 0.3)',
        )
    if regime.ndim > replayed.ndim or tuple(regime.shape) != tuple(replayed.shape[: regime.ndim]):
        raise ShapeError(
            f"mix_by_regime: regime {regime} must index the leading axes of {replayed}",
            arg=2,
            hint="one regime per step",
        )
    dtype = replayed.dtype if not replayed.weak else simulated.dtype
    if replayed.dtype != simulated.dtype and not (replayed.weak or simulated.weak):
        raise DtypeError(f"mix_by_regime: {replayed} and {simulated} are of mixed precision", arg=1)
    return TensorType(dtype, tuple(replayed.shape))


# --- implementations -----------------------------------------------------------------------------


def _dtype(*args):
    """The float dtype a path is computed in: the parameters' (the default float when they are
    Python numbers or integers)."""
    f = jnp.result_type(*args)
    return f if jnp.issubdtype(f, jnp.floating) else jnp.result_type(float)


def _normal(key, shape, f):
    """Standard normals drawn in float32 whatever the path's precision, then cast: a float32
    and a float64 draw from one key are different numbers, and a path must not change with
    the precision of the program (or of the process) that asks for it."""
    return jax.random.normal(key, shape, jnp.float32).astype(f)


def _sqrt(x):
    """``√x`` for ``x ≥ 0`` with derivative 0 at ``x = 0`` (where the truncated variance sits)
    instead of ``∞ · 0 = NaN``: the double-``where`` keeps the unused branch's gradient finite."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def _scan(step, state0, path, seed: int, steps: int):
    """``step(state, key_t) -> (state, out)`` over ``steps`` steps of path ``path``: key
    ``fold_in(fold_in(key(seed), path), t)`` at step ``t``, as
    :func:`ddm.library.market.paths.simulate` draws path ``path``."""
    path_key = jax.random.fold_in(jax.random.key(seed), path)

    def body(state, t):
        return step(state, jax.random.fold_in(path_key, t))

    return lax.scan(body, state0, jnp.arange(steps))


def _with_start(start, values):
    return jnp.concatenate([jnp.reshape(start, (1,)).astype(values.dtype), values])


def _dt(days: float, steps: int) -> float:
    return days / YEAR / steps  # T / steps with T = days / 365, as the host sources


def _gbm_path(path, sigma, mu=0.0, s0=100.0, days=30.0, steps=30, seed=0):
    """``[steps + 1]`` prices under dS/S = μ dt + σ dW, exact log-normal steps:
    log S ← log S + (μ − σ²/2)dt + σ√dt·z."""
    f = _dtype(sigma, mu, s0)
    sigma, mu, s0 = (jnp.asarray(a, f) for a in (sigma, mu, s0))
    dt = _dt(days, steps)
    drift = (mu - 0.5 * sigma**2) * dt
    vol = sigma * jnp.sqrt(dt)

    def step(log_s, k):
        # a vector of one draw: the host's correlated generator draws (A,) per step
        log_s = log_s + drift + vol * _normal(k, (1,), f)[0]
        return log_s, log_s

    _, logs = _scan(step, jnp.log(s0), path, seed, steps)
    return _with_start(s0, jnp.exp(logs))


def _heston_path(
    path,
    v0,
    kappa,
    theta,
    xi,
    rho,
    mu=0.0,
    s0=100.0,
    days=30.0,
    steps=30,
    seed=0,
    output="price",
):
    """``[steps + 1]`` prices (or variances v⁺) under dS/S = μ dt + √v dW₁, dv = κ(θ − v)dt +
    ξ√v dW₂, Corr = ρ; full-truncation Euler in logs (see :func:`ddm.library.market.heston`)."""
    f = _dtype(v0, kappa, theta, xi, rho, mu, s0)
    v0, kappa, theta, xi, rho, mu, s0 = (
        jnp.asarray(a, f) for a in (v0, kappa, theta, xi, rho, mu, s0)
    )
    dt = _dt(days, steps)
    root = jnp.sqrt(1.0 - rho**2)  # NaN for |ρ| > 1: a correlation outside [−1, 1]

    def step(state, k):
        log_s, v = state
        z1, zp = _normal(k, (2,), f)
        z2 = rho * z1 + root * zp
        vp = jnp.maximum(v, 0.0)
        log_s = log_s + (mu - 0.5 * vp) * dt + _sqrt(vp * dt) * z1
        v = v + kappa * (theta - vp) * dt + xi * _sqrt(vp * dt) * z2
        return (log_s, v), (log_s, v)

    _, (logs, vs) = _scan(step, (jnp.log(s0), v0), path, seed, steps)
    if output == "variance":
        return jnp.maximum(_with_start(v0, vs), 0.0)  # what the price steps see
    return _with_start(s0, jnp.exp(logs))


def _merton_path(
    path, sigma, lam, jump_mean, jump_std, mu=0.0, s0=100.0, days=30.0, steps=30, seed=0
):
    """``[steps + 1]`` prices under dS/S = (μ − λk)dt + σ dW + (J − 1)dN, log J ~ N(m, s²),
    k = e^{m + s²/2} − 1 (so E[S_t] = S₀e^{μt}); per step n ~ Poisson(λdt) jumps of total log
    size n·m + √n·s·z (see :func:`ddm.library.market.merton`)."""
    f = _dtype(sigma, lam, jump_mean, jump_std, mu, s0)
    s0, mu, sigma, lam, m, s = (
        jnp.asarray(a, f) for a in (s0, mu, sigma, lam, jump_mean, jump_std)
    )
    dt = _dt(days, steps)
    k = jnp.exp(m + 0.5 * s**2) - 1.0
    drift = (mu - lam * k - 0.5 * sigma**2) * dt
    vol = sigma * jnp.sqrt(dt)
    rate = lax.stop_gradient(lam * dt)  # the counts are integers: no derivative in the rate

    def step(log_s, key_t):
        kz, kn, kj = jax.random.split(key_t, 3)
        n = jax.random.poisson(kn, rate.astype(jnp.float32)).astype(f)
        jump = n * m + jnp.sqrt(n) * s * _normal(kj, (), f)
        log_s = log_s + drift + vol * _normal(kz, (), f) + jump
        return log_s, log_s

    _, logs = _scan(step, jnp.log(s0), path, seed, steps)
    return _with_start(s0, jnp.exp(logs))


def _regime_path(
    path,
    mu,
    sigma,
    s0=100.0,
    stay=0.98,
    start=0,
    days=30.0,
    steps=30,
    seed=0,
    output="price",
):
    """``[steps + 1]`` prices (or the i32 regimes) of a two-state Markov chain that stays in
    state ``r`` with probability ``stay[r]`` per step, each step a GBM step with ``mu[r]``,
    ``sigma[r]``. The regime moves first: step ``t`` (from date t to t + 1) runs in
    ``regime[t + 1]``; ``regime[0] = start`` (see :func:`ddm.library.market.regime`)."""
    f = _dtype(mu, sigma, s0)
    mu, sigma, s0 = (jnp.asarray(a, f) for a in (mu, sigma, s0))
    p = stay if isinstance(stay, tuple) else (stay, stay)
    # the chain is drawn in float32 as the noise is (it has no derivative to keep)
    logits = jnp.log(jnp.asarray([[p[0], 1.0 - p[0]], [1.0 - p[1], p[1]]], jnp.float32))
    dt = _dt(days, steps)

    def step(state, k):
        log_s, r = state
        kr, kz = jax.random.split(k)
        r = jax.random.categorical(kr, logits[r]).astype(jnp.int32)
        log_s = (
            log_s
            + (mu[r] - 0.5 * sigma[r] ** 2) * dt
            + sigma[r] * jnp.sqrt(dt) * _normal(kz, (), f)
        )
        return (log_s, r), (log_s, r)

    r0 = jnp.asarray(start, jnp.int32)
    _, (logs, rs) = _scan(step, (jnp.log(s0), r0), path, seed, steps)
    if output == "regime":
        return _with_start(r0, rs)
    return _with_start(s0, jnp.exp(logs))


def _mix_by_regime(replayed, simulated, regime, history=1):
    """Per step, ``replayed`` where ``regime == history``, else ``simulated`` (the host's
    :func:`ddm.library.market.hybrid` with ``use_history[history] = True``)."""
    regime = jnp.asarray(regime)
    pick = regime == (bool(history) if regime.dtype == jnp.bool_ else history)
    pick = jnp.reshape(pick, pick.shape + (1,) * (jnp.ndim(replayed) - pick.ndim))
    return jnp.where(pick, replayed, simulated)


# --- records -------------------------------------------------------------------------------------

TIME = (
    Arg("days", "float", 30.0),
    Arg("steps", "int", 30),
    Arg("seed", "int", 0),
)
PRICE = (Arg("mu", "tensor", 0.0), Arg("s0", "tensor", 100.0))
KEYED = (
    " Path k's noise is fold_in(key(seed), k), never the training key: the same path id gives "
    "the same bits in every batch, program and method. steps steps of days / 365 / steps "
    "years; → [steps + 1], the start first."
)

OPS = (
    Op(
        "gbm_path",
        (Arg("path"), Arg("sigma")) + PRICE + TIME,
        _scalar_rule("gbm_path", ("sigma", "mu", "s0")),
        _gbm_path,
        "One geometric Brownian motion price path (exact log-normal steps) for the sample's "
        "path id (i32). sigma, mu, s0 are scalar tensors — numbers, inputs or params — and the "
        "path is differentiable in them (reparameterised)." + KEYED,
        family="simulator",
        extra={"nonnegative": ("sigma", "s0")},
    ),
    Op(
        "heston_path",
        (
            Arg("path"),
            Arg("v0"),
            Arg("kappa"),
            Arg("theta"),
            Arg("xi"),
            Arg("rho"),
        )
        + PRICE
        + TIME
        + (Arg("output", "str", "price", choices=("price", "variance")),),
        _scalar_rule("heston_path", ("v0", "kappa", "theta", "xi", "rho", "mu", "s0")),
        _heston_path,
        "One Heston stochastic-volatility path (full-truncation Euler, log price): the "
        'prices, or with output="variance" the variance v⁺ = max(v, 0) the steps used (the '
        "same draws: call it twice with the same path). Differentiable in every parameter; "
        "rho in [-1, 1] (NaN outside)." + KEYED,
        family="simulator",
        extra={"nonnegative": ("v0", "kappa", "theta", "xi", "s0")},
    ),
    Op(
        "merton_path",
        (Arg("path"), Arg("sigma"), Arg("lam"), Arg("jump_mean"), Arg("jump_std")) + PRICE + TIME,
        _scalar_rule("merton_path", ("sigma", "lam", "jump_mean", "jump_std", "mu", "s0")),
        _merton_path,
        "One Merton jump-diffusion path (log-normal jumps of mean jump_mean and sd jump_std at "
        "intensity lam per year, compensated: E[S_t] = s0·e^(mu·t)). The jump counts are fixed "
        "by the key; the path is differentiable in sigma, mu, s0 and the jump sizes, and in "
        "lam only through the compensator (the counts are integers)." + KEYED,
        family="simulator",
        extra={"nonnegative": ("sigma", "lam", "jump_std", "s0")},
    ),
    Op(
        "regime_path",
        (
            Arg("path"),
            Arg("mu"),
            Arg("sigma"),
            Arg("s0", "tensor", 100.0),
            Arg("stay", "probs", 0.98),
            Arg("start", "int", 0),
        )
        + TIME
        + (Arg("output", "str", "price", choices=("price", "regime")),),
        _regime_rule,
        _regime_path,
        "One path of a two-state regime-switching market: a Markov chain that stays in state r "
        "with probability stay[r] per step (a literal, or one number for both) from state "
        "start, each step a GBM step with mu[r], sigma[r] (f32[2] tensors, differentiable). "
        'output="regime" gives the i32 states (regime[t + 1] drives step t). The chain is '
        "fixed by the key: no gradient to stay." + KEYED,
        family="simulator",
        extra={"nonnegative": ("s0",)},
    ),
    Op(
        "mix_by_regime",
        (Arg("replayed"), Arg("simulated"), Arg("regime"), Arg("history", "int", 1)),
        _mix_rule,
        _mix_by_regime,
        "The plan's hybrid simulator (§6.2): per step the replayed historical value where "
        "regime == history (default 1, the turbulent state: real microstructure where it "
        "matters), the simulated one elsewhere. regime (i32 or bool) indexes the leading axes "
        "of replayed and simulated; the gradient reaches the steps each side supplies.",
        family="mix",
    ),
)
