"""Metrics: how good params are on data, for `evaluate` and for fit's history.

A metric is a pure `metric(params, X, Y) -> scalar`. Three are built in,
named by strings; with A = A[L] (n[L], m) the network's output on X and
Z = Z[L] its logits:

    "loss"       loss(params, X, Y), the training objective itself
    "accuracy"   the share of examples (entries, for sigmoid outputs) whose
                 predicted label is right:
                   softmax output: mean_j 1[argmax_k Z[k, j] = argmax_k Y[k, j]]
                   sigmoid output: mean_kj 1[(Z[k, j] > 0) = (Y[k, j] > 0.5)]
                 (the labels of `net.predict`; Z > 0 is A > 0.5)
    "mse"        mean_kj (A[k, j] - Y[k, j])^2, the mean squared error of every
                 output entry (no 1/2, unlike the "mse" cost)

"accuracy" and "mse" read the network from an `fgd.Loss` (`loss.net`);
"accuracy" needs a softmax or sigmoid output. Any other callable
`metric(params, X, Y) -> scalar` is a custom metric, named by its
`__name__` (or by its key when the metrics are given as a dict).

`fit(..., history=(...))` records the built-in ones on the device every
epoch: "accuracy" and "mse" on the training data, "val_accuracy" and
"val_mse" on `validation=(Xv, Yv)` (`HISTORY`), at the same params as the
epoch's "val_loss".
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from fgd import _checks
from fgd._types import Array, Params
from fgd.nn import outputs

BUILT_IN = ("loss", "accuracy", "mse")
#: fit history names computed here: name -> (metric, on validation data)
HISTORY = {"accuracy": ("accuracy", False), "val_accuracy": ("accuracy", True),
           "mse": ("mse", False), "val_mse": ("mse", True)}


def accuracy(net: Any, params: Params, X: Array, Y: Array) -> Array:
    """The "accuracy" of the module docstring: a () float in [0, 1]."""
    cache = net.forward(params, X)
    kind = outputs.kind(net)
    labels = outputs.labels_from_logits(kind, cache.Z[-1], cache.A[-1])
    dtype = cache.A[-1].dtype
    if kind == "softmax":
        return jnp.mean(labels == jnp.argmax(Y, axis=0), dtype=dtype)
    return jnp.mean(labels == (Y > 0.5), dtype=dtype)


def mse(net: Any, params: Params, X: Array, Y: Array) -> Array:
    """mean((A[L] - Y)^2) over every output entry: a () float."""
    A = net.forward(params, X).A[-1]
    return jnp.mean(jnp.square(A - jnp.asarray(Y, A.dtype)))


def built_in(name: str, loss: Any) -> Callable:
    """The built-in metric `name` as `metric(params, X, Y)` for `loss`."""
    if name == "loss":
        return loss
    net = getattr(loss, "net", None)
    if net is None or not hasattr(net, "forward"):
        raise ValueError(f"metric {name!r} needs the network: pass an fgd.Loss "
                         f"(fgd.make_loss(net, cost)) as loss; got {type(loss).__name__}")
    if name == "accuracy" and outputs.kind(net) == "values":
        raise ValueError(f"metric 'accuracy' needs a softmax or sigmoid output (class labels); "
                         f"this net's output is {net.output_activation.name!r}: use 'mse'")
    fn = accuracy if name == "accuracy" else mse
    return lambda params, X, Y: fn(net, params, X, Y)


def resolve(loss: Any, metrics: Any) -> dict:
    """name -> a built-in metric's name or a custom metric(params, X, Y), from
    names, callables or a dict of them (checked: known names, no duplicates)."""
    if isinstance(metrics, Mapping):
        items = list(metrics.items())
    elif isinstance(metrics, (str, bytes)) or callable(metrics) or not hasattr(metrics, "__iter__"):
        raise TypeError(f"metrics must be a tuple of names from {BUILT_IN} and functions "
                        f"metric(params, X, Y) -> scalar, or a dict name -> function; got "
                        f"{metrics!r}"[:300])
    else:
        items = []
        for m in metrics:
            name = m if isinstance(m, str) else getattr(m, "__name__", None)
            if not isinstance(name, str) or name == "<lambda>":
                raise ValueError(f"metrics: a custom metric needs a name; give "
                                 f"metrics={{'name': fn}} for {m!r}"[:300])
            items.append((name, m))
    out: dict = {}
    for name, m in items:
        if not isinstance(name, str):
            raise TypeError(f"metrics: names must be strings; got {name!r}")
        if name in out:
            raise ValueError(f"metrics: {name!r} appears twice")
        if isinstance(m, str):
            if m not in BUILT_IN:
                raise ValueError(f"metrics: unknown metric {m!r}; the built-in ones are "
                                 f"{BUILT_IN}, or pass a function metric(params, X, Y)")
            built_in(m, loss)          # ValueError now if it cannot be computed
            out[name] = m
        elif callable(m):
            out[name] = m
        else:
            raise TypeError(f"metrics: {name!r} must be a built-in name or a function "
                            f"metric(params, X, Y) -> scalar; got {type(m).__name__}")
    if not out:
        raise ValueError("metrics must name at least one metric")
    return out


def _scalar(name: str, value: Any) -> float:
    shape = getattr(value, "shape", ())
    if tuple(shape) not in ((), (1,)):
        raise ValueError(f"metric {name!r} must return a scalar; got shape {tuple(shape)}")
    return float(jnp.reshape(jnp.asarray(value), ()))


def _built_ins(loss, names, params, X, Y):
    return {name: built_in(name, loss)(params, X, Y) for name in names}


_BUILT_INS = jax.jit(_built_ins, static_argnums=(0, 1))


def _hashable(obj: Any) -> bool:
    try:
        hash(obj)
    except TypeError:
        return False
    return True


def evaluate(loss: Callable, params: Params, X: Any, Y: Any,
             metrics: Any = ("loss", "accuracy")) -> dict:
    """The metrics of `params` on (X, Y): a dict name -> float.

    Args:
      loss: `loss(params, X, Y) -> scalar`; an `fgd.Loss` (from
        `fgd.make_loss`) also gives the network "accuracy" and "mse" need,
        and has the data's shapes checked against it.
      params: the params to evaluate (not modified); the data are cast to
        their dtype.
      X, Y: data, one column per example.
      metrics: names from ("loss", "accuracy", "mse") and functions
        `metric(params, X, Y) -> scalar` (named by `__name__`), or a dict
        name -> name or function.

    Returns:
      {name: float}, in the order given. The built-in metrics are computed in
      one jitted call; custom ones are called as given.

    Example:
      >>> fgd.evaluate(loss, params, Xv, Yv, metrics=("loss", "accuracy"))
      {'loss': 0.083, 'accuracy': 0.978}
    """
    _checks.check_loss(loss)
    table = resolve(loss, metrics)
    net = getattr(loss, "net", None)
    if not hasattr(net, "check_input"):
        net = None
    if net is not None:
        _checks.check_params(net, params)
    X, Y = _checks.check_data(net, X, Y, _checks.param_dtype(params))
    builtin = tuple(sorted({m for m in table.values() if isinstance(m, str)}))
    run = _BUILT_INS if _hashable(loss) else _built_ins   # an unhashable loss: without jit
    values = run(loss, builtin, params, X, Y) if builtin else {}
    return {name: _scalar(name, values[m] if isinstance(m, str) else m(params, X, Y))
            for name, m in table.items()}


def history_metrics(loss: Any, names: tuple, params: Params, X: Array, Y: Array,
                    Xv: Any, Yv: Any) -> dict:
    """fit's metric history entries among `names` (`HISTORY`), traced in the
    chunk: training ones on (X, Y), validation ones on (Xv, Yv), (..., m)."""
    out = {}
    for name in names:
        if name in HISTORY:
            metric, on_val = HISTORY[name]
            out[name] = built_in(metric, loss)(params, *((Xv, Yv) if on_val else (X, Y)))
    return out


def check_history(loss: Any, names: tuple, has_validation: bool) -> None:
    """ValueError, before anything is traced, for a metric history entry that
    cannot be computed (no network, no labels, no validation data)."""
    for name in names:
        if name in HISTORY:
            metric, on_val = HISTORY[name]
            if on_val and not has_validation:
                raise ValueError(f"history {name!r} needs validation=(Xv, Yv)")
            try:
                built_in(metric, loss)
            except ValueError as err:
                raise ValueError(f"history {name!r}: {err}") from None
