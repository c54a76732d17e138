"""Activations g and their derivatives g', each written by hand.

Every activation is stored with the map from the upstream gradient dA to the
local gradient dZ (a vector-Jacobian product written out by hand):

    elementwise g:  dZ = dA * g'(Z)                                  (n, m)
    softmax:        dZ = A * (dA - sum_i(dA_i * A_i))   per column   (n, m)

Names follow the textbooks and MATLAB: "logsig" is the sigmoid, "tansig" is tanh,
"purelin" and "linear" are the identity.

A user's own activation is `Activation(name, g, g_prime)`, accepted wherever
a name is; its g' is the user's hand derivative, used by fgd's backprop and
checked by `fgd.check_gradients` against autodiff of g.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

Array = jax.Array

LEAKY_SLOPE = 0.01  # slope of leaky_relu for z < 0


#: built-in names (aliases included); filled below, once the built-ins exist
_RESERVED: set = set()


class _Fields(NamedTuple):
    name: str
    fn: Callable[[Array], Array]
    deriv: Optional[Callable[[Array], Array]]
    vjp: Callable[[Array, Array, Array], Array]  # (Z, A, dA) -> dZ


class ElementwiseVJP(NamedTuple):
    """dZ = dA * g'(Z) for an elementwise g: a callable that compares equal
    (and hashes alike) for the same g', so that two Activations built from the
    same functions are equal and a model holding one stays hashable."""

    deriv: Callable[[Array], Array]

    def __call__(self, z: Array, a: Array, da: Array) -> Array:
        del a
        return da * self.deriv(z)


class Activation(_Fields):
    """An activation g, its derivative g' (None where g is not elementwise) and
    the hand-written product dZ = dA * dg/dZ.

    A user activation is `Activation(name, g, g_prime)`: g(Z) and g'(Z) act
    elementwise on (n, m) arrays, and dZ = dA * g'(Z). A non-elementwise g
    gives `g_prime=None` and `vjp=(Z, A, dA) -> dZ` instead (as softmax does).
    `fgd.MLP(..., hidden=act)` and `fgd.CNN` accept it wherever they accept a
    name; fgd's backprop then uses the given g', and `fgd.check_gradients`
    checks it against autodiff of g.

    Raises:
      TypeError: name is not a string, g or g_prime (vjp) not callable.
      ValueError: the name of a built-in activation (it would be taken for it).
    """

    __slots__ = ()

    def __new__(cls, name: str, g: Callable, g_prime: Optional[Callable] = None,
                vjp: Optional[Callable] = None):
        if not isinstance(name, str) or not name:
            raise TypeError(f"Activation: name must be a non-empty string; got {name!r}"[:200])
        if not callable(g):
            raise TypeError(f"Activation {name!r}: g must be a function g(Z); got {type(g).__name__}")
        if g_prime is not None and not callable(g_prime):
            raise TypeError(f"Activation {name!r}: g_prime must be a function g'(Z); "
                            f"got {type(g_prime).__name__}")
        if name in _RESERVED:
            raise ValueError(f"Activation: {name!r} is the name of a built-in activation; "
                             f"give yours another name (e.g. {name + '_mine'!r})")
        if vjp is None:
            if g_prime is None:
                raise TypeError(f"Activation {name!r}: give g_prime (elementwise g) or "
                                f"vjp(Z, A, dA) -> dZ (any other g)")
            vjp = ElementwiseVJP(g_prime)  # type: ignore[assignment]  # a callable class
        elif not callable(vjp):
            raise TypeError(f"Activation {name!r}: vjp must be a function vjp(Z, A, dA) -> dZ; "
                            f"got {type(vjp).__name__}")
        return super().__new__(cls, name, g, g_prime, vjp)


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


_CANONICAL = {
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_deriv),
    "tanh": Activation("tanh", tanh, tanh_deriv),
    "relu": Activation("relu", relu, relu_deriv),
    "leaky_relu": Activation("leaky_relu", leaky_relu, leaky_relu_deriv),
    "identity": Activation("identity", identity, identity_deriv),
    "softmax": Activation("softmax", softmax, None, softmax_vjp),
}
ALIASES = {"logsig": "sigmoid", "tansig": "tanh", "linear": "identity", "purelin": "identity"}

#: Every accepted name (aliases included) -> its Activation.
ACTIVATIONS = {**_CANONICAL, **{a: _CANONICAL[c] for a, c in ALIASES.items()}}
_RESERVED.update(ACTIVATIONS)
HIDDEN_NAMES = tuple(n for n in ACTIVATIONS if n != "softmax")
OUTPUT_NAMES = tuple(ACTIVATIONS)


def is_builtin(act: Activation) -> bool:
    """True for fgd's own activations (whose output/cost pairs have shortcuts)."""
    return ACTIVATIONS.get(act.name) == act


def get(name, *, output: bool = False, argument: str = "activation") -> Activation:
    """The Activation called `name` (aliases allowed), or `name` itself when it
    is an Activation (a user's own).

    Raises:
      ValueError: unknown name, or "softmax" for a hidden layer; the message
        lists the valid names.
    """
    if isinstance(name, Activation):
        return name
    valid = OUTPUT_NAMES if output else HIDDEN_NAMES
    if not isinstance(name, str) or name not in valid:
        raise ValueError(
            f"{argument} must be one of {', '.join(repr(v) for v in valid)} "
            f"or an fgd.Activation(name, g, g_prime); got {name!r}"[:400]
        )
    return ACTIVATIONS[name]
