"""Where a failed solve is reported while the program runs under someone else's transformation.

A failed instance of a declarative node is NaN in its value and in every gradient it touches
(``compiler/lower_argmin.py``): under ``jax.jit``, ``jax.grad`` or ``jax.vmap`` it can never
pass for a plausible number. To say *which* node and instance failed, the compiled functions,
when traced inside :func:`collect`, also hand each error-policy node's first failure to a host
callback that records it in the collector. ``Program.checked`` re-runs a computation whose
result is not finite that way (with ``jax.disable_jit()``, so no trace is reused from a cache)
and raises the located diagnostic. Outside :func:`collect` nothing is emitted: ordinary calls
pay nothing.

Why not ``jax.experimental.checkify``: it cannot transform a ``while_loop`` batched by
``vmap`` ("checkify-of-vmap-of-while"), and every iterative solver's loop is batched over the
samples, so checkify fails on any program with an iterative declarative node.

>>> with collect() as found:
...     report(7, (4,), True, 2, 2, 3.5)
>>> found
[Failure(vid=7, shape=(4,), instance=2, status=2, residual=3.5)]
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, NamedTuple


class Failure(NamedTuple):
    vid: int  # the declarative node
    shape: tuple[int, ...]  # of its infos: the batch, and the steps of enclosing scans
    instance: int  # flat index into ``shape`` of the first failed instance
    status: int
    residual: float


_lock = threading.Lock()
_collectors: list[list[Failure]] = []


@contextmanager
def collect() -> Iterator[list[Failure]]:
    """Collect the failures of functions traced and run inside the block (one collector at a
    time per process is meaningful: callbacks run on XLA's threads, outside this one's
    context)."""
    found: list[Failure] = []
    with _lock:
        _collectors.append(found)
    try:
        yield found
    finally:
        with _lock:
            _collectors.remove(found)


def reporting() -> bool:
    """Whether a trace now should emit failure reports (a collector is open)."""
    return bool(_collectors)


def report(vid: int, shape: tuple[int, ...], failed, instance, status, residual) -> None:
    """The host side of a report: record a failure in every open collector."""
    if not bool(failed):
        return
    failure = Failure(vid, tuple(shape), int(instance), int(status), float(residual))
    with _lock:
        for found in _collectors:
            found.append(failure)
