"""What a network's output means: class labels for softmax and sigmoid outputs, values otherwise.

`predict(net, params, X)` turns the output A[L] = g[L](Z[L]) (n[L], m) into
the answer a user wants, by the output activation:

    softmax    labels = argmax_k A[k, j]          (m,) int32: one class per example
    sigmoid    labels = 1[A > 0.5]                (n[L], m) int32, shaped like Y
    otherwise  A itself                           (n[L], m): the predicted values

A softmax output is a distribution over classes (Y one-hot columns), so the
class is its largest entry; a sigmoid output is a probability per entry (Y of
0s and 1s), so each entry is thresholded at one half, which is Z > 0 (ties
Z = 0 count as 0). Both are decided on the logits Z[L] (the same answer,
without rounding of A near 0.5).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fgd import _checks
from fgd._types import Array, Params

#: Output activations whose outputs `predict` turns into labels.
CLASSIFIERS = ("softmax", "sigmoid")


def kind(net: Any) -> str:
    """"softmax", "sigmoid" or "values": what `net`'s output stands for."""
    name = net.output_activation.name
    return name if name in CLASSIFIERS else "values"


def labels_from_logits(kind_: str, Z: Array, A: Array) -> Array:
    """The decision of the module docstring from Z[L] and A[L] (n[L], m)."""
    if kind_ == "softmax":
        return jnp.argmax(Z, axis=0).astype(jnp.int32)         # (m,)
    if kind_ == "sigmoid":
        return (Z > 0).astype(jnp.int32)                       # (n[L], m): A > 0.5
    return A


def _decide(net, params, X):
    cache = net.forward(params, X)
    return labels_from_logits(kind(net), cache.Z[-1], cache.A[-1])


# the (frozen, hashable) net is static: one compile per net, shapes and dtypes
_decide = jax.jit(_decide, static_argnums=0)


def predict(net: Any, params: Params, X: Any) -> Array:
    """`net`'s answer for each column of X (see the module docstring)."""
    X = _checks.as_data(X, "X")
    net.check_input(X, "X")
    _checks.check_params(net, params)
    return _decide(net, params, X)
