"""Ahead-of-time compiled functions that time tracing apart from XLA compilation and warn when
a new input signature forces a recompile; with a trace cache (runtime/trace_cache.py), a rerun
loads their traced programs instead of tracing them."""

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

    def __init__(self, fn, name: str, donate_argnums=(), traces=None):
        import jax

        self.name = name
        self.jitted = jax.jit(fn, donate_argnums=donate_argnums)
        self.donate = tuple(donate_argnums)
        self.traces = traces  # a trace_cache.TraceCache, or None: traced on every run
        self.executables = {}
        self.trace_s = 0.0
        self.compile_s = 0.0
        self.program = "traced"  # the last compilation's: "traced, stored", "loaded" (the cache)

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
            exe = self._exported(args) if self.traces is not None else None
            if exe is None:
                self.program = "traced"
                t0 = time.perf_counter()
                lowered = self.jitted.lower(*args)
                t1 = time.perf_counter()
                exe = lowered.compile()
                t2 = time.perf_counter()
                self.trace_s += t1 - t0
                self.compile_s += t2 - t1
            self.executables[sig] = exe
        return exe(*args)

    def _exported(self, args):
        """The executable through the trace cache: its entry's program when there is one,
        else the function traced once by ``jax.export`` (and stored); None where the function
        cannot be exported (then it is compiled as usual). Outputs and inputs cross the
        exported program as flat lists; the structures are kept here."""
        import jax

        from ddm.dsl.diagnostics import DdmError

        flatten, unflatten = jax.tree_util.tree_flatten, jax.tree_util.tree_unflatten
        cache = self.traces
        assert cache is not None
        leaves, tree = flatten(args)
        donated, at = [], 0
        for k, arg in enumerate(args):  # the leaves of the donated arguments
            n = len(jax.tree_util.tree_leaves(arg))
            donated += list(range(at, at + n)) if k in self.donate else []
            at += n
        t0 = time.perf_counter()
        key = cache.key(self.name, args, self.donate)
        hit = cache.load(key)
        if hit is not None:
            self.program = "loaded"
        else:
            box = []

            def flat(*xs):
                out, out_tree = flatten(self.jitted(*unflatten(tree, xs)))
                box.append(out_tree)
                return out

            try:
                blob = jax.export.export(jax.jit(flat))(*leaves).serialize()
                # the first run calls what a rerun will load (deserialising drops weak types:
                # the two must agree, or a function fed the outputs would key differently)
                exported = jax.export.deserialize(blob)
            except DdmError:
                raise
            except Exception:  # e.g. a host callback: not exportable, compiled as usual
                self.trace_s += time.perf_counter() - t0
                return None
            hit = exported, box[0]
            self.program = "traced, stored" if cache.store(key, blob, box[0]) else "traced"
        exported, out_tree = hit
        lowered = jax.jit(exported.call, donate_argnums=tuple(donated)).lower(*leaves)
        t1 = time.perf_counter()
        exe = lowered.compile()
        self.trace_s += t1 - t0
        self.compile_s += time.perf_counter() - t1
        return lambda *a: unflatten(out_tree, exe(*flatten(a)[0]))

    @property
    def compilations(self) -> int:
        return len(self.executables)

    @property
    def recompilations(self) -> int:
        """Compilations beyond the first (0 for a function never called)."""
        return max(self.compilations - 1, 0)
