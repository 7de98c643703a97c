"""The run folder: checked before any training, and a place to keep results if writing fails.

A run may train for hours; finding only afterwards that ``--out`` names a file, a folder that
cannot be written or a full disk loses the training. :func:`prepare` therefore creates the
folder and proves it writable — a probe file written, flushed to disk and removed — and compares
the disk's free space with what the run will write, before any data is loaded or anything is
compiled. Should a write still fail later (the disk filled up meanwhile), :func:`fallback` gives
a fresh folder under the system's temporary directory, and the runtime says where the results
went.

>>> import tempfile, os
>>> d = os.path.join(tempfile.mkdtemp(), "run")
>>> prepare(d, 1024) == d and os.path.isdir(d)
True
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ddm.runtime.errors import ConfigDiagnostic

MARGIN = 1 << 20  # bytes beyond the estimate: logs, JSON files, a diagram


def prepare(path: str, need: int, flag: str = "--out") -> str:
    """Create ``path`` if needed and check it can take ``need`` bytes; raise a
    :class:`ConfigDiagnostic` naming the folder and the reason otherwise."""
    shown = path if len(path) <= 200 else path[:200] + "…"
    if os.path.lexists(path) and not os.path.isdir(path):
        raise ConfigDiagnostic(
            None,
            f"{flag} {shown}: exists and is not a folder",
            hint="name a folder for the run's results (it is created if missing)",
        )
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".ddm-probe-", dir=path)
        try:
            os.write(fd, b"ddm")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise ConfigDiagnostic(
            None,
            f"{flag} {shown}: cannot write there ({err.strerror or err})",
            hint="choose a folder you can write to",
        ) from None
    free = shutil.disk_usage(path).free
    if free < need + MARGIN:
        raise ConfigDiagnostic(
            None,
            f"{flag} {shown}: the disk has {_size(free)} free; this run writes about "
            f"{_size(need + MARGIN)} (parameters, optimiser state, checkpoints, logs)",
            hint="free some space or choose a folder on another disk",
        )
    return path


def run_bytes(param_bytes: int, checkpointing: bool) -> int:
    """What a run writes: params.npz, and with checkpoints the params with the optimiser's
    state (at most two moments each) twice over while a checkpoint is replaced."""
    return param_bytes + (2 * 3 * param_bytes if checkpointing else 0)


def fallback() -> str:
    """A fresh folder for results that could not be written where asked."""
    return tempfile.mkdtemp(prefix="ddm-run-")


def _size(n: int) -> str:
    from ddm.compiler.footprint import human

    return human(n)
