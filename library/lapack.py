"""Batched dense factorisations that cannot deadlock jaxlib 0.10's CPU thread pool.

jaxlib 0.10.x runs a batched LAPACK call on the CPU by splitting its batch over XLA's intra-op
pool and blocking the calling pool thread until the pieces finish (``ParallelBatchMap``). When
as many independent batched calls as the pool has threads start at once — two argmin nodes on a
two-thread pool; six on four — every thread waits for pieces no thread is free to run, and the
process hangs at 0 % CPU (gdb: all pool threads in ``BlockingCounter::Wait`` under
``lapack_spotrf_ffi``; ``docs/troubleshooting.md``). jaxlib runs a call inline, on its own
thread, when its batch holds less than :data:`MIN_WORK` estimated flops.

The solvers therefore factor through the primitives here. Each is batched like the JAX op it
wraps, but on the CPU it is lowered as a loop over chunks of the batch that each stay under
jaxlib's threshold: no call ever waits on the pool. Because the chunking happens at lowering,
it sees the final batch shape, whatever ``vmap`` s produced it. Other backends lower to the
plain op. jaxlib releases after 0.10 run every LAPACK call inline, so the loop costs nothing
they would not; on this 2-core machine it gives up the pool's parallelism inside one call.

Where a solver is differentiated by unrolling (``backward="unroll"``), the derivative comes from
JAX's rules for the plain op (a ``custom_jvp``); those tangent computations are not chunked.

>>> import jax.numpy as jnp
>>> L = cholesky(jnp.array([[4.0, 2.0], [2.0, 3.0]]))
>>> [round(float(v), 4) for v in L.ravel()]
[2.0, 0.0, 1.0, 1.4142]
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import lax
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir

MIN_WORK = 200_000  # jaxlib's kMinWorkPerTask: a call under it runs on the calling thread
# Chunks written out as separate calls (which XLA may run side by side); beyond, one loop. Each
# written-out chunk costs compile time (slices, a call, a concatenation): at 32, the metrics of
# examples/hedge.ddm on its 1760 test days (24 chunks per factorisation) took 9.5 s of XLA time
# against 3.2 s as a loop, and ran no faster on this 2-core machine (bench/compile_time.py).
MAX_UNROLLED = 2
# Beyond, one loop making this many independent calls an iteration (copies of one call in the
# compiled program), which XLA runs side by side on the pool as it did the written-out calls —
# budget argmin n = 50, batch 1024, forward+backward: 66 ms written out, 78 ms one call an
# iteration.
LANES = 2


def _primitive(name: str, fn, ranks: tuple[int, ...], cost):
    """A primitive computing ``fn`` (written for one instance whose operands have ``ranks``)
    over leading batch axes; ``cost(*instance_shapes)`` is jaxlib's flop estimate."""
    prim = Primitive(f"ddm_{name}")
    prim.multiple_results = True

    def batched(*args):
        lead = args[0].ndim - ranks[0]
        f = fn
        for _ in range(lead):
            f = jax.vmap(f)
        out = f(*args)
        return list(out) if isinstance(out, tuple) else [out]

    def chunked(*args):
        lead = args[0].shape[: args[0].ndim - ranks[0]]
        if not all(isinstance(d, int) for d in lead):
            # a symbolic batch (jax.export with a polymorphic batch axis): its size is not
            # known until the exported function is called, so one call (docs/export.md)
            return batched(*args)
        size = 1
        for d in lead:
            size *= d
        per = max(1, cost(*(a.shape[a.ndim - r :] for a, r in zip(args, ranks))))
        chunk = max(1, -(-MIN_WORK // per) - 1)
        if size <= chunk:
            return batched(*args)
        flat = [a.reshape((size,) + a.shape[len(lead) :]) for a in args]
        chunks = -(-size // chunk)
        if chunks <= MAX_UNROLLED:
            # independent calls: XLA runs them side by side on the pool, each inline
            pieces: list = [
                batched(*(a[i : i + chunk] for a in flat)) for i in range(0, size, chunk)
            ]
        else:
            return [o.reshape(lead + o.shape[1:]) for o in _loop(batched, flat, size, chunk)]
        outs = []
        for column in zip(*pieces):  # each output of the call, over the pieces
            parts: list = list(column)
            outs.append(jnp.concatenate(parts) if len(parts) > 1 else parts[0])
        return [o.reshape(lead + o.shape[1:]) for o in outs]

    def abstract(*avals):
        outs = jax.eval_shape(batched, *avals)
        return [ShapedArray(o.shape, o.dtype) for o in outs]

    def batch_rule(args, dims):
        size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
        moved = [
            jnp.broadcast_to(a, (size,) + a.shape)
            if d is None  # not mapped
            else jnp.moveaxis(a, d, 0)
            for a, d in zip(args, dims)
        ]
        # operands of one call share their leading batch axes (see ``_broadcast``)
        outs = prim.bind(*moved)
        return outs, [0] * len(outs)

    prim.def_impl(lambda *args: batched(*args))
    prim.def_abstract_eval(abstract)
    batching.primitive_batchers[prim] = batch_rule
    mlir.register_lowering(prim, mlir.lower_fun(batched, multiple_results=True))
    mlir.register_lowering(prim, mlir.lower_fun(chunked, multiple_results=True), platform="cpu")

    @jax.custom_jvp
    def op(*args):
        return tuple(prim.bind(*_broadcast(ranks, args)))

    @op.defjvp
    def op_jvp(primals, tangents):
        # the tangent comes from JAX's own rules for the plain op: used only where a solver is
        # differentiated by unrolling (``backward="unroll"``), never on the implicit path
        _, dout = jax.jvp(lambda *a: tuple(batched(*_broadcast(ranks, a))), primals, tangents)
        return op(*primals), dout

    return op


def _loop(batched, flat: list, size: int, chunk: int) -> list:
    """``batched`` over the ``size`` instances of the flat operands, in chunks: a loop whose
    iteration makes :data:`LANES` independent calls (XLA runs them side by side on the pool),
    then calls for what is left. Each chunk is sliced inside the loop and its results written
    in place into whole outputs: slicing lanes out first copied every operand once more, and
    concatenating the lanes every output (15 + 5 of 89 ms of kernel time at n = 50, batch
    1024).

    Layouts: LAPACK reads and writes column-major, XLA's arrays are row-major. A matrix result
    is stored transposed — the row-major buffer of the transpose *is* the column-major matrix —
    so it reaches the next LAPACK call (a solve with the factor) without a copy. An output of
    an operand's shape (the factor of a matrix, the solution of a right-hand side) is written
    over that operand: the loop carries the operand, reads each chunk from it before its
    results land there, and no output buffer is zero-filled (a pass over the batch)."""
    shapes = jax.eval_shape(
        batched, *(jax.ShapeDtypeStruct((chunk,) + a.shape[1:], a.dtype) for a in flat)
    )
    flip = [len(o.shape) >= 3 for o in shapes]

    def stored(y, f):
        return jnp.swapaxes(y, -1, -2) if f else y

    # which operand each output overwrites (None: a fresh buffer)
    over: list = []
    for o in shapes:
        free = [
            i
            for i, a in enumerate(flat)
            if i not in over and a.shape[1:] == o.shape[1:] and a.dtype == o.dtype
        ]
        over.append(free[0] if free else None)
    init = [
        stored(flat[i], f)
        if i is not None
        else jnp.zeros((size,) + o.shape[1:-2] + (o.shape[-1], o.shape[-2]), o.dtype)
        if f
        else jnp.zeros((size,) + o.shape[1:], o.dtype)
        for o, f, i in zip(shapes, flip, over)
    ]
    carried = {i: k for k, i in enumerate(over) if i is not None}
    step = LANES * chunk

    def operands(acc, off, n):
        """The operands' instances ``off … off + n`` (an overwritten one read from its
        output's buffer, unflipped)."""
        return [
            stored(lax.dynamic_slice_in_dim(acc[carried[i]], off, n), flip[carried[i]])
            if i in carried
            else lax.dynamic_slice_in_dim(a, off, n)
            for i, a in enumerate(flat)
        ]

    def write(acc, ys, off):
        return [
            lax.dynamic_update_slice_in_dim(o, stored(y, f), off, 0)
            for o, y, f in zip(acc, ys, flip)
        ]

    def body(k, acc):
        offsets = [k * step + j * chunk for j in range(LANES)]
        results = [batched(*operands(acc, off, chunk)) for off in offsets]
        # one write of the iteration's chunks together: it depends on every read, so XLA
        # updates the buffer in place (a write per chunk let a read follow a write, and XLA
        # kept the old buffer alive by copying it whole at every iteration)
        ys = [jnp.concatenate(column) for column in zip(*results)]
        return write(acc, ys, k * step)

    iters = size // step
    acc = lax.fori_loop(0, iters, body, init) if iters else init
    for off in range(iters * step, size, chunk):
        acc = write(acc, batched(*operands(acc, off, min(chunk, size - off))), off)
    return [stored(o, f) for o, f in zip(acc, flip)]


def _broadcast(ranks, args):
    """Every operand with the same leading batch axes (one call's instances)."""
    lead = jnp.broadcast_shapes(*(a.shape[: a.ndim - r] for a, r in zip(args, ranks)))
    return [jnp.broadcast_to(a, lead + a.shape[a.ndim - r :]) for a, r in zip(args, ranks)]


_CHOL = _primitive(
    "cholesky",
    lambda a: lax.linalg.cholesky(a, symmetrize_input=False),
    (2,),
    lambda a: a[0] ** 3 // 3,
)


def cholesky(a, symmetrize: bool = False):
    """Lower Cholesky factor of ``a`` (``[..., n, n]``), NaN where ``a`` is not positive
    definite — as ``lax.linalg.cholesky(a, symmetrize_input=symmetrize)``; with
    ``symmetrize`` (what ``jnp.linalg.cholesky`` does) ``a`` is first replaced by
    ``(a + aᵀ) / 2``."""
    if symmetrize:
        a = (a + jnp.swapaxes(a, -1, -2)) / 2
    return _CHOL(a)[0]


def _tri_cost(a, b):
    return a[0] * (b[0] * (b[1] if len(b) > 1 else 1))


_TRI = {
    (lower, trans, vec): _primitive(
        f"solve_triangular_{'l' if lower else 'u'}{trans}{'v' if vec else 'm'}",
        partial(jsl.solve_triangular, lower=lower, trans=trans),
        (2, 1 if vec else 2),
        _tri_cost,
    )
    for lower in (True, False)
    for trans in (0, 1)
    for vec in (True, False)
}


def solve_triangular(a, b, *, lower: bool = False, trans: int = 0):
    """``jax.scipy.linalg.solve_triangular(a, b, lower=, trans=)`` for one instance's
    ``a: [n, n]`` and ``b: [n]`` or ``[n, k]`` (batch by ``vmap``)."""
    vec = b.ndim == 1
    return _TRI[(lower, int(trans), vec)](a, b)[0]


def cho_solve(L, b):
    """Solve ``(L Lᵀ) x = b`` from a lower Cholesky factor (one instance; ``vmap`` batches)."""
    return solve_triangular(L, solve_triangular(L, b, lower=True), lower=True, trans=1)


_LU = _primitive(
    "lu_factor",
    lambda a: jsl.lu_factor(a),
    (2,),
    lambda a: a[0] * a[1] * min(a[0], a[1]),
)


def lu_factor(a):
    """``jax.scipy.linalg.lu_factor(a)`` → ``(lu, piv)`` for one instance ``a: [n, n]``."""
    lu, piv = _LU(a)
    return lu, piv


_LU_SOLVE = {
    (trans, vec): _primitive(
        f"lu_solve_{trans}{'v' if vec else 'm'}",
        lambda lu, piv, b, trans=trans: jsl.lu_solve((lu, piv), b, trans=trans),
        (2, 1, 1 if vec else 2),
        lambda lu, piv, b: 2 * lu[0] * lu[0] * (b[1] if len(b) > 1 else 1),
    )
    for trans in (0, 1)
    for vec in (True, False)
}


def lu_solve(lu_and_piv, b, trans: int = 0):
    """``jax.scipy.linalg.lu_solve((lu, piv), b, trans=)`` for one instance."""
    lu, piv = lu_and_piv
    vec = b.ndim == 1
    return _LU_SOLVE[(int(trans), vec)](lu, piv, b)[0]
