"""Convolutional layers: forward against a plain loop, hand-derived gradients
against jax.grad (float64, norm-wise relative error < 1e-10) and finite
differences, shapes and errors."""
import dataclasses
import functools
import itertools

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd import CNN, AvgPool, Conv, Dense, Flatten, MaxPool
from fgd.nn import conv_ops

AUTODIFF_TOL = 1e-10   # hand vs jax.grad in float64: both exact up to rounding
FD_TOL = 1e-6          # vs central differences, h = 1e-6: O(h^2) + O(eps / h)
FLOAT32_TOL = 1e-5     # float32 hand gradient vs the float64 one


def rel(a, b) -> float:
    """max over leaves of ||a - b|| / (||a|| + ||b||) (0 when both are 0)."""
    errs = []
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape
        den = np.linalg.norm(x) + np.linalg.norm(y)
        errs.append(0.0 if den == 0 else np.linalg.norm(x - y) / den)
    return max(errs)


# Data come from numpy and every JAX computation in a test is jitted whole:
# op-by-op dispatch compiles each small op on its own and is slower here.
def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def one_hot_targets(n, m):
    return np.eye(n)[:, np.arange(m) % n]


def random_params(net, seed=0, scale=0.5):
    """Params shaped as net.init's, N(0, scale^2) from numpy (compiling the
    random init for every network would dominate these tests' time)."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0)))
    return jax.tree_util.tree_map(lambda s: scale * rng.standard_normal(s.shape), shapes)


def hand_and_autodiff(net, cost, params, X, Y, l2=0.0, l1=0.0):
    """fgd.backprop and jax.grad of make_loss, compiled together (one compile)."""
    loss = fgd.make_loss(net, cost, l2=l2, l1=l1)
    return jax.jit(lambda p, X, Y: (fgd.backprop(net, cost, p, X, Y, l2=l2, l1=l1),
                                    jax.grad(loss)(p, X, Y)))(params, X, Y)


# --- the primitives, (C, H, W, m) ---------------------------------------------------
def swap_cm(A):
    """(m, H, W, C) <-> (C, H, W, m): the references below are written for (m, H, W, C)."""
    return np.transpose(np.asarray(A), (3, 1, 2, 0))


def lax_conv(A, W, b, stride, pads):
    """The reference convolution: XLA's, on the module's (C, H, W, m) layout."""
    Z = jax.lax.conv_general_dilated(A, W, stride, pads, dimension_numbers=("CHWN", "OIHW", "CHWN"))
    return Z + b[:, None, None, None]


def conv_loop(A, W, b, stride, padding):
    """The forward formula of the module docstring as a numpy loop, on (m, H, W, C)."""
    A, W, b = (np.asarray(x) for x in (A, W, b))
    m, H, Wd, C = A.shape
    F, _, kh, kw = W.shape
    (pt, pb), Ho = conv_ops.conv_padding(H, kh, stride[0], padding)
    (pl, pr), Wo = conv_ops.conv_padding(Wd, kw, stride[1], padding)
    Ap = np.pad(A, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    Z = np.zeros((m, Ho, Wo, F))
    for y, x in itertools.product(range(Ho), range(Wo)):
        patch = Ap[:, stride[0] * y:stride[0] * y + kh, stride[1] * x:stride[1] * x + kw, :]
        Z[:, y, x, :] = np.einsum("nuvi,oiuv->no", patch, W) + b
    return Z


CONV_CASES = [  # (H, W, C, F, kernel, stride, padding)
    (6, 6, 1, 1, (3, 3), (1, 1), "valid"),
    (7, 6, 2, 3, (3, 3), (1, 1), "same"),
    (7, 8, 3, 2, (3, 2), (2, 2), "valid"),
    (7, 7, 2, 4, (3, 3), (2, 2), "same"),
    (8, 5, 4, 1, (2, 2), (2, 1), "same"),
    (9, 9, 1, 5, (4, 4), (3, 2), "valid"),   # windows leave the last rows unread
    (5, 5, 3, 2, (5, 5), (1, 1), "valid"),   # kernel as large as the input: 1x1 output
    (3, 4, 2, 2, (5, 5), (2, 2), "same"),    # kernel larger than the input, padded
]


@pytest.mark.parametrize("H,W,C,F,kernel,stride,padding", CONV_CASES)
def test_conv2d_forward_matches_loop_and_lax_same(H, W, C, F, kernel, stride, padding):
    A, Wt, b = normal(0, (3, H, W, C)), normal(1, (F, C, *kernel)), normal(2, (F,))
    pads = tuple(conv_ops.conv_padding(n, k, s, padding)[0] for n, k, s in zip((H, W), kernel, stride))
    Z = jax.jit(conv_ops.conv2d, static_argnums=(3, 4))(swap_cm(A), Wt, b, stride, pads)
    np.testing.assert_allclose(swap_cm(Z), conv_loop(A, Wt, b, stride, padding),
                               rtol=1e-12, atol=1e-12)
    lax_Z = jax.jit(lambda A, Wt, b: jax.lax.conv_general_dilated(
        A, Wt, stride, padding.upper(), dimension_numbers=("NHWC", "OIHW", "NHWC")) + b)(A, Wt, b)
    np.testing.assert_allclose(swap_cm(Z), lax_Z, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2)])
@pytest.mark.parametrize("C,F", [(1, 16), (3, 8), (16, 32)])
def test_conv2d_patches_equal_lax_conv_in_float32(C, F, stride, padding):
    """The patches-and-matmul forward against lax.conv_general_dilated at the
    digits net's sizes, float32: equal up to the order of the sums."""
    H = W = 8
    A, Wt, b = (normal(s, shape).astype(np.float32)
                for s, shape in ((0, (C, H, W, 32)), (1, (F, C, 3, 3)), (2, (F,))))
    pads = tuple(conv_ops.conv_padding(n, 3, s, padding)[0] for n, s in zip((H, W), stride))
    Z, ref = jax.jit(lambda A, Wt, b: (conv_ops.conv2d(A, Wt, b, stride, pads),
                                       lax_conv(A, Wt, b, stride, pads)))(A, Wt, b)
    assert Z.dtype == jnp.float32 and Z.shape == ref.shape
    assert rel(Z, ref) < FLOAT32_TOL


