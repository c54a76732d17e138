"""Learning-rate schedules: functions ``step -> lr``, accepted wherever a rate is.

A schedule takes the optimizer's step count (a () int32 array, 0 for the first
update) and returns the rate as a () float array. The formulas are optax's
(``optax.constant_schedule``, ``piecewise_constant_schedule``,
``exponential_decay``, ``cosine_decay_schedule``,
``warmup_cosine_decay_schedule``); ``inverse_time`` is Keras's
``InverseTimeDecay``, which optax lacks. The count is traced, so a schedule's
changing output never triggers a recompile.

Every schedule is checked at construction over its whole range, not only at
step 0: its rates stay >= 0 for every step (a cosine decay's floor
``alpha * init_value`` too). Step counts (``decay_steps``, boundaries, ...)
must be integers; very large ones saturate (a boundary past the largest
count never fires, a ratio ``t / decay_steps`` is taken with a reciprocal
computed on the host) instead of overflowing the traced int32/float32 count.

This module also holds the rule for what a learning rate is (a number >= 0 or
a schedule) and the argument checks every optimizer and transform runs at
construction, so that messages read the same everywhere.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fgd._checks import check_number
from fgd._types import Array, Schedule

__all__ = ["constant", "piecewise_constant", "exponential_decay", "inverse_time",
           "cosine_decay", "warmup_cosine_decay"]


# --- learning rates: a number or a schedule ------------------------------------
def check_lr(owner: str, lr: Any, name: str = "lr") -> Any:
    """Check a learning rate: a finite number >= 0 or a schedule.

    A schedule (any callable) is evaluated once at step 0, eagerly, so that a
    negative or NaN starting rate is caught at construction too.
    """
    if callable(lr):
        value = lr(jnp.zeros((), jnp.int32))
        if not isinstance(value, jax.core.Tracer) and np.size(value) == 1:
            x = float(np.asarray(value).reshape(()))
            if not (math.isfinite(x) and x >= 0):
                raise ValueError(f"{owner}: {name} must be a number >= 0 or a schedule "
                                 f"returning one, got a schedule with {name}(0) = {x!r}")
        return lr
    try:
        return check_number(owner, name, lr, low=0.0)
    except TypeError:
        raise TypeError(f"{owner}: {name} must be a number >= 0 or a schedule "
                        f"(callable step -> lr), got {type(lr).__name__} {lr!r}") from None


def lr_at(lr: Any, count: Array) -> Array:
    """The rate a learning rate (number or schedule) gives at step ``count``."""
    return lr(count) if callable(lr) else jnp.asarray(lr)


def initial_lr(lr: Any, dtype: Any) -> Array:
    """The () rate an optimizer state starts with: ``lr`` at step 0, in ``dtype``."""
    return lr_at(lr, jnp.zeros((), jnp.int32)).astype(dtype)


def step_lr(lr: Any, count: Array, next_count: Array, stored: Array) -> tuple[Array, Array]:
    """The rate for the update at step ``count`` and the one to store for the next.

    A number's rate lives in the state (``stored``), as a traced value: a user
    may replace it between steps (``state._replace(lr=...)``) without a
    recompile. A schedule's rate is recomputed from the traced count.
    """
    if callable(lr):
        return (lr_at(lr, count).astype(stored.dtype),
                lr_at(lr, next_count).astype(stored.dtype))
    return stored, stored


# --- schedules ---------------------------------------------------------------
#: Offsets and bounds in steps saturate here: exact in float64, far past any
#: count an int32 (or int64) step counter reaches in a run.
STEP_CAP = 2.0 ** 53


def _steps(owner: str, name: str, value: Any, *, positive: bool) -> int:
    """An integer step count (>= 1 when `positive`, else >= 0), as a Python int."""
    check_number(owner, name, value, low=0, low_open=positive, integer=True)
    return int(value)


def _reciprocal(steps: int) -> float:
    """1 / steps on the host: tiny for huge counts, never an overflowing cast."""
    return 1.0 / float(min(steps, 2 ** 1000))


def _reached(count: Any, boundary: int) -> Array:
    """``count >= boundary``; False for a boundary past the counter's range."""
    count = jnp.asarray(count)
    if jnp.issubdtype(count.dtype, jnp.integer) and boundary > jnp.iinfo(count.dtype).max:
        return jnp.zeros(count.shape, bool)
    if boundary <= jnp.iinfo(jnp.int32).max:
        return count >= boundary
    return _float(count) >= min(float(boundary), STEP_CAP)


def _float(count: Any) -> Array:
    """The step count as the default float dtype (float64 when x64 is on)."""
    return jnp.asarray(count).astype(jax.dtypes.canonicalize_dtype(jnp.float64))


def constant(value: float) -> Schedule:
    """``lr(t) = value`` for every step t."""
    check_number("constant", "value", value, low=0.0)

    def schedule(count):
        return jnp.full(jnp.shape(count), value, _float(count).dtype)

    return schedule


def piecewise_constant(init_value: float,
                       boundaries_and_scales: Optional[Mapping[int, float]] = None
                       ) -> Schedule:
    """A step function: ``lr(t) = init_value * prod(s_k for b_k <= t)``.

    Args:
        init_value: the rate before the first boundary.
        boundaries_and_scales: ``{b_k: s_k}``; from step ``b_k`` on the rate is
            multiplied by ``s_k`` (e.g. ``{100: 0.1, 200: 0.1}`` divides by 10
            at steps 100 and 200).
    """
    owner = "piecewise_constant"
    check_number(owner, "init_value", init_value, low=0.0)
    if boundaries_and_scales is not None and not isinstance(boundaries_and_scales, Mapping):
        raise TypeError(f"{owner}: boundaries_and_scales must be a mapping {{boundary: scale}} "
                        f"such as {{100: 0.1}}, got {type(boundaries_and_scales).__name__} "
                        f"{boundaries_and_scales!r}"[:200])
    for boundary, scale in (boundaries_and_scales or {}).items():
        check_number(owner, "a boundary", boundary, low=0, integer=True)
        check_number(owner, f"the scale at boundary {boundary}", scale, low=0.0)
    items = sorted((int(b), s) for b, s in (boundaries_and_scales or {}).items())

    def schedule(count):
        value = jnp.full(jnp.shape(count), init_value, _float(count).dtype)
        for boundary, scale in items:
            value = jnp.where(_reached(count, boundary), value * scale, value)
        return value

    return schedule


