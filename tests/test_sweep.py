"""fgd.sweep against the sequential fits it stands for.

Reference: run (i, r) of a sweep must equal `fgd.fit(loss, init(keys[i]),
make_opt(lrs[r]), ...)`, history, params, epochs and stop reason; float64,
tolerance 1e-10 (the batched arithmetic may sum in another order).
"""
import importlib
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd

F64_TOL = 1e-10
NET = fgd.MLP((3, 8, 2), hidden="logsig", output="purelin")
LOSS = fgd.make_loss(NET, "sse")
KEYS = jax.random.split(jax.random.key(3), 3)


def init(key):
    return NET.init(key, "uniform", dtype=jnp.float64)


def run_of(tree, i, r):
    return jax.tree.map(lambda a: a[i, r], tree)


def assert_run_equals_fit(runs, i, r, fit):
    n = int(runs.epochs[i, r])
    assert n == fit.epochs and runs.stop_reason[i, r] == fit.stop_reason
    assert int(runs.updates[i, r]) == fit.updates
    np.testing.assert_allclose(runs.history["loss"][i, r, :n], fit.history["loss"], rtol=F64_TOL)
    assert np.all(np.isnan(runs.history["loss"][i, r, n:]))
    for a, b in zip(jax.tree.leaves(run_of(runs.params, i, r)), jax.tree.leaves(fit.params)):
        np.testing.assert_allclose(a, b, rtol=F64_TOL, atol=F64_TOL)


@pytest.mark.parametrize("batch_size", [None, 5])
def test_sweep_equals_sequential_fits(traffic, batch_size):
    X, Y = traffic
    lrs = [0.02, 0.05]
    runs = fgd.sweep(LOSS, fgd.sgd, X, Y, init=init, keys=KEYS, lrs=lrs, epochs=60,
                     batch_size=batch_size, key=jax.random.key(5))
    assert runs.history["loss"].shape == (3, 2, 60)
    assert runs.params[0]["W"].shape == (3, 2, 8, 3)
    for r, lr in enumerate(lrs):
        opt = fgd.sgd(lr)                       # one optimizer per rate: one compile each
        for i, key in enumerate(KEYS):
            fit = fgd.fit(LOSS, init(key), opt, X, Y, epochs=60, batch_size=batch_size,
                          key=jax.random.key(5))
            assert_run_equals_fit(runs, i, r, fit)


def test_softmax_cross_entropy_sweep_equals_fits():
    """A softmax + cross_entropy net (its log-softmax holds a stop_gradient,
    which the batch-last layout passes through as an elementwise op)."""
    net = fgd.MLP((3, 8, 3), hidden="tanh", output="softmax")
    loss = fgd.make_loss(net, "cross_entropy")
    X = np.linspace(-1, 1, 60).reshape(3, 20)
    Y = np.eye(3)[:, np.arange(20) % 3]
    starts = lambda k: net.init(k, dtype=jnp.float64)
    runs = fgd.sweep(loss, fgd.sgd, X, Y, init=starts, keys=KEYS, lrs=[0.5], epochs=40)
    for i, key in enumerate(KEYS):
        assert_run_equals_fit(runs, i, 0, fgd.fit(loss, starts(key), fgd.sgd(0.5), X, Y, epochs=40))


def test_each_run_stops_on_its_own(traffic):
    X, Y = traffic
    lrs = [0.05, 4.0]                           # 4.0 diverges: a non-finite stop
    goal = 0.25
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        runs = fgd.sweep(LOSS, fgd.sgd, X, Y, init=init, keys=KEYS, lrs=lrs, epochs=400, goal=goal)
    reasons = set(runs.stop_reason.ravel())
    assert "nonfinite" in reasons and ("goal" in reasons or "epochs" in reasons)
    for r, lr in enumerate(lrs):
        opt = fgd.sgd(lr)
        for i, key in enumerate(KEYS):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fit = fgd.fit(LOSS, init(key), opt, X, Y, epochs=400, goal=goal)
            n = int(runs.epochs[i, r])
            assert n == fit.epochs and runs.stop_reason[i, r] == fit.stop_reason
            if fit.stop_reason == "nonfinite":
                assert runs.nonfinite_epoch[i, r] == fit.nonfinite_epoch
                # the same last finite params as fit's replay (rounding may differ
                # only by the batched sums, amplified by the divergence)
                np.testing.assert_allclose(runs.history["loss"][i, r, : n - 1],
                                           fit.history["loss"][: n - 1], rtol=1e-6)
            else:
                assert_run_equals_fit(runs, i, r, fit)
                np.testing.assert_allclose(runs.final_loss[i, r], fit.history["loss"][-1], rtol=F64_TOL)