@pytest.mark.parametrize("H,W,C,F,kernel,stride,padding", CONV_CASES)
def test_conv2d_backward_matches_autodiff(H, W, C, F, kernel, stride, padding):
    A, Wt, b = swap_cm(normal(0, (3, H, W, C))), normal(1, (F, C, *kernel)), normal(2, (F,))
    pads = tuple(conv_ops.conv_padding(n, k, s, padding)[0] for n, k, s in zip((H, W), kernel, stride))
    dZ = swap_cm(normal(3, conv_loop(swap_cm(A), Wt, b, stride, padding).shape))

    @jax.jit
    def references(A, Wt, b, dZ):
        """jax.vjp of this module's forward pass and of XLA's convolution."""
        return [jax.vjp(lambda A, Wt, b: forward(A, Wt, b, stride, pads), A, Wt, b)[1](dZ)
                for forward in (conv_ops.conv2d, lax_conv)]

    dW, db, dA = jax.jit(conv_ops.conv2d_backward, static_argnums=(3, 4))(A, Wt, dZ, stride, pads)
    for dA_ref, dW_ref, db_ref in references(A, Wt, b, dZ):
        assert rel(dW, dW_ref) < AUTODIFF_TOL
        assert rel(db, db_ref) < AUTODIFF_TOL
        assert rel(dA, dA_ref) < AUTODIFF_TOL


