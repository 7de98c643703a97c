"""Saving params without pickle: a NumPy ``.npz`` of flattened ``a/b/c`` keys, written atomically
(temporary file + rename) beside a SHA-256 checksum of its bytes.

A temporary file is named ``.ddm-tmp-PID-XXXXXXXX`` (the writing process's id): the writer
removes it when the write fails, and a process killed mid-write (``kill -9``) leaves one
that the next write into that folder, or the next read of a checkpoint there, removes — only
ours (that pattern) and only when the process that wrote it is gone.

The file gets the mode an ``open(path, "w")`` would give it, ``0o666`` less the user's umask
(``tempfile.mkstemp`` creates it ``0o600``, private whatever the umask says).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile

import numpy as np


def flatten(tree, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key in sorted(tree):
        value = tree[key]
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = np.asarray(value)
    return out


def unflatten(flat: dict) -> dict:
    out: dict = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


TEMP_PREFIX = ".ddm-tmp-"
_TEMP = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-[A-Za-z0-9_]+$")


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either its old self or the whole new
    content, never a part: a temporary file beside it, synced, then renamed over it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temporaries(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{TEMP_PREFIX}{os.getpid()}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # POSIX; elsewhere the mode bits mean little
                os.fchmod(fh.fileno(), 0o666 & ~umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def umask() -> int:
    """The process's umask. Linux (4.7+) reports it in /proc/self/status; elsewhere it is read
    by setting and restoring it, and a file another thread creates in that instant gets 0o022."""
    try:
        with open("/proc/self/status", "rb") as fh:  # binary: the Name: line may be any bytes
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_stale_temporaries(directory: str) -> list[str]:
    """Remove the temporary files of :func:`atomic_write` in ``directory`` whose writing
    process no longer runs (killed mid-write); returns their names. Other files, and the
    temporaries of live processes (this one's included), are left alone."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.match(name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass  # gone already, or not ours to remove: it does no harm
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid() or os.name != "posix":  # elsewhere os.kill(pid, 0) would kill it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its file
    return True


def save_params(path: str, params) -> str:
    """Write ``params`` to ``path`` (.npz) and ``path + '.sha256'``; returns the digest."""
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **flatten(params))
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write(path, data)
    atomic_write(path + ".sha256", (digest + "\n").encode())
    return digest


def load_params(path: str) -> dict:
    """Read params saved by :func:`save_params`, verifying the checksum."""
    remove_stale_temporaries(os.path.dirname(os.path.abspath(path)))
    with open(path, "rb") as fh:
        data = fh.read()
    want_path = path + ".sha256"
    if os.path.exists(want_path):
        with open(want_path) as fh:
            want = fh.read().strip()
        if hashlib.sha256(data).hexdigest() != want:
            raise ValueError(f"{path}: checksum mismatch; the file is corrupt")
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return unflatten({k: npz[k] for k in npz.files})


def write_json(path: str, obj) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
