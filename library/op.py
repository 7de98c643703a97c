"""The library's unit: one :class:`Op` record per operation, shape rule beside implementation.

A record says what a program may write (``params``), what type comes out (``rule``, run by the
checker without JAX), how to compute it (``impl``, called by lowering with JAX arrays for
tensor arguments and Python values for static ones), and which arguments its derivative is zero
or undefined in (``no_grad``, read by the gradient-flow lint without JAX).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ddm.library.types import TensorType

REQUIRED = object()

# kinds of an op argument:
#   tensor  – any expression, checked by the rule
#   int float bool str – a compile-time literal of that type
#   dim     – a dim name or an int literal (eye(N))
#   axes    – an int or a list of ints (negative allowed), or none
#   probs   – a number in [0, 1] or a non-empty list of them (quantile levels): float or tuple
#   dims    – a list of dim names / ints / -1 (reshape)
#   tensors – a list of expressions (concat, stack)
ARG_KINDS = ("tensor", "int", "float", "bool", "str", "dim", "axes", "probs", "dims", "tensors")


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    kind: str = "tensor"
    default: Any = REQUIRED
    choices: tuple | None = None  # allowed values of a str argument

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


# why an op passes no gradient to some of its arguments: the gradient-flow lint
# (compiler/gradflow.py) names the reason and suggests the relaxation that keeps one
NO_GRAD_REASONS = (
    "comparison",
    "logical",
    "cast",
    "sign",
    "stop_gradient",
    "condition",
    "decision",
    "count",
    "order",
    "metric",
    "guard",
)


@dataclass(frozen=True, slots=True)
class NoGrad:
    """The tensor arguments an op passes no gradient to, and why: the op's result is
    piecewise constant in them (a comparison, a cast to an integer, an argmax: the
    derivative is zero wherever it exists) or the op cuts the gradient by design
    (stop_gradient). ``args`` names tensor params of the op; ``reason`` is one of
    :data:`NO_GRAD_REASONS`."""

    args: tuple[str, ...]
    reason: str

    def __post_init__(self):
        if self.reason not in NO_GRAD_REASONS:
            raise ValueError(f"unknown no-gradient reason {self.reason!r}")


@dataclass(frozen=True)
class Op:
    """One library operation.

    ``rule(types, static) -> TensorType`` receives the tensor arguments' types in ``params``
    order (a ``tensors`` argument contributes a tuple) and the static arguments by name.
    ``impl(*arrays, **static)`` mirrors it with JAX values.
    """

    name: str
    params: tuple[Arg, ...]
    rule: Callable[..., TensorType]
    impl: Callable[..., Any]
    doc: str
    family: str  # which property-test strategy draws valid shapes for it
    kind: str = "imperative"  # or "declarative": the value solves a problem (solve, argmin)
    batch_only: bool = False  # reductions over the batch (losses, auc): only in loss/metric
    variadic: bool = False  # extra positional args are collected into the last param (list)
    extra: Mapping[str, Any] = field(default_factory=dict)
    no_grad: NoGrad | None = None  # arguments the gradient does not flow to (default: none)

    def __post_init__(self):
        if self.no_grad is not None:
            tensors = {a.name for a in self.params if a.kind in ("tensor", "tensors")}
            unknown = set(self.no_grad.args) - tensors
            if unknown:
                raise ValueError(
                    f"{self.name}: no_grad names {sorted(unknown)}, which are not tensor arguments"
                )

    def no_grad_inputs(self, layout: tuple[int, ...] | None, count: int) -> frozenset[int]:
        """Positions among a call's ``count`` tensor inputs that receive no gradient.
        ``layout`` is the call's ``_layout`` attribute (per tensor param: -1 one input,
        0 omitted, n a list of n inputs); ``None`` reads each tensor param as one input."""
        if self.no_grad is None:
            return frozenset()
        tensor_args = [a for a in self.params if a.kind in ("tensor", "tensors")]
        if layout is None:
            layout = tuple(-1 for _ in range(count))
        out, i = set(), 0
        for arg, n in zip(tensor_args, layout):
            width = 1 if n == -1 else n
            if arg.name in self.no_grad.args:
                out.update(range(i, i + width))
            i += width
        return frozenset(out)

    def signature(self) -> str:
        parts = []
        for a in self.params:
            if a.kind == "tensor" or a.kind == "tensors":
                parts.append(a.name + ("..." if self.variadic and a is self.params[-1] else ""))
            elif a.required:
                parts.append(f"{a.name}: {a.kind}")
            else:
                parts.append(f"{a.name}={a.default!r}".replace("'", '"'))
        return f"{self.name}({', '.join(parts)})"


def table(*groups: tuple[Op, ...]) -> Mapping[str, Op]:
    """Build the immutable op table once from groups of records; names must be unique."""
    from types import MappingProxyType

    out: dict[str, Op] = {}
    for group in groups:
        for op in group:
            if op.name in out:
                raise ValueError(f"op {op.name!r} defined twice")
            out[op.name] = op
    return MappingProxyType(out)
