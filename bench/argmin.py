"""Declarative nodes against the hand-written floor and the peers, on batched Markowitz problems.

Each instance (float64): ``min_v λ·vᵀΣv − bᵀv`` subject to

- ``budget``:    ``sum(v) == 1``                      (ddm class 1: one KKT solve)
- ``long_only``: ``sum(v) == 1, v >= 0``              (ddm class 2: interior point)
- ``box``:       ``sum(v) == 1, v >= 0, v <= 0.2``    (class 2, twice the inequalities)

with Σ a random SPD covariance and b random per instance, λ = 1, for n = 10, 50 and batch
1, 64, 1024. The loss that the backward differentiates is ``L = Σ_batch (c·w + ‖w‖²)`` with
a random ``c``: forward+backward is ``jax.value_and_grad`` of L w.r.t. (Σ, b, c).

Methods (all jitted, timed warm, ``block_until_ready``, median of repeats):

- ``ddm``: the node through the language — ``ddm.loads(PROGRAM, x64=True)``; forward =
  ``jax.jit(prog.product.apply_batch)`` (outputs and solver infos in the aux); forward+backward
  = ``jax.jit(jax.value_and_grad(loss, argnums=1))`` with ``loss = prog.product.loss(…)[0]``.
- ``hand`` (budget only; the floor): a ``jax.custom_vjp`` KKT solve written for this problem —
  one Cholesky of P = λ(Σ + Σᵀ), two triangular solve pairs and a scalar Schur complement
  forward; the backward reuses the factor (one more solve pair). vmapped.
- ``jaxopt``: ``EqualityConstrainedQP(tol=1e-10)`` for budget; ``BoxOSQP(tol=1e-8,
  maxiter=20000)`` for the inequality problems (``l ≤ [1ᵀ; I]·v ≤ u``); both differentiate
  implicitly (jaxopt's own rule). vmapped.
- ``qpax``: ``qpax.solve_qp_primal(…, solver_tol=1e-8, target_kappa=1e-8, max_iter=50)``
  (primal–dual interior point, OptNet-style backward at a κ-relaxed point; κ = 1e-8 so the
  gradient is the exact one, not qpax's default smoothed κ = 1e-3). qpax's backward fails with
  no inequality, so for budget a vacuous row ``0ᵀv ≤ 1`` is passed. vmapped.
- ``cvxpylayers``: ``CvxpyLayer`` (JAX interface, diffcp + SCS with ``eps=1e-9``: SCS's default
  1e-4 leaves errors ~1e-3, 1e-10 stalls at n = 50) on the DPP form ``sum_squares(M v) − bᵀv``
  with ``M = chol(λ·sym Σ)ᵀ`` computed in JAX; eager (diffcp solves on the host, not
  jittable). At batch 1024 it is timed on the first ``CVXPY_CAP`` instances and scaled
  linearly (marked ≈).

Timing: each jitted function is compiled and called once, then timed in up to 9 blocks of
≥ 30 ms of calls, the methods taking turns; a slow one gets as many blocks as fit in 5 s (one
slower than 5 s keeps a single call: jaxopt's OSQP at n = 50, batch 1024).

Gradient check, on a few instances of each size: central finite differences (h = 1e-6) of the
*exact* solution map — an active-set KKT solve in NumPy, its active set taken from a
high-accuracy solve and verified (primal and dual feasibility, strict complementarity) — for
every entry of b and Σ; each method's error = max |g − g_fd| / max |g_fd| for b and for Σ,
and its solution error max |w − w_exact|.

Memory: ``temp_size_in_bytes`` of the compiled forward+backward of the long-only node with
``using ipm(max_iter=k)`` and ``backward implicit`` vs ``backward unroll(k)``, k = 10, 100,
1000 (n = 50, batch 64), and the class-4 prox node with an L1 term, likewise.
"""

from __future__ import annotations

import statistics
import time
import traceback
from typing import Callable

LAM = 1.0
UPPER = 0.2  # the box variant's upper bound
# (n, batches) per problem; --quick: n = 10, batch 64, and no box variant
SIZES = {
    "budget": ((10, (1, 64, 1024)), (50, (1, 64, 1024))),
    "long_only": ((10, (1, 64, 1024)), (50, (1, 64, 1024))),
    "box": ((10, (64,)), (50, (1024,))),  # the variant: one size each keeps the run short
}
QUICK_SIZES = {"budget": ((10, (64,)),), "long_only": ((10, (64,)),), "box": ()}
CVXPY_CAP = 256  # cvxpylayers at batch 1024: timed on this many instances, scaled linearly
GRAD_INSTANCES = 3
GRAD_BATCH = 64  # the gradient check uses instances of this batch (else of the largest)
FD_STEP = 1e-6
MEMORY_ITERS = (10, 100, 1000)
QUICK_MEMORY_ITERS = (10, 100)
MEMORY_N, MEMORY_BATCH = 50, 64

# Targets (reported, not asserted)
TARGET_EQ_VS_HAND = 1.2  # budget: ddm fwd+bwd ≤ 1.2 × the hand-written solve
TARGET_EQ_VS_CVXPY = 50.0  # budget: ddm ≥ 50× faster than cvxpylayers
TARGET_LONG_ONLY_S = 0.5  # long-only, n = 50, batch 1024, fwd+bwd ≤ 0.5 s
TARGET_GRAD_REL = 1e-4  # … with gradients matching FD to 1e-4
TARGET_MEMORY_FLAT = 1.1  # implicit backward temp memory, k = 1000 vs k = 10
SOLUTION_ATOL = 1e-6  # ddm's solution vs the exact one: the correctness check

