"""The persistent XLA compilation cache: a second run of the same program loads its compiled
executables from disk instead of compiling them again.

``ddmc`` turns it on for every command that compiles (``--no-cache`` or ``DDM_NO_CACHE=1``
turn it off); from Python, ``enable()``. The folder is ``$DDM_CACHE_DIR``, else
``$XDG_CACHE_HOME/ddm/xla``, else ``~/.cache/ddm/xla``. JAX keys each entry by the program's
HLO, the compile options, the backend and the jax/jaxlib versions, so a changed program or a
new jaxlib compiles afresh. Every compilation is stored (:data:`MIN_COMPILE_S` is 0): a run
compiles dozens of small functions — metrics reductions, a data source's draws, eager ops —
each 10–400 ms to compile and a few ms to read back; storing them all took
``examples/trading.ddm``'s rerun from 8.2 to 6.1 s (1.7 MB of cache). Measured on
``examples/hedge_longonly.ddm`` and ``trading.ddm`` (bench/README.md). The traced programs
themselves are kept beside it, in ``traces/`` (:mod:`ddm.runtime.trace_cache`).
"""

from __future__ import annotations

import os

__all__ = ["enable", "enabled", "folder", "MIN_COMPILE_S"]

MIN_COMPILE_S = 0.0


def folder() -> str:
    if os.environ.get("DDM_CACHE_DIR"):
        return os.environ["DDM_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ddm", "xla")


_enabled: str | None = None  # the folder enable() set, if any


def enabled() -> str | None:
    """The folder of the cache turned on in this process, else None."""
    return _enabled


def enable(path: str | None = None) -> str | None:
    """Point JAX's persistent compilation cache at ``path`` (default :func:`folder`); the
    folder used, or None where it cannot be created or written (then nothing is cached)."""
    import jax

    path = path or folder()
    try:
        os.makedirs(path, exist_ok=True)
        if not os.access(path, os.W_OK):
            return None
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    global _enabled
    _enabled = path
    return path
