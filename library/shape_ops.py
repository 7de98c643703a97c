"""Building and rearranging tensors: concat, stack, reshape, flatten, zeros, ones."""

from __future__ import annotations

from ddm.library.axes import normalize_axis
from ddm.library.lazy import jnp
from ddm.library.op import Arg, Op
from ddm.library.types import (
    DtypeError,
    ShapeError,
    TensorType,
    fmt_shape,
    literal_size,
    promote,
    size_key,
)


def _same_dtype(name, types):
    dtype = types[0]
    for t in types[1:]:
        if t.dtype != dtype.dtype and not (t.weak or dtype.weak):
            try:
                promote(dtype, t, name)
            except DtypeError as exc:
                raise DtypeError(exc.message, arg=0, hint=exc.hint) from None
    out = types[0]
    for t in types[1:]:
        out = TensorType(promote(out, t, name) if out.dtype != t.dtype else t.dtype, out.shape)
    return out.dtype


def _concat_rule(types, static):
    (xs,) = types
    if not xs:
        raise ShapeError("concat needs at least one tensor", arg=0)
    first = xs[0]
    if first.ndim == 0:
        raise ShapeError(f"cannot concat scalars ({first}); use stack", arg=0)
    axis = normalize_axis(static["axis"], first.ndim, "concat")
    total = 0
    sym = []
    for i, x in enumerate(xs):
        if x.ndim != first.ndim or any(
            x.shape[k] != first.shape[k] for k in range(first.ndim) if k != axis
        ):
            raise ShapeError(
                f"concat along axis {axis}: item {i} is {x} but item 0 is {first}; "
                "all other axes must agree",
                arg=0,
            )
        d = x.shape[axis]
        n = literal_size(d)
        if n is None:
            sym.append(d)
        else:
            total += n
    if sym:
        if len(sym) == 1 and total == 0:
            size = sym[0]
        else:
            raise ShapeError(
                "concat along an axis of symbolic size is only supported for a "
                f"single such item (got {', '.join(str(s) for s in sym)})",
                arg=0,
                hint="give the dims literal values (dim N = 4)",
            )
    else:
        size = total
    shape = list(first.shape)
    shape[axis] = size
    return TensorType(_same_dtype("concatenate", xs), tuple(shape))


def _stack_rule(types, static):
    (xs,) = types
    if not xs:
        raise ShapeError("stack needs at least one tensor", arg=0)
    first = xs[0]
    for i, x in enumerate(xs):
        if x.shape != first.shape:
            raise ShapeError(
                f"stack needs equal shapes: item {i} is {x} but item 0 is {first}", arg=0
            )
    axis = normalize_axis(static["axis"], first.ndim + 1, "stack")
    shape = list(first.shape)
    shape.insert(axis, len(xs))
    return TensorType(_same_dtype("stack", xs), tuple(shape))


def _reshape_rule(types, static):
    (x,) = types
    target = list(static["shape"])
    if target.count(-1) > 1:
        raise ShapeError("reshape: at most one -1 in the target shape", arg=0)
    src_const, src_syms = size_key(x.shape)
    known = [d for d in target if not (isinstance(d, int) and d == -1)]
    dst_const, dst_syms = size_key(known)
    if -1 in target:
        rest = list(src_syms)
        for s in dst_syms:
            if s not in rest:
                raise ShapeError(f"cannot reshape {x} to {fmt_shape(target)}", arg=0)
            rest.remove(s)
        if rest or dst_const == 0 or src_const % dst_const:
            raise ShapeError(
                f"cannot reshape {x} to {fmt_shape(target)}: the size does not divide evenly", arg=0
            )
        target[target.index(-1)] = src_const // dst_const
    elif (src_const, src_syms) != (dst_const, dst_syms):
        raise ShapeError(
            f"cannot reshape {x} ({_size(src_const, src_syms)} elements) to "
            f"{fmt_shape(target)} ({_size(dst_const, dst_syms)} elements)",
            arg=0,
        )
    return x.with_shape(tuple(target))


def _size(const, syms):
    return "·".join([str(const)] * (const != 1 or not syms) + list(syms))


def _flatten_rule(types, static):
    (x,) = types
    return _reshape_rule(types, {"shape": [-1]})


def _fill_rule(types, static):
    return TensorType("f32", tuple(static["shape"]))


OPS = (
    Op(
        "concat",
        (Arg("xs", "tensors"), Arg("axis", "int", 0)),
        _concat_rule,
        lambda xs, axis=0: jnp.concatenate(xs, axis=axis),
        "Join a list of tensors along an existing axis: concat([a, b], axis=0).",
        family="concat",
    ),
    Op(
        "stack",
        (Arg("xs", "tensors"), Arg("axis", "int", 0)),
        _stack_rule,
        lambda xs, axis=0: jnp.stack(xs, axis=axis),
        "Join equal-shaped tensors along a new axis: stack([a, b]).",
        family="stack",
    ),
    Op(
        "reshape",
        (Arg("x"), Arg("shape", "dims")),
        _reshape_rule,
        lambda x, shape: jnp.reshape(x, tuple(shape)),
        "Same elements, new shape; one entry may be -1: reshape(x, [N, -1]).",
        family="reshape",
    ),
    Op(
        "flatten",
        (Arg("x"),),
        _flatten_rule,
        lambda x: jnp.reshape(x, (-1,)),
        "All elements as a vector.",
        family="reshape",
    ),
    Op(
        "zeros",
        (Arg("shape", "dims"),),
        _fill_rule,
        lambda shape: jnp.zeros(tuple(shape)),
        "A tensor of zeros: zeros([N, 3]).",
        family="fill",
    ),
    Op(
        "ones",
        (Arg("shape", "dims"),),
        _fill_rule,
        lambda shape: jnp.ones(tuple(shape)),
        "A tensor of ones: ones([N]).",
        family="fill",
    ),
)