POOL_CASES = [  # (H, W, size, stride)
    ((6, 6), (2, 2), (2, 2)),
    ((7, 5), (2, 2), (2, 2)),   # the last row and column fall outside every window
    ((6, 7), (3, 3), (1, 1)),   # overlapping windows
    ((8, 8), (3, 2), (2, 3)),
    ((4, 4), (4, 4), (4, 4)),   # one window as large as the input
]


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("hw,size,stride", POOL_CASES)
@pytest.mark.parametrize("channels", [1, 3])
def test_pool_backward_matches_autodiff(kind, hw, size, stride, channels):
    A = normal(0, (channels, *hw, 2))   # continuous values: no ties
    forward = conv_ops.max_pool if kind == "max" else conv_ops.avg_pool
    out_hw = ((hw[0] - size[0]) // stride[0] + 1, (hw[1] - size[1]) // stride[1] + 1)
    out_shape = (channels, *out_hw, 2)
    dZ = normal(1, out_shape)

    @jax.jit
    def both(A, dZ):
        Z, vjp = jax.vjp(lambda A: forward(A, size, stride), A)
        if kind == "max":
            hand = conv_ops.max_pool_backward(A, Z, dZ, size, stride)
        else:
            hand = conv_ops.avg_pool_backward(A, dZ, size, stride)
        return hand, vjp(dZ)[0]

    dA, dA_ref = both(A, dZ)
    assert rel(dA, dA_ref) < AUTODIFF_TOL


@pytest.mark.parametrize("hw,size,stride", POOL_CASES)
def test_pool_forward_matches_reduce_window(hw, size, stride):
    A = normal(0, (3, *hw, 2))
    window = dict(window_dimensions=(1, *size, 1), window_strides=(1, *stride, 1), padding="VALID")
    Zmax, Zavg, ref_max, ref_sum = jax.jit(lambda A: (
        conv_ops.max_pool(A, size, stride), conv_ops.avg_pool(A, size, stride),
        jax.lax.reduce_window(A, -jnp.inf, jax.lax.max, **window),
        jax.lax.reduce_window(A, 0.0, jax.lax.add, **window)))(A)
    np.testing.assert_array_equal(Zmax, ref_max)    # a max is exact
    np.testing.assert_allclose(Zavg, ref_sum / (size[0] * size[1]), rtol=1e-12)


def test_max_pool_propagates_nan():
    A = np.arange(16.0).reshape(1, 4, 4, 1)
    A[0, 1, 0, 0] = np.nan        # not the first offset of its window
    Z = np.asarray(jax.jit(lambda A: conv_ops.max_pool(A, (2, 2), (2, 2)))(A))[0, :, :, 0]
    assert np.isnan(Z[0, 0]) and np.isfinite(Z).sum() == 3


def test_max_pool_ties_go_to_the_first_max_in_row_major_order():
    A = jnp.array([[1.0, 3.0, 0.0, 0.0],
                   [3.0, 3.0, 0.0, 0.0]]).reshape(1, 2, 4, 1)
    Z = conv_ops.max_pool(A, (2, 2), (2, 2))
    dZ = jnp.array([10.0, 20.0]).reshape(1, 1, 2, 1)
    dA = conv_ops.max_pool_backward(A, Z, dZ, (2, 2), (2, 2))
    expected = np.array([[0.0, 10.0, 20.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0]]).reshape(1, 2, 4, 1)
    np.testing.assert_array_equal(dA, expected)
    (dA_jax,) = jax.vjp(lambda A: conv_ops.max_pool(A, (2, 2), (2, 2)), A)[1](dZ)
    np.testing.assert_array_equal(dA, dA_jax)   # the same rule as jax


# --- whole networks ---------------------------------------------------------------
def small_cnn(hidden, pool, stride=1, padding="same", channels=(2, 3)):
    c0, c1 = channels
    return CNN((c0, 10, 9), (Conv(c1, 3, stride=stride, padding=padding), pool,
                            Conv(4, 2, padding=padding), Flatten(), Dense(5), Dense(3)),
               hidden=hidden, output="softmax")


NETS = [
    pytest.param(hidden, pool, stride, padding, channels, l2, l1,
                 id=f"{hidden}-{type(pool).__name__}{pool.size[0]}/{pool.stride[0]}-s{stride}-{padding}"
                    f"-c{channels}-l2={l2}-l1={l1}")
    for hidden, pool, stride, padding, channels, l2, l1 in [
        ("relu", MaxPool(2), 1, "same", (1, 4), 0.0, 0.0),
        ("relu", AvgPool(2), 2, "valid", (3, 2), 0.1, 0.05),
        ("tanh", MaxPool(2, stride=1), 2, "same", (2, 3), 0.0, 0.0),
        ("tanh", AvgPool(2), 1, "valid", (2, 1), 0.3, 0.0),
        ("sigmoid", MaxPool(2), 2, "valid", (1, 3), 0.0, 0.2),
        ("sigmoid", AvgPool(3, stride=1), 1, "same", (3, 3), 0.0, 0.0),
        ("relu", MaxPool(3, stride=2), 2, "same", (2, 2), 0.1, 0.05),
    ]
]


@pytest.mark.parametrize("hidden,pool,stride,padding,channels,l2,l1", NETS)
def test_cnn_backprop_matches_autodiff(hidden, pool, stride, padding, channels, l2, l1):
    net = small_cnn(hidden, pool, stride, padding, channels)
    params = random_params(net)
    X, Y = normal(1, (*net.input_shape, 6)), one_hot_targets(3, 6)
    hand, auto = hand_and_autodiff(net, "cross_entropy", params, X, Y, l2, l1)
    assert rel(hand, auto) < AUTODIFF_TOL
    chex.assert_trees_all_equal_shapes(hand, params)


@pytest.mark.parametrize("cost,output", [("mse", "identity"), ("bce", "sigmoid"), ("sse", "tanh")])
def test_cnn_backprop_other_costs(cost, output):
    net = CNN((1, 6, 6), (Conv(2, 3), AvgPool(2), Flatten(), Dense(3)), hidden="tanh", output=output)
    params = random_params(net)
    X = normal(1, (1, 6, 6, 5))
    Y = (normal(2, (3, 5)) > 0).astype(np.float64)
    l2, l1 = (0.3, 0.0) if cost == "mse" else (0.0, 0.2)
    hand, auto = hand_and_autodiff(net, cost, params, X, Y, l2, l1)
    assert rel(hand, auto) < AUTODIFF_TOL


def _forward_with_offsets(net, params, X, offsets):
    """The network's output logits with offsets[i] added to Z[i] (public layout),
    so that d loss / d offsets[i] at 0 is the local gradient of layer i."""
    A = X
    for i, (layer, p, e) in enumerate(zip(net.layers, params, offsets)):
        if isinstance(layer, Conv):
            shape = net.input_shape if i == 0 else net.shapes[i - 1]
            Z = conv_ops.conv2d(A, p["W"], p["b"], layer.stride, net._pads(i, shape))
        elif isinstance(layer, MaxPool):
            Z = conv_ops.max_pool(A, layer.size, layer.stride)
        elif isinstance(layer, AvgPool):
            Z = conv_ops.avg_pool(A, layer.size, layer.stride)
        elif isinstance(layer, Flatten):
            Z = A.reshape(-1, A.shape[-1])
        else:
            Z = p["W"] @ A + p["b"]
        Z = Z + e
        g = net.activation(i)
        A = Z if g is None else g.fn(Z)
    return Z


@pytest.mark.parametrize("hidden,pool", [("relu", MaxPool(2)), ("tanh", AvgPool(2)), ("sigmoid", MaxPool(3, stride=1))])
def test_local_gradients_are_dJ_dZ(hidden, pool):
    net = small_cnn(hidden, pool)
    params = random_params(net)
    m = 4
    X, Y = normal(1, (*net.input_shape, m)), one_hot_targets(3, m)
    zeros = [np.zeros((*s, m)) for s in net.shapes]

    def J(offsets):
        Z = _forward_with_offsets(net, params, X, offsets)
        return -jnp.sum(Y * jax.nn.log_softmax(Z, axis=0)) / m

    deltas, expected = jax.jit(lambda: (fgd.local_gradients(net, "cross_entropy", params, X, Y),
                                        jax.grad(J)(zeros)))()
    assert [d.shape for d in deltas] == [e.shape for e in expected]
    assert rel(deltas, expected) < AUTODIFF_TOL


def test_training_step_has_no_convolution_or_reduce_window():
    """XLA:CPU runs a convolution fast only outside loops (it puts only the
    entry computation's in the order its Eigen kernel needs), and
    select-and-scatter, the gradient of reduce_window, is slow there too: the
    gradient step that `fit` scans must be made of slices, pads and dots."""
    net = CNN((2, 9, 9), (Conv(4, 3, padding="same"), MaxPool(2),
                          Conv(4, 3, stride=2, padding="same"), AvgPool(2, stride=1),
                          Flatten(), Dense(3)), hidden="relu", output="softmax")
    params, X, Y = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), (
        random_params(net), normal(1, (*net.input_shape, 8)), one_hot_targets(3, 8)))
    grad = jax.value_and_grad(fgd.make_loss(net, "cross_entropy"))

    def epoch(params):
        def step(p, _):
            value, g = grad(p, X, Y)
            return jax.tree_util.tree_map(lambda a, b: a - 0.1 * b, p, g), value
        return jax.lax.scan(step, params, None, length=3)

    lowered = jax.jit(epoch).lower(params)
    for op in ("convolution", "reduce_window", "select_and_scatter"):
        assert op not in lowered.as_text(), op
    assert "convolution(" not in lowered.compile().as_text()


