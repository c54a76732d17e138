"""Pytree arithmetic against numpy and hand-computed values."""
import chex
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd.optim import tree

PARAMS = [{"W": jnp.array([[3.0, 0.0]]), "b": jnp.array([[4.0]])},
          {"W": jnp.array([[12.0]]), "b": jnp.array([[0.0]])}]


def test_global_norm_is_the_norm_of_all_leaves_together():
    assert float(fgd.global_norm(PARAMS)) == 13.0          # sqrt(9 + 16 + 144)
    assert float(fgd.global_norm([])) == 0.0


def test_global_norm_of_float16_does_not_overflow():
    # 300^2 = 9e4 overflows float16 (max 65504); the sum is taken in float32.
    x = jnp.full((4,), 300.0, jnp.float16)
    norm = fgd.global_norm(x)
    assert norm.dtype == jnp.float32 and float(norm) == 600.0


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_apply_updates_keeps_the_param_dtype(dtype):
    params = {"W": jnp.ones((2, 2), dtype), "b": jnp.zeros((2, 1), dtype)}
    updates = {"W": jnp.full((2, 2), 0.5, jnp.float32), "b": jnp.full((2, 1), -0.25, jnp.float64)}
    new = fgd.apply_updates(params, updates)
    chex.assert_trees_all_equal_dtypes(new, params)
    chex.assert_trees_all_close(new, {"W": jnp.full((2, 2), 1.5, dtype),
                                      "b": jnp.full((2, 1), -0.25, dtype)})


def test_apply_updates_accepts_numpy_params_and_none_updates():
    params = {"W": np.ones((2,), np.float32), "b": np.ones((1,), np.float32)}
    new = fgd.apply_updates(params, {"W": jnp.ones(2), "b": None})
    np.testing.assert_array_equal(new["W"], [2.0, 2.0])
    np.testing.assert_array_equal(new["b"], [1.0])
    assert new["W"].dtype == jnp.float32


def test_add_sub_scale_and_zeros():
    a = {"x": jnp.array([1.0, 2.0], jnp.float16)}
    b = {"x": jnp.array([0.5, 0.5], jnp.float16)}
    chex.assert_trees_all_equal(tree.tree_add(a, b), {"x": jnp.array([1.5, 2.5], jnp.float16)})
    chex.assert_trees_all_equal(tree.tree_sub(a, b), {"x": jnp.array([0.5, 1.5], jnp.float16)})
    # A float32 scalar must not promote float16 leaves.
    scaled = tree.tree_scale(a, jnp.float32(2.0))
    chex.assert_trees_all_equal(scaled, {"x": jnp.array([2.0, 4.0], jnp.float16)})
    chex.assert_trees_all_equal(tree.tree_zeros_like(a), {"x": jnp.zeros(2, jnp.float16)})
    chex.assert_trees_all_equal(tree.tree_full_like(a, 0.1), {"x": jnp.full(2, 0.1, jnp.float16)})


def test_moments_and_bias_correction_by_hand():
    g = jnp.array([2.0, -4.0])
    m = jnp.array([1.0, 1.0])
    chex.assert_trees_all_close(tree.update_moment(g, m, 0.9, 1), jnp.array([1.1, 0.5]), rtol=1e-12)
    chex.assert_trees_all_close(tree.update_moment(g, m, 0.9, 2), jnp.array([1.3, 2.5]), rtol=1e-12)
    # After one step of a zero-started average, bias correction gives the gradient back.
    first = tree.update_moment(g, jnp.zeros(2), 0.9, 1)
    chex.assert_trees_all_close(tree.bias_correction(first, 0.9, jnp.int32(1)), g, rtol=1e-12)
    corrected = tree.bias_correction(jnp.ones(1), 0.5, jnp.int32(2))
    chex.assert_trees_all_close(corrected, jnp.array([1 / 0.75]), rtol=1e-12)


def test_update_moment_keeps_the_moment_dtype():
    m = jnp.zeros(2, jnp.bfloat16)
    assert tree.update_moment(jnp.ones(2, jnp.float32), m, 0.9, 2).dtype == jnp.bfloat16


def test_all_finite_and_where():
    assert bool(tree.tree_all_finite(PARAMS))
    assert not bool(tree.tree_all_finite([jnp.array([1.0, jnp.inf])]))
    assert not bool(tree.tree_all_finite({"a": jnp.ones(1), "b": jnp.array([jnp.nan])}))
    chex.assert_trees_all_equal(tree.tree_where(jnp.asarray(False), jnp.ones(2), jnp.zeros(2)),
                                jnp.zeros(2))


def test_safe_increment_saturates():
    top = jnp.asarray(np.iinfo(np.int32).max, jnp.int32)
    assert int(tree.safe_increment(top)) == np.iinfo(np.int32).max
    assert int(tree.safe_increment(jnp.int32(4))) == 5
    assert tree.safe_increment(jnp.int32(4)).dtype == jnp.int32


@pytest.mark.parametrize("dtypes, expected", [
    ((jnp.float16,), jnp.float32), ((jnp.bfloat16, jnp.float32), jnp.float32),
    ((jnp.float32, jnp.float64), jnp.float64), ((), jnp.float32)])
def test_scalar_dtype(dtypes, expected):
    assert tree.scalar_dtype([jnp.zeros(1, d) for d in dtypes]) == expected
