"""check_grad, check_vjp, fgd.testing and user activations/costs: verdicts that
do not cry wolf (optimum, huge losses, kinks) and planted bugs that fail,
naming the leaf and the entry. Reference gradients written in numpy."""
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd.backprop import output_delta
from fgd.nn import conv_ops

RNG = np.random.default_rng(0)


def scaled(grads, layer, factor):
    """grads with one layer's leaves multiplied by factor."""
    return [{k: v * factor for k, v in g.items()} if i == layer else g for i, g in enumerate(grads)]


def backprop_W_for_WT(net, cost, params, X, Y, l2=0.0, l1=0.0):
    """fgd.backprop's dense backward with W[l] where W[l]^T belongs (square layers only)."""
    cache = net.forward(params, X)
    dZ = output_delta(cost, net.output_activation, cache.Z[-1], cache.A[-1], jnp.asarray(Y))
    L = len(params)
    grads = [None] * L
    for l in range(L, 0, -1):
        grads[l - 1] = {"W": dZ @ cache.A[l - 1].T, "b": jnp.sum(dZ, axis=1, keepdims=True)}
        if l > 1:
            W = params[l - 1]["W"]
            dA = W @ dZ if W.shape[0] == W.shape[1] else W.T @ dZ   # the slip, where shapes allow it
            dZ = net.activation(l - 1).vjp(cache.Z[l - 2], cache.A[l - 1], dA)
    return grads


# --- false alarms that must not happen, and bugs that must fail -----------------
def least_squares_optimum(m=20):
    X = RNG.normal(size=(3, m))
    Y = X.T @ np.array([1.0, -2.0, 0.5]) + 0.3 + 0.1 * RNG.normal(size=m)
    A = np.vstack([X, np.ones((1, m))]).T
    sol = np.linalg.lstsq(A, Y, rcond=None)[0]
    params = [{"W": jnp.asarray(sol[None, :3]), "b": jnp.asarray(sol[None, 3:])}]
    return fgd.MLP((3, 1), output="identity"), params, X, Y[None, :]


def test_exact_least_squares_optimum_passes_and_a_wrong_bias_gradient_fails():
    net, params, X, Y = least_squares_optimum()
    g = fgd.backprop(net, "mse", params, X, Y)
    assert max(float(jnp.max(jnp.abs(v))) for v in jax.tree_util.tree_leaves(g)) < 1e-13
    report = fgd.check_gradients(net, "mse", params, X, Y)
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-6

    def wrong_db(net, cost, p, X, Y, l2=0.0, l1=0.0):       # db = mean(A) (the -Y forgotten)
        out = fgd.backprop(net, cost, p, X, Y)
        return [{"W": out[0]["W"], "b": jnp.mean(net.apply(p, X), axis=1, keepdims=True)}]

    bad = fgd.check_gradients(net, "mse", params, X, Y, backprop=wrong_db)
    assert not bad.ok and bad.first_failure == "layer 1, leaf 'b'"
    (row,) = [r for r in bad.rows if r.failed()]
    assert row.worst.index == (0, 0)
    assert row.worst.hand == pytest.approx(float(np.mean(np.asarray(net.apply(params, X)))))
    assert abs(row.worst.autodiff) < 1e-13 and abs(row.worst.fd) < 1e-9


def test_near_an_optimum_a_layer_scaled_by_1_001_still_fails():
    net, params, X, Y = least_squares_optimum()
    params = [{"W": params[0]["W"] + 1e-6, "b": params[0]["b"]}]      # |g| ~ 1e-6
    assert fgd.check_gradients(net, "mse", params, X, Y).ok
    bad = fgd.check_gradients(net, "mse", params, X, Y,
                              backprop=lambda *a, **k: scaled(fgd.backprop(*a, **k), 0, 1.001))
    assert bad.first_failure == "layer 1, leaf 'W'"
    assert "hand = 1.001 x autodiff" in bad.rows[0].hint


