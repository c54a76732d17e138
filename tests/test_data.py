"""Tests for fgd.data: the MATLAB BP example's numbers, dataset shapes, splits and scalers."""
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgd import data

EXACT = 1e-12          # float64 round trips
SEED_TOL = 1e-12       # numbers copied from the MATLAB BP example


# --- the MATLAB BP example's traffic data -------------------------------------------------
def test_traffic_matches_seed_verbatim():
    t = data.traffic()
    assert t.X.shape == (3, 20) and t.Y.shape == (2, 20) and t.X_forecast.shape == (3, 2)
    assert t.X.dtype == jnp.float64   # x64 on in the test session
    # the MATLAB BP example: first, tenth and last entries of each row
    expected = {(0, 0): 20.55, (0, 9): 38.09, (0, 19): 60.63,
                (1, 0): 0.6, (1, 10): 2.15, (1, 19): 3.1,
                (2, 0): 0.09, (2, 13): 0.49, (2, 19): 0.79}
    for (i, j), v in expected.items():
        assert abs(float(t.X[i, j]) - v) < SEED_TOL, (i, j)
    np.testing.assert_array_equal(t.Y[0, [0, 11, 19]], [5126, 19490, 43462])
    np.testing.assert_array_equal(t.Y[1, [0, 7, 19]], [1237, 4322, 21804])
    np.testing.assert_allclose(t.X_forecast, [[73.39, 75.55], [3.9635, 4.0975],
                                              [0.9880, 1.0268]], rtol=0, atol=SEED_TOL)
    np.testing.assert_array_equal(t.index, np.arange(20))
    np.testing.assert_array_equal(t.index_forecast, [20, 21])


def test_traffic_float32():
    t = data.traffic(dtype=jnp.float32)
    assert t.X.dtype == t.Y.dtype == t.X_forecast.dtype == jnp.float32


def test_traffic_scaled_to_unit_range_and_forecast_warns():
    t = data.traffic()
    Xs, scaler = data.premnmx(t.X)
    np.testing.assert_allclose(Xs.min(axis=1), -1.0, atol=EXACT)
    np.testing.assert_allclose(Xs.max(axis=1), 1.0, atol=EXACT)
    Ys, _ = data.premnmx(t.Y)
    np.testing.assert_allclose([Ys.min(), Ys.max()], [-1.0, 1.0], atol=EXACT)
    with pytest.warns(UserWarning, match="outside the fitted range") as record:
        F = data.tramnmx(t.X_forecast, scaler)
    assert "0.798" in str(record[0].message)   # how far: vehicles 4.0975 -> 1.798
    # by hand from the example's numbers
    hand = [[(73.39 - 20.55) / (60.63 - 20.55) * 2 - 1, (75.55 - 20.55) / (60.63 - 20.55) * 2 - 1],
            [(3.9635 - 0.6) / (3.1 - 0.6) * 2 - 1, (4.0975 - 0.6) / (3.1 - 0.6) * 2 - 1],
            [(0.9880 - 0.09) / (0.79 - 0.09) * 2 - 1, (1.0268 - 0.09) / (0.79 - 0.09) * 2 - 1]]
    np.testing.assert_allclose(F, hand, atol=EXACT)
    assert 1.55 < float(F.min()) and float(F.max()) < 1.8
    np.testing.assert_allclose(F[0, 0], 1.6367, atol=1e-4)


# --- min-max and z-score ------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_minmax_round_trip(seed):
    X = jax.random.normal(jax.random.key(seed), (4, 30)) * 10 + 3
    Xs, scaler = data.premnmx(X)
    assert scaler.min.shape == scaler.max.shape == (4, 1)
    np.testing.assert_allclose(data.postmnmx(Xs, scaler), X, atol=EXACT)
    np.testing.assert_allclose(data.minmax_unscale(scaler, data.minmax_scale(scaler, X)), X,
                               atol=EXACT)


def test_minmax_inside_range_does_not_warn_and_jits():
    X = jnp.array([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])
    scaler = data.minmax_fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Xs = data.minmax_scale(scaler, X)
        # a constant row maps to 0, never NaN; a new value on it does not warn either
        np.testing.assert_array_equal(Xs, [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
        data.minmax_scale(scaler, jnp.array([[1.0], [7.0]]))
    np.testing.assert_array_equal(data.minmax_unscale(scaler, Xs), X)
    jitted = jax.jit(data.minmax_scale)(scaler, X)   # no warning check on tracers
    np.testing.assert_array_equal(jitted, Xs)


def test_standard_round_trip_and_constant_row():
    X = jnp.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0]])
    scaler = data.standard_fit(X)
    Z = data.standard_scale(scaler, X)
    np.testing.assert_allclose(Z[0], (X[0] - 2.5) / np.sqrt(1.25), atol=EXACT)
    np.testing.assert_array_equal(Z[1], 0.0)
    np.testing.assert_allclose(data.standard_unscale(scaler, Z), X, atol=EXACT)
    np.testing.assert_allclose(data.standard_fit(X, ddof=1).std[0, 0], np.std([1, 2, 3, 4], ddof=1))


