"""Pytree arithmetic: the only place in fgd where tree math lives.

Everything here is pure, works on any pytree of arrays (an MLP's list of
``{"W", "b"}`` dicts, a dict, a single array) and keeps each leaf's dtype:
Python-float hyperparameters are weakly typed, so ``0.9 * m`` stays float16
when ``m`` is float16, and array scalars (learning rates, norms) are cast to
the leaf's dtype before they touch it.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fgd._types import Array, Params, Updates

_INT32_MAX = np.iinfo(np.int32).max


def tree_zeros_like(tree: Any) -> Any:
    """A tree of zeros with the shapes and dtypes of ``tree``."""
    return jax.tree.map(jnp.zeros_like, tree)


def tree_full_like(tree: Any, value: float) -> Any:
    """A tree filled with ``value``, with the shapes and dtypes of ``tree``."""
    return jax.tree.map(lambda t: jnp.full_like(t, value), tree)


def tree_add(a: Any, b: Any) -> Any:
    """Leaf-wise ``a + b``."""
    return jax.tree.map(jnp.add, a, b)


def tree_sub(a: Any, b: Any) -> Any:
    """Leaf-wise ``a - b``."""
    return jax.tree.map(jnp.subtract, a, b)


def tree_scale(tree: Any, scalar: Any) -> Any:
    """Every leaf times ``scalar``, cast to the leaf's dtype first.

    The cast keeps a float32 learning rate from promoting float16 or bfloat16
    updates to float32.
    """
    return jax.tree.map(lambda t: t * jnp.asarray(scalar).astype(t.dtype), tree)


def tree_where(condition: Array, a: Any, b: Any) -> Any:
    """Leaf-wise ``a if condition else b`` for a scalar boolean ``condition``."""
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), a, b)


def tree_all_finite(tree: Any) -> Array:
    """A () bool: True when no leaf holds a NaN or an Inf."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def accumulation_dtype(dtype: Any) -> np.dtype:
    """The dtype to sum squares in: ``dtype`` promoted to at least float32.

    float16 squares overflow above 256 and underflow below 2.4e-4, so norms of
    half-precision trees are accumulated in float32.
    """
    return jnp.promote_types(dtype, jnp.float32)


def scalar_dtype(tree: Any) -> np.dtype:
    """The dtype of scalars carried beside ``tree`` (learning rates, losses).

    float32, or float64 when a leaf is float64: float16 and bfloat16 lose too
    much to hold a rate that grows by 5% a step, and float64 runs keep full
    precision.
    """
    for leaf in jax.tree.leaves(tree):
        # an array's own dtype (cheap); Python scalars through jax's promotion
        leaf_dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if leaf_dtype == np.float64:      # the only floating type above float32
            return np.dtype(np.float64)
    return np.dtype(np.float32)


def global_norm(tree: Any) -> Array:
    """The 2-norm of all leaves taken together, ``sqrt(sum_i sum(x_i^2))``.

    Returns a () array in the accumulation dtype of the widest leaf (at least
    float32); an empty tree has norm 0.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    acc = accumulation_dtype(jnp.result_type(*leaves))
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(acc))) for x in leaves))


def apply_updates(params: Params, updates: Updates) -> Params:
    """``params + updates``, leaf by leaf, keeping each parameter's dtype.

    The update is cast to the parameter's dtype before the addition, so a
    float32 update never turns float16 parameters into float32 ones. A
    ``None`` update leaves its parameter unchanged.

    Args:
        params: the parameter pytree.
        updates: a pytree of the same structure (``None`` leaves allowed).

    Returns:
        The new parameters, same structure and dtypes as ``params``.
    """
    def add(p, u):
        if u is None:
            return p
        p = jnp.asarray(p)
        return p + jnp.asarray(u).astype(p.dtype)

    return jax.tree.map(add, params, updates, is_leaf=lambda x: x is None)


def update_moment(grads: Any, moment: Any, decay: float, order: int,
                  complement: Any = None) -> Any:
    """Exponential moving average of ``g^order``: ``(1 - decay) g^order + decay m``.

    ``order=1`` gives Adam's first moment, ``order=2`` its second moment (the
    running mean of squared gradients of RMSprop). The result keeps the
    moment's dtype even when the gradient is wider. ``complement``, if given,
    is ``1 - decay`` computed beforehand (in double precision, for a traced
    ``decay``).
    """
    c = 1 - decay if complement is None else complement
    return jax.tree.map(
        lambda g, m: (c * (g ** order) + decay * m).astype(m.dtype), grads, moment)


def bias_correction(moment: Any, decay: float, count: Array) -> Any:
    """``m / (1 - decay^count)``: undo the zero start of a moving average.

    ``count`` is the number of updates averaged so far (>= 1). The divisor is
    computed in the default float dtype and cast to each leaf's, as optax does.
    """
    correction = 1 - decay ** count
    return jax.tree.map(lambda t: t / correction.astype(t.dtype), moment)


def safe_increment(count: Array) -> Array:
    """``count + 1`` for a () int32 counter, saturating instead of wrapping."""
    return jnp.where(count < _INT32_MAX, count + 1, _INT32_MAX).astype(jnp.int32)
