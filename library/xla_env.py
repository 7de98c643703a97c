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


# ------------------------------------------------------------------ dispatch of small programs

_dispatch_applied = False


def apply_dispatch() -> None:
    """``DDM_DISPATCH=inline``: run every computation on the calling thread (JAX's
    ``jax_cpu_enable_async_dispatch=False``), for a decision maker called one decision at a
    time. Idempotent; called when a :class:`~ddm.runtime.program.Program` is built.

    Why: JAX's CPU client runs a program whose estimated cost exceeds 1000 flops on another
    thread and lets the caller wait for it. For one decision — a budget argmin at n = 10 is
    ~5000 flops — that hand-over costs more than the arithmetic: ``Program.apply`` took a
    median of 52 µs with it and 23 µs without (``python -m ddm.bench.latency``). Training
    loops gain from the default (the next step is dispatched while one runs: credit.ddm ran
    30 % slower inline, hedge.ddm 20 % faster), so it stays the default; ``async`` (or unset)
    keeps it. The setting must be in place before JAX starts its CPU backend: when a JAX
    computation ran before the first program was built, it has no effect, and a warning
    says so.
    """
    global _dispatch_applied
    if _dispatch_applied:
        return
    _dispatch_applied = True
    mode = os.environ.get("DDM_DISPATCH", "async").strip().lower()
    if mode in ("", "async"):
        return
    import warnings

    if mode != "inline":
        warnings.warn(f"DDM_DISPATCH={mode!r} is not 'inline' or 'async'; ignored", stacklevel=3)
        return
    import jax
    from jax._src import xla_bridge  # backends_are_initialized: no public equivalent

    if xla_bridge.backends_are_initialized():
        if jax.config.read("jax_cpu_enable_async_dispatch"):
            warnings.warn(
                "DDM_DISPATCH=inline has no effect: JAX's CPU backend started before the first "
                "ddm program was built; set DDM_DISPATCH before any JAX computation, or call "
                "jax.config.update('jax_cpu_enable_async_dispatch', False) first thing",
                stacklevel=3,
            )
        return
    jax.config.update("jax_cpu_enable_async_dispatch", False)
