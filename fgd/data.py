"""Datasets, scaling with its inverse, and train/test splits.

Every helper keeps fgd's layout, one column per example: ``X`` is
``(n_x, m)``, ``Y`` is ``(n_y, m)``, class labels are one-hot columns and
images are ``(C, H, W, m)``. Datasets come back as NamedTuples of JAX arrays
in JAX's default float dtype (float64 when x64 is enabled) unless given
``dtype=``; random ones are generated from an explicit ``key``.

Scaling follows MATLAB's ``premnmx``/``postmnmx``/``tramnmx`` (min-max to
[-1, 1], per row) and the z-score, each a fitted NamedTuple plus pure
``*_scale``/``*_unscale`` functions that also work under ``jax.jit``.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fgd._types import Array, PRNGKey

# --- the MATLAB BP example's data, the one copy ---------------------------------
TRAFFIC_INPUT_NAMES = ("population (10k)", "vehicles (10k)", "road area (10k km2)")
TRAFFIC_OUTPUT_NAMES = ("passengers (10k)", "freight (10k t)")
_TRAFFIC_INPUTS = (
    (20.55, 22.44, 25.37, 27.13, 29.45, 30.10, 30.96, 34.06, 36.42, 38.09,
     39.13, 39.99, 41.93, 44.59, 47.30, 52.89, 55.73, 56.76, 59.17, 60.63),
    (0.6, 0.75, 0.85, 0.9, 1.05, 1.35, 1.45, 1.6, 1.7, 1.85,
     2.15, 2.2, 2.25, 2.35, 2.5, 2.6, 2.7, 2.85, 2.95, 3.1),
    (0.09, 0.11, 0.11, 0.14, 0.20, 0.23, 0.23, 0.32, 0.32, 0.34,
     0.36, 0.36, 0.38, 0.49, 0.56, 0.59, 0.59, 0.67, 0.69, 0.79),
)
_TRAFFIC_TARGETS = (
    (5126, 6217, 7730, 9145, 10460, 11387, 12353, 15750, 18304, 19836,
     21024, 19490, 20433, 22598, 25107, 33442, 36836, 40548, 42927, 43462),
    (1237, 1379, 1385, 1399, 1663, 1714, 1834, 4322, 8132, 8936,
     11099, 11203, 10524, 11115, 13320, 16762, 18673, 20724, 20803, 21804),
)
_TRAFFIC_FORECAST = ((73.39, 75.55), (3.9635, 4.0975), (0.9880, 1.0268))


class Dataset(NamedTuple):
    """Inputs ``X`` (n_x, m) and targets ``Y`` (n_y, m)."""

    X: Array
    Y: Array


class Traffic(NamedTuple):
    """The road-traffic data of the MATLAB BP example (a 3-8-2 net forecasting traffic).

    Attributes:
      X: (3, 20) population, vehicles, road area (rows as in
        ``TRAFFIC_INPUT_NAMES``).
      Y: (2, 20) passengers, freight (``TRAFFIC_OUTPUT_NAMES``).
      index: (20,) int32 sample index 0..19; the example gives no years.
      X_forecast: (3, 2) the two further samples' inputs to forecast.
      index_forecast: (2,) int32 their indices, 20 and 21.
    """

    X: Array
    Y: Array
    index: Array  # type: ignore[assignment]  # a field, shadowing tuple.index
    X_forecast: Array
    index_forecast: Array


class Digits(NamedTuple):
    """scikit-learn's 8x8 handwritten digits.

    Attributes:
      X: (64, 1797) pixels scaled to [0, 1] (pixel / 16), row ``8*r + c``.
      Y: (10, 1797) one-hot labels.
      labels: (1797,) int32 digit 0..9.
      images: (1, 8, 8, 1797) the same pixels as images; ``images.reshape(64, -1)``
        gives ``X`` back.
    """

    X: Array
    Y: Array
    labels: Array
    images: Array


class Split(NamedTuple):
    """A train/test split along the last (example) axis."""

    X_train: Array
    Y_train: Array
    X_test: Array
    Y_test: Array


def _float(a, dtype) -> Array:
    return jnp.asarray(a, dtype=dtype if dtype is not None else float)


def _matrix(X, name: str):
    if np.ndim(X) != 2:
        raise ValueError(f"{name} must be a 2-D array (features, examples) with one "
                         f"column per example; got shape {np.shape(X)}")
    return jnp.asarray(X)


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


# --- datasets ----------------------------------------------------------------
def traffic(dtype=None) -> Traffic:
    """The MATLAB BP example's 20 samples (3 inputs, 2 targets) and the 2 inputs to forecast."""
    return Traffic(
        X=_float(_TRAFFIC_INPUTS, dtype),
        Y=_float(_TRAFFIC_TARGETS, dtype),
        index=jnp.arange(20, dtype=jnp.int32),
        X_forecast=_float(_TRAFFIC_FORECAST, dtype),
        index_forecast=jnp.arange(20, 22, dtype=jnp.int32),
    )