def test_a_loss_of_1e9_passes_and_a_missing_1_over_m_fails():
    net = fgd.MLP((3, 4, 2), hidden="tanh", output="identity")
    params = net.init(jax.random.key(1), "normal")
    X, Y = RNG.normal(size=(3, 20)), 1e4 * RNG.normal(size=(2, 20))
    assert float(fgd.make_loss(net, "sse")(params, X, Y)) > 5e8
    report = fgd.check_gradients(net, "sse", params, X, Y)
    assert report.ok, str(report)
    assert max(r.errors["hand~fd"] for r in report.rows) < 1e-7
    # mse on the same targets, the hand gradient without its 1/m
    no_m = lambda *a, **k: jax.tree_util.tree_map(lambda g: g * 20, fgd.backprop(*a, **k))  # noqa: E731
    bad = fgd.check_gradients(net, "mse", params, X, Y, backprop=no_m)
    assert bad.first_failure == "layer 1, leaf 'W'"
    assert "a missing 1/m" in bad.rows[0].hint and "m = 20" in bad.rows[0].hint
    scaled_2 = fgd.check_gradients(net, "sse", params, X, Y,
                                   backprop=lambda *a, **k: scaled(fgd.backprop(*a, **k), 1, 1.001))
    assert scaled_2.first_failure == "layer 2, leaf 'W'"
    assert {r.name for r, _ in scaled_2.failures()} == {"layer 2, leaf 'W'", "layer 2, leaf 'b'"}


@pytest.mark.parametrize("hidden", ["relu", "leaky_relu"])
def test_relu_preactivations_at_zero_are_kinks_not_failures(hidden):
    net = fgd.MLP((3, 5, 5, 2), hidden=hidden, output="identity")     # a square 5x5 layer
    params = net.init(jax.random.key(2), "normal")                     # b = 0
    X, Y = RNG.normal(size=(3, 6)), RNG.normal(size=(2, 6))
    X[:, 0] = 0.0                                                      # Z[1][:, 0] = b = 0 exactly
    report = fgd.check_gradients(net, "mse", params, X, Y)
    assert report.ok, str(report)
    assert sum(r.kinks for r in report.rows) > 0
    assert "not differentiable at this point" in str(report)
    bad = fgd.check_gradients(net, "mse", params, X, Y, backprop=backprop_W_for_WT)
    assert not bad.ok and bad.first_failure == "layer 1, leaf 'W'"
    row = bad.rows[0]
    assert "hand~autodiff" in row.failed()
    h, a = row.worst.hand, row.worst.autodiff
    assert abs(h - a) == pytest.approx(np.max(np.abs(np.asarray(backprop_W_for_WT(net, "mse", params, X, Y)[0]["W"])
                                                     - np.asarray(fgd.backprop(net, "mse", params, X, Y)[0]["W"]))))


def test_a_transposed_weight_gradient_on_a_square_layer_gets_the_transpose_hint():
    net = fgd.MLP((3, 5, 5, 2), hidden="tanh", output="identity")
    params = net.init(jax.random.key(3), "normal")
    X, Y = RNG.normal(size=(3, 6)), RNG.normal(size=(2, 6))

    def transposed(*a, **k):
        g = fgd.backprop(*a, **k)
        return [g[0], {"W": g[1]["W"].T, "b": g[1]["b"]}, g[2]]

    bad = fgd.check_gradients(net, "mse", params, X, Y, backprop=transposed)
    assert bad.first_failure == "layer 2, leaf 'W'"
    assert "transpose" in bad.rows[2].hint
    assert "transpose" in str(bad)


def test_l1_with_weights_at_and_near_zero_passes_and_a_sign_slip_fails():
    net = fgd.MLP((3, 4, 2), hidden="tanh", output="identity")
    params = net.init(jax.random.key(4), "normal")
    W = params[0]["W"].at[0, 0].set(0.0).at[1, 1].set(1e-9)
    params = [{"W": W, "b": params[0]["b"]}, params[1]]
    X, Y = RNG.normal(size=(3, 6)), RNG.normal(size=(2, 6))
    report = fgd.check_gradients(net, "mse", params, X, Y, l1=0.5)
    assert report.ok, str(report)
    assert report.rows[0].kinks >= 1                   # |w| exactly at 0
    neg = lambda *a, **k: scaled(fgd.backprop(*a, **k), 0, -1.0)   # noqa: E731
    bad = fgd.check_gradients(net, "mse", params, X, Y, l1=0.5, backprop=neg)
    assert bad.first_failure == "layer 1, leaf 'W'"
    assert "sign slip" in bad.rows[0].hint
    assert bad.rows[0].worst.hand == pytest.approx(-bad.rows[0].worst.autodiff)


