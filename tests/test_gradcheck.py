"""check_gradients: passes on fgd.backprop, names the layer and leaf of a
broken backprop, runs in float64 whatever the caller's precision."""
import math
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd import gradcheck

# hand vs autodiff agree to rounding (~1e-16 here); finite differences with
# h = 1e-6 to ~1e-9; a sign error or a missing g' is an O(1) relative error
TOL_HAND_AUTODIFF = 1e-12
TOL_FD = 1e-7
BROKEN = 1e-2

NET = fgd.MLP((3, 5, 2), hidden="tanh", output="sigmoid")
PARAMS = NET.init(jax.random.key(0), "normal")
_rng = np.random.default_rng(0)
X = _rng.normal(size=(3, 6))
Y = _rng.uniform(size=(2, 6))


def backprop_wrong_db_sign(net, cost, params, X, Y, l2=0.0, l1=0.0):
    """fgd.backprop with the sign of layer 2's db flipped."""
    grads = fgd.backprop(net, cost, params, X, Y, l2=l2, l1=l1)
    return [grads[0], {"W": grads[1]["W"], "b": -grads[1]["b"]}]


def backprop_missing_gprime(net, cost, params, X, Y, l2=0.0, l1=0.0):
    """The classic two-layer exercise's lines (tanh hidden, sigmoid + bce) with g[1]'(Z1) forgotten."""
    cache = net.forward(params, X)
    m = X.shape[1]
    dZ2 = (cache.A[2] - Y) / m
    dZ1 = params[1]["W"].T @ dZ2          # should be  * (1 - A1^2)
    return [{"W": dZ1 @ X.T, "b": jnp.sum(dZ1, axis=1, keepdims=True)},
            {"W": dZ2 @ cache.A[1].T, "b": jnp.sum(dZ2, axis=1, keepdims=True)}]


def test_rel_error_closed_forms():
    assert gradcheck.rel_error(np.array([3.0, 4.0]), np.zeros(2)) == 1.0     # 5 / (5 + 0)
    assert gradcheck.rel_error(np.zeros(3), np.zeros(3)) == 0.0               # both zero
    assert gradcheck.rel_error(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 0.0
    # ||(1, -1)|| / (1 + 1) = sqrt(2) / 2
    assert math.isclose(gradcheck.rel_error(np.array([1.0, 0.0]), np.array([0.0, 1.0])), math.sqrt(2) / 2)


def test_passes_on_fgd_backprop_with_a_table():
    report = fgd.check_gradients(NET, "bce", PARAMS, X, Y, l2=0.1, l1=0.05)
    assert report.ok and report.first_failure is None
    assert report.max_rel_error < TOL_FD
    assert [(r.layer, r.leaf, r.shape) for r in report.rows] == [
        ("1", "W", (5, 3)), ("1", "b", (5, 1)), ("2", "W", (2, 5)), ("2", "b", (2, 1))]
    assert all(r.errors["hand~autodiff"] < TOL_HAND_AUTODIFF for r in report.rows)
    assert report.max_rel_error == max(e for r in report.rows for e in r.errors.values())
    text = str(report)
    lines = text.splitlines()
    for name in ("layer", "leaf", "shape", "hand~autodiff", "hand~fd", "autodiff~fd"):
        assert name in lines[0]
    assert lines[2].split()[:4] == ["1", "W", "(5,", "3)"]
    assert lines[5].split()[:2] == ["2", "b"]
    assert " !" not in text and lines[-1].startswith("OK")


def test_fails_on_a_wrong_sign_in_one_layers_db():
    report = fgd.check_gradients(NET, "bce", PARAMS, X, Y, backprop=backprop_wrong_db_sign)
    assert not report.ok
    assert report.first_failure == "layer 2, leaf 'b'"
    assert report.max_rel_error > BROKEN
    failing = {(r.layer, r.leaf, c) for r, c in report.failures()}
    assert failing == {("2", "b", "hand~autodiff"), ("2", "b", "hand~fd")}   # autodiff~fd still agree
    text = str(report)
    assert "FAILED: first disagreement at layer 2, leaf 'b' (hand~autodiff:" in text
    (row_2b,) = [line for line in text.splitlines() if line.split()[:2] == ["2", "b"]]
    assert row_2b.count(" !") == 2


def test_fails_on_a_missing_activation_derivative():
    report = fgd.check_gradients(NET, "bce", PARAMS, X, Y, backprop=backprop_missing_gprime)
    assert not report.ok
    assert report.first_failure == "layer 1, leaf 'W'"
    assert {(r.layer, r.leaf) for r, _ in report.failures()} == {("1", "W"), ("1", "b")}
    assert "FAILED: first disagreement at layer 1, leaf 'W'" in str(report)


def test_large_leaves_are_sampled_for_finite_differences(monkeypatch):
    # leaves over FD_MAX_ENTRIES entries get finite differences on a sample
    monkeypatch.setattr(gradcheck, "FD_MAX_ENTRIES", 6)
    report = fgd.check_gradients(NET, "bce", PARAMS, X, Y)
    assert report.ok
    # W1 has 15, W2 10 entries: 6 sampled, plus the worst hand~autodiff entry when not among them
    assert [r.fd_entries for r in report.rows][1::2] == [5, 2]
    assert all(n in (6, 7) for n in [r.fd_entries for r in report.rows][::2])
    assert "(fd on" in str(report)


def test_float32_params_with_x64_disabled_run_in_float64():
    """In a fresh interpreter with JAX_ENABLE_X64 unset (this session enables
    x64): the default init dtype is float32, and check_gradients still
    compares in float64 (hand~autodiff to rounding) and leaves x64 disabled."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        import fgd
        assert not jax.config.jax_enable_x64
        net = fgd.MLP((3, 5, 2), hidden="tanh", output="sigmoid")
        params = net.init(jax.random.key(0), "normal")
        assert params[0]["W"].dtype == jnp.float32, params[0]["W"].dtype
        rng = np.random.default_rng(0)
        X = rng.normal(size=(3, 6)).astype(np.float32)
        Y = rng.uniform(size=(2, 6)).astype(np.float32)
        report = fgd.check_gradients(net, "bce", params, X, Y, l2=0.1)
        assert not jax.config.jax_enable_x64
        # the loss-first form too, on a float32 dict of params
        p = {"W": params[0]["W"], "b": params[0]["b"][:, 0]}
        lossf = lambda p, X: jnp.sum(jnp.tanh(p["W"] @ X + p["b"][:, None]) ** 2)
        def gradf(p, X):
            T = np.tanh(np.asarray(p["W"]) @ np.asarray(X) + np.asarray(p["b"])[:, None])
            dZ = 2 * T * (1 - T * T)
            return {"W": dZ @ np.asarray(X).T, "b": dZ.sum(1)}
        r2 = fgd.check_grad(lossf, p, X, grad=gradf)
        assert r2.ok and r2.max_rel_error < 1e-10, str(r2)
        assert not jax.config.jax_enable_x64
        assert jnp.zeros(()).dtype == jnp.float32
        print("OK" if report.ok else "NOT OK", max(r.errors["hand~autodiff"] for r in report.rows))
        print(report)
    """)
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    env.setdefault("JAX_PLATFORMS", "cpu")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    first = out.stdout.splitlines()[0].split()
    assert first[0] == "OK", out.stdout
    assert float(first[1]) < TOL_HAND_AUTODIFF   # float32 would give ~1e-7


