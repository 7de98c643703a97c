"""Ablations as typed rewrites of the compiled graph: a :class:`Variant` names what to change,
:func:`apply` changes exactly that in the :class:`~ddm.compiler.ir.Graph` (never in the
program's text), :func:`describe` says in words what changed, computed from the graph.

The rewrites, applied in this order (each a small pure function over a graph):

- ``substitute=[NODE…]``: the node becomes an input of the same name and type, read from the
  data; what it was computed from is no longer computed for it (a two-stage baseline feeds its
  predicted returns ``b`` into the same decision node this way);
- ``soft_guards=[(GUARD, weight)…]``: the guard is no longer enforced — its node takes the value
  it had before the guard (``X_before_GUARD``) — and every loss gains
  ``weight · mean over the batch of relu(guard_GUARD_excess)²``, where ``guard_GUARD_excess`` is
  how far the decision before the guard breaks the limit (the largest LHS − RHS over its
  elements, in the limit's units). The guard's ``violated`` and ``breached`` checks stay
  measured (``breached`` now counts the decisions the penalty failed to keep inside);
- ``stop_gradient=[NODE…]``: the node's value passes through ``jax.lax.stop_gradient`` once
  computed (also inside a scan's step); nothing upstream learns through it;
- ``rules``: ``"all"`` (as written), ``"off"`` (:meth:`Graph.without_rules`: measured, not
  trained on) or the names of the rules to keep: every loss becomes its task loss plus the kept
  rules' ``mean(rule_NAME_term)``; the others are measured, not trained on;
- ``loss=NAME``: the named loss is trained (:meth:`Graph.with_loss`);
- ``freeze=[PARAM…]``: the param gets no gradient (every evaluation reads it through
  ``stop_gradient``) and training leaves it bit-identical to its initial value whatever the
  optimiser, weight decay included (``graph.frozen``, read by ``runtime/train_step.py``).

Rewrites keep the IR well formed: ids stay positions, new values (a penalty, a rebuilt loss) are
appended after everything they read, typed by their op's shape rule, at the stage they live in.
A name the program does not have, or a rewrite that makes no sense (freezing an input, stopping
the gradient at one, softening a guard twice), is a :class:`DataDiagnostic` naming what exists.

>>> from ddm.compiler.driver import front_end
>>> g, _ = front_end("input x: f32\\nparam a: f32 = 1.0\\nnode y = a * x\\noutput y\\n"
...                  "loss = mean(y ** 2)", "v.ddm")
>>> held = apply(g, Variant("held", stop_gradient=("y",)))
>>> held.values[held.nodes["y"]].stopped, g.values[g.nodes["y"]].stopped
(True, False)
>>> describe(g, Variant("held", stop_gradient=("y",)))
['stop_gradient after node y (v.ddm:3): no gradient reaches param a through it; params left \
without any gradient path: a']
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

from ddm.compiler import gradflow
from ddm.compiler.ir import STOP_GRADIENT, Graph, InputSpec, Value, reachable
from ddm.dsl.diagnostics import DataDiagnostic
from ddm.dsl.span import Span
from ddm.library import OPS
from ddm.library.types import SymDim, TensorType

KEYS = ("stop_gradient", "freeze", "loss", "soft_guards", "rules", "substitute")
BATCH = SymDim("batch")  # the lifted axis, as the checker writes it


@dataclass(frozen=True)
class Variant:
    """One ablation of a program: what :func:`apply` rewrites (module doc). Lists given as
    lists become tuples, ``soft_guards`` may be a mapping ``{guard: weight}``."""

    name: str
    stop_gradient: tuple[str, ...] = ()
    freeze: tuple[str, ...] = ()
    loss: str | None = None
    soft_guards: tuple[tuple[str, float], ...] = ()
    rules: str | tuple[str, ...] = "all"  # "all" | "off" | the names of the rules kept
    substitute: tuple[str, ...] = ()

    def __post_init__(self):
        # a frozen record still normalises what it is given: lists from YAML or Python
        for key in ("stop_gradient", "freeze", "substitute"):
            object.__setattr__(self, key, tuple(getattr(self, key)))
        guards = self.soft_guards
        pairs = guards.items() if isinstance(guards, Mapping) else guards
        object.__setattr__(self, "soft_guards", tuple((str(g), float(w)) for g, w in pairs))
        if not isinstance(self.rules, str):
            object.__setattr__(self, "rules", tuple(self.rules))

    @property
    def unchanged(self) -> bool:
        """Whether the variant rewrites nothing (the program as written)."""
        return not (
            self.stop_gradient
            or self.freeze
            or self.loss
            or self.soft_guards
            or self.rules != "all"
            or self.substitute
        )


# --- the entry points ----------------------------------------------------------------------------
def apply(graph: Graph, variant: Variant) -> Graph:
    """``graph`` rewritten as ``variant`` says (module doc); ``graph`` itself is unchanged."""
    for _, rewrite, _ in _steps(variant):
        graph = rewrite(graph, variant)
    return graph


def describe(graph: Graph, variant: Variant) -> list[str]:
    """What ``variant`` changes in ``graph``, one line per rewrite, each naming the source
    line it acts on; the params each rewrite leaves without any gradient path to the trained
    loss are computed by the gradient-flow analysis (:mod:`ddm.compiler.gradflow`)."""
    if variant.unchanged:
        return ["no change: the program as written"]
    apply(graph, variant)  # the whole variant's errors first, as apply raises them
    lines = []
    for key, rewrite, words in _steps(variant):
        # one line per thing named, each rewrite applied alone after those before it, so that
        # the params it leaves untrained are its own
        value = getattr(variant, key)
        if key in ("rules", "loss"):
            parts = [replace(Variant(variant.name), **{key: value})]
        else:
            parts = [replace(Variant(variant.name), **{key: (x,)}) for x in dict.fromkeys(value)]
        for one in parts:
            after = rewrite(graph, one)
            line = words(graph, after, one)
            lost = gradflow.trained(graph) - gradflow.trained(after) - set(one.freeze)
            if lost:
                line += "; params left without any gradient path: " + ", ".join(
                    p.name for p in graph.params if p.name in lost
                )
            lines.append(line)
            graph = after
    return lines


def variant_from_mapping(name: str, mapping: Any, span: Span | None = None) -> Variant:
    """The variant a YAML-style mapping describes, e.g.
    ``{stop_gradient: [x], freeze: [net], loss: raw, soft_guards: {position: 10.0},
    rules: off | all | [calm_down], substitute: [b]}``. A single string stands for a list of
    one; ``rules`` also takes the booleans YAML reads ``off``/``on`` as. Errors name the variant
    (located at ``span`` when given: the variant in its file).

    >>> variant_from_mapping("blind", {"stop_gradient": "x", "rules": False})
    Variant(name='blind', stop_gradient=('x',), freeze=(), loss=None, soft_guards=(), \
rules='off', substitute=())
    """

    def fail(message: str, hint: str | None = None):
        return DataDiagnostic(span, f"variant '{name}': {message}", hint=hint)

    if mapping is None:
        return Variant(name)
    if not isinstance(mapping, Mapping):
        raise fail(
            f"expected a mapping of rewrites, got {type(mapping).__name__}",
            hint="e.g. {stop_gradient: [x], rules: off}",
        )
    for key in mapping:
        if key not in KEYS:
            raise fail(f"unknown rewrite '{key}'", hint=_did_you_mean(str(key), KEYS, "rewrites"))

    def names(key: str) -> tuple[str, ...]:
        value = mapping.get(key)
        if value is None:  # absent, or ``key:`` with nothing after it
            value = ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) and x for x in value):
            raise fail(f"'{key}' is a name or a list of names", hint=f"{key}: [name, ...]")
        return tuple(value)

    loss = mapping.get("loss")
    if loss is not None and not (isinstance(loss, str) and loss):
        raise fail("'loss' is the name of a loss", hint="loss: raw  (for: loss raw = ...)")
    soft = mapping.get("soft_guards")
    soft = {} if soft is None else soft
    if not isinstance(soft, Mapping):
        raise fail(
            "'soft_guards' maps each guard to its penalty weight",
            hint="soft_guards: {position: 10.0}",
        )
    pairs = []
    for guard, weight in soft.items():
        if not isinstance(guard, str) or isinstance(weight, bool):
            raise fail("'soft_guards' maps each guard to its penalty weight (a number)")
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise fail(
                f"soft guard '{guard}' needs a finite weight > 0, got {weight!r}",
                hint=f"soft_guards: {{{guard}: 10.0}}",
            )
        pairs.append((guard, float(weight)))
    rules = mapping.get("rules", "all")
    if rules is True:
        rules = "all"
    elif rules is False:
        rules = "off"
    elif isinstance(rules, str) and rules not in ("all", "off"):
        rules = (rules,)
    elif isinstance(rules, (list, tuple)):
        if not all(isinstance(x, str) and x for x in rules):
            raise fail("'rules' lists the names of the rules to keep")
        rules = tuple(rules)
    elif not isinstance(rules, str):
        raise fail(
            f"'rules' is all, off or a list of rule names, got {rules!r}",
            hint="rules: off  (or rules: [calm_down] to keep only that rule)",
        )
    return Variant(
        name,
        stop_gradient=names("stop_gradient"),
        freeze=names("freeze"),
        loss=loss,
        soft_guards=tuple(pairs),
        rules=rules,
        substitute=names("substitute"),
    )


# --- the rewrites --------------------------------------------------------------------------------
Rewrite = Callable[[Graph, Variant], Graph]
Words = Callable[[Graph, Graph, Variant], str]


def _steps(v: Variant) -> list[tuple[str, Rewrite, Words]]:
    """The rewrites ``v`` asks for, in the order they apply: a guard is softened before a
    stop is put on its node (softening replaces the node's value), the rules chosen before the
    loss (whose named alternatives they rebuild), params frozen last."""
    steps: list[tuple[str, Rewrite, Words]] = []
    if v.substitute:
        steps.append(("substitute", _substitute, _words_substitute))
    if v.soft_guards:
        steps.append(("soft_guards", _soften, _words_soften))
    if v.stop_gradient:
        steps.append(("stop_gradient", _stop, _words_stop))
    if v.rules != "all":
        steps.append(("rules", _rules, _words_rules))
    if v.loss is not None:
        steps.append(("loss", _loss, _words_loss))
    if v.freeze:
        steps.append(("freeze", _freeze, _words_freeze))
    return steps


def _substitute(g: Graph, v: Variant) -> Graph:
    values = list(g.values)
    inputs = list(g.inputs)
    bodies = g.in_bodies()
    for name in dict.fromkeys(v.substitute):
        vid = _node(g, v, "substitute", name)
        old = values[vid]
        if old.op == "input":
            continue  # named twice: already read from the data
        if vid in bodies:
            raise _refuse(v, old.span, f"node '{name}' is computed inside a scan or an argmin")
        if old.stage == "static":
            raise _refuse(
                v,
                old.span,
                f"cannot substitute node '{name}': it is computed from params and constants "
                "only, the same for every sample, and what reads it expects that",
                hint="substitute a node that depends on the inputs",
            )
        typ = replace(old.type, weak=False)
        values[vid] = Value(
            vid, "input", "input", "sample", (), (("name", name),), typ, old.span, name, old.scope
        )
        inputs.append(InputSpec(name, typ, old.span, vid))
    return _checked(replace(g, values=tuple(values), inputs=tuple(inputs)))


def _soften(g: Graph, v: Variant) -> Graph:
    seen: set[str] = set()
    values = list(g.values)
    penalties = []
    guards = list(g.guards)
    for name, weight in v.soft_guards:
        k = next((i for i, x in enumerate(guards) if x.name == name), None)
        if k is None:
            raise _unknown(v, "soft_guards", "guard", name, [x.name for x in g.guards])
        if name in seen or guards[k].action.startswith("soft"):
            raise _refuse(v, guards[k].span, f"guard '{name}' is softened twice")
        if not (math.isfinite(weight) and weight > 0):
            raise _refuse(v, guards[k].span, f"soft guard '{name}' needs a finite weight > 0")
        seen.add(name)
        spec = guards[k]
        chain = [x.name for x in g.guards if x.target == spec.target]  # in program order
        at = chain.index(name)
        # the guard's enforced value: the target itself, or what the next guard on it starts from
        enforced = g.nodes[
            spec.target if at == len(chain) - 1 else f"{spec.target}_before_{chain[at + 1]}"
        ]
        before = g.nodes[f"{spec.target}_before_{name}"]
        old = values[enforced]
        if old.op == "input":
            raise _refuse(
                v,
                spec.span,
                f"guard '{name}' cannot be softened: node '{old.name}', which it enforces, is "
                "substituted by an input",
            )
        kept = tuple((k, a) for k, a in old.attrs if k == STOP_GRADIENT)  # an earlier variant's
        values[enforced] = replace(old, op="identity", inputs=(before,), attrs=kept)
        guards[k] = replace(spec, action=f"soft, weight {weight:g}")
        penalties.append((g.nodes[f"guard_{name}_excess"], weight, spec.span))
    b = _Builder(values)
    extra = None
    for excess, weight, span in penalties:
        # weight · mean_b relu(excess_b)²: zero inside the limit, smooth at its edge
        sq = b.op("square", [b.op("relu", [b.lift(excess, span)], span)], span)
        mean = b.op("mean", [sq], span, axis=None, keepdims=False)
        term = b.op("mul", [b.const(weight, values[excess].type.dtype, span), mean], span)
        extra = term if extra is None else b.op("add", [extra, term], span)
    assert extra is not None  # soft_guards is not empty
    g = replace(g, guards=tuple(guards))
    return _with_losses(g, b, lambda vid: b.op("add", [vid, extra], values[vid].span))


def _stop(g: Graph, v: Variant) -> Graph:
    values = list(g.values)
    bodies = g.in_bodies()
    for name in dict.fromkeys(v.stop_gradient):
        vid = _node(g, v, "stop_gradient", name)
        old = values[vid]
        if old.op == "input":
            raise _refuse(
                v,
                old.span,
                f"node '{name}' is substituted by an input: no gradient flows into the data",
            )
        if not old.type.is_float:
            raise _refuse(
                v,
                old.span,
                f"node '{name}' is {old.type.dtype}, which carries no gradient to stop",
            )
        if vid in bodies:  # cannot happen today: nodes are never declared inside a body
            raise _refuse(v, old.span, f"node '{name}' is computed inside a scan or an argmin")
        if not old.stopped:
            values[vid] = replace(old, attrs=old.attrs + ((STOP_GRADIENT, True),))
    return _checked(replace(g, values=tuple(values)))


def _rules(g: Graph, v: Variant) -> Graph:
    if not g.rules:
        raise _refuse(v, None, f"'rules: {_rules_text(v.rules)}': {g.file} has no Φ-rules")
    if v.rules == "off" or v.rules == ():
        return g.without_rules()
    if isinstance(v.rules, str):
        raise _refuse(v, None, f"'rules' is all, off or a list of rule names, got '{v.rules}'")
    known = [r.name for r in g.rules]
    for name in v.rules:
        if name not in known:
            raise _unknown(v, "rules", "rule", name, known)
    kept = [r for r in g.rules if r.name in v.rules]
    values = list(g.values)
    b = _Builder(values)
    tasks = dict(g.task_losses)

    def rebuilt(task: int) -> int:
        out = task
        for r in kept:
            out = b.op("add", [out, r.effective_penalty], r.span)  # + mean(rule_NAME_term)
        return out

    done: dict[int, int] = {}

    def task_plus(task: int) -> int:
        if task not in done:
            done[task] = rebuilt(task)
        return done[task]

    loss = g.loss
    if loss is not None:
        loss = task_plus(g.task_loss if g.task_loss is not None else loss)
    losses = tuple((n, task_plus(tasks.get(n, vid))) for n, vid in g.losses)
    return _checked(replace(g, values=tuple(values), loss=loss, losses=losses, rules_off=False))


def _loss(g: Graph, v: Variant) -> Graph:
    assert v.loss is not None
    names = [n for n, _ in g.losses]
    if v.loss not in names:
        raise _unknown(v, "loss", "loss named", v.loss, names)
    return g.with_loss(v.loss)


def _freeze(g: Graph, v: Variant) -> Graph:
    names = [p.name for p in g.params]
    memories = {r.memory for r in g.rules if r.memory}
    for name in v.freeze:
        if name not in names:
            raise _unknown(v, "freeze", "param", name, names, g)
        if name in memories:
            raise _refuse(
                v,
                g.param(name).span,
                f"param '{name}' is a Φ-rule's memory: state the optimiser never moves",
                hint="turn the rule off instead (rules: [the rules to keep])",
            )
    return replace(g, frozen=tuple(dict.fromkeys(g.frozen + v.freeze)))


# --- what each rewrite changes, in words ---------------------------------------------------------
def _words_substitute(g: Graph, after: Graph, v: Variant) -> str:
    parts = []
    for name in dict.fromkeys(v.substitute):
        vid = g.nodes[name]
        old = g.values[vid]
        if old.op == "input":
            continue
        parts.append(
            f"substitute node {name} ({_at(old.span)}): read from the data as input '{name}' "
            f"({old.type}){_from(g, after, vid)}"
        )
    return "; ".join(parts) or "substitute: nothing (already inputs)"


def _from(g: Graph, after: Graph, vid: int) -> str:
    """What the node was computed from that nothing needs any more."""
    roots = [i for _, i in after.outputs] + [i for _, i in after.metrics]
    roots += [i for i in (after.loss, *(i for _, i in after.losses)) if i is not None]
    needed = after.ancestors(roots)
    behind = reachable([vid], lambda i: g.values[i].inputs)
    params = sorted(
        {
            g.values[i].attr("name") or g.values[i].attr("param")
            for i in behind - needed
            if g.values[i].op in ("param", "layer")
        }
    )
    inputs = sorted(
        {g.values[i].attr("name") for i in behind - needed if g.values[i].op == "input"}
    )
    gone = [f"param {p}" for p in params] + [f"input {i}" for i in inputs]
    return "; no longer computed: " + ", ".join(gone) if gone else ""


def _words_soften(g: Graph, after: Graph, v: Variant) -> str:
    parts = []
    for name, weight in v.soft_guards:
        spec = next(x for x in g.guards if x.name == name)
        parts.append(
            f"soft guard '{name}' ({_at(spec.span)}): node {spec.target} takes "
            f"{spec.target}_before_{name}, the limit {spec.limit} is no longer enforced; "
            f"the loss gains {weight:g} · mean over the batch of relu(guard_{name}_excess)²; "
            f"guard_{name}_violated and guard_{name}_breached still measured"
        )
    return "; ".join(parts)


def _words_stop(g: Graph, after: Graph, v: Variant) -> str:
    parts = []
    for name in dict.fromkeys(v.stop_gradient):
        vid = g.nodes[name]
        cut = gradflow.through(g, vid)
        what = (
            "no gradient reaches "
            + ", ".join(f"param {p.name}" for p in g.params if p.name in cut)
            + " through it"
            if cut
            else "no param's gradient passes through it: the stop changes no gradient"
        )
        parts.append(f"stop_gradient after node {name} ({_at(g.values[vid].span)}): {what}")
    return "; ".join(parts)


def _words_rules(g: Graph, after: Graph, v: Variant) -> str:
    def listed(rules) -> str:
        return ", ".join(f"{r.name} ({_at(r.span)})" for r in rules) or "none"

    if v.rules == "off" or v.rules == ():
        return f"rules off: the loss drops the terms of {listed(g.rules)}; still measured"
    kept = [r for r in g.rules if r.name in v.rules]
    dropped = [r for r in g.rules if r.name not in v.rules]
    return f"rules kept in the loss: {listed(kept)}; measured, not trained on: {listed(dropped)}"


def _words_loss(g: Graph, after: Graph, v: Variant) -> str:
    assert after.loss is not None
    was = f" instead of {_at(g.values[g.loss].span)}" if g.loss is not None else ""
    return f"loss '{v.loss}' ({_at(after.values[after.loss].span)}) trained{was}"


def _words_freeze(g: Graph, after: Graph, v: Variant) -> str:
    trained = gradflow.trained(g)
    parts = []
    for name in dict.fromkeys(v.freeze):
        idle = "" if name in trained else " (it had no gradient path anyway)"
        parts.append(
            f"freeze param {name} ({_at(g.param(name).span)}): no gradient, and training keeps "
            f"its initial value bit for bit, weight decay included{idle}"
        )
    return "; ".join(parts)


# --- pieces --------------------------------------------------------------------------------------
class _Builder:
    """Appends typed values to ``values`` (ids are positions): each op's type comes from its
    shape rule, as the checker would have inferred it."""

    def __init__(self, values: list[Value]):
        self.values = values

    def _add(self, op, kind, stage, inputs, attrs, typ, span) -> int:
        vid = len(self.values)
        self.values.append(Value(vid, op, kind, stage, tuple(inputs), tuple(attrs), typ, span))
        return vid

    def lift(self, vid: int, span: Span) -> int:
        t = self.values[vid].type
        typ = TensorType(t.dtype, (BATCH,) + t.shape)
        return self._add("lift", "imperative", "batch", [vid], (), typ, span)

    def const(self, value: float, dtype: str, span: Span) -> int:
        typ = TensorType(dtype, (), weak=True)
        return self._add("const", "const", "static", [], (("value", value),), typ, span)

    def op(self, name: str, inputs: list[int], span: Span, **static) -> int:
        types = tuple(self.values[i].type for i in inputs)
        typ = OPS[name].rule(types, static)
        stages = {self.values[i].stage for i in inputs}
        stage = "batch" if "batch" in stages else "sample" if "sample" in stages else "static"
        attrs = (*static.items(), ("_layout", (-1,) * len(inputs)))
        return self._add(name, "imperative", stage, inputs, attrs, typ, span)


def _with_losses(g: Graph, b: _Builder, change: Callable[[int], int]) -> Graph:
    """``g`` with every loss it can train — the loss, its task loss, each named loss and its
    task loss — replaced by ``change(loss)`` (once per distinct value), over ``b``'s values."""
    done: dict[int, int] = {}

    def new(vid: int | None) -> int | None:
        if vid is None:
            return None
        if vid not in done:
            done[vid] = change(vid)
        return done[vid]

    loss, task_loss = new(g.loss), new(g.task_loss)
    losses = tuple((n, new(i)) for n, i in g.losses)
    task_losses = tuple((n, new(i)) for n, i in g.task_losses)
    return _checked(
        replace(
            g,
            values=tuple(b.values),  # after ``change`` appended the new losses
            loss=loss,
            task_loss=task_loss,
            losses=losses,
            task_losses=task_losses,
        )
    )


def _checked(g: Graph) -> Graph:
    """``g`` after asserting what every reader relies on: ids are positions, inputs come
    first, and the input specs name input values."""
    for i, val in enumerate(g.values):
        assert val.id == i and all(j < i for j in val.inputs), f"ill-formed IR at %{i}"
    for spec in g.inputs:
        assert g.values[spec.value].op == "input", spec.name
    return g


def _node(g: Graph, v: Variant, what: str, name: str) -> int:
    """The value id of node ``name``, or the error saying what ``name`` is instead."""
    if name in g.nodes:
        return g.nodes[name]
    spec = next((i for i in g.inputs if i.name == name), None)
    if spec is not None:
        raise _refuse(
            v,
            spec.span,
            f"{what}: '{name}' is an input of the program"
            + (": no gradient flows into the data" if what == "stop_gradient" else " already"),
        )
    if any(p.name == name for p in g.params):
        raise _refuse(
            v,
            g.param(name).span,
            f"{what}: '{name}' is a param, not a node",
            hint=f"freeze: [{name}] keeps a param at its initial value",
        )
    raise _unknown(v, what, "node", name, list(g.nodes))


def _unknown(v: Variant, what: str, kind: str, name: str, known, g: Graph | None = None):
    hint = _did_you_mean(name, known, f"{kind.split()[0]}s")
    if g is not None and name in g.nodes:  # a node named where a param is wanted
        hint = f"'{name}' is a node: stop_gradient: [{name}] cuts what learns through it"
    return DataDiagnostic(
        None, f"variant '{v.name}': {what}: there is no {kind} '{name}'", hint=hint
    )


def _refuse(v: Variant, span: Span | None, message: str, hint: str | None = None):
    return DataDiagnostic(span, f"variant '{v.name}': {message}", hint=hint)


def _did_you_mean(name: str, known, what: str) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1) if len(name) < 100 else []
    if close:
        return f"did you mean '{close[0]}'?"
    return f"the {what}: " + ", ".join(known) if known else f"the program has no {what}"


def _rules_text(rules) -> str:
    return rules if isinstance(rules, str) else "[" + ", ".join(rules) + "]"


def _at(span: Span) -> str:
    return f"{os.path.basename(span.file)}:{span.line}"
