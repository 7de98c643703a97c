"""Lowering a declarative node: build its problem from the body, call the solver, apply policy.

The problem's body (the IR values of its objective and constraints) is evaluated as a function
of the flattened decision variable ``x`` and ``theta``, the outer values the node captures. Every
solver receives ``theta`` (or arrays computed from it) explicitly, never by closure, so implicit
differentiation reaches the params behind it.

- Classes 1 and 2 need the QP's arrays. ``P`` is assembled from the recognised quadratic atoms
  (``quad(a, M)`` → Jᵀ(M + Mᵀ)J, ``sum(a²)`` → 2JᵀJ, with J = ±I when ``a`` is ±v + c, the common
  case, so no Jacobian is formed); ``c = ∇F(0)`` by one reverse pass, exact because F is
  quadratic; constraint rows ``A = ∂g/∂x``, ``b = −g(0)`` because g is affine.
- Classes 3 and 4 receive the objective as a function ``f(x, theta)``; class 4 also the prox of
  its nonsmooth part with parameters ``omega`` (L1 weight and centre, bounds, simplex radius).
"""

from __future__ import annotations

import math
from dataclasses import replace

from ddm.compiler.binding import resolve as resolve_dim
from ddm.compiler.declarative import Problem
from ddm.library.lazy import jax, jnp
from ddm.library.precision import resolve_dtype
from ddm.library.solvers.options import SolveOptions


def solve_node(low, v, env, params, inputs, dims, batched):
    """The value of declarative node ``v`` and its solver :class:`Info` for one instance."""
    if joins(v):
        return solve_nodes(low, [v], env, params, inputs, dims, batched)[v.id]
    prob, dtype, shape, body, opts = _setup(low, v, params, inputs, dims, batched)
    theta = {str(i): env[i] for i in v.inputs}
    n, work = math.prod(shape), dtype
    if opts.dtype == "f64":
        # Classes 3 and 4 evaluate the objective inside the solve: under dtype="f64" its body
        # is evaluated in float64 too. Typed f32, each value would round to float32, and a
        # float64 solve of a float32-accurate objective cannot reach its tolerance (its
        # gradients' rounding collapsed class 4's step and passed its test ~1e-4 off x*).
        body = _Body(replace(low, x64=True), prob, shape, params, inputs, dims, batched)
        work = jnp.float64
    if prob.solver == "newton":
        x, info = _solve_smooth(body, prob, theta, n, work, opts)
    else:
        x, info = _solve_prox(body, prob, theta, n, work, opts)
    return _finish(prob, x, info, shape, dtype)


def _setup(low, v, params, inputs, dims, batched):
    """``(problem, dtype, shape, body, options)`` of declarative node ``v``."""
    prob: Problem = v.attr("problem")
    dtype = resolve_dtype(prob.var_type.dtype, low.x64)
    shape = tuple(resolve_dim(d, dims, v.span) for d in prob.var_type.shape)
    body = _Body(low, prob, shape, params, inputs, dims, batched)
    return prob, dtype, shape, body, _options(prob, low.x64)


def joins(v) -> bool:
    """Whether declarative node ``v`` may be solved together with others (:func:`solve_nodes`):
    classes 1 and 2, whose problem is arrays."""
    return v.attr("problem").solver in ("kkt", "ipm")


