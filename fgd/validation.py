"""Checks at the public boundary, run before anything is traced.

Each check raises ValueError (TypeError for a wrong kind of object) whose
message names the argument, what was expected and what was received. Shape
checks use only static shapes, so they also run inside a jitted loss.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import numpy as np


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is not None:
        return f"an array of shape {tuple(shape)} and dtype {dtype}"
    return f"{type(x).__name__} {x!r}"[:120]


def is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)


def as_data(x: Any, name: str) -> Any:
    """`x` as an array of real numbers (jax arrays and tracers pass unchanged).

    Raises:
      TypeError: `x` is not numeric (strings, objects, complex numbers).
      ValueError: `x` is empty.
    """
    if not hasattr(x, "dtype"):
        try:
            x = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of real numbers; got {_describe(x)}") from e
    kind = np.dtype(x.dtype).kind
    if kind not in "fiub":
        raise TypeError(
            f"{name} must be an array of real numbers; got dtype {x.dtype}"
            + (" (complex numbers are not supported)" if kind == "c" else "")
        )
    if math.prod(x.shape) == 0:
        raise ValueError(f"{name} must not be empty; got shape {tuple(x.shape)}")
    return x


def check_finite(x: Any, name: str) -> None:
    """Raise ValueError if the concrete array `x` holds NaN or Inf."""
    if is_traced(x):
        return
    finite = np.isfinite(np.asarray(x).astype(np.float64))
    if not finite.all():
        bad = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} must be finite; got {int((~finite).sum())} NaN/Inf value(s), "
            f"the first at index {tuple(int(i) for i in bad)}"
        )


def check_xy(net: Any, X: Any, Y: Any, *, finite: bool) -> tuple[Any, Any]:
    """Check data against the model `net`: X fits its input, Y its output,
    both have the same number of examples (the last axis).

    Args:
      finite: also reject NaN/Inf (eager entry points only; a traced array
        is never read).
    """
    X = as_data(X, "X")
    Y = as_data(Y, "Y")
    net.check_input(X, "X")
    if Y.ndim != 2 or Y.shape[0] != net.out_dim:
        raise ValueError(
            f"Y must have shape ({net.out_dim}, m) for a model with {net.out_dim} outputs "
            f"(one column per example); got shape {tuple(Y.shape)}"
        )
    if X.shape[-1] != Y.shape[-1]:
        raise ValueError(
            f"X and Y must have the same number of examples (columns); "
            f"got {X.shape[-1]} in X and {Y.shape[-1]} in Y"
        )
    if finite:
        check_finite(X, "X")
        check_finite(Y, "Y")
    return X, Y


@functools.lru_cache(maxsize=256)
def param_shapes(net: Any) -> Any:
    """The tree of ShapeDtypeStruct that `net.init` returns (nothing computed)."""
    return jax.eval_shape(lambda: net.init(jax.random.key(0)))


def check_params(net: Any, params: Any, name: str = "params") -> None:
    """Check that `params` has the structure and shapes `net.init` gives."""
    expected = param_shapes(net)
    exp_leaves, exp_def = jax.tree_util.tree_flatten_with_path(expected)
    try:
        got_leaves, got_def = jax.tree_util.tree_flatten_with_path(params)
    except Exception as e:
        raise TypeError(f"{name} must be a pytree of arrays; got {type(params).__name__}") from e
    if exp_def != got_def:
        raise ValueError(
            f"{name} must have the structure {exp_def} for {net!r}; got {got_def}"
        )
    for (path, e), (_, g) in zip(exp_leaves, got_leaves):
        where = f"{name}{jax.tree_util.keystr(path)}"
        shape = getattr(g, "shape", None)
        if shape is None or tuple(shape) != tuple(e.shape):
            raise ValueError(f"{where} must have shape {tuple(e.shape)}; got {_describe(g)}")
        if np.dtype(g.dtype).kind != "f" and str(g.dtype) != "bfloat16":
            raise TypeError(f"{where} must be a floating-point array; got dtype {g.dtype}")


def check_nonneg(value: Any, name: str) -> float:
    """A finite number >= 0 (penalties, rates)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number >= 0; got {_describe(value)}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)
