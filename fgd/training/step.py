"""The update step: gradient, optimizer update and `apply_updates` in one function.

One update step is one jit boundary::

    value, g = value_and_grad(loss)(params, X, Y)
    u, state = opt.update(g, state, params, value=value)   # value= only if accepted
    params   = apply_updates(params, u)

`train_step` is the pure step that `fit`'s compiled chunk runs; `make_step`
jits it for users who write their own loop. Its compiled program is shared:
`make_step` with an equal loss (`fgd.Loss` by value) and an fgd optimizer of
the same structure (`fgd.optim.base`) reuses it, the optimizer's numbers
being a traced argument; any other loss or optimizer object by identity.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _checks, _compile, parallel
from fgd.optim import tree
from fgd.optim.base import Identity, Structure, is_structural
from fgd.optim.transforms import call_update


def train_step(loss: Callable, optimizer: Any, tricks: _compile.Tricks = _compile.NONE) -> Callable:
    """The pure (unjitted) step `(params, state, X, Y) -> (params, state, loss, grads)`.

    `loss` is evaluated at the incoming params (the value computed with its
    gradient); the optimizer gets `value=loss` only if its `update` accepts it
    (`fgd.optim.transforms.call_update`), so optax optimizers work unchanged.
    `tricks` (`fgd._compile`) may rewrite the compiled code, never the result.
    """
    def step(params, opt_state, X, Y):
        value, grads = jax.value_and_grad(loss)(params, X, Y)
        updates, opt_state = call_update(optimizer, grads, opt_state, params, value=value)
        return tree.apply_updates(params, updates), opt_state, value, grads

    return tricks.rewrite_dots(step)


def make_step(loss: Callable, optimizer: Any, *, donate: bool = False, mesh: Any = None) -> Callable:
    """One jitted update: `step(params, opt_state, X, Y) -> (params, opt_state, loss_value)`.

    Computes `loss_value, g = value_and_grad(loss)(params, X, Y)`, then
    `u, opt_state = optimizer.update(g, opt_state, params[, value=loss_value])`
    and `params + u`, all in one compiled function. `loss_value` is the loss
    at the params passed in. The function is traced once per input shape and
    dtype; learning rates and schedules live in the traced optimizer state,
    so they never retrace. The compiled program is shared by every
    `make_step` with an equal loss (by value when hashable, such as
    `fgd.Loss`) and an fgd optimizer of the same structure: a new
    ``fgd.sgd(lr)`` for each rate compiles once, its numbers passed in as
    traced values; an optimizer without a structural key (optax's, a
    hand-made `fgd.Optimizer(init, update)`) shares it only with itself.

    Args:
      loss: a pure `loss(params, X, Y) -> scalar`, e.g. `fgd.make_loss(...)`.
      optimizer: any object with `init`/`update` (fgd's or optax's).
      donate: False (default): the params and opt_state you pass stay usable.
        True: their buffers are donated to the result, so XLA updates them in
        place (one copy of the params and state in memory instead of two,
        which matters for models near the device's memory); the arrays you
        passed are deleted by the call (use the returned ones).
      mesh: a `jax.sharding.Mesh` with a "data" axis (`fgd.parallel.data_mesh()`):
        each call replicates params and state on it and splits X, Y over "data"
        on their last axis (the device count must divide the batch); the result
        equals one device's (`fgd.parallel.sharded_step`).
    """
    _checks.check_loss(loss)
    _checks.check_optimizer(optimizer)
    if not isinstance(donate, (bool, np.bool_)):
        raise TypeError(f"donate must be True or False; got {donate!r}")
    if mesh is not None:
        tricks = _compile.tricks(jax.default_backend())._replace(transposed_copies=False)
        step = train_step(loss, optimizer, tricks)       # copies: measured on one device only

        def update(params, opt_state, X, Y):
            params, opt_state, value, _ = step(params, opt_state, X, Y)
            return params, opt_state, value

        return parallel.sharded_step(update, mesh)
    loss_key = loss if _by_value(loss) else Identity(loss)
    structure = Structure(optimizer) if is_structural(optimizer) else Identity(optimizer)
    hparams = jax.tree.map(jnp.asarray, optimizer.hparams) if is_structural(optimizer) else None
    tricks = _compile.tricks(jax.default_backend())
    jitted = _DONATING if donate else _KEEPING

    def shared(params, opt_state, X, Y):
        # a string or object X would otherwise fail deep in JAX's argument parsing
        X, Y = _checks.as_data(X, "X"), _checks.as_data(Y, "Y")
        return jitted(loss_key, structure, tricks, hparams, params, opt_state, X, Y)

    shared.lower = lambda params, opt_state, X, Y: jitted.lower(   # type: ignore[attr-defined]
        loss_key, structure, tricks, hparams, params, opt_state, X, Y)
    return shared


def _by_value(loss: Any) -> bool:
    """A hashable loss (an `fgd.Loss`, a frozen dataclass) is compared by value."""
    try:
        hash(loss)
    except TypeError:
        return False
    return True


def _shared_step(loss_key, structure, tricks, hparams, params, opt_state, X, Y):
    loss = loss_key.obj if isinstance(loss_key, Identity) else loss_key
    optimizer = structure.build(hparams)
    params, opt_state, value, _ = train_step(loss, optimizer, tricks)(params, opt_state, X, Y)
    return params, opt_state, value


#: The compiled steps of every `make_step`, keyed by jax.jit on (loss,
#: optimizer structure, tricks) and the argument shapes.
_KEEPING = jax.jit(_shared_step, static_argnums=(0, 1, 2))
_DONATING = jax.jit(_shared_step, static_argnums=(0, 1, 2), donate_argnums=(4, 5))
