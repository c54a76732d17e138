"""Hessian eigenvalues, the stability rule eta * lambda_max > 2, and the range test."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import fgd


def _dense_eigs(loss, params, X, Y):
    flat, unravel = ravel_pytree(params)
    H = jax.hessian(lambda f: loss(unravel(f), X, Y))(flat)
    return np.linalg.eigvalsh(np.asarray(H))            # ascending


def _net(hidden="tanh", sizes=(2, 3, 2), cost="mse", seed=0):
    net = fgd.MLP(sizes, hidden=hidden)
    params = net.init(jax.random.key(seed), "normal", dtype=jnp.float64)
    X = jax.random.normal(jax.random.key(seed + 1), (sizes[0], 9), jnp.float64)
    Y = jnp.tanh(X[: sizes[-1]] * 1.5)
    return fgd.make_loss(net, cost), params, X, Y


@pytest.mark.parametrize("hidden,cost", [("tanh", "mse"), ("sigmoid", "sse")])
def test_all_eigenvalues_match_dense_hessian(hidden, cost):
    loss, params, X, Y = _net(hidden, cost=cost)
    ref = _dense_eigs(loss, params, X, Y)
    n = ref.size
    top = fgd.hessian_eigs(loss, params, X, Y, k=n, steps=n)
    np.testing.assert_allclose(top, ref[::-1], atol=1e-8, rtol=0)
    assert np.all(np.diff(top) <= 0)                     # descending


def test_top_and_bottom_k_with_fewer_steps():
    loss, params, X, Y = _net(sizes=(2, 4, 1))
    ref = _dense_eigs(loss, params, X, Y)
    top, bottom = fgd.hessian_eigs(loss, params, X, Y, k=2, which="both")
    np.testing.assert_allclose(top, ref[::-1][:2], atol=1e-8, rtol=0)
    np.testing.assert_allclose(bottom, ref[:2], atol=1e-8, rtol=0)


def test_quadratic_closed_form_on_a_pytree():
    # J = 1/2 sum_i lam_i a_i^2 + 1/2 c (b . b): eigenvalues lam and c (repeated)
    lam = jnp.array([5.0, 2.0, 0.5, -1.0])
    c = 3.0
    loss = lambda p, X, Y: 0.5 * jnp.sum(lam * p["a"] ** 2) + 0.5 * c * jnp.sum(p["b"] ** 2)
    params = {"a": jnp.ones(4), "b": jnp.ones((2, 2))}
    eigs = fgd.hessian_eigs(loss, params, None, None, k=8)
    np.testing.assert_allclose(eigs, [5, 3, 3, 3, 3, 2, 0.5, -1], atol=1e-10)
    np.testing.assert_allclose(fgd.hessian_eigs(loss, params, None, None, k=1, which="bottom"), [-1],
                               atol=1e-10)


def test_bad_arguments():
    loss, params, X, Y = _net()
    with pytest.raises(ValueError, match="k must be"):
        fgd.hessian_eigs(loss, params, X, Y, k=0)
    with pytest.raises(ValueError, match="which"):
        fgd.hessian_eigs(loss, params, X, Y, which="middle")


def _quadratic(lams):
    """1/2 sum lam_i p_i^2 on X = identity: loss(p) = 1/2 ||diag(sqrt lam) p||^2."""
    lam = jnp.asarray(lams, jnp.float64)
    loss = lambda p, X, Y: 0.5 * jnp.sum(lam * p["w"] ** 2)
    return loss, {"w": jnp.ones(lam.size, jnp.float64)}


@pytest.mark.parametrize("side,expect_finite", [(0.99, True), (1.01, False)])
def test_stability_rule_on_a_quadratic(side, expect_finite):
    loss, params = _quadratic([4.0, 1.0, 0.25])
    X = Y = jnp.zeros((1, 1))
    lam_max = float(fgd.hessian_eigs(loss, params, X, Y)[0])
    assert lam_max == pytest.approx(4.0, abs=1e-10)
    eta = side * 2 / lam_max
    r = fgd.fit(loss, params, fgd.sgd(eta), X, Y, epochs=3000, progress=False,
                history=("loss", "sharpness"))
    final = float(np.asarray(r.history["loss"])[-1])
    if expect_finite:           # |1 - eta lam| = 0.98 < 1: the error shrinks
        assert r.stop_reason == "epochs" and final < 1e-20
    else:                       # |1 - eta lam| = 1.02 > 1: it grows without bound
        assert r.stop_reason == "nonfinite" or final > 1e10
    np.testing.assert_allclose(r.history["sharpness"][:10], 4.0, atol=1e-10)


def test_lr_find_brackets_the_best_rate_on_a_quadratic():
    lam = 4.0                   # loss 1/2 lam ||p||^2: the best rate is 1/lam (one step to 0)
    loss, params = _quadratic([lam, lam, lam])
    X = Y = jnp.zeros((1, 1))
    found = fgd.lr_find(loss, params, fgd.sgd, X, Y, lr_min=1e-4, lr_max=10.0, steps=120)
    assert found.lrs.shape == found.losses.shape == (120,)
    assert found.lrs[0] == pytest.approx(1e-4) and found.lrs[-1] == pytest.approx(10.0)
    assert 0.5 / lam <= found.suggestion <= 2 / lam
    # past 2/lam the loss grows: the run stops there and records NaN
    stopped = np.flatnonzero(np.isnan(found.losses))
    assert stopped.size and found.lrs[stopped[0]] > 2 / lam
    with pytest.raises(ValueError, match="lr_min"):
        fgd.lr_find(loss, params, fgd.sgd, X, Y, lr_min=1.0, lr_max=0.1)


def test_lr_find_on_a_net_and_its_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from fgd import plots

    loss, params, X, Y = _net()
    found = fgd.lr_find(loss, params, lambda lr: fgd.adam(lr), X, Y, steps=30)
    assert np.isfinite(found.losses[0]) and found.lrs[0] <= found.suggestion <= found.lrs[-1]
    plots.lr_range(found, path=tmp_path / "lr.png")
    assert (tmp_path / "lr.png").stat().st_size > 0
