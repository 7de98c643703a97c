"""ddm — Differentiable Decision Makers.

A typed pipeline language (``.ddm`` files) compiled to pure, jitted JAX functions whose gradients
flow end to end. This module is a lazy facade: importing ``ddm`` imports neither JAX nor Lark.

>>> import ddm
>>> prog = ddm.loads("input x: f32[3]\\nnode y = 2 * x\\noutput y")
>>> [float(v) for v in prog.apply({}, x=[1.0, 2.0, 3.0])["y"]]
[2.0, 4.0, 6.0]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Size XLA's CPU thread pool before anything can start JAX's backend (ddm/library/xla_env.py).
from ddm.library.xla_env import protect as _protect  # noqa: E402

_protect()

__all__ = [
    "load",
    "loads",
    "Program",
    "DdmError",
    "train",
    "evaluate",
    "save_params",
    "load_params",
    "experiment",
    "__version__",
]

if TYPE_CHECKING:  # what __getattr__ hands out, for type checkers (nothing is imported here)
    from ddm.dsl.diagnostics import DdmError
    from ddm.runtime.api import evaluate, train
    from ddm.runtime.experiment import experiment
    from ddm.runtime.params_io import load_params, save_params
    from ddm.runtime.program import Program, load, loads


def __getattr__(name: str):
    if name in ("load", "loads", "Program"):
        from ddm.runtime import program

        return getattr(program, name)
    if name in ("train", "evaluate"):
        from ddm.runtime import api

        return getattr(api, name)
    if name in ("save_params", "load_params"):
        from ddm.runtime import params_io

        return getattr(params_io, name)
    if name == "experiment":
        from ddm.runtime.experiment import experiment

        return experiment
    if name == "DdmError":
        from ddm.dsl.diagnostics import DdmError

        return DdmError
    raise AttributeError(f"module 'ddm' has no attribute {name!r}")
