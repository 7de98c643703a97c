"""The gradient-flow lint of ``ddmc check``: every param that no loss can ever train.

Training moves a param only along the adjoint of a loss (the default loss or a named one). The
adjoint flows backwards along the IR's edges — through an argmin's or a scan's body as
:func:`~ddm.compiler.ir.body_feeds` says — except

- into an argument its op declares it passes no gradient to (``Op.no_grad``: a comparison, a
  cast to an integer, ``sign``, ``argmax``/``one_hot``, ``argsort``/``rank``,
  ``stop_gradient``, a guard's reject check, ``accuracy``/``auc``, …): the derivative there
  is zero or undefined;
- into or out of a value that is not a float (an integer or a bool carries no gradient);
- into the inputs of a value a variant stopped (``Value.stopped``, compiler/variants.py).

For each param (a Φ-rule's memory and a variant's frozen params excepted: they are held by
design) :func:`lint`
warns, at the param's declaration, when

- no loss depends on it at all: *never used by the loss* (only by a metric, an output, a node,
  or by nothing);
- a loss depends on it, but every path crosses a blocking edge: *reaches the loss only through*
  the first blocking operation in program order (its kind and location; the others counted).

Each warning's hint is the relaxation that lets the gradient through. The walk is linear in
the graph for all params together, plus one forward walk per param that gets a warning.
Nothing here imports JAX: ``ddmc check`` runs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

from ddm.compiler.ir import Graph, Value, body_feeds, reachable
from ddm.dsl.diagnostics import Warning_
from ddm.dsl.span import Span
from ddm.library import OPS
from ddm.library.op import Op

# per reason (``NoGrad.reason``): why the gradient stops there, and the relaxation to use
WHY = {
    "comparison": "whose derivative is zero",
    "logical": "whose derivative is zero",
    "cast": "whose derivative is zero",
    "sign": "whose derivative is zero",
    "decision": "whose derivative is zero",
    "count": "whose derivative is zero",
    "order": "whose derivative is zero",
    "metric": "whose derivative is zero",
    "condition": "which only chooses a branch",
    "stop_gradient": "which stops the gradient",
    "guard": "which only compares with the limit",
    "variant": "where the variant stops the gradient",
}
HINTS = {
    "comparison": "relax it: sigmoid(κ * (a - b)) is a smooth 'a > b' (what a Φ-rule's 'when' "
    "computes)",
    "logical": "relax it: with p, q = sigmoid(κ * …) of each comparison, 'p and q' is p * q, "
    "'p or q' is 1 - (1 - p) * (1 - q), 'not p' is 1 - p (what a Φ-rule's 'when' "
    "computes)",
    "condition": "blend the branches instead: s * a + (1 - s) * b with s = sigmoid(κ * (…))",
    "cast": "keep it a float: drop the cast, or round only outside the loss (an output, a metric)",
    "cast_bool": "keep it a float: a weight in [0, 1] such as sigmoid(κ * x)",
    "sign": "relax it: tanh(κ * x) is a smooth sign(x)",
    "stop_gradient": "remove stop_gradient(…) if the param should learn through it; if it is "
    "meant to stay fixed, make it a number or an input, not a param",
    "decision": "choose softly: gumbel_softmax(logits, temperature) (or softmax(logits)) "
    "instead of one_hot(argmax(logits), K)",
    "count": "penalise sum(abs(x)) instead: the L1 norm is the convex surrogate of a count",
    "order": "rank softly: soft_rank(x, temperature) tends to rank(x) and passes a gradient "
    "(sort and quantile pass one to the values they pick)",
    "metric": "train on a smooth surrogate such as bce(p, y), and keep {op} as a metric",
    "guard": "a guard is a hard limit; for a limit that learns, use a Φ-rule (a soft guard), "
    "or action project, whose bound gets a gradient where the limit is active",
    "variant": "drop the node from the variant's stop_gradient if the param should learn "
    "through it",
    None: "keep the computation in floats up to the loss",
}
UNUSED_HINT = "use it in the loss, or delete it"
METRIC_HINT = "a metric is only measured: add a term of it to the loss to train the param"


def lint(graph: Graph, ops: Mapping[str, Op] = OPS) -> tuple[Warning_, ...]:
    """The gradient-flow warnings of ``graph``, one per untrainable param, in declaration
    order. A program without a loss trains nothing and gets none."""
    losses = ([("the loss", graph.loss)] if graph.loss is not None else []) + [
        (f"loss '{name}'", vid) for name, vid in graph.losses if vid != graph.loss
    ]
    if not losses:
        return ()
    flow = _Flow(graph, ops)
    live = flow.live([vid for _, vid in losses])
    needs = [(label, flow.ancestors([vid])) for label, vid in losses]
    needed = set().union(*(need for _, need in needs))
    held = {r.memory for r in graph.rules if getattr(r, "memory", None)} | set(graph.frozen)
    out = []
    for p in graph.params:
        sources = flow.sources.get(p.name, [])
        if p.name in held or any(s in live for s in sources):
            continue
        reached = [label for label, need in needs if any(s in need for s in sources)]
        if reached:
            out.append(flow.blocked(p.name, p.span, sources, reached[0], needed))
        else:
            out.append(flow.unused(p.name, p.span, sources))
    return tuple(out)


def trained(graph: Graph, ops: Mapping[str, Op] = OPS) -> frozenset[str]:
    """The params the trained loss (``graph.loss``) sends a gradient to: those with a path to
    it that no blocking edge cuts, frozen params excepted.

    >>> from ddm.compiler.driver import front_end
    >>> g, _ = front_end("input x: f32\\nparam a: f32 = 1.0\\nparam c: f32 = 1.0\\n"
    ...                  "node y = a * x + stop_gradient(c)\\nloss = mean(y ** 2)", "<doc>")
    >>> sorted(trained(g))
    ['a']
    """
    if graph.loss is None:
        return frozenset()
    flow = _Flow(graph, ops)
    live = flow.live([graph.loss])
    return frozenset(
        name
        for name, sources in flow.sources.items()
        if name not in graph.frozen and any(s in live for s in sources)
    )


def through(graph: Graph, vid: int, ops: Mapping[str, Op] = OPS) -> frozenset[str]:
    """The params whose gradient from the trained loss flows through value ``vid``: what a
    ``stop_gradient`` there would cut (some may still learn along another path)."""
    if graph.loss is None:
        return frozenset()
    flow = _Flow(graph, ops)
    if vid not in flow.live([graph.loss]):
        return frozenset()
    behind = flow.live([vid])
    return frozenset(
        name
        for name, sources in flow.sources.items()
        if name not in graph.frozen and any(s in behind for s in sources)
    )


@dataclass(frozen=True)
class _Culprit:
    value: Value
    op: Op | None
    reason: str | None  # the op's NoGrad reason; None: a value that is not a float


class _Flow:
    """The adjoint's edges of one graph: ``grads[v]`` the values v's adjoint flows to,
    ``feeds[v]`` everything v is computed from (the same edges, blocked ones included)."""

    def __init__(self, graph: Graph, ops: Mapping[str, Op]):
        self.graph = graph
        self.ops = ops
        values = graph.values
        self.floats = [v.type.is_float for v in values]
        extra = body_feeds(graph)
        self.feeds: list[set[int]] = []
        self.grads: list[set[int]] = []
        for v in values:
            feeds = set(extra.get(v.id, ()))
            grads = set(feeds)
            # an argmin's or a scan's own inputs are what its body captures: the adjoint
            # reaches them through the body's values, past the body's own blocking edges
            if v.op not in ("argmin", "scan"):
                blocked = self._blocked_positions(v)
                feeds.update(v.inputs)
                grads.update(s for k, s in enumerate(v.inputs) if k not in blocked)
            if v.stopped:  # the variant's stop_gradient: the adjoint ends here
                grads = set()
            self.feeds.append(feeds)
            self.grads.append(grads)
        self.sources: dict[str, list[int]] = {}
        for v in values:
            if v.op == "param":
                self.sources.setdefault(v.attr("name"), []).append(v.id)
            elif v.op == "layer":
                self.sources.setdefault(v.attr("param"), []).append(v.id)
        self._users: list[list[int]] | None = None

    def _blocked_positions(self, v: Value) -> frozenset[int]:
        op = self.ops.get(v.op)
        if op is None or op.no_grad is None:
            return frozenset()
        return op.no_grad_inputs(v.attr("_layout"), len(v.inputs))

    # --- walks ---------------------------------------------------------------------------------
    def live(self, roots: Iterable[int]) -> set[int]:
        """The float values the adjoint of ``roots`` reaches."""
        floats = self.floats
        return reachable(
            [r for r in roots if floats[r]], lambda i: [s for s in self.grads[i] if floats[s]]
        )

    def ancestors(self, roots: Iterable[int]) -> set[int]:
        return reachable(roots, self.feeds.__getitem__)

    @property
    def users(self) -> list[list[int]]:
        if self._users is None:
            users: list[list[int]] = [[] for _ in self.graph.values]
            for dst, srcs in enumerate(self.feeds):
                for s in srcs:
                    users[s].append(dst)
            self._users = users
        return self._users

    # --- the two warnings ------------------------------------------------------------------------
    def blocked(
        self, name: str, span: Span, sources: list[int], loss: str, needed: set[int]
    ) -> Warning_:
        """Every path from the param to a loss (``needed``: what the losses depend on; the
        first it reaches is ``loss``) crosses a blocking edge: name the first of those."""
        floats, users = self.floats, self.users
        # the values the param's gradient would come from, following only passing edges
        carry = reachable(
            sources, lambda s: [d for d in users[s] if floats[d] and s in self.grads[d]]
        )
        culprits = {
            d
            for s in carry
            for d in users[s]
            if d in needed and (not floats[d] or s not in self.grads[d])
        }
        if not culprits:  # cannot happen: a path to the loss that never stops is live
            return Warning_(
                span, f"param '{name}' receives no gradient from {loss}", hint=HINTS[None]
            )
        values = self.graph.values
        order = sorted(culprits, key=lambda i: _position(values[i].span, self.graph.file))
        first = self._culprit(values[order[0]])
        others = len(order) - 1
        more = f" (and {others} other blocking operation{'s' * (others > 1)})" if others else ""
        where = _where(first.value.span, span.file)
        return Warning_(
            span,
            f"param '{name}' reaches {loss} only through "
            f"{self._describe(first)} at {where}, {self._why(first)}{more}",
            hint=self._hint(first),
        )

    def unused(self, name: str, span: Span, sources: list[int]) -> Warning_:
        """No loss depends on the param: say what does read it."""
        g = self.graph
        reads = reachable(sources, self.users.__getitem__)
        metrics = [m for m, vid in g.metrics if vid in reads]
        if metrics:
            more = len(metrics) - 1
            also = f" (and {more} other metric{'s' * (more > 1)})" if more else ""
            return Warning_(
                span,
                f"param '{name}' is never used by the loss, only by metric '{metrics[0]}'{also}",
                hint=METRIC_HINT,
            )
        outputs = [o for o, vid in g.outputs if vid in reads]
        if outputs:
            return Warning_(
                span,
                f"param '{name}' is never used by the loss, only by output '{outputs[0]}'",
                hint=UNUSED_HINT,
            )
        nodes = sorted((vid, n) for n, vid in g.nodes.items() if vid in reads)
        if nodes:
            node = min(nodes, key=lambda t: _position(g.values[t[0]].span, g.file))[1]
            return Warning_(
                span,
                f"param '{name}' is never used by the loss, only by node "
                f"'{node}', which nothing else uses",
                hint=UNUSED_HINT,
            )
        return Warning_(span, f"param '{name}' is used by nothing", hint=UNUSED_HINT)

    # --- words -----------------------------------------------------------------------------------
    def _culprit(self, v: Value) -> _Culprit:
        # a float culprit stops the gradient at a declared argument; one that is not a float
        # stops it whatever its op (a declared op says why, any other is named by its dtype)
        op = self.ops.get(v.op)
        if v.stopped:
            return _Culprit(v, op, "variant")
        return _Culprit(v, op, op.no_grad.reason if op is not None and op.no_grad else None)

    def _describe(self, c: _Culprit) -> str:
        v, op, reason = c.value, c.op, c.reason
        name = v.op
        if reason in ("comparison", "logical"):
            assert op is not None  # a reason is read off a declared op (see _culprit)
            return f"the {reason} '{op.extra.get('symbol', name)}'"
        if reason == "cast":
            return f"the cast {name}(…)"
        if reason == "condition":
            return f"the condition of {name}(…)"
        if reason == "decision":
            return f"the decision rule {name}(…)"
        if reason in ("count", "metric"):
            return f"the {reason} {name}(…)"
        if reason == "order":
            return f"the ordering {name}(…)"
        if reason == "variant":
            return f"node '{v.name}'" if v.name else f"{name}(…)"
        if reason == "guard":
            guard = next((gd for gd in self.graph.guards if gd.span == v.span), None)
            if guard is not None:
                check = "reject check" if name == "guard_reject" else "violation check"
                return f"the {check} of guard '{guard.name}'"
        return f"{name}(…)"

    def _why(self, c: _Culprit) -> str:
        if c.reason is None:
            return f"whose result is {c.value.type.dtype}, which carries no gradient"
        return WHY[c.reason]

    def _hint(self, c: _Culprit) -> str:
        if c.reason == "cast" and c.value.op == "bool":
            return HINTS["cast_bool"]
        return HINTS[c.reason].format(op=c.value.op)


def _position(span: Span, file: str) -> tuple:
    """Program order: the main file first, then by line and column."""
    return (span.file != file, span.file, span.line, span.column)


def _where(span: Span, file: str) -> str:
    return f"{span.line}:{span.column}" if span.file == file else span.where()
