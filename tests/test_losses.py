"""Costs and make_loss: hand-checked numbers, penalties, stable forms, errors."""
import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd

TOL_F64 = 1e-12   # a closed form evaluated in float64
TOL_F32 = 1e-5    # the same in float32
LN2, LN3 = math.log(2.0), math.log(3.0)


def _dense(*layers):
    """Params built by hand from nested lists: ((W, b), ...)."""
    return [{"W": jnp.asarray(W, jnp.float64), "b": jnp.asarray(b, jnp.float64)} for W, b in layers]


# --- the costs on hand-checked numbers -------------------------------------

def test_sse_and_mse_by_hand():
    # identity output, W = 1, b = 0: A = X = [2, -1], Y = [1, 1], E = [1, -2]
    # sse = 1/2 (1 + 4) = 2.5 (no 1/m); mse = 2.5 / m = 1.25 with m = 2
    net = fgd.MLP((1, 1), output="identity")
    params = _dense(([[1.0]], [[0.0]]))
    X, Y = np.array([[2.0, -1.0]]), np.array([[1.0, 1.0]])
    np.testing.assert_allclose(fgd.make_loss(net, "sse")(params, X, Y), 2.5, rtol=TOL_F64)
    np.testing.assert_allclose(fgd.make_loss(net, "mse")(params, X, Y), 1.25, rtol=TOL_F64)


@pytest.mark.parametrize("output,X", [("sigmoid", [[0.0, LN3]]), ("identity", [[0.5, 0.75]])])
def test_bce_by_hand(output, X):
    # A = [1/2, 3/4] (sigmoid of [0, ln 3], or given directly by an identity
    # output: the formula on A, not the stable one on Z), Y = [1, 0]:
    # bce = -1/2 (log 1/2 + log 1/4) = 3/2 log 2
    net = fgd.MLP((1, 1), output=output)
    params = _dense(([[1.0]], [[0.0]]))
    value = fgd.make_loss(net, "bce")(params, np.array(X), np.array([[1.0, 0.0]]))
    np.testing.assert_allclose(value, 1.5 * LN2, rtol=TOL_F64)


@pytest.mark.parametrize("output", ["softmax", "identity"])
def test_cross_entropy_by_hand(output):
    # softmax columns: [0, ln 3] -> [1/4, 3/4] and [0, 0] -> [1/2, 1/2];
    # one-hot Y picks 3/4 and 1/2: ce = -1/2 (log 3/4 + log 1/2) = 1/2 log(8/3).
    # With an identity output the same A is given directly (the formula on A).
    if output == "softmax":
        net = fgd.MLP((1, 2), output="softmax")
        params = _dense(([[0.0], [1.0]], [[0.0], [0.0]]))
        X = np.array([[LN3, 0.0]])
    else:
        net = fgd.MLP((2, 2), output="identity")
        params = _dense((np.eye(2), [[0.0], [0.0]]))
        X = np.array([[0.25, 0.5], [0.75, 0.5]])
    Y = np.array([[0.0, 1.0], [1.0, 0.0]])
    value = fgd.make_loss(net, "cross_entropy")(params, X, Y)
    np.testing.assert_allclose(value, 0.5 * math.log(8 / 3), rtol=TOL_F64)


def _numpy_cost(cost, A, Y):
    """The API's formulas, in numpy, with E = A - Y."""
    m = Y.shape[1]
    if cost == "sse":
        return 0.5 * np.sum((A - Y) ** 2)
    if cost == "mse":
        return 0.5 * np.sum((A - Y) ** 2) / m
    if cost == "bce":
        return -np.sum(Y * np.log(A) + (1 - Y) * np.log(1 - A)) / m
    return -np.sum(Y * np.log(A)) / m


@pytest.mark.parametrize(
    "output,cost",
    [("identity", "sse"), ("tanh", "mse"), ("sigmoid", "sse"), ("sigmoid", "bce"),
     ("softmax", "cross_entropy"), ("softmax", "mse"), ("softmax", "bce"), ("sigmoid", "cross_entropy")],
)
def test_every_output_cost_pair_equals_the_numpy_formula(output, cost):
    rng = np.random.default_rng(3)
    net = fgd.MLP((3, 4, 3), hidden="tanh", output=output)
    params = net.init(jax.random.key(1), "normal")
    X = rng.normal(size=(3, 6))
    Y = rng.dirichlet(np.ones(3), size=6).T   # columns of probabilities: valid for every cost
    A = np.asarray(net.apply(params, X))
    np.testing.assert_allclose(fgd.make_loss(net, cost)(params, X, Y), _numpy_cost(cost, A, Y), rtol=1e-10)


# --- penalties --------------------------------------------------------------

# W1 = [[1, -2]], W2 = [[3]] (and a zero row for two outputs):
# sum W^2 = 1 + 4 + 9 = 14, sum |W| = 1 + 2 + 3 = 6; m = 2 examples.
# sse: l2/2 * 14 + l1 * 6; the others: the same / m.
PENALTY_NETS = {
    "sse": ("identity", [[3.0]]), "mse": ("identity", [[3.0]]),
    "bce": ("sigmoid", [[3.0]]), "cross_entropy": ("softmax", [[3.0], [0.0]]),
}


