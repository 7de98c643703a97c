"""Guard against a known XLA CPU deadlock, applied before JAX starts its CPU backend.

On the CPU backend of jaxlib 0.10.x, XLA sizes its intra-op thread pool from ``NPROC`` (else the
core count). With a pool of two threads, a vmapped custom-VJP linear solve whose forward and
adjoint triangular solves are independent (batch 1024, n = 50, under ``value_and_grad``) was
seen to hang forever at 0 % CPU: both pool threads wait on each other. With ``NPROC=4`` it ran.
ddm therefore sets ``NPROC`` to at least 4 before it first touches JAX, unless the user chose a
value (``docs/troubleshooting.md``; regression test: ``tests/test_xla_env.py``). A program that
computes with JAX before touching ddm has already sized its pool: ddm warns on small machines.
"""

from __future__ import annotations

import os
import sys
import warnings

MIN_POOL = 4
_applied = False


def protect() -> None:
    global _applied
    if _applied:
        return
    _applied = True
    if "NPROC" in os.environ:
        return
    os.environ["NPROC"] = str(max(MIN_POOL, os.cpu_count() or 1))
    if (os.cpu_count() or 1) < MIN_POOL and _backend_started():
        warnings.warn(
            "JAX's CPU backend started before ddm could size XLA's thread pool; on "
            "this small machine some batched solves can deadlock. Import ddm first or "
            f"set NPROC={MIN_POOL} in the environment.",
            RuntimeWarning,
            stacklevel=3,
        )


def _backend_started() -> bool:
    bridge = sys.modules.get("jax._src.xla_bridge")
    return bool(getattr(bridge, "_backends", None))