def test_finite_differences_on_a_tiny_cnn():
    net = CNN((1, 4, 4), (Conv(2, 2, stride=2), MaxPool(2, stride=1), Flatten(), Dense(2)),
              hidden="tanh", output="softmax")
    params = random_params(net, seed=3, scale=0.7)
    X, Y = normal(4, (1, 4, 4, 3)), one_hot_targets(2, 3)
    hand = fgd.backprop(net, "cross_entropy", params, X, Y, l2=0.1)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    J = jax.jit(lambda theta: fgd.make_loss(net, "cross_entropy", l2=0.1)(unravel(theta), X, Y))
    h = 1e-6
    bumps = np.eye(flat.size) * h                                  # one row per parameter
    fd = (jax.vmap(J)(flat + bumps) - jax.vmap(J)(flat - bumps)) / (2 * h)
    assert rel(hand, unravel(fd)) < FD_TOL


def test_check_gradients_passes_on_a_cnn():
    net = CNN((2, 6, 5), (Conv(3, 3, stride=2, padding="same"), MaxPool(2, stride=1),
                          Flatten(), Dense(3)), hidden="relu", output="softmax")
    params = random_params(net)
    X, Y = normal(1, (2, 6, 5, 4)), one_hot_targets(3, 4)
    report = fgd.check_gradients(net, "cross_entropy", params, X, Y, l2=0.1)
    assert report.ok, str(report)
    assert report.max_rel_error < FD_TOL