def solve_nodes(low, vs, env, params, inputs, dims, batched) -> dict:
    """``{id: (value, Info)}`` of the class 1/2 nodes ``vs``, none depending on another: those
    whose problems have the same solver, settings and array shapes are solved as one, their
    arrays stacked and the solver ``vmap``-ped over them. The compiled program then holds one
    copy of the solver for all of them — an interior point is the largest part of a program:
    the metrics of examples/hedge_longonly.ddm (its learned and its minimum-variance portfolio,
    1760 test days) trace and lower in 1.4 s instead of 1.9 and compile in 4.4 s of XLA instead
    of 5.8. Each instance is solved as it would be alone (an interior point's loop runs until
    every instance of the stack has stopped; a stopped one keeps its state)."""
    groups: dict = {}
    for v in vs:
        prob, dtype, shape, body, opts = _setup(low, v, params, inputs, dims, batched)
        theta = {str(i): env[i] for i in v.inputs}
        arrays = qp_arrays(body, prob, theta, math.prod(shape), dtype)
        key = (
            prob.solver,
            prob.on_infeasible,
            tuple(prob.accepted),
            opts,
            jnp.dtype(dtype).name,
            tuple((a.shape, jnp.asarray(a).dtype.name) for a in arrays),
        )
        groups.setdefault(key, []).append((v, prob, shape, dtype, arrays, opts))
    out = {}
    for members in groups.values():
        _, prob, _, _, _, opts = members[0]
        if len(members) == 1:
            xs, infos = _solve_qp(prob, members[0][4], opts)
            solved = [(xs, infos)]
        else:
            stacked = tuple(jnp.stack([m[4][k] for m in members]) for k in range(6))
            xs, infos = jax.vmap(lambda a, p=prob, o=opts: _solve_qp(p, a, o))(stacked)
            solved = [
                (xs[k], jax.tree_util.tree_map(lambda a, k=k: a[k], infos))
                for k in range(len(members))
            ]
        for (v, prob, shape, dtype, _, _), (x, info) in zip(members, solved):
            out[v.id] = _finish(prob, x, info, shape, dtype)
    return out


def _finish(prob: Problem, x, info, shape, dtype):
    x = jnp.reshape(x.astype(dtype), shape)
    # A failed instance never becomes a plausible number, whatever transformation the caller
    # applies: its value is NaN, so is every gradient it touches (the solvers' backward passes
    # are NaN for it too), and the error policy's check reports it (compiler/product.py).
    return jnp.where(jnp.isin(info.status, jnp.asarray(prob.accepted)), x, jnp.nan), info


def _options(prob: Problem, x64: bool) -> SolveOptions:
    dtype = "f64" if prob.dtype == "f64" and not x64 else None
    return SolveOptions(
        tol=prob.tol,
        max_iter=prob.max_iter,
        backward=prob.backward,
        steps=prob.steps,
        dtype=dtype,
        matrix_free=prob.matrix_free,
    )


class _Body:
    """Evaluates values of a problem's body at a point x, given the captured outer values."""

    def __init__(self, low, prob: Problem, shape, params, inputs, dims, batched):
        self.low = low
        self.prob = prob
        self.shape = shape
        self.ctx = (params, inputs, dims, batched)
        self.ids = range(*prob.body)

    def __call__(self, x, theta, roots):
        values = self.low.graph.values
        local = {int(k): a for k, a in theta.items()}
        local[self.prob.var] = jnp.reshape(x, self.shape)
        need, stack = set(), list(roots)
        while stack:
            i = stack.pop()
            if i in need or i not in self.ids or i == self.prob.var:
                continue
            need.add(i)
            stack.extend(values[i].inputs)
        for i in sorted(need):
            local[i] = self.low.value(values[i], local, *self.ctx)
        return [local[r] for r in roots]

    def coef(self, x, theta, term):
        """Π of the term's constant factors (one value: they do not depend on x)."""
        out = term.sign
        for vid, divides in term.coefs:
            (c,) = self(x, theta, [vid])
            out = out / c if divides else out * c
        return out

    def objective(self, x, theta, terms=None):
        """F(x) = Σ sign·coefs·term — the minimised objective (argmax already negated)."""
        total = 0.0
        for t in self.prob.terms if terms is None else terms:
            if t.kind == "const":
                continue
            (value,) = self(x, theta, [t.value])
            total = total + self.coef(x, theta, t) * value
        return total

    def rows(self, x, theta, constraints):
        """The constraints' g(x) stacked into one vector (each broadcast to its own type)."""
        if not constraints:
            return jnp.zeros((0,), x.dtype)
        values = self.low.graph.values
        parts = []
        for c in constraints:
            (g,) = self(x, theta, [c.value])
            shape = tuple(resolve_dim(d, self.ctx[2], c.span) for d in values[c.value].type.shape)
            parts.append(jnp.ravel(jnp.broadcast_to(jnp.asarray(g, x.dtype), shape)))
        return jnp.concatenate(parts)


