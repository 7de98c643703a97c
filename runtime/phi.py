"""What the training loop does for Φ-rules beyond adding their terms to the loss (those are
program text: compiler/rules.py): the rules' memory, the orthogonality penalty and curriculum
sampling (seed §7.2–7.5; docs/language.md § Φ-rules).

- **Memory.** A rule with ``decay γ`` has a state param ``rule_NAME_memory`` (its gradient is
  stopped, so the optimiser never moves it). After each step the loop sets
  memory ← γ · memory + η · saliency, where saliency = mean|∂L/∂x| over the inputs the
  rule's trigger depends on (through any nodes), relative to the mean over every float input
  (1 = an average feature), and η is the rule's ``boost``. The values come from the step's own
  forward and backward pass.
- **Orthogonality** (``orthogonality = penalty(wrt="w", weight=μ)``): the loss gains
  μ · cos²(∂L_task/∂w, ∂L_rules/∂w) (``cosine=false``: the seed's raw ⟨·,·⟩²), so the rules
  push the decision only where the task loss is indifferent: they cannot double-count what the
  data already says.
- **Curriculum** (``curriculum = rules(strength=s, every=k)``): every k steps each training
  episode gets the weight a_i = Σ_rules weight · trigger_i, and batches are drawn with
  replacement with probability (1 − s)/n + s · a_i / Σa — episodes of the regimes the rules
  care about are seen more often (uniform where no rule fires anywhere).
"""

from __future__ import annotations

import numpy as np

from ddm.compiler.product import Product
from ddm.dsl.diagnostics import ProblemDiagnostic
from ddm.runtime.adjoints import zero_taps
from ddm.runtime.errors import ConfigDiagnostic


class PhiSetup:
    """What a training step does for the rules and guards besides the loss: the memory
    update, the guards' violation counts and the orthogonality penalty."""

    def __init__(self, product: Product, cfg, float_inputs: set[str]):
        g = product.graph
        self.product = product
        self.guards = tuple(x.name for x in g.guards)
        self.memories = []  # (param name, decay value id, boost, input features)
        for r in g.rules:
            if not r.memory or r.decay is None:
                continue
            feats = tuple(s.name for s in g.inputs_needed([r.trigger]) if s.name in float_inputs)
            if r.boost > 0 and not feats:
                raise product.locate(
                    ProblemDiagnostic(
                        r.span,
                        f"rule '{r.name}' boosts its memory by the saliency of the inputs "
                        "its condition depends on, and it depends on none",
                        hint="write the condition on the data's features, or drop boost",
                    )
                )
            self.memories.append((r.memory, r.decay, r.boost, feats))
        self.boosted = any(b > 0 for _, _, b, _ in self.memories)
        self.pool = tuple(sorted(float_inputs))
        self.decays = tuple(d for _, d, _, _ in self.memories)
        ortho = cfg.values.get("orthogonality")
        self.ortho: int | None = None
        self.ortho_weight = 0.0
        self.ortho_cosine = True
        if ortho:
            if ortho["wrt"] not in g.nodes:
                raise cfg.error(
                    "orthogonality.wrt",
                    f"the program has no node '{ortho['wrt']}'",
                    hint='name the decision node, e.g. wrt="w"',
                )
            if g.values[g.nodes[ortho["wrt"]]].stage != "sample":
                raise cfg.error(
                    "orthogonality.wrt",
                    f"'{ortho['wrt']}' is the same for every "
                    "sample (it depends on params only): the penalty compares the "
                    "two gradients at a per-sample decision",
                    hint='name the decision node, e.g. wrt="w"',
                )
            if not g.rules:
                raise cfg.error(
                    "orthogonality",
                    "the orthogonality penalty separates the "
                    "rules' gradient from the task's, and the program has no rules",
                )
            if cfg.values.get("rules") == "off":
                raise cfg.error(
                    "orthogonality",
                    "rules = off trains without the rules' "
                    "terms: there is nothing to keep orthogonal",
                    hint="drop orthogonality for the pure-DP run",
                )
            self.ortho, self.ortho_weight = g.nodes[ortho["wrt"]], ortho["weight"]
            self.ortho_cosine = ortho["cosine"]

    def violations(self, aux):
        """Per guard, how many samples of the batch broke its limit (int32 vector)."""
        import jax.numpy as jnp

        if not self.guards:
            return jnp.zeros((0,), jnp.int32)
        return jnp.stack([jnp.sum(aux.guards[name].violated > 0.5) for name in self.guards]).astype(
            jnp.int32
        )

    def penalty(self, params, batch, key):
        """The orthogonality penalty of the step (0 without one)."""

        if self.ortho is None:
            return None
        return self.ortho_weight * orthogonality(
            self.product, params, batch, self.ortho, key, self.ortho_cosine
        )

    def remember(self, new_params, params, batch, xgrads):
        """``new_params`` with each decaying rule's memory stepped (see the module doc); γ is
        evaluated at the step's params."""
        import jax.numpy as jnp

        if not self.memories:
            return new_params
        decay, _ = self.product.values(params, batch, self.decays)
        out = dict(new_params)
        sal = {k: jnp.mean(jnp.abs(x)) for k, x in xgrads.items()}
        overall = sum(sal.values()) / max(len(sal), 1) if sal else 0.0
        for name, d, boost, feats in self.memories:
            kept = decay[d] * params[name]
            if boost > 0:
                mine = sum(sal[f] for f in feats) / len(feats)
                kept = kept + boost * mine / jnp.maximum(overall, 1e-30)
            out[name] = jnp.asarray(kept, params[name].dtype)
        return out


