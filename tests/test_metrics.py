"""predict, evaluate and metrics in fit's history, against numpy transcriptions.

Reference values: the forward pass written out in numpy on known params, the
labels and accuracies computed from it by hand, and shorter fits whose
params give the accuracy a longer fit must have recorded at that epoch.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd

RNG = np.random.default_rng(0)


def np_forward(params, X, hidden, output):
    g = {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "identity": lambda z: z}
    A = X
    for l, layer in enumerate(params, start=1):
        Z = np.asarray(layer["W"]) @ A + np.asarray(layer["b"])
        if l < len(params):
            A = g[hidden](Z)
        elif output == "softmax":
            e = np.exp(Z - Z.max(0))
            A = e / e.sum(0)
        else:
            A = g[output](Z)
    return Z, A


def one_hot(labels, k):
    return np.eye(k)[labels].T


def classification(output="softmax", n_out=3, m=40, seed=0):
    net = fgd.MLP((4, 6, n_out), hidden="tanh", output=output)
    params = net.init(jax.random.key(seed), "normal", dtype=jnp.float64)
    X = RNG.normal(size=(4, m))
    Y = one_hot(RNG.integers(0, n_out, m), n_out) if output == "softmax" else \
        (RNG.random((n_out, m)) > 0.5).astype(float)
    return net, params, X, Y


# --- predict ------------------------------------------------------------------------
def test_predict_softmax_is_the_argmax_class_per_example():
    net, params, X, _ = classification("softmax")
    _, A = np_forward(params, X, "tanh", "softmax")
    labels = np.asarray(net.predict(params, X))
    assert labels.shape == (40,) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, A.argmax(0))


def test_predict_sigmoid_thresholds_each_output_at_one_half():
    net, params, X, _ = classification("sigmoid", n_out=2)
    _, A = np_forward(params, X, "tanh", "sigmoid")
    labels = np.asarray(net.predict(params, X))
    assert labels.shape == (2, 40)
    np.testing.assert_array_equal(labels, (A > 0.5).astype(int))


def test_predict_identity_output_returns_the_values():
    net = fgd.MLP((3, 5, 2), hidden="sigmoid", output="identity")
    params = net.init(jax.random.key(1), "uniform", dtype=jnp.float64)
    X = RNG.normal(size=(3, 7))
    np.testing.assert_allclose(net.predict(params, X), np_forward(params, X, "sigmoid", "identity")[1],
                               rtol=1e-12)


def test_cnn_predict_is_the_argmax_of_its_output():
    cnn = fgd.CNN((1, 6, 6), (fgd.Conv(3, 3), fgd.MaxPool(2), fgd.Flatten(), fgd.Dense(4)),
                  hidden="relu", output="softmax")
    params = cnn.init(jax.random.key(0), "he", dtype=jnp.float64)
    images = RNG.normal(size=(1, 6, 6, 9))
    np.testing.assert_array_equal(cnn.predict(params, images),
                                  np.asarray(cnn.apply(params, images)).argmax(0))


def test_predict_checks_the_input_shape():
    net, params, X, _ = classification()
    with pytest.raises(ValueError, match=r"X must have shape \(4, m\)"):
        net.predict(params, X[:3])


# --- evaluate -------------------------------------------------------------------------
def test_evaluate_loss_accuracy_mse_against_numpy():
    net, params, X, Y = classification("softmax")
    loss = fgd.make_loss(net, "cross_entropy")
    _, A = np_forward(params, X, "tanh", "softmax")
    scores = fgd.evaluate(loss, params, X, Y, metrics=("loss", "accuracy", "mse"))
    assert list(scores) == ["loss", "accuracy", "mse"]
    assert all(type(v) is float for v in scores.values())
    assert scores["loss"] == pytest.approx(-np.sum(Y * np.log(A)) / 40, rel=1e-12)
    assert scores["accuracy"] == pytest.approx(np.mean(A.argmax(0) == Y.argmax(0)), rel=1e-12)
    assert scores["mse"] == pytest.approx(np.mean((A - Y) ** 2), rel=1e-12)


def test_evaluate_sigmoid_accuracy_counts_every_output_entry():
    net, params, X, Y = classification("sigmoid", n_out=2)
    _, A = np_forward(params, X, "tanh", "sigmoid")
    scores = fgd.evaluate(fgd.make_loss(net, "bce"), params, X, Y, metrics=("accuracy",))
    assert scores["accuracy"] == pytest.approx(np.mean((A > 0.5) == (Y > 0.5)), rel=1e-12)


def test_evaluate_custom_metrics_by_name_and_by_dict():
    net, params, X, Y = classification("softmax")
    loss = fgd.make_loss(net, "cross_entropy")

    def top2(params, X, Y):
        A = net.apply(params, X)
        top = jnp.argsort(-A, axis=0)[:2]
        return jnp.mean(jnp.any(top == jnp.argmax(Y, 0), axis=0))

    _, A = np_forward(params, X, "tanh", "softmax")
    want = np.mean([Y.argmax(0)[j] in np.argsort(-A[:, j])[:2] for j in range(40)])
    assert fgd.evaluate(loss, params, X, Y, metrics=("accuracy", top2))["top2"] == pytest.approx(want)
    scores = fgd.evaluate(loss, params, X, Y, metrics={"acc": "accuracy", "t2": top2})
    assert scores == pytest.approx({"acc": np.mean(A.argmax(0) == Y.argmax(0)), "t2": want})


def test_evaluate_refuses_what_it_cannot_compute():
    net, params, X, Y = classification("softmax")
    loss = fgd.make_loss(net, "cross_entropy")
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        fgd.evaluate(loss, params, X, Y, metrics=("f1",))
    with pytest.raises(ValueError, match="needs a name"):
        fgd.evaluate(loss, params, X, Y, metrics=(lambda p, x, y: 0.0,))
    with pytest.raises(ValueError, match="twice"):
        fgd.evaluate(loss, params, X, Y, metrics=("loss", "loss"))
    with pytest.raises(ValueError, match="must return a scalar"):
        fgd.evaluate(loss, params, X, Y, metrics={"v": lambda p, x, y: x[0]})
    regression = fgd.MLP((4, 6, 3), hidden="tanh", output="identity")
    with pytest.raises(ValueError, match="softmax or sigmoid output.*use 'mse'"):
        fgd.evaluate(fgd.make_loss(regression, "mse"), params, X, Y, metrics=("accuracy",))
    with pytest.raises(ValueError, match="needs the network"):
        fgd.evaluate(lambda p, x, y: jnp.sum(x), params, X, Y, metrics=("mse",))
    with pytest.raises(ValueError, match=r"Y must have shape \(3, m\)"):
        fgd.evaluate(loss, params, X, Y[:2])


# --- metrics in fit's history -----------------------------------------------------------
def split_problem():
    net, params, X, Y = classification("softmax", m=60, seed=3)
    return net, fgd.make_loss(net, "cross_entropy"), params, X[:, :40], Y[:, :40], X[:, 40:], Y[:, 40:]


def np_accuracy(params, X, Y):
    return np.mean(np_forward(params, X, "tanh", "softmax")[1].argmax(0) == Y.argmax(0))


def test_full_batch_val_accuracy_history_equals_numpy_at_chosen_epochs():
    net, loss, params, X, Y, Xv, Yv = split_problem()
    opt = fgd.sgd(0.5)
    run = fgd.fit(loss, params, opt, X, Y, epochs=30, validation=(Xv, Yv),
                  history=("loss", "accuracy", "val_accuracy", "val_mse"))
    assert set(run.history) == {"loss", "val_loss", "accuracy", "val_accuracy", "val_mse"}
    for k in (0, 7, 29):
        # full batch: row k is taken at the params epoch k's update starts from,
        # the params after k updates, which fit(epochs=k) returns
        p = fgd.fit(loss, params, opt, X, Y, epochs=k).params
        assert run.history["val_accuracy"][k] == pytest.approx(np_accuracy(p, Xv, Yv), abs=1e-12)
        assert run.history["accuracy"][k] == pytest.approx(np_accuracy(p, X, Y), abs=1e-12)
        A = np_forward(p, Xv, "tanh", "softmax")[1]
        assert run.history["val_mse"][k] == pytest.approx(np.mean((A - Yv) ** 2), rel=1e-10)
    assert len(np.unique(run.history["val_accuracy"])) > 1      # it does move


def test_minibatch_accuracy_history_is_taken_at_the_params_the_epoch_ends_with():
    net, loss, params, X, Y, Xv, Yv = split_problem()
    opt, key = fgd.adam(0.05), jax.random.key(4)
    run = fgd.fit(loss, params, opt, X, Y, epochs=6, batch_size=8, key=key,
                  validation=(Xv, Yv), history=("accuracy", "val_accuracy"))
    for k in (0, 5):
        p = fgd.fit(loss, params, opt, X, Y, epochs=k + 1, batch_size=8, key=key).params
        assert run.history["val_accuracy"][k] == pytest.approx(np_accuracy(p, Xv, Yv), abs=1e-12)
        assert run.history["accuracy"][k] == pytest.approx(np_accuracy(p, X, Y), abs=1e-12)


def test_history_metrics_are_checked_before_tracing():
    net, loss, params, X, Y, Xv, Yv = split_problem()
    with pytest.raises(ValueError, match="'val_accuracy' needs validation"):
        fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=2, history=("val_accuracy",))
    with pytest.raises(ValueError, match="history 'accuracy': metric 'accuracy' needs the network"):
        fgd.fit(lambda p, x, y: loss(p, x, y), params, fgd.sgd(0.1), X, Y, epochs=2,
                history=("accuracy",))
