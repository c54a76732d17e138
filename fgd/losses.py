"""Costs and the pure loss `loss(params, X, Y)`.

With E = A[L] - Y over all n[L] outputs and m examples:

    sse            J = 1/2 sum(E^2)                      (no 1/m: the MATLAB example)
    mse            J = 1/(2m) sum(E^2)
    bce            J = -1/m sum(Y log A + (1 - Y) log(1 - A))
    cross_entropy  J = -1/m sum(Y log A)

Penalties cover every weight leaf "W" and never the biases, scaled like the
data term:

    sse:     l2/2 sum(W^2) + l1 sum|W|
    others:  l2/(2m) sum(W^2) + l1/m sum|W|

With a sigmoid output, bce is computed from the logits Z as
sum(softplus(Z) - Y Z) / m, and with a softmax output cross_entropy as
-sum(Y log_softmax(Z)) / m, so saturated units give finite values.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from fgd import _checks

Array = jax.Array

COSTS = ("sse", "mse", "bce", "cross_entropy")
#: Output activation -> the cost whose dZ[L] is (A[L] - Y) (times 1/m where the cost has it).
CANONICAL = {"sigmoid": ("bce",), "softmax": ("cross_entropy",), "identity": ("sse", "mse")}


def check_cost(cost: Any) -> str:
    if not isinstance(cost, str) or cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(map(repr, COSTS))}; got {cost!r}")
    return cost


def data_scale(cost: str, m: int) -> float:
    """1 for sse, 1/m for the costs that average over examples."""
    return 1.0 if cost == "sse" else 1.0 / m


def cost_value(cost: str, output: str, Z: Array, A: Array, Y: Array) -> Array:
    """The data term J(A[L], Y); `output` is the canonical output activation name."""
    m = Y.shape[-1]
    if cost == "sse":
        return 0.5 * jnp.sum((A - Y) ** 2)
    if cost == "mse":
        return 0.5 * jnp.sum((A - Y) ** 2) / m
    if cost == "bce":
        if output == "sigmoid":
            # -[y log s(z) + (1-y) log(1-s(z))] = softplus(z) - y z
            return jnp.sum(jax.nn.softplus(Z) - Y * Z) / m
        return -jnp.sum(xlogy(Y, A) + xlogy(1 - Y, 1 - A)) / m
    if output == "softmax":
        return -jnp.sum(Y * jax.nn.log_softmax(Z, axis=0)) / m
    return -jnp.sum(xlogy(Y, A)) / m


def weight_leaves(params: Any) -> list:
    """Every leaf stored under the key "W" (never the biases)."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return [x for path, x in leaves if getattr(path[-1], "key", None) == "W"]


def penalty(params: Any, cost: str, m: int, l2: float, l1: float) -> Array:
    """(l2/2 sum W^2 + l1 sum|W|) x (1 for sse, 1/m otherwise).

    |W| is written as where(W == 0, 0, |W|) so that autodiff takes the
    subgradient 0 at W = 0, as the hand-derived l1 sign(W) does.
    """
    total = jnp.zeros((), weight_leaves(params)[0].dtype)
    for W in weight_leaves(params):
        if l2:
            total = total + 0.5 * l2 * jnp.sum(W * W)
        if l1:
            total = total + l1 * jnp.sum(jnp.where(W == 0, 0, jnp.abs(W)))
    return total * data_scale(cost, m)


def check_targets(cost: str, Y: Any, name: str = "Y") -> None:
    """bce needs targets in [0, 1] (a concrete Y only)."""
    if cost in ("bce", "cross_entropy") and not _checks.is_traced(Y):
        import numpy as np

        y = np.asarray(Y).astype(np.float64)
        if y.min() < 0 or y.max() > 1:
            raise ValueError(
                f"{name} must hold targets in [0, 1] for the {cost} cost; "
                f"got values from {y.min():g} to {y.max():g}"
            )


@dataclasses.dataclass(frozen=True)
class Loss:
    """A pure loss(params, X, Y) -> scalar: a cost of `net`'s output plus penalties.

    Frozen and hashable: `make_step` and `fit` key their compiled loops on it.
    Its shape checks use static shapes, so they run inside jit too.
    """

    net: Any
    cost: str
    l2: float = 0.0
    l1: float = 0.0

    def __call__(self, params, X, Y) -> Array:
        if hasattr(self.net, "init"):
            _checks.check_params(self.net, params)  # a (1, 1) b would broadcast silently
        X, Y = _checks.check_xy(self.net, X, Y, finite=False)
        check_targets(self.cost, Y)
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        Y = jnp.asarray(Y, dtype)
        cache = self.net.forward(params, X)
        J = cost_value(self.cost, self.net.output_activation.name, cache.Z[-1], cache.A[-1], Y)
        if self.l2 or self.l1:
            J = J + penalty(params, self.cost, Y.shape[-1], self.l2, self.l1)
        return J


def make_loss(net: Any, cost: str = "sse", l2: float = 0.0, l1: float = 0.0) -> Loss:
    """The pure loss(params, X, Y) of `net` under `cost` with L2/L1 penalties.

    Args:
      net: a model such as `fgd.MLP`.
      cost: "sse", "mse", "bce" or "cross_entropy" (see the module docstring).
      l2, l1: penalty strengths >= 0 on the weights (never the biases).
    """
    if not (hasattr(net, "forward") and hasattr(net, "check_input")):
        raise TypeError(f"net must be a model such as fgd.MLP; got {type(net).__name__}")
    check_cost(cost)
    return Loss(net, cost, _checks.check_nonneg(l2, "l2"), _checks.check_nonneg(l1, "l1"))