def test_kernel_as_large_as_the_input():
    net = CNN((2, 5, 4), (Conv(3, (5, 4)), Flatten(), Dense(2)), hidden="tanh", output="sigmoid")
    assert net.shapes == ((3, 1, 1), (3,), (2,))
    params = random_params(net)
    X, Y = normal(1, (2, 5, 4, 3)), np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    hand = fgd.backprop(net, "bce", params, X, Y)       # eager entry point, as users call it
    auto = jax.jit(jax.grad(fgd.make_loss(net, "bce")))(params, X, Y)
    assert rel(hand, auto) < AUTODIFF_TOL
    # the 1x1 conv output is a dense layer on the flattened image
    W, b = (np.asarray(params[0][k]) for k in "Wb")
    Z = np.asarray(jax.jit(net.forward)(params, X).Z[0]).reshape(3, 3)     # (F, 1, 1, m) -> (F, m)
    np.testing.assert_allclose(Z, W.reshape(3, -1) @ X.reshape(-1, 3) + b[:, None], rtol=1e-12)


def test_flatten_matches_reshape_of_the_public_layout():
    net = CNN((2, 3, 4), (Flatten(), Dense(1)), output="identity")
    params = [{}, {"W": normal(0, (1, 24)), "b": np.zeros((1, 1))}]
    X = normal(1, (2, 3, 4, 5))
    np.testing.assert_allclose(jax.jit(net.apply)(params, X), params[1]["W"] @ X.reshape(24, 5), rtol=1e-12)


