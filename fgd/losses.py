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

A user's own cost is `Cost(name, J, dJ_dA)` (or `dJ_dZ=`): J(A, Y) -> scalar,
with its hand derivative dJ/dA(A, Y) -> (n[L], m), or dJ/dZ(Z, A, Y) for the
pair with the output activation. fgd's backprop starts from it
(dZ[L] = dJ/dA * g'(Z[L]), or the given dJ/dZ) and `fgd.check_gradients`
checks it against autodiff of J. `mean=True` (the default) scales penalties
by 1/m, as mse; `mean=False` leaves them unscaled, as sse.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import xlogy

from fgd import _checks
from fgd.nn.activations import is_builtin

Array = jax.Array

COSTS = ("sse", "mse", "bce", "cross_entropy")
#: Output activation -> the cost whose dZ[L] is (A[L] - Y) (times 1/m where the cost has it).
CANONICAL = {"sigmoid": ("bce",), "softmax": ("cross_entropy",), "identity": ("sse", "mse")}


class _CostFields(NamedTuple):
    name: str
    fn: Callable[[Array, Array], Array]                 # J(A, Y) -> scalar
    dA: Optional[Callable[[Array, Array], Array]]       # dJ/dA (A, Y) -> (n, m)
    dZ: Optional[Callable[[Array, Array, Array], Array]]  # dJ/dZ (Z, A, Y) -> (n, m)
    mean: bool                                          # penalties x 1/m (True) or x 1


class Cost(_CostFields):
    """A user's cost J(A, Y) with its hand derivative, for `make_loss`.

    Args:
      name: shown in reports; not one of the built-in names.
      J: the data term J(A[L], Y) -> scalar, A and Y of shape (n[L], m).
      dJ_dA: the hand dJ/dA(A, Y) -> (n[L], m); backprop then takes
        dZ[L] = dJ/dA * g'(Z[L]) (the output activation's vjp).
      dJ_dZ: or the hand dJ/dZ(Z, A, Y) -> (n[L], m) for the pair with the
        output activation (used when both are given).
      mean: True scales the penalties by 1/m (J averages over examples),
        False leaves them unscaled (J sums, as sse).

    Hashable (a NamedTuple of the functions), so a Loss holding it is too.
    """

    __slots__ = ()

    def __new__(cls, name: str, J: Callable, dJ_dA: Optional[Callable] = None, *,
                dJ_dZ: Optional[Callable] = None, mean: bool = True):
        if not isinstance(name, str) or not name:
            raise TypeError(f"Cost: name must be a non-empty string; got {name!r}"[:200])
        if name in COSTS:
            raise ValueError(f"Cost: {name!r} is the name of a built-in cost; give yours another name")
        for arg, f in (("J", J), ("dJ_dA", dJ_dA), ("dJ_dZ", dJ_dZ)):
            if f is not None and not callable(f) or (arg == "J" and f is None):
                raise TypeError(f"Cost {name!r}: {arg} must be a function; got {type(f).__name__}")
        if dJ_dA is None and dJ_dZ is None:
            raise TypeError(f"Cost {name!r}: give its hand derivative, dJ_dA(A, Y) or dJ_dZ(Z, A, Y)")
        if not isinstance(mean, (bool, np.bool_)):
            raise TypeError(f"Cost {name!r}: mean must be True or False; got {mean!r}")
        return super().__new__(cls, name, J, dJ_dA, dJ_dZ, bool(mean))


def check_cost(cost: Any):
    """A built-in cost name or a user's `Cost`."""
    if isinstance(cost, Cost):
        return cost
    if not isinstance(cost, str) or cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(map(repr, COSTS))} or an "
                         f"fgd.Cost(name, J, dJ_dA); got {cost!r}"[:300])
    return cost


def cost_name(cost: Any) -> str:
    return cost.name if isinstance(cost, Cost) else cost


def data_scale(cost, m: int) -> float:
    """1 for sse (and a Cost with mean=False), 1/m for the costs that average over examples."""
    if isinstance(cost, Cost):
        return 1.0 / m if cost.mean else 1.0
    return 1.0 if cost == "sse" else 1.0 / m


def cost_value(cost, output: str, Z: Array, A: Array, Y: Array) -> Array:
    """The data term J(A[L], Y); `output` is the canonical output activation name
    (None for a user's activation)."""
    if isinstance(cost, Cost):
        return cost.fn(A, Y)
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


def check_targets(cost: Any, Y: Any, name: str = "Y") -> None:
    """bce needs targets in [0, 1] (a concrete Y only)."""
    if isinstance(cost, str) and cost in ("bce", "cross_entropy") and not _checks.is_traced(Y):
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
    cost: Any            # a name of COSTS or a Cost
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
        out = self.net.output_activation
        J = cost_value(self.cost, out.name if is_builtin(out) else None, cache.Z[-1], cache.A[-1], Y)
        if self.l2 or self.l1:
            J = J + penalty(params, self.cost, Y.shape[-1], self.l2, self.l1)
        return J


def make_loss(net: Any, cost: str = "sse", l2: float = 0.0, l1: float = 0.0) -> Loss:
    """The pure loss(params, X, Y) of `net` under `cost` with L2/L1 penalties.

    Args:
      net: a model such as `fgd.MLP`.
      cost: "sse", "mse", "bce" or "cross_entropy" (see the module docstring),
        or a user's `fgd.Cost(name, J, dJ_dA)`.
      l2, l1: penalty strengths >= 0 on the weights (never the biases).
    """
    if not (hasattr(net, "forward") and hasattr(net, "check_input")):
        raise TypeError(f"net must be a model such as fgd.MLP; got {type(net).__name__}")
    check_cost(cost)
    return Loss(net, cost, _checks.check_nonneg(l2, "l2"), _checks.check_nonneg(l1, "l1"))
