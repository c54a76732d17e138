"""The training stack, split by who runs it, imports pointing down:

    step    the update step: value_and_grad, optimizer update, apply_updates
    chunk   the device side: a compiled chunk of epochs and its stopping rules
    driver  the host side: chunk after chunk, time limit, progress
    faults  what a NaN/Inf loss does
    resume  checkpointed training state, exact resume; `load` for inference
    callbacks  host callbacks at chunk ends; the CSV and TensorBoard loggers
    fit     `fit`: the checks, then chunk + driver (+ resume)
    sweep   `sweep`: many fits of one architecture in one program
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
