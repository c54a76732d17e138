"""fgd: functional gradient descent in JAX.

Data are laid out one column per example: X is (n_x, m), Y is (n_y, m).
Parameters are pytrees; a loss is a pure `loss(params, X, Y)`; optimizers are
`init`/`update` pairs; one jit-compiled step updates the parameters.
"""
__version__ = "0.1.0"

# --- foundation: models, costs, hand-derived gradients ---------------------
from fgd.base import Optimizer
from fgd.activations import ACTIVATIONS
from fgd.models import MLP
from fgd.losses import COSTS, Loss, make_loss
from fgd.backprop import backprop, local_gradients
from fgd.gradcheck import GradCheckReport, check_gradients

__all__ = [
    "ACTIVATIONS", "COSTS", "GradCheckReport", "Loss", "MLP", "Optimizer",
    "backprop", "check_gradients", "local_gradients", "make_loss",
]

# --- optimizers, transforms, schedules (issue 3) ---------------------------
from fgd import schedules
from fgd.optimizers import adagrad, adam, adamw, current_lr, rmsprop, sgd
from fgd.transforms import (adaptive_lr, add_decayed_weights, apply_if_finite, chain,
                            clip_by_global_norm, clip_by_value, weights_only)
from fgd.tree import apply_updates, global_norm

__all__ += ["schedules", "sgd", "adagrad", "rmsprop", "adam", "adamw", "current_lr",
            "chain", "clip_by_value", "clip_by_global_norm", "add_decayed_weights",
            "apply_if_finite", "adaptive_lr", "weights_only", "apply_updates", "global_norm"]

# --- training: make_step, fit, sweep (issue 4) -----------------------------
from fgd.train import FitResult, fit, make_step
__all__ += ["FitResult", "fit", "make_step"]
from fgd.sweep import SweepResult, sweep  # the name fgd.sweep is the function
__all__ += ["SweepResult", "sweep"]

# --- data, plots, checkpoint, parallel, conv ------------------------------
from fgd import data  # plots is imported on its own: matplotlib is optional
from fgd import checkpoint
from fgd import parallel

__all__ += ["data"]
__all__ += ["checkpoint"]
__all__ += ["parallel"]
from fgd.conv import CNN, AvgPool, Conv, Dense, Flatten, MaxPool
__all__ += ["CNN", "Conv", "MaxPool", "AvgPool", "Flatten", "Dense"]