def test_a_bias_averaged_instead_of_summed_gets_its_hint():
    net = fgd.MLP((3, 4, 2), hidden="tanh", output="identity")
    params = net.init(jax.random.key(5), "normal")
    X, Y = RNG.normal(size=(3, 6)), RNG.normal(size=(2, 6))

    def averaged(*a, **k):
        g = fgd.backprop(*a, **k)
        return [g[0], {"W": g[1]["W"], "b": g[1]["b"] / 6}]

    bad = fgd.check_gradients(net, "mse", params, X, Y, backprop=averaged)
    assert bad.first_failure == "layer 2, leaf 'b'"
    assert "averaged over the examples instead of summed" in bad.rows[3].hint


def test_max_pool_ties_are_kinks_not_failures():
    net = fgd.CNN((1, 4, 4), (fgd.Conv(2, 1), fgd.MaxPool(2), fgd.Flatten(), fgd.Dense(2)),
                  hidden="identity", output="identity")
    params = net.init(jax.random.key(6), "normal")
    params[0] = {"W": params[0]["W"], "b": params[0]["b"]}
    X = np.ones((1, 4, 4, 3))                          # every pooling window is a tie
    X[..., 2] = RNG.normal(size=(1, 4, 4))
    Y = RNG.normal(size=(2, 3))
    assert fgd.check_gradients(net, "mse", params, X, Y).ok
    # along the pooled input itself, a tie is a kink: left out of the fd verdict
    A = np.ones((2, 4, 4, 2))
    A[..., 1] = RNG.normal(size=(2, 4, 4))
    pool = lambda A: conv_ops.max_pool(A, (2, 2), (2, 2))              # noqa: E731
    back = lambda dZ, A: conv_ops.max_pool_backward(A, pool(A), dZ, (2, 2), (2, 2))  # noqa: E731
    report = fgd.check_vjp(pool, back, A)
    assert report.ok, str(report)
    assert report.rows[0].kinks > 0 and "not differentiable at this point" in str(report)


# --- any pytree, hand gradients in numpy ---------------------------------------------
def logistic_loss(p, X, y):
    z = p["w"] @ X + p["b"]
    return jnp.mean(jax.nn.softplus(z) - y * z)


def logistic_grad(p, X, y):
    w, b, X, y = (np.asarray(v) for v in (p["w"], p["b"], X, y))
    r = 1 / (1 + np.exp(-(w @ X + b))) - y
    return {"w": X @ r / y.size, "b": r.mean()}


def test_dict_logistic_regression():
    X, y = RNG.normal(size=(4, 30)), (RNG.uniform(size=30) > 0.5).astype(float)
    p = {"w": jnp.asarray(RNG.normal(size=4)), "b": jnp.asarray(0.1)}
    report = fgd.check_grad(logistic_loss, p, X, y, grad=logistic_grad)
    assert report.ok, str(report)
    assert [r.name for r in report.rows] == ["['b']", "['w']"]          # sorted dict keys
    bad = fgd.check_grad(logistic_loss, p, X, y,
                         grad=lambda p, X, y: {**logistic_grad(p, X, y), "w": logistic_grad(p, X, y)["w"] * 30})
    assert bad.first_failure == "['w']" and "a missing 1/m" in bad.rows[1].hint


def nested_loss(p, X, Y):
    H = jnp.tanh(p["enc"]["W"] @ X + p["enc"]["b"])
    return 0.5 * jnp.sum((p["dec"]["W"] @ H + p["dec"]["b"] - Y) ** 2)


def nested_grad(p, X, Y):
    W1, b1, W2, b2 = (np.asarray(v, np.float64) for v in (p["enc"]["W"], p["enc"]["b"], p["dec"]["W"], p["dec"]["b"]))
    H = np.tanh(W1 @ X + b1)
    dZ2 = W2 @ H + b2 - Y
    dZ1 = W2.T @ dZ2 * (1 - H * H)
    return {"enc": {"W": dZ1 @ X.T, "b": dZ1.sum(1, keepdims=True)},
            "dec": {"W": dZ2 @ H.T, "b": dZ2.sum(1, keepdims=True)}}


def nested_params(dtype_enc=np.float64, dtype_dec=np.float64):
    return {"enc": {"W": jnp.asarray(RNG.normal(size=(5, 3)), dtype_enc), "b": jnp.zeros((5, 1), dtype_enc)},
            "dec": {"W": jnp.asarray(RNG.normal(size=(2, 5)), dtype_dec), "b": jnp.zeros((2, 1), dtype_dec)}}


