"""The type vocabulary shape rules speak: dims, tensor types, layer types.

``Dim = int | SymDim``. A :class:`SymDim` with a known value (``dim N = 4``) equals that int, so
shape rules compare dims with ``==`` and never need to know which dims are bound.

>>> N = SymDim("N", 4)
>>> N == 4, str(TensorType("f32", (N, 3)))
(True, 'f32[N, 3]')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


@dataclass(frozen=True, slots=True, eq=False)
class SymDim:
    """A named axis size; ``value`` is its literal size when the program gives one."""

    name: str
    value: int | None = None

    def __eq__(self, other) -> bool:
        if isinstance(other, SymDim):
            if self.value is not None and other.value is not None:
                return self.value == other.value
            return self.name == other.name
        if isinstance(other, int) and not isinstance(other, bool):
            return self.value is not None and self.value == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.value) if self.value is not None else hash(self.name)

    def __str__(self) -> str:
        return self.name


Dim = Union[int, SymDim]

FLOATS = ("f32", "f64")
DTYPES = ("f32", "f64", "i32", "bool")


@dataclass(frozen=True, slots=True)
class TensorType:
    """``dtype[shape]``; ``weak`` marks a Python literal whose dtype yields to its partner's."""

    dtype: str
    shape: tuple[Dim, ...] = ()
    weak: bool = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOATS

    def with_shape(self, shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape), False)

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(dtype, self.shape, False)

    def __str__(self) -> str:
        if not self.shape:
            return self.dtype
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True, slots=True)
class LayerType:
    """A callable param (``linear``, ``mlp``): maps ``[..., d_in]`` to ``[..., d_out]``."""

    kind: str
    sizes: tuple[Dim, ...]  # d_in, hidden…, d_out
    activation: str = "relu"
    bias: bool = True

    @property
    def d_in(self) -> Dim:
        return self.sizes[0]

    @property
    def d_out(self) -> Dim:
        return self.sizes[-1]

    def __str__(self) -> str:
        return f"{self.kind}({' → '.join(str(s) for s in self.sizes)})"


Type = Union[TensorType, LayerType]


class ShapeError(Exception):
    """Raised by a shape rule; ``arg`` is the index of the offending argument, if one is."""

    def __init__(self, message: str, arg: int | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.hint = hint


class DtypeError(ShapeError):
    """A shape rule's complaint about element types rather than sizes."""


def fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def broadcast_shapes(a: tuple[Dim, ...], b: tuple[Dim, ...]) -> tuple[Dim, ...] | None:
    """NumPy broadcasting over symbolic dims; ``None`` when the shapes do not broadcast."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        if da == db:
            out.append(da if isinstance(da, SymDim) or not isinstance(db, SymDim) else db)
        elif da == 1:
            out.append(db)
        elif db == 1:
            out.append(da)
        else:
            return None
    return tuple(reversed(out))


def promote(a: TensorType, b: TensorType, what: str) -> str:
    """The dtype of an arithmetic result; raises :class:`DtypeError` on mixed precision."""
    if a.dtype == "bool" or b.dtype == "bool":
        bad = 0 if a.dtype == "bool" else 1
        raise DtypeError(
            f"cannot {what} {a} and {b}: arithmetic on bool",
            arg=bad,
            hint="use where(cond, a, b), or cast with f32(...)",
        )
    if a.dtype == b.dtype:
        return a.dtype
    if a.weak and not b.weak:
        return b.dtype if not (a.is_float and not b.is_float) else "f32"
    if b.weak and not a.weak:
        return a.dtype if not (b.is_float and not a.is_float) else "f32"
    if a.is_float and b.is_float:
        raise DtypeError(
            f"cannot {what} {a} and {b}: mixed precision",
            arg=None,
            hint="cast one side explicitly with f32(...) or f64(...)",
        )
    return a.dtype if a.is_float else b.dtype


def literal_size(d: Dim) -> int | None:
    """``d``'s size when the program states it (an int, or a dim declared with a value); None
    for a symbolic dim bound only when the program runs."""
    if isinstance(d, SymDim):
        return None if d.value is None else int(d.value)
    return int(d)


def size_key(shape) -> tuple[int, tuple[str, ...]]:
    """Total size as (product of int dims, sorted symbolic names) for reshape checks."""
    const, syms = 1, []
    for d in shape:
        size = literal_size(d)
        if size is None:
            syms.append(d.name)
        else:
            const *= size
    return const, tuple(sorted(syms))