CONSTRAINTS = {
    "budget": "sum(v) == 1",
    "long_only": "sum(v) == 1, v >= 0",
    "box": f"sum(v) == 1, v >= 0, v <= {UPPER}",
}

PROGRAM = """\
dim N
input b: f32[N]
input S: f32[N, N]
input c: f32[N]
param lam: f32 = {lam} positive
node w = argmin v: f32[N] {{ lam * quad(v, S) - dot(b, v) }} subject to {{ {cons} }}{using}
output w
loss = sum(c * w) + sum(w * w)
"""

PROX_PROGRAM = """\
dim N
input b: f32[N]
input S: f32[N, N]
input c: f32[N]
node w = argmin v: f32[N] {{ quad(v, S) - dot(b, v) + 0.01 * sum(abs(v)) }}
    subject to {{ v >= 0 }}{using}
output w
loss = sum(c * w) + sum(w * w)
"""

METHODS = ("ddm", "hand", "jaxopt", "qpax", "cvxpylayers")


def program_text(problem: str, using: str = "") -> str:
    return PROGRAM.format(lam=LAM, cons=CONSTRAINTS[problem], using=using)


# --- data ----------------------------------------------------------------------------------------


def make_data(n: int, batch: int, seed: int = 0):
    """Σ = F Fᵀ/(2n) + 0.05·I (F: n × 2n standard normal), b ~ N(0, 0.5²), c ~ N(0, 1)."""
    import numpy as np

    rng = np.random.default_rng([seed, n, batch])
    F = rng.normal(size=(batch, n, 2 * n))
    S = F @ F.transpose(0, 2, 1) / (2 * n) + 0.05 * np.eye(n)
    b = 0.5 * rng.normal(size=(batch, n))
    c = rng.normal(size=(batch, n))
    return S, b, c


def _bounds(problem: str, n: int):
    import numpy as np

    lo = None if problem == "budget" else np.zeros(n)
    hi = np.full(n, UPPER) if problem == "box" else None
    return lo, hi


# --- the exact reference (NumPy, float64) ---------------------------------------------------------


def exact_solution(S, b, problem: str, active=None):
    """The exact minimiser of one instance given its active set ``active`` (a vector: −1 at the
    lower bound, +1 at the upper bound, 0 free); with ``active=None`` the set is found by
    cvxpy/Clarabel at tight tolerance, then verified. Returns ``(w, active, margin)`` where
    ``margin`` ≥ 0 is the smallest of the free coordinates' distance to their bounds and the
    active bounds' multipliers (0 → degenerate: finite differences may cross a kink)."""
    import numpy as np

    n = b.shape[0]
    P = LAM * (S + S.T)
    q = -b
    lo, hi = _bounds(problem, n)
    if active is None:
        active = np.zeros(n, int)
        if problem != "budget":
            x = _clarabel(P, q, lo, hi)
            active[x < 1e-7] = -1
            if hi is not None:
                active[x > hi - 1e-7] = 1
    fixed = np.zeros(n)
    if lo is not None:
        fixed[active == -1] = lo[active == -1]
    if hi is not None:
        fixed[active == 1] = hi[active == 1]
    free = active == 0
    k = int(free.sum())
    Pf = P[np.ix_(free, free)]
    qf = q[free] + P[np.ix_(free, ~free)] @ fixed[~free]
    K = np.zeros((k + 1, k + 1))
    K[:k, :k], K[:k, k], K[k, :k] = Pf, 1.0, 1.0
    try:
        sol = np.linalg.solve(K, np.concatenate([-qf, [1.0 - fixed[~free].sum()]]))
    except np.linalg.LinAlgError:  # no free coordinate: the bounds alone meet the budget
        return fixed, active, 0.0
    w = fixed.copy()
    w[free] = sol[:k]
    nu = sol[k]
    g = P @ w + q + nu  # = μ_lo − μ_up on the active coordinates
    margins = [np.inf]
    if lo is not None:
        margins += list(w[free] - lo[free]) + list(g[active == -1])
    if hi is not None:
        margins += list(hi[free] - w[free]) + list(-g[active == 1])
    return w, active, float(min(margins))


def _clarabel(P, q, lo, hi):
    import cvxpy as cp
    import numpy as np

    n = q.shape[0]
    v = cp.Variable(n)
    cons: list[cp.Constraint] = [v.sum() == 1]
    if lo is not None:
        cons.append(v >= lo)
    if hi is not None:
        cons.append(v <= hi)
    L = np.linalg.cholesky(0.5 * (P + P.T))
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L.T @ v) + q @ v), cons)
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    return np.asarray(v.value)


def instance_loss(w, c) -> float:
    import numpy as np

    return float(np.dot(c, w) + np.dot(w, w))


