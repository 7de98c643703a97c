"""Test-suite set-up. XLA's CPU pool is sized from NPROC when JAX starts: set ddm's guard
before any test module imports JAX (see ddm/library/xla_env.py)."""

import os

os.environ.setdefault("NPROC", "4")
# The CLI keeps a persistent XLA compilation cache (runtime/compile_cache.py): the suite's runs
# use one of their own, fresh each session, never the user's ~/.cache/ddm/xla.
if "DDM_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["DDM_CACHE_DIR"] = tempfile.mkdtemp(prefix="ddm-test-xla-")
    atexit.register(shutil.rmtree, os.environ["DDM_CACHE_DIR"], ignore_errors=True)
if os.environ.get("DDM_TEST_CACHE", "0") == "1":
    # Off by default: jaxlib 0.10.2 crashed with a segmentation fault in the executable's
    # serialize(), called by JAX's cache writer, after ~1,800 tests' compilations in one pytest
    # process (twice here; CI aborted at the same stage; docs/troubleshooting.md). The CLI runs
    # that tests start compile a few programs each, in a process of their own, and keep the cache.
    from ddm.runtime import compile_cache

    compile_cache.enable(os.environ["DDM_CACHE_DIR"])

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# The suite draws the same examples on every run, so CI passes or fails on the code, not on the
# draw. DDM_HYPOTHESIS=explore draws fresh examples (run it when changing a solver or a rule).
settings.register_profile("ddm", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("DDM_HYPOTHESIS", "ddm"))

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def examples_dir() -> pathlib.Path:
    return EXAMPLES


@pytest.fixture(scope="module")
def float64():
    """Float64 for a whole module, restored afterwards: another module may switch it off after
    this one was imported, so a module-level ``jax.config.update`` alone is not enough.
    Use with ``pytestmark = pytest.mark.usefixtures("float64")``."""
    import jax

    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def fd_grad(f, params, eps=1e-6):
    """Central finite differences of scalar ``f`` in every entry of the params pytree, flat."""
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(params)
    flat = np.asarray(flat, np.float64)
    out = np.zeros_like(flat)
    for k in range(flat.size):
        for sgn in (1, -1):
            x = flat.copy()
            x[k] += sgn * eps
            out[k] += sgn * float(f(unravel(x))) / (2 * eps)
    return out


def flat(tree):
    from jax.flatten_util import ravel_pytree

    return np.asarray(ravel_pytree(tree)[0])


def type_of(prog, node: str) -> str:
    """The IR type of a program's named node, as text."""
    return str(prog.graph.values[prog.graph.nodes[node]].type)


def compile_error(text: str):
    """The located error compiling ``text`` raises."""
    import ddm
    from ddm.dsl.diagnostics import DdmError

    with pytest.raises(DdmError) as info:
        ddm.loads(text)
    return info.value


def column_of(text: str, line: int, needle: str) -> int:
    """1-based column of ``needle`` on 1-based ``line`` of ``text``."""
    return text.split("\n")[line - 1].index(needle) + 1
