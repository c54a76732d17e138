"""Optimizers, gradient transforms, schedules and pytree arithmetic.

Every optimizer is optax-shaped: a factory that closes over its
hyperparameters and returns `Optimizer(init, update)`, with
`update(grads, state, params=None) -> (updates, state)`. Parameters change
only through `tree.apply_updates`.
"""


def __getattr__(name: str):
    """`fgd.<package>.<module>` works before the module is imported (``import
    fgd`` is lazy): the module is imported on first use."""
    import importlib

    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as error:
        if error.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
