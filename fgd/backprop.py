"""Hand-derived gradients: the classic two-layer backward pass, generalised to L layers.

No autodiff here. With the forward pass of `fgd.nn.mlp` (A[0] = X,
Z[l] = W[l] A[l-1] + b[l], A[l] = g[l](Z[l])) and a cost J:

Output layer (the local gradient, or delta, of a unit is dJ/dZ: dZ[L] = dJ/dZ[L]):

    canonical pairs (sigmoid + bce, softmax + cross_entropy, identity + sse/mse):
        dZ[L] = (A[L] - Y) * s                  s = 1 for sse, 1/m otherwise
        (softmax + cross_entropy: (A[L] sum_i Y_i - Y) * s, the same for one-hot Y)
    any other pair:
        dA[L] = dJ/dA[L]                        e.g. (A - Y) * s for sse/mse,
                                                (-(Y/A) + (1-Y)/(1-A)) / m for bce,
                                                -(Y/A) / m for cross_entropy
        dZ[L] = dA[L] * g[L]'(Z[L])             (softmax: A * (dA - sum(dA * A)))

Every layer, l = L, ..., 1 (shapes for m examples):

    dW[l] = dZ[l] A[l-1]^T                      (n[l], n[l-1])
    db[l] = sum(dZ[l], axis=1, keepdims=True)   (n[l], 1)
    dZ[l-1] = W[l]^T dZ[l] * g[l-1]'(Z[l-1])    (n[l-1], m)

The classic two-layer exercise writes dZ[2] = A[2] - Y and puts the 1/m into dW and db; here the 1/m
of the cost lives in dZ[L], so dZ[l] is exactly dJ/dZ[l] and the two agree.

Penalties add to each weight gradient (never the biases):

    dW[l] += s * (l2 W[l] + l1 sign(W[l]))      (sign(0) = 0)
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from fgd import _checks, losses
from fgd._types import Array
from fgd.nn.activations import Activation, is_builtin


def output_delta(cost, act: Activation, Z: Array, A: Array, Y: Array) -> Array:
    """dZ[L] = dJ/dZ[L] for `cost` after the output activation `act` (n[L], m).

    A user's `fgd.Cost` gives its own dJ/dZ(Z, A, Y), or dJ/dA(A, Y) which the
    output activation's vjp turns into dZ[L].
    """
    if isinstance(cost, losses.Cost):
        if cost.dZ is not None:
            return cost.dZ(Z, A, Y)
        return act.vjp(Z, A, cost.dA(A, Y))
    s = losses.data_scale(cost, Y.shape[-1])
    if is_builtin(act) and cost in losses.CANONICAL.get(act.name, ()):
        if act.name == "softmax":
            # dJ/dZ = A sum_i(Y_i) - Y per column: A - Y for one-hot (or probability)
            # columns, but targets in [0, 1] need not sum to 1
            return (A * jnp.sum(Y, axis=0, keepdims=True) - Y) * s
        return (A - Y) * s
    if cost in ("sse", "mse"):
        dA = (A - Y) * s
    elif cost == "bce":
        dA = (-(Y / A) + (1 - Y) / (1 - A)) * s
    else:
        dA = -(Y / A) * s
    return act.vjp(Z, A, dA)


def add_penalty_grads(grads: Any, params: Any, cost, m: int, l2: float, l1: float) -> Any:
    """dW += s (l2 W + l1 sign(W)) on every leaf under the key "W"."""
    s = losses.data_scale(cost, m)

    def add(path, g, p):
        if getattr(path[-1], "key", None) != "W":
            return g
        return g + s * (l2 * p + l1 * jnp.sign(p))

    return jax.tree_util.tree_map_with_path(add, grads, params)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _backward(net, cost, l2, l1, params, X, Y):
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    Y = jnp.asarray(Y, dtype)
    cache = net.forward(params, X)
    dZ = output_delta(cost, net.output_activation, cache.Z[-1], cache.A[-1], Y)
    grads, deltas = net.backward(params, cache, dZ)
    if l2 or l1:
        grads = add_penalty_grads(grads, params, cost, Y.shape[-1], l2, l1)
    return grads, deltas


def _checked(net, cost, params, X, Y, l2=0.0, l1=0.0):
    losses.check_cost(cost)
    if not hasattr(net, "backward"):
        raise TypeError(f"net must be a model such as fgd.MLP; got {type(net).__name__}")
    _checks.check_params(net, params)
    X, Y = _checks.check_xy(net, X, Y, finite=True)
    losses.check_targets(cost, Y)
    if not any(_checks.is_traced(x) for x in (X, Y, *jax.tree_util.tree_leaves(params))):
        dtype = _checks.param_dtype(params)  # finite as given, and still finite in that dtype
        try:
            X, Y = _checks.on_device((X, Y), ("X", "Y"), dtype)
        except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
            pass                             # called inside jit: the values cannot be read here
    return _checks.check_nonneg(l2, "l2"), _checks.check_nonneg(l1, "l1"), X, Y


def backprop(net, cost, params, X, Y, l2: float = 0.0, l1: float = 0.0) -> list:
    """The gradient of `fgd.make_loss(net, cost, l2, l1)` derived by hand.

    Args:
      net: the model (e.g. `fgd.MLP`).
      cost: "sse", "mse", "bce" or "cross_entropy", or a user's `fgd.Cost`.
      params: [{"W": (n[l], n[l-1]), "b": (n[l], 1)}, ...]; their dtype is kept.
      X: (n[0], m) inputs, one column per example.  Y: (n[L], m) targets.
      l2, l1: penalty strengths (weights only).

    Returns:
      The gradient, a tree like `params`: dW[l], db[l] as in the module docstring.
    """
    l2, l1, X, Y = _checked(net, cost, params, X, Y, l2, l1)
    return _backward(net, cost, l2, l1, params, X, Y)[0]


def local_gradients(net, cost, params, X, Y) -> list:
    """The local gradients [dZ[1], ..., dZ[L]], dZ[l] = dJ/dZ[l] of shape (n[l], m).

    Penalties do not depend on Z, so they do not enter here.
    """
    _, _, X, Y = _checked(net, cost, params, X, Y)
    return _backward(net, cost, 0.0, 0.0, params, X, Y)[1]
