"""The type aliases of fgd, one set for every module.

They document intent; at run time every one of them is `Any` but `Array`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax

Array = jax.Array
Params = Any      # a pytree of arrays; for an MLP a list of {"W": (n[l], n[l-1]), "b": (n[l], 1)}
Grads = Any       # a pytree with the structure of Params
Updates = Any     # a pytree with the structure of Params
OptState = Any    # a pytree (usually a NamedTuple) carried between updates
PRNGKey = Any     # a jax.random key (typed or legacy uint32[2])
Schedule = Callable[[Array], Array]   # step count (int32 scalar) -> learning rate

__all__ = ["Array", "Params", "Grads", "Updates", "OptState", "PRNGKey", "Schedule"]