def test_stacked_params_and_single_optimizer(traffic):
    X, Y = traffic
    stacked = jax.vmap(init)(KEYS)
    a = fgd.sweep(LOSS, fgd.adam(0.01), X, Y, init=stacked, epochs=40)
    b = fgd.sweep(LOSS, fgd.adam, X, Y, init=init, keys=KEYS, lrs=[0.01], epochs=40)
    assert a.history["loss"].shape == (3, 1, 40)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=F64_TOL)


def test_low_precision_runs_keep_their_dtype_and_equal_fit(traffic):
    """bfloat16 params stay bfloat16 and every run (i, r) of a 2 x 3 grid
    equals its own fit to bfloat16 rounding."""
    X, Y = (jnp.asarray(a, jnp.bfloat16) for a in traffic)
    low = lambda key: NET.init(key, "uniform", dtype=jnp.bfloat16)
    lrs = [0.01, 0.02, 0.05]
    keys = KEYS[:2]
    runs = fgd.sweep(LOSS, fgd.sgd, X, Y, init=low, keys=keys, lrs=lrs, epochs=15)
    assert {a.dtype for a in jax.tree.leaves(runs.params)} == {jnp.dtype(jnp.bfloat16)}
    for r, lr in enumerate(lrs):
        for i, key in enumerate(keys):
            fit = fgd.fit(LOSS, low(key), fgd.sgd(lr), X, Y, epochs=15)
            for a, b in zip(jax.tree.leaves(run_of(runs.params, i, r)), jax.tree.leaves(fit.params)):
                np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                           rtol=2e-2, atol=2e-2)


def test_grid_numbers_are_weak_and_in_run_order():
    """Run i * R + r gets rate r's numbers, weakly typed like the Python
    floats of one fit (so they take the params' dtype)."""
    rates = np.array([0.01, 0.02, 0.05])
    _, _, hparams = importlib.import_module("fgd.training.sweep")._grid_optimizer(
        lambda lr: fgd.sgd(lr, momentum=0.5), True, rates, 2, jnp.float32)
    np.testing.assert_allclose(hparams["lr"], np.tile(rates, 2).astype(np.float32))
    np.testing.assert_allclose(hparams["momentum"], np.full(6, 0.5, np.float32))
    assert all(a.weak_type for a in jax.tree.leaves(hparams))


def test_a_repeated_sweep_runs_in_one_chunk_per_group(traffic, monkeypatch):
    """The first sweep of a program starts with a one-epoch chunk and grows;
    a second one starts with a chunk sized by the first one's epoch rate:
    300 epochs, far under a chunk's quarter second, are one call."""
    X, Y = traffic
    module = importlib.import_module("fgd.training.chunk")
    real, calls = module.compiled_chunk, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "compiled_chunk", counted)
    importlib.import_module("fgd.training.driver")._RATES.clear()   # no rate from other tests
    kwargs = dict(init=init, keys=KEYS, lrs=[0.01, 0.02], epochs=300)
    first = fgd.sweep(LOSS, fgd.sgd, X, Y, **kwargs)
    n_first, calls[:] = len(calls), []
    again = fgd.sweep(LOSS, fgd.sgd, X, Y, **kwargs)
    assert n_first >= 2 and len(calls) == 1
    np.testing.assert_array_equal(again.history["loss"], first.history["loss"])


def sweep_module():
    return sys.modules["fgd.training.sweep"]          # `fgd.sweep` is the function