def test_nested_dict_net_with_mixed_dtypes():
    X, Y = RNG.normal(size=(3, 8)), RNG.normal(size=(2, 8))
    p = nested_params(np.float32, np.float16)
    report = fgd.check_grad(nested_loss, p, X, Y, grad=nested_grad)
    assert report.ok, str(report)
    assert report.max_rel_error < 1e-9                                 # checked in float64
    assert [r.name for r in report.rows] == ["['dec']['W']", "['dec']['b']", "['enc']['W']", "['enc']['b']"]

    def wrong(p, X, Y):
        g = nested_grad(p, X, Y)
        g["dec"]["b"] = g["dec"]["b"] * -1
        return g

    bad = fgd.check_grad(nested_loss, p, X, Y, grad=wrong)
    assert bad.first_failure == "['dec']['b']"
    assert "FAILED: first disagreement at ['dec']['b']" in str(bad)


class Linear(NamedTuple):
    W: jax.Array
    b: jax.Array


def test_namedtuple_and_tuple_params():
    X, Y = RNG.normal(size=(3, 5)), RNG.normal(size=(2, 5))
    loss = lambda p, X, Y: 0.5 * jnp.sum((p.W @ X + p.b[:, None] - Y) ** 2)   # noqa: E731

    def grad(p, X, Y):
        E = np.asarray(p.W) @ X + np.asarray(p.b)[:, None] - Y
        return Linear(E @ X.T, E.sum(1))

    p = Linear(jnp.asarray(RNG.normal(size=(2, 3))), jnp.asarray(RNG.normal(size=2)))
    report = fgd.check_grad(loss, p, X, Y, grad=grad)
    assert report.ok and [r.name for r in report.rows] == [".W", ".b"]
    tloss = lambda p, X, Y: loss(Linear(*p), X, Y)                    # noqa: E731
    treport = fgd.check_grad(tloss, tuple(p), X, Y, grad=lambda p, X, Y: tuple(grad(Linear(*p), X, Y)))
    assert treport.ok and [r.name for r in treport.rows] == ["[0]", "[1]"]
    with pytest.raises(ValueError, match=r"grad must return a tree like params; they first differ at params: "
                                         r"params has a tuple of length 2, grad returned a list of length 2"):
        fgd.check_grad(tloss, tuple(p), X, Y, grad=lambda p, X, Y: list(grad(Linear(*p), X, Y)))


def test_a_tree_mismatch_names_the_first_differing_path():
    X, Y = RNG.normal(size=(3, 8)), RNG.normal(size=(2, 8))
    p = nested_params()

    def missing(p, X, Y):
        g = nested_grad(p, X, Y)
        del g["enc"]["b"]
        return g

    with pytest.raises(ValueError, match=r"first differ at params\['enc'\]: params has a dict with keys "
                                         r"\['W', 'b'\], grad returned a dict with keys \['W'\]"):
        fgd.check_grad(nested_loss, p, X, Y, grad=missing)

    def transposed(p, X, Y):
        g = nested_grad(p, X, Y)
        g["dec"]["W"] = g["dec"]["W"].T
        return g

    with pytest.raises(ValueError, match=r"grad returned shape \(5, 2\) for params\['dec'\]\['W'\]; "
                                         r"expected \(2, 5\) \(the transpose"):
        fgd.check_grad(nested_loss, p, X, Y, grad=transposed)


# --- user activations and costs ----------------------------------------------------------
def swish(z):
    return z * jax.nn.sigmoid(z)


def swish_prime(z):
    s = jax.nn.sigmoid(z)
    return s * (1 + z * (1 - s))


def test_user_activation_right_and_wrong():
    act = fgd.Activation("swish", swish, swish_prime)
    assert act == fgd.Activation("swish", swish, swish_prime)          # equal, so MLPs are too
    net = fgd.MLP((2, 8, 1), hidden=act, output="sigmoid")
    assert hash(net) == hash(fgd.MLP((2, 8, 1), hidden=fgd.Activation("swish", swish, swish_prime),
                                     output="sigmoid"))
    params = net.init(jax.random.key(7), "normal")
    X, Y = RNG.normal(size=(2, 10)), (RNG.uniform(size=(1, 10)) > 0.5).astype(float)
    report = fgd.check_gradients(net, "bce", params, X, Y)
    assert report.ok, str(report)
    assert [r.name for r in report.checks] == ["activation 'swish': g'"]
    # z * s(z) differentiated as if s(z) were a constant: s(z), wrong
    wrong = fgd.Activation("swish", swish, jax.nn.sigmoid)
    bad = fgd.check_gradients(fgd.MLP((2, 8, 1), hidden=wrong, output="sigmoid"), "bce", params, X, Y)
    assert bad.first_failure == "activation 'swish': g'"
    assert {r.name for r, _ in bad.failures()} >= {"activation 'swish': g'", "layer 1, leaf 'W'"}
    assert "FAILED: first disagreement at activation 'swish': g'" in str(bad)