def _jacobian(fn, x, rows: int):
    """∂fn/∂x of an affine map as a [rows, n] matrix: reverse mode when rows are fewer."""
    if rows == 0:
        return jnp.zeros((0, x.shape[0]), x.dtype)
    jac = jax.jacrev(fn) if rows < x.shape[0] else jax.jacfwd(fn)
    return jnp.reshape(jac(x), (rows, x.shape[0]))


def qp_arrays(body: _Body, prob: Problem, theta, n, dtype):
    """(P, c, A, b, G, h) of the quadratic program a class 1/2 node states. P is exactly
    symmetric (the solvers are told so and skip a pass over it to take its symmetric part)."""
    zero = jnp.zeros((n,), dtype)
    # c = ∇F(0). A quadratic form of v itself has no gradient at 0; differentiating it anyway
    # costs two passes over its matrix (Sᵀ·0 and S·0, which XLA may not fold: 0·NaN is NaN) —
    # at n = 50, batch 1024, more than the solve. A NaN there is caught on P instead.
    linear = _linear_terms(prob)
    c = jax.grad(lambda x: jnp.asarray(body.objective(x, theta, linear), dtype))(zero)
    P = jnp.zeros((n, n), dtype)
    for t in prob.terms:
        if t.kind not in ("quad", "sumsq"):
            continue
        k = jnp.asarray(body.coef(zero, theta, t), dtype) * t.scale
        if t.kind == "quad":
            (m,) = body(zero, theta, [t.matrix])
            m = jnp.asarray(m, dtype)
            core = m + m.T
        else:
            core = None
        if t.identity:
            block = core if core is not None else 2.0 * jnp.eye(n, dtype=dtype)
        else:
            size = math.prod(jnp.shape(body(zero, theta, [t.arg])[0])) or 1
            J = _jacobian(lambda x, t=t: jnp.ravel(body(x, theta, [t.arg])[0]), zero, size)
            block = J.T @ core @ J if core is not None else 2.0 * J.T @ J
            # a product's rounding need not be symmetric; m + mᵀ and 2I are, exactly
            block = 0.5 * (block + block.T)
        P = P + k * block
    eqs, ineqs = prob.equalities, prob.inequalities

    def affine(cons):
        rows = int(body.rows(zero, theta, cons).shape[0])
        g = lambda x: body.rows(x, theta, cons)  # noqa: E731 — affine, so ∂g is exact
        return _jacobian(g, zero, rows), -g(zero)

    A, b = affine(eqs)
    G, h = affine(ineqs)
    return P, c, A, b, G, h


def _linear_terms(prob: Problem) -> list:
    """The terms whose gradient at 0 can be non-zero: all but quadratic forms of v itself."""
    return [t for t in prob.terms if not (t.kind in ("quad", "sumsq") and t.arg == prob.var)]


def _solve_qp(prob, arrays, opts):
    P, c, A, b, G, h = arrays
    if prob.solver == "kkt":
        from ddm.library.solvers.eq_qp import eq_qp

        x, info = eq_qp(P, c, A, b, opts, symmetric=True)
    else:
        from ddm.library.solvers.qp import qp

        x, info = qp(P, c, A, b, G, h, opts, symmetric=True)
    if prob.on_infeasible == "closest":
        x, info = _closest(P, c, A, b, G, h, x, info, opts)
    return x, info


def _closest(P, c, A, b, G, h, x, info, opts):
    """Where the constraints admit no point, the closest one: the best point among those
    violating them least (``library/solvers/closest.py``)."""
    from ddm.library.solvers.closest import closest

    return closest(P, c, A, b, G, h, x, info, opts)


def _solve_smooth(body, prob, theta, n, dtype, opts):
    from ddm.library.solvers.newton import newton

    zero = jnp.zeros((n,), dtype)
    eqs = prob.equalities
    rows = int(body.rows(zero, theta, eqs).shape[0])
    g = lambda x: body.rows(x, theta, eqs)  # noqa: E731
    A, b = _jacobian(g, zero, rows), -g(zero)
    f = lambda x, th: jnp.asarray(body.objective(x, th), dtype)  # noqa: E731
    return newton(f, theta, A, b, zero, opts)