@pytest.mark.parametrize("n", [2, 3])
def test_runs_in_concurrent_groups_equal_one_group(traffic, monkeypatch, n):
    """Split into n groups driven from n threads, every run equals the
    one-program sweep (bit for bit on the newest JAX; older XLA:CPU may
    vectorise a group's sums otherwise, within float64 rounding): runs
    stopping at different epochs (goal, divergence), histories padded with
    NaN to the longest group."""
    if jax.__version_info__ >= (0, 10):
        same = np.testing.assert_array_equal
    else:  # on diverging runs (losses ~1e22) one ulp grows to ~1e-11 relative
        same = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)
    X, Y = traffic
    kwargs = dict(init=init, keys=KEYS, lrs=[0.05, 4.0, 0.01], epochs=300, goal=0.25)
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        one = fgd.sweep(LOSS, fgd.sgd, X, Y, **kwargs)
    monkeypatch.setattr(sweep_module(), "groups", lambda runs, platform: n)
    with pytest.warns(RuntimeWarning, match="NaN/Inf"):
        split = fgd.sweep(LOSS, fgd.sgd, X, Y, **kwargs)
    assert len(set(one.epochs.ravel())) > 2                # runs stopped at different epochs
    for field in ("epochs", "stop_reason", "updates", "nonfinite_epoch"):
        np.testing.assert_array_equal(getattr(split, field), getattr(one, field))
    same(split.final_loss, one.final_loss)
    same(split.history["loss"], one.history["loss"])
    for a, b in zip(jax.tree.leaves((split.params, split.opt_state)),
                    jax.tree.leaves((one.params, one.opt_state))):
        same(a, b)


def test_groups_one_per_core_on_cpu_only(monkeypatch):
    groups = sweep_module().groups
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert [groups(r, "cpu") for r in (1, 31, 32, 64, 1000)] == [1, 1, 2, 2, 2]
    assert groups(64, "gpu") == groups(64, "tpu") == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert [groups(r, "cpu") for r in (16, 64, 1000)] == [1, 4, 8]


def test_an_error_in_one_group_is_raised(traffic, monkeypatch):
    X, Y = traffic
    monkeypatch.setattr(sweep_module(), "groups", lambda runs, platform: 2)
    chunk = fgd.training.chunk.compiled_chunk

    def failing(spec, carry, data, knobs, hparams=None):
        if carry.epoch.shape[0] == 5:                      # the second group of 9 runs
            raise RuntimeError("out of memory in group 2")
        return chunk(spec, carry, data, knobs, hparams)

    monkeypatch.setattr(fgd.training.chunk, "compiled_chunk", failing)
    with pytest.raises(RuntimeError, match="group 2"):
        fgd.sweep(LOSS, fgd.sgd, X, Y, init=init, keys=KEYS, lrs=[0.01, 0.02, 0.03], epochs=50)


def test_second_sweep_does_not_retrace(traffic):
    X, Y = traffic
    calls = {"n": 0}

    def loss(params, X, Y):
        calls["n"] += 1
        return LOSS(params, X, Y)

    fgd.sweep(loss, fgd.sgd, X, Y, init=init, keys=KEYS, lrs=[0.01, 0.02], epochs=20)
    traced = calls["n"]
    fgd.sweep(loss, fgd.sgd, X, Y, init=init, keys=jax.random.split(jax.random.key(9), 3),
              lrs=[0.03, 0.04], epochs=30, goal=0.1)
    assert calls["n"] == traced


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(init=init, lrs=[0.1]), ValueError, "keys"),
    (dict(init=init, keys=KEYS), ValueError, "lrs"),
    (dict(init=init, keys=KEYS, lrs=[-0.1]), ValueError, "lrs"),
    (dict(init=init, keys=KEYS, lrs=[[0.1]]), TypeError, "lrs"),
    (dict(init=init, keys=np.zeros(3), lrs=[0.1]), TypeError, "keys"),
    (dict(init=[{"W": np.zeros((2, 8, 3)), "b": np.zeros((3, 8, 1))}], lrs=[0.1]), ValueError, "leading axis"),
    (dict(init=init, keys=KEYS, lrs=[0.1], epochs=-1), ValueError, "epochs"),
    (dict(init=init, keys=KEYS, lrs=[0.1], batch_size=0), ValueError, "batch_size"),
])
def test_bad_arguments_are_named(traffic, kwargs, error, words):
    X, Y = traffic
    with pytest.raises(error, match=words):
        fgd.sweep(LOSS, fgd.sgd, X, Y, **kwargs)


