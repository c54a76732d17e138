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


from fgd._lazy import submodule_getattr

__getattr__ = submodule_getattr(__name__)
