"""Optimizers, gradient transforms, schedules and pytree arithmetic.

Every optimizer is optax-shaped: a factory that closes over its
hyperparameters and returns `Optimizer(init, update)`, with
`update(grads, state, params=None) -> (updates, state)`. Parameters change
only through `tree.apply_updates`.
"""


from fgd._lazy import submodule_getattr

__getattr__ = submodule_getattr(__name__)
