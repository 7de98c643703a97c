"""One training step as a pair of pure functions over a :class:`TrainState`, optax-style:
``init(params) -> state`` and ``step(state, batch) -> (state, report)``. The host loop
(``runtime/train.py``: data, checkpoints, logging, Ctrl-C, evaluation) jits ``step`` and calls
it; nothing here touches the host. Multi-device training reuses the same step.

What a step does: the loss of the compiled product and its gradient (with the orthogonality
penalty and, for rules whose memory is boosted, the inputs' gradient from the same pass); one
optimiser update, except for the params a variant froze (``graph.frozen``), which keep their
values bit for bit whatever the optimiser (adamw's weight decay included); each decaying
Φ-rule's memory stepped; the guards' violations counted.
A step whose error-policy solve failed, or whose loss or gradient is not finite, leaves params
and optimiser state as they were (``report.ok``, ``report.finite`` tell the host why). In a
program without declarative nodes the first non-finite step is recorded in ``tally.bad`` and
every later update is held back, so the host need not look at every step.

Randomness: the step's random ops draw from ``fold_in(state.key, state.step)``.

>>> import ddm, jax, jax.numpy as jnp, optax
>>> prog = ddm.loads("input x: f32\\nparam a: f32 = 0.0\\nnode y = a - x\\noutput y\\n"
...                  "loss = mean(y ** 2)")
>>> train = make(prog.product, optax.sgd(0.25))
>>> state = train.init(prog.init(jax.random.key(0)), jax.random.key(2))
>>> state, report = train.step(state, {"x": jnp.array([1.0, 3.0])})
>>> float(report.loss), float(state.params["a"]), int(state.step)
(5.0, 1.0, 1)
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

from ddm.compiler.product import Product
from ddm.runtime import diagnostics, solver_report
from ddm.runtime.phi import PhiSetup


class Tally(NamedTuple):
    """Counters carried from step to step (int32 arrays)."""

    bad: Any  # the first step (1-based) whose loss or gradient was not finite; 0: none yet
    clipped: Any  # steps whose gradient norm exceeded clip_norm
    guards: Any  # [G]: per guard, the samples of every step that broke its limit


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: Any  # int32: steps taken
    key: Any  # the key the steps' random ops fold the step into
    tally: Tally


class StepReport(NamedTuple):
    """What the host reads after a step (device arrays)."""

    loss: Any
    grad_norm: Any
    ok: Any  # every error-policy solve succeeded
    finite: Any  # loss and gradient norm are finite
    clipped: Any
    solvers: Any  # per declarative node: solver_report.step_stats
    grads: Any  # per param: diagnostics.basic ({} with diagnostics off)
    penalty: Any  # the orthogonality penalty (0 without one)
    rules: Any  # per rule: RuleAux of the step's batch


class TrainStep(NamedTuple):
    init: Callable[..., TrainState]
    step: Callable[[TrainState, Any], tuple[TrainState, StepReport]]


def make(
    product: Product,
    optimizer,
    *,
    clip_norm: float = 0.0,
    gradient_stats: bool = True,
    phi: PhiSetup | NoPhi | None = None,
) -> TrainStep:
    """The step of training ``product``'s loss with the optax transformation ``optimizer``.

    ``clip_norm`` > 0: count the steps whose gradient norm exceeds it (the clipping itself is
    part of ``optimizer``). ``gradient_stats``: per-param gradient statistics in the report.
    ``phi``: the rules' memory, guards and orthogonality (default: none of them)."""
    import jax
    import jax.numpy as jnp
    import optax

    g = product.graph
    declarative = any(v.op == "argmin" for v in g.values)
    frozen = g.frozen  # their gradient is already zero (product.py); the update is masked here
    setup: PhiSetup | NoPhi = NoPhi() if phi is None else phi

    def objective(params, batch, key):
        loss, aux = product.loss(params, batch, key)
        penalty = jnp.zeros((), loss.dtype)
        extra = setup.penalty(params, batch, key)
        if extra is not None:
            penalty = extra
        return loss + penalty, (aux, penalty)

    def init(params, key, tally: Tally | None = None, step: int = 0) -> TrainState:
        """The state before step ``step`` (a resumed run passes its counters)."""
        if tally is None:
            tally = Tally(jnp.int32(0), jnp.int32(0), jnp.zeros(len(g.guards), jnp.int32))
        return TrainState(params, optimizer.init(params), jnp.int32(step), key, tally)

    def step(state: TrainState, batch) -> tuple[TrainState, StepReport]:
        params, opt_state, tally = state.params, state.opt_state, state.tally
        key_t = jax.random.fold_in(state.key, state.step)
        if setup.boosted:  # the loss's saliency w.r.t. the inputs, from the same backward pass
            xs = {k: batch[k] for k in setup.pool}
            (loss, (aux, penalty)), (grads, xgrads) = jax.value_and_grad(
                lambda p, x: objective(p, {**batch, **x}, key_t), argnums=(0, 1), has_aux=True
            )(params, xs)
        else:
            (loss, (aux, penalty)), grads = jax.value_and_grad(objective, has_aux=True)(
                params, batch, key_t
            )
            xgrads = {}
        updates, new_state = optimizer.update(grads, opt_state, params)
        new_params: Any = setup.remember(  # a dict of params, as ``init`` made it
            optax.apply_updates(params, updates), params, batch, xgrads
        )
        if frozen:  # a variant's frozen params keep their bits: no decay, no memory step
            new_params = {k: params[k] if k in frozen else new_params[k] for k in params}
        ok, stats = solver_report.step_stats(product, aux.solvers)
        gnorm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(gnorm)
        # A failed solve has no trustworthy gradient: under the error policy, or when NaNs of
        # the nan policy reach the loss, keep the old state (the host decides what follows,
        # checking every step). Without declarative nodes the host looks only at log steps, so
        # the first non-finite step is recorded here and the params freeze from then on: they
        # stay the last good ones, and nothing is synchronised per step.
        bad = tally.bad
        if declarative:
            apply = ok & finite
        else:
            bad = jnp.where(~finite & (bad == 0), state.step + 1, bad)
            apply = finite & (bad == 0)
        clipped = apply & (gnorm > clip_norm) if clip_norm > 0 else jnp.bool_(False)
        tally = Tally(
            bad, tally.clipped + clipped.astype(jnp.int32), tally.guards + setup.violations(aux)
        )

        def keep(new, old):
            return jax.tree.map(lambda a, b: jnp.where(apply, a, b), new, old)

        grad_stats = diagnostics.basic(grads) if gradient_stats else {}
        state = TrainState(
            keep(new_params, params), keep(new_state, opt_state), state.step + 1, state.key, tally
        )
        return state, StepReport(
            loss, gnorm, ok, finite, clipped, stats, grad_stats, penalty, aux.rules
        )

    return TrainStep(init, step)


class NoPhi:
    """A program's training without Φ-rule memory or orthogonality: guards are still counted
    (from the step's aux)."""

    boosted = False
    pool: tuple = ()

    def penalty(self, params, batch, key):
        return None

    def remember(self, new_params, params, batch, xgrads):
        return new_params

    def violations(self, aux):
        import jax.numpy as jnp

        if not aux.guards:
            return jnp.zeros((0,), jnp.int32)
        return jnp.stack([jnp.sum(x.violated > 0.5) for x in aux.guards.values()]).astype(jnp.int32)
