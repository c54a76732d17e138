"""MLP: init schemes and their distributions, the forward pass, dtypes, errors."""
import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd

TOL_F64 = 1e-12   # numpy vs jax forward pass, float64
TOL_F32 = 1e-5    # the same in float32
# Statistical tolerance: a std estimated from N = 200,000 normal draws has a
# relative standard error of 1/sqrt(2N) ~ 0.0016; 2% is over 10 standard errors.
STD_RTOL = 0.02
BIG = fgd.MLP((400, 500))   # one layer, W: (500, 400), 200,000 entries
KEY = jax.random.key(0)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_init_shapes_follow_the_column_layout():
    net = fgd.MLP((3, 8, 2))
    params = net.init(KEY)
    assert isinstance(params, list) and len(params) == 2
    assert all(set(layer) == {"W", "b"} for layer in params)
    chex.assert_shape([params[0]["W"], params[0]["b"], params[1]["W"], params[1]["b"]],
                      [(8, 3), (8, 1), (2, 8), (2, 1)])
    assert net.n_layers == 2 and net.in_dim == 3 and net.out_dim == 2


@pytest.mark.parametrize(
    "scheme,kwargs,std",
    [
        ("small", {}, 0.01),                                # the exercise's randn * 0.01
        ("normal", {"scale": 3.0}, 3.0),
        ("xavier", {}, math.sqrt(2.0 / (400 + 500))),       # Glorot normal
        ("he", {}, math.sqrt(2.0 / 400)),
    ],
)
def test_normal_schemes_have_the_stated_std_and_zero_biases(scheme, kwargs, std):
    (layer,) = BIG.init(KEY, scheme, **kwargs)
    W = np.asarray(layer["W"])
    assert abs(W.mean()) < 5 * std / math.sqrt(W.size)   # mean 0 within 5 standard errors
    np.testing.assert_allclose(W.std(), std, rtol=STD_RTOL)
    chex.assert_trees_all_equal(layer["b"], jnp.zeros((500, 1)))


def test_zeros_scheme():
    params = fgd.MLP((3, 8, 2)).init(KEY, "zeros")
    chex.assert_trees_all_equal(params, jax.tree_util.tree_map(jnp.zeros_like, params))


def test_uniform_scheme_is_matlab_rand_for_weights_and_biases():
    (layer,) = BIG.init(KEY, "uniform")
    for leaf in (layer["W"], layer["b"]):
        x = np.asarray(leaf)
        assert x.min() >= 0.0 and x.max() <= 1.0
    W = np.asarray(layer["W"])
    # U[0, 1]: mean 1/2, std 1/sqrt(12); standard errors ~ 0.0006 and ~ 0.0003
    np.testing.assert_allclose(W.mean(), 0.5, atol=0.005)
    np.testing.assert_allclose(W.std(), 1 / math.sqrt(12), rtol=STD_RTOL)
    assert W.min() < 0.001 and W.max() > 0.999   # it covers the whole range
    assert np.unique(np.asarray(layer["b"])).size == 500  # biases are random too


@pytest.mark.parametrize("scheme", fgd.nn.init.SCHEMES)
def test_same_key_same_params_other_key_other_params(scheme):
    net = fgd.MLP((3, 8, 2))
    a, b = net.init(jax.random.key(7), scheme), net.init(jax.random.key(7), scheme)
    chex.assert_trees_all_equal(a, b)
    c = net.init(jax.random.key(8), scheme)
    if scheme != "zeros":
        assert not np.array_equal(np.asarray(a[0]["W"]), np.asarray(c[0]["W"]))
    legacy = net.init(jax.random.PRNGKey(7), scheme)  # uint32[2] keys work as well
    chex.assert_shape(legacy[0]["W"], (8, 3))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("scheme", fgd.nn.init.SCHEMES)
def test_dtype_is_kept(dtype, scheme):
    params = fgd.MLP((3, 8, 2)).init(KEY, scheme, dtype=dtype)
    chex.assert_trees_all_equal_dtypes(params, jax.tree_util.tree_map(lambda x: x.astype(dtype), params))
    assert params[0]["W"].dtype == dtype


def _direct_init(key, sizes, scheme, dtype):
    """The reference: each layer drawn at its own shape, as the table says."""
    layers = []
    for l, k in enumerate(jax.random.split(key, len(sizes) - 1)):
        k_w, k_b = jax.random.split(k)
        shape_w, shape_b = (sizes[l + 1], sizes[l]), (sizes[l + 1], 1)
        if scheme == "uniform":
            layers.append({"W": jax.random.uniform(k_w, shape_w, dtype),
                           "b": jax.random.uniform(k_b, shape_b, dtype)})
        else:
            std = {"small": 0.01, "he": math.sqrt(2.0 / sizes[l]),
                   "xavier": math.sqrt(2.0 / (sizes[l] + sizes[l + 1]))}[scheme]
            layers.append({"W": jax.random.normal(k_w, shape_w, dtype) * jnp.asarray(std, dtype),
                           "b": jnp.zeros(shape_b, dtype)})
    return layers


