"""Network layers a program declares as params: ``param net = mlp(F, 32, N, act="tanh")``.

Each layer kind states how it is written, its type (:class:`LayerType`), how its weights are
initialised and how it is applied — together, like the ops. Weights live under the param's name:
``{"net": {"w0": [F, 32], "b0": [32], "w1": [32, N], "b1": [N]}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

from ddm.library.lazy import jax, jnp
from ddm.library.op import Arg
from ddm.library.types import LayerType, SymDim

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "elu", "softplus", "identity")


@dataclass(frozen=True)
class LayerKind:
    name: str
    min_sizes: int  # positional dims: linear takes exactly 2, mlp 2 or more
    max_sizes: int | None
    kwargs: tuple[Arg, ...]
    doc: str

    def build(self, sizes, static) -> LayerType:
        return LayerType(
            self.name, tuple(sizes), static.get("act", "identity"), static.get("bias", True)
        )


def _act(name: str, x):
    if name == "identity":
        return x
    return getattr(jax.nn, name)(x)


def init_layer(key, layer: LayerType, dtype) -> dict:
    """Weights for a layer whose sizes are concrete ints.

    Hidden layers followed by relu/gelu/elu/softplus get He-normal weights (variance 2/fan_in),
    others LeCun-normal (1/fan_in); biases start at zero.
    """
    sizes = []
    for s in layer.sizes:
        assert not isinstance(s, SymDim), f"layer size {s} is unresolved"  # the caller's job
        sizes.append(int(s))
    out = {}
    keys = jax.random.split(key, len(sizes) - 1)
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        gain = (
            2.0 if (not last and layer.activation in ("relu", "gelu", "elu", "softplus")) else 1.0
        )
        scale = jnp.sqrt(gain / d_in)
        out[f"w{i}"] = (jax.random.normal(keys[i], (d_in, d_out)) * scale).astype(dtype)
        if layer.bias:
            out[f"b{i}"] = jnp.zeros((d_out,), dtype)
    return out


def apply_layer(params: Mapping, layer: LayerType, x):
    """``x: [..., d_in] → [..., d_out]``; activation between layers, none after the last."""
    n = len(layer.sizes) - 1
    for i in range(n):
        x = x @ params[f"w{i}"]
        if layer.bias:
            x = x + params[f"b{i}"]
        if i < n - 1:
            x = _act(layer.activation, x)
    return x


LAYERS: Mapping[str, LayerKind] = {
    "linear": LayerKind(
        "linear", 2, 2, (Arg("bias", "bool", True),), "linear(d_in, d_out, bias=true): x @ W + b."
    ),
    "mlp": LayerKind(
        "mlp",
        2,
        None,
        (Arg("act", "str", "relu", choices=ACTIVATIONS), Arg("bias", "bool", True)),
        'mlp(d_in, hidden…, d_out, act="relu"): dense layers with the activation '
        "between them and none after the last.",
    ),
}


# --- initialisers of tensor params -----------------------------------------------------------


@dataclass(frozen=True)
class Initializer:
    name: str
    kwargs: tuple[Arg, ...]
    fn: Callable  # fn(key, shape, dtype, **kwargs)
    doc: str


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = 1
    for d in shape[:-2]:
        receptive *= d
    return shape[-2] * receptive, shape[-1] * receptive


def _glorot(key, shape, dtype):
    fan_in, fan_out = _fans(shape)
    limit = (6.0 / (fan_in + fan_out)) ** 0.5
    return jax.random.uniform(key, shape, dtype, -limit, limit)


def _he(key, shape, dtype):
    fan_in, _ = _fans(shape)
    return jax.random.normal(key, shape, dtype) * (2.0 / fan_in) ** 0.5


INITIALIZERS: Mapping[str, Initializer] = {
    "zeros": Initializer("zeros", (), lambda k, s, d: jnp.zeros(s, d), "All zeros."),
    "ones": Initializer("ones", (), lambda k, s, d: jnp.ones(s, d), "All ones."),
    "normal": Initializer(
        "normal",
        (Arg("std", "float", 0.01), Arg("mean", "float", 0.0)),
        lambda k, s, d, std=0.01, mean=0.0: mean + std * jax.random.normal(k, s, d),
        "Gaussian: normal(std=0.01, mean=0.0).",
    ),
    "uniform": Initializer(
        "uniform",
        (Arg("lo", "float", -0.05), Arg("hi", "float", 0.05)),
        lambda k, s, d, lo=-0.05, hi=0.05: jax.random.uniform(k, s, d, lo, hi),
        "Uniform on [lo, hi].",
    ),
    "glorot": Initializer(
        "glorot", (), _glorot, "Glorot/Xavier uniform: ±sqrt(6 / (fan_in + fan_out))."
    ),
    "he": Initializer("he", (), _he, "He normal: std sqrt(2 / fan_in)."),
}