@pytest.mark.parametrize("cost", fgd.COSTS)
@pytest.mark.parametrize("l2,l1", [(0.5, 0.0), (0.0, 0.1), (0.5, 0.1)])
def test_penalties_by_hand_never_on_biases(cost, l2, l1):
    output, W2 = PENALTY_NETS[cost]
    n_out = len(W2)
    net = fgd.MLP((2, 1, n_out), hidden="identity", output=output)
    X = np.array([[0.1, -0.2], [0.3, 0.05]])
    Y = np.full((n_out, 2), 1.0 / n_out)
    expected = (0.5 * l2 * 14 + l1 * 6) * (1.0 if cost == "sse" else 0.5)
    for b in (0.0, 100.0):   # the biases do not enter the penalty, however large
        params = _dense(([[1.0, -2.0]], [[b]]), (W2, [[b]] * n_out))
        plain = fgd.make_loss(net, cost)(params, X, Y)
        penalised = fgd.make_loss(net, cost, l2=l2, l1=l1)(params, X, Y)
        np.testing.assert_allclose(penalised - plain, expected, rtol=1e-10)


# --- stable forms -----------------------------------------------------------

@pytest.mark.parametrize("dtype,tol", [(jnp.float32, TOL_F32), (jnp.float64, TOL_F64)])
@pytest.mark.parametrize("output", ["sigmoid", "logsig"])
def test_bce_with_sigmoid_is_stable_at_logits_500(dtype, tol, output):
    # Z = [500, -500], Y = [0, 1]: each column costs softplus(500) = 500, so
    # bce = (500 + 500) / 2 = 500 (log(1 - sigmoid(500)) would be log 0).
    # dJ/dZ = (sigmoid(Z) - Y) / m = [1/2, -1/2]; dW = dZ X^T = 1/2 + 1/2 = 1; db = 0.
    net = fgd.MLP((1, 1), output=output)
    params = [{"W": jnp.full((1, 1), 500.0, dtype), "b": jnp.zeros((1, 1), dtype)}]
    X, Y = np.array([[1.0, -1.0]]), np.array([[0.0, 1.0]])
    loss = fgd.make_loss(net, "bce")
    value = loss(params, X, Y)
    assert value.dtype == dtype
    np.testing.assert_allclose(value, 500.0, rtol=tol)
    expected = [{"W": np.array([[1.0]]), "b": np.array([[0.0]])}]
    for grads in (jax.grad(loss)(params, X, Y), fgd.backprop(net, "bce", params, X, Y)):
        chex.assert_tree_all_finite(grads)
        chex.assert_trees_all_close(grads, expected, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, TOL_F32), (jnp.float64, TOL_F64)])
def test_cross_entropy_with_softmax_is_stable_at_logits_500(dtype, tol):
    # Z = [500, -500], Y = [0, 1]: -log softmax(Z)[1] = 1000 (softmax underflows to 0).
    # dJ/dZ = A - Y = [1, -1]; dW = dZ X^T with X = 1; db = dZ.
    net = fgd.MLP((1, 2), output="softmax")
    params = [{"W": jnp.array([[500.0], [-500.0]], dtype), "b": jnp.zeros((2, 1), dtype)}]
    X, Y = np.array([[1.0]]), np.array([[0.0], [1.0]])
    loss = fgd.make_loss(net, "cross_entropy")
    value = loss(params, X, Y)
    assert value.dtype == dtype
    np.testing.assert_allclose(value, 1000.0, rtol=tol)
    expected = [{"W": np.array([[1.0], [-1.0]]), "b": np.array([[1.0], [-1.0]])}]
    for grads in (jax.grad(loss)(params, X, Y), fgd.backprop(net, "cross_entropy", params, X, Y)):
        chex.assert_tree_all_finite(grads)
        chex.assert_trees_all_close(grads, expected, rtol=tol, atol=tol)


# --- dtypes and the Loss object ---------------------------------------------

def test_float32_params_give_a_float32_loss_and_gradient_with_float64_data():
    net = fgd.MLP((3, 4, 2), hidden="relu", output="sigmoid")
    p32 = net.init(jax.random.key(0), "normal", dtype=jnp.float32)
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(3, 5)), rng.uniform(size=(2, 5))   # float64 numpy
    loss = fgd.make_loss(net, "bce", l2=0.1, l1=0.01)
    assert loss(p32, X, Y).dtype == jnp.float32
    assert jax.jit(loss)(p32, X, Y).dtype == jnp.float32
    chex.assert_trees_all_equal_dtypes(jax.jit(jax.grad(loss))(p32, X, Y), p32)