def xor(dtype=None) -> Dataset:
    """The four XOR points: X (2, 4) in {0, 1}, Y (1, 4) = x1 XOR x2."""
    return Dataset(X=_float([[0, 0, 1, 1], [0, 1, 0, 1]], dtype),
                   Y=_float([[0, 1, 1, 0]], dtype))


def flower(key: PRNGKey, m: int = 400, *, a: float = 4.0, noise: float = 0.2,
           dtype=None) -> Dataset:
    """The planar "flower" of the classic two-layer-network exercise.

    For class j in {0, 1} and N = m/2 points each::

        t = linspace(3.12 j, 3.12 (j+1), N) + noise * N(0, 1)     # angle
        r = a sin(4 t) + noise * N(0, 1)                           # radius
        x = (r sin t, r cos t)

    Args:
      key: a jax.random key.
      m: number of examples, even and >= 2.
      a: petal length.
      noise: standard deviation of the angle and radius noise, >= 0.

    Returns:
      ``Dataset`` with X (2, m) and Y (1, m) in {0, 1}; class 0 first.
    """
    if not isinstance(m, (int, np.integer)) or m < 2 or m % 2:
        raise ValueError(f"m must be an even int >= 2; got {m!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}")
    n = m // 2
    k_t, k_r = jax.random.split(key)
    t = jnp.concatenate([jnp.linspace(3.12 * j, 3.12 * (j + 1), n) for j in range(2)])
    t = t + noise * jax.random.normal(k_t, (m,))
    r = a * jnp.sin(4 * t) + noise * jax.random.normal(k_r, (m,))
    X = jnp.stack([r * jnp.sin(t), r * jnp.cos(t)])
    Y = jnp.repeat(jnp.arange(2), n)[None, :]
    return Dataset(X=_float(X, dtype), Y=_float(Y, dtype))


def moons(key: PRNGKey, m: int = 200, noise: float = 0.1, dtype=None) -> Dataset:
    """Two interleaving half circles (as scikit-learn's ``make_moons``, unshuffled).

    Class 0: ``(cos s, sin s)``; class 1: ``(1 - cos s, 0.5 - sin s)``, s evenly
    spaced on [0, pi], plus Gaussian noise of standard deviation ``noise``.

    Returns:
      ``Dataset`` with X (2, m) and Y (1, m) in {0, 1}; the m//2 points of
      class 0 first.
    """
    if not isinstance(m, (int, np.integer)) or m < 2:
        raise ValueError(f"m must be an int >= 2; got {m!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}")
    n0, n1 = m // 2, m - m // 2
    s0, s1 = jnp.linspace(0, jnp.pi, n0), jnp.linspace(0, jnp.pi, n1)
    X = jnp.concatenate([jnp.stack([jnp.cos(s0), jnp.sin(s0)]),
                         jnp.stack([1 - jnp.cos(s1), 0.5 - jnp.sin(s1)])], axis=1)
    X = X + noise * jax.random.normal(key, X.shape)
    Y = jnp.concatenate([jnp.zeros(n0), jnp.ones(n1)])[None, :]
    return Dataset(X=_float(X, dtype), Y=_float(Y, dtype))


