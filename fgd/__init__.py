"""fgd: functional gradient descent in JAX.

Data are laid out one column per example: X is (n_x, m), Y is (n_y, m).
Parameters are pytrees; a loss is a pure `loss(params, X, Y)`; optimizers are
`init`/`update` pairs; one jit-compiled step updates the parameters.

This module is the flat public API: re-exports only, one `__all__`.
"""
from fgd._version import __version__

# --- models, costs, hand-derived gradients and their checks -------------------
from fgd.nn.activations import ACTIVATIONS
from fgd.nn.mlp import MLP
from fgd.nn.cnn import CNN, AvgPool, Conv, Dense, Flatten, MaxPool
from fgd.losses import COSTS, Loss, make_loss
from fgd.backprop import backprop, local_gradients
from fgd.gradcheck import GradCheckReport, check_gradients

# --- checking hand-derived gradients of any code: losses, pytrees, layers, user functions
from fgd.nn.activations import Activation
from fgd.losses import Cost
from fgd.gradcheck import check_grad, check_vjp
from fgd import testing

# --- optimizers, transforms, schedules, tree arithmetic ------------------------
from fgd.optim import schedules
from fgd.optim.base import Optimizer
from fgd.optim.optimizers import adagrad, adam, adamw, current_lr, rmsprop, sgd
from fgd.optim.transforms import (adaptive_lr, add_decayed_weights, apply_if_finite, chain,
                                  clip_by_global_norm, clip_by_value, weights_only)
from fgd.optim.tree import apply_updates, global_norm

# --- training ------------------------------------------------------------------
from fgd.training.step import make_step
from fgd.training.fit import FitResult, fit
from fgd.training.sweep import SweepResult, sweep
from fgd.training import faults, resume

# --- using a trained model: metrics, evaluate; logs of a run (callbacks) ----------
from fgd import metrics
from fgd.metrics import evaluate
from fgd.training.callbacks import CSVLogger, TensorBoardLogger

# --- diagnostics and curvature --------------------------------------------------
from fgd import curvature
from fgd.curvature import hessian_eigs
from fgd.training.lr_find import LRFind, lr_find
from fgd.diagnose import Diagnosis, diagnose

# --- data, checkpoints, scale-out (plots is imported on its own: matplotlib is optional)
from fgd import checkpoint, data, parallel
from fgd._cache import clear_caches
from fgd._jax import enable_x64

__all__ = [
    "__version__",
    "ACTIVATIONS", "MLP", "CNN", "Conv", "MaxPool", "AvgPool", "Flatten", "Dense",
    "COSTS", "Loss", "make_loss", "backprop", "local_gradients",
    "GradCheckReport", "check_gradients",
    "Activation", "Cost", "check_grad", "check_vjp", "testing",
    "schedules", "Optimizer", "sgd", "adagrad", "rmsprop", "adam", "adamw", "current_lr",
    "chain", "clip_by_value", "clip_by_global_norm", "add_decayed_weights",
    "apply_if_finite", "adaptive_lr", "weights_only", "apply_updates", "global_norm",
    "make_step", "FitResult", "fit", "SweepResult", "sweep", "faults", "resume",
    "checkpoint", "data", "parallel", "clear_caches", "enable_x64",
    # using a trained model, logs of a run
    "metrics", "evaluate", "CSVLogger", "TensorBoardLogger",
    # diagnostics and curvature
    "curvature", "hessian_eigs", "LRFind", "lr_find", "Diagnosis", "diagnose",
]