def test_user_cost_right_and_wrong():
    def J(A, Y):
        return jnp.sum(jnp.sqrt(1 + (A - Y) ** 2) - 1) / Y.shape[-1]

    def dJ(A, Y):
        return (A - Y) / jnp.sqrt(1 + (A - Y) ** 2) / Y.shape[-1]

    net = fgd.MLP((3, 4, 2), hidden="tanh", output="identity")
    params = net.init(jax.random.key(8), "normal")
    X, Y = RNG.normal(size=(3, 6)), RNG.normal(size=(2, 6))
    good = fgd.check_gradients(net, fgd.Cost("pseudo_huber", J, dJ), params, X, Y, l2=0.1)
    assert good.ok, str(good)
    assert [r.name for r in good.checks] == ["cost 'pseudo_huber': dJ/dA"]
    bad = fgd.check_gradients(net, fgd.Cost("pseudo_huber", J, lambda A, Y: dJ(A, Y) * Y.shape[-1]),
                              params, X, Y)
    assert bad.first_failure == "cost 'pseudo_huber': dJ/dA"
    assert "a missing 1/m" in bad.checks[0].hint
    dz = fgd.Cost("pseudo_huber", J, dJ_dZ=lambda Z, A, Y: dJ(A, Y))   # identity output: dZ = dA
    assert fgd.check_gradients(net, dz, params, X, Y).ok


# --- layer-level checks ------------------------------------------------------------
def affine_forward(x, W, b):
    return x @ W + b


def affine_backward(dout, x, W, b):
    return dout @ W.T, x.T @ dout, dout.sum(0)


def test_check_vjp_on_a_hand_affine_layer():
    x, W, b = RNG.normal(size=(4, 3)), RNG.normal(size=(3, 5)), RNG.normal(size=5)
    report = fgd.check_vjp(affine_forward, affine_backward, x, W, b)
    assert report.ok, str(report)
    assert [r.name for r in report.rows] == ["input 0 (x)", "input 1 (W)", "input 2 (b)"]
    bad = fgd.check_vjp(affine_forward, lambda d, x, W, b: (d @ W.T, x.T @ d, d.mean(0)), x, W, b)
    assert bad.first_failure == "input 2 (b)"
    assert "averaged" in bad.rows[2].hint or "1/4" in bad.rows[2].hint or "/ 4" in bad.rows[2].hint
    with pytest.raises(ValueError, match=r"f_backward must return one cotangent per input \(3, as a tuple\); got 2"):
        fgd.check_vjp(affine_forward, lambda d, x, W, b: (d @ W.T, x.T @ d), x, W, b)
    single = fgd.check_vjp(jnp.tanh, lambda d, x: d * (1 - jnp.tanh(x) ** 2), x)   # a bare array back
    assert single.ok


def test_check_vjp_on_fgd_conv_layer_and_a_planted_bug():
    A, W, b = RNG.normal(size=(2, 5, 5, 3)), RNG.normal(size=(4, 2, 3, 3)), RNG.normal(size=4)
    stride, pads = (2, 2), ((1, 1), (1, 1))
    f = lambda A, W, b: conv_ops.conv2d(A, W, b, stride, pads)           # noqa: E731

    def back(dZ, A, W, b):
        dW, db, dA = conv_ops.conv2d_backward(A, W, dZ, stride, pads)
        return dA, dW, db

    report = fgd.check_vjp(f, back, A, W, b)
    assert report.ok, str(report)

    def flipped(dZ, A, W, b):                      # the kernel gradient flipped in space
        dA, dW, db = back(dZ, A, W, b)
        return dA, dW[:, :, ::-1, ::-1], db

    bad = fgd.check_vjp(f, flipped, A, W, b)
    assert bad.first_failure == "input 1 (W)"
    assert bad.rows[1].worst is not None and len(bad.rows[1].worst.index) == 4


