"""Transforms: clipping, weight decay, chains and their extra keywords, the NaN
guard and the loss-adaptive learning rate, each against hand-computed values."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fgd
from fgd.optim.transforms import call_update


def test_clip_by_value_against_numpy():
    g = {"W": jnp.array([[-3.0, 0.5], [2.0, -0.2]]), "b": jnp.array([[7.0], [-7.0]])}
    clipped, _ = fgd.clip_by_value(1.0).update(g, fgd.clip_by_value(1.0).init(g))
    chex.assert_trees_all_close(clipped, jax.tree.map(lambda x: np.clip(x, -1, 1), g))


def test_clip_by_global_norm_rescales_to_the_bound():
    g = [{"W": jnp.array([[3.0]]), "b": jnp.array([[4.0]])}]   # global norm 5
    opt = fgd.clip_by_global_norm(1.0)
    clipped, _ = opt.update(g, opt.init(g))
    chex.assert_trees_all_close(clipped, [{"W": jnp.array([[0.6]]), "b": jnp.array([[0.8]])}],
                                rtol=1e-12)
    same, _ = fgd.clip_by_global_norm(5.5).update(g, opt.init(g))
    chex.assert_trees_all_equal(same, g)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.float32, jnp.float64])
def test_clip_zero_gradient_to_zero_norm_gives_zeros_not_nan(dtype):
    g = [{"W": jnp.zeros((3, 2), dtype), "b": jnp.zeros((3, 1), dtype)}]
    opt = fgd.clip_by_global_norm(0.0)
    clipped, _ = jax.jit(opt.update)(g, opt.init(g))
    chex.assert_trees_all_equal(clipped, g)
    chex.assert_trees_all_equal_dtypes(clipped, g)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_clipping_into_the_subnormal_range_does_not_overshoot(dtype):
    """Found by hypothesis: [4, 2, 2] in float16 clipped to 1.19e-7 (two of
    float16's smallest subnormals) rounded up to norm 1.46e-7. Entries now
    round toward zero: [4, 2, 2] * scale -> [1, 0, 0] smallest subnormals
    (bfloat16 and float32 are scaled in float32, whose subnormals XLA:CPU
    flushes to zero: there only the bound is checked)."""
    tiny = float(jnp.finfo(dtype).smallest_subnormal)
    g = [jnp.asarray([4.0, 2.0, 2.0], dtype)]
    opt = fgd.clip_by_global_norm(2 * tiny)
    clipped, _ = opt.update(g, opt.init(g))
    chex.assert_trees_all_equal_dtypes(clipped, g)
    assert float(jnp.linalg.norm(clipped[0].astype(jnp.float64))) <= 2 * tiny
    if dtype == jnp.float16:
        np.testing.assert_array_equal(np.asarray(clipped[0], np.float64), [tiny, 0.0, 0.0])


@settings(max_examples=80, deadline=None)
@given(data=st.data(), dtype=st.sampled_from([np.float16, np.float32, np.float64]),
       max_norm=st.floats(0.0, 100.0, width=16))
def test_clipped_global_norm_never_exceeds_the_bound(data, dtype, max_norm):
    width = np.finfo(dtype).bits
    # A few fixed shapes: the values are what matter, and new shapes cost compiles.
    shapes = data.draw(st.lists(st.sampled_from([(3,), (2, 2), (5, 1)]), min_size=1, max_size=3))
    arrays = [data.draw(hnp.arrays(dtype, shape, elements=st.floats(-200, 200, width=width)))
              for shape in shapes]
    opt = fgd.clip_by_global_norm(max_norm)
    clipped, _ = opt.update(arrays, opt.init(arrays))
    chex.assert_tree_all_finite(clipped)
    chex.assert_trees_all_equal_dtypes(clipped, arrays)
    if float(fgd.global_norm(arrays)) <= max_norm:
        chex.assert_trees_all_equal(clipped, arrays)
        return
    # Checked both ways: with fgd's own norm, and in float64 so that the
    # reference's rounding can't hide an overshoot.
    assert float(fgd.global_norm(clipped)) <= max_norm
    assert math.sqrt(sum(float(np.sum(np.asarray(c, np.float64) ** 2)) for c in clipped)) <= max_norm


@pytest.mark.parametrize("mask, decayed", [(None, ("W", "b")), (fgd.weights_only, ("W",)),
                                           ([{"W": False, "b": True}], ("b",))])
def test_add_decayed_weights_is_coupled_l2(mask, decayed):
    params = [{"W": jnp.array([[2.0, -1.0]]), "b": jnp.array([[3.0]])}]
    grads = [{"W": jnp.array([[0.5, 0.5]]), "b": jnp.array([[1.0]])}]
    opt = fgd.add_decayed_weights(0.1, mask)
    out, _ = opt.update(grads, opt.init(params), params)
    want = [{k: grads[0][k] + (0.1 * params[0][k] if k in decayed else 0) for k in ("W", "b")}]
    chex.assert_trees_all_close(out, want, rtol=1e-12)


def test_chain_composes_left_to_right():
    g = jnp.array([3.0, 4.0])
    opt = fgd.chain(fgd.clip_by_global_norm(1.0), fgd.sgd(0.5))
    updates, state = opt.update(g, opt.init(g), g)
    chex.assert_trees_all_close(updates, jnp.array([-0.3, -0.4]), rtol=1e-12)
    assert isinstance(state, tuple) and len(state) == 2


def _recording(name):
    """A stateless transform whose update takes ``name=`` and adds it to g."""
    def update(grads, state, params=None, **kwargs):
        return jax.tree.map(lambda g: g + kwargs[name], grads), state
    return fgd.Optimizer(lambda p: (), update)


def test_chain_forwards_extra_keywords_only_where_accepted():
    def takes_scale(grads, state, params=None, *, scale):
        return jax.tree.map(lambda g: g * scale, grads), state

    opt = fgd.chain(fgd.clip_by_value(10.0),                 # takes no extra keywords
                    fgd.Optimizer(lambda p: (), takes_scale),
                    _recording("value"))                       # takes **kwargs
    g = jnp.array([1.0, 2.0])
    updates, _ = opt.update(g, opt.init(g), g, value=1.0, scale=3.0)
    chex.assert_trees_all_close(updates, jnp.array([4.0, 7.0]))
    # A bare update without the keywords is fine through call_update too.
    updates, _ = call_update(fgd.sgd(1.0), g, fgd.sgd(1.0).init(g), g, value=1.0)
    chex.assert_trees_all_close(updates, -g)


# --- apply_if_finite ---------------------------------------------------------

def test_apply_if_finite_skips_bad_steps_and_counts_exactly():
    opt = fgd.apply_if_finite(fgd.sgd(0.1, momentum=0.5), max_consecutive_errors=2)
    good, bad = jnp.array([1.0, 2.0]), jnp.array([1.0, jnp.nan])
    update = jax.jit(opt.update)
    state = opt.init(good)
    v, applied_so_far = np.zeros(2), 0
    # (gradient, expected consecutive, total, applied?)
    script = [(good, 0, 0, True), (bad, 1, 1, False), (good, 0, 1, True), (bad, 1, 2, False),
              (good, 0, 2, True), (bad, 1, 3, False), (bad, 2, 4, False), (bad, 3, 5, True),
              (good, 0, 5, True)]
    for g, consecutive, total, applied in script:
        updates, state = update(g, state, g)
        assert int(state.notfinite_count) == consecutive
        assert int(state.total_notfinite) == total
        assert bool(state.last_finite) == bool(np.all(np.isfinite(g)))
        if applied:
            applied_so_far += 1
            v = 0.5 * v + np.asarray(g)
            np.testing.assert_allclose(updates, -0.1 * v, rtol=1e-12)
        else:
            chex.assert_trees_all_equal(updates, jnp.zeros(2))
        np.testing.assert_allclose(state.inner_state.trace, v, rtol=1e-12)
        assert int(state.inner_state.count) == applied_so_far


def test_apply_if_finite_catches_nan_made_inside_the_loss():
    def loss(x):  # sqrt of a negative number: NaN value and NaN gradient
        return jnp.sum(jnp.sqrt(x))

    opt = fgd.apply_if_finite(fgd.adam(0.1), max_consecutive_errors=3)
    state = opt.init(jnp.ones(2))

    @jax.jit
    def step(x, state):
        updates, state = opt.update(jax.grad(loss)(x), state, x)
        return fgd.apply_updates(x, updates), state

    x, state = step(jnp.array([-1.0, 4.0]), state)
    chex.assert_trees_all_equal(x, jnp.array([-1.0, 4.0]))
    assert int(state.notfinite_count) == 1 and int(state.inner_state.count) == 0
    x, state = step(jnp.array([1.0, 4.0]), state)
    np.testing.assert_allclose(x, [0.9, 3.9], rtol=1e-7)   # Adam's first step is lr * sign(g)
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 1


# --- adaptive_lr -----------------------------------------------------------

def test_adaptive_lr_grows_rejects_and_shrinks_as_specified():
    lr0 = 0.1
    opt = fgd.adaptive_lr(lr0, lr_inc=1.05, lr_dec=0.7, max_perf_inc=1.04)
    update = jax.jit(opt.update)
    p = jnp.array([1.0, -2.0])
    g = jnp.array([0.5, 0.25])   # the same gradient each call keeps the numbers readable
    state = opt.init(p)
    # (loss at p, expected rate factor, expected action)
    script = [
        (10.0, 1.0, "step"),           # first call: accept, rate unchanged
        (9.0, 1.05, "step"),           # fell: grow
        (8.0, 1.05 ** 2, "step"),      # fell: grow
        (8.4, 1.05 ** 2 * 0.7, "back"),  # 8.4 > 1.04 * 8.0: reject, cut, return to the 8.0 point
        (8.0, 1.05 ** 2 * 0.7, "step"),  # the restored point: accept, rate unchanged
        (8.3, 1.05 ** 2 * 0.7, "step"),  # 8.3 <= 1.04 * 8.0: accept, did not fall, unchanged
        (7.0, 1.05 ** 3 * 0.7, "step"),  # fell: grow
        (float("nan"), 1.05 ** 3 * 0.7 ** 2, "back"),  # a NaN loss is never accepted
        (7.0, 1.05 ** 3 * 0.7 ** 2, "step"),
    ]
    accepted = p
    for value, scale, action in script:
        updates, state = update(g, state, p, value=value)
        np.testing.assert_allclose(state.lr_scale, scale, rtol=1e-12)
        np.testing.assert_allclose(fgd.current_lr(state), lr0 * scale, rtol=1e-12)
        if action == "step":
            np.testing.assert_allclose(updates, -lr0 * scale * g, rtol=1e-12)
            accepted = p
            p = fgd.apply_updates(p, updates)
        else:
            p = fgd.apply_updates(p, updates)
            chex.assert_trees_all_equal(p, accepted)   # back exactly on the accepted point
        assert bool(state.rejected) == (action == "back")


def test_adaptive_lr_through_chain_and_around_an_optimizer():
    opt = fgd.chain(fgd.clip_by_value(1.0), fgd.adaptive_lr(fgd.sgd(0.2, momentum=0.5)))
    p = jnp.array([1.0])
    state = opt.init(p)
    _, state = opt.update(jnp.array([5.0]), state, p, value=4.0)
    updates, state = opt.update(jnp.array([5.0]), state, p, value=3.0)
    # Clipped to 1, momentum trace 1 + 0.5 * 1, grown rate 0.2 * 1.05.
    np.testing.assert_allclose(updates, [-0.2 * 1.05 * 1.5], rtol=1e-12)
    np.testing.assert_allclose(fgd.current_lr(state), 0.2 * 1.05, rtol=1e-12)


def test_adaptive_lr_needs_the_loss():
    opt = fgd.adaptive_lr(0.1)
    with pytest.raises(TypeError, match="value"):
        opt.update(jnp.ones(2), opt.init(jnp.ones(2)), jnp.ones(2))


# --- argument checks --------------------------------------------------------

@pytest.mark.parametrize("make, match", [
    (lambda: fgd.clip_by_value(-1.0), "max_delta"),
    (lambda: fgd.clip_by_global_norm(-1.0), "max_norm"),
    (lambda: fgd.clip_by_global_norm(float("nan")), "max_norm"),
    (lambda: fgd.add_decayed_weights(-0.1), "weight_decay"),
    (lambda: fgd.apply_if_finite(fgd.sgd(0.1), 0), "max_consecutive_errors"),
    (lambda: fgd.apply_if_finite(fgd.sgd(0.1), -3), "max_consecutive_errors"),
    (lambda: fgd.adaptive_lr(-0.1), "inner_or_lr"),
    (lambda: fgd.adaptive_lr(0.1, lr_inc=0.9), "lr_inc"),
    (lambda: fgd.adaptive_lr(0.1, lr_dec=1.5), "lr_dec"),
    (lambda: fgd.adaptive_lr(0.1, max_perf_inc=0.5), "max_perf_inc"),
])
def test_bad_hyperparameter_raises_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_zero_clip_bounds_are_allowed():
    fgd.clip_by_value(0.0)
    fgd.clip_by_global_norm(0.0)


@pytest.mark.parametrize("make, match", [
    (lambda: fgd.chain(fgd.sgd(0.1), "adam"), "argument 1"),
    (lambda: fgd.apply_if_finite("adam", 3), "inner"),
    (lambda: fgd.apply_if_finite(fgd.sgd(0.1), 2.5), "max_consecutive_errors"),
    (lambda: fgd.clip_by_value("1"), "max_delta"),
])
def test_wrong_kind_of_argument_raises_type_error(make, match):
    with pytest.raises(TypeError, match=match):
        make()
