"""The learning-rate range test (Smith, "Cyclical learning rates", 2017).

One short run whose rate grows geometrically, step t using

    eta_t = lr_min * (lr_max / lr_min) ** (t / (steps - 1)),   t = 0 .. steps-1,

with the loss recorded at the params each step starts from. The whole run
is one compiled `lax.scan`. Where the loss falls fastest per step (the most
negative slope of log loss, lightly smoothed) is the suggested rate: on a
quadratic 1/2 lambda ||p||^2 a step multiplies the loss by (1 - eta lambda)^2,
so log loss falls fastest at eta = 1/lambda, the best constant rate. Once
the loss exceeds `diverge` times its lowest value (or is NaN/Inf) the run
stops: the params freeze and the later losses are NaN.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _checks
from fgd.losses import Loss
from fgd.optim import tree
from fgd.training.step import train_step


class LRFind(NamedTuple):
    """What `lr_find` returns.

    Attributes:
      lrs: (steps,) the rate of each step.
      losses: (steps,) the loss at the params step t starts from (NaN once stopped).
      suggestion: the rate of the steepest fall of log loss (module docstring).
    """

    lrs: np.ndarray
    losses: np.ndarray
    suggestion: float


def suggest(lrs: np.ndarray, losses: np.ndarray, smooth: int = 3) -> float:
    """The rate eta_t whose step lowers log loss most (slopes averaged over
    `smooth` neighbouring steps); NaN when fewer than two finite losses."""
    logs = np.log(np.maximum(np.asarray(losses, float), np.finfo(float).tiny))
    slope = np.diff(logs)                           # slope[t]: the effect of step t's rate
    slope = np.where(np.isfinite(slope), slope, np.inf)
    if slope.size == 0 or not np.isfinite(slope).any():
        return float("nan")
    if smooth > 1 and slope.size >= smooth:
        kernel = np.ones(smooth) / smooth
        padded = np.pad(slope, (smooth // 2, smooth - 1 - smooth // 2), mode="edge")
        slope = np.convolve(padded, kernel, mode="valid")
    return float(lrs[int(np.argmin(slope))])


def lr_find(loss: Callable, params: Any, make_opt: Callable, X: Any, Y: Any, *,
            lr_min: float = 1e-6, lr_max: float = 10.0, steps: int = 100,
            diverge: float = 4.0) -> LRFind:
    """Smith's range test: full-batch steps with a geometrically growing rate.

    Args:
      loss: `loss(params, X, Y) -> scalar` (an `fgd.Loss` has its shapes checked).
      params: the start (not modified).
      make_opt: rate -> optimizer, e.g. `fgd.sgd` or `lambda lr: fgd.adam(lr)`;
        it is called once with the schedule `t -> eta_t`, so it must accept a
        schedule as its rate (fgd's and optax's optimizers do).
      X, Y: the training data, examples along the last axis.
      lr_min, lr_max: the first and last rate, 0 < lr_min < lr_max.
      steps: the number of steps (>= 2).
      diverge: stop once the loss exceeds this multiple of its lowest (> 1).

    Returns:
      An `LRFind` (rates, losses, suggestion).
    """
    _checks.check_loss(loss)
    if not callable(make_opt):
        raise TypeError(f"make_opt must be a function rate -> optimizer; got {type(make_opt).__name__}")
    lo = _checks.check_real(lr_min, "lr_min", positive=True)
    hi = _checks.check_real(lr_max, "lr_max", positive=True)
    if lo is None or hi is None or not lo < hi:
        raise ValueError(f"lr_min and lr_max must satisfy 0 < lr_min < lr_max; got {lr_min!r}, {lr_max!r}")
    steps = _checks.check_int(steps, "steps", 2)
    factor = _checks.check_real(diverge, "diverge", positive=True)
    if factor is None or factor <= 1:
        raise ValueError(f"diverge must be a number > 1; got {diverge!r}")
    if isinstance(loss, Loss):
        _checks.check_params(loss.net, params)
    dtype = _checks.param_dtype(params)
    X, Y = _checks.check_data(loss.net if isinstance(loss, Loss) else None, X, Y, dtype)
    ratio = np.log(hi / lo) / (steps - 1)
    schedule = lambda t: lo * jnp.exp(ratio * jnp.asarray(t, tree.scalar_dtype(params)))
    opt = make_opt(schedule)
    _checks.check_optimizer(opt, "make_opt(rate)")
    losses = np.asarray(_run(loss, opt, steps, factor)(params, opt.init(params), X, Y), float)
    lrs = lo * np.exp(ratio * np.arange(steps))
    return LRFind(lrs, losses, suggest(lrs, losses))


def _run(loss: Callable, opt: Any, steps: int, factor: float) -> Callable:
    step = train_step(loss, opt)

    def run(params, state, X, Y):
        def body(carry, _):
            params, state, low, on = carry
            new_params, new_state, value, _ = step(params, state, X, Y)
            on = on & jnp.isfinite(value) & (value <= factor * low)
            low = jnp.where(on, jnp.minimum(low, value), low)
            params, state = tree.tree_where(on, (new_params, new_state), (params, state))
            return (params, state, low, on), jnp.where(on, value, jnp.nan)

        low = jnp.full((), jnp.inf, tree.scalar_dtype(params))
        _, values = jax.lax.scan(body, (params, state, low, jnp.array(True)), None, length=steps)
        return values

    return jax.jit(run)