# --- runs on the last axis ---------------------------------------------------------------
def test_batch_last_equals_vmap():
    """Every rule of the evaluator, and the vmap fallback (sort, gather), against jax.vmap."""
    from fgd._compile import _batch_last as batch_last

    def f(a, b, s):
        z = jnp.tanh(a @ b + s) * jnp.where(a.sum() > 0, 2.0, 3.0)             # dot, select, bcast
        t = z.T.reshape(-1)[:5]                                              # transpose, reshape, slice
        return {"z": jnp.max(z, axis=0), "t": jnp.sort(t), "g": z[jnp.argmax(t) % 2],
                "c": jnp.float64(1.5)}                                        # an unbatched output

    R = 4
    keys = jax.random.split(jax.random.key(0), 3)
    a = jax.random.normal(keys[0], (R, 3, 2), jnp.float64)
    b = jax.random.normal(keys[1], (R, 2, 4), jnp.float64)
    s = jax.random.normal(keys[2], (R,), jnp.float64)
    expected = jax.vmap(f)(a, b, s)
    got = jax.jit(batch_last(f, R))(*(jnp.moveaxis(x, 0, -1) for x in (a, b, s)))
    for name in expected:
        np.testing.assert_allclose(np.moveaxis(np.asarray(got[name]), -1, 0), expected[name],
                                   rtol=1e-13, atol=1e-13)


def test_patience_per_run_equals_fit(traffic):
    X, Y = traffic
    Xt, Yt, Xv, Yv = X[:, :14], Y[:, :14], X[:, 14:], Y[:, 14:]
    runs = fgd.sweep(LOSS, fgd.sgd, Xt, Yt, init=init, keys=KEYS[:2], lrs=[0.2], epochs=300,
                     validation=(Xv, Yv), patience=5, history=("grad_norm",))
    opt = fgd.sgd(0.2)
    for i, key in enumerate(KEYS[:2]):
        fit = fgd.fit(LOSS, init(key), opt, Xt, Yt, epochs=300, validation=(Xv, Yv), patience=5,
                      history=("grad_norm",))
        assert_run_equals_fit(runs, i, 0, fit)
        n = fit.epochs
        for name in ("val_loss", "grad_norm"):
            np.testing.assert_allclose(runs.history[name][i, 0, :n], fit.history[name], rtol=F64_TOL)


def test_history_lr_is_each_runs_rate(traffic):
    X, Y = traffic
    lrs = [0.01, 0.05, 0.2]
    runs = fgd.sweep(LOSS, fgd.sgd, X, Y, init=init, keys=KEYS, lrs=lrs, epochs=7,
                     history=("loss", "lr"))
    assert runs.history["lr"].shape == (3, 3, 7)
    np.testing.assert_allclose(runs.history["lr"], np.broadcast_to(np.asarray(lrs)[None, :, None], (3, 3, 7)),
                               rtol=1e-15)


def test_groups_take_over_the_callers_thread_local_settings():
    """A group's thread does not see `with fgd.enable_x64(True):` around the
    call unless it enters it: run where x64 is off globally, a float64 sweep
    in groups must stay float64 and equal its sequential fit."""
    import subprocess

    code = """
import sys, numpy as np, jax, fgd, fgd.training.sweep   # fgd is lazy: load the module to patch
sys.modules["fgd.training.sweep"].groups = lambda runs, platform: 2
net = fgd.MLP((3, 8, 2), hidden="logsig", output="purelin")
loss = fgd.make_loss(net, "sse")
d = fgd.data.traffic(np.float64)
X, Y = fgd.data.premnmx(d.X)[0], fgd.data.premnmx(d.Y)[0]
with fgd.enable_x64(True):
    keys = jax.random.split(jax.random.key(1), 4)
    init = lambda k: net.init(k, "uniform", dtype=np.float64)
    runs = fgd.sweep(loss, fgd.sgd, X, Y, init=init, keys=keys, lrs=[0.05], epochs=30)
    fit = fgd.fit(loss, init(keys[3]), fgd.sgd(0.05), X, Y, epochs=30)
assert runs.params[0]["W"].dtype == np.float64 and runs.history["loss"].dtype == np.float64
np.testing.assert_allclose(runs.history["loss"][3, 0], fit.history["loss"], rtol=1e-12)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "JAX_ENABLE_X64": "0"})
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_caller_settings_are_the_thread_local_ones():
    settings = sweep_module().caller_settings
    assert settings() == {}
    x64 = not jax.config.jax_enable_x64
    with fgd.enable_x64(x64), jax.default_matmul_precision("highest"):
        assert settings() == {"jax_enable_x64": x64, "jax_default_matmul_precision": "highest"}
    with jax.checking_leaks():                          # not one a group's thread takes over
        assert settings() is None