def digits(dtype=None) -> Digits:
    """The 1,797 8x8 digits bundled with scikit-learn (no download).

    Raises:
      ImportError: when scikit-learn is absent (``pip install "fgd[data]"``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError('fgd.data.digits needs scikit-learn: pip install "fgd[data]"') from err
    raw = load_digits()
    X = np.asarray(raw.data, dtype=np.float64).T / 16.0       # (64, m)
    labels = np.asarray(raw.target, dtype=np.int32)            # (m,)
    X = _float(X, dtype)
    return Digits(X=X, Y=one_hot(labels, 10, dtype=dtype), labels=jnp.asarray(labels),
                  images=X.reshape(1, 8, 8, -1))


def one_hot(labels, n_classes: Optional[int] = None, dtype=None) -> Array:
    """Integer labels (m,) to one-hot columns (n_classes, m).

    Args:
      labels: 1-D integers in [0, n_classes).
      n_classes: number of rows; default ``max(labels) + 1`` (needs concrete labels).
    """
    if np.ndim(labels) != 1:
        raise ValueError(f"labels must be 1-D (m,); got shape {np.shape(labels)}")
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
    if n_classes is None:
        n_classes = int(labels.max()) + 1 if labels.size else 0
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1; got {n_classes}")
    if _concrete(labels) and labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}); got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    return jax.nn.one_hot(labels, n_classes, dtype=dtype if dtype is not None else float).T


# --- splits ------------------------------------------------------------------
def _class_labels(Y) -> np.ndarray:
    Y = np.asarray(Y)
    if Y.ndim == 1:
        return Y.astype(int)
    if Y.shape[0] == 1:
        return np.rint(Y[0]).astype(int)
    return Y.argmax(axis=0)


def split_indices(key: PRNGKey, m: int, test_fraction: float = 0.25,
                  labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Random disjoint (train, test) example indices covering ``range(m)``.

    Args:
      key: a jax.random key.
      m: number of examples, >= 2.
      test_fraction: in (0, 1); the test set gets ``round(m * test_fraction)``
        examples, at least 1 and at most m - 1.
      labels: optional (m,) class labels to stratify by: each class gives
        ``round(count * test_fraction)`` examples to the test set.

    Returns:
      ``(train_idx, test_idx)``, numpy int arrays in random order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    if m < 2:
        raise ValueError(f"need at least 2 examples to split; got m={m}")
    perm = np.asarray(jax.random.permutation(key, m))
    if labels is None:
        n_test = min(max(int(round(m * test_fraction)), 1), m - 1)
        return perm[n_test:], perm[:n_test]
    labels = np.asarray(labels)
    if labels.shape != (m,):
        raise ValueError(f"labels must have shape ({m},); got {labels.shape}")
    is_test = np.zeros(m, dtype=bool)
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        is_test[members[:int(round(len(members) * test_fraction))]] = True
    if is_test.all() or not is_test.any():
        raise ValueError(f"test_fraction={test_fraction} with stratification leaves an "
                         "empty train or test set")
    return perm[~is_test[perm]], perm[is_test[perm]]


def train_test_split(key: PRNGKey, X, Y, test_fraction: float = 0.25,
                     stratify: bool = False) -> Split:
    """Split examples (the last axis) at random into train and test sets.

    Works for columns ``(n_x, m)`` and images ``(C, H, W, m)`` alike.

    Args:
      key: a jax.random key.
      X: inputs, examples on the last axis.
      Y: targets (n_y, m): one-hot, a 0/1 row, or (m,) labels when stratifying.
      test_fraction: share of examples held out, in (0, 1).
      stratify: keep each class's share in both sets (classes from ``Y``).

    Returns:
      ``Split(X_train, Y_train, X_test, Y_test)``; note the order differs from
      scikit-learn's, so prefer the field names.
    """
    if np.ndim(X) < 1 or np.ndim(Y) < 1:
        raise ValueError(f"X and Y need an example axis; got shapes {np.shape(X)}, {np.shape(Y)}")
    m = np.shape(X)[-1]
    if np.shape(Y)[-1] != m:
        raise ValueError(f"X and Y must have the same number of examples (last axis); "
                         f"got X {np.shape(X)} and Y {np.shape(Y)}")
    labels = _class_labels(Y) if stratify else None
    train, test = split_indices(key, m, test_fraction, labels)
    take = lambda A, idx: jnp.take(jnp.asarray(A), jnp.asarray(idx), axis=-1)
    return Split(take(X, train), take(Y, train), take(X, test), take(Y, test))


# --- min-max scaling to [-1, 1] (MATLAB premnmx / postmnmx / tramnmx) --------
class MinMaxScaler(NamedTuple):
    """Per-row range of the data a scaler was fitted on.

    Attributes:
      min: (n, 1) row minima.
      max: (n, 1) row maxima.
    """

    min: Array
    max: Array


def minmax_fit(X) -> MinMaxScaler:
    """Fit per-row min and max of X (n, m)."""
    X = _matrix(X, "X")
    return MinMaxScaler(min=X.min(axis=1, keepdims=True), max=X.max(axis=1, keepdims=True))


def _check_rows(scaler, X, name: str):
    X = _matrix(X, name)
    n = scaler[0].shape[0]
    if X.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (the scaler was fitted on {n}); "
                         f"got shape {X.shape}")
    return X


def minmax_scale(scaler: MinMaxScaler, X, *, warn: bool = True, _stacklevel: int = 2) -> Array:
    """Map each row of X linearly so the fitted [min, max] goes to [-1, 1].

    ``Xs = 2 (X - min) / (max - min) - 1``. A constant row (max == min) maps
    to 0 instead of dividing by zero. Values outside the fitted range land
    outside [-1, 1]; for concrete X this emits a ``UserWarning`` saying how
    far (a network trained on [-1, 1] then extrapolates).

    Args:
      scaler: from ``minmax_fit``.
      X: (n, k) with the scaler's n rows.
      warn: set False to silence the out-of-range warning.
    """
    X = _check_rows(scaler, X, "X")
    span = scaler.max - scaler.min
    safe = jnp.where(span > 0, span, 1)
    Xs = jnp.where(span > 0, 2 * (X - scaler.min) / safe - 1, 0)
    if warn and _concrete(X) and _concrete(span):
        # constant rows map to 0 by design, so only rows with a range count
        outside = np.asarray(((X < scaler.min) | (X > scaler.max)) & (span > 0))
        if outside.any():
            Xs_np, rows = np.asarray(Xs), np.flatnonzero(outside.any(axis=1))
            parts = [f"row {r}: scaled values in [{Xs_np[r].min():.3g}, {Xs_np[r].max():.3g}]"
                     for r in rows]
            beyond = float(np.abs(Xs_np[outside]).max()) - 1
            warnings.warn(f"minmax_scale: X falls outside the fitted range, up to {beyond:.3g} "
                          f"beyond [-1, 1] ({'; '.join(parts)})", UserWarning,
                          stacklevel=_stacklevel)
    return Xs


def minmax_unscale(scaler: MinMaxScaler, Xs) -> Array:
    """Inverse of ``minmax_scale``: ``X = (Xs + 1) (max - min) / 2 + min``.

    A constant row comes back as its constant.
    """
    Xs = _check_rows(scaler, Xs, "Xs")
    return (Xs + 1) * (scaler.max - scaler.min) / 2 + scaler.min


def premnmx(X) -> tuple[Array, MinMaxScaler]:
    """MATLAB's ``premnmx``: fit on X (n, m) and scale it; returns ``(Xs, scaler)``."""
    scaler = minmax_fit(X)
    return minmax_scale(scaler, X), scaler


