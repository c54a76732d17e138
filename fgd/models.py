"""The multilayer perceptron: a static description plus a pytree of parameters.

Notation of the seeds (SEEDS.md section 5), one column per example:

    A[0] = X                         (n[0], m)
    Z[l] = W[l] A[l-1] + b[l]        (n[l], m),  W[l]: (n[l], n[l-1]),  b[l]: (n[l], 1)
    A[l] = g[l](Z[l])                (n[l], m)

`params` is a plain list, one dict {"W", "b"} per layer; a user may build it
by hand. Every function keeps the dtype of the params: the data are cast to it.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fgd import activations, validation

Array = jax.Array
Params = list

SCHEMES = ("small", "zeros", "normal", "uniform", "xavier", "he")


class Cache(NamedTuple):
    """What the forward pass keeps for backprop: Z = [Z[1], ..., Z[L]] and
    A = [A[0] = X, A[1], ..., A[L]]."""

    Z: list
    A: list


def check_key(key: Any, name: str = "key") -> None:
    """Accept a typed key (jax.random.key) or a legacy uint32[2] key."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        return
    if dtype == jnp.uint32 and getattr(key, "shape", None) == (2,):
        return
    raise TypeError(f"{name} must be a JAX PRNG key such as jax.random.key(0); got {key!r}"[:200])


def init_dense(key, fan_out: int, fan_in: int, scheme: str, dtype, scale: float) -> dict:
    """One dense layer {"W": (fan_out, fan_in), "b": (fan_out, 1)} by `scheme`:

    - "small":   W ~ N(0, 1) * 0.01, b = 0   (the seeds' default)
    - "zeros":   W = 0, b = 0                (symmetric: every hidden unit stays equal)
    - "normal":  W ~ N(0, 1) * scale, b = 0
    - "uniform": W, b ~ U[0, 1]              (MATLAB's rand)
    - "xavier":  W ~ N(0, 2 / (fan_in + fan_out)), b = 0   (Glorot normal)
    - "he":      W ~ N(0, 2 / fan_in), b = 0
    """
    k_w, k_b = jax.random.split(key)
    shape_w, shape_b = (fan_out, fan_in), (fan_out, 1)
    zeros_b = jnp.zeros(shape_b, dtype)
    if scheme == "uniform":
        return {"W": jax.random.uniform(k_w, shape_w, dtype), "b": jax.random.uniform(k_b, shape_b, dtype)}
    if scheme == "zeros":
        return {"W": jnp.zeros(shape_w, dtype), "b": zeros_b}
    std = {
        "small": 0.01,
        "normal": scale,
        "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
        "he": math.sqrt(2.0 / fan_in),
    }[scheme]
    return {"W": jax.random.normal(k_w, shape_w, dtype) * jnp.asarray(std, dtype), "b": zeros_b}


def check_scheme(scheme: Any, scale: Any) -> None:
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(map(repr, SCHEMES))}; got {scheme!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0; got {scale!r}")


def resolve_dtype(dtype: Any) -> Any:
    """`dtype` as a numpy dtype, JAX's default float when None."""
    if dtype is None:
        return jnp.zeros(()).dtype
    try:
        dt = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be a floating-point dtype; got {dtype!r}") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype; got {dt}")
    return dt


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network: `sizes = (n[0], n[1], ..., n[L])`.

    Args:
      sizes: units per layer, inputs first; at least two entries, all >= 1.
      hidden: activation of layers 1..L-1 (sigmoid/logsig, tanh/tansig, relu,
        leaky_relu, identity/linear/purelin).
      output: activation of layer L (the hidden ones, or softmax).

    Frozen and hashable, so it can be a static argument of a jitted function.
    """

    sizes: tuple
    hidden: str = "sigmoid"
    output: str = "identity"

    def __post_init__(self):
        sizes = self.sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"sizes must be a sequence of layer widths such as (3, 8, 2); got {sizes!r}")
        sizes = tuple(sizes)
        if len(sizes) < 2 or not all(
            isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in sizes
        ):
            raise ValueError(
                f"sizes must hold at least two integers >= 1 (inputs, ..., outputs); got {sizes!r}"
            )
        object.__setattr__(self, "sizes", tuple(int(n) for n in sizes))
        activations.get(self.hidden, argument="hidden")
        activations.get(self.output, output=True, argument="output")

    @property
    def n_layers(self) -> int:
        """L, the number of weight layers."""
        return len(self.sizes) - 1

    @property
    def in_dim(self) -> int:
        return self.sizes[0]

    @property
    def out_dim(self) -> int:
        return self.sizes[-1]

    def activation(self, layer: int) -> activations.Activation:
        """g[layer] for layer in 1..L."""
        return activations.get(self.output if layer == self.n_layers else self.hidden, output=True)

    @property
    def output_activation(self) -> activations.Activation:
        """g[L]."""
        return activations.get(self.output, output=True)

    def check_input(self, X: Any, name: str = "X") -> None:
        """X must be (n[0], m): one column per example."""
        if len(X.shape) != 2 or X.shape[0] != self.in_dim:
            raise ValueError(
                f"{name} must have shape ({self.in_dim}, m) for sizes {self.sizes} "
                f"(one column per example); got shape {tuple(X.shape)}"
            )

    def init(self, key, scheme: str = "small", *, dtype=None, scale: float = 1.0) -> Params:
        """Parameters [{"W": (n[l], n[l-1]), "b": (n[l], 1)} for l = 1..L].

        Args:
          key: a JAX PRNG key; the same key gives the same params.
          scheme: "small" (W ~ N(0,1) x 0.01, b = 0), "zeros", "normal"
            (W ~ N(0,1) x scale), "uniform" (W, b ~ U[0,1]), "xavier", "he".
          dtype: float dtype; JAX's default float when None.
          scale: the standard deviation of the "normal" scheme.
        """
        check_key(key)
        check_scheme(scheme, scale)
        dtype = resolve_dtype(dtype)
        keys = jax.random.split(key, self.n_layers)
        return [
            init_dense(keys[l], self.sizes[l + 1], self.sizes[l], scheme, dtype, scale)
            for l in range(self.n_layers)
        ]

    def forward(self, params: Params, X: Array) -> Cache:
        """The forward pass, keeping Z[l] and A[l] for backprop."""
        A = jnp.asarray(X, params[0]["W"].dtype)
        Zs, As = [], [A]
        for l, layer in enumerate(params, start=1):
            Z = layer["W"] @ A + layer["b"]  # (n[l], m)
            A = self.activation(l).fn(Z)
            Zs.append(Z)
            As.append(A)
        return Cache(Zs, As)

    def logits(self, params: Params, X: Array) -> Array:
        """Z[L], the output layer's pre-activation (n[L], m)."""
        return self.forward(params, X).Z[-1]

    def apply(self, params: Params, X: Array) -> Array:
        """A[L] = g[L](Z[L]), the predictions (n[L], m)."""
        X = validation.as_data(X, "X")
        self.check_input(X, "X")  # a 1-D X would broadcast against b silently
        return self.forward(params, X).A[-1]

    def backward(self, params: Params, cache: Cache, dZ_out: Array):
        """Hand-derived backward pass from dZ[L]; see `fgd.backprop.dense_backward`."""
        from fgd.backprop import dense_backward

        return dense_backward(self, params, cache, dZ_out)
