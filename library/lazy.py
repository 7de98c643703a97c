"""JAX, imported on first use.

Shape rules run in ``ddmc check``, which must not pay for importing JAX; implementations sit
beside them and reach JAX through these proxies. The first touch also applies ddm's guard for
XLA's CPU thread pool (see :func:`ddm.library.xla_env.protect`).
"""

from __future__ import annotations

import importlib


class _Lazy:
    __slots__ = ("_name", "_module")

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        module = object.__getattribute__(self, "_module")
        if module is None:
            from ddm.library.xla_env import protect

            protect()
            module = importlib.import_module(object.__getattribute__(self, "_name"))
            object.__setattr__(self, "_module", module)
        return getattr(module, attr)


jax = _Lazy("jax")
jnp = _Lazy("jax.numpy")
lax = _Lazy("jax.lax")
jsp = _Lazy("jax.scipy")