@pytest.mark.parametrize("make_key,scheme,dtype", [
    (jax.random.key, "small", jnp.float32), (jax.random.PRNGKey, "small", jnp.float64),
    (jax.random.key, "uniform", jnp.float64), (jax.random.PRNGKey, "uniform", jnp.bfloat16),
    (jax.random.key, "he", jnp.bfloat16), (jax.random.key, "xavier", jnp.float32),
])
def test_init_gives_the_numbers_of_a_draw_at_each_layers_shape(make_key, scheme, dtype):
    """Layers draw from one shared program per power-of-two size; the
    numbers must be those of drawing each layer at its own shape."""
    sizes = (5, 33, 7)   # W: 165 and 231 entries; b: 33 and 7
    key = make_key(11)
    chex.assert_trees_all_equal(fgd.MLP(sizes).init(key, scheme, dtype=dtype),
                                _direct_init(key, sizes, scheme, dtype))


@pytest.fixture
def asked(monkeypatch):
    """The shapes init asks jax.random.normal for, in order."""
    shapes = []
    normal = jax.random.normal
    monkeypatch.setattr(jax.random, "normal",
                        lambda k, shape, dtype: shapes.append(shape) or normal(k, shape, dtype))
    return shapes


def test_small_layers_of_any_net_share_one_draw_size(asked):
    fgd.MLP((3, 8, 2)).init(KEY)
    fgd.MLP((5, 16, 4)).init(KEY)
    fgd.MLP((30, 40)).init(KEY)              # 1,200 entries: the next power of two
    assert asked == [(1024,)] * 4 + [(2048,)]
    asked.clear()
    (layer,) = fgd.MLP((2048, 2049)).init(KEY)   # over SHARED_DRAW_MAX: drawn at its shape
    assert 2048 * 2049 > fgd.nn.init.SHARED_DRAW_MAX and asked == [(2049, 2048)]


@pytest.mark.parametrize("setting", ["rbg_key", "not_partitionable"])
def test_other_prngs_draw_at_each_layers_shape(setting, asked):
    """Only counter-based threefry has a draw's first n numbers equal a
    draw of n; any other PRNG is drawn at the layer's shape."""
    key = jax.random.key(3, impl="rbg") if setting == "rbg_key" else jax.random.key(3)
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", setting == "rbg_key")
    try:
        params = fgd.MLP((3, 8, 2)).init(key)
        expected = _direct_init(key, (3, 8, 2), "small", jnp.float64)
    finally:
        jax.config.update("jax_threefry_partitionable", before)
    assert asked[:2] == [(8, 3), (2, 8)]
    chex.assert_trees_all_equal(params, expected)


def test_default_dtype_follows_jax_default_float():
    # conftest enables x64, so JAX's default float is float64 here; the
    # x64-disabled default (float32) is checked in a subprocess in test_gradcheck.py
    params = fgd.MLP((3, 8, 2)).init(KEY)
    assert params[0]["W"].dtype == jnp.zeros(()).dtype == jnp.float64


def test_apply_equals_the_numpy_forward_pass():
    """Z[l] = W[l] A[l-1] + b[l], A[l] = g[l](Z[l]), written out in numpy."""
    net = fgd.MLP((3, 4, 2), hidden="sigmoid", output="identity")
    params = net.init(KEY, "uniform")
    X = np.random.default_rng(0).normal(size=(3, 5))
    W1, b1, W2, b2 = (np.asarray(params[l][k]) for l in (0, 1) for k in ("W", "b"))
    expected = W2 @ _sigmoid(W1 @ X + b1) + b2
    A = net.apply(params, X)
    chex.assert_shape(A, (2, 5))
    np.testing.assert_allclose(A, expected, rtol=TOL_F64)
    cache = net.forward(params, X)
    np.testing.assert_allclose(cache.Z[0], W1 @ X + b1, rtol=TOL_F64)
    np.testing.assert_allclose(cache.A[0], X, rtol=0)
    np.testing.assert_allclose(net.logits(params, X), expected, rtol=TOL_F64)


def test_apply_on_hand_numbers():
    # W1 = [[1, -1]], b1 = 0: Z1 = x1 - x2; relu; W2 = [[2], [-3]], b2 = [[1], [0]]
    net = fgd.MLP((2, 1, 2), hidden="relu", output="identity")
    params = [{"W": jnp.array([[1.0, -1.0]]), "b": jnp.zeros((1, 1))},
              {"W": jnp.array([[2.0], [-3.0]]), "b": jnp.array([[1.0], [0.0]])}]
    X = np.array([[3.0, 1.0], [1.0, 4.0]])   # Z1 = [2, -3] -> A1 = [2, 0]
    np.testing.assert_allclose(net.apply(params, X), [[5.0, 1.0], [-6.0, 0.0]], rtol=TOL_F64)


