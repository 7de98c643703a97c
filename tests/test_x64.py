"""No process-wide side effects: a float32 program whose node solves in float64
(``using …(dtype="f64")``) leaves the dtype of the user's own JAX arrays alone — loading it,
running it eagerly, under ``jit``, ``grad`` and ``vmap``, and training it. ``x64=True``
(``--x64``) is the one switch, and it is global, as documented. Each case runs in a fresh
interpreter: the global flag cannot be observed cleanly inside a test session that flips it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import ROOT

PROGRAM = """
dim N = 3
input b: f32[N]
param lam: f32 = 1.0 positive
node w = argmin v: f32[N] {{ lam * sum(v ** 2) - dot(b, v) }}
    subject to {{ sum(v) == 1, v >= 0 }} using {solver}(dtype="f64")
output w
loss = mean(sum(w * w, axis=1))
"""


def run_python(code: str) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"NPROC": "4", "PATH": "/usr/bin"},
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_a_node_solving_in_float64_leaves_the_users_arrays_float32():
    out = run_python(f"""
        import json, jax, jax.numpy as jnp, numpy as np, ddm
        seen = {{}}
        for solver in ("ipm", "kkt"):
            src = {PROGRAM!r}.format(solver=solver if solver == "ipm" else "kkt")
            if solver == "kkt":
                src = src.replace(", v >= 0", "")
            prog = ddm.loads(src, "f64.ddm")
            seen[solver + " load"] = str(jnp.array(1.0).dtype)
            params = prog.init(jax.random.key(0))
            b = jnp.array([[0.1, 0.5, 0.2], [1.0, 0.0, 0.0]])
            w = prog.apply_batch(params, b=b)["w"]
            g = jax.grad(prog.loss)(params, {{"b": b}})
            gj = jax.jit(jax.grad(prog.loss))(params, {{"b": b}})
            gv = jax.jit(jax.vmap(jax.grad(prog.loss), in_axes=(None, 0)))(
                params, {{"b": jnp.stack([b, b])}})
            seen[solver + " run"] = str(jnp.array(1.0).dtype)
            seen[solver + " w"] = str(w.dtype)
            seen[solver + " grads agree"] = bool(np.allclose(g["lam"], gj["lam"], rtol=1e-5)
                                                 and np.allclose(gv["lam"], g["lam"], rtol=1e-5))
            seen[solver + " finite"] = bool(np.isfinite(float(g["lam"])))
        seen["x64 flag"] = bool(jax.config.jax_enable_x64)
        print(json.dumps(seen))
    """)
    for solver in ("ipm", "kkt"):
        assert out[f"{solver} load"] == out[f"{solver} run"] == "float32", out
        assert out[f"{solver} w"] == "float32"  # the pipeline stays float32
        assert out[f"{solver} grads agree"] and out[f"{solver} finite"]
    assert out["x64 flag"] is False


def test_the_node_really_solves_in_float64():
    """The scope is real: the solver's residual is at float64's level, not float32's."""
    out = run_python(f"""
        import json, jax, jax.numpy as jnp, ddm
        prog = ddm.loads({PROGRAM!r}.format(solver="ipm"), "f64.ddm")
        params = prog.init(jax.random.key(0))
        info = prog.solver_info(params, b=jnp.array([[0.1, 0.5, 0.2]]))["w"]
        print(json.dumps({{"residual": float(info.residual[0]),
                          "dtype": str(jnp.array(1.0).dtype)}}))
    """)
    assert out["residual"] < 1e-9 and out["dtype"] == "float32"


def test_x64_true_is_the_one_global_switch():
    out = run_python("""
        import json, jax.numpy as jnp, ddm
        before = str(jnp.array(1.0).dtype)
        prog = ddm.loads("input x: f32\\nnode y = 2 * x\\noutput y", x64=True)
        y = prog.apply({}, x=1.0)["y"]
        print(json.dumps({"before": before, "after": str(jnp.array(1.0).dtype),
                          "y": str(y.dtype)}))
    """)
    assert out == {"before": "float32", "after": "float64", "y": "float64"}


def test_a_jit_between_vmap_and_grad_is_the_documented_limit():
    """``vmap(grad(jit(f)))`` re-traces a finished float64 jaxpr outside the scope (docs:
    Types); ``jit(vmap(grad(f)))`` — jit outermost — is the supported order."""
    out = run_python(f"""
        import json, jax, jax.numpy as jnp, ddm
        prog = ddm.loads({PROGRAM!r}.format(solver="ipm"), "f64.ddm")
        params = prog.init(jax.random.key(0))
        b = jnp.array([[[0.1, 0.5, 0.2]], [[1.0, 0.0, 0.0]]])
        ok = jax.jit(jax.vmap(jax.grad(prog.loss), in_axes=(None, 0)))(params, {{"b": b}})
        try:
            jax.vmap(jax.grad(jax.jit(prog.loss)), in_axes=(None, 0))(params, {{"b": b}})
            inner = "ran"
        except TypeError:
            inner = "TypeError"
        print(json.dumps({{"outer": [float(x) for x in ok["lam"]], "inner": inner}}))
    """)
    assert all(x == x for x in out["outer"])  # finite
    assert out["inner"] == "TypeError"