# --- fgd.testing -------------------------------------------------------------------
def test_assert_grad_matches():
    X, y = RNG.normal(size=(4, 30)), (RNG.uniform(size=30) > 0.5).astype(float)
    p = {"w": jnp.asarray(RNG.normal(size=4)), "b": jnp.asarray(0.1)}
    assert fgd.testing.assert_grad_matches(logistic_loss, p, X, y, grad=logistic_grad).ok
    with pytest.raises(AssertionError, match=r"(?s)my model\nhand-derived gradient disagrees at \['b'\].*hand~autodiff"):
        fgd.testing.assert_grad_matches(logistic_loss, p, X, y, msg="my model",
                                        grad=lambda p, X, y: {**logistic_grad(p, X, y), "b": 0.0 * p["b"] + 1})
    with pytest.raises(AssertionError, match=r"input 2 \(b\)"):
        x, W, b = RNG.normal(size=(4, 3)), RNG.normal(size=(3, 5)), RNG.normal(size=5)
        fgd.testing.assert_vjp_matches(affine_forward, lambda d, x, W, b: (d @ W.T, x.T @ d, 2 * d.sum(0)), x, W, b)


# --- wrong kinds of argument: ValueError / TypeError, never AttributeError ----------------
def _p():
    return {"w": jnp.ones(4), "b": jnp.asarray(0.0)}


X4, Y30 = RNG.normal(size=(4, 30)), np.zeros(30)
BAD_CALLS = [
    (lambda: fgd.check_grad(None, _p(), X4, Y30, grad=logistic_grad), TypeError, r"loss must be a function"),
    (lambda: fgd.check_grad(logistic_loss, _p(), X4, Y30, grad="g"), TypeError, r"grad must be a function"),
    (lambda: fgd.check_grad(logistic_loss, None, X4, Y30, grad=logistic_grad), ValueError, r"params must hold at least one array"),
    (lambda: fgd.check_grad(logistic_loss, {"w": np.ones(4, int), "b": 0.0}, X4, Y30, grad=logistic_grad),
     TypeError, r"params\['w'\] must be a floating-point array"),
    (lambda: fgd.check_grad(lambda p, X, y: p["w"] * 2, _p(), X4, Y30, grad=logistic_grad), ValueError,
     r"loss must return a scalar; got an array of shape \(4,\)"),
    (lambda: fgd.check_grad(logistic_loss, _p(), X4, Y30, grad=lambda *a: None), ValueError,
     r"grad must return a tree like params"),
    (lambda: fgd.check_grad(logistic_loss, _p(), X4, Y30, grad=logistic_grad, fd_entries=0), ValueError,
     r"fd_entries must be >= 1"),
    (lambda: fgd.check_vjp(None, affine_backward, X4), TypeError, r"f must be the forward function"),
    (lambda: fgd.check_vjp(jnp.tanh, 3, X4), TypeError, r"f_backward must be a function"),
    (lambda: fgd.check_vjp(jnp.tanh, affine_backward), ValueError, r"at least one input"),
    (lambda: fgd.check_vjp(jnp.tanh, affine_backward, "x"), TypeError, r"inputs\[0\] must be a floating-point array"),
    (lambda: fgd.check_vjp(jnp.tanh, affine_backward, np.arange(3)), TypeError, r"inputs\[0\] must be a floating-point"),
    (lambda: fgd.testing.assert_grad_matches(None, _p(), grad=logistic_grad), TypeError, r"loss must be a function"),
    (lambda: fgd.testing.assert_vjp_matches(jnp.tanh, None, X4), TypeError, r"f_backward must be a function"),
    (lambda: fgd.Activation(3, swish, swish_prime), TypeError, r"name must be a non-empty string"),
    (lambda: fgd.Activation("swish", swish), TypeError, r"give g_prime"),
    (lambda: fgd.Activation("swish", "g", swish_prime), TypeError, r"g must be a function"),
    (lambda: fgd.Activation("relu", swish, swish_prime), ValueError, r"'relu' is the name of a built-in"),
    (lambda: fgd.Cost("mine", lambda A, Y: 0.0), TypeError, r"give its hand derivative"),
    (lambda: fgd.Cost("mse", lambda A, Y: 0.0, lambda A, Y: A), ValueError, r"built-in cost"),
    (lambda: fgd.Cost("mine", None, lambda A, Y: A), TypeError, r"J must be a function"),
    (lambda: fgd.MLP((2, 3, 1), hidden=42), ValueError, r"hidden must be one of .*fgd.Activation"),
    (lambda: fgd.make_loss(fgd.MLP((2, 1)), cost=swish), ValueError, r"cost must be one of .*fgd.Cost"),
]