def test_float32_params_stay_float32_with_float64_numpy_data():
    net = fgd.MLP((3, 4, 2), hidden="tanh", output="softmax")
    p32 = net.init(KEY, "normal", dtype=jnp.float32)
    X = np.random.default_rng(1).normal(size=(3, 6))   # float64 numpy
    assert net.apply(p32, X).dtype == jnp.float32
    cache = net.forward(p32, X)
    chex.assert_trees_all_equal_dtypes(cache.Z, [jnp.zeros(1, jnp.float32)] * 2)
    p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p32)
    np.testing.assert_allclose(net.apply(p32, X), net.apply(p64, X), rtol=TOL_F32, atol=TOL_F32)


def test_mlp_is_frozen_hashable_and_a_static_argument():
    net = fgd.MLP([3, 8, 2], hidden="tanh")
    assert net.sizes == (3, 8, 2)                # lists become tuples
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.hidden = "relu"
    assert hash(net) == hash(fgd.MLP((3, 8, 2), hidden="tanh"))
    assert net == fgd.MLP((3, 8, 2), hidden="tanh") and net != fgd.MLP((3, 8, 2))
    assert len({net, fgd.MLP((3, 8, 2), hidden="tanh")}) == 1

    traces = []

    @jax.jit
    def run(params, X):
        traces.append(1)
        return net.apply(params, X)

    params = net.init(KEY)
    X = jnp.ones((3, 4))
    np.testing.assert_allclose(run(params, X), net.apply(params, X), rtol=TOL_F64)
    run(params, X + 1)
    assert len(traces) == 1


@pytest.mark.parametrize(
    "alias,canonical",
    [("logsig", "sigmoid"), ("tansig", "tanh"), ("purelin", "identity"), ("linear", "identity")],
)
def test_aliases_give_the_same_numbers(alias, canonical):
    X = np.random.default_rng(2).normal(size=(3, 5))
    for hidden, output in ((alias, "identity"), ("relu", alias)):
        net_a = fgd.MLP((3, 4, 2), hidden=hidden, output=output)
        net_c = fgd.MLP((3, 4, 2), hidden=hidden.replace(alias, canonical), output=output.replace(alias, canonical))
        params = net_c.init(KEY, "normal")
        chex.assert_trees_all_equal(net_a.apply(params, X), net_c.apply(params, X))
        assert net_a.output_activation.name == net_c.output_activation.name


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden": "swish"}, r"hidden must be one of .*'sigmoid'.*'tansig'.*; got 'swish'"),
        ({"output": "soft_max"}, r"output must be one of .*'softmax'.*; got 'soft_max'"),
        ({"hidden": "softmax"}, r"hidden must be one of .*; got 'softmax'"),
        ({"sizes": (3,)}, r"sizes must hold at least two integers >= 1.*got \(3,\)"),
        ({"sizes": (3, 0, 2)}, r"sizes must hold .*got \(3, 0, 2\)"),
        ({"sizes": (3, 2.5)}, r"sizes must hold .*got \(3, 2.5\)"),
    ],
)
def test_mlp_rejects_bad_descriptions_at_construction(kwargs, match):
    kwargs = {"sizes": (3, 8, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        fgd.MLP(**kwargs)


def test_mlp_rejects_sizes_that_are_not_a_sequence():
    with pytest.raises(TypeError, match=r"sizes must be a sequence .*got '382'"):
        fgd.MLP("382")


@pytest.mark.parametrize(
    "args,kwargs,error,match",
    [
        (("glorot",), {}, ValueError, r"scheme must be one of 'small', 'zeros'.*'he'; got 'glorot'"),
        (("normal",), {"scale": -1.0}, ValueError, r"scale must be a finite number >= 0; got -1.0"),
        ((), {"dtype": jnp.int32}, ValueError, r"dtype must be a floating-point dtype; got int32"),
    ],
)
def test_init_rejects_bad_arguments(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fgd.MLP((3, 8, 2)).init(KEY, *args, **kwargs)


def test_init_rejects_a_non_key():
    with pytest.raises(TypeError, match=r"key must be a JAX PRNG key .*got 0"):
        fgd.MLP((3, 8, 2)).init(0)


@pytest.mark.parametrize("shape", [(4, 5), (3,), (5, 3)])
def test_apply_rejects_inputs_that_do_not_fit(shape):
    net = fgd.MLP((3, 8, 2))
    with pytest.raises(ValueError, match=rf"X must have shape \(3, m\).*got shape {re_shape(shape)}"):
        net.apply(net.init(KEY), np.ones(shape))


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")