def _solve_prox(body, prob, theta, n, dtype, opts):
    from ddm.library.solvers import prox as P
    from ddm.library.solvers.implicit import poison_gradient
    from ddm.library.solvers.status import INFEASIBLE, NONFINITE, SINGULAR

    zero = jnp.zeros((n,), dtype)
    smooth = tuple(t for t in prob.terms if t.kind != "l1")
    l1 = next((t for t in prob.terms if t.kind == "l1"), None)
    omega = {}
    if l1 is not None:
        omega["lam"] = jnp.asarray(body.coef(zero, theta, l1), dtype)
        if l1.center is not None:  # absent: centre 0, which the simplex's prox relies on
            (cv,) = body(zero, theta, [l1.center])
            omega["center"] = jnp.broadcast_to(
                jnp.asarray(cv, dtype) * l1.center_sign, body.shape
            ).reshape(-1)
    forms = {c.form: c for c in prob.constraints}

    def bound(c, fill):
        if c is None:
            return jnp.full((n,), fill, dtype)
        (value,) = body(zero, theta, [c.bound])
        return jnp.broadcast_to(jnp.asarray(value, dtype), body.shape).reshape(-1)

    if "sum" in forms:
        (r,) = body(zero, theta, [forms["sum"].bound])
        omega["radius"] = jnp.asarray(r, dtype)
        prox = P.prox_l1_simplex if l1 is not None else P.proj_simplex
        x0 = jnp.full((n,), 1.0 / n, dtype) * omega["radius"]
    elif "lower" in forms or "upper" in forms:
        omega["lo"] = bound(forms.get("lower"), -jnp.inf)
        omega["hi"] = bound(forms.get("upper"), jnp.inf)
        prox = P.prox_l1_box if l1 is not None else P.proj_box
        x0 = jnp.clip(zero, omega["lo"], omega["hi"])
    else:
        prox = P.prox_l1 if l1 is not None else P.prox_none
        x0 = zero
    if prob.exact_step:
        curvature, q = _distance(body, prob, theta, zero, dtype)
        x, info = P.exact_step(curvature, q, prox, omega)
    else:
        f = lambda x, th: jnp.asarray(body.objective(x, th, smooth), dtype)  # noqa: E731
        x, info = P.prox_grad(f, theta, prox, omega, x0, opts)
        # the iterations cannot see an empty set: clipping returns the upper bound as a fixed
        # point
        empty = P.empty_set(omega) & (info.status != NONFINITE)  # as exact_step orders them
        info = info._replace(status=jnp.where(empty, INFEASIBLE, info.status).astype(jnp.int32))
        x = poison_gradient(x, ~empty)
    if l1 is None:
        return x, info
    # An L1 weight whose sign the program does not state (data, a param without `positive`) is
    # checked here: a negative one makes the problem non-convex, and the prox of a negative
    # weight pushes away from the centre — a point, finite, that minimises nothing.
    concave = jnp.any(omega["lam"] < 0) & (info.status != NONFINITE) & (info.status != INFEASIBLE)
    info = info._replace(status=jnp.where(concave, SINGULAR, info.status).astype(jnp.int32))
    return poison_gradient(x, ~concave), info


def _distance(body, prob, theta, zero, dtype):
    """(L, q) of an objective ½L‖x‖² + qᵀx + … that the compiler found to be a scaled squared
    distance (``Problem.exact_step``): L = Σ 2·coef·scale over its sums of squares of ±x + c,
    whose Hessian is 2·coef·scale·I; q = ∇F(0) of the smooth part (affine terms, and the linear
    part of each square of x + c — a square of x itself has none)."""
    terms = [t for t in prob.terms if t.kind == "sumsq"]
    curvature = sum(2.0 * t.scale * jnp.asarray(body.coef(zero, theta, t), dtype) for t in terms)
    linear = [t for t in _linear_terms(prob) if t.kind != "l1"]
    q = jax.grad(lambda x: jnp.asarray(body.objective(x, theta, linear), dtype))(zero)
    return curvature, q