def postmnmx(Xs, scaler: MinMaxScaler) -> Array:
    """MATLAB's ``postmnmx`` (data first, as in MATLAB): ``minmax_unscale(scaler, Xs)``."""
    return minmax_unscale(scaler, Xs)


def tramnmx(X, scaler: MinMaxScaler) -> Array:
    """MATLAB's ``tramnmx`` (data first, as in MATLAB): scale new inputs with a
    fitted scaler, warning when they fall outside its range."""
    return minmax_scale(scaler, X, _stacklevel=3)


# --- standardisation (z-score) -------------------------------------------------
class StandardScaler(NamedTuple):
    """Per-row mean and standard deviation.

    Attributes:
      mean: (n, 1) row means.
      std: (n, 1) row standard deviations (0 for a constant row).
    """

    mean: Array
    std: Array


def standard_fit(X, ddof: int = 0) -> StandardScaler:
    """Fit per-row mean and standard deviation of X (n, m) (``ddof=1``: sample std)."""
    X = _matrix(X, "X")
    if ddof not in (0, 1):
        raise ValueError(f"ddof must be 0 or 1; got {ddof!r}")
    if X.shape[1] <= ddof:
        raise ValueError(f"X needs more than {ddof} columns for ddof={ddof}; got shape {X.shape}")
    return StandardScaler(mean=X.mean(axis=1, keepdims=True),
                          std=X.std(axis=1, ddof=ddof, keepdims=True))


def standard_scale(scaler: StandardScaler, X) -> Array:
    """``Z = (X - mean) / std``; a constant row (std == 0) maps to 0."""
    X = _check_rows(scaler, X, "X")
    return (X - scaler.mean) / jnp.where(scaler.std > 0, scaler.std, 1)


def standard_unscale(scaler: StandardScaler, Z) -> Array:
    """Inverse of ``standard_scale``: ``X = Z std + mean``."""
    Z = _check_rows(scaler, Z, "Z")
    return Z * scaler.std + scaler.mean
