"""The library's unit: one :class:`Op` record per operation, shape rule beside implementation.

A record says what a program may write (``params``), what type comes out (``rule``, run by the
checker without JAX), and how to compute it (``impl``, called by lowering with JAX arrays for
tensor arguments and Python values for static ones).
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
#   dims    – a list of dim names / ints / -1 (reshape)
#   tensors – a list of expressions (concat, stack)
ARG_KINDS = ("tensor", "int", "float", "bool", "str", "dim", "axes", "dims", "tensors")


@dataclass(frozen=True, slots=True)
class Arg:
    name: str
    kind: str = "tensor"
    default: Any = REQUIRED
    choices: tuple | None = None  # allowed values of a str argument

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


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
