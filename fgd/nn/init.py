"""Initialisation schemes: one table for dense and convolutional weights.

For a weight of shape `shape_w` with `fan_in` inputs and `fan_out` outputs per
unit (dense: fan_in = n[l-1], fan_out = n[l]; conv: fan_in = C kh kw,
fan_out = F kh kw):

    "small":   W ~ N(0, 1) * 0.01, b = 0   (the classic two-layer exercise's default)
    "zeros":   W = 0, b = 0                (symmetric: every hidden unit stays equal)
    "normal":  W ~ N(0, 1) * scale, b = 0
    "uniform": W, b ~ U[0, 1]              (MATLAB's rand, as in the MATLAB BP example)
    "xavier":  W ~ N(0, 2 / (fan_in + fan_out)), b = 0   (Glorot normal)
    "he":      W ~ N(0, 2 / fan_in), b = 0
"""
from __future__ import annotations

import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

SCHEMES = ("small", "zeros", "normal", "uniform", "xavier", "he")


def check_scheme(scheme: Any, scale: Any) -> None:
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(map(repr, SCHEMES))}; got {scheme!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0; got {scale!r}")


def resolve_dtype(dtype: Any) -> Any:
    """`dtype` as a numpy dtype, JAX's default float when None.

    Raises:
      ValueError: float64 asked for while x64 is off (JAX would quietly give
        float32); enable it with `jax.config.update("jax_enable_x64", True)`
        or `with fgd.enable_x64(True):`.
    """
    if dtype is None:
        return jnp.zeros(()).dtype
    try:
        dt = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"dtype must be a floating-point dtype; got {dtype!r}") from e
    if not jnp.issubdtype(dt, jnp.floating):
        raise ValueError(f"dtype must be a floating-point dtype; got {dt}")
    if dt.itemsize == 8 and jnp.zeros((), dt).dtype != dt:
        raise ValueError(f"dtype {dt} needs JAX's x64 mode, which is off: JAX would return "
                         f"float32; enable it with jax.config.update('jax_enable_x64', True)")
    return dt


#: Draws of at most this many numbers share one compiled program per
#: power-of-two size (`_draw`); larger ones are drawn at their own size.
SHARED_DRAW_MAX = 1 << 22
_SHARED_DRAW_MIN = 1 << 10


def _shares_draws(key) -> bool:
    """Whether `key` draws by counter: JAX's partitionable threefry (its
    default), under which entry i of a draw of n numbers is a function of the
    key and i alone, so the first n of a longer draw are the same numbers."""
    if not getattr(jax.config, "jax_threefry_partitionable", False):
        return False
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return str(jax.random.key_impl(key)) == "threefry2x32"
    return getattr(jax.config, "jax_default_prng_impl", None) == "threefry2x32"


@functools.partial(jax.jit, static_argnums=(2,))
def _first(drawn, std, shape: tuple):
    """The first prod(shape) numbers of `drawn` in `shape`, times `std` if given."""
    x = drawn.reshape(-1)[: math.prod(shape)].reshape(shape)
    return x if std is None else x * std


def _draw(sample: Callable, key, shape: tuple, dtype, std=None):
    """`sample(key, shape, dtype)` (jax.random.normal or uniform), times `std`
    if given: the same numbers as drawing at `shape`.

    XLA:CPU takes 0.2-0.3 s to compile a threefry draw, and eager
    `jax.random` compiles one per shape: a net's init compiled one per layer
    and a new net's again. Under counter-based threefry the numbers are the
    first prod(shape) of a draw of the next power of two (at least 1,024), so
    those draws share a program across layers and nets and only the cheap
    slice is compiled per shape. Any other PRNG draws at `shape` directly.
    """
    n = math.prod(shape)
    if n > SHARED_DRAW_MAX or not _shares_draws(key):
        return _first(sample(key, shape, dtype), std, tuple(shape))
    size = max(_SHARED_DRAW_MIN, 1 << max(n - 1, 0).bit_length())
    return _first(sample(key, (size,), dtype), std, tuple(shape))


def init_weights(key, shape_w: tuple, shape_b: tuple, fan_in: int, fan_out: int,
                 scheme: str, dtype, scale: float) -> dict:
    """{"W": shape_w, "b": shape_b} drawn by `scheme` (the table above)."""
    k_w, k_b = jax.random.split(key)
    if scheme == "uniform":
        return {"W": _draw(jax.random.uniform, k_w, shape_w, dtype),
                "b": _draw(jax.random.uniform, k_b, shape_b, dtype)}
    zeros_b = jnp.zeros(shape_b, dtype)
    if scheme == "zeros":
        return {"W": jnp.zeros(shape_w, dtype), "b": zeros_b}
    std = {
        "small": 0.01,
        "normal": scale,
        "xavier": math.sqrt(2.0 / (fan_in + fan_out)),
        "he": math.sqrt(2.0 / fan_in),
    }[scheme]
    return {"W": _draw(jax.random.normal, k_w, shape_w, dtype, jnp.asarray(std, dtype)), "b": zeros_b}


def init_dense(key, fan_out: int, fan_in: int, scheme: str, dtype, scale: float) -> dict:
    """One dense layer {"W": (fan_out, fan_in), "b": (fan_out, 1)}."""
    return init_weights(key, (fan_out, fan_in), (fan_out, 1), fan_in, fan_out, scheme, dtype, scale)


def init_conv(key, filters: int, c_in: int, kernel: tuple, scheme: str, dtype, scale: float) -> dict:
    """One convolution {"W": (F, C, kh, kw), "b": (F,)}, fan_in = C kh kw, fan_out = F kh kw."""
    kh, kw = kernel
    return init_weights(key, (filters, c_in, kh, kw), (filters,), c_in * kh * kw,
                        filters * kh * kw, scheme, dtype, scale)
