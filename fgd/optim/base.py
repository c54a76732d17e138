"""The `Optimizer` pair shared by every optimizer and transform of fgd.

An optimizer is the pair of pure functions that optax made the norm::

    state = opt.init(params)
    updates, state = opt.update(grads, state, params)   # params optional
    params = fgd.apply_updates(params, updates)

Parameters change only through `apply_updates`; an optimizer never returns new
parameters. Any object with these two attributes works with `make_step` and
`fit`, including an optax `GradientTransformation`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from fgd._types import OptState, Params, Updates


class Optimizer(NamedTuple):
    """A gradient transformation: `init(params) -> state` and
    `update(grads, state, params=None, **extra) -> (updates, state)`."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]
