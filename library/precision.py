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


def scoped_x64(fn):
    """``fn`` computed with float64 enabled while it is traced and while its derivative is
    traced, and the process left as it was: for a float32 program one of whose nodes solves
    in float64 (``using ipm(dtype="f64")``), so loading or running it never changes the dtype
    of the caller's own arrays.

    Enabling float64 for the forward trace alone is not enough: JAX transposes a function
    (reverse mode) after the caller's trace of it has returned, outside any ``with`` the
    function opened, and the transposes of its float64 operations would then be traced with
    float64 off. So the scope is a custom VJP whose forward runs ``jax.vjp`` under the flag and
    whose backward applies the pullback under it too. Reverse mode (``grad``, ``vjp``,
    ``jacrev``), ``jit`` and ``vmap`` compose with it, with two limits, both from JAX
    re-tracing a finished jaxpr of float64 operations after the scope has closed: forward
    mode (``jvp``, ``jacfwd``) is not supported, and neither is a ``jit`` placed *between* a
    ``vmap`` and the gradient (``vmap(grad(jit(f)))``; ``jit(vmap(grad(f)))`` is fine). Load
    such a program with ``x64=True`` for those. The compiled product therefore jits a scoped
    function inside its scope, never around it (``compiler/product.py``).

    >>> import jax, jax.numpy as jnp
    >>> before = jnp.array(1.0).dtype
    >>> f = scoped_x64(lambda x: (x.astype(jnp.float64) ** 2).astype(jnp.float32))
    >>> float(jax.grad(f)(jnp.float32(3.0))), jnp.array(1.0).dtype == before
    (6.0, True)
    """
    from ddm.library.lazy import jax

    def primal(*args):
        with jax.enable_x64(True):
            return fn(*args)

    wrapped = jax.custom_vjp(primal)

    def forward(*args):
        with jax.enable_x64(True):
            return jax.vjp(fn, *args)

    def backward(pullback, cotangent):
        with jax.enable_x64(True):
            return pullback(cotangent)

    wrapped.defvjp(forward, backward)
    return wrapped