@pytest.mark.parametrize("call,error,match", BAD_CALLS)
def test_wrong_kinds_of_argument_raise_value_or_type_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_float32_inputs_are_checked_in_float64():
    X, Y = RNG.normal(size=(3, 8)).astype(np.float32), RNG.normal(size=(2, 8)).astype(np.float32)
    p = nested_params(np.float32, np.float32)
    report = fgd.check_grad(nested_loss, p, X, Y, grad=nested_grad)
    assert report.ok and report.max_rel_error < 1e-9, str(report)
    # a hand gradient that comes back in float32 is held to a float32 tolerance, and a 1e-3 slip fails
    f32 = lambda p, X, Y: jax.tree_util.tree_map(lambda g: np.float32(g), nested_grad(p, X, Y))  # noqa: E731
    assert fgd.check_grad(nested_loss, p, X, Y, grad=f32).ok
    slip = lambda p, X, Y: jax.tree_util.tree_map(lambda g: np.float32(g * 1.001), nested_grad(p, X, Y))  # noqa: E731
    assert not fgd.check_grad(nested_loss, p, X, Y, grad=slip).ok


def test_finite_differences_in_a_loop_as_for_large_models(monkeypatch):
    # models too large for a vmapped batch of parameter copies evaluate the stencils in a loop
    from fgd import _fd
    monkeypatch.setattr(_fd, "SEQUENTIAL_BELOW", 10**9)
    monkeypatch.setattr(_fd, "SEQUENTIAL_CHUNK", 4)
    X, Y = RNG.normal(size=(3, 8)), RNG.normal(size=(2, 8))
    p = nested_params()
    loop = fgd.check_grad(nested_loss, p, X, Y, grad=nested_grad)
    monkeypatch.undo()
    batched = fgd.check_grad(nested_loss, p, X, Y, grad=nested_grad)
    assert loop.ok and batched.ok
    for a, b in zip(loop.rows, batched.rows):        # the same differences, up to rounding
        assert a.errors["hand~fd"] == pytest.approx(b.errors["hand~fd"], abs=1e-11)
        assert a.errors["hand~fd"] < 1e-10


def test_a_loss_jax_cannot_compile_is_checked_eagerly_with_the_same_verdicts():
    """Python control flow on the data's values works under jax.grad but not
    under jit: the loss and its autodiff gradient are then evaluated eagerly
    (as are its finite differences), with the verdicts of the traceable twin."""
    X, Y = RNG.normal(size=(3, 6)), RNG.normal(size=(2, 6))
    p = {"W": jnp.asarray(RNG.normal(size=(2, 3)))}
    smooth = lambda p, X, Y: 0.5 * jnp.sum((p["W"] @ X - Y) ** 2)            # noqa: E731

    def branchy(p, X, Y):
        scale = 1.0 if float(np.sum(Y)) < 1e9 else 2.0                    # a Python branch on a value
        return scale * smooth(p, X, Y)

    grad = lambda p, X, Y: {"W": (np.asarray(p["W"]) @ X - Y) @ X.T}        # noqa: E731
    with pytest.raises(jax.errors.ConcretizationTypeError):
        jax.jit(branchy)(p, X, Y)
    eager, traced = fgd.check_grad(branchy, p, X, Y, grad=grad), fgd.check_grad(smooth, p, X, Y, grad=grad)
    assert eager.ok and traced.ok
    for a, b in zip(eager.rows, traced.rows):       # fd rounding differs eagerly: both tiny
        assert a.errors["hand~autodiff"] == pytest.approx(b.errors["hand~autodiff"], abs=1e-15)
        assert a.errors["hand~fd"] < 1e-10 and b.errors["hand~fd"] < 1e-10, (a.errors, b.errors)
    wrong = lambda p, X, Y: {"W": 2 * grad(p, X, Y)["W"]}                   # noqa: E731
    assert fgd.check_grad(branchy, p, X, Y, grad=wrong).first_failure == "['W']"