def fd_gradients(S, b, c, problem: str):
    """Central differences of ``c·w + ‖w‖²`` for every entry of b and of Σ (one instance), on
    the exact solution map with the active set held fixed (valid: the margin is checked)."""
    import numpy as np

    w, active, margin = exact_solution(S, b, problem)
    h = FD_STEP
    gb = np.zeros_like(b)
    for i in range(b.shape[0]):
        e = np.zeros_like(b)
        e[i] = h
        gb[i] = (
            instance_loss(exact_solution(S, b + e, problem, active)[0], c)
            - instance_loss(exact_solution(S, b - e, problem, active)[0], c)
        ) / (2 * h)
    gS = np.zeros_like(S)
    for i, j in np.ndindex(S.shape):
        E = np.zeros_like(S)
        E[i, j] = h
        gS[i, j] = (
            instance_loss(exact_solution(S + E, b, problem, active)[0], c)
            - instance_loss(exact_solution(S - E, b, problem, active)[0], c)
        ) / (2 * h)
    return w, gb, gS, margin


def pick_instances(S, b, c, problem: str, k: int):
    """The first ``k`` instances whose active set is non-degenerate (margin > 1e-5)."""
    out = []
    for i in range(S.shape[0]):
        _, _, margin = exact_solution(S[i], b[i], problem)
        if margin > 1e-5:
            out.append(i)
        if len(out) == k:
            break
    return out


# --- the methods ---------------------------------------------------------------------------------


class Method:
    """``solve(S, b) -> w`` over a batch (jittable unless ``eager``), its forward and
    forward+backward callables on given data, built once per size."""

    name: str
    eager = False

    def solve(self, S, b):
        """The batch: ``one(P, q)`` per instance, P = λ(Σ + Σᵀ), q = −b (min ½vᵀPv + qᵀv)."""
        import jax
        import jax.numpy as jnp

        P = LAM * (S + jnp.swapaxes(S, -1, -2))
        return jax.vmap(self.one)(P, -b)

    def one(self, P, q):
        raise NotImplementedError

    def forward(self):
        import jax

        return jax.jit(self.solve)

    def loss(self, S, b, c):
        import jax.numpy as jnp

        w = self.solve(S, b)
        return jnp.sum(c * w) + jnp.sum(w * w)

    def forward_backward(self):
        import jax

        return jax.jit(jax.value_and_grad(self.loss, argnums=(0, 1, 2)))

    def grads(self, S, b, c):
        """(w, dL/dS, dL/db) on a small batch, for the gradient check."""

        w = self.forward()(S, b)
        _, (gS, gb, _) = self.forward_backward()(S, b, c)
        return w, gS, gb


class DdmNode(Method):
    name = "ddm"

    def __init__(self, problem: str, n: int, using: str = ""):
        import jax

        import ddm

        self.prog = ddm.loads(program_text(problem, using), x64=True)
        self.params = self.prog.init(jax.random.key(0), N=n)

    def forward(self):
        import jax

        apply = jax.jit(self.prog.product.apply_batch)
        params = self.params
        return lambda S, b: apply(params, {"b": b, "S": S})

    def forward_backward(self):
        import jax

        loss = self.prog.product.loss
        vg = jax.jit(jax.value_and_grad(lambda p, b, f=loss: f(p, b)[0], argnums=1))
        params = self.params

        def run(S, b, c):
            value, g = vg(params, {"b": b, "S": S, "c": c})
            return value, (g["S"], g["b"], g["c"])

        return run