# --- init, dtypes, protocol ----------------------------------------------------------
def digits_like_cnn():
    return CNN((1, 8, 8), (Conv(8, 3, padding="same"), MaxPool(2), Flatten(), Dense(10)),
               hidden="relu", output="softmax")


def test_init_shapes_and_schemes():
    net = digits_like_cnn()
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), "he"))
    assert [jax.tree_util.tree_map(lambda s: s.shape, p) for p in shapes] == [
        {"W": (8, 1, 3, 3), "b": (8,)}, {}, {}, {"W": (10, 128), "b": (10, 1)}]
    assert net.shapes == ((8, 8, 8), (8, 4, 4), (128,), (10,))
    wide = CNN((4, 9, 9), (Conv(256, 3), Flatten(), Dense(1)))

    @jax.jit
    def schemes(key):
        return {s: wide.init(key, s) for s in ("he", "zeros", "uniform", "small")}

    drawn = schemes(jax.random.key(1))
    W = np.asarray(drawn["he"][0]["W"])
    assert abs(W.std() - np.sqrt(2 / (4 * 9))) < 0.02   # fan_in = C kh kw
    assert all(np.abs(x).max() == 0 for x in jax.tree_util.tree_leaves(drawn["zeros"]))
    assert all(0 <= x.min() and x.max() <= 1 for x in jax.tree_util.tree_leaves(drawn["uniform"]))
    assert abs(np.asarray(drawn["small"][0]["W"]).std() - 0.01) < 0.001
    chex.assert_trees_all_equal(drawn, schemes(jax.random.key(1)))   # same key, same params


def test_float32_params_keep_their_dtype():
    net = digits_like_cnn()
    p64 = random_params(net, scale=0.3)
    p32 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), p64)
    X, Y = np.abs(normal(1, (1, 8, 8, 6))), one_hot_targets(10, 6)
    assert jax.jit(net.apply)(p32, X).dtype == jnp.float32
    g32 = fgd.backprop(net, "cross_entropy", p32, X.astype(jnp.float32), Y.astype(jnp.float32))
    g64 = fgd.backprop(net, "cross_entropy", p64, X, Y)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(g32))
    assert rel(g32, g64) < FLOAT32_TOL


