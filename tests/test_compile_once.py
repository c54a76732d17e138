"""Compiled programs are cached on structure, not identity.

Traces are counted by wrapping `train_step` where the compiled chunk
(`fgd.training.chunk`) and `make_step` (`fgd.training.step`) look it up: it
runs once per trace of a chunk or step, never at run time. Each test starts
from empty caches. The numbers a shared program computes with must be the
new optimizer's, so results are compared with a run compiled afresh.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd.training import chunk as chunk_module
from fgd.training import step as step_module

NET = fgd.MLP((3, 8, 2), "tanh", "identity")
X = np.linspace(-1, 1, 3 * 12).reshape(3, 12)
Y = np.stack([np.sin(X[0] + X[1]), np.cos(X[2])])


def params():
    return NET.init(jax.random.key(0), dtype=jnp.float64)


@pytest.fixture
def traces(monkeypatch):
    """{"chunk": n, "step": n}: traces of fit/sweep chunks and of make_step."""
    fgd.clear_caches()
    counts = {"chunk": 0, "step": 0}

    def counting(name, original):
        def train_step(*args, **kwargs):
            counts[name] += 1
            return original(*args, **kwargs)
        return train_step

    monkeypatch.setattr(chunk_module, "train_step", counting("chunk", chunk_module.train_step))
    monkeypatch.setattr(step_module, "train_step", counting("step", step_module.train_step))
    yield counts
    fgd.clear_caches()


def fit(opt, loss=None, **kw):
    return fgd.fit(loss or fgd.make_loss(NET, "sse"), params(), opt, X, Y, epochs=30,
                   progress=False, **kw)


def test_fit_loop_over_rates_with_new_optimizers_compiles_once(traces):
    first = fit(fgd.sgd(0.1))
    once = traces["chunk"]
    assert once >= 1
    later = {lr: fit(fgd.sgd(lr)) for lr in (0.05, 0.2, 0.3)}
    assert traces["chunk"] == once
    fgd.clear_caches()                       # the same rate compiled on its own
    alone = fit(fgd.sgd(0.2))
    np.testing.assert_array_equal(later[0.2].history["loss"], alone.history["loss"])
    assert not np.array_equal(first.history["loss"], alone.history["loss"])


def test_adam_numbers_are_traced_and_used(traces):
    fit(fgd.adam(0.01))
    once = traces["chunk"]
    shared = fit(fgd.adam(0.02, b1=0.8, b2=0.99, eps=1e-6))
    assert traces["chunk"] == once
    fgd.clear_caches()
    alone = fit(fgd.adam(0.02, b1=0.8, b2=0.99, eps=1e-6))
    np.testing.assert_array_equal(shared.history["loss"], alone.history["loss"])
    for a, b in zip(jax.tree.leaves(shared.params), jax.tree.leaves(alone.params)):
        np.testing.assert_array_equal(a, b)


def test_two_equal_make_loss_results_share_the_chunk(traces):
    fit(fgd.sgd(0.1), loss=fgd.make_loss(fgd.MLP((3, 8, 2), "tanh", "identity"), "sse"))
    once = traces["chunk"]
    fit(fgd.sgd(0.1), loss=fgd.make_loss(fgd.MLP((3, 8, 2), "tanh", "identity"), "sse"))
    assert traces["chunk"] == once
    fit(fgd.sgd(0.1), loss=fgd.make_loss(NET, "mse"))       # another cost: another program
    assert traces["chunk"] > once


def test_the_same_chain_built_twice_shares_make_step(traces):
    loss = fgd.make_loss(NET, "sse")

    def make(lr, clip):
        return fgd.chain(fgd.clip_by_global_norm(clip), fgd.add_decayed_weights(1e-3, fgd.weights_only),
                         fgd.sgd(fgd.schedules.exponential_decay(lr, 10, 0.5), momentum=0.9))

    results = []
    for lr, clip in ((0.1, 1.0), (0.2, 0.5)):
        opt = make(lr, clip)
        step, p = fgd.make_step(loss, opt), params()
        state = opt.init(p)
        for _ in range(3):
            p, state, value = step(p, state, X, Y)
        results.append(float(value))
    assert traces["step"] == 1
    fgd.clear_caches()
    opt = make(0.2, 0.5)
    step, p = fgd.make_step(loss, opt), params()
    state = opt.init(p)
    for _ in range(3):
        p, state, value = step(p, state, X, Y)
    assert float(value) == results[1]


def test_a_changed_static_option_recompiles(traces):
    loss = fgd.make_loss(NET, "sse")
    for nesterov in (False, True, False):
        opt = fgd.sgd(0.1, momentum=0.9, nesterov=nesterov)
        p = params()
        fgd.make_step(loss, opt)(p, opt.init(p), X, Y)
    assert traces["step"] == 2                # on, off: two programs; off again: cached
    fit(fgd.sgd(0.1, momentum=0.9))
    once = traces["chunk"]
    fit(fgd.sgd(0.1, momentum=0.9, nesterov=True))
    assert traces["chunk"] > once


def test_schedules_share_by_kind_and_static_options(traces):
    fit(fgd.sgd(fgd.schedules.cosine_decay(0.1, 20)))
    once = traces["chunk"]
    fit(fgd.sgd(fgd.schedules.cosine_decay(0.3, 50, alpha=0.1)))
    assert traces["chunk"] == once
    fit(fgd.sgd(fgd.schedules.exponential_decay(0.1, 10, 0.5, staircase=True)))
    more = traces["chunk"]
    assert more > once
    fit(fgd.sgd(fgd.schedules.exponential_decay(0.2, 5, 0.9, staircase=True)))
    assert traces["chunk"] == more


def test_objects_without_structure_keep_the_identity_rule(traces):
    def plain(lr):
        inner = fgd.sgd(lr)
        return fgd.Optimizer(inner.init, inner.update)     # no key: compared by identity

    opt = plain(0.1)
    fit(opt)
    once = traces["chunk"]
    fit(opt)
    assert traces["chunk"] == once
    fit(plain(0.1))
    assert traces["chunk"] > once


def test_sweep_with_a_new_lambda_compiles_once(traces):
    run = lambda: fgd.sweep(fgd.make_loss(NET, "sse"), lambda lr: fgd.sgd(lr, momentum=0.5),
                            X, Y, init=lambda k: NET.init(k, dtype=jnp.float64),
                            keys=jax.random.split(jax.random.key(1), 2), lrs=[0.05, 0.1],
                            epochs=20, progress=False)
    first = run()
    once = traces["chunk"]
    second = run()
    assert traces["chunk"] == once
    np.testing.assert_array_equal(first.history["loss"], second.history["loss"])


def test_make_step_keeps_the_callers_arrays_by_default():
    loss, opt = fgd.make_loss(NET, "sse"), fgd.sgd(0.1)
    p0 = params()
    state0 = opt.init(p0)
    p1, _, _ = fgd.make_step(loss, opt)(p0, state0, X, Y)
    assert not any(x.is_deleted() for x in jax.tree.leaves((p0, state0)))
    distance = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(p1),
                                                               jax.tree.leaves(p0)))
    assert distance > 0                       # the initial params are still there to compare


def test_make_step_donate_true_deletes_the_passed_arrays():
    loss, opt = fgd.make_loss(NET, "sse"), fgd.sgd(0.1, momentum=0.9)
    p0 = params()
    state0 = opt.init(p0)
    kept = jax.tree.map(jnp.copy, p0)
    p1, state1, _ = fgd.make_step(loss, opt, donate=True)(p0, state0, X, Y)
    if jax.__version_info__ < (0, 7) and not jax.tree.leaves(p0)[0].is_deleted():
        pytest.skip("this jax's CPU backend declines the donation (XLA may)")
    assert all(x.is_deleted() for x in jax.tree.leaves(p0))
    with pytest.raises(RuntimeError, match="deleted"):
        np.asarray(jax.tree.leaves(p0)[0])
    p2, _, _ = fgd.make_step(loss, opt)(kept, opt.init(kept), X, Y)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=1e-17)  # the same update either way
