"""The trained decision function, exported for deployment with ``jax.export``.

``export(program, params, out_dir)`` writes three files that need JAX and NumPy, nothing of
ddm:

- ``decision.jaxexport`` — the serialised StableHLO of ``decide(params, *inputs) -> outputs``:
  the program's ``output`` values, every guard's checks
  (``guard:NAME:violated`` and ``guard:NAME:breached``, 1.0 where the decision broke the limit
  before enforcement / still does after it) and every declarative node's per-instance solver
  status (``status:NODE``, 0 = converged; a failed solve's values are NaN). The batch axis is
  symbolic: one export serves any batch size.
- ``params.npz`` — the trained params, the list ``params`` takes (no pickle).
- ``manifest.json`` — the params' names in call order, the inputs in call order with their
  shapes and dtypes, the outputs, the dims fixed at export, the program's name and digests.

The params are arguments, not constants baked into the program: XLA folds constants into the
arithmetic, which moved the decisions by an ulp from what ``Program.apply_batch`` computes;
as arguments the exported function gives the same bits. Loading (``docs/export.md``)::

    import json, jax, numpy as np
    exported = jax.export.deserialize(open("OUT/decision.jaxexport", "rb").read())
    manifest = json.load(open("OUT/manifest.json"))
    stored = np.load("OUT/params.npz")
    params = [stored[name] for name in manifest["params"]]
    out = exported.call(params, *(batch[i["name"]] for i in manifest["inputs"]))

Dims other than the batch are fixed at export: those the params were trained with (a run's
``params.npz`` records them) or given (``--dim NAME=SIZE``).
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Mapping

import numpy as np

from ddm.dsl.diagnostics import DataDiagnostic
from ddm.runtime import checkpoint, outdir

__all__ = ["export", "FORMAT"]

FORMAT = 1
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
FILE = "decision.jaxexport"
MANIFEST = "manifest.json"
_NUMPY = {"f32": "float32", "f64": "float64", "i32": "int32", "bool": "bool"}


def export(
    prog,
    params,
    out_dir: str,
    dims: Mapping[str, int] | None = None,
    platforms: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Export ``prog``'s decision at ``params`` into ``out_dir``; returns the manifest."""
    import jax
    from jax import export as jax_export

    g = prog.graph
    unknown = [p for p in platforms or () if p not in PLATFORMS]
    if unknown:
        raise DataDiagnostic(
            None,
            f"unknown platform {', '.join(repr(p) for p in unknown)} to export for",
            hint="platforms: " + ", ".join(PLATFORMS),
        )
    if not g.outputs:
        raise DataDiagnostic(
            None,
            f"{os.path.basename(g.file)} declares no output: nothing to export",
            hint="add: output NAME, … (the decisions a deployment reads)",
        )
    known = {**g.dim_values(), **(dims or {})}
    roots = [i for _, i in g.outputs]
    needed = g.inputs_needed(roots + [v for gd in g.guards for v in (gd.violated, gd.breached)])
    shapes: dict[str, list] = {}
    for spec in needed:
        shape = []
        for d in spec.type.shape:
            if isinstance(d, int):
                shape.append(d)
            elif d.value is not None:
                shape.append(d.value)
            elif d.name in known:
                shape.append(int(known[d.name]))
            else:
                raise DataDiagnostic(
                    spec.span,
                    f"input '{spec.name}' has the dim {d.name}, whose size the export must fix",
                    hint=f"pass --dim {d.name}=SIZE (a run's params.npz records the sizes it "
                    "trained with)",
                )
        shapes[spec.name] = shape
    names = [s.name for s in needed]
    dtypes = {s.name: _dtype(s.type.dtype, prog.x64) for s in needed}

    leaves, treedef = jax.tree.flatten(params)
    flat = checkpoint.flatten(params)
    keys = list(flat)  # the order jax.tree.flatten walks a tree of dicts: sorted keys
    assert all(np.shape(a) == np.shape(b) for a, b in zip(leaves, flat.values()))

    def decide(param_list, *arrays):
        tree = jax.tree.unflatten(treedef, list(param_list))
        out, aux = prog.product.apply_batch(tree, dict(zip(names, arrays)))
        result = dict(out)
        for name, check in aux.guards.items():
            result[f"guard:{name}:violated"] = check.violated
            result[f"guard:{name}:breached"] = check.breached
        for vid, info in aux.solvers.items():
            result[f"status:{g.values[vid].name or vid}"] = info.status
        return result

    (batch,) = jax_export.symbolic_shape("batch")
    pspec = [jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype) for a in leaves]
    args = [jax.ShapeDtypeStruct((batch, *shapes[n]), dtypes[n]) for n in names]
    exporter = (
        jax_export.export(jax.jit(decide), platforms=platforms)
        if platforms
        else jax_export.export(jax.jit(decide))
    )
    exported = exporter(pspec, *args)
    blob = bytes(exported.serialize())
    concrete = [jax.ShapeDtypeStruct((2, *shapes[n]), dtypes[n]) for n in names]
    outputs = jax.eval_shape(decide, pspec, *concrete)
    text = prog.sources.texts.get(g.file, "")
    manifest = {
        "format": FORMAT,
        "program": os.path.basename(g.file),
        "program_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "params": keys,
        "params_sha256": _digest(params),
        "inputs": [
            {"name": n, "shape": ["batch", *shapes[n]], "dtype": str(np.dtype(dtypes[n]))}
            for n in names
        ],
        "outputs": [
            {"name": k, "shape": ["batch", *v.shape[1:]], "dtype": str(np.dtype(v.dtype))}
            for k, v in sorted(outputs.items())
        ],
        "dims": {d: int(known[d]) for d in sorted(_dim_names(needed)) if d in known},
        "platforms": list(exported.platforms),
        "jax": jax.__version__,
        "file": FILE,
        "file_sha256": hashlib.sha256(blob).hexdigest(),
    }
    outdir.prepare(out_dir, 2 * len(blob), flag="-o")  # a folder, writable, with room
    checkpoint.atomic_write(os.path.join(out_dir, FILE), blob)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **{k: np.asarray(v) for k, v in flat.items()})
    checkpoint.atomic_write(os.path.join(out_dir, "params.npz"), buf.getvalue())
    checkpoint.write_json(os.path.join(out_dir, MANIFEST), manifest)
    return manifest


def _dim_names(needed) -> set[str]:
    return {d.name for spec in needed for d in spec.type.shape if not isinstance(d, int)}


def _dtype(name: str, x64: bool):
    if name in ("f32", "f64"):
        return np.float64 if x64 or name == "f64" else np.float32
    return np.dtype(_NUMPY[name]).type


def _digest(params) -> str:
    h = hashlib.sha256()
    for k, v in checkpoint.flatten(params).items():
        a = np.ascontiguousarray(np.asarray(v))
        h.update(f"{k}{a.shape}{a.dtype}".encode())
        h.update(a.tobytes())
    return h.hexdigest()
