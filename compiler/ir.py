"""The IR: a typed DAG in SSA form — the one structure lowering, diagnostics and rendering read.

Every sub-expression is a :class:`Value` with an op, a kind (how the article colours it), a stage
(when it can be computed), its inputs, static attributes, a type and the span it came from.
Values are stored in topological order and ``values[i].id == i``.

Stages: ``static`` values depend on params and constants only; ``sample`` values on one
sample's inputs (the program is written per sample, lowering vectorises); ``batch`` values live
in ``loss``/``metric``, where a per-sample value is *lifted* (op ``lift``) to its batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Mapping, overload

from ddm.compiler.settings import RunSettings
from ddm.dsl.span import Span
from ddm.library.types import Dim, LayerType, TensorType

if TYPE_CHECKING:  # annotations only: ir stays a leaf that every stage imports, checker aside
    from ddm.compiler.declarative import Problem
    from ddm.compiler.sequential import ScanSpec

STOP_GRADIENT = "_stop_gradient"  # the attribute that marks a value stopped (Value.stopped)
KINDS = ("input", "param", "const", "imperative", "declarative", "decision", "sequential", "state")
STAGES = ("static", "sample", "batch")


@dataclass(frozen=True, slots=True)
class Value:
    id: int
    op: str
    kind: str
    stage: str
    inputs: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...]
    type: TensorType
    span: Span
    name: str | None = None  # set on the value a node/let declaration defines
    scope: str | None = None  # "fn@line:col" when inlined from a call of a fn

    @property
    def stopped(self) -> bool:
        """Whether the evaluator passes this value through ``jax.lax.stop_gradient`` once it
        is computed (a variant's ``stop_gradient``, compiler/variants.py): its attribute key
        starts with ``_``, so its op never receives it."""
        return self.attr(STOP_GRADIENT, False)

    # check sets ``problem`` on every argmin value and ``scan`` on every scan value; readers
    # test ``v.op`` first, so those two keys are typed as present. Any other attribute is
    # whatever its op stores (None when absent and no default is given).
    @overload
    def attr(self, key: Literal["problem"]) -> Problem: ...
    @overload
    def attr(self, key: Literal["scan"]) -> ScanSpec: ...
    @overload
    def attr(self, key: str, default: Any = None) -> Any: ...
    def attr(self, key: str, default: Any = None) -> Any:
        for k, v in self.attrs:
            if k == key:
                return v
        return default


@dataclass(frozen=True, slots=True)
class DimSpec:
    name: str
    value: int | None
    span: Span


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str
    type: TensorType
    span: Span
    value: int  # the Value id


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """A trainable leaf. ``init`` is ("value", nested floats) | (initializer name, kwargs)."""

    name: str
    type: TensorType | LayerType
    init: tuple[str, Any]
    positive: bool
    span: Span

    @property
    def is_layer(self) -> bool:
        return isinstance(self.type, LayerType)


@dataclass(frozen=True, slots=True)
class FnInfo:
    name: str
    signature: str
    span: Span


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A Φ-rule as lowering and the runtime see it: value ids, never names to rebuild.

    ``trigger`` (in [0, 1]), ``penalty`` and ``term`` are per-sample scalars, ``weight`` a
    scalar per sample or static; ``activation`` = mean(trigger) and ``effective_penalty`` =
    mean(term) are batch values (the audit metrics). A rule with memory has the state param
    ``memory`` and its decay γ at the static value ``decay``; ``boost`` is η."""

    name: str
    intent: str
    span: Span
    trigger: int
    penalty: int
    weight: int
    term: int
    activation: int
    effective_penalty: int
    memory: str | None = None
    decay: int | None = None
    boost: float = 0.0


@dataclass(frozen=True, slots=True)
class GuardSpec:
    """A guardrail as lowering and the runtime see it. ``violated`` and ``breached`` are
    per-sample values, 1.0 where the decision broke the limit before enforcement and where the
    enforced decision still does; ``violation_rate`` and ``breach_rate`` their batch means."""

    name: str
    intent: str
    target: str  # the guarded node
    limit: str  # the limit as written
    action: str  # project | reject
    span: Span
    violated: int
    breached: int
    violation_rate: int
    breach_rate: int


@dataclass(frozen=True)
class Graph:
    file: str
    values: tuple[Value, ...]
    dims: tuple[DimSpec, ...]
    inputs: tuple[InputSpec, ...]
    params: tuple[ParamSpec, ...]
    nodes: Mapping[str, int]
    outputs: tuple[tuple[str, int], ...]
    loss: int | None
    metrics: tuple[tuple[str, int], ...]
    fns: tuple[FnInfo, ...]
    run: RunSettings | None = None  # the run section, typed; the runtime validates it
    warnings: tuple = field(default=())
    losses: tuple[tuple[str, int], ...] = ()  # named alternatives: ``loss NAME = …``
    rules: tuple[RuleSpec, ...] = ()  # in program order
    guards: tuple[GuardSpec, ...] = ()  # in program order
    # the loss without its Φ-rules' terms (the "pure DP" loss), and each named loss's
    task_loss: int | None = None
    task_losses: tuple[tuple[str, int], ...] = ()
    rules_off: bool = False  # trains the task loss (``without_rules``), whichever is chosen
    # params a variant freezes (compiler/variants.py): every evaluation reads them through
    # stop_gradient and the training step leaves them bit-identical, weight decay included
    frozen: tuple[str, ...] = ()

    def with_loss(self, name: str) -> "Graph":
        """This graph training its named loss ``name`` instead of the default."""
        from dataclasses import replace

        task = dict(self.task_losses).get(name, dict(self.losses)[name])
        return replace(
            self, loss=task if self.rules_off else dict(self.losses)[name], task_loss=task
        )

    def without_rules(self) -> "Graph":
        """This graph training its loss without the Φ-rules' terms (rules still measured)."""
        from dataclasses import replace

        return replace(
            self, loss=self.task_loss if self.task_loss is not None else self.loss, rules_off=True
        )

    def input(self, name: str) -> InputSpec:
        return next(i for i in self.inputs if i.name == name)

    def param(self, name: str) -> ParamSpec:
        return next(p for p in self.params if p.name == name)

    def ancestors(self, roots) -> set[int]:
        """Ids of the values ``roots`` depend on, roots included (iterative)."""
        return reachable(roots, lambda i: self.values[i].inputs)

    def nested(self) -> set[int]:
        """Ids of the values inside a scan's body: evaluated per step by the scan, never on
        their own (their placeholders have no value outside it)."""
        out: set[int] = set()
        for v in self.values:
            if v.op == "scan":
                out.update(range(*v.attr("scan").body))
        return out

    def in_bodies(self) -> set[int]:
        """Ids of the values inside an argmin's problem or a scan's body: evaluated only by
        their node (a decision variable or a carry has no value of its own)."""
        out = self.nested()
        for v in self.values:
            if v.op == "argmin":
                out.update(range(*v.attr("problem").body))
        return out

    def solver_roots(self) -> list[int]:
        """The values whose evaluation yields every declarative node's solver info: the
        argmin nodes outside scans, and each outermost scan with an argmin in its body."""
        nested = self.nested()
        argmins = {v.id for v in self.values if v.op == "argmin"}
        roots = [i for i in sorted(argmins) if i not in nested]
        for v in self.values:
            if v.op == "scan" and v.id not in nested:
                if any(i in argmins for i in range(*v.attr("scan").body)):
                    roots.append(v.id)
        return sorted(roots)

    def inputs_needed(self, roots) -> tuple[InputSpec, ...]:
        need = self.ancestors(roots)
        return tuple(i for i in self.inputs if i.value in need)

    def dim_values(self) -> dict[str, int]:
        return {d.name: d.value for d in self.dims if d.value is not None}


def gradient_path(g: Graph) -> set[int]:
    """Values the loss depends on that depend on a param: where the adjoint flows. Layer
    params enter through layer values; a problem's or a scan's body feeds its node."""
    feeds: dict[int, set[int]] = {v.id: set(v.inputs) for v in g.values}
    for i, extra in body_feeds(g).items():
        feeds[i] |= extra
    upstream = reachable([g.loss] if g.loss is not None else [], feeds.__getitem__)
    users: dict[int, list[int]] = {}
    for dst, srcs in feeds.items():
        for s in srcs:
            users.setdefault(s, []).append(dst)
    sources = [v.id for v in g.values if v.op == "param" or v.op == "layer"]
    downstream = reachable(sources, lambda i: users.get(i, ()))
    floats = {v.id for v in g.values if v.type.is_float}
    return upstream & downstream & floats


def body_feeds(g: Graph) -> dict[int, set[int]]:
    """Where the adjoint flows besides a value's inputs: an argmin's node feeds its objective
    and its decision variable, which feeds every value of the problem (implicit
    differentiation: the solution moves with everything the problem captures); a scan's node
    feeds its new carry, and the carry placeholder the initial carry and the new carry (the
    step before). Every outer value a body captures is an input of one of its values."""
    feeds: dict[int, set[int]] = {}
    for v in g.values:
        if v.op == "argmin":
            p = v.attr("problem")
            feeds[v.id] = {p.objective, p.var}
            feeds[p.var] = set(range(*p.body)) - {p.var}
        elif v.op == "scan":
            s = v.attr("scan")
            feeds[v.id] = {s.result}
            feeds[s.carry] = {v.inputs[0], s.result}
    return feeds


def reachable(starts, step) -> set[int]:
    """Ids reachable from ``starts`` (included) following ``step(i)`` (iterative)."""
    seen: set[int] = set()
    stack = list(starts)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        stack.extend(step(i))
    return seen


def format_ir(graph: Graph) -> str:
    """A readable listing, one value a line: ``%7 = matmul %3, %6 : f32[N]  # node b (12:9)``."""
    lines = [f"# ddm IR of {graph.file}"]
    for d in graph.dims:
        lines.append(f"dim {d.name}" + (f" = {d.value}" if d.value is not None else ""))
    for p in graph.params:
        extra = " positive (stored as log)" if p.positive else ""
        extra += " frozen" if p.name in graph.frozen else ""
        lines.append(f"param {p.name}: {p.type}{extra}")
    for v in graph.values:
        args = ", ".join(f"%{i}" for i in v.inputs)
        attrs = ", ".join(f"{k}={_short(a)}" for k, a in v.attrs if not k.startswith("_"))
        body = v.op + (" " + args if args else "") + (f" {{{attrs}}}" if attrs else "")
        tags = [v.kind, v.stage]
        if v.name:
            tags.append(f"node {v.name}")
        if v.scope:
            tags.append(f"in {v.scope}")
        if v.stopped:
            tags.append("stop_gradient")
        lines.append(
            f"%{v.id} = {body} : {v.type}    # {' '.join(tags)} ({v.span.line}:{v.span.column})"
        )
    for v in graph.values:
        if v.op == "argmin":
            p = v.attr("problem")
            lines.append(
                f"# %{v.id}: {p.describe()}; body %{p.body[0]}..%{p.body[1] - 1}, "
                f"objective %{p.objective}, decision %{p.var}"
            )
        if v.op == "scan":
            s = v.attr("scan")
            lines.append(
                f"# %{v.id}: {s.describe()}; body %{s.body[0]}..%{s.body[1] - 1}, "
                f"new carry %{s.result}, index %{s.index}, carry %{s.carry}"
            )
    for name, i in graph.outputs:
        lines.append(f"output {name} = %{i}")
    if graph.loss is not None:
        lines.append(f"loss = %{graph.loss}")
    for name, i in graph.losses:
        lines.append(f"loss {name} = %{i}")
    for name, i in graph.metrics:
        lines.append(f"metric {name} = %{i}")
    return "\n".join(lines)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def dim_text(d: Dim) -> str:
    return str(d)