def hand_budget_solver():
    """The floor: ``min ½xᵀPx + qᵀx s.t. 1ᵀx = 1`` for one instance, ``jax.custom_vjp``.

    Forward: P = LLᵀ; y₁ = P⁻¹(−q), y₂ = P⁻¹1, ν = (1ᵀy₁ − 1)/(1ᵀy₂), x = y₁ − νy₂.
    Backward (KKT matrix K = [[P, 1], [1ᵀ, 0]] is symmetric): solve K u = (x̄, 0) with the same
    factor — z = P⁻¹x̄, u_ν = 1ᵀz/(1ᵀy₂), u_x = z − u_ν y₂ — then q̄ = −u_x and
    P̄ = −sym(u_x xᵀ)."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.linalg import cho_solve

    def forward(P, q):
        L = jnp.linalg.cholesky(P)
        ones = jnp.ones_like(q)
        y = cho_solve((L, True), jnp.stack([-q, ones], axis=1))
        y1, y2 = y[:, 0], y[:, 1]
        s = jnp.sum(y2)
        x = y1 - (jnp.sum(y1) - 1.0) / s * y2
        return x, (L, y2, s, x)

    @jax.custom_vjp
    def solve(P, q):
        return forward(P, q)[0]

    def bwd(res, xbar):
        L, y2, s, x = res
        z = cho_solve((L, True), xbar)
        u = z - jnp.sum(z) / s * y2
        Pbar = -0.5 * (jnp.outer(u, x) + jnp.outer(x, u))
        return Pbar, -u

    solve.defvjp(forward, bwd)
    return solve


class Hand(Method):
    name = "hand"

    def __init__(self, problem: str, n: int):
        assert problem == "budget"
        self.one = hand_budget_solver()


class JaxoptMethod(Method):
    name = "jaxopt"

    def __init__(self, problem: str, n: int):
        import jaxopt  # pyright: ignore[reportMissingImports]  # the bench extra
        import numpy as np

        self.problem = problem
        self.n = n
        if problem == "budget":
            self.qp = jaxopt.EqualityConstrainedQP(tol=1e-10)
        else:
            self.qp = jaxopt.BoxOSQP(tol=1e-8, maxiter=20000)
            self.C = np.concatenate([np.ones((1, n)), np.eye(n)])
            lo, hi = _bounds(problem, n)
            assert lo is not None  # every problem but budget has v >= 0
            self.l = np.concatenate([[1.0], lo])
            self.u = np.concatenate([[1.0], hi if hi is not None else np.full(n, np.inf)])

    def one(self, P, q):
        import jax.numpy as jnp
        import jaxopt  # pyright: ignore[reportMissingImports]

        if self.problem == "budget":
            A = jnp.ones((1, self.n), P.dtype)
            return self.qp.run(
                params_obj=(P, q), params_eq=(A, jnp.ones((1,), P.dtype))
            ).params.primal
        C = jnp.asarray(self.C, P.dtype)
        assert isinstance(self.qp, jaxopt.BoxOSQP)  # every problem but budget (__init__)
        sol = self.qp.run(
            params_obj=(P, q),
            params_eq=C,
            params_ineq=(jnp.asarray(self.l, P.dtype), jnp.asarray(self.u, P.dtype)),
        )
        return sol.params.primal[0]


class QpaxMethod(Method):
    name = "qpax"

    def __init__(self, problem: str, n: int):
        import numpy as np

        self.A, self.be = np.ones((1, n)), np.ones(1)
        if problem == "budget":
            # qpax's backward reduces over the inequalities: give it one that never binds
            self.G, self.h = np.zeros((1, n)), np.ones(1)
        else:
            lo, hi = _bounds(problem, n)
            assert lo is not None  # every problem but budget has v >= 0
            G, h = [-np.eye(n)], [-lo]
            if hi is not None:
                G.append(np.eye(n))
                h.append(hi)
            self.G, self.h = np.concatenate(G), np.concatenate(h)

    def one(self, P, q):
        import jax.numpy as jnp
        import qpax

        # qpax takes JAX arrays (what its jnp operations would make of the NumPy constants)
        A, be, G, h = (jnp.asarray(a) for a in (self.A, self.be, self.G, self.h))
        return qpax.solve_qp_primal(
            P, q, A, be, G, h, solver_tol=1e-8, target_kappa=1e-8, max_iter=50
        )


class CvxpyLayersMethod(Method):
    name = "cvxpylayers"
    eager = True
    solver_args = {"eps": 1e-9}  # 1e-10: SCS stalls at n = 50 ("Solved/Inaccurate")

    def __init__(self, problem: str, n: int):
        import cvxpy as cp
        from cvxpylayers.jax import CvxpyLayer

        v = cp.Variable(n)
        M = cp.Parameter((n, n))
        bp = cp.Parameter(n)
        cons: list[cp.Constraint] = [v.sum() == 1]
        lo, hi = _bounds(problem, n)
        if lo is not None:
            cons.append(v >= lo)
        if hi is not None:
            cons.append(v <= hi)
        prob = cp.Problem(cp.Minimize(cp.sum_squares(M @ v) - bp @ v), cons)
        assert prob.is_dpp()
        self.layer = CvxpyLayer(prob, parameters=[M, bp], variables=[v])

    def solve(self, S, b):
        import jax.numpy as jnp

        # λ vᵀΣv = ‖Mv‖² with MᵀM = λ·sym(Σ): M = chol(λ·sym Σ)ᵀ
        R = jnp.linalg.cholesky(LAM * 0.5 * (S + jnp.swapaxes(S, -1, -2)))
        (w,) = self.layer(jnp.swapaxes(R, -1, -2), b, solver_args=self.solver_args)
        return w

    def forward(self):
        return self.solve

    def forward_backward(self):
        import jax

        return jax.value_and_grad(self.loss, argnums=(0, 1, 2))


def build(method: str, problem: str, n: int) -> Method | None:
    if method == "ddm":
        return DdmNode(problem, n)
    if method == "hand":
        return Hand(problem, n) if problem == "budget" else None
    if method == "jaxopt":
        return JaxoptMethod(problem, n)
    if method == "qpax":
        return QpaxMethod(problem, n)
    if method == "cvxpylayers":
        return CvxpyLayersMethod(problem, n)
    raise ValueError(method)


# --- timing --------------------------------------------------------------------------------------


def _call(fn, args):
    import jax

    return jax.block_until_ready(fn(*args))


def time_calls(
    fns: dict[str, tuple[Callable, tuple]], repeats: int, block_s: float, budget_s: float
) -> dict[str, list[float]]:
    """Seconds per call of each ``fn(*args)`` (each already called once: compiled and warm).

    A probe call sizes the blocks (enough calls to last ~``block_s``); then up to ``repeats``
    blocks, the functions taking turns (rotating order) so that load drift hits all alike. A
    slow function gets fewer blocks, as many as fit in ``budget_s`` (at least one); one slower
    than ``budget_s`` keeps its probe as its only sample."""
    per, times = {}, {k: [] for k in fns}
    for k, (fn, args) in fns.items():
        t0 = time.perf_counter()
        _call(fn, args)
        per[k] = max(time.perf_counter() - t0, 1e-7)
    calls = {k: max(1, min(int(block_s / per[k]), 1000)) for k in fns}
    blocks = {
        k: 0 if per[k] > budget_s else max(1, min(repeats, int(budget_s / per[k]))) for k in fns
    }
    for k in fns:
        if blocks[k] < 3:
            times[k].append(per[k])
    names = list(fns)
    for r in range(repeats):
        shift = r % len(names)
        for k in names[shift:] + names[:shift]:
            if r >= blocks[k]:
                continue
            fn, args = fns[k]
            t0 = time.perf_counter()
            for _ in range(calls[k]):
                out = fn(*args)
            _block(out)
            times[k].append((time.perf_counter() - t0) / calls[k])
    return times


def _block(out):
    import jax

    jax.block_until_ready(out)


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# --- one problem ---------------------------------------------------------------------------------


def run_problem(problem: str, quick: bool, log: Callable[[str], None]) -> dict:

    sizes = (QUICK_SIZES if quick else SIZES)[problem]
    repeats = 5 if quick else 9
    block_s = 0.01 if quick else 0.03
    budget_s = 1.0 if quick else 5.0  # per function: slow peers get fewer repeats
    cases, grad_checks, errors = [], {}, {}
    for n, batches in sizes:
        built: dict[str, Method] = {}
        for m in METHODS:
            try:
                meth = build(m, problem, n)
            except Exception as err:  # a method that cannot even be built: say why
                errors[f"{m} n={n}"] = _err(err)
                continue
            if meth is not None:
                built[m] = meth

        for batch in batches:
            S, b, c = make_data(n, batch)
            case = {"n": n, "batch": batch, "methods": {}}
            jitted = {}
            for m, meth in built.items():
                if meth.eager:
                    continue
                try:
                    t0 = time.perf_counter()
                    fwd, fb = meth.forward(), meth.forward_backward()
                    _call(fwd, (S, b))
                    compile_fwd = time.perf_counter() - t0
                    t0 = time.perf_counter()
                    _call(fb, (S, b, c))
                    compile_fb = time.perf_counter() - t0
                    jitted[m] = (fwd, fb)
                    case["methods"][m] = {
                        "compile_and_first_call_s": {
                            "forward": compile_fwd,
                            "forward_backward": compile_fb,
                        }
                    }
                except Exception as err:
                    errors[f"{m} n={n} batch={batch}"] = _err(err)
            fns = {}
            for m, (fwd, fb) in jitted.items():
                fns[(m, "forward")] = (fwd, (S, b))
                fns[(m, "forward_backward")] = (fb, (S, b, c))
            times = time_calls(fns, repeats, block_s, budget_s)
            for (m, kind), ts in times.items():
                case["methods"][m][f"{kind}_s"] = statistics.median(ts)
                case["methods"][m][f"{kind}_s_all"] = ts
                case["methods"][m][f"{kind}_s_min"] = min(ts)
            if "ddm" in jitted:
                case["ddm_solver"] = _info_summary(jitted["ddm"][0](S, b)[1])
            if "cvxpylayers" in built:
                case["methods"]["cvxpylayers"] = _time_cvxpy(
                    built["cvxpylayers"], S, b, c, quick, errors, n, batch, warm=batch == batches[0]
                )
            if batch == (GRAD_BATCH if GRAD_BATCH in batches else batches[-1]):
                grad_checks[str(n)] = grad_check(problem, built, jitted, S, b, c, errors, n)
                log(
                    f"    n={n} gradient check: "
                    + ", ".join(
                        f"{m} b {v['grad_b_rel_err']:.1e} Σ {v['grad_S_rel_err']:.1e}"
                        for m, v in grad_checks[str(n)]["methods"].items()
                    )
                )
            cases.append(case)
            log(
                f"    n={n} batch={batch}: "
                + ", ".join(
                    f"{m} {_fmt(v.get('forward_s'))}/{_fmt(v.get('forward_backward_s'))}"
                    for m, v in case["methods"].items()
                )
            )
    return _summarise(problem, cases, grad_checks, errors, quick)


def grad_check(problem, built, jitted, S, b, c, errors, n) -> dict:
    """Each method's solution and gradients on ``GRAD_INSTANCES`` non-degenerate instances of
    this batch (the jitted functions just timed; the loss is a sum over instances, so an
    instance's gradient is its own) against central differences of the exact solution map."""
    import numpy as np

    idx = pick_instances(S, b, c, problem, GRAD_INSTANCES)
    ref = [fd_gradients(S[i], b[i], c[i], problem) for i in idx]
    w_ref = np.stack([r[0] for r in ref])
    gb_fd = np.stack([r[1] for r in ref])
    gS_fd = np.stack([r[2] for r in ref])
    checks = {}
    for m, meth in built.items():
        try:
            if m in jitted:
                fwd, fb = jitted[m]
                w = fwd(S, b)
                w = w[0]["w"] if m == "ddm" else w
                _, (gS, gb, _) = fb(S, b, c)
                w, gS, gb = (np.asarray(a)[idx] for a in (w, gS, gb))
            elif meth.eager:
                w, gS, gb = meth.grads(S[idx], b[idx], c[idx])
            else:
                continue
            checks[m] = {
                "solution_abs_err": float(np.max(np.abs(np.asarray(w) - w_ref))),
                "grad_b_rel_err": _rel(gb, gb_fd),
                "grad_S_rel_err": _rel(gS, gS_fd),
            }
        except Exception as err:
            errors[f"{m} n={n} grad check"] = _err(err)
    return {"instances": idx, "min_margin": min(r[3] for r in ref), "methods": checks}


def _time_cvxpy(meth: Method, S, b, c, quick, errors, n, batch, warm: bool) -> dict:
    cap = CVXPY_CAP if batch > CVXPY_CAP else batch
    if quick and batch > 64:
        return {"skipped": "quick"}
    Sc, bc, cc = S[:cap], b[:cap], c[:cap]
    out = {"measured_batch": cap, "scaled": cap != batch}
    reps = 1 if cap >= CVXPY_CAP else 3
    try:
        fwd, fb = meth.forward(), meth.forward_backward()
        for kind, fn, args in (("forward", fwd, (Sc, bc)), ("forward_backward", fb, (Sc, bc, cc))):
            if warm:  # the layer's first call (per size) pays one-off set-up costs
                _call(fn, args)
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                _call(fn, args)
                ts.append((time.perf_counter() - t0) * batch / cap)
            out[f"{kind}_s"] = statistics.median(ts)
            out[f"{kind}_s_all"] = ts
    except Exception as err:
        errors[f"cvxpylayers n={n} batch={batch}"] = _err(err)
    return out


def _info_summary(aux) -> dict:
    """The node's statuses, iterations and worst residual, from ``apply_batch``'s aux."""
    import numpy as np

    from ddm.library.solvers.status import STATUS_NAMES

    out = {}
    for info in aux.solvers.values():
        status = np.asarray(info.status).ravel()
        out = {
            "statuses": {STATUS_NAMES[s]: int((status == s).sum()) for s in np.unique(status)},
            "iterations_max": int(np.max(info.iterations)),
            "iterations_median": float(np.median(info.iterations)),
            "residual_max": float(np.max(info.residual)),
        }
    return out


def _err(err: Exception) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    where = f" ({tb[-1].filename.split('/')[-1]}:{tb[-1].lineno})" if tb else ""
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}{where}"[:400]


