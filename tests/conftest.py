"""Test-suite set-up. XLA's CPU pool is sized from NPROC when JAX starts: set ddm's guard
before any test module imports JAX (see ddm/library/xla_env.py)."""
import os

os.environ.setdefault("NPROC", "4")

import pathlib  # noqa: E402

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


@pytest.fixture
def examples_dir() -> pathlib.Path:
    return EXAMPLES
