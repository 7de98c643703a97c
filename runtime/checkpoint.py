"""Saving params without pickle: a NumPy ``.npz`` of flattened ``a/b/c`` keys, written atomically
(temporary file + rename) beside a SHA-256 checksum of its bytes."""

from __future__ import annotations

import hashlib
import io
import json
import os
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


def atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
