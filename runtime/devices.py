"""Data-parallel training over the devices of a host (and of several processes): one mesh axis,
``batch``; every training step is the one-device step, jitted with shardings.

What is where:

- the training and test arrays are sharded by rows over the mesh (padded with zero rows to a
  multiple of the device count; the batch order never picks a padding row, and the test metrics
  see the rows as they are — the test set is sharded only when its rows divide evenly, else
  every device holds it whole);
- a step's batch (the rows the host picked: the same indices as on one device) is gathered from
  the sharded rows and constrained to be sharded over ``batch``: each device computes the loss of
  its slice of samples; the loss's reductions (a mean, a log-mean-exp, a variance) become
  collectives, so a loss that is no mean of per-sample terms is still computed exactly;
- params, optimiser state and the step's report are replicated: every process reads them as
  plain numbers, and process 0 writes them.

The result is the one-device result up to the order of the floating-point reductions
(``tests/test_devices.py`` states the tolerance); for a fixed device count it is deterministic.

On a CPU host JAX sees one device unless told before it starts: :func:`request_cpu_devices`
(``ddmc … --devices N`` calls it first thing) splits the host into N devices — the way to test
all of this without accelerators.

>>> mesh = make_mesh(1)
>>> mesh.devices.size, mesh.axis_names
(1, ('batch',))
"""

from __future__ import annotations

from typing import Any

import numpy as np

AXIS = "batch"


def request_cpu_devices(n: int) -> bool:
    """Ask JAX for ``n`` CPU devices, if its backends have not started yet (the number is read
    once, when they start). Returns whether the request could still take effect."""
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    if n > max(int(xla_bridge.num_cpu_devices.value), 1):
        jax.config.update("jax_num_cpu_devices", n)
    return True


def available() -> int:
    """The devices JAX sees (in every process together)."""
    import jax

    return jax.device_count()


def resolve(setting: Any) -> int:
    """The device count a ``devices`` setting asks for (``"all"`` or an integer)."""
    return available() if setting == "all" else int(setting)


def make_mesh(n: int):
    """A one-axis mesh over the first ``n`` devices (of every process)."""
    import jax
    from jax.sharding import Mesh

    return Mesh(np.asarray(jax.devices()[:n]), (AXIS,))


def lanes(mesh, width: int) -> list:
    """``mesh``'s devices cut into meshes of ``width`` devices each (a remainder left idle):
    an experiment trains one method per lane at a time, the lanes side by side.

    >>> [m.devices.size for m in lanes(make_mesh(1), 1)]
    [1]
    """
    from jax.sharding import Mesh

    flat = list(np.asarray(mesh.devices).ravel())
    width = max(1, min(width, len(flat)))
    return [
        Mesh(np.asarray(flat[i : i + width]), (AXIS,))
        for i in range(0, len(flat) - width + 1, width)
    ]


def replicated(mesh):
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec())


def by_rows(mesh):
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicate(tree, mesh):
    """``tree``'s arrays on every device of ``mesh`` (every process passes the same tree)."""
    import jax

    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(x):
        # device_put cannot reach another process's devices: each process places its copies
        if isinstance(x, jax.Array) and jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
            data = np.asarray(jax.random.key_data(x))
            return jax.random.wrap_key_data(
                _global(data, sharding, data.shape), impl=jax.random.key_impl(x)
            )
        a = np.asarray(x)
        return _global(a, sharding, a.shape)

    return jax.tree.map(place, tree)


def shard_rows(a: np.ndarray, mesh, pad: bool = True):
    """The rows of ``a`` spread over ``mesh`` (zero rows appended to a multiple of its size when
    ``pad``; without it, ``a`` is replicated unless its rows divide evenly)."""
    import jax

    n = mesh.devices.size
    rows = a.shape[0]
    if rows % n:
        if not pad:
            return replicate(a, mesh)
        extra = n - rows % n
        a = np.concatenate([a, np.zeros((extra,) + a.shape[1:], a.dtype)])
    sharding = by_rows(mesh)
    if jax.process_count() == 1:
        return jax.device_put(a, sharding)
    return _global(a, sharding, a.shape)


def padded(rows: int, mesh) -> int:
    """``rows`` rounded up to a multiple of the mesh's size (what :func:`shard_rows` holds)."""
    n = mesh.devices.size
    return -(-rows // n) * n


def local_rows(rows: int, mesh) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of an array of ``rows`` rows sharded by :func:`shard_rows` that
    this process's devices hold (``hi`` may pass ``rows``: padding). A process builds just
    these (:func:`shard_local_rows`) — its shard of the data."""
    shape = (padded(rows, mesh),)
    held = [i for i in by_rows(mesh).addressable_devices_indices_map(shape).values() if i]
    starts = [index[0].indices(shape[0])[0] for index in held]
    stops = [index[0].indices(shape[0])[1] for index in held]
    return min(starts), max(stops)


def shard_local_rows(part: np.ndarray, lo: int, rows: int, mesh):
    """The array of ``rows`` rows sharded as :func:`shard_rows` does, from ``part``: rows
    ``lo …`` of it, the ones this process's devices hold (:func:`local_rows`), zero rows
    added up to the padded length. No process holds more than its part.

    >>> mesh = make_mesh(1)
    >>> lo, hi = local_rows(3, mesh)
    >>> shard_local_rows(np.arange(lo, hi, dtype=np.float32), lo, 3, mesh).tolist()
    [0.0, 1.0, 2.0]
    """
    import jax

    _, hi = local_rows(rows, mesh)
    missing = hi - lo - part.shape[0]
    if missing:
        part = np.concatenate([part, np.zeros((missing,) + part.shape[1:], part.dtype)])
    shape = (padded(rows, mesh),) + part.shape[1:]

    def piece(index):
        first, last, _ = index[0].indices(shape[0])
        return part[(slice(first - lo, last - lo),) + tuple(index[1:])]

    return jax.make_array_from_callback(shape, by_rows(mesh), piece)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    local_devices: int | None = None,
) -> None:
    """Join the run's processes (``jax.distributed.initialize``; what is not given, JAX detects
    from the cluster: SLURM, Open MPI, Kubernetes, ``JAX_COORDINATOR_ADDRESS``…), with
    ``local_devices`` CPU devices in this process when it runs on CPUs. Before JAX starts."""
    import jax

    if local_devices:
        request_cpu_devices(local_devices)
    jax.distributed.initialize(coordinator, num_processes, process_id)


def process() -> tuple[int, int]:
    """(this process's index, the number of processes)."""
    import jax

    return jax.process_index(), jax.process_count()


def agree(ok: bool) -> bool:
    """Whether every process says ``ok`` (each process calls it: a collective). A step that
    one process alone takes (process 0 preparing the output folder, reading a checkpoint)
    must not leave the others waiting in the next collective when it fails there."""
    import jax

    if jax.process_count() == 1:
        return ok
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.asarray([ok], np.int32))))


def _global(a: np.ndarray, sharding, shape):
    """A global array from the whole ``a`` that every process holds: each process places the
    pieces its own devices need."""
    import jax

    return jax.make_array_from_callback(tuple(shape), sharding, lambda index: a[index])


def constrain_rows(tree, mesh):
    """Inside a jitted function: ``tree``'s leading axis sharded over ``mesh``."""
    import jax

    return jax.lax.with_sharding_constraint(tree, by_rows(mesh))


def constrain_replicated(tree, mesh):
    import jax

    return jax.lax.with_sharding_constraint(tree, replicated(mesh))
