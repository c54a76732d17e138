"""Activations g and their derivatives g', each written by hand.

Every activation is stored with the map from the upstream gradient dA to the
local gradient dZ (a vector-Jacobian product written out by hand):

    elementwise g:  dZ = dA * g'(Z)                                  (n, m)
    softmax:        dZ = A * (dA - sum_i(dA_i * A_i))   per column   (n, m)

Names follow the seeds and MATLAB: "logsig" is the sigmoid, "tansig" is tanh,
"purelin" and "linear" are the identity.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array

LEAKY_SLOPE = 0.01  # slope of leaky_relu for z < 0


class Activation(NamedTuple):
    """An activation g, its derivative g' (None where g is not elementwise) and
    the hand-written product dZ = dA * dg/dZ."""

    name: str
    fn: Callable[[Array], Array]
    deriv: Optional[Callable[[Array], Array]]
    vjp: Callable[[Array, Array, Array], Array]  # (Z, A, dA) -> dZ


def sigmoid(z: Array) -> Array:
    """sigma(z) = 1 / (1 + exp(-z))."""
    return jax.nn.sigmoid(z)


def sigmoid_deriv(z: Array) -> Array:
    """sigma'(z) = sigma(z) (1 - sigma(z))."""
    s = jax.nn.sigmoid(z)
    return s * (1 - s)


def tanh(z: Array) -> Array:
    """tanh(z)."""
    return jnp.tanh(z)


def tanh_deriv(z: Array) -> Array:
    """tanh'(z) = 1 - tanh(z)^2."""
    t = jnp.tanh(z)
    return 1 - t * t


def relu(z: Array) -> Array:
    """max(z, 0); jax.nn.relu, whose autodiff takes the subgradient 0 at z = 0
    (jnp.maximum would take 1/2 there and disagree with relu_deriv)."""
    return jax.nn.relu(z)


def relu_deriv(z: Array) -> Array:
    """1 for z > 0, else 0 (the subgradient 0 at z = 0, as jax.nn.relu)."""
    return (z > 0).astype(z.dtype)


def leaky_relu(z: Array) -> Array:
    """z for z >= 0, 0.01 z otherwise."""
    return jnp.where(z >= 0, z, LEAKY_SLOPE * z)


def leaky_relu_deriv(z: Array) -> Array:
    """1 for z >= 0, 0.01 otherwise."""
    return jnp.where(z >= 0, 1.0, LEAKY_SLOPE).astype(z.dtype)


def identity(z: Array) -> Array:
    """g(z) = z."""
    return z


def identity_deriv(z: Array) -> Array:
    """g'(z) = 1."""
    return jnp.ones_like(z)


def softmax(z: Array) -> Array:
    """softmax over each column: exp(z_i - max z) / sum_j exp(z_j - max z)."""
    return jax.nn.softmax(z, axis=0)


def softmax_vjp(z: Array, a: Array, da: Array) -> Array:
    """dZ_i = sum_j dA_j dA_j/dZ_i = A_i (dA_i - sum_j dA_j A_j), per column."""
    del z
    return a * (da - jnp.sum(da * a, axis=0, keepdims=True))


def _elementwise(name, fn, deriv) -> Activation:
    return Activation(name, fn, deriv, lambda z, a, da: da * deriv(z))


_CANONICAL = {
    "sigmoid": _elementwise("sigmoid", sigmoid, sigmoid_deriv),
    "tanh": _elementwise("tanh", tanh, tanh_deriv),
    "relu": _elementwise("relu", relu, relu_deriv),
    "leaky_relu": _elementwise("leaky_relu", leaky_relu, leaky_relu_deriv),
    "identity": _elementwise("identity", identity, identity_deriv),
    "softmax": Activation("softmax", softmax, None, softmax_vjp),
}
ALIASES = {"logsig": "sigmoid", "tansig": "tanh", "linear": "identity", "purelin": "identity"}

#: Every accepted name (aliases included) -> its Activation.
ACTIVATIONS = {**_CANONICAL, **{a: _CANONICAL[c] for a, c in ALIASES.items()}}
HIDDEN_NAMES = tuple(n for n in ACTIVATIONS if n != "softmax")
OUTPUT_NAMES = tuple(ACTIVATIONS)


def get(name: str, *, output: bool = False, argument: str = "activation") -> Activation:
    """The Activation called `name` (aliases allowed).

    Raises:
      ValueError: unknown name, or "softmax" for a hidden layer; the message
        lists the valid names.
    """
    valid = OUTPUT_NAMES if output else HIDDEN_NAMES
    if not isinstance(name, str) or name not in valid:
        raise ValueError(
            f"{argument} must be one of {', '.join(repr(v) for v in valid)}; got {name!r}"
        )
    return ACTIVATIONS[name]