def _fmt(s) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.0f}µs"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    return f"{s:.2f}s"


def _summarise(problem, cases, grad_checks, errors, quick) -> dict:
    """Ratios vs ddm, target checks and the correctness flag."""
    for case in cases:
        ddm = case["methods"].get("ddm", {})
        for v in case["methods"].values():
            for kind in ("forward", "forward_backward"):
                if f"{kind}_s" in v and f"{kind}_s" in ddm:
                    v[f"{kind}_ratio_to_ddm"] = v[f"{kind}_s"] / ddm[f"{kind}_s"]
    r = {
        "name": f"argmin.{problem}",
        "kind": "peers",
        "problem": problem,
        "constraints": CONSTRAINTS[problem],
        "lam": LAM,
        "cases": cases,
        "grad_check": grad_checks,
        "errors": errors,
    }
    ddm_checks = [g["methods"].get("ddm") for g in grad_checks.values()]
    r["ddm_max_grad_rel_err"] = max(
        (max(d["grad_b_rel_err"], d["grad_S_rel_err"]) for d in ddm_checks if d), default=None
    )
    r["ddm_max_solution_err"] = max((d["solution_abs_err"] for d in ddm_checks if d), default=None)
    # every timed instance converged, and the checked ones are the exact solution
    r["ddm_all_converged"] = bool(cases) and all(
        set(c.get("ddm_solver", {}).get("statuses", {"missing": 1})) == {"converged"} for c in cases
    )
    r["correct"] = (
        r["ddm_max_solution_err"] is not None
        and r["ddm_max_solution_err"] <= SOLUTION_ATOL
        and r["ddm_all_converged"]
    )
    big = max(cases, key=lambda c: (c["n"], c["batch"])) if cases else None
    r["headline"] = {"n": big["n"], "batch": big["batch"]} if big else None
    if big is None:
        return r
    ddm = big["methods"].get("ddm", {})
    fb = ddm.get("forward_backward_s")
    if problem == "budget":
        hand = big["methods"].get("hand", {}).get("forward_backward_s")
        cvx = big["methods"].get("cvxpylayers", {}).get("forward_backward_s")
        r["ratio_to_hand"] = fb / hand if fb and hand else None
        r["speedup_vs_cvxpylayers"] = cvx / fb if fb and cvx else None
        # ratios over all sizes (the target holds for every size, the headline is the largest)
        r["ratio_to_hand_all"] = {
            f"{c['n']}x{c['batch']}": (
                c["methods"]["ddm"]["forward_backward_s"]
                / c["methods"]["hand"]["forward_backward_s"]
            )
            for c in cases
            if "forward_backward_s" in c["methods"].get("ddm", {})
            and "forward_backward_s" in c["methods"].get("hand", {})
        }
        r["meets_target"] = bool(
            r["ratio_to_hand"]
            and r["ratio_to_hand"] <= TARGET_EQ_VS_HAND
            and (
                r["speedup_vs_cvxpylayers"] is None
                or r["speedup_vs_cvxpylayers"] >= TARGET_EQ_VS_CVXPY
            )
        )
    else:
        r["forward_backward_s"] = fb
        at50 = [c for c in cases if c["n"] == 50 and c["batch"] == 1024]
        r["target_applies"] = bool(at50) and problem == "long_only"
        grad_ok = (
            r["ddm_max_grad_rel_err"] is not None and r["ddm_max_grad_rel_err"] <= TARGET_GRAD_REL
        )
        r["meets_target"] = bool(fb and fb <= TARGET_LONG_ONLY_S and grad_ok)
    return r


