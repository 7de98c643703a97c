"""Ahead-of-time compiled functions that time tracing apart from XLA compilation and warn when
a new input signature forces a recompile."""

from __future__ import annotations

import time
import warnings


class RecompileWarning(UserWarning):
    pass


def _signature(args):
    import jax

    leaves, tree = jax.tree_util.tree_flatten(args)
    return tree, tuple((tuple(x.shape), str(x.dtype)) for x in leaves)


class Compiled:
    """``jax.jit(fn)`` compiled per input signature; ``trace_s`` and ``compile_s`` add up over
    compilations; a second signature emits :class:`RecompileWarning`."""

    def __init__(self, fn, name: str, donate_argnums=()):
        import jax

        self.name = name
        self.jitted = jax.jit(fn, donate_argnums=donate_argnums)
        self.executables = {}
        self.trace_s = 0.0
        self.compile_s = 0.0

    def __call__(self, *args):
        sig = _signature(args)
        exe = self.executables.get(sig)
        if exe is None:
            if self.executables:
                warnings.warn(
                    f"{self.name} recompiled for new input shapes "
                    f"{[s for s in sig[1]]}; keep batch shapes fixed to avoid it",
                    RecompileWarning,
                    stacklevel=2,
                )
            t0 = time.perf_counter()
            lowered = self.jitted.lower(*args)
            t1 = time.perf_counter()
            exe = lowered.compile()
            t2 = time.perf_counter()
            self.trace_s += t1 - t0
            self.compile_s += t2 - t1
            self.executables[sig] = exe
        return exe(*args)

    @property
    def compilations(self) -> int:
        return len(self.executables)

    @property
    def recompilations(self) -> int:
        """Compilations beyond the first (0 for a function never called)."""
        return max(self.compilations - 1, 0)
