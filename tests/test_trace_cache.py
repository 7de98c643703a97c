"""The cache of traced programs (runtime/trace_cache.py): a rerun of ``ddmc compile --run``
loads each compiled function's exported program instead of tracing it.

Specifications: a function compiled through the cache is traced once and stored; a second
compile of it — a rerun — loads it without tracing and returns the same values in the same
structure (dicts with str and int keys, lists, tuples, None, ddm's named tuples), donated
arguments included; an entry that does not read back whole is ignored and replaced; outputs
the cache cannot rebuild are traced every time, never stored; a user's mistake found while
tracing is raised as without the cache; the key changes with the program, the settings and the
data; and a rerun of ``ddmc`` loads every function and writes the bits of the first run, which
are those of a run without it (``DDM_NO_TRACE_CACHE=1``: the functions jitted and traced as
they always were).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ddm.dsl.diagnostics import DataDiagnostic
from ddm.library.solvers.status import Info, make_info
from ddm.runtime import trace_cache
from ddm.runtime.compiled import Compiled
from ddm.runtime.data import Dataset
from ddm.runtime.data.base import dataset_digest


def make_step():
    """A new function object (JAX keeps traces of the same object in memory, a new process
    would not) with every output structure the runtime's functions return."""

    def step(state, x):
        TRACED.append(1)  # runs when traced, not when a compiled program runs
        w = state["w"] * x
        info = make_info(jnp.zeros((), jnp.int32), 3, jnp.sum(x), 0)
        return {"w": w}, {"y": [w + 1.0, (jnp.sum(w), None)]}, {7: info}

    return step


TRACED: list[int] = []
STATE = {"w": np.arange(4, dtype=np.float32)}
X = np.linspace(0.5, 2.0, 4).astype(np.float32)


def cache(tmp_path, context: str = "run") -> trace_cache.TraceCache:
    return trace_cache.TraceCache(str(tmp_path / "traces"), context)


def compile_and_call(tmp_path, fn=None, donate=(), context: str = "run"):
    f = Compiled(fn or make_step(), "step", donate_argnums=donate, traces=cache(tmp_path, context))
    state, x = {"w": jnp.asarray(STATE["w"])}, jnp.asarray(X)  # fresh buffers: may be donated
    out = f(state, x)
    assert state["w"].is_deleted() == (0 in donate) and not x.is_deleted()
    return f, out


@pytest.mark.parametrize("donate", [(), (0,)], ids=["plain", "donated"])
def test_a_rerun_loads_the_program_without_tracing_and_returns_the_same(tmp_path, donate):
    TRACED.clear()
    first, out = compile_and_call(tmp_path, donate=donate)
    assert first.program == "traced, stored" and len(TRACED) == 1
    again, back = compile_and_call(tmp_path, donate=donate)  # a new process would do this
    assert again.program == "loaded" and len(TRACED) == 1  # not traced again
    assert jax.tree.structure(back) == jax.tree.structure(out)
    # a loaded program's outputs are typed as the first run's (weak types included)
    assert [getattr(a, "weak_type", None) for a in jax.tree.leaves(back)] == [
        getattr(a, "weak_type", None) for a in jax.tree.leaves(out)
    ]
    assert isinstance(back[2][7], Info) and back[1]["y"][1][1] is None
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    expected, _, _ = make_step()({"w": STATE["w"]}, X)
    np.testing.assert_allclose(np.asarray(back[0]["w"]), np.asarray(expected["w"]))
    assert again.compilations == 1


def test_an_entry_that_does_not_read_back_whole_is_ignored_and_replaced(tmp_path):
    TRACED.clear()
    compile_and_call(tmp_path)
    (entry,) = (tmp_path / "traces").iterdir()
    raw = bytearray(entry.read_bytes())
    raw[-1] ^= 0xFF  # one flipped bit in the exported program
    entry.write_bytes(bytes(raw))
    f, out = compile_and_call(tmp_path)
    assert f.program == "traced, stored" and len(TRACED) == 2
    np.testing.assert_array_equal(np.asarray(out[0]["w"]), STATE["w"] * X)
    entry.write_bytes(b"ddm-trace\n")  # cut short
    f, _ = compile_and_call(tmp_path)
    assert f.program == "traced, stored" and len(TRACED) == 3
    f, _ = compile_and_call(tmp_path)
    assert f.program == "loaded" and len(TRACED) == 3  # rewritten whole


class Pair:
    """A pytree node the cache does not rebuild (not a named tuple of ddm, optax or jax)."""

    def __init__(self, a, b):
        self.a, self.b = a, b


jax.tree_util.register_pytree_node(Pair, lambda p: ((p.a, p.b), None), lambda _, c: Pair(*c))


def test_outputs_it_cannot_rebuild_are_traced_every_time_and_never_stored(tmp_path):
    def pair(state, x):
        return Pair(state["w"] + x, x)

    for _ in range(2):
        f, out = compile_and_call(tmp_path, fn=pair)
        assert f.program == "traced" and isinstance(out, Pair)
        np.testing.assert_array_equal(np.asarray(out.a), STATE["w"] + X)
    assert not list((tmp_path / "traces").glob("*.trace"))


