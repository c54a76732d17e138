"""Numerical faults in `fgd.fit`: what a NaN/Inf loss does, and a divergence guard.

`fit(..., nonfinite=POLICY)`:

- ``"stop"`` (default): stop, warn (`RuntimeWarning`) and return the last params
  with a finite loss; `result.nonfinite_epoch` and, in mini-batch mode,
  `result.nonfinite_batch` say where the first NaN/Inf loss happened.
- ``"raise"``: the same stop, then `NonFiniteLossError` (a `FloatingPointError`)
  naming the epoch and the batch; a checkpointed run keeps its last good
  checkpoint (the failing state is not saved).
- ``"skip"``: the optimizer runs inside `fgd.apply_if_finite(opt, SKIP_LIMIT)`,
  so a batch whose gradient holds a NaN/Inf gives no update (the inner state
  is left as it was); the epoch loss is the mean over its finite batch losses,
  and the run stops as with "stop" only when no batch loss of an epoch is
  finite or the params stop being finite (more than `SKIP_LIMIT` bad batches
  in a row). `result.skipped` counts the skipped updates. In full-batch mode
  a skipped update would leave the same params to fail again on the same
  data, so "skip" stops as "stop" does.

The first failing batch is found on the device: each mini-batch epoch keeps
the index of its first non-finite batch loss (an argmax over the scanned
losses, one per epoch), read by the host only once the run has stopped.

`fit(..., diverge=F)` stops with `stop_reason == "diverged"` once an epoch's
loss exceeds F times the lowest finite loss of the epochs before it (F > 1).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any, Optional

import numpy as np

from fgd import _cache
from fgd.optim.transforms import ApplyIfFiniteState, apply_if_finite

POLICIES = ("stop", "raise", "skip")
#: Non-finite gradients in a row that nonfinite="skip" skips before it lets
#: them through (and the run stops on the non-finite params).
SKIP_LIMIT = 10
#: id(opt) -> (opt, apply_if_finite(opt)); see `wrap`
_WRAPPED = _cache.LRU("skip_wrappers", 64)


class NonFiniteLossError(FloatingPointError):
    """fit(..., nonfinite="raise") met a NaN/Inf loss.

    Attributes:
      epoch: the epoch whose loss was not finite.
      batch: the mini-batch (index in the epoch's order) of the first
        non-finite batch loss; None in full-batch mode.
      value: that epoch's loss.
    """

    def __init__(self, message: str, epoch: int, batch: Optional[int], value: float):
        super().__init__(message)
        self.epoch, self.batch, self.value = epoch, batch, value


def check_policy(nonfinite: Any) -> str:
    if not isinstance(nonfinite, str):
        raise TypeError(f"nonfinite must be one of {POLICIES}; got {type(nonfinite).__name__} "
                        f"{nonfinite!r}"[:200])
    if nonfinite not in POLICIES:
        raise ValueError(f"nonfinite must be one of {POLICIES}; got {nonfinite!r}")
    return nonfinite


def check_diverge(diverge: Any) -> Optional[float]:
    """None, or a finite factor > 1."""
    if diverge is None:
        return None
    if isinstance(diverge, (bool, np.bool_)) or not isinstance(diverge, numbers.Real):
        raise TypeError(f"diverge must be a number > 1 or None; got {type(diverge).__name__} "
                        f"{diverge!r}"[:200])
    if not (math.isfinite(float(diverge)) and float(diverge) > 1):
        raise ValueError(f"diverge must be a finite number > 1 (a factor over the lowest loss "
                         f"so far); got {diverge!r}")
    return float(diverge)


def wrap(opt: Any, nonfinite: str) -> Any:
    """`opt`, or for "skip" `apply_if_finite(opt, SKIP_LIMIT)`.

    The wrapper is cached by the identity of `opt` (a small bounded table):
    an optimizer without a structural key is compiled by identity, so a
    fresh wrapper per call would recompile every fit (fgd's own optimizers
    give wrappers of equal keys anyway).
    """
    if nonfinite != "skip":
        return opt
    make = lambda: (opt, apply_if_finite(opt, SKIP_LIMIT))
    hit = _WRAPPED.get(id(opt), make)
    if hit[0] is not opt:                 # an id reused by a new object
        _WRAPPED.clear()
        hit = _WRAPPED.get(id(opt), make)
    return hit[1]


def unwrap(state: Any, nonfinite: str) -> tuple[Any, int]:
    """(the user's optimizer state, updates skipped) from the state fit ran with."""
    if nonfinite != "skip" or not isinstance(state, ApplyIfFiniteState):
        return state, 0
    return state.inner_state, int(np.max(np.asarray(state.total_notfinite)))


def report(value: float, epoch: int, batch: Optional[int], nonfinite: str,
           stacklevel: int = 4) -> None:
    """Warn ("stop", "skip") or raise ("raise") about a non-finite loss."""
    where = f"epoch {epoch}" + (f", batch {batch}" if batch is not None else "")
    if nonfinite == "raise":
        raise NonFiniteLossError(
            f"fit: the loss became {value} in {where} (nonfinite='raise'); the params and "
            f"checkpoints before that epoch are intact", epoch, batch, float(value))
    warnings.warn(f"fit: the loss became {value} in {where}; stopped and returned the last "
                  f"params with a finite loss", RuntimeWarning, stacklevel=stacklevel)
