"""Axis arguments: normalising ``axis=-1`` / ``axis=[0, 1]`` against a rank, with good errors."""

from __future__ import annotations

from ddm.library.types import ShapeError


def normalize_axes(axis, ndim: int, op: str, arg: int = 0) -> tuple[int, ...]:
    """``None`` → every axis; an int or a list → sorted, non-negative, each checked once."""
    if axis is None:
        return tuple(range(ndim))
    items = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        if not -ndim <= a < ndim or ndim == 0:
            raise ShapeError(f"{op}: axis {a} is out of range for a tensor of rank {ndim}", arg=arg)
        a = a % ndim
        if a in out:
            raise ShapeError(f"{op}: axis {a} given twice", arg=arg)
        out.append(a)
    return tuple(sorted(out))


def normalize_axis(axis: int, ndim: int, op: str, arg: int = 0) -> int:
    return normalize_axes(axis, ndim, op, arg)[0]
