"""Per-path values of a program's nodes on a dataset split: what an experiment keeps of each
method, so that every statistic can pair methods path by path.

The values are computed in chunks of at most ``chunk`` samples (one compilation per distinct
chunk length), so a test set of 100 000 paths never holds every intermediate value at once.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ddm.dsl.diagnostics import DataDiagnostic
from ddm.runtime import solver_report
from ddm.runtime.program import Program

__all__ = ["value_ids", "per_path"]

CHUNK = 8192


def value_ids(prog: Program, names: Sequence[str], what: str = "an experiment") -> tuple[int, ...]:
    """The IR ids of named per-sample nodes or inputs; an unknown name or a batch-stage node
    (one value for the whole batch, not one per path) is an error naming what exists."""
    import difflib

    g = prog.graph
    inputs = {i.name: i.value for i in g.inputs}
    ids = []
    for name in names:
        vid = g.nodes.get(name, inputs.get(name))
        if vid is None:
            close = difflib.get_close_matches(name, [*g.nodes, *inputs], n=1)
            raise DataDiagnostic(
                None,
                f"{what}: {g.file} has no node or input '{name}'",
                hint=f"did you mean '{close[0]}'?" if close else None,
            )
        if g.values[vid].stage == "batch":
            raise DataDiagnostic(
                g.values[vid].span,
                f"{what}: node '{name}' is a statistic of the whole batch, not one value per path",
                hint="name the per-sample node it is computed from",
            )
        ids.append(vid)
    return tuple(ids)


def per_path(
    prog: Program,
    params,
    arrays: Mapping[str, np.ndarray],
    names: Sequence[str],
    chunk: int = CHUNK,
    what: str = "the test set",
) -> dict[str, np.ndarray]:
    """``{name: values [n, …]}`` of the nodes or inputs ``names`` for every sample of
    ``arrays`` at ``params``; a failed solve is the located error the training loop raises."""
    ids = value_ids(prog, names)
    g = prog.graph
    needed = {s.name for s in g.inputs_needed(list(ids))}
    data = {k: np.asarray(a) for k, a in arrays.items() if k in needed}
    n = len(next(iter(arrays.values())))
    fn = _jitted(prog)
    parts: list[dict[int, np.ndarray]] = []
    if not data:
        raise DataDiagnostic(
            None, f"{', '.join(names)} depend on no input, so they have no value per path"
        )
    for start in range(0, n, chunk):
        batch = {k: a[start : start + chunk] for k, a in data.items()}
        values, aux = fn(params, batch, ids)
        solver_report.enforce(prog.product, aux.solvers, what)
        parts.append({i: np.asarray(values[i]) for i in ids})
    return {name: np.concatenate([p[i] for p in parts]) for name, i in zip(names, ids)}


def _jitted(prog: Program):
    """The program's batch evaluation of chosen values, jitted once per program."""
    import jax

    fn = getattr(prog, "_per_path_values", None)
    if fn is None:
        fn = jax.jit(prog.product.values, static_argnums=(2,))
        prog._per_path_values = fn  # type: ignore[attr-defined]
    return fn
