"""On-device training diagnostics in fit's history, and diagnose()."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd

ALL = ("loss", "layer_grad_norm", "update_ratio", "unit_spread", "dead_fraction",
       "saturated_fraction", "sharpness")


def _data(n_x=2, m=8, seed=3):
    X = jax.random.normal(jax.random.key(seed), (n_x, m), jnp.float64)
    return X, jnp.sin(X[:1])


def _hand_built(b1):
    """A 2-4-1 net whose hidden weights are 0 and biases `b1`: every hidden
    unit's z equals its bias on every example."""
    return [{"W": jnp.zeros((4, 2), jnp.float64), "b": jnp.asarray(b1, jnp.float64).reshape(4, 1)},
            {"W": jnp.ones((1, 4), jnp.float64), "b": jnp.zeros((1, 1), jnp.float64)}]


def test_dead_fraction_of_a_hand_built_relu_net():
    loss = fgd.make_loss(fgd.MLP((2, 4, 1), hidden="relu"), "mse")
    X, Y = _data()
    r = fgd.fit(loss, _hand_built([-1.0, -2.0, -0.5, 1.0]), fgd.sgd(0.0), X, Y, epochs=2,
                progress=False, history=("loss", "dead_fraction", "saturated_fraction"))
    np.testing.assert_array_equal(r.history["dead_fraction"], [[0.75], [0.75]])
    assert np.isnan(r.history["saturated_fraction"]).all()     # relu does not saturate
    assert r.history_columns["dead_fraction"] == ("layer 1",)


@pytest.mark.parametrize("hidden,bias,want", [("tanh", 10.0, 0.5), ("sigmoid", 10.0, 0.5),
                                              ("tanh", 2.0, 0.0)])
def test_saturated_fraction_of_a_hand_built_net(hidden, bias, want):
    # tanh'(10) ~ 8e-9 and sigmoid'(10) ~ 4.5e-5 are below the floor 0.01; tanh'(2) = 0.07 is not
    loss = fgd.make_loss(fgd.MLP((2, 4, 1), hidden=hidden), "mse")
    X, Y = _data()
    r = fgd.fit(loss, _hand_built([bias, -bias, 0.0, 0.0]), fgd.sgd(0.0), X, Y, epochs=1,
                progress=False, history=("loss", "saturated_fraction", "dead_fraction"))
    assert r.history["saturated_fraction"][0, 0] == want
    assert r.history["dead_fraction"][0, 0] == 0.0


def test_per_layer_norms_and_update_ratio_against_numpy():
    net = fgd.MLP((2, 5, 3, 1), hidden="tanh")
    loss = fgd.make_loss(net, "mse")
    params = net.init(jax.random.key(0), "xavier", dtype=jnp.float64)
    X, Y = _data()
    eta = 0.3
    r = fgd.fit(loss, params, fgd.sgd(eta), X, Y, epochs=1, progress=False,
                history=("loss", "layer_grad_norm", "update_ratio", "unit_spread"))
    grads = jax.grad(loss)(params, X, Y)
    norm = lambda layer: np.sqrt(sum(np.sum(np.asarray(v) ** 2) for v in layer.values()))
    g_ref = [norm(g) for g in grads]
    np.testing.assert_allclose(r.history["layer_grad_norm"][0], g_ref, rtol=1e-12)
    np.testing.assert_allclose(r.history["update_ratio"][0],
                               [eta * g / norm(p) for g, p in zip(g_ref, params)], rtol=1e-10)
    spread = []
    for p in params[:-1]:                        # hidden layers: rows [W | b]
        rows = np.hstack([np.asarray(p["W"]), np.asarray(p["b"])])
        spread.append(np.sqrt(np.mean(np.sum((rows - rows[0]) ** 2, axis=1))))
    np.testing.assert_allclose(r.history["unit_spread"][0], spread, rtol=1e-12)
    assert r.history_columns["layer_grad_norm"] == ("layer 1", "layer 2", "layer 3")


def test_any_pytree_by_leaf_path():
    loss = lambda p, X, Y: jnp.mean((p["w"] @ X + p["c"] - Y) ** 2)
    params = {"w": jnp.array([[1.0, -2.0]]), "c": jnp.array([[0.5]])}
    X, Y = _data()
    r = fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=3, progress=False,
                history=("loss", "layer_grad_norm", "sharpness"))
    assert r.history_columns["layer_grad_norm"] == ("['c']", "['w']")
    g = jax.grad(loss)(params, X, Y)
    np.testing.assert_allclose(r.history["layer_grad_norm"][0],
                               [np.linalg.norm(g["c"]), np.linalg.norm(g["w"])], rtol=1e-12)
    lam = fgd.hessian_eigs(loss, params, X, Y)[0]
    np.testing.assert_allclose(r.history["sharpness"][0], lam, rtol=1e-10)
    with pytest.raises(ValueError, match="needs an fgd Loss"):
        fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=1, history=("dead_fraction",))