# --- memory: implicit vs unrolled backward -----------------------------------------------------


def run_memory(quick: bool, log: Callable[[str], None]) -> dict:
    import jax

    import ddm

    iters = QUICK_MEMORY_ITERS if quick else MEMORY_ITERS
    n, batch = (10, 16) if quick else (MEMORY_N, MEMORY_BATCH)
    S, b, c = make_data(n, batch, seed=2)
    data = {"b": b, "S": S, "c": c}
    rows, errors = {}, {}
    nodes = {
        "long_only ipm": lambda k, mode: program_text(
            "long_only", f" using ipm(max_iter={k}) backward {mode}"
        ),
        "prox l1": lambda k, mode: PROX_PROGRAM.format(
            using=f" using prox(max_iter={k}) backward {mode}"
        ),
    }
    if quick:  # the interior point only
        nodes.pop("prox l1")
    for node, text_of in nodes.items():
        for mode in ("implicit", "unroll"):
            for k in iters:
                key = f"{node} {mode}"
                label = mode if mode == "implicit" else f"unroll({k})"
                try:
                    prog = ddm.loads(text_of(k, label), x64=True, strict=False)
                    params = prog.init(jax.random.key(0), N=n)
                    t0 = time.perf_counter()
                    loss = prog.product.loss
                    compiled = (
                        jax.jit(jax.value_and_grad(lambda p, b, f=loss: f(p, b)[0], argnums=1))
                        .lower(params, data)
                        .compile()
                    )
                    mem = compiled.memory_analysis()
                    if mem is None:
                        raise RuntimeError("no memory analysis on this backend")
                    rows.setdefault(key, {})[str(k)] = {
                        "temp_bytes": int(mem.temp_size_in_bytes),
                        "compile_s": time.perf_counter() - t0,
                    }
                except Exception as err:
                    errors[f"{key} k={k}"] = _err(err)
            if key in rows:
                log(
                    f"    {key}: "
                    + ", ".join(
                        f"k={k} {v['temp_bytes'] / 2**20:.2f} MiB" for k, v in rows[key].items()
                    )
                )
    r = {
        "name": "argmin.memory",
        "kind": "memory",
        "n": n,
        "batch": batch,
        "iters": list(iters),
        "temp_bytes": rows,
        "errors": errors,
    }
    growth = {}
    for key, per in rows.items():
        ks = [str(k) for k in iters if str(k) in per]
        if len(ks) >= 2:
            growth[key] = per[ks[-1]]["temp_bytes"] / max(per[ks[0]]["temp_bytes"], 1)
    r["growth"] = growth  # temp bytes at the largest k / at the smallest
    implicit = [v for k, v in growth.items() if k.endswith("implicit")]
    r["meets_target"] = bool(implicit) and max(implicit) <= TARGET_MEMORY_FLAT
    return r


