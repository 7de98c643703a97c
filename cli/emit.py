"""``--emit jaxpr|hlo``: the JAX stages of a compiled program, on abstract shapes."""

from __future__ import annotations

from ddm.compiler.binding import resolve
from ddm.runtime.errors import ConfigDiagnostic


def emit(prog, stage: str, dims: dict[str, int], batch: int) -> str:
    import jax

    g = prog.graph
    known = {**g.dim_values(), **dims}
    params = jax.eval_shape(lambda: prog.init(jax.random.key(0), **known))

    def abstract(specs, lead=()):
        out = {}
        for s in specs:
            try:
                shape = tuple(resolve(d, known, s.span) for d in s.type.shape)
            except Exception:
                missing = [
                    d.name for d in s.type.shape if getattr(d, "name", None) and d.name not in known
                ]
                raise ConfigDiagnostic(
                    None,
                    f"--emit {stage} needs a size for dim '{missing[0]}' (input '{s.name}')",
                    hint=f"pass --dim {missing[0]}=SIZE",
                ) from None
            from ddm.library.precision import resolve_dtype

            out[s.name] = jax.ShapeDtypeStruct(lead + shape, resolve_dtype(s.type.dtype, prog.x64))
        return out

    sections = []
    outs = [i for _, i in g.outputs]
    if outs:
        inputs = abstract(g.inputs_needed(outs))
        sections.append(("apply (one sample)", prog.product.apply, (params, inputs)))
    if g.loss is not None:
        inputs = abstract(g.inputs_needed([g.loss]), (batch,))
        sections.append((f"loss (batch of {batch})", prog.product.loss, (params, inputs)))
    text = []
    for title, fn, args in sections:
        if stage == "jaxpr":
            body = str(jax.make_jaxpr(fn)(*args))
        else:
            body = jax.jit(fn).lower(*args).as_text()
        text.append(f"# {title}\n{body}")
    return "\n\n".join(text) if text else "# nothing to emit: the program has no output or loss"
