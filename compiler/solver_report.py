"""Run-time reports of declarative nodes: which instance failed, how, and with what residual.

Solvers return a per-instance :class:`~ddm.library.solvers.status.Info`; this module turns the
concrete arrays into a :class:`SolverDiagnostic` located at the node (for the ``error``
policy), or into counts for the training log.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ddm.dsl.diagnostics import SolverDiagnostic


def _concrete(infos) -> bool:
    from ddm.library.lazy import jax
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(infos))


def summary(prog, infos: Mapping[int, Any]) -> dict[str, dict]:
    """Per node: instances, how many failed by status, worst residual, mean iterations."""
    from ddm.library.solvers.status import STATUS_NAMES

    out = {}
    for vid, info in infos.items():
        status = np.atleast_1d(np.asarray(info.status))
        counts = {STATUS_NAMES[k]: int(np.sum(status == k)) for k in np.unique(status)}
        out[prog.node_label(vid)] = {
            "instances": int(status.size),
            "status": counts,
            "max_residual": float(np.max(np.asarray(info.residual))),
            "mean_iterations": float(np.mean(np.asarray(info.iterations))),
        }
    return out


def failures(prog, infos: Mapping[int, Any], policy: str = "error"):
    """``(vid, instance, status, residual, n_failed, n)`` of the first failed instance of each
    node whose infeasibility policy is ``policy``."""
    out = []
    depth = _scan_depth(prog.graph)
    for vid, info in sorted(infos.items()):
        problem = prog.graph.values[vid].attr("problem")
        if problem.on_infeasible != policy:
            continue
        status = np.atleast_1d(np.asarray(info.status))
        bad = np.flatnonzero(~np.isin(status, problem.accepted))
        if bad.size:
            k = int(bad[0])
            residual = np.atleast_1d(np.asarray(info.residual)).ravel()
            where: int | tuple = k
            steps = depth.get(vid, 0)  # inside scans the last axes are their steps
            if steps:
                index = [int(i) for i in np.unravel_index(k, np.asarray(info.status).shape)]
                where = (tuple(index[:-steps]), tuple(index[-steps:]))
            out.append((vid, where, int(status.ravel()[k]), float(residual[k]),
                        int(bad.size), int(status.size)))
    return out


def _scan_depth(graph) -> dict[int, int]:
    """For each value inside scans, how many scans enclose it."""
    depth: dict[int, int] = {}
    for v in graph.values:
        if v.op == "scan":
            for i in range(*v.attr("scan").body):
                depth[i] = depth.get(i, 0) + 1
    return depth


def enforce(prog, infos: Mapping[int, Any], what: str = "") -> None:
    if not infos or not _concrete(infos):
        return
    found = failures(prog, infos)
    if not found:
        return
    from ddm.library.solvers.status import STATUS_HINTS, status_name

    vid, k, status, residual, n_bad, n = found[0]
    v = prog.graph.values[vid]
    label = prog.node_label(vid)
    if isinstance(k, tuple):  # a node inside a scan: (sample index, step indices)
        sample, steps = k
        step = ", ".join(str(s) for s in steps)
        where = (f"instance {sample[0]}, " if sample else "") + f"step {step}"
    else:
        where = f"instance {k}" + (f" of {n}" if n > 1 else "")
    more = f"; {n_bad - 1} more instance(s) failed" if n_bad > 1 else ""
    during = f" during {what}" if what else ""
    err = SolverDiagnostic(v.span, f"{v.attr('problem').sense} node '{label}' failed on {where}"
                           f"{during}: {status_name(status)} (residual {residual:.3g}){more}",
                           hint=STATUS_HINTS[status] + "; or set on_infeasible=\"nan\" in its "
                           "'using' clause to return NaN for failed instances")
    raise prog.sources.locate(err)