def exponential_decay(init_value: float, transition_steps: int, decay_rate: float,
                      staircase: bool = False, transition_begin: int = 0,
                      end_value: Optional[float] = None) -> Schedule:
    """``lr(t) = init_value * decay_rate^p``, ``p = (t - transition_begin) / transition_steps``.

    ``p`` is floored when ``staircase``; before ``transition_begin`` the rate
    is ``init_value``; ``end_value``, if given, bounds the decay (a floor when
    ``decay_rate < 1``, a ceiling when it is > 1).
    """
    owner = "exponential_decay"
    check_number(owner, "init_value", init_value, low=0.0)
    inverse = _reciprocal(_steps(owner, "transition_steps", transition_steps, positive=True))
    check_number(owner, "decay_rate", decay_rate, low=0.0, low_open=True)
    begin = min(_steps(owner, "transition_begin", transition_begin, positive=False), STEP_CAP)
    if end_value is not None:
        check_number(owner, "end_value", end_value, low=0.0)

    def schedule(count):
        elapsed = _float(count) - begin
        p = elapsed * inverse
        if staircase:
            p = jnp.floor(p)
        value = jnp.where(elapsed <= 0, init_value, init_value * jnp.power(decay_rate, p))
        if end_value is not None:
            bound = jnp.maximum if decay_rate < 1.0 else jnp.minimum
            value = bound(value, end_value)
        return value

    return schedule


def inverse_time(init_value: float, decay_rate: float, decay_steps: int = 1,
                 staircase: bool = False) -> Schedule:
    """``lr(t) = init_value / (1 + decay_rate * t / decay_steps)``.

    ``t / decay_steps`` is floored when ``staircase`` (Keras's
    ``InverseTimeDecay``).
    """
    owner = "inverse_time"
    check_number(owner, "init_value", init_value, low=0.0)
    check_number(owner, "decay_rate", decay_rate, low=0.0)
    inverse = _reciprocal(_steps(owner, "decay_steps", decay_steps, positive=True))

    def schedule(count):
        p = _float(count) * inverse
        if staircase:
            p = jnp.floor(p)
        return init_value / (1 + decay_rate * p)

    return schedule


def cosine_decay(init_value: float, decay_steps: int, alpha: float = 0.0,
                 exponent: float = 1.0) -> Schedule:
    """``lr(t) = init_value * ((1 - alpha) c^exponent + alpha)``,
    ``c = (1 + cos(pi min(t, decay_steps) / decay_steps)) / 2``.

    The rate falls from ``init_value`` to ``alpha * init_value`` over
    ``decay_steps`` steps and stays there (Loshchilov and Hutter's SGDR
    without restarts). Its lowest rate is ``init_value * min(1, alpha)``, so
    ``alpha < 0`` (a negative rate: gradient ascent) is refused.
    """
    owner = "cosine_decay"
    check_number(owner, "init_value", init_value, low=0.0)
    steps = _steps(owner, "decay_steps", decay_steps, positive=True)
    inverse, steps = _reciprocal(steps), min(steps, STEP_CAP)
    check_number(owner, "alpha (the final rate is alpha * init_value)", alpha, low=0.0)
    check_number(owner, "exponent", exponent, low=0.0, low_open=True)

    def schedule(count):
        t = jnp.minimum(_float(count), steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * t * inverse))
        return init_value * ((1 - alpha) * cosine ** exponent + alpha)

    return schedule


def warmup_cosine_decay(init_value: float, peak_value: float, warmup_steps: int,
                        decay_steps: int, end_value: float = 0.0,
                        exponent: float = 1.0) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value``, then cosine decay.

    For ``t < warmup_steps``:
    ``lr(t) = (init_value - peak_value) (1 - t / warmup_steps) + peak_value``;
    afterwards ``lr(t) = cosine_decay(peak_value, decay_steps - warmup_steps,
    alpha=end_value / peak_value)(t - warmup_steps)``. As in optax,
    ``decay_steps`` counts the warmup too.
    """
    owner = "warmup_cosine_decay"
    check_number(owner, "init_value", init_value, low=0.0)
    check_number(owner, "peak_value", peak_value, low=0.0)
    warmup_steps = _steps(owner, "warmup_steps", warmup_steps, positive=False)
    check_number(owner, "decay_steps", decay_steps, low=warmup_steps, low_open=True, integer=True)
    decay_steps = int(decay_steps)
    check_number(owner, "end_value", end_value, low=0.0)
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    decay = cosine_decay(peak_value, decay_steps - warmup_steps, alpha, exponent)

    def schedule(count):
        t = _float(count)
        if warmup_steps == 0:
            return decay(t)
        frac = 1 - jnp.clip(t, 0, min(warmup_steps, STEP_CAP)) * _reciprocal(warmup_steps)
        warm = (init_value - peak_value) * frac + peak_value
        return jnp.where(t < min(warmup_steps, STEP_CAP), warm, decay(t - min(warmup_steps, STEP_CAP)))

    return schedule
