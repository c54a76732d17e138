"""Composable gradient transformations: clipping, weight decay, NaN guards, chains.

Each function returns an `Optimizer` (an ``init``/``update`` pair) that maps
gradients to new gradients or updates; `chain` composes them left to right::

    opt = fgd.chain(fgd.clip_by_global_norm(1.0), fgd.adam(1e-3))

Extra keyword arguments. ``update`` may take keyword arguments beyond
``(grads, state, params)``; `adaptive_lr` needs the current loss as
``value=``. `chain` and `apply_if_finite` forward each extra keyword only to
the transforms whose ``update`` accepts it (by name, or through ``**kwargs``)
and drop it for the others, so ``opt.update(g, s, p, value=loss)`` works for
any chain. `call_update` does the same for a single optimizer (fgd's or
optax's) and is what a training step should use.

Structure. Every transform here carries a structural key and its numbers
(`fgd.optim.base`); `chain`, `apply_if_finite` and `adaptive_lr` build
theirs from their inner optimizers' (an inner object without a key, such as
an optax optimizer, enters the key by identity). A mask enters the key as
the bool tree itself, or a callable mask (`weights_only`) by identity.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from fgd._checks import check_number
from fgd._types import Array, OptState, Params
from fgd.optim import tree
from fgd.optim.base import Identity, Optimizer, number, parts, structured
from fgd.optim.schedules import check_lr, initial_lr, lr_parts, step_lr

Mask = Union[Any, Callable[[Params], Any]]


class EmptyState(NamedTuple):
    """The state of a stateless transformation."""


def _check_optimizer(owner: str, name: str, opt: Any) -> None:
    if not (callable(getattr(opt, "init", None)) and callable(getattr(opt, "update", None))):
        raise TypeError(f"{owner}: {name} must be an optimizer (an object with init and "
                        f"update methods), got {type(opt).__name__} {opt!r}")


def _accepted_keywords(update: Callable) -> Optional[frozenset]:
    """Extra keywords ``update`` takes: a set of names, or None for ``**kwargs``."""
    try:
        parameters = list(inspect.signature(update).parameters.values())
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    # The first three positional slots are (grads, state, params), whatever
    # their names; only the names after them count as extra keywords.
    named = [p for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)]
    return frozenset(p.name for p in named[3:])


def _select(accepted: Optional[frozenset], extra: dict) -> dict:
    if accepted is None:
        return extra
    return {k: v for k, v in extra.items() if k in accepted}


def call_update(opt: Any, grads: Any, state: OptState, params: Optional[Params] = None,
                **extra: Any) -> tuple[Any, OptState]:
    """``opt.update(grads, state, params, **extra)``, passing only the extra
    keywords that ``opt.update`` accepts (e.g. ``value=`` for `adaptive_lr`).

    Use it to drive any optimizer, fgd's or optax's, from a training step.
    """
    return opt.update(grads, state, params, **_select(_accepted_keywords(opt.update), extra))


def chain(*opts: Optimizer) -> Optimizer:
    """Apply transformations in sequence: each one's output is the next one's input.

    The state is the tuple of the inner states, in order. Extra keyword
    arguments of ``update`` reach the transforms that accept them.
    """
    for i, opt in enumerate(opts):
        _check_optimizer("chain", f"argument {i}", opt)
    pieces = [parts(opt) for opt in opts]
    key = ("chain",) + tuple(k for k, _, _ in pieces)

    def rebuild(hparams):
        inner = [make(h) for (_, _, make), h in zip(pieces, hparams)]
        return _chain(inner)._replace(key=key, hparams=hparams, rebuild=rebuild)

    return _chain(opts)._replace(key=key, hparams=tuple(h for _, h, _ in pieces),
                                 rebuild=rebuild)


def _chain(opts: Any) -> Optimizer:
    accepted = [_accepted_keywords(opt.update) for opt in opts]

    def init(params):
        return tuple(opt.init(params) for opt in opts)

    def update(grads, state, params=None, **extra):
        new_state = []
        for opt, keys, inner in zip(opts, accepted, state):
            grads, inner = opt.update(grads, inner, params, **_select(keys, extra))
            new_state.append(inner)
        return grads, tuple(new_state)

    return Optimizer(init, update)


class ScaleByLrState(NamedTuple):
    count: Array  # type: ignore[assignment]  # () int32: updates done so far
    lr: Array     # () float32 (float64 for float64 params): the rate of the next update


def scale_by_learning_rate(lr: Any) -> Optimizer:
    """``u = -lr_t g``: the descent step, with a number or a schedule as rate."""
    lr = check_lr("scale_by_learning_rate", lr)
    lr_key, lr_numbers, lr_build = lr_parts(lr)

    def build(h):
        lr = lr_build(h["lr"])

        def init(params):
            return ScaleByLrState(jnp.zeros((), jnp.int32),
                                  initial_lr(lr, tree.scalar_dtype(params)))

        def update(grads, state, params=None):
            del params
            count = tree.safe_increment(state.count)
            rate, next_rate = step_lr(lr, state.count, count, state.lr)
            return tree.tree_scale(grads, -rate), ScaleByLrState(count, next_rate)

        return Optimizer(init, update)

    return structured(build, ("scale_by_learning_rate", lr_key), {"lr": lr_numbers})


def clip_by_value(max_delta: float) -> Optimizer:
    """Clip every gradient entry to ``[-max_delta, max_delta]``."""
    check_number("clip_by_value", "max_delta", max_delta, low=0.0)

    def build(h):
        max_delta = h["max_delta"]

        def update(grads, state, params=None):
            del params
            return jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta), grads), state

        return Optimizer(lambda params: EmptyState(), update)

    return structured(build, ("clip_by_value",), {"max_delta": number(max_delta)})


def clip_by_global_norm(max_norm: float) -> Optimizer:
    """Rescale the gradients when their global norm exceeds ``max_norm``.

    ``g <- g * max_norm / ||g||`` if ``||g|| > max_norm``, else ``g``, where
    ``||g||`` is `fgd.tree.global_norm` over all leaves.

    Two guarantees beyond optax: the norm is never divided by when the clip
    does not trigger, so a zero gradient with ``max_norm=0`` gives zeros, not
    0/0 = NaN; and the scale is shrunk by a bound on its own rounding error
    (``eps_leaf + (log2(n) + 4) eps_acc`` for n entries summed in the
    accumulation dtype, about 3e-6 relative for a million float32 entries),
    so rounding can't push the norm of a clipped update above ``max_norm``;
    each entry is rounded to its leaf's dtype toward zero.
    """
    check_number("clip_by_global_norm", "max_norm", max_norm, low=0.0)
    return structured(_clip_by_global_norm, ("clip_by_global_norm",),
                      {"max_norm": number(max_norm)})


def _clip_by_global_norm(h: dict) -> Optimizer:
    max_norm = h["max_norm"]

    def update(grads, state, params=None):
        del params
        leaves = jax.tree.leaves(grads)
        norm = tree.global_norm(grads)
        trigger = norm > max_norm
        scale = max_norm / jnp.where(trigger, norm, 1)
        # Relative rounding error of the computed norm and scale: a tree
        # (pairwise) sum of n squares, then sqrt, divide and multiply.
        size = max(sum(int(np.size(g)) for g in leaves), 1)
        slack = (math.log2(size) + 4) * float(jnp.finfo(norm.dtype).eps)

        def clip(g):
            # ... plus one rounding of each entry to the leaf's dtype, taken
            # toward zero: among subnormals (float16 below 6e-5) rounding to
            # the nearest can grow an entry by far more than eps.
            margin = 1 - float(jnp.finfo(g.dtype).eps) - slack
            acc = tree.accumulation_dtype(g.dtype)
            exact = g.astype(acc) * (scale * margin).astype(acc)
            clipped = exact.astype(g.dtype)
            grew = jnp.abs(clipped.astype(acc)) > jnp.abs(exact)
            clipped = jnp.where(grew, jnp.nextafter(clipped, jnp.zeros_like(clipped)), clipped)
            return jnp.where(trigger, clipped, g)

        return jax.tree.map(clip, grads), state

    return Optimizer(lambda params: EmptyState(), update)


def weights_only(params: Params) -> Any:
    """A mask selecting the leaves stored under the dict key ``"W"``.

    For fgd's MLP params ``[{"W": ..., "b": ...}, ...]`` it gives
    ``[{"W": True, "b": False}, ...]``: pass ``mask=fgd.weights_only`` to
    `add_decayed_weights` or `fgd.adamw` to decay weights and leave biases.
    """
    def is_weight(path, _):
        return bool(path) and isinstance(path[-1], jax.tree_util.DictKey) and path[-1].key == "W"

    return jax.tree_util.tree_map_with_path(is_weight, params)


def mask_key(mask: Any) -> Any:
    """A mask as part of a structural key: None; a callable by identity; a
    bool tree as its structure and leaves."""
    if mask is None:
        return None
    if callable(mask):
        return Identity(mask)
    leaves, treedef = jax.tree.flatten(mask)
    return ("tree", treedef, tuple(bool(x) for x in leaves))


def check_mask(owner: str, mask: Any) -> Any:
    """A mask is None, a callable ``params -> bool tree``, or a bool tree."""
    if mask is None or callable(mask):
        return mask
    for leaf in jax.tree.leaves(mask):
        if not isinstance(leaf, (bool, np.bool_)):
            raise TypeError(f"{owner}: mask must be None, a callable params -> bool tree, "
                            f"or a pytree of Python bools, got a leaf {leaf!r}")
    return mask


def decay_weights(owner: str, updates: Any, params: Params, weight_decay: float,
                  mask: Any) -> Any:
    """``u + weight_decay * p`` on the leaves the mask selects (all if None)."""
    if params is None:
        raise ValueError(f"{owner}: update needs params for weight decay, got None")
    if mask is None:
        return jax.tree.map(lambda u, p: u + weight_decay * p, updates, params)
    selected = mask(params) if callable(mask) else mask
    try:
        return jax.tree.map(lambda u, p, m: u + weight_decay * p if m else u,
                            updates, params, selected)
    except ValueError as error:
        raise ValueError(f"{owner}: mask must have the structure of params: {error}") from None


def add_decayed_weights(weight_decay: float, mask: Mask = None) -> Optimizer:
    """Coupled L2 regularisation: ``g <- g + weight_decay * p``.

    Args:
        weight_decay: the coefficient, >= 0.
        mask: which leaves to decay: a pytree of bools shaped like params, or
            a callable ``params -> bool tree`` such as `weights_only`. None
            decays every leaf.
    """
    check_number("add_decayed_weights", "weight_decay", weight_decay, low=0.0)
    mask = check_mask("add_decayed_weights", mask)

    def build(h):
        def update(grads, state, params=None):
            return (decay_weights("add_decayed_weights", grads, params, h["weight_decay"], mask),
                    state)

        return Optimizer(lambda params: EmptyState(), update)

    return structured(build, ("add_decayed_weights", mask_key(mask)),
                      {"weight_decay": number(weight_decay)})


class ApplyIfFiniteState(NamedTuple):
    inner_state: OptState
    notfinite_count: Array   # () int32: consecutive non-finite gradients so far
    last_finite: Array       # () bool: the latest gradient was finite
    total_notfinite: Array   # () int32: non-finite gradients since init, never reset


def apply_if_finite(inner: Optimizer, max_consecutive_errors: int) -> Optimizer:
    """Skip updates whose gradient holds a NaN or an Inf (optax's semantics).

    A non-finite gradient gives a zero update and leaves ``inner_state``
    untouched; ``notfinite_count`` counts consecutive such gradients (reset to
    0 by a finite one) and ``total_notfinite`` all of them. Once more than
    ``max_consecutive_errors`` come in a row, the wrapper gives up and passes
    them to ``inner``, so a run that only produces NaN does show it.
    """
    _check_optimizer("apply_if_finite", "inner", inner)
    check_number("apply_if_finite", "max_consecutive_errors", max_consecutive_errors,
                 low=0, low_open=True, integer=True)
    inner_key, inner_numbers, inner_build = parts(inner)
    key = ("apply_if_finite", inner_key)

    def rebuild(h):
        return _apply_if_finite(inner_build(h["inner"]), h["max_consecutive_errors"])._replace(
            key=key, hparams=h, rebuild=rebuild)

    return _apply_if_finite(inner, max_consecutive_errors)._replace(
        key=key, rebuild=rebuild,
        hparams={"inner": inner_numbers, "max_consecutive_errors": max_consecutive_errors})


def _apply_if_finite(inner: Any, max_consecutive_errors: Any) -> Optimizer:
    accepted = _accepted_keywords(inner.update)

    def init(params):
        return ApplyIfFiniteState(inner.init(params), jnp.zeros((), jnp.int32),
                                  jnp.asarray(True), jnp.zeros((), jnp.int32))

    def update(grads, state, params=None, **extra):
        extra = _select(accepted, extra)
        finite = tree.tree_all_finite(grads)
        notfinite_count = jnp.where(finite, 0, tree.safe_increment(state.notfinite_count))

        def apply():
            return inner.update(grads, state.inner_state, params, **extra)

        def skip():
            shapes = jax.eval_shape(apply)[0]
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
            return zeros, state.inner_state

        updates, inner_state = jax.lax.cond(
            finite | (notfinite_count > max_consecutive_errors), apply, skip)
        total = jnp.where(finite, state.total_notfinite,
                          tree.safe_increment(state.total_notfinite))
        return updates, ApplyIfFiniteState(inner_state, notfinite_count.astype(jnp.int32),
                                           finite, total)

    return Optimizer(init, update)


class AdaptiveLrState(NamedTuple):
    count: Array  # type: ignore[assignment]  # () int32: update calls so far, rejected ones included
    lr_scale: Array          # () float: factor on the inner's rate (starts at 1)
    inner_state: OptState
    accepted_params: Params  # the params of the last accepted point
    accepted_value: Array    # () float: the loss there (inf before the first call)
    rejected: Array          # () bool: the previous call rejected its step


def adaptive_lr(inner_or_lr: Any, lr_inc: float = 1.05, lr_dec: float = 0.7,
                max_perf_inc: float = 1.04) -> Optimizer:
    """A loss-adaptive learning rate, as MATLAB's ``traingda``.

    ``update(grads, state, params, *, value)`` takes the loss at ``params``
    as ``value`` (required) and ``params`` (required). Let ``L_a`` be the loss
    of the last accepted point ``p_a`` and ``s`` the rate factor. Each call is
    one of:

    * fresh: the first call, or the first call after a rejection (``params``
      is then the restored ``p_a``): accept, ``s`` unchanged.
    * reject, when ``not value <= max_perf_inc * L_a`` (the loss rose by more
      than 4%, or is NaN): ``s <- lr_dec * s``; the update is
      ``p_a - params``, which brings ``apply_updates`` back to ``p_a``; the
      inner state is kept as it was.
    * accept otherwise: if ``value < L_a`` then ``s <- lr_inc * s``; the
      update is ``s * inner.update(grads)``; ``p_a <- params``,
      ``L_a <- value``.

    The state keeps the params of the last accepted point (not the last
    update): ``params + (p_a - params)`` is exactly ``p_a`` whenever each
    entry of ``p_a`` is within a factor 2 of ``params`` (Sterbenz), which a
    step of ordinary size keeps, and within one rounding otherwise. The inner
    state (e.g. Adam's moments) is not rolled back.
    Losses are taken to be >= 0, as in MATLAB.

    Args:
        inner_or_lr: a learning rate (number or schedule), meaning plain
            gradient descent ``u = -lr s g``; or an optimizer, whose updates
            are multiplied by ``s``.
        lr_inc: growth factor after a fall in the loss, >= 1.
        lr_dec: cut factor after a rejected step, in (0, 1].
        max_perf_inc: the largest accepted loss ratio ``value / L_a``, >= 1.

    `fgd.current_lr` reports the inner rate times ``s``.
    """
    owner = "adaptive_lr"
    if hasattr(inner_or_lr, "init") and hasattr(inner_or_lr, "update"):
        inner = inner_or_lr
        _check_optimizer(owner, "inner_or_lr", inner)
    else:
        inner = scale_by_learning_rate(check_lr(owner, inner_or_lr, "inner_or_lr"))
    check_number(owner, "lr_inc", lr_inc, low=1.0)
    check_number(owner, "lr_dec", lr_dec, low=0.0, high=1.0, low_open=True)
    check_number(owner, "max_perf_inc", max_perf_inc, low=1.0)
    inner_key, inner_numbers, inner_build = parts(inner)
    key = (owner, inner_key)
    numbers = {"inner": inner_numbers, "lr_inc": number(lr_inc), "lr_dec": number(lr_dec),
               "max_perf_inc": number(max_perf_inc)}

    def rebuild(h):
        return _adaptive_lr(inner_build(h["inner"]), h["lr_inc"], h["lr_dec"],
                            h["max_perf_inc"])._replace(key=key, hparams=h, rebuild=rebuild)

    return _adaptive_lr(inner, lr_inc, lr_dec, max_perf_inc)._replace(
        key=key, hparams=numbers, rebuild=rebuild)


def _adaptive_lr(inner: Any, lr_inc: Any, lr_dec: Any, max_perf_inc: Any) -> Optimizer:
    owner = "adaptive_lr"
    accepted = _accepted_keywords(inner.update)

    def init(params):
        dtype = tree.scalar_dtype(params)
        return AdaptiveLrState(jnp.zeros((), jnp.int32), jnp.ones((), dtype), inner.init(params),
                               params, jnp.full((), jnp.inf, dtype), jnp.asarray(False))

    def update(grads, state, params=None, *, value=None, **extra):
        if value is None:
            raise TypeError(f"{owner}: update needs the loss at params as value=, got None")
        if params is None:
            raise ValueError(f"{owner}: update needs params, got None")
        value = jnp.asarray(value).astype(state.accepted_value.dtype)
        fresh = (state.count == 0) | state.rejected
        reject = ~fresh & ~(value <= max_perf_inc * state.accepted_value)
        improved = ~fresh & (value < state.accepted_value)
        lr_scale = jnp.where(reject, state.lr_scale * lr_dec,
                             jnp.where(improved, state.lr_scale * lr_inc, state.lr_scale))
        steps, inner_state = inner.update(grads, state.inner_state, params,
                                          **_select(accepted, extra))
        updates = tree.tree_where(reject, tree.tree_sub(state.accepted_params, params),
                                  tree.tree_scale(steps, lr_scale))
        return updates, AdaptiveLrState(
            tree.safe_increment(state.count), lr_scale,
            tree.tree_where(reject, state.inner_state, inner_state),
            tree.tree_where(reject, state.accepted_params, params),
            jnp.where(reject, state.accepted_value, value), reject)

    return Optimizer(init, update)
