"""Learning-rate schedules: functions ``step -> lr``, accepted wherever a rate is.

A schedule takes the optimizer's step count (a () int32 array, 0 for the first
update) and returns the rate as a () float array. The formulas are optax's
(``optax.constant_schedule``, ``piecewise_constant_schedule``,
``exponential_decay``, ``cosine_decay_schedule``,
``warmup_cosine_decay_schedule``); ``inverse_time`` is Keras's
``InverseTimeDecay``, which optax lacks. The count is traced, so a schedule's
changing output never triggers a recompile.

Each schedule made here is a `StructuredSchedule`: a callable that also
carries its kind and static options (``key``: ``staircase``, whether an
``end_value`` is given, the number of boundaries) apart from its numbers
(``hparams``: rates, steps, decay factors). An optimizer built with one is
cached on the key, so ``sgd(exponential_decay(0.1, ...))`` and
``sgd(exponential_decay(0.2, ...))`` share one compiled program; any other
callable schedule is compared by identity.

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
from fgd.optim.base import Identity, number

__all__ = ["constant", "piecewise_constant", "exponential_decay", "inverse_time",
           "cosine_decay", "warmup_cosine_decay", "StructuredSchedule"]


class StructuredSchedule:
    """A schedule ``step -> lr`` with its structure: ``key`` (kind and static
    options, hashable), ``hparams`` (a dict of its numbers) and
    ``rebuild(hparams)`` (the same kind of schedule with other numbers,
    traced ones included)."""

    __slots__ = ("fn", "key", "hparams", "rebuild")

    def __init__(self, fn: Schedule, key: Any, hparams: dict, rebuild: Any):
        self.fn, self.key, self.hparams, self.rebuild = fn, key, hparams, rebuild

    def __call__(self, count: Any) -> Array:
        return self.fn(count)

    def __repr__(self) -> str:
        text = ", ".join(f"{k}={v!r}" for k, v in self.hparams.items())
        return f"{self.key[0]}({text})"


def _structured(kind: str, static: tuple, make: Any, **values: Any) -> StructuredSchedule:
    """``make(**values)`` as a `StructuredSchedule` of key ``(kind, *static)``."""
    values = {k: number(v) for k, v in values.items()}
    key = (kind,) + static

    def build(hparams):
        return StructuredSchedule(make(**hparams), key, hparams, build)

    return build(values)


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


def lr_parts(lr: Any) -> tuple[Any, Any, Any]:
    """``(key, hparams, rebuild)`` of a learning rate: a number is traced
    (key "number"); a schedule of this module by its kind and numbers; any
    other callable by identity."""
    if isinstance(lr, StructuredSchedule):
        return ("schedule", lr.key), lr.hparams, lr.rebuild
    if callable(lr):
        return ("function", Identity(lr)), None, lambda hparams: lr
    return ("number",), number(lr), lambda hparams: hparams


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
_INT32_MAX = 2 ** 31 - 1


def _steps(owner: str, name: str, value: Any, *, positive: bool) -> Any:
    """An integer step count (>= 1 when `positive`, else >= 0): a Python int
    while an int32 holds it, else a float saturated at `STEP_CAP` (a traced
    number must fit its dtype; a count that large is never reached)."""
    check_number(owner, name, value, low=0, low_open=positive, integer=True)
    value = int(value)
    return value if value <= _INT32_MAX else float(min(value, STEP_CAP))


# Each factory checks its arguments, then hands its numbers to `_structured`
# with a `make(**numbers)` that builds the function; `make` is called again
# with traced numbers inside compiled programs, so it only computes with
# them (no checks, no Python branches on them: those go in the static key).
# Where the formula combines two hyperparameters before meeting the step
# count (``1 - alpha``), the combination is also computed here, in double
# precision, and passed as a number of its own: the traced program then gets
# the value the Python constant had.

def _float(count: Any) -> Array:
    """The step count as the default float dtype (float64 when x64 is on)."""
    return jnp.asarray(count).astype(jax.dtypes.canonicalize_dtype(jnp.float64))


def constant(value: float) -> Schedule:
    """``lr(t) = value`` for every step t."""
    check_number("constant", "value", value, low=0.0)

    def make(value):
        def schedule(count):
            return jnp.full(jnp.shape(count), value, _float(count).dtype)
        return schedule

    return _structured("constant", (), make, value=value)


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
    items = sorted((_steps(owner, "a boundary", b, positive=False), s)
                   for b, s in (boundaries_and_scales or {}).items())

    def make(init_value, boundaries, scales):
        def schedule(count):
            value = jnp.full(jnp.shape(count), init_value, _float(count).dtype)
            for boundary, scale in zip(boundaries, scales):
                value = jnp.where(count >= boundary, value * scale, value)
            return value
        return schedule

    return _structured(owner, (len(items),), make, init_value=init_value,
                       boundaries=tuple(b for b, _ in items),
                       scales=tuple(number(s) for _, s in items))


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
    transition_steps = _steps(owner, "transition_steps", transition_steps, positive=True)
    check_number(owner, "decay_rate", decay_rate, low=0.0, low_open=True)
    transition_begin = _steps(owner, "transition_begin", transition_begin, positive=False)
    if end_value is not None:
        check_number(owner, "end_value", end_value, low=0.0)
    bound = None if end_value is None else ("floor" if decay_rate < 1.0 else "ceiling")

    def make(init_value, transition_steps, decay_rate, transition_begin, end_value):
        def schedule(count):
            elapsed = _float(count) - transition_begin
            p = elapsed / transition_steps
            if staircase:
                p = jnp.floor(p)
            value = jnp.where(elapsed <= 0, init_value, init_value * jnp.power(decay_rate, p))
            if bound is not None:
                value = (jnp.maximum if bound == "floor" else jnp.minimum)(value, end_value)
            return value
        return schedule

    return _structured(owner, (bool(staircase), bound), make, init_value=init_value,
                       transition_steps=transition_steps, decay_rate=decay_rate,
                       transition_begin=transition_begin, end_value=end_value)


def inverse_time(init_value: float, decay_rate: float, decay_steps: int = 1,
                 staircase: bool = False) -> Schedule:
    """``lr(t) = init_value / (1 + decay_rate * t / decay_steps)``.

    ``t / decay_steps`` is floored when ``staircase`` (Keras's
    ``InverseTimeDecay``).
    """
    owner = "inverse_time"
    check_number(owner, "init_value", init_value, low=0.0)
    check_number(owner, "decay_rate", decay_rate, low=0.0)
    decay_steps = _steps(owner, "decay_steps", decay_steps, positive=True)

    def make(init_value, decay_rate, decay_steps):
        def schedule(count):
            p = _float(count) / decay_steps
            if staircase:
                p = jnp.floor(p)
            return init_value / (1 + decay_rate * p)
        return schedule

    return _structured(owner, (bool(staircase),), make, init_value=init_value,
                       decay_rate=decay_rate, decay_steps=decay_steps)


def _cosine(init_value, decay_steps, alpha, exponent, one_minus_alpha):
    def schedule(count):
        t = jnp.minimum(_float(count), decay_steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * t / decay_steps))
        return init_value * (one_minus_alpha * cosine ** exponent + alpha)
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
    decay_steps = _steps(owner, "decay_steps", decay_steps, positive=True)
    check_number(owner, "alpha (the final rate is alpha * init_value)", alpha, low=0.0)
    check_number(owner, "exponent", exponent, low=0.0, low_open=True)
    return _structured(owner, (), _cosine, init_value=init_value, decay_steps=decay_steps,
                       alpha=alpha, exponent=exponent, one_minus_alpha=1 - alpha)


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
    decay_steps = _steps(owner, "decay_steps", decay_steps, positive=True)
    check_number(owner, "end_value", end_value, low=0.0)
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value

    def make(init_value, peak_value, warmup_steps, decay_steps, end_value, exponent,
             alpha, one_minus_alpha, rise, cosine_steps):
        del end_value                                  # used through alpha
        decay = _cosine(peak_value, cosine_steps, alpha, exponent, one_minus_alpha)

        def schedule(count):
            t = _float(count)
            if warmup_steps_is_zero:
                return decay(t)
            frac = 1 - jnp.clip(t, 0, warmup_steps) / warmup_steps
            warm = rise * frac + peak_value
            return jnp.where(t < warmup_steps, warm, decay(t - warmup_steps))
        return schedule

    warmup_steps_is_zero = warmup_steps == 0
    return _structured(owner, (warmup_steps_is_zero,), make, init_value=init_value,
                       peak_value=peak_value, warmup_steps=warmup_steps,
                       decay_steps=decay_steps, end_value=end_value, exponent=exponent,
                       alpha=alpha, one_minus_alpha=1 - alpha,
                       rise=init_value - peak_value, cosine_steps=decay_steps - warmup_steps)