def test_loss_is_frozen_and_hashable():
    net = fgd.MLP((3, 4, 2))
    loss = fgd.make_loss(net, "mse", l2=1)
    assert loss == fgd.make_loss(net, "mse", l2=1.0) and hash(loss) == hash(fgd.make_loss(net, "mse", l2=1.0))
    assert loss.l2 == 1.0 and isinstance(loss.l2, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        loss.cost = "sse"


# --- errors -----------------------------------------------------------------

NET = fgd.MLP((3, 4, 2), hidden="tanh", output="sigmoid")
PARAMS = NET.init(jax.random.key(0), "normal")
X_OK, Y_OK = np.ones((3, 5)), np.full((2, 5), 0.5)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"cost": "hinge"}, ValueError, r"cost must be one of 'sse', 'mse', 'bce', 'cross_entropy' or an fgd.Cost\(name, J, dJ_dA\); got 'hinge'"),
        ({"l2": -0.1}, ValueError, r"l2 must be a finite number >= 0; got -0.1"),
        ({"l1": -1.0}, ValueError, r"l1 must be a finite number >= 0; got -1.0"),
        ({"l2": float("nan")}, ValueError, r"l2 must be a finite number >= 0; got nan"),
        ({"l1": "0.1"}, TypeError, r"l1 must be a number >= 0; got str '0.1'"),
    ],
)
def test_make_loss_rejects_bad_arguments(kwargs, error, match):
    kwargs = {"cost": "mse", **kwargs}
    with pytest.raises(error, match=match):
        fgd.make_loss(NET, **kwargs)


def test_make_loss_rejects_a_non_model():
    with pytest.raises(TypeError, match=r"net must be a model such as fgd.MLP; got tuple"):
        fgd.make_loss((3, 4, 2), "sse")


@pytest.mark.parametrize("cost", ["bce", "cross_entropy"])
@pytest.mark.parametrize("bad,where", [(1.5, "from 0.5 to 1.5"), (-0.5, "from -0.5 to 0.5")])
def test_probability_costs_reject_targets_outside_0_1(cost, bad, where):
    Y = Y_OK.copy()
    Y[1, 3] = bad
    with pytest.raises(ValueError, match=rf"Y must hold targets in \[0, 1\] for the {cost} cost; got values {where}"):
        fgd.make_loss(NET, cost)(PARAMS, X_OK, Y)


BAD_DATA = [
    (np.ones((4, 5)), Y_OK, r"X must have shape \(3, m\) for sizes \(3, 4, 2\).*got shape \(4, 5\)"),
    (np.ones((3,)), Y_OK, r"X must have shape \(3, m\).*got shape \(3,\)"),
    (X_OK, np.ones((3, 5)) / 2, r"Y must have shape \(2, m\).*got shape \(3, 5\)"),
    (X_OK, np.ones((2,)) / 2, r"Y must have shape \(2, m\).*got shape \(2,\)"),
    (X_OK, np.ones((2, 4)) / 2, r"X and Y must have the same number of examples.*got 5 in X and 4 in Y"),
    (X_OK, np.ones((2, 1)) / 2, r"X and Y must have the same number of examples.*got 5 in X and 1 in Y"),
]


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("X,Y,match", BAD_DATA)
def test_shape_mismatches_never_broadcast_even_under_jit(X, Y, match, jit):
    loss = fgd.make_loss(NET, "mse")
    f = jax.jit(loss) if jit else loss
    with pytest.raises(ValueError, match=match):
        f(PARAMS, X, Y)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize(
    "layer,leaf,value,match",
    [
        (0, "b", jnp.zeros((1, 1)), r"params\[0\]\['b'\] must have shape \(4, 1\); got an array of shape \(1, 1\)"),
        (0, "b", jnp.zeros((4,)), r"params\[0\]\['b'\] must have shape \(4, 1\); got an array of shape \(4,\)"),
        (1, "W", jnp.zeros((4, 2)), r"params\[1\]\['W'\] must have shape \(2, 4\); got an array of shape \(4, 2\)"),
    ],
)
def test_params_of_the_wrong_shape_are_rejected_by_the_loss(layer, leaf, value, match, jit):
    # b of shape (1, 1) or (4,) would broadcast silently in W A + b
    params = [dict(p) for p in PARAMS]
    params[layer][leaf] = value
    loss = fgd.make_loss(NET, "mse")
    with pytest.raises(ValueError, match=match):
        (jax.jit(loss) if jit else loss)(params, X_OK, Y_OK)


def test_a_missing_layer_is_rejected_by_the_loss():
    with pytest.raises(ValueError, match=r"params must have the structure .*; got PyTreeDef\(\[\{'W': \*, 'b': \*\}\]\)"):
        fgd.make_loss(NET, "mse")(PARAMS[:1], X_OK, Y_OK)


@pytest.mark.parametrize(
    "X,match",
    [
        (np.array([["a", "b", "c"]] * 3), r"X must be an array of real numbers; got dtype <U1"),
        (np.ones((3, 5), complex), r"X must be an array of real numbers; got dtype complex128 \(complex numbers"),
        (np.ones((3, 5), object), r"X must be an array of real numbers; got dtype object"),
    ],
)
def test_non_numeric_data_is_a_type_error(X, match):
    with pytest.raises(TypeError, match=match):
        fgd.make_loss(NET, "mse")(PARAMS, X, Y_OK)