BAD = [
    # (X, Y, error, match)
    (np.where(np.arange(18).reshape(3, 6) == 4, np.nan, X), Y, ValueError, r"X must be finite; got 1 NaN/Inf value\(s\), the first at index \(0, 4\)"),
    (X, np.where(np.arange(12).reshape(2, 6) == 7, np.inf, Y), ValueError, r"Y must be finite; got 1 NaN/Inf .*index \(1, 1\)"),
    (X[:2], Y, ValueError, r"X must have shape \(3, m\) for sizes \(3, 5, 2\).*got shape \(2, 6\)"),
    (X, Y[:1], ValueError, r"Y must have shape \(2, m\).*got shape \(1, 6\)"),
    (X, Y[:, :5], ValueError, r"X and Y must have the same number of examples.*got 6 in X and 5 in Y"),
    (X, Y + 1.0, ValueError, r"Y must hold targets in \[0, 1\] for the bce cost"),
    (X.astype(complex), Y, TypeError, r"X must be an array of real numbers; got dtype complex128"),
    (X.astype(str), Y, TypeError, r"X must be an array of real numbers; got dtype <U"),
]


@pytest.mark.parametrize("X_bad,Y_bad,error,match", BAD)
def test_bad_data_is_rejected(X_bad, Y_bad, error, match):
    with pytest.raises(error, match=match):
        fgd.check_gradients(NET, "bce", PARAMS, X_bad, Y_bad)


def test_bad_arguments_are_rejected():
    with pytest.raises(TypeError, match=r"net must be a model such as fgd.MLP or fgd.CNN; got NoneType"):
        fgd.check_gradients(None, "bce", PARAMS, X, Y)
    with pytest.raises(TypeError, match=r"use fgd.check_grad\(loss, params"):
        fgd.check_gradients(fgd.make_loss(NET, "bce"), "bce", PARAMS, X, Y)
    with pytest.raises(TypeError, match=r"seed must be an integer"):
        fgd.check_gradients(NET, "bce", PARAMS, X, Y, seed="0")
    with pytest.raises(ValueError, match=r"cost must be one of .*got 'hinge'"):
        fgd.check_gradients(NET, "hinge", PARAMS, X, Y)
    with pytest.raises(ValueError, match=r"l2 must be a finite number >= 0; got -0.1"):
        fgd.check_gradients(NET, "bce", PARAMS, X, Y, l2=-0.1)
    with pytest.raises(ValueError, match=r"params\[1\]\['W'\] must have shape \(2, 5\); got an array of shape \(5, 2\)"):
        fgd.check_gradients(NET, "bce", [PARAMS[0], {"W": PARAMS[1]["W"].T, "b": PARAMS[1]["b"]}], X, Y)
    with pytest.raises(ValueError, match=r"params must have the structure"):
        fgd.check_gradients(NET, "bce", PARAMS[:1], X, Y)
    with pytest.raises(TypeError, match=r"backprop must be a function like fgd.backprop; got str"):
        fgd.check_gradients(NET, "bce", PARAMS, X, Y, backprop="fgd.backprop")


def test_a_backprop_returning_the_wrong_tree_is_rejected():
    with pytest.raises(ValueError, match=r"backprop must return a tree like params; they first differ at "
                                         r"params: params has a list of length 2, backprop returned a list of length 1"):
        fgd.check_gradients(NET, "bce", PARAMS, X, Y, backprop=lambda *a, **k: [fgd.backprop(*a, **k)[0]])
