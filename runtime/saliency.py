"""Jacobian saliency of a decision with respect to an input's features (the research plan's
interpretability check): S[j, i] = mean over samples of |∂ output_j / ∂ input_i|.

Run config: ``saliency = jacobian(of="w", wrt="x", top=10, reference=[0, 3, 7])``. After
training, on up to ``samples`` test samples, the run reports for each output entry (up to 20)
its ``top`` features, the ``top`` features overall (S averaged over outputs), and — with a
reference list of features the user expects to matter — the overlap |top ∩ reference| /
min(top, |reference|) (the plan asks for ≥ 40 % at top 10). Features are the flattened entries
of the input (``x: f32[F]`` → F features; ``R: f32[W, N]`` → W·N, row-major).
"""

from __future__ import annotations

from typing import Any, Mapping

from ddm.runtime.errors import ConfigDiagnostic

MAX_ROWS = 20


def check(prog, cfg, dims: Mapping[str, int] | None = None) -> None:
    """``of`` names a float node or output, ``wrt`` a float input it depends on, and the
    reference features exist (``dims``: the sizes the data bound)."""
    s = cfg.values["saliency"]
    g = prog.graph
    vid = g.nodes.get(s["of"])
    if vid is None:
        raise cfg.error(
            "saliency.of",
            f"saliency: '{s['of']}' is not a node of the program",
            hint="nodes: " + ", ".join(g.nodes),
        )
    spec = next((i for i in g.inputs if i.name == s["wrt"]), None)
    if spec is None:
        raise cfg.error(
            "saliency.wrt",
            f"saliency: '{s['wrt']}' is not an input",
            hint="inputs: " + ", ".join(i.name for i in g.inputs),
        )
    if not g.values[vid].type.is_float or not spec.type.is_float:
        raise cfg.error("saliency", "saliency needs a float node and a float input")
    if spec.value not in g.ancestors([vid]):
        raise cfg.error("saliency.wrt", f"saliency: '{s['of']}' does not depend on '{s['wrt']}'")
    sizes = [_size(d, dims) for d in spec.type.shape]
    known = [d for d in sizes if d is not None]
    if s["reference"] and len(known) == len(sizes):
        features = 1
        for d in known:
            features *= d
        bad = [i for i in s["reference"] if i >= features]
        if bad:
            raise cfg.error(
                "saliency.reference",
                f"saliency: reference features {bad} are "
                f"outside the {features} features of '{s['wrt']}'",
            )


def _size(d, dims) -> int | None:
    """A dim's size: fixed, or bound by the data (None when neither)."""
    if isinstance(d, int):
        return d
    return d.value if d.value is not None else (dims or {}).get(d.name)


def compute(prog, params, arrays: Mapping[str, Any], settings: Mapping[str, Any]) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    g = prog.graph
    of, wrt, top = settings["of"], settings["wrt"], settings["top"]
    vid = g.nodes[of]
    needed = [i.name for i in g.inputs_needed([vid])]
    n = min(settings["samples"], min(len(arrays[k]) for k in needed))
    batch = {k: arrays[k][:n] for k in needed}
    product = prog.product

    def one(sample):
        def f(x):
            out, _ = product.sample_values(params, {**sample, wrt: x}, (vid,), True)
            return jnp.ravel(out[vid])

        return jax.jacrev(f)(sample[wrt])

    inputs = {k: jnp.asarray(a) for k, a in batch.items()}
    J = jax.jit(jax.vmap(one, axis_name="batch"))(inputs)  # [n, outputs, *input]
    S = np.mean(np.abs(np.asarray(J, np.float64)).reshape(n, J.shape[1], -1), axis=0)
    features = S.shape[1]
    k = min(top, features)
    overall = np.mean(S, axis=0)
    best = [int(i) for i in np.argsort(-overall, kind="stable")[:k]]
    rows = {
        str(j): [int(i) for i in np.argsort(-S[j], kind="stable")[:k]]
        for j in range(min(S.shape[0], MAX_ROWS))
    }
    out = {
        "of": of,
        "wrt": wrt,
        "samples": n,
        "features": features,
        "top": k,
        "top_overall": best,
        "top_per_output": rows,
        "saliency_overall": [float(overall[i]) for i in best],
    }
    ref = [int(i) for i in settings["reference"]]
    if ref:
        bad = [i for i in ref if i >= features]
        if bad:
            raise ConfigDiagnostic(
                None, f"saliency reference {bad} outside the {features} features of '{wrt}'"
            )
        out["reference"] = ref
        out["overlap"] = len(set(best) & set(ref)) / min(k, len(ref))
    return out
