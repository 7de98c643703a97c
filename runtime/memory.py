"""Room for a program: its estimated footprint against the device's memory, before compiling.

:func:`ddm.compiler.footprint.estimate` gives a lower bound of what the program needs at its
bound dims; when even that exceeds the device's memory, compiling and running could only end in
XLA's ``RESOURCE_EXHAUSTED`` (or the machine swapping), so ddm refuses at once with a located
error that names the dim that makes the largest part large.

The device's memory: an accelerator's ``bytes_limit`` as JAX reports it; on the CPU, physical
memory, or the container's limit where one is set (cgroup ``memory.max``).
"""

from __future__ import annotations

import os
from typing import Mapping

from ddm.compiler.footprint import dim_span, estimate, human
from ddm.compiler.ir import Graph
from ddm.dsl.diagnostics import Note
from ddm.runtime.errors import ResourceDiagnostic


def device_bytes() -> int | None:
    """Memory of JAX's default device in bytes; None where it cannot be told."""
    import jax

    dev = jax.devices()[0]
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # backends without memory statistics raise
        stats = {}
    if stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    if dev.platform != "cpu":
        return None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as fh:
            limit = fh.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def check(
    graph: Graph,
    dims: Mapping[str, int],
    batch: int,
    training: bool,
    what: str,
    available: int | None = None,
    params_only: bool = False,
) -> None:
    """Raise a :class:`ResourceDiagnostic` when the footprint's lower bound (its params
    alone with ``params_only``) exceeds ``available`` bytes (default: the device's memory)."""
    fp = estimate(graph, dims, batch, training)
    if params_only:
        fp = fp.only("param")
    if not fp.terms:
        return
    have = device_bytes() if available is None else available
    if have is None or fp.total <= have:
        return
    part = fp.largest
    dim = part.dims[0] if part.dims else None
    where = (dim_span(graph, dim) if dim else None) or part.span
    size = {d.name: d.value for d in graph.dims if d.value is not None} | dict(dims)
    sized = f" at {dim} = {size[dim]:,}" if dim and dim in size else ""
    raise ResourceDiagnostic(
        where,
        f"{what} needs at least {human(fp.total)}{sized}; this device has {human(have)}",
        hint=(f"make {dim} smaller" if dim else "make the program's sizes smaller")
        + (" or the batch" if batch > 1 else ""),
        notes=(Note(part.span, f"the largest part: {part.what}, {human(part.bytes)}"),),
    )
