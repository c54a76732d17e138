"""The multilayer perceptron: a static description plus a pytree of parameters.

Notation of the classic two-layer exercise, one column per example:

    A[0] = X                         (n[0], m)
    Z[l] = W[l] A[l-1] + b[l]        (n[l], m),  W[l]: (n[l], n[l-1]),  b[l]: (n[l], 1)
    A[l] = g[l](Z[l])                (n[l], m)

`params` is a plain list, one dict {"W", "b"} per layer; a user may build it
by hand. Every function keeps the dtype of the params: the data are cast to it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _checks
from fgd._types import Array, Params
from fgd.nn import activations, outputs
from fgd.nn.init import check_scheme, init_dense, resolve_dtype


class Cache(NamedTuple):
    """What the forward pass keeps for backprop: Z = [Z[1], ..., Z[L]] and
    A = [A[0] = X, A[1], ..., A[L]]."""

    Z: list
    A: list


def dense_backward(net: Any, params: list, cache: Cache, dZ: Array) -> tuple[list, list]:
    """The backward pass of an MLP from dZ[L]; returns (grads, [dZ[1], ..., dZ[L]]).

    For l = L..1 (shapes for m examples):

        dW[l]   = dZ[l] A[l-1]^T                      (n[l], n[l-1])
        db[l]   = sum(dZ[l], axis=1, keepdims=True)   (n[l], 1)
        dZ[l-1] = W[l]^T dZ[l] * g[l-1]'(Z[l-1])      (n[l-1], m)
    """
    L = len(params)
    grads: list = [None] * L
    deltas: list = [None] * L
    for l in range(L, 0, -1):
        deltas[l - 1] = dZ
        grads[l - 1] = {
            "W": dZ @ cache.A[l - 1].T,                 # (n[l], n[l-1])
            "b": jnp.sum(dZ, axis=1, keepdims=True),    # (n[l], 1)
        }
        if l > 1:
            dA = params[l - 1]["W"].T @ dZ              # (n[l-1], m)
            dZ = net.activation(l - 1).vjp(cache.Z[l - 2], cache.A[l - 1], dA)
    return grads, deltas


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network: `sizes = (n[0], n[1], ..., n[L])`.

    Args:
      sizes: units per layer, inputs first; at least two entries, all >= 1.
      hidden: activation of layers 1..L-1 (sigmoid/logsig, tanh/tansig, relu,
        leaky_relu, identity/linear/purelin).
      output: activation of layer L (the hidden ones, or softmax).
        Either may also be a user's `fgd.Activation(name, g, g_prime)`.

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
        _checks.check_key(key)
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
        X = _checks.as_data(X, "X")
        self.check_input(X, "X")  # a 1-D X would broadcast against b silently
        return self.forward(params, X).A[-1]

    def predict(self, params: Params, X: Array) -> Array:
        """Class labels for a softmax output (argmax, (m,)) or a sigmoid output
        (A > 0.5, (n_out, m), like Y), the output values otherwise
        (`fgd.nn.outputs`)."""
        return outputs.predict(self, params, X)

    def backward(self, params: Params, cache: Cache, dZ_out: Array):
        """Hand-derived backward pass from dZ[L] (`dense_backward`)."""
        return dense_backward(self, params, cache, dZ_out)