def test_a_mistake_found_while_tracing_is_raised_as_without_the_cache(tmp_path):
    def bad(state, x):
        TRACED.append(1)
        raise DataDiagnostic(None, "input x: expected f32[5], got f32[4]")

    TRACED.clear()
    with pytest.raises(DataDiagnostic, match="expected f32"):
        compile_and_call(tmp_path, fn=bad)
    assert len(TRACED) == 1  # raised from the first trace, not traced again without the cache
    assert not list((tmp_path / "traces").glob("*.trace"))


def test_the_key_changes_with_the_program_the_settings_and_the_data(tmp_path):
    data = {"x": np.arange(6.0, dtype=np.float32)}
    moved = {"x": data["x"].copy()}
    moved["x"][3] += 1e-6  # one element, one ulp or so
    assert dataset_digest(Dataset(data, data)) != dataset_digest(Dataset(data, moved))
    program = {"sources": {"a.ddm": "…"}, "graph": "g", "x64": False}
    base = trace_cache.context(program, {"steps": 10}, "d")
    assert base == trace_cache.context(dict(program), {"steps": 10}, "d")
    assert base != trace_cache.context({**program, "graph": "g2"}, {"steps": 10}, "d")
    assert base != trace_cache.context(program, {"steps": 11}, "d")
    assert base != trace_cache.context(program, {"steps": 10}, "d2")
    c = cache(tmp_path)
    args = ({"w": STATE["w"]}, X)
    keys = {
        c.key("step", args, ()),
        c.key("other", args, ()),
        c.key("step", args, (0,)),
        c.key("step", ({"w": STATE["w"]}, X.astype(np.float64)), ()),
        c.key("step", ({"w": STATE["w"]}, X[:3]), ()),
        c.key("step", ({"v": STATE["w"]}, X), ()),
    }
    assert len(keys) == 6
    # another context, another entry: the function is traced again, not loaded
    TRACED.clear()
    compile_and_call(tmp_path, context=base)
    f, _ = compile_and_call(tmp_path, context=trace_cache.context(program, {"steps": 11}, "d"))
    assert f.program == "traced, stored" and len(TRACED) == 2


PROGRAM = """\
dim N = 4
input b: f32[N]
param lam: f32 = 1.0 positive
param mix = linear(N, N)
node signal = mix(b)
node w = argmin v: f32[N] { lam * sum(v ** 2) - dot(signal, v) }
    subject to { sum(v) == 1, v >= 0 }
node gain = dot(w, b)
output w
loss = mean(sum(w * w, axis=1)) - mean(gain)
metric top = mean(max(w, axis=1))
run {
    data = npz(path="b.npz")
    steps = 12
    batch = 32
    diagnostics = "full"
    log_every = 4
}
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A program with an interior point (LAPACK calls) and every diagnostic function."""
    where = tmp_path_factory.mktemp("traced")
    (where / "prog.ddm").write_text(PROGRAM)
    rng = np.random.default_rng(0)
    np.savez(where / "b.npz", b=rng.normal(size=(200, 4)).astype(np.float32))
    return where


def ddmc_run(folder, out: str, *extra: str, **environ: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DDM_NO_CACHE", "DDM_NO_TRACE_CACHE")}
    env.update(DDM_CACHE_DIR=str(folder / "cache"), **environ)
    args = [sys.executable, "-m", "ddm.cli.main", "compile", str(folder / "prog.ddm")]
    args += ["--run", "--out", str(folder / out), "--no-plots"]
    done = subprocess.run(
        args + list(extra), cwd=folder, capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    timing = json.loads((folder / out / "timing.json").read_text())
    metrics = json.loads((folder / out / "metrics.json").read_text())
    log = (folder / out / "log.jsonl").read_text()
    return {
        "programs": {k: c["program"] for k, c in timing["compilations"].items()},
        "results": (metrics["train"], metrics["test"], metrics["params"], metrics["solvers"]),
        "log": [
            {k: v for k, v in json.loads(line).items() if k != "wall_s"}
            for line in log.split("\n")
            if line
        ],
        "params": (folder / out / "params.npz.sha256").read_bytes(),
    }


def test_a_ddmc_rerun_loads_every_function_and_writes_the_same_bits(folder):
    first = ddmc_run(folder, "first")
    assert set(first["programs"]) == {
        "train step",
        "gradient diagnostics",
        "node gradient statistics",
        "metrics: per-sample values",
        "metrics on the test set",
        "metrics on the training set",
    }
    assert set(first["programs"].values()) == {"traced, stored"}
    again = ddmc_run(folder, "again")
    assert again["programs"] == {k: "loaded" for k in first["programs"]}
    # without it, the functions traced as they always were (jit, not the exported program)
    alone = ddmc_run(folder, "alone", DDM_NO_TRACE_CACHE="1")
    assert set(alone["programs"].values()) == {"traced"}
    for run in (again, alone):
        assert run["params"] == first["params"]
        assert run["results"] == first["results"] and run["log"] == first["log"]
