"""Run-time reports of declarative nodes: which instance failed, how, and with what residual.

Solvers return a per-instance :class:`~ddm.library.solvers.status.Info`, which the compiled
functions hand back in their aux by node id. This module turns concrete infos into a
:class:`SolverDiagnostic` located at the node (the ``error`` policy), into counts for the
training log (on device, a few scalars per node: :func:`step_stats`), and a failure recorded
under a transformation (:mod:`ddm.compiler.failures`) into the same diagnostic
(:func:`from_failure`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ddm.compiler.product import Product
from ddm.library.solvers.status import (
    ADJOINT_NAMES,
    STATUS_HINTS,
    STATUS_NAMES,
    adjoint_name,
    status_name,
)
from ddm.runtime.errors import SolverDiagnostic


def concrete(infos) -> bool:
    from jax.core import Tracer

    # an Info's fields are traced together: its status tells
    return not any(isinstance(info.status, Tracer) for info in infos.values())


def summary(product: Product, infos: Mapping[int, Any]) -> dict[str, dict]:
    """Per node: instances, how many ended in each status, worst residual, mean iterations,
    and how many instances' gradients take each backward mode (``adjoint``: see
    ``ADJOINT_REASONS``; an evaluation that does not differentiate reports the mode planned)."""
    out = {}
    for vid, info in infos.items():
        status = np.atleast_1d(np.asarray(info.status))
        adjoint = np.atleast_1d(np.asarray(info.adjoint))
        out[product.label(vid)] = {
            "instances": int(status.size),
            "status": {STATUS_NAMES[k]: int(np.sum(status == k)) for k in np.unique(status)},
            "max_residual": float(np.max(np.asarray(info.residual))),
            "mean_iterations": float(np.mean(np.asarray(info.iterations))),
            "adjoint": {adjoint_name(k): int(np.sum(adjoint == k)) for k in np.unique(adjoint)},
        }
    return out


def failures(product: Product, infos: Mapping[int, Any], policy: str = "error"):
    """``(vid, where, status, residual, n_failed, n)`` of the first failed instance of each
    node whose infeasibility policy is ``policy``; ``where`` is the flat instance index, or
    ``(sample indices, step indices)`` for a node inside scans."""
    out = []
    for vid, info in sorted(infos.items()):
        problem = product.graph.values[vid].attr("problem")
        if problem.on_infeasible != policy:
            continue
        status = np.atleast_1d(np.asarray(info.status))
        # one comparison per accepted status (a few): np.isin costs tens of µs per call, as
        # much as a whole single-decision solve
        accepted = status == problem.accepted[0]
        for code in problem.accepted[1:]:
            accepted |= status == code
        if accepted.all():
            continue
        bad = np.flatnonzero(~accepted)
        if bad.size:
            k = int(bad[0])
            residual = np.atleast_1d(np.asarray(info.residual)).ravel()
            out.append(
                (
                    vid,
                    _where(product, vid, k, np.shape(info.status)),
                    int(status.ravel()[k]),
                    float(residual[k]),
                    int(bad.size),
                    int(status.size),
                )
            )
    return out


def _where(product: Product, vid: int, k: int, shape: tuple):
    steps = _scan_depth(product.graph).get(vid, 0)  # inside scans the last axes are steps
    if not steps:
        return k
    index = [int(i) for i in np.unravel_index(k, shape)]
    return (tuple(index[:-steps]), tuple(index[-steps:]))


def _scan_depth(graph) -> dict[int, int]:
    """For each value inside scans, how many scans enclose it."""
    depth: dict[int, int] = {}
    for v in graph.values:
        if v.op == "scan":
            for i in range(*v.attr("scan").body):
                depth[i] = depth.get(i, 0) + 1
    return depth


def diagnostic(
    product: Product,
    vid: int,
    where,
    status: int,
    residual: float,
    n_bad: int,
    n: int,
    what: str = "",
) -> SolverDiagnostic:
    """The located error for a failed instance of node ``vid``."""
    v = product.graph.values[vid]
    if isinstance(where, tuple):  # a node inside a scan: (sample index, step indices)
        sample, steps = where
        step = ", ".join(str(s) for s in steps)
        at = (f"instance {sample[0]}, " if sample else "") + f"step {step}"
    else:
        at = f"instance {where}" + (f" of {n}" if n > 1 else "")
    more = f"; {n_bad - 1} more instance(s) failed" if n_bad > 1 else ""
    during = f" during {what}" if what else ""
    hint = (
        STATUS_HINTS[status] if 0 <= status < len(STATUS_HINTS) else ""
    ) + "; or set on_infeasible=\"nan\" in its 'using' clause to return NaN for failed instances"
    err = SolverDiagnostic(
        v.span,
        f"{v.attr('problem').sense} node '{product.label(vid)}' "
        f"failed on {at}{during}: {status_name(status)} (residual "
        f"{residual:.3g}){more}",
        hint=hint.lstrip("; "),
    )
    return product.locate(err)  # type: ignore[return-value]


def enforce(product: Product, infos: Mapping[int, Any], what: str = "") -> None:
    """Raise :class:`SolverDiagnostic` for the first failed instance of a node with the
    ``error`` policy (concrete infos only: traced ones are the checks' business)."""
    if not infos or not concrete(infos):
        return
    found = failures(product, infos)
    if found:
        raise diagnostic(product, *found[0], what=what)


def from_failure(product: Product, failure, what: str = "") -> SolverDiagnostic:
    """The diagnostic of a failure a collector recorded (:mod:`ddm.compiler.failures`)."""
    n = int(np.prod(failure.shape)) if failure.shape else 1
    return diagnostic(
        product,
        failure.vid,
        _where(product, failure.vid, failure.instance, failure.shape),
        failure.status,
        failure.residual,
        1,
        n,
        what,
    )


# --- inside a training step --------------------------------------------------------------------


def _rejected(problem, status):
    """Per instance, whether its status is not one the node accepts (in the graph)."""
    import jax.numpy as jnp

    return ~jnp.isin(status, jnp.asarray(problem.accepted))


def any_failed(product: Product, infos):
    """Whether a solve of an ``error``-policy node failed, in the graph (a bool scalar) — the
    one value a single decision reads back (``Program.apply``); None when no node has that
    policy."""
    import jax.numpy as jnp

    failed = None
    for vid, info in infos.items():
        problem = product.graph.values[vid].attr("problem")
        if problem.on_infeasible == "error":
            bad = jnp.any(_rejected(problem, jnp.ravel(info.status)))
            failed = bad if failed is None else failed | bad
    return failed


def step_stats(product: Product, infos):
    """``(ok, stats)``: whether every error-policy solve succeeded, and per node the failures,
    the first failure (index, status, residual), worst residual, mean iterations and the count
    of each status — computed on device, a few scalars each."""
    import jax.numpy as jnp

    ok = jnp.bool_(True)
    stats = {}
    for vid, info in infos.items():
        # flat over the batch and, for a node inside a scan, its steps ([B, N] row-major)
        status = jnp.ravel(info.status)
        residual = jnp.ravel(info.residual)
        problem = product.graph.values[vid].attr("problem")
        bad = _rejected(problem, status)
        first = jnp.argmax(bad)
        if problem.on_infeasible == "error":
            ok = ok & ~jnp.any(bad)
        counts = jnp.stack([jnp.sum(status == code) for code in range(len(STATUS_NAMES))])
        adjoint = jnp.ravel(info.adjoint)
        modes = jnp.stack([jnp.sum(adjoint == code) for code in range(len(ADJOINT_NAMES))])
        stats[vid] = {
            "failed": jnp.sum(bad),
            "first": first,
            "status": status[first],
            "counts": counts,
            "adjoint": modes,
            "per_sample": status.size // max(jnp.shape(info.status)[0], 1)
            if jnp.ndim(info.status)
            else 1,
            "residual": residual[first],
            "max_residual": jnp.max(residual),
            "mean_iterations": jnp.mean(jnp.atleast_1d(info.iterations).astype(jnp.float32)),
        }
    return ok, stats


def step_failure(product: Product, stats, step: int, idx) -> SolverDiagnostic:
    """The stop for a training step whose error-policy solve failed (``idx``: the rows of the
    step's batch)."""
    for vid, st in sorted(stats.items()):
        problem = product.graph.values[vid].attr("problem")
        if problem.on_infeasible != "error" or int(st["failed"]) == 0:
            continue
        k, at = divmod(int(st["first"]), int(st["per_sample"]))  # at: the scan step, if any
        code = int(st["status"])
        v = product.graph.values[vid]
        inside = f", scan step {at}" if vid in product.graph.nested() else ""
        err = SolverDiagnostic(
            v.span,
            f"{problem.sense} node '{product.label(vid)}' failed at "
            f"step {step} on training sample {int(idx[k])} (instance {k} of "
            f"the batch{inside}): {status_name(code)} (residual "
            f"{float(st['residual']):.3g}); {int(st['failed'])} instance(s) "
            "failed; training stopped before applying that step's update",
            hint=STATUS_HINTS[code],
        )
        return product.locate(err)  # type: ignore[return-value]
    raise AssertionError("step_failure called without a failure")


def nan_policy_failed(product: Product, stats) -> bool:
    """Whether a node with the ``nan`` policy failed on the step (its NaNs were asked for)."""
    return any(
        product.graph.values[vid].attr("problem").on_infeasible == "nan" and int(st["failed"]) > 0
        for vid, st in stats.items()
    )


def step_log(product: Product, stats) -> dict:
    """Per declarative node on a log step: failures, the count of each status met, worst
    residual, mean iterations, and the count of each backward mode the step's gradient took."""
    out = {}
    for k, st in stats.items():
        entry: dict[str, Any] = {
            name: (int(x) if name == "failed" else float(x))
            for name, x in st.items()
            if name in ("failed", "max_residual", "mean_iterations")
        }
        counts = [int(c) for c in st["counts"]]
        entry["status"] = {STATUS_NAMES[i]: c for i, c in enumerate(counts) if c}
        modes = [int(c) for c in st["adjoint"]]
        entry["adjoint"] = {ADJOINT_NAMES[i]: c for i, c in enumerate(modes) if c}
        out[product.label(k)] = entry
    return out
