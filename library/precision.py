"""The program's dtypes → JAX dtypes. ``f32`` is the program's working float: float32 by
default, float64 when the program runs with ``x64`` (``--x64`` or ``x64 = true``)."""
from __future__ import annotations

from ddm.library.lazy import jnp


def resolve_dtype(dtype: str, x64: bool = False):
    if dtype == "f32":
        return jnp.float64 if x64 else jnp.float32
    if dtype == "f64":
        return jnp.float64
    if dtype == "i32":
        return jnp.int32
    if dtype == "bool":
        return jnp.bool_
    raise ValueError(f"unknown dtype {dtype!r}")