# --- entry points --------------------------------------------------------------------------------

NAMES = ("budget", "long_only", "box", "memory")


def run(quick: bool = False, only: str | None = None) -> list[dict]:
    import sys

    import jax

    jax.config.update("jax_enable_x64", True)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out = []
    for name in NAMES:
        if only and only not in ("argmin", name, f"argmin.{name}"):
            continue
        if name in SIZES and not (QUICK_SIZES if quick else SIZES)[name]:
            continue  # --quick leaves the box variant out
        log(f"  argmin.{name} …")
        t0 = time.perf_counter()
        r = run_memory(quick, log) if name == "memory" else run_problem(name, quick, log)
        r["duration_s"] = time.perf_counter() - t0
        out.append(r)
    return out


# --- printing (called by ddm.bench.__main__) ------------------------------------------------------


def _t(s) -> str:
    if s is None:
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1.0:
        return f"{s * 1e3:.2f} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s:.2f} s"


def _headline(r: dict) -> dict:
    h = r.get("headline") or {}
    return next(
        (c for c in r["cases"] if c["n"] == h.get("n") and c["batch"] == h.get("batch")),
        {"methods": {}},
    )


def row(r: dict) -> tuple[str, str, str, str, str, str]:
    """One summary line for the main table: (benchmark, measured, reference, ratio, target,
    status); the size and the other figures are in :func:`notes` and :func:`print_details`."""
    ok = "[green]ok[/]" if r.get("meets_target") else "[yellow]over[/]"
    check = "[green]solution ok[/]" if r.get("correct", True) else "[red]WRONG SOLUTION[/]"
    name = r["name"]
    if name == "argmin.memory":
        imp = [v for k, v in r["growth"].items() if k.endswith("implicit")]
        unr = [v for k, v in r["growth"].items() if k.endswith("unroll")]
        status = ok if not r["errors"] else f"{ok}, [red]{len(r['errors'])} errors[/]"
        return (
            name,
            "implicit " + " / ".join(f"{v:.2f}×" for v in imp),
            "unroll " + " / ".join(f"{v:.1f}×" for v in unr),
            f"k {r['iters'][0]} → {r['iters'][-1]}",
            f"≤ {TARGET_MEMORY_FLAT}×",
            status,
        )
    ms = _headline(r)["methods"]
    fb = ms.get("ddm", {}).get("forward_backward_s")
    if r["problem"] == "budget":
        hand = ms.get("hand", {}).get("forward_backward_s")
        ratio = f"{r['ratio_to_hand']:.2f}× hand" if r.get("ratio_to_hand") else "—"
        return (
            name,
            f"{_t(fb)} f+b",
            f"{_t(hand)} (hand)",
            ratio,
            f"≤ {TARGET_EQ_VS_HAND}× hand",
            f"{ok}, {check}",
        )
    qp = ms.get("qpax", {}).get("forward_backward_s")
    ratio = f"{fb / TARGET_LONG_ONLY_S:.2f} × target" if fb else "—"
    if r["problem"] == "long_only":
        return (
            name,
            f"{_t(fb)} f+b",
            f"{_t(qp)} (qpax)",
            ratio,
            f"≤ {TARGET_LONG_ONLY_S} s",
            f"{ok}, {check}",
        )
    return (name, f"{_t(fb)} f+b", f"{_t(qp)} (qpax)", "—", "—", f"info, {check}")