def orthogonality(product: Product, params, batch, vid: int, key=None, cosine: bool = False):
    """⟨∂L_task/∂d, ∂L_rules/∂d⟩² at the value ``vid`` (a decision, over the batch), where
    L_rules = loss − task loss: the seed's orthogonality penalty (§7.5) that keeps the rules
    from double-counting what the task loss already says. ``cosine``: the squared cosine
    instead, in [0, 1] whatever the losses' scale. Traceable."""
    import jax
    import jax.numpy as jnp

    g = product.graph
    roots = (g.loss, g.task_loss)
    zero = zero_taps(product, params, batch, [vid], key)[vid]

    def both(tap):
        out, _ = product.values(params, batch, roots, {vid: tap}, key)
        return jnp.stack([out[g.loss], out[g.task_loss]])

    jac = jax.jacrev(both)(zero)
    task, rules = jac[1], jac[0] - jac[1]
    inner = jnp.sum(task * rules)
    if cosine:
        tiny = jnp.finfo(inner.dtype).tiny
        return inner**2 / jnp.maximum(jnp.sum(task**2) * jnp.sum(rules**2), tiny)
    return inner**2


class Curriculum:
    """Batch indices drawn ∝ the rules' weight on each episode (see the module doc)."""

    def __init__(self, product: Product, spec, n: int, batch: int, key):
        self.on = bool(spec)
        self.product, self.n, self.batch, self.key = product, n, batch, key
        self.probs: np.ndarray | None = None
        self.weights: np.ndarray | None = None
        self.refreshed = 0
        if not self.on:
            return
        g = product.graph
        if not g.rules:
            raise ConfigDiagnostic(
                None,
                "curriculum sampling weighs episodes by the rules "
                "that fire on them, and the program has no rules",
                hint="declare a rule, or drop curriculum",
            )
        self.strength, self.every = spec["strength"], spec["every"]
        self.roots = tuple(i for r in g.rules for i in (r.weight, r.trigger))

    def indices(self, step: int, params, arrays):
        import jax

        if self.probs is None or step % self.every == 0:
            self._refresh(params, arrays)
            self.refreshed += 1
        k = jax.random.fold_in(self.key, step)
        return jax.random.choice(
            k, self.n, (self.batch,), replace=True, p=jax.numpy.asarray(self.probs, np.float32)
        )

    def _values(self, params, arrays):
        import jax

        if not hasattr(self, "_jitted"):
            self._jitted = jax.jit(self.product.values, static_argnums=(2,))
        return self._jitted(params, arrays, self.roots)[0]

    def _refresh(self, params, arrays) -> None:
        values = self._values(params, arrays)

        def rows(x):  # the data's rows (training on several devices pads them: devices.py)
            x = np.asarray(x, np.float64)
            return x[: self.n] if x.ndim else x

        a = np.zeros(self.n)
        for w, t in zip(self.roots[::2], self.roots[1::2]):
            a += np.broadcast_to(rows(values[w]), (self.n,)) * rows(values[t])
        a = np.maximum(a, 0.0)
        self.weights = a
        uniform = np.full(self.n, 1.0 / self.n)
        total = a.sum()
        self.probs = (
            uniform if total <= 0 else (1 - self.strength) * uniform + self.strength * a / total
        )

    def log(self, idx) -> dict:
        """How much more rule weight the step's batch carries than a uniform one (1 = none)."""
        if self.weights is None or self.weights.mean() <= 0:
            return {"oversampling": 1.0}
        return {"oversampling": float(self.weights[np.asarray(idx)].mean() / self.weights.mean())}

    def summary(self) -> dict:
        return {
            "strength": self.strength,
            "every": self.every,
            "refreshes": self.refreshed,
            "max_probability_ratio": float(self.probs.max() * self.n)
            if self.probs is not None
            else 1.0,
        }
