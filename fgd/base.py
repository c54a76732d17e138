"""Type aliases and the `Optimizer` pair shared by every part of fgd.

An optimizer is the pair of pure functions that optax made the norm::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)   # params optional
    params = fgd.apply_updates(params, updates)

Parameters change only through `apply_updates`; an optimizer never returns new
parameters. Any object with these two attributes works with `make_step` and
`fit`, including an optax `GradientTransformation`.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

Array = jax.Array
Params = Any      # a pytree of arrays; for MLP a list of {"W": (n[l], n[l-1]), "b": (n[l], 1)}
Grads = Any       # a pytree with the structure of Params
Updates = Any     # a pytree with the structure of Params
OptState = Any    # a pytree (usually a NamedTuple) carried between updates
PRNGKey = Any     # a jax.random key (typed or legacy uint32[2])
Schedule = Callable[[Array], Array]   # step count (int32 scalar) -> learning rate


class Optimizer(NamedTuple):
    """A gradient transformation: `init(params) -> state` and
    `update(grads, state, params=None, **extra) -> (updates, state)`."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]
