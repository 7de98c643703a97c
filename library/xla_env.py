"""The XLA CPU thread pool, sized before JAX starts; why ddm's solvers cannot deadlock it.

Root cause of the hangs seen with jaxlib 0.10.x (gdb stack dumps of hung processes,
``docs/troubleshooting.md``): a batched LAPACK call (seen: Cholesky, ``lapack_spotrf_ffi``) splits
its batch over XLA's intra-op pool and *blocks* its own pool thread until the pieces finish
(``jax::ParallelBatchMap``). When as many independent batched calls as the pool has threads run
at once — XLA's thunk executor runs independent operations concurrently — every thread waits for
pieces no free thread can run: 0 % CPU, forever. ``examples/hedge_longonly.ddm`` hung so with
``NPROC=2``, a variant with six argmin nodes with ``NPROC=4``. The fix is at the source: the
solvers factor through :mod:`ddm.library.lapack`, whose calls stay under jaxlib's threshold for
splitting, so no call of ours ever waits on the pool, whatever its size. Raising the pool is no
fence: 32 threads on 2 cores made a batched solve 17× slower.

The pool size itself: XLA reads ``NPROC`` (else the core count) when JAX starts its CPU backend.
ddm sets ``NPROC`` to at least 4 when the user has not set it (a user's own batched ``jax.scipy``
solves, outside ddm, keep some margin) and keeps the user's value. Regression tests:
``tests/test_xla_env.py``.
"""

from __future__ import annotations

import os

MIN_POOL = 4
_applied = False


def protect() -> None:
    """Set ``NPROC`` to ``max(4, cores)`` unless the user chose a value (idempotent). Once
    JAX's backend has started the pool is sized and this changes nothing."""
    global _applied
    if _applied:
        return
    _applied = True
    if "NPROC" not in os.environ:
        os.environ["NPROC"] = str(max(MIN_POOL, os.cpu_count() or 1))