def test_model_is_hashable_and_a_static_jit_argument():
    a, b = digits_like_cnn(), digits_like_cnn()
    assert a == b and hash(a) == hash(b)
    assert CNN((1, 8, 8), (Conv(8, 3), Flatten(), Dense(10))) != CNN((1, 8, 8), (Conv(8, 3, stride=2), Flatten(), Dense(10)))
    assert MaxPool(2) != AvgPool(2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.hidden = "tanh"
    params, X = random_params(a), np.ones((1, 8, 8, 3))

    @functools.partial(jax.jit, static_argnums=0)
    @chex.assert_max_traces(n=1)
    def apply(net, params, X):
        return net.apply(params, X)

    chex.assert_trees_all_close(apply(a, params, X), apply(b, params, X))   # b reuses a's trace


# --- errors -----------------------------------------------------------------------
@pytest.mark.parametrize("build,match", [
    (lambda: CNN((1, 8, 8), (Conv(4, 3), Flatten(), Dense(2)), hidden="relux"), "hidden must be one of .*'relu'"),
    (lambda: CNN((1, 8, 8), (Conv(4, 3), Flatten(), Dense(2)), output="soft"), "output must be one of .*'softmax'"),
    (lambda: CNN((1, 8, 8), (Conv(4, 3, padding="full"), Flatten(), Dense(2))), "padding must be one of 'valid', 'same'"),
    (lambda: CNN((1, 8, 8), (Conv(4, 9), Flatten(), Dense(2))), r"layers\[0\] \(Conv.*kernel \(9, 9\) is larger than its input \(8, 8\)"),
    (lambda: CNN((3, 8, 8), (Conv(4, 3, in_channels=1), Flatten(), Dense(2))), r"layers\[0\].*in_channels=1 does not match the 3 channels"),
    (lambda: CNN((1, 8, 8), (Conv(4, 3), Dense(2))), r"layers\[1\] \(Dense.*put Flatten\(\) before it"),
    (lambda: CNN((1, 8, 8), (Flatten(), Conv(4, 3), Dense(2))), r"layers\[1\] \(Conv.*must come before Flatten"),
    (lambda: CNN((1, 8, 8), (Flatten(), Flatten(), Dense(2))), r"layers\[1\] \(Flatten"),
    (lambda: CNN((1, 8, 8), (Conv(4, 3), MaxPool(7), Flatten(), Dense(2))), r"layers\[1\] \(MaxPool.*window \(7, 7\) is larger than its input \(6, 6\)"),
    (lambda: CNN((1, 8, 8), (Conv(4, 3), Flatten())), "must end with a Dense layer"),
    (lambda: CNN((1, 8, 8), ()), "must end with a Dense layer"),
    (lambda: CNN((8, 8), (Flatten(), Dense(2))), r"input_shape must be \(C, H, W\)"),
    (lambda: Conv(0, 3), "Conv filters must be an int >= 1; got 0"),
    (lambda: Conv(4, (3, 0)), "Conv kernel_size must be an int >= 1"),
    (lambda: AvgPool(2, stride=0), "AvgPool stride must be an int >= 1"),
    (lambda: Dense(2.5), "Dense units must be an int >= 1"),
])
def test_bad_descriptions_are_clear_errors(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_a_non_layer_is_a_type_error():
    with pytest.raises(TypeError, match=r"layers\[0\].*must be one of Conv, MaxPool, AvgPool, Flatten, Dense"):
        CNN((1, 8, 8), ("conv", Flatten(), Dense(2)))


def test_bad_data_and_params_are_clear_errors():
    net = digits_like_cnn()
    params = random_params(net)
    Y = one_hot_targets(10, 4)
    loss = fgd.make_loss(net, "cross_entropy")
    with pytest.raises(ValueError, match=r"X must have shape \(1, 8, 8, m\).*got shape \(64, 4\).*reshape\(1, 8, 8, -1\)"):
        fgd.backprop(net, "cross_entropy", params, jnp.ones((64, 4)), Y)
    with pytest.raises(ValueError, match=r"X must have shape \(1, 8, 8, m\).*got shape \(1, 8, 7, 4\)"):
        jax.jit(loss)(params, jnp.ones((1, 8, 7, 4)), Y)      # static shapes: caught under jit too
    with pytest.raises(ValueError, match=r"Y must have shape \(10, m\)"):
        fgd.backprop(net, "cross_entropy", params, jnp.ones((1, 8, 8, 4)), Y[:9])
    bad = [{"W": params[0]["W"][:, :, :2], "b": params[0]["b"]}, {}, {}, params[3]]
    with pytest.raises(ValueError, match=r"params\[0\]\['W'\] must have shape \(8, 1, 3, 3\)"):
        fgd.backprop(net, "cross_entropy", bad, jnp.ones((1, 8, 8, 4)), Y)
    with pytest.raises(ValueError, match="X must be finite"):
        fgd.backprop(net, "cross_entropy", params, jnp.full((1, 8, 8, 4), jnp.nan), Y)
