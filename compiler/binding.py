"""Call-time checks: the arrays given for a program's inputs bind its symbolic dims.

Runs at trace time on shapes only (works under ``jax.jit``); a mismatch is a
:class:`DataDiagnostic` that names the input, the axis and the dim, located at the input's
declaration.
"""

from __future__ import annotations

from typing import Mapping

from ddm.compiler.ir import Graph, InputSpec
from ddm.dsl.diagnostics import DataDiagnostic, Note
from ddm.library.types import SymDim


def check_names(
    graph: Graph, given: Mapping[str, object], needed: tuple[InputSpec, ...], what: str
) -> None:
    declared = {i.name for i in graph.inputs}
    for name in given:
        if name not in declared:
            raise DataDiagnostic(
                None,
                f"{what}: unknown input '{name}'; the program's inputs "
                f"are: {', '.join(sorted(declared)) or 'none'}",
            )
    for spec in needed:
        if spec.name not in given:
            raise DataDiagnostic(spec.span, f"{what}: missing input '{spec.name}' ({spec.type})")


def bind_dims(
    graph: Graph,
    shapes: Mapping[str, tuple],
    dtypes: Mapping[str, object],
    needed: tuple[InputSpec, ...],
    batched: bool,
    what: str,
) -> dict[str, int]:
    """Bind every symbolic dim from the given arrays' shapes; check literal dims and dtypes.

    ``shapes`` include the leading batch axis when ``batched``.
    """
    dims: dict[str, int] = {d.name: d.value for d in graph.dims if d.value is not None}
    bound_by: dict[str, str] = {}
    batch_size, batch_from = None, None
    for spec in needed:
        shape = tuple(shapes[spec.name])
        kind = _kind(dtypes[spec.name])
        want_kind = (
            "float"
            if spec.type.dtype in ("f32", "f64")
            else "int"
            if spec.type.dtype == "i32"
            else "bool"
        )
        if kind != want_kind and not (want_kind == "float" and kind in ("int", "bool")):
            raise DataDiagnostic(
                spec.span,
                f"{what}: input '{spec.name}' is {spec.type} but got {dtypes[spec.name]} values",
            )
        if batched:
            if not shape:
                raise DataDiagnostic(
                    spec.span,
                    f"{what}: input '{spec.name}' needs a leading batch axis, got a scalar",
                )
            if batch_size is None:
                batch_size, batch_from = shape[0], spec.name
            elif shape[0] != batch_size:
                raise DataDiagnostic(
                    spec.span,
                    f"{what}: input '{spec.name}' has batch size "
                    f"{shape[0]}, but '{batch_from}' has {batch_size}",
                )
            shape = shape[1:]
        want = spec.type.shape
        if len(shape) != len(want):
            raise DataDiagnostic(
                spec.span,
                f"{what}: input '{spec.name}' must be {spec.type} "
                f"(rank {len(want)}), got an array of shape {shape}"
                + (" after the batch axis" if batched else ""),
            )
        for axis, (d, got) in enumerate(zip(want, shape)):
            if isinstance(d, int):
                if got != d:
                    raise DataDiagnostic(
                        spec.span,
                        f"{what}: input '{spec.name}' axis {axis} must have size {d}, got {got}",
                    )
                continue
            name = d.name
            if name in dims and dims[name] != got:
                src = f"input '{bound_by[name]}'" if name in bound_by else "its declaration"
                raise DataDiagnostic(
                    spec.span,
                    f"{what}: input '{spec.name}' axis {axis} is "
                    f"{name} = {dims[name]} (from {src}), got {got}",
                )
            dims[name] = int(got)
            bound_by.setdefault(name, spec.name)
    return dims


def _kind(dtype) -> str:
    text = str(dtype)
    if "float" in text:
        return "float"
    if "int" in text:
        return "int"
    if "bool" in text:
        return "bool"
    return text


def resolve(d, dims: Mapping[str, int], span=None):
    """A dim's concrete size under ``dims``."""
    if isinstance(d, SymDim):
        if d.value is not None:
            return d.value
        if d.name not in dims:
            raise DataDiagnostic(
                span,
                f"dim '{d.name}' has no value here",
                hint="give it a value (dim N = 4), or pass an input that binds it",
                notes=(),
            )
        return dims[d.name]
    return d


__all__ = ["bind_dims", "check_names", "resolve", "Note"]
