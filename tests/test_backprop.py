"""Hand-derived backprop and local gradients against autodiff, the classic exercise's
formulas written out in numpy, hand-checked penalty gradients, and errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fgd

TOL_F64 = 1e-10   # hand vs autodiff (or vs numpy), float64, norm-wise per leaf
TOL_F32 = 1e-5    # a float32 run vs the same run in float64

HIDDEN = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
CANONICAL = [("sigmoid", "bce"), ("softmax", "cross_entropy"), ("identity", "sse"), ("identity", "mse")]
NON_CANONICAL = [("sigmoid", "sse"), ("softmax", "mse"), ("tanh", "mse"),
                 ("sigmoid", "cross_entropy"), ("softmax", "bce")]
PAIRS = CANONICAL + NON_CANONICAL
PENALTIES = [(0.0, 0.0), (0.3, 0.0), (0.0, 0.2)]
DEPTHS = (1, 2, 3, 4, 5)
WIDTHS = (5, 4, 5, 4)   # hidden widths; a depth-d net uses the first d - 1
N_IN, N_OUT, M = 3, 3, 6


def rel(a, b):
    """||a - b|| / (||a|| + ||b||), 0 when both are 0 (the API's measure)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if den == 0 else float(np.linalg.norm(a - b) / den)


def assert_rel_close(got, want, tol):
    """Norm-wise relative error <= tol on every leaf of two trees."""
    chex.assert_trees_all_equal_structs(got, want)
    paths = jax.tree_util.tree_flatten_with_path(want)[0]
    for (path, w), g in zip(paths, jax.tree_util.tree_leaves(got)):
        chex.assert_equal_shape([g, w])
        err = rel(g, w)
        assert err <= tol, f"{jax.tree_util.keystr(path)}: relative error {err:.2e} > {tol:.0e}"


def random_params(net, key, dtype=jnp.float64):
    """W ~ N(0, 0.5^2) (logits stay moderate at depth 5) and b ~ N(0, 0.3^2): nonzero biases so db is exercised."""
    k_w, k_b = jax.random.split(key)
    params = net.init(k_w, "normal", scale=0.5, dtype=dtype)
    keys = jax.random.split(k_b, len(params))
    return [{"W": p["W"], "b": 0.3 * jax.random.normal(k, p["b"].shape, dtype)} for p, k in zip(params, keys)]


def data(n_in, n_out, m, seed):
    """X ~ N(0, 1); Y columns of probabilities, valid targets for every cost."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_in, m)), rng.dirichlet(np.ones(n_out), size=m).T


X_FIX, Y_FIX = data(N_IN, N_OUT, M, seed=0)


def sizes(depth):
    return (N_IN, *WIDTHS[: depth - 1], N_OUT)


# --- an independent reference loss, one compiled program per depth ----------
#
# The reference is the forward pass and the API's cost formulas written anew
# (naively, on A), with the activations and the cost picked by lax.switch on
# traced indices: one compile per depth serves every activation, output/cost
# pair and penalty, where fgd's static nets would need one per combination.
# Only the selected branch runs, so unselected logs of invalid values do no harm.

def _softmax(z):
    e = jnp.exp(z - jnp.max(z, axis=0, keepdims=True))
    return e / jnp.sum(e, axis=0, keepdims=True)


REF_ACT = {
    "sigmoid": lambda z: 1 / (1 + jnp.exp(-z)),
    "tanh": jnp.tanh,
    "relu": lambda z: jnp.where(z > 0, z, 0.0),
    "leaky_relu": lambda z: jnp.where(z >= 0, z, 0.01 * z),
    "identity": lambda z: z,
    "softmax": _softmax,
}
OUTPUTS = ("sigmoid", "tanh", "identity", "softmax")
REF_COST = {   # the API's formulas on A, E = A - Y
    "sse": lambda A, Y: 0.5 * jnp.sum((A - Y) ** 2),
    "mse": lambda A, Y: 0.5 * jnp.sum((A - Y) ** 2) / Y.shape[1],
    "bce": lambda A, Y: -jnp.sum(Y * jnp.log(A) + (1 - Y) * jnp.log(1 - A)) / Y.shape[1],
    "cross_entropy": lambda A, Y: -jnp.sum(Y * jnp.log(A)) / Y.shape[1],
}


def ref_loss(params, offsets, X, Y, hidden, output, cost, l2, l1):
    """J(params) with Z[l] = W[l] A[l-1] + b[l] + offsets[l]; its gradient wrt
    the offsets at 0 is d J / d Z[l]. hidden/output/cost are int32 indices."""
    A = X
    for l, (p, eps) in enumerate(zip(params, offsets)):
        Z = p["W"] @ A + p["b"] + eps
        if l == len(params) - 1:
            A = jax.lax.switch(output, [REF_ACT[n] for n in OUTPUTS], Z)
        else:
            A = jax.lax.switch(hidden, [REF_ACT[n] for n in HIDDEN], Z)
    J = jax.lax.switch(cost, list(REF_COST.values()), A, Y)
    s = jnp.where(cost == 0, 1.0, 1.0 / Y.shape[1])   # sse: no 1/m
    penalty = sum(0.5 * l2 * jnp.sum(p["W"] ** 2) + l1 * jnp.sum(jnp.abs(p["W"])) for p in params)
    return J + s * penalty


_ref_value_and_grads = jax.jit(jax.value_and_grad(ref_loss, argnums=(0, 1)))


def reference(net, cost, params, X, Y, l2=0.0, l1=0.0):
    """(J, (dJ/dparams, [dJ/dZ[1], ..., dJ/dZ[L]])) by jax.grad of the reference loss."""
    offsets = [jnp.zeros((n, X.shape[1])) for n in net.sizes[1:]]
    idx = lambda names, name: jnp.int32(names.index(name))
    return _ref_value_and_grads(params, offsets, jnp.asarray(X), jnp.asarray(Y),
                                idx(HIDDEN, fgd.nn.activations.get(net.hidden).name),
                                idx(OUTPUTS, net.output_activation.name),
                                idx(list(REF_COST), cost), jnp.float64(l2), jnp.float64(l1))


@pytest.mark.parametrize(
    "hidden,output,cost,depth",
    [("tanh", "softmax", "cross_entropy", 1), ("leaky_relu", "sigmoid", "bce", 2),
     ("relu", "identity", "sse", 3), ("sigmoid", "tanh", "mse", 4), ("identity", "softmax", "bce", 5)],
)
def test_reference_loss_equals_make_loss(hidden, output, cost, depth):
    # the reference is only as good as its agreement with fgd's loss value
    net = fgd.MLP(sizes(depth), hidden=hidden, output=output)
    params = random_params(net, jax.random.key(depth))
    value, _ = reference(net, cost, params, X_FIX, Y_FIX, 0.3, 0.2)
    with jax.disable_jit():
        want = fgd.make_loss(net, cost, l2=0.3, l1=0.2)(params, X_FIX, Y_FIX)
    np.testing.assert_allclose(value, want, rtol=1e-12)


# --- backprop == jax.grad over the full cross product ------------------------

@pytest.mark.parametrize("l2,l1", PENALTIES, ids=["plain", "l2", "l1"])
@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("output,cost", PAIRS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_backprop_equals_autodiff(hidden, output, cost, depth, l2, l1):
    # fixed sizes; fgd.backprop runs op by op (jax.disable_jit) so that the 675
    # cases share compiled primitives instead of compiling 675 programs; the
    # jitted path is covered by the hypothesis test below and the literal-formula tests
    net = fgd.MLP(sizes(depth), hidden=hidden, output=output)
    params = random_params(net, jax.random.key(depth))
    with jax.disable_jit():
        hand = fgd.backprop(net, cost, params, X_FIX, Y_FIX, l2=l2, l1=l1)
    _, (auto, _) = reference(net, cost, params, X_FIX, Y_FIX, l2, l1)
    assert_rel_close(hand, auto, TOL_F64)


@settings(max_examples=6, deadline=None)
@given(
    widths=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    n_out=st.integers(2, 4),
    m=st.integers(1, 7),
    hidden=st.sampled_from(HIDDEN),
    pair=st.sampled_from(PAIRS),
    penalty=st.sampled_from([(0.0, 0.0), (0.3, 0.0), (0.0, 0.2), (0.1, 0.05)]),
    seed=st.integers(0, 2**16),
)
def test_backprop_equals_jax_grad_of_make_loss_random_sizes(widths, n_out, m, hidden, pair, penalty, seed):
    # the real, jitted fgd.backprop against jax.grad of fgd's own loss
    output, cost = pair
    net = fgd.MLP((*widths, n_out), hidden=hidden, output=output)
    params = random_params(net, jax.random.key(seed))
    X, Y = data(widths[0], n_out, m, seed)
    l2, l1 = penalty
    hand = fgd.backprop(net, cost, params, X, Y, l2=l2, l1=l1)
    auto = jax.jit(jax.grad(fgd.make_loss(net, cost, l2=l2, l1=l1)))(params, X, Y)
    assert_rel_close(hand, auto, TOL_F64)


# --- local gradients == d loss / d Z[l] by autodiff --------------------------

@pytest.mark.parametrize("depth", [1, 3, 5])
@pytest.mark.parametrize("output,cost", PAIRS)
@pytest.mark.parametrize("hidden", HIDDEN)
def test_local_gradients_equal_autodiff_wrt_Z(hidden, output, cost, depth):
    # jax.grad wrt an additive offset on each Z[l], taken at offset 0
    net = fgd.MLP(sizes(depth), hidden=hidden, output=output)
    params = random_params(net, jax.random.key(10 + depth))
    with jax.disable_jit():
        deltas = fgd.local_gradients(net, cost, params, X_FIX, Y_FIX)
    _, (_, want) = reference(net, cost, params, X_FIX, Y_FIX)
    assert len(deltas) == depth
    chex.assert_shape(deltas, [(n, M) for n in net.sizes[1:]])
    assert_rel_close(list(deltas), want, TOL_F64)


# --- the classic exercise's formulas, written out literally -----------------------------

def test_seed_two_layer_lines_tanh_sigmoid_bce():
    """The classic two-layer exercise, line by line in numpy, for g[1] = tanh, g[2] = sigmoid
    and the cross-entropy (bce) cost."""
    net = fgd.MLP((2, 4, 1), hidden="tanh", output="sigmoid")
    params = random_params(net, jax.random.key(3))
    rng = np.random.default_rng(5)
    X = rng.normal(size=(2, 7))
    Y = (rng.uniform(size=(1, 7)) > 0.5).astype(np.float64)
    m = X.shape[1]
    W1, b1, W2, b2 = (np.asarray(params[l][k]) for l in (0, 1) for k in ("W", "b"))
    Z1 = W1 @ X + b1
    A1 = np.tanh(Z1)
    Z2 = W2 @ A1 + b2
    A2 = 1 / (1 + np.exp(-Z2))

    dZ2 = A2 - Y
    dW2 = 1 / m * dZ2 @ A1.T
    db2 = 1 / m * np.sum(dZ2, axis=1, keepdims=True)
    dZ1 = W2.T @ dZ2 * (1 - np.tanh(Z1) ** 2)   # g[1]'(Z1) = 1 - tanh^2
    dW1 = 1 / m * dZ1 @ X.T
    db1 = 1 / m * np.sum(dZ1, axis=1, keepdims=True)

    grads = fgd.backprop(net, "bce", params, X, Y)
    assert_rel_close(grads, [{"W": dW1, "b": db1}, {"W": dW2, "b": db2}], TOL_F64)
    # The exercise keeps dZ = A - Y free of the cost's 1/m and puts 1/m into dW and
    # db; fgd's dZ[l] is the true dJ/dZ[l] of J = bce (which averages over the m
    # examples), so it carries the 1/m itself: fgd's dZ[l] = the exercise's dZ[l] / m,
    # and dW = dZ A^T, db = sum(dZ) then need no 1/m. Both give the same dW, db.
    deltas = fgd.local_gradients(net, "bce", params, X, Y)
    assert_rel_close(list(deltas), [dZ1 / m, dZ2 / m], TOL_F64)


def test_matlab_update_is_minus_backprop_for_sse():
    """The MATLAB BP example: H = logsig(W1 X + B1); O = W2 H + B2; E = T - O;
    D2 = E; D1 = W2' D2 .* H .* (1 - H); W2 += lr D2 H'; B2 += lr D2 1;
    W1 += lr D1 X'; B1 += lr D1 1. With sse = 1/2 sum(E^2) the increments
    (over lr) are minus the gradient."""
    traffic = fgd.data.traffic()
    scale = lambda a: 2 * (a - a.min(1, keepdims=True)) / np.ptp(a, 1, keepdims=True) - 1  # premnmx
    X, T = scale(np.asarray(traffic.X, np.float64)), scale(np.asarray(traffic.Y, np.float64))
    net = fgd.MLP((3, 8, 2), hidden="logsig", output="purelin")
    params = net.init(jax.random.key(0), "uniform")   # MATLAB's rand
    W1, B1, W2, B2 = (np.asarray(params[l][k]) for l in (0, 1) for k in ("W", "b"))

    H = 1 / (1 + np.exp(-(W1 @ X + B1)))
    O = W2 @ H + B2
    E = T - O
    D2 = E
    D1 = W2.T @ D2 * H * (1 - H)
    ones = np.ones((X.shape[1], 1))
    increments = [{"W": D1 @ X.T, "b": D1 @ ones}, {"W": D2 @ H.T, "b": D2 @ ones}]

    grads = fgd.backprop(net, "sse", params, X, T)
    assert_rel_close(jax.tree_util.tree_map(jnp.negative, grads), increments, TOL_F64)
    deltas = fgd.local_gradients(net, "sse", params, X, T)   # sse has no 1/m: dZ = -D exactly
    assert_rel_close(list(deltas), [-D1, -D2], TOL_F64)
    # MATLAB's SSE = sum(E.^2) is twice fgd's sse = 1/2 sum(E^2)
    np.testing.assert_allclose(2 * fgd.make_loss(net, "sse")(params, X, T), np.sum(E**2), rtol=1e-12)


# --- penalty gradients and special points, by hand ---------------------------

@pytest.mark.parametrize("cost,s", [("sse", 1.0), ("mse", 0.5)])
def test_penalty_gradients_by_hand(cost, s):
    # W1 = [[0, -2]], W2 = [[3]], l2 = 0.5, l1 = 0.1, m = 2:
    # dW += s (l2 W + l1 sign W), sign(0) = 0: dW1 += s [[0, -1.1]], dW2 += s [[1.6]];
    # the biases get nothing.
    net = fgd.MLP((2, 1, 1), hidden="identity", output="identity")
    params = [{"W": jnp.array([[0.0, -2.0]]), "b": jnp.array([[0.4]])},
              {"W": jnp.array([[3.0]]), "b": jnp.array([[-0.2]])}]
    X, Y = np.array([[0.1, -0.2], [0.3, 0.05]]), np.array([[1.0, -1.0]])
    plain = fgd.backprop(net, cost, params, X, Y)
    pen = fgd.backprop(net, cost, params, X, Y, l2=0.5, l1=0.1)
    diff = jax.tree_util.tree_map(lambda a, b: a - b, pen, plain)
    expected = [{"W": s * np.array([[0.0, -1.1]]), "b": np.zeros((1, 1))},
                {"W": s * np.array([[1.6]]), "b": np.zeros((1, 1))}]
    chex.assert_trees_all_close(diff, expected, rtol=1e-12, atol=1e-14)
    auto = jax.grad(fgd.make_loss(net, cost, l2=0.5, l1=0.1))(params, X, Y)
    assert_rel_close(pen, auto, TOL_F64)   # autodiff takes the same subgradient 0


def test_relu_at_exactly_zero_matches_autodiff():
    # W1 = 0, b1 = 0 put every hidden pre-activation at exactly 0, where relu
    # takes the subgradient 0 in both the hand-derived and the autodiff paths
    net = fgd.MLP((3, 4, 2), hidden="relu", output="identity")
    params = random_params(net, jax.random.key(4))
    params[0] = {"W": jnp.zeros((4, 3)), "b": jnp.zeros((4, 1))}
    X, Y = X_FIX, Y_FIX[:2]
    hand = fgd.backprop(net, "sse", params, X, Y)
    assert_rel_close(hand, jax.grad(fgd.make_loss(net, "sse"))(params, X, Y), TOL_F64)
    chex.assert_trees_all_equal(hand[0], {"W": jnp.zeros((4, 3)), "b": jnp.zeros((4, 1))})


def test_softmax_cross_entropy_with_targets_that_do_not_sum_to_one():
    # dJ/dZ of -1/m sum(Y log softmax Z) is (A sum_i Y_i - Y) / m per column,
    # which is (A - Y) / m only for one-hot (or probability) columns; targets
    # in [0, 1] are accepted, so the shortcut must not silently change the gradient.
    net = fgd.MLP((3, 4, 3), hidden="tanh", output="softmax")
    params = random_params(net, jax.random.key(6))
    Y = np.random.default_rng(7).uniform(size=(3, M))
    hand = fgd.backprop(net, "cross_entropy", params, X_FIX, Y)
    assert_rel_close(hand, jax.grad(fgd.make_loss(net, "cross_entropy"))(params, X_FIX, Y), TOL_F64)


@pytest.mark.parametrize("output,cost", [("sigmoid", "bce"), ("identity", "mse"), ("softmax", "cross_entropy")])
def test_float32_params_stay_float32(output, cost):
    net = fgd.MLP((3, 4, 3), hidden="tanh", output=output)
    p32 = random_params(net, jax.random.key(2), jnp.float32)
    p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p32)
    grads = fgd.backprop(net, cost, p32, X_FIX, Y_FIX, l2=0.1, l1=0.01)   # float64 numpy data
    chex.assert_trees_all_equal_dtypes(grads, p32)
    assert_rel_close(grads, fgd.backprop(net, cost, p64, X_FIX, Y_FIX, l2=0.1, l1=0.01), TOL_F32)
    deltas = fgd.local_gradients(net, cost, p32, X_FIX, Y_FIX)
    assert all(d.dtype == jnp.float32 for d in deltas)


# --- errors -----------------------------------------------------------------

NET = fgd.MLP((3, 4, 2), hidden="tanh", output="sigmoid")
PARAMS = NET.init(jax.random.key(0), "normal")
X_OK, Y_OK = np.ones((3, 5)), np.full((2, 5), 0.5)
ENTRY_POINTS = [fgd.backprop, fgd.local_gradients]


def _with(a, index, value):
    a = a.copy()
    a[index] = value
    return a


BAD_INPUTS = [
    # (X, Y, error, match)
    (np.ones((4, 5)), Y_OK, ValueError, r"X must have shape \(3, m\) for sizes \(3, 4, 2\).*got shape \(4, 5\)"),
    (X_OK, np.full((3, 5), 0.5), ValueError, r"Y must have shape \(2, m\).*got shape \(3, 5\)"),
    (X_OK, np.full((2, 4), 0.5), ValueError, r"X and Y must have the same number of examples.*got 5 in X and 4 in Y"),
    (_with(X_OK, (1, 2), np.nan), Y_OK, ValueError, r"X must be finite; got 1 NaN/Inf value\(s\), the first at index \(1, 2\)"),
    (_with(X_OK, (0, 4), np.inf), Y_OK, ValueError, r"X must be finite; got 1 NaN/Inf .*index \(0, 4\)"),
    (X_OK, _with(Y_OK, (1, 0), -np.inf), ValueError, r"Y must be finite; got 1 NaN/Inf .*index \(1, 0\)"),
    (X_OK, _with(Y_OK, (0, 3), np.nan), ValueError, r"Y must be finite; got 1 NaN/Inf .*index \(0, 3\)"),
    (X_OK, _with(Y_OK, (0, 3), 1.5), ValueError, r"Y must hold targets in \[0, 1\] for the bce cost; got values from 0.5 to 1.5"),
    (X_OK.astype(object), Y_OK, TypeError, r"X must be an array of real numbers; got dtype object"),
    (X_OK.astype(complex), Y_OK, TypeError, r"X must be an array of real numbers; got dtype complex128 \(complex"),
    (X_OK, np.full((2, 5), "a"), TypeError, r"Y must be an array of real numbers; got dtype <U1"),
]


@pytest.mark.parametrize("X,Y,error,match", BAD_INPUTS)
@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_bad_data_is_rejected(fn, X, Y, error, match):
    with pytest.raises(error, match=match):
        fn(NET, "bce", PARAMS, X, Y)


def _replace(layer, leaf, value):
    params = [dict(p) for p in PARAMS]
    params[layer][leaf] = value
    return params


BAD_PARAMS = [
    (_replace(0, "W", jnp.zeros((3, 4))), r"params\[0\]\['W'\] must have shape \(4, 3\); got an array of shape \(3, 4\)"),
    (_replace(1, "b", jnp.zeros((2,))), r"params\[1\]\['b'\] must have shape \(2, 1\); got an array of shape \(2,\)"),
    (PARAMS[:1], r"params must have the structure .*got PyTreeDef\(\[\{'W': \*, 'b': \*\}\]\)"),
    ([{"W": p["W"]} for p in PARAMS], r"params must have the structure .*got PyTreeDef\(\[\{'W': \*\}, \{'W': \*\}\]\)"),
]


@pytest.mark.parametrize("params,match", BAD_PARAMS)
@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_bad_params_are_rejected(fn, params, match):
    with pytest.raises(ValueError, match=match):
        fn(NET, "bce", params, X_OK, Y_OK)


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_unknown_cost_and_non_model(fn):
    with pytest.raises(ValueError, match=r"cost must be one of 'sse', 'mse', 'bce', 'cross_entropy' or an fgd.Cost\(name, J, dJ_dA\); got 'hinge'"):
        fn(NET, "hinge", PARAMS, X_OK, Y_OK)
    with pytest.raises(TypeError, match=r"net must be a model such as fgd.MLP; got tuple"):
        fn((3, 4, 2), "bce", PARAMS, X_OK, Y_OK)


@pytest.mark.parametrize("kwargs,match", [({"l2": -1.0}, r"l2 must be a finite number >= 0; got -1.0"),
                                          ({"l1": -0.5}, r"l1 must be a finite number >= 0; got -0.5")])
def test_negative_penalties_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        fgd.backprop(NET, "bce", PARAMS, X_OK, Y_OK, **kwargs)
