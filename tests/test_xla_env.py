"""Regression test of the XLA CPU deadlock ddm guards against (ddm/library/xla_env.py).

The pattern: a vmapped custom-VJP linear solve whose forward and adjoint triangular solves are
independent, batch 1024, n = 50, under value_and_grad. With XLA's intra-op pool at two threads
it hung forever on a 2-core machine; ddm sets NPROC ≥ 4 before JAX starts. The test runs the
pattern in a fresh interpreter whose environment has no NPROC, importing ddm first as users
do, under a timeout: a hang fails the test instead of CI.
"""

import os
import subprocess
import sys

PATTERN = r"""
import ddm
# importing ddm applied the guard
import os
assert int(os.environ["NPROC"]) >= 4, os.environ.get("NPROC")
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl

@jax.custom_vjp
def kkt_solve(L, b):
    return jsl.cho_solve((L, True), b)

def fwd(L, b):
    x = kkt_solve(L, b)
    return x, (L, x)

def bwd(res, g):
    L, x = res
    u = jsl.cho_solve((L, True), g)      # adjoint solve, independent of the forward one
    return -jnp.tril(jnp.outer(u, x)), u

kkt_solve.defvjp(fwd, bwd)

def loss(A, b):
    L = jax.vmap(jnp.linalg.cholesky)(A)
    x = jax.vmap(kkt_solve)(L, b)
    return jnp.sum(x ** 2)

key = jax.random.key(0)
M = jax.random.normal(key, (1024, 50, 50))
A = M @ jnp.swapaxes(M, 1, 2) + 50 * jnp.eye(50)
b = jax.random.normal(jax.random.fold_in(key, 1), (1024, 50))
for _ in range(3):
    v, g = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(A, b)
    jax.block_until_ready(g)
print("ok", float(v))
"""


def test_batched_custom_vjp_solve_does_not_deadlock():
    env = {k: v for k, v in os.environ.items() if k != "NPROC"}
    r = subprocess.run(
        [sys.executable, "-c", PATTERN], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_user_choice_of_nproc_is_kept():
    env = {**os.environ, "NPROC": "3"}
    code = (
        "import ddm; from ddm.library.lazy import jnp; jnp.zeros(1); import os; "
        "print(os.environ['NPROC'])"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.stdout.strip() == "3", r.stderr