# --- small datasets -----------------------------------------------------------
def test_xor():
    X, Y = data.xor()
    assert X.shape == (2, 4) and Y.shape == (1, 4)
    np.testing.assert_array_equal(Y[0], np.logical_xor(X[0], X[1]))


@pytest.mark.parametrize("make,m", [(data.flower, 400), (data.flower, 10), (data.moons, 200),
                                    (data.moons, 7)])
def test_random_datasets_shapes_and_keys(make, m):
    X, Y = make(jax.random.key(0), m)
    assert X.shape == (2, m) and Y.shape == (1, m) and X.dtype == jnp.float64
    assert set(np.unique(Y)) == {0.0, 1.0} and Y.sum() == m - m // 2
    np.testing.assert_array_equal(X, make(jax.random.key(0), m).X)
    assert not np.allclose(X, make(jax.random.key(1), m).X)


def test_flower_is_the_petal_curve_without_noise():
    X, Y = data.flower(jax.random.key(0), 8, noise=0.0)
    t = np.linspace(0, 3.12, 4)
    r = 4 * np.sin(4 * t)
    np.testing.assert_allclose(X[:, :4], [r * np.sin(t), r * np.cos(t)], atol=EXACT)


def test_moons_without_noise_on_circles():
    X, Y = data.moons(jax.random.key(0), 20, noise=0.0)
    np.testing.assert_allclose(X[0, :10] ** 2 + X[1, :10] ** 2, 1.0, atol=EXACT)
    np.testing.assert_allclose((X[0, 10:] - 1) ** 2 + (X[1, 10:] - 0.5) ** 2, 1.0, atol=EXACT)


def test_one_hot():
    Y = data.one_hot(jnp.array([2, 0, 1, 2]), 3)
    np.testing.assert_array_equal(Y, [[0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]])
    assert data.one_hot(jnp.array([0, 4])).shape == (5, 2)


def test_digits():
    pytest.importorskip("sklearn")
    d = data.digits()
    assert d.X.shape == (64, 1797) and d.Y.shape == (10, 1797) and d.labels.shape == (1797,)
    assert d.images.shape == (1, 8, 8, 1797)
    assert float(d.X.min()) == 0.0 and float(d.X.max()) == 1.0
    np.testing.assert_array_equal(d.Y.sum(axis=0), 1.0)
    np.testing.assert_array_equal(d.Y.argmax(axis=0), d.labels)
    np.testing.assert_array_equal(d.images.reshape(64, -1), d.X)
    assert np.bincount(np.asarray(d.labels)).min() >= 170


# --- splits -------------------------------------------------------------------
def test_split_columns_sizes_disjoint_and_deterministic():
    m = 20
    X = jnp.arange(2 * m, dtype=float).reshape(2, m)
    Y = jnp.arange(m, dtype=float)[None, :]
    s = data.train_test_split(jax.random.key(0), X, Y, test_fraction=0.25)
    assert s.X_train.shape == (2, 15) and s.X_test.shape == (2, 5)
    train, test = set(np.asarray(s.Y_train[0])), set(np.asarray(s.Y_test[0]))
    assert not train & test and train | test == set(range(m))
    np.testing.assert_array_equal(s.X_test[0], s.Y_test[0])   # columns stay paired
    again = data.train_test_split(jax.random.key(0), X, Y, test_fraction=0.25)
    np.testing.assert_array_equal(again.Y_test, s.Y_test)
    other = data.train_test_split(jax.random.key(1), X, Y, test_fraction=0.25)
    assert not np.array_equal(other.Y_test, s.Y_test)


def test_split_images_stratified():
    m = 40
    labels = jnp.arange(m) % 4
    images = jnp.broadcast_to(jnp.arange(m, dtype=float), (1, 3, 3, m))
    Y = data.one_hot(labels, 4)
    s = data.train_test_split(jax.random.key(0), images, Y, test_fraction=0.5, stratify=True)
    assert s.X_train.shape == s.X_test.shape == (1, 3, 3, 20)
    np.testing.assert_array_equal(s.Y_test.sum(axis=1), 5.0)   # 5 of each class
    ids = np.concatenate([s.X_train[0, 0, 0], s.X_test[0, 0, 0]])
    np.testing.assert_array_equal(np.sort(ids), np.arange(m))


# --- errors at the boundary ------------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda: data.minmax_fit(jnp.ones(5)), "X must be a 2-D array"),
    (lambda: data.minmax_scale(data.minmax_fit(jnp.ones((2, 3))), jnp.ones((3, 3))),
     "X must have 2 rows"),
    (lambda: data.train_test_split(jax.random.key(0), jnp.ones((2, 4)), jnp.ones((1, 4)), 1.0),
     r"test_fraction must be in \(0, 1\)"),
    (lambda: data.train_test_split(jax.random.key(0), jnp.ones((2, 4)), jnp.ones((1, 5))),
     "same number of examples"),
    (lambda: data.flower(jax.random.key(0), 7), "m must be an even int"),
    (lambda: data.one_hot(jnp.array([0, 3]), 3), r"labels must lie in \[0, 3\)"),
    (lambda: data.one_hot(jnp.ones((2, 2), int), 3), "labels must be 1-D"),
])
def test_errors_name_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
