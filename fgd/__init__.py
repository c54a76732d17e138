"""fgd: functional gradient descent in JAX.

Data are laid out one column per example: X is (n_x, m), Y is (n_y, m).
Parameters are pytrees; a loss is a pure `loss(params, X, Y)`; optimizers are
`init`/`update` pairs; one jit-compiled step updates the parameters.

This module is the flat public API: re-exports only, one `__all__`. The
re-exports are lazy (PEP 562): `import fgd` loads no jax, so the command line
(`python -m fgd list`, `--help`) answers at once; the first use of a name
(`fgd.sgd`, `from fgd import fit`) imports its module. Add a name to the
table under its topic; type checkers read the `TYPE_CHECKING` block.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from fgd._version import __version__

#: public name -> the module that defines it, or the module itself for the
#: names in `_MODULES`.
_EXPORTS = {
    # --- models, costs, hand-derived gradients and their checks ---------------
    "ACTIVATIONS": "fgd.nn.activations",
    "MLP": "fgd.nn.mlp",
    "CNN": "fgd.nn.cnn", "AvgPool": "fgd.nn.cnn", "Conv": "fgd.nn.cnn", "Dense": "fgd.nn.cnn",
    "Flatten": "fgd.nn.cnn", "MaxPool": "fgd.nn.cnn",
    "COSTS": "fgd.losses", "Loss": "fgd.losses", "make_loss": "fgd.losses",
    "backprop": "fgd.backprop", "local_gradients": "fgd.backprop",
    "GradCheckReport": "fgd.gradcheck", "check_gradients": "fgd.gradcheck",
    "check_grad": "fgd.gradcheck", "check_vjp": "fgd.gradcheck", "testing": "fgd.testing",
    "Activation": "fgd.nn.activations", "Cost": "fgd.losses",
    # --- optimizers, transforms, schedules, tree arithmetic --------------------
    "schedules": "fgd.optim.schedules",
    "Optimizer": "fgd.optim.base",
    "adagrad": "fgd.optim.optimizers", "adam": "fgd.optim.optimizers",
    "adamw": "fgd.optim.optimizers", "current_lr": "fgd.optim.optimizers",
    "rmsprop": "fgd.optim.optimizers", "sgd": "fgd.optim.optimizers",
    "adaptive_lr": "fgd.optim.transforms", "add_decayed_weights": "fgd.optim.transforms",
    "apply_if_finite": "fgd.optim.transforms", "chain": "fgd.optim.transforms",
    "clip_by_global_norm": "fgd.optim.transforms", "clip_by_value": "fgd.optim.transforms",
    "weights_only": "fgd.optim.transforms",
    "apply_updates": "fgd.optim.tree", "global_norm": "fgd.optim.tree",
    # --- training ----------------------------------------------------------------
    "make_step": "fgd.training.step",
    "FitResult": "fgd.training.fit", "fit": "fgd.training.fit",
    "SweepResult": "fgd.training.sweep", "sweep": "fgd.training.sweep",
    "faults": "fgd.training.faults", "resume": "fgd.training.resume",
    # --- using a trained model: metrics, evaluate; logs of a run (callbacks) ----
    "metrics": "fgd.metrics", "evaluate": "fgd.metrics",
    "CSVLogger": "fgd.training.callbacks", "TensorBoardLogger": "fgd.training.callbacks",
    # --- diagnostics and curvature ------------------------------------------------
    "curvature": "fgd.curvature", "hessian_eigs": "fgd.curvature",
    "LRFind": "fgd.training.lr_find", "lr_find": "fgd.training.lr_find",
    "Diagnosis": "fgd.diagnose", "diagnose": "fgd.diagnose",
    # --- data, checkpoints, scale-out (plots is imported on its own: matplotlib is optional)
    "checkpoint": "fgd.checkpoint", "data": "fgd.data", "parallel": "fgd.parallel",
    "clear_caches": "fgd._cache", "enable_x64": "fgd._jax",
}

_MODULES = frozenset({"schedules", "faults", "resume", "checkpoint", "data", "parallel",
                      "testing", "metrics", "curvature"})

__all__ = ["__version__", *_EXPORTS]


#: Exported functions named like the submodule that defines them
#: (`fgd.backprop`): importing the submodule binds it on this package, which
#: `_Package.__setattr__` turns back into the function.
_SHADOWED = frozenset(name for name, module in _EXPORTS.items()
                      if module == f"{__name__}.{name}" and name not in _MODULES)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use, or a submodule such as
    `fgd.plots`; the value is then kept in this module. A subpackage
    (`fgd.training`) comes with the modules of its public names, so that
    `fgd.training.chunk` is there as after an eager import."""
    module = _EXPORTS.get(name)
    if module is not None:
        loaded = importlib.import_module(module)
        value = loaded if name in _MODULES else getattr(loaded, name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        for public in sorted(set(_EXPORTS.values())):
            if public.startswith(f"{__name__}.{name}."):
                importlib.import_module(public)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the names for type checkers; at run time __getattr__ imports them
    # ruff: noqa: F401, I001   (re-exports listed in __all__ through _EXPORTS)
    from fgd import checkpoint, data, parallel
    from fgd import curvature, metrics, testing
    from fgd._cache import clear_caches
    from fgd._jax import enable_x64
    from fgd.curvature import hessian_eigs
    from fgd.diagnose import Diagnosis, diagnose
    from fgd.metrics import evaluate
    from fgd.training.callbacks import CSVLogger, TensorBoardLogger
    from fgd.training.lr_find import LRFind, lr_find
    from fgd.backprop import backprop, local_gradients
    from fgd.gradcheck import GradCheckReport, check_grad, check_gradients, check_vjp
    from fgd.losses import COSTS, Cost, Loss, make_loss
    from fgd.nn.activations import ACTIVATIONS, Activation
    from fgd.nn.cnn import CNN, AvgPool, Conv, Dense, Flatten, MaxPool
    from fgd.nn.mlp import MLP
    from fgd.optim import schedules
    from fgd.optim.base import Optimizer
    from fgd.optim.optimizers import adagrad, adam, adamw, current_lr, rmsprop, sgd
    from fgd.optim.transforms import (adaptive_lr, add_decayed_weights, apply_if_finite, chain,
                                      clip_by_global_norm, clip_by_value, weights_only)
    from fgd.optim.tree import apply_updates, global_norm
    from fgd.training import faults, resume
    from fgd.training.fit import FitResult, fit
    from fgd.training.step import make_step
    from fgd.training.sweep import SweepResult, sweep
