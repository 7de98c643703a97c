"""The memory a program needs at bound dims, estimated from the IR before anything compiles.

The estimate is a lower bound, so that a program refused for it could never have run: the
params (with, when training, their gradients and two optimiser moments), one batch of the
inputs, and the largest single value of the program, which must exist at once (per-sample values
times the batch; an argmin node also holds the matrix it factors, ``n × n`` per instance). XLA
fuses and frees the rest, so the true peak is higher; a program within the bound may still run
out of memory, but one above it cannot fit.

Each term remembers the value it came from, so a refusal can name the dim that makes it large.

>>> from ddm.compiler.driver import front_end
>>> text = "dim N = 1000\\nparam w: f32[N, N] = zeros()\\ninput x: f32[N]\\n"
>>> text += "node y = w @ x\\noutput y"
>>> f = estimate(front_end(text, "<doc>")[0], {}, batch=10, training=True)
>>> f.params, f.total, f.largest.what, f.largest.dims
(4000000, 16080000, "param 'w' with its gradient and optimiser state", ('N',))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ddm.compiler.ir import Graph, ParamSpec, Value
from ddm.dsl.span import Span
from ddm.library.types import LayerType, SymDim, TensorType

BYTES = {"f32": 4, "f64": 8, "i32": 4, "bool": 1}


@dataclass(frozen=True)
class Term:
    """One part of the estimate: ``bytes`` for ``what`` (declared at ``span``), sized by
    ``dims`` (the named dims of its shape, largest first)."""

    what: str
    bytes: int
    span: Span
    dims: tuple[str, ...]
    kind: str = "value"  # param | input | value


@dataclass(frozen=True)
class Footprint:
    params: int  # the params alone, once
    terms: tuple[Term, ...]  # what the total adds up

    @property
    def total(self) -> int:
        return sum(t.bytes for t in self.terms)

    @property
    def largest(self) -> Term:
        return max(self.terms, key=lambda t: t.bytes)

    def only(self, kind: str) -> "Footprint":
        """The part of the estimate of one kind (``param``, ``input``, ``value``)."""
        return Footprint(self.params, tuple(t for t in self.terms if t.kind == kind))


def size(t: TensorType, dims: Mapping[str, int]) -> int | None:
    """Elements of ``t`` at ``dims``; None when a dim is not bound."""
    n = 1
    for d in t.shape:
        v = _dim(d, dims)
        if v is None:
            return None
        n *= v
    return n


def _dim(d, dims: Mapping[str, int]) -> int | None:
    if isinstance(d, SymDim):
        return d.value if d.value is not None else dims.get(d.name)
    return int(d)


def _named(t: TensorType | LayerType, dims: Mapping[str, int]) -> tuple[str, ...]:
    shape = t.shape if isinstance(t, TensorType) else t.sizes
    named = {d.name: _dim(d, dims) or 0 for d in shape if isinstance(d, SymDim)}
    return tuple(sorted(named, key=lambda k: -named[k]))


def param_elements(p: ParamSpec, dims: Mapping[str, int]) -> int | None:
    if isinstance(p.type, TensorType):
        return size(p.type, dims)
    sizes = [_dim(d, dims) for d in p.type.sizes]
    if any(s is None for s in sizes):
        return None
    n = 0
    for a, b in zip(sizes, sizes[1:]):
        assert a is not None and b is not None
        n += a * b + b  # weights and biases
    return n


def _param_dtype(p: ParamSpec) -> str:
    return p.type.dtype if isinstance(p.type, TensorType) else "f32"


def estimate(graph: Graph, dims: Mapping[str, int], batch: int, training: bool) -> Footprint:
    """The lower bound of the module doc at ``dims`` (declared dims need not be given) for a
    batch of ``batch`` samples; values whose dims are unbound are left out."""
    terms: list[Term] = []
    params = 0
    copies = 4 if training else 1  # value, gradient, two moments (adam's; sgd has fewer)
    for p in graph.params:
        n = param_elements(p, dims)
        if n is None:
            continue
        b = n * BYTES[_param_dtype(p)]
        params += b
        what = f"param '{p.name}'" + (" with its gradient and optimiser state" if training else "")
        terms.append(Term(what, b * copies, p.span, _named(p.type, dims), "param"))
    for i in graph.inputs:
        n = size(i.type, dims)
        if n is not None:
            terms.append(
                Term(
                    f"input '{i.name}' for {batch} samples",
                    n * batch * BYTES[i.type.dtype],
                    i.span,
                    _named(i.type, dims),
                    "input",
                )
            )
    best: Term | None = None
    for v in graph.values:
        if v.op in ("param", "input", "layer"):
            continue
        t = _value_term(v, dims, batch)
        if t is not None and (best is None or t.bytes > best.bytes):
            best = t
    if best is not None:
        terms.append(best)
    return Footprint(params, tuple(terms))


def _value_term(v: Value, dims: Mapping[str, int], batch: int) -> Term | None:
    n = size(v.type, dims)
    if n is None or v.type.dtype not in BYTES:
        return None
    copies = batch if v.stage == "sample" else 1
    b = n * copies * BYTES[v.type.dtype]
    label = f"'{v.name}'" if v.name else f"a value ({v.op})"
    if v.op == "argmin" and v.type.ndim == 1:
        m = n * n * copies * BYTES[v.type.dtype]  # the matrix the solver factors
        if m > b:
            return Term(
                f"node {label}: its {n}×{n} system for {copies} instances",
                m,
                v.span,
                _named(v.type, dims),
            )
    return Term(
        f"node {label}" + (f" for {batch} samples" if copies > 1 else ""),
        b,
        v.span,
        _named(v.type, dims),
    )


def human(n: float) -> str:
    """``n`` bytes for people: 1.5 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.0f} B"


def dim_span(graph: Graph, name: str) -> Span | None:
    return next((d.span for d in graph.dims if d.name == name), None)


__all__ = ["Footprint", "Term", "estimate", "human", "size", "dim_span"]
