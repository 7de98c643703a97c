"""Trained params on disk, tied to the program that trained them.

``save_params(path, params, program)`` writes the params as an ``.npz`` of ``a/b/c`` keys (no
pickle) with a SHA-256 checksum beside it (:mod:`ddm.runtime.checkpoint`), and three entries
of metadata: the program's file name, the SHA-256 of its text, and its **param signature**
(every param's path, shape and dtype). ``load_params(path, program)`` verifies the checksum and
refuses params whose signature is not the program's, naming the params that are missing,
unexpected or of another shape. Params whose signature matches but whose program text differs
(a comment, a metric edited) are accepted with a warning: the params fit; whether they still
mean the same is the user's call.

>>> import ddm, jax, os, tempfile
>>> prog = ddm.loads("input x: f32\\nparam w: f32 = 2.0\\nnode y = w * x\\noutput y")
>>> path = os.path.join(tempfile.mkdtemp(), "params.npz")
>>> save_params(path, prog.init(jax.random.key(0)), prog)
>>> float(prog.apply(load_params(path, prog), x=3.0)["y"])
6.0
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from typing import Any

import numpy as np

from ddm.dsl.diagnostics import DataDiagnostic
from ddm.runtime import checkpoint

__all__ = ["save_params", "load_params", "read_meta", "signature"]

META = "__ddm__"  # the metadata entry's key (never a param's: names are identifiers)


def signature(params) -> dict[str, list]:
    """``{"net/w0": [[shape…], "float32"], …}`` of a params tree."""
    return {
        k: [list(np.shape(v)), str(np.asarray(v).dtype)]
        for k, v in checkpoint.flatten(params).items()
    }


def _program_meta(program) -> dict[str, Any]:
    text = program.sources.texts.get(program.file, "") if program is not None else ""
    return {
        "program": os.path.basename(program.file) if program is not None else None,
        "program_sha256": hashlib.sha256(text.encode()).hexdigest() if program else None,
    }


def save_params(path: str, params, program=None, dims: dict[str, int] | None = None) -> None:
    """Write ``params`` (a tree of arrays) to ``path`` atomically, with its checksum and, given
    the ``program`` that trained them, the program's name, text digest and param signature;
    ``dims``: the sizes the training data bound (what an export needs to fix the shapes)."""
    flat = checkpoint.flatten(params)
    meta = {**_program_meta(program), "signature": signature(params), "format": 1}
    if dims:
        meta["dims"] = {k: int(v) for k, v in dims.items()}
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **flat, **{META: np.array(json.dumps(meta))})
    data = buf.getvalue()
    checkpoint.atomic_write(path, data)
    checkpoint.atomic_write(path + ".sha256", (hashlib.sha256(data).hexdigest() + "\n").encode())


def resolve(path: str) -> str:
    """A run folder or a params file → the params file (a folder's ``params.npz``)."""
    if os.path.isdir(path):
        inner = os.path.join(path, "params.npz")
        if not os.path.isfile(inner):
            raise DataDiagnostic(
                None, f"{path}: no params.npz in this folder (is it a run folder?)"
            )
        return inner
    if not os.path.exists(path):
        raise DataDiagnostic(None, f"{path}: no such params file or run folder")
    return path


def read_meta(path: str) -> dict:
    """The metadata :func:`save_params` stored beside the params (empty for older files)."""
    path = resolve(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz[META])) if META in npz.files else {}
    except (OSError, ValueError, EOFError) as err:
        raise DataDiagnostic(None, f"{path}: not a params file ({err})") from None


def load_params(path: str, program=None) -> dict:
    """Params saved by :func:`save_params` (or a run's ``params.npz``; ``path`` may be the run
    folder), the checksum verified; given ``program``, refused unless their signature is the
    program's. Returns the nested tree that ``program.apply`` takes."""
    path = resolve(path)
    try:
        flat_tree = checkpoint.load_params(path)
    except ValueError as err:  # checksum mismatch, or not an npz at all
        raise DataDiagnostic(None, f"{path}: {err}") from None
    except (OSError, EOFError) as err:
        raise DataDiagnostic(None, f"{path}: not a params file ({err})") from None
    meta_raw = flat_tree.pop(META, None)
    meta = json.loads(str(meta_raw)) if meta_raw is not None else {}
    params = flat_tree
    if program is not None:
        _check(path, params, meta, program)
    return params


def _shapes(tree, prefix: str = "") -> dict[str, list]:
    """The signature of a tree of shapes (``jax.eval_shape``'s), keyed as :func:`signature`."""
    out: dict[str, list] = {}
    for key in sorted(tree):
        value, name = tree[key], f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(_shapes(value, name))
        else:
            out[name] = [list(value.shape), str(np.dtype(value.dtype))]
    return out


def _check(path: str, params, meta: dict, program) -> None:
    import jax

    from ddm.dsl.diagnostics import DdmError

    got = signature(params)
    try:
        want = _shapes(
            jax.eval_shape(program.product.init, jax.random.key(0), **_dims_of(params, program))
        )
    except DdmError:  # a layer sized by a dim only the data bind: the params' names must match
        want = None
    if want is None:
        names = {p.name for p in program.graph.params}
        mine = {k: v for k, v in got.items() if k.split("/")[0] in names}
        want = mine | {n: [[], "?"] for n in names if n not in {k.split("/")[0] for k in got}}
    if want != got:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        shaped = [
            f"'{k}' is {got[k][0]} {got[k][1]}, the program's {want[k][0]} {want[k][1]}"
            for k in sorted(set(want) & set(got))
            if want[k] != got[k]
        ]
        parts = (
            ([f"missing {', '.join(repr(k) for k in missing)}"] if missing else [])
            + ([f"unexpected {', '.join(repr(k) for k in extra)}"] if extra else [])
            + shaped
        )
        who = meta.get("program") or "another program"
        raise DataDiagnostic(
            None,
            f"{path} holds the params of {who}, not of {os.path.basename(program.file)}: "
            + "; ".join(parts[:6]),
            hint="train this program (ddmc compile FILE --run) or pass its own run folder",
        )
    mine_meta = _program_meta(program)
    if meta.get("program_sha256") and meta["program_sha256"] != mine_meta["program_sha256"]:
        warnings.warn(
            f"{path} was trained by another version of {meta.get('program')} (its text "
            "differs); the params fit this program's shapes",
            stacklevel=3,
        )


def _dims_of(params, program) -> dict[str, int]:
    """Dims a param's shape needs that the program leaves to the data, read back from the
    saved params (a param ``w: f32[D]`` saved with 8 entries binds D = 8)."""
    dims: dict[str, int] = {}
    flat = checkpoint.flatten(params)
    for spec in program.graph.params:
        shape = getattr(spec.type, "shape", None)
        if shape is None or spec.name not in flat:
            continue
        for d, n in zip(shape, np.shape(flat[spec.name])):
            if not isinstance(d, int) and d.value is None:
                dims.setdefault(d.name, int(n))
    return dims