@pytest.mark.parametrize("batch_size", [None, 4])
def test_diagnostics_leave_the_trained_params_bit_identical(batch_size, users_codegen):
    net = fgd.MLP((2, 6, 1), hidden="relu")
    loss = fgd.make_loss(net, "mse")
    params = net.init(jax.random.key(1), "he", dtype=jnp.float64)
    X, Y = _data(m=12)
    plain = fgd.fit(loss, params, fgd.sgd(0.05), X, Y, epochs=7, batch_size=batch_size, progress=False)
    diag = fgd.fit(loss, params, fgd.sgd(0.05), X, Y, epochs=7, batch_size=batch_size, progress=False,
                   history=ALL, diagnostics_every=3)
    for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(diag.params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(plain.history["loss"], diag.history["loss"])
    measured = ~np.isnan(diag.history["sharpness"])
    np.testing.assert_array_equal(measured, np.arange(7) % 3 == 0)
    assert diag.history["layer_grad_norm"].shape == (7, 2)


def test_float32_path():
    net = fgd.MLP((2, 3, 1), hidden="sigmoid")
    loss = fgd.make_loss(net, "mse")
    params = net.init(jax.random.key(0), "xavier", dtype=jnp.float32)
    X, Y = (np.asarray(a, np.float32) for a in _data())
    r = fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=2, progress=False, history=ALL)
    assert all(r.history[n].dtype == np.float32 for n in ALL)
    assert np.isfinite(r.history["sharpness"]).all()


def test_zero_start_is_symmetric_and_diagnose_says_so():
    net = fgd.MLP((2, 4, 1), hidden="tanh")
    loss = fgd.make_loss(net, "mse")
    params = net.init(jax.random.key(0), "zeros", dtype=jnp.float64)
    X, Y = _data()
    r = fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=20, progress=False,
                history=("loss", "unit_spread"))
    np.testing.assert_array_equal(r.history["unit_spread"], 0.0)
    text = str(fgd.diagnose(r))
    assert "symmetric units" in text and "layer 1" in text


def test_diagnose_rate_above_two_over_lambda_max_and_nonfinite():
    lam = jnp.array([4.0, 1.0])
    loss = lambda p, X, Y: 0.5 * jnp.sum(lam * p["w"] ** 2)
    X = Y = jnp.zeros((1, 1))
    with pytest.warns(RuntimeWarning, match="loss became inf"):
        r = fgd.fit(loss, {"w": jnp.ones(2)}, fgd.sgd(0.6), X, Y, epochs=2000, progress=False,
                    history=("loss", "lr", "sharpness"))
    findings = fgd.diagnose(r).findings
    assert any("rate too large" in f and "0.5" in f for f in findings)     # 2 / 4 = 0.5
    assert any(f.startswith("non-finite loss") for f in findings)


def test_diagnose_vanishing_exploding_dead_and_stall_from_a_history():
    cols = {"layer_grad_norm": ("layer 1", "layer 2", "layer 3"), "dead_fraction": ("layer 1", "layer 2")}
    fake = lambda g, dead, loss: types.SimpleNamespace(
        history={"loss": np.asarray(loss), "layer_grad_norm": np.asarray([g]),
                 "dead_fraction": np.asarray([dead])}, history_columns=cols)
    vanish = fgd.diagnose(fake([1e-5, 1e-2, 1.0], [0.0, 0.9], np.linspace(1, 0.1, 20))).findings
    assert any("vanishing" in f and "1e-05" in f for f in vanish)
    assert any("dead units: 90.0% of layer 2" in f for f in vanish)
    explode = fgd.diagnose(fake([1e3, 1.0, 1.0], [0.0, 0.0], np.full(20, 2.0))).findings
    assert any("exploding" in f and "1e+03" in f for f in explode)
    assert any("barely moving" in f for f in explode)
    assert fgd.diagnose(fake([1.0, 1.0, 1.0], [0.0, 0.0], np.linspace(1, 0.1, 20))).findings == []
    with pytest.raises(TypeError, match="FitResult"):
        fgd.diagnose(object())


def test_sweep_refuses_diagnostics():
    loss = fgd.make_loss(fgd.MLP((2, 3, 1)), "mse")
    X, Y = _data()
    with pytest.raises(ValueError, match="sweep records no diagnostics"):
        fgd.sweep(loss, fgd.sgd, X, Y, init=lambda k: fgd.MLP((2, 3, 1)).init(k), lrs=[0.1],
                  epochs=2, history=("loss", "sharpness"))


def test_a_cnn_gets_one_column_per_parametrised_layer():
    net = fgd.CNN((1, 6, 6), (fgd.Conv(2, 3), fgd.MaxPool(2), fgd.Flatten(), fgd.Dense(4), fgd.Dense(3)),
                  hidden="relu", output="softmax")
    params = net.init(jax.random.key(0), "he", dtype=jnp.float64)
    X = jax.random.normal(jax.random.key(1), (1, 6, 6, 10), jnp.float64)
    Y = jax.nn.one_hot(jnp.arange(10) % 3, 3, dtype=jnp.float64).T
    loss = fgd.make_loss(net, "cross_entropy")
    r = fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=2, progress=False, history=ALL)
    assert r.history_columns["layer_grad_norm"] == ("layer 1", "layer 4", "layer 5")
    assert r.history_columns["dead_fraction"] == ("layer 1", "layer 4")
    Z = net.forward(params, X).Z
    dead_ref = [np.mean(np.all(np.asarray(Z[i]) <= 0, axis=-1)) for i in (0, 3)]
    np.testing.assert_allclose(r.history["dead_fraction"][0], dead_ref)