def notes(r: dict) -> str | None:
    if r["name"] == "argmin.memory":
        text = (
            f"{r['name']}: temp_size_in_bytes of the compiled jit(value_and_grad(loss)), "
            f"n={r['n']}, batch {r['batch']}; growth = bytes at k={r['iters'][-1]} / at "
            f"k={r['iters'][0]} (implicit: {', '.join(k for k in r['growth'] if 'implicit' in k)})"
        )
    else:
        h = r.get("headline") or {}
        text = (
            f"{r['name']}: min λ·vᵀΣv − bᵀv s.t. {r['constraints']} (float64); ddm "
            f"forward+backward at n={h.get('n')}, batch {h.get('batch')}"
        )
        if r["problem"] == "budget":
            sp = r.get("speedup_vs_cvxpylayers")
            text += (
                f"; {sp:.0f}× faster than cvxpylayers (target ≥ {TARGET_EQ_VS_CVXPY:.0f}×)"
                if sp
                else "; cvxpylayers not measured"
            )
            if r.get("ratio_to_hand_all"):
                text += "; ddm/hand by n×batch: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in r["ratio_to_hand_all"].items()
                )
        if r.get("ddm_max_grad_rel_err") is not None:
            text += (
                f"; ddm gradient vs FD {r['ddm_max_grad_rel_err']:.1e}"
                + (f" (target ≤ {TARGET_GRAD_REL:g})" if r["problem"] == "long_only" else "")
                + f", solution error {r['ddm_max_solution_err']:.1e}"
            )
    if r.get("errors"):
        text += f"; {len(r['errors'])} errors (listed below)"
    return text


def print_details(results: list[dict], console) -> None:
    """The per-method tables: times, ratios to ddm, gradient errors; and the memory table."""
    from rich.table import Table

    for r in results:
        if r.get("kind") == "peers":
            table = Table(
                title=f"{r['name']}: min λ·vᵀΣv − bᵀv s.t. {r['constraints']} "
                f"(float64) — forward / forward+backward, ratio = method / ddm"
            )
            for col in ("n", "batch", "method", "forward", "ratio", "fwd+bwd", "ratio", "note"):
                table.add_column(col, justify="left" if col in ("method", "note") else "right")
            for case in r["cases"]:
                for m in METHODS:
                    v = case["methods"].get(m)
                    if v is None:
                        continue
                    note = ""
                    if m == "cvxpylayers":
                        if v.get("skipped"):
                            note = f"skipped ({v['skipped']})"
                        elif v.get("scaled"):
                            note = f"≈ measured on {v['measured_batch']}, scaled"
                    if m == "ddm" and case.get("ddm_solver"):
                        s = case["ddm_solver"]
                        note = (
                            f"{', '.join(f'{k} {c}' for k, c in s['statuses'].items())}; "
                            f"iters ≤ {s['iterations_max']}"
                        )
                    table.add_row(
                        str(case["n"]),
                        str(case["batch"]),
                        m,
                        _t(v.get("forward_s")),
                        _ratio(v.get("forward_ratio_to_ddm")),
                        _t(v.get("forward_backward_s")),
                        _ratio(v.get("forward_backward_ratio_to_ddm")),
                        note,
                    )
                table.add_section()
            console.print(table)
            grad = Table(
                title=f"{r['name']}: gradient check vs central differences of the exact "
                f"solution map (h = {FD_STEP:g}), {GRAD_INSTANCES} instances"
            )
            for col in ("n", "method", "max |w − w*|", "rel err dL/db", "rel err dL/dΣ"):
                grad.add_column(col, justify="left" if col == "method" else "right")
            for n, g in r["grad_check"].items():
                for m, v in g["methods"].items():
                    grad.add_row(
                        n,
                        m,
                        f"{v['solution_abs_err']:.1e}",
                        f"{v['grad_b_rel_err']:.1e}",
                        f"{v['grad_S_rel_err']:.1e}",
                    )
                grad.add_section()
            console.print(grad)
        elif r.get("kind") == "memory":
            table = Table(
                title=f"{r['name']}: temp bytes of compiled forward+backward "
                f"(n={r['n']}, batch {r['batch']})"
            )
            table.add_column("node, backward", justify="left")
            for k in r["iters"]:
                table.add_column(f"k={k}", justify="right")
            table.add_column("growth", justify="right")
            for key, per in r["temp_bytes"].items():
                table.add_row(
                    key,
                    *[
                        (f"{per[str(k)]['temp_bytes'] / 2**20:.2f} MiB" if str(k) in per else "—")
                        for k in r["iters"]
                    ],
                    f"{r['growth'].get(key, float('nan')):.2f}×",
                )
            console.print(table)
        for k, v in r.get("errors", {}).items():
            console.print(f"[red]• {r['name']} {k}: {v}[/]", highlight=False)


def _ratio(x) -> str:
    return "—" if x is None else f"{x:.2f}×"
