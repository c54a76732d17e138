"""make_step and fit against hand-written loops (plain numpy, no fgd).

Reference values: a numpy gradient-descent loop of the MATLAB BP example's 3-8-2
network, the documented mini-batch order replayed in numpy,
optimizers of the tests' own that count their updates, and shorter fits
whose params a stopped fit must reproduce exactly.
"""
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd import Optimizer

F64_TOL = 1e-10     # float64: the same arithmetic up to the order of sums
F32_TOL = 1e-5


# --- fixtures and references -----------------------------------------------------
NET = fgd.MLP((3, 8, 2), hidden="logsig", output="purelin")
LOSS = fgd.make_loss(NET, "sse")


def init(key=0, dtype=jnp.float64):
    return NET.init(jax.random.key(key), "uniform", dtype=dtype)


def numpy_params(params):
    return [{k: np.array(v) for k, v in layer.items()} for layer in params]


def sse_grads(p, X, Y):
    """The MATLAB BP example's hand-derived backward pass: loss 1/2 sum(E^2) and its gradient."""
    H = 1 / (1 + np.exp(-(p[0]["W"] @ X + p[0]["b"])))
    E = p[1]["W"] @ H + p[1]["b"] - Y
    D1 = (p[1]["W"].T @ E) * H * (1 - H)
    grads = [{"W": D1 @ X.T, "b": D1.sum(1, keepdims=True)},
             {"W": E @ H.T, "b": E.sum(1, keepdims=True)}]
    return 0.5 * np.sum(E * E), grads


def numpy_gd(params, X, Y, lr, epochs, order=None):
    """Plain gradient descent; `order(epoch)` gives mini-batches of column indices."""
    p = numpy_params(params)
    history = []
    for epoch in range(epochs):
        batches = [slice(None)] if order is None else order(epoch)
        losses = []
        for idx in batches:
            value, g = sse_grads(p, X[:, idx], Y[:, idx])
            losses.append(value)
            p = [{k: layer[k] - lr * gl[k] for k in layer} for layer, gl in zip(p, g)]
        history.append(np.mean(losses))
    return p, np.array(history)


def assert_params_close(a, b, tol):
    for la, lb in zip(a, b):
        for k in la:
            np.testing.assert_allclose(np.asarray(la[k]), np.asarray(lb[k]), rtol=tol, atol=tol)


def assert_params_equal(a, b):
    for la, lb in zip(a, b):
        for k in la:
            np.testing.assert_array_equal(np.asarray(la[k]), np.asarray(lb[k]))


def counting_sgd(lr):
    """Plain SGD whose state is the number of updates made."""
    def update(grads, count, params=None):
        return jax.tree.map(lambda g: -lr * g, grads), count + 1

    return Optimizer(lambda params: jnp.zeros((), jnp.int32), update)


def counted(loss):
    """`loss` plus a Python counter of how often it is traced."""
    calls = {"n": 0}

    def wrapped(params, X, Y):
        calls["n"] += 1
        return loss(params, X, Y)

    return wrapped, calls


# --- make_step -----------------------------------------------------------------
def test_make_step_equals_hand_step(traffic):
    X, Y = traffic
    step = fgd.make_step(LOSS, fgd.sgd(0.05))
    params, state = init(), fgd.sgd(0.05).init(init())
    expected = numpy_params(params)
    for _ in range(5):
        value, g = sse_grads(expected, X, Y)
        params, state, loss_value = step(params, state, X, Y)
        expected = [{k: layer[k] - 0.05 * gl[k] for k in layer} for layer, gl in zip(expected, g)]
        np.testing.assert_allclose(float(loss_value), value, rtol=F64_TOL)
    assert_params_close(params, expected, F64_TOL)


def test_make_step_traces_once_and_schedule_does_not_retrace(traffic):
    X, Y = traffic
    loss, calls = counted(LOSS)
    opt = fgd.sgd(fgd.schedules.exponential_decay(0.1, 10, 0.5))
    step = fgd.make_step(loss, opt)
    params, state = init(), opt.init(init())
    values = []
    for _ in range(20):
        params, state, value = step(params, state, X, Y)
        values.append(float(value))
    assert calls["n"] == 1
    assert fgd.current_lr(state) < 0.1 * 0.5 ** 1.9       # the rate did move
    step(params, state, X[:, :10], Y[:, :10])               # a new shape traces again
    assert calls["n"] == 2


def test_make_step_passes_value_to_adaptive_lr(traffic):
    X, Y = traffic
    opt = fgd.adaptive_lr(0.05)
    step = fgd.make_step(LOSS, opt)
    params, state = init(), opt.init(init())
    params, state, value = step(params, state, X, Y)
    np.testing.assert_allclose(float(state.accepted_value), float(value), rtol=1e-12)


def test_import_fgd_does_not_import_optax():
    code = "import sys, fgd; assert 'optax' not in sys.modules, 'optax imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_optax_optimizer_works_with_make_step_and_fit(traffic):
    optax = pytest.importorskip("optax")
    X, Y = traffic
    p0 = init()
    ours = fgd.make_step(LOSS, fgd.adam(1e-2))
    theirs = fgd.make_step(LOSS, optax.adam(1e-2))
    a, sa = init(), fgd.adam(1e-2).init(p0)
    b, sb = init(), optax.adam(1e-2).init(p0)
    for _ in range(10):
        a, sa, va = ours(a, sa, X, Y)
        b, sb, vb = theirs(b, sb, X, Y)
        np.testing.assert_allclose(float(va), float(vb), rtol=F64_TOL)
    assert_params_close(a, b, 1e-9)
    result = fgd.fit(LOSS, p0, optax.sgd(0.05), X, Y, epochs=30)
    expected, history = numpy_gd(p0, X, Y, 0.05, 30)
    assert_params_close(result.params, expected, F64_TOL)


# --- fit: full batch -------------------------------------------------------------
def test_full_batch_equals_numpy_gradient_descent(traffic):
    # 200 epochs: past ~300, lr 0.05 amplifies rounding differences between
    # any two implementations (the trajectory is sensitive), not a bug.
    X, Y = traffic
    p0 = init()
    result = fgd.fit(LOSS, p0, fgd.sgd(0.05), X, Y, epochs=200)
    expected, history = numpy_gd(p0, X, Y, 0.05, 200)
    assert result.epochs == len(result.history["loss"]) == 200
    assert result.updates == 200 and result.stop_reason == "epochs"
    np.testing.assert_allclose(result.history["loss"], history, rtol=F64_TOL)
    assert_params_close(result.params, expected, F64_TOL)
    assert_params_equal(p0, init())                         # the caller's params survive


def test_seed_matlab_example(traffic):
    """The MATLAB BP example: 3-8-2, logsig/purelin, uniform [0, 1] init, lr 0.05,
    sse, goal 1e-3, 50,000 epochs. With key 0 the goal is not reached: the run
    ends at 50,000 epochs after exactly 50,000 updates. The final loss is
    checked loosely (1e-3) against a numpy run of the same loop
    (0.02465327269060934): over 50,000 epochs the two drift apart by rounding."""
    X, Y = traffic
    result = fgd.fit(LOSS, init(0), fgd.sgd(0.05), X, Y, epochs=50_000, goal=1e-3)
    assert result.stop_reason == "epochs"
    assert result.epochs == result.updates == 50_000
    loss = result.history["loss"]
    assert loss.shape == (50_000,) and loss.min() > 1e-3
    np.testing.assert_allclose(loss[-1], 0.02465327269060934, rtol=1e-3)
    assert loss[-1] < 1e-3 * loss[0]


def test_goal_stops_at_first_epoch_at_or_below_goal(traffic):
    X, Y = traffic
    reference = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=300).history["loss"]
    goal = reference[137]
    first = int(np.argmax(reference <= goal))
    result = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=300, goal=goal)
    assert result.stop_reason == "goal"
    assert result.epochs == first + 1 and result.updates == first
    assert result.history["loss"][-1] <= goal < result.history["loss"][-2]
    # stopped before the update: the params that gave the last loss
    assert_params_equal(result.params, fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=first).params)


def test_min_grad_stops_on_gradient_norm(traffic):
    X, Y = traffic
    ref = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=200, history=("grad_norm",))
    _, g = sse_grads(numpy_params(init()), X, Y)
    hand = np.sqrt(sum(np.sum(v ** 2) for layer in g for v in layer.values()))
    np.testing.assert_allclose(ref.history["grad_norm"][0], hand, rtol=F64_TOL)
    floor = np.sort(ref.history["grad_norm"])[50]
    first = int(np.argmax(ref.history["grad_norm"] <= floor))
    result = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=200, min_grad=floor)
    assert result.stop_reason == "min_grad" and result.epochs == first + 1


def test_nonfinite_stops_and_returns_last_finite_params(traffic):
    X, Y = traffic
    with pytest.warns(RuntimeWarning, match="epoch"):
        result = fgd.fit(LOSS, init(), fgd.sgd(5.0), X, Y, epochs=100)
    k = result.nonfinite_epoch
    assert result.stop_reason == "nonfinite" and k == result.epochs - 1
    assert not np.isfinite(result.history["loss"][k]) and np.all(np.isfinite(result.history["loss"][:k]))
    before = fgd.fit(LOSS, init(), fgd.sgd(5.0), X, Y, epochs=k - 1)
    assert_params_equal(result.params, before.params)


def test_patience_stops_and_restores_best(traffic):
    X, Y = traffic
    Xt, Yt, Xv, Yv = X[:, :14], Y[:, :14], X[:, 14:], Y[:, 14:]
    opt = fgd.sgd(0.2)
    ref = fgd.fit(LOSS, init(), opt, Xt, Yt, epochs=400, validation=(Xv, Yv))
    val = ref.history["val_loss"]
    # val_loss is taken at the same params as loss: compare with the loss itself
    np.testing.assert_allclose(val[0], float(LOSS(init(), Xv, Yv)), rtol=F64_TOL)
    patience = 5
    result = fgd.fit(LOSS, init(), opt, Xt, Yt, epochs=400, validation=(Xv, Yv), patience=patience)
    best = result.best_epoch
    assert result.stop_reason == "patience"
    assert result.epochs == best + patience + 1
    assert val[best] == val[: best + 1].min() and np.all(val[best + 1: best + patience + 1] >= val[best])
    assert_params_equal(result.params, fgd.fit(LOSS, init(), opt, Xt, Yt, epochs=best).params)


def test_time_limit_stops_at_a_chunk_end(traffic):
    X, Y = traffic
    result = fgd.fit(LOSS, init(), fgd.sgd(0.01), X, Y, epochs=10**9, time_limit=0.5)
    assert result.stop_reason == "time_limit"
    assert 0 < result.epochs < 10**9 and result.seconds < 5


def test_epochs_zero_runs_nothing(traffic):
    X, Y = traffic
    result = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=0)
    assert result.epochs == 0 and result.history["loss"].shape == (0,)
    assert result.stop_reason == "epochs"
    assert_params_equal(result.params, init())


def test_lr_history_follows_schedule(traffic):
    X, Y = traffic
    schedule = fgd.schedules.exponential_decay(0.05, 10, 0.5)
    result = fgd.fit(LOSS, init(), fgd.sgd(schedule), X, Y, epochs=30, history=("lr",))
    np.testing.assert_allclose(result.history["lr"], [0.05 * 0.5 ** (k / 10) for k in range(30)],
                               rtol=1e-12)


def test_float32_params_stay_float32_with_float64_data(traffic):
    X, Y = traffic                                          # float64 numpy
    p32 = init(dtype=jnp.float32)
    result = fgd.fit(LOSS, p32, fgd.adam(1e-2), X, Y, epochs=50, batch_size=5)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(result.params))
    assert result.history["loss"].dtype == np.float32
    full = fgd.fit(LOSS, p32, fgd.sgd(0.05), X, Y, epochs=50)
    expected, history = numpy_gd(p32, X.astype(np.float32), Y.astype(np.float32), np.float32(0.05), 50)
    assert_params_close(full.params, expected, F32_TOL)


# --- fit: mini-batches -------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 3, 5, 20])
def test_minibatch_counts_updates(traffic, batch_size):
    X, Y = traffic
    result = fgd.fit(LOSS, init(), counting_sgd(0.01), X, Y, epochs=4, batch_size=batch_size)
    assert int(result.opt_state) == 4 * (20 // batch_size) == result.updates


def test_minibatch_equals_numpy_loop_in_documented_order(traffic):
    X, Y = traffic
    key, k = jax.random.key(7), 3                           # 20 % 3: two left out each epoch

    def order(epoch):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), 20))
        return [perm[i * k:(i + 1) * k] for i in range(20 // k)]

    result = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=6, batch_size=k, key=key)
    expected, history = numpy_gd(init(), X, Y, 0.05, 6, order)
    np.testing.assert_allclose(result.history["loss"], history, rtol=F64_TOL)
    assert_params_close(result.params, expected, F64_TOL)


def test_minibatch_layout_is_reused_for_the_same_arrays_only(traffic):
    """fit(batch_size=k) lays X and Y out examples first; a second fit on the
    same jax arrays reuses that copy, other arrays get their own, and the
    copy goes when X does."""
    import gc

    from fgd.training import fit as train

    X, Y = (jnp.asarray(a) for a in traffic)
    first = train.laid_out(X, Y)
    np.testing.assert_array_equal(first[0], np.asarray(X).T)
    np.testing.assert_array_equal(first[1], np.asarray(Y).T)
    assert all(a is b for a, b in zip(train.laid_out(X, Y), first))
    X2 = X + 1
    other = train.laid_out(X2, Y)
    np.testing.assert_array_equal(other[0], np.asarray(X2).T)
    assert other[0] is not first[0]
    run = lambda X_: fgd.fit(LOSS, init(), fgd.sgd(0.05), X_, Y, epochs=3, batch_size=4)
    assert_params_equal(run(X).params, run(X).params)
    assert_params_equal(run(X2).params, fgd.fit(LOSS, init(), fgd.sgd(0.05), np.asarray(X2), Y,
                                                 epochs=3, batch_size=4).params)
    del X2, other
    train.laid_out(X, Y)
    del X
    gc.collect()
    assert len(train._LAYOUT) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_nonfinite_value_in_large_data_is_found(bad):
    """The device-side check (sum(x * 0) == 0) finds a single NaN/Inf among
    a million values, and lets huge finite values through."""
    from fgd import _checks as validation

    X = np.full((4, 250_000), 3e38, np.float32)          # finite; its sum overflows
    assert validation.on_device(X, "X", np.float32).shape == X.shape
    X[2, 123_456] = bad
    with pytest.raises(ValueError, match=r"X must be finite; got 1 NaN/Inf value\(s\), the first at index \(2, 123456\)"):
        validation.on_device(X, "X", np.float32)


def test_same_key_same_result_other_key_other_result(traffic):
    X, Y = traffic
    run = lambda key: fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=5, batch_size=4,
                              key=jax.random.key(key))
    a, b, c = run(1), run(1), run(2)
    assert_params_equal(a.params, b.params)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    assert not np.array_equal(a.history["loss"], c.history["loss"])


def test_minibatch_goal_decides_after_the_epoch(traffic):
    X, Y = traffic
    ref = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=40, batch_size=5).history["loss"]
    goal = ref[20]
    first = int(np.argmax(ref <= goal))
    result = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=40, batch_size=5, goal=goal)
    assert result.stop_reason == "goal" and result.epochs == first + 1
    assert result.updates == (first + 1) * 4


def test_cnn_images_batched_along_last_axis():
    net = fgd.CNN((1, 4, 4), (fgd.Conv(2, 3), fgd.Flatten(), fgd.Dense(2)), hidden="tanh",
                  output="identity")
    X = jax.random.normal(jax.random.key(0), (1, 4, 4, 12))
    Y = jax.random.normal(jax.random.key(1), (2, 12))
    loss = fgd.make_loss(net, "mse")
    params = net.init(jax.random.key(2), "xavier")
    result = fgd.fit(loss, params, counting_sgd(0.1), X, Y, epochs=3, batch_size=4)
    assert int(result.opt_state) == 9 and result.history["loss"][-1] < result.history["loss"][0]


def test_plain_function_loss(traffic):
    X, Y = traffic

    def loss(params, X, Y):
        return jnp.mean((params["w"] @ X - Y) ** 2)

    params = {"w": jnp.zeros((2, 3))}
    result = fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=300)
    w = np.zeros((2, 3))
    for _ in range(300):                                    # d mean(E^2) / dw = 2 E X^T / (2 m)
        w = w - 0.1 * 2 * (w @ X - Y) @ X.T / Y.size
    np.testing.assert_allclose(result.params["w"], w, rtol=F64_TOL, atol=F64_TOL)


# --- compilation is cached -------------------------------------------------------
@pytest.mark.parametrize("batch_size", [None, 4])
def test_second_fit_does_not_retrace(traffic, batch_size):
    X, Y = traffic
    loss, calls = counted(LOSS)
    opt = fgd.sgd(0.05)
    fgd.fit(loss, init(), opt, X, Y, epochs=30, batch_size=batch_size, goal=1e-9)
    traced = calls["n"]
    assert traced >= 1
    fgd.fit(loss, init(1), opt, X, Y, epochs=50, batch_size=batch_size, goal=1e-6)
    assert calls["n"] == traced


# --- boundary checks ------------------------------------------------------------------
BAD = [
    (dict(X=np.zeros((4, 20))), ValueError, "X"),
    (dict(Y=np.zeros((2, 19))), ValueError, "Y"),
    (dict(X=np.full((3, 20), np.nan)), ValueError, "X must be finite"),
    (dict(Y=np.full((2, 20), np.inf)), ValueError, "Y must be finite"),
    (dict(X=np.zeros((3, 0)), Y=np.zeros((2, 0))), ValueError, "empty"),
    (dict(X=np.zeros((3, 20), complex)), TypeError, "complex"),
    (dict(X=np.array([["a"] * 20] * 3)), TypeError, "X"),
    (dict(X=np.zeros((3, 20), object)), TypeError, "X"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=21), ValueError, "batch_size"),
    (dict(batch_size=2.0), TypeError, "batch_size"),
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(epochs=1.5), TypeError, "epochs"),
    (dict(goal=float("nan")), ValueError, "goal"),
    (dict(goal="low"), TypeError, "goal"),
    (dict(patience=3), ValueError, "patience"),
    (dict(patience=0, validation=(np.zeros((3, 5)), np.zeros((2, 5)))), ValueError, "patience"),
    (dict(time_limit=0), ValueError, "time_limit"),
    (dict(min_grad=-1.0), ValueError, "min_grad"),
    (dict(validation=(np.zeros((4, 5)), np.zeros((2, 5)))), ValueError, "Xv"),
    (dict(validation=np.zeros((3, 5))), TypeError, "validation"),
    (dict(history=("loss", "speed")), ValueError, "history"),
    (dict(history=("val_loss",)), ValueError, "validation"),
    (dict(key=0), TypeError, "key"),
    (dict(opt=object()), TypeError, "opt"),
    (dict(params=[{"W": np.zeros((8, 3))}]), ValueError, "params"),
    (dict(loss="sse"), TypeError, "loss"),
]


@pytest.mark.parametrize("change, error, words", BAD)
def test_bad_arguments_are_named(traffic, change, error, words):
    X, Y = traffic
    args = dict(loss=LOSS, params=init(), opt=fgd.sgd(0.05), X=X, Y=Y)
    args.update(change)
    with pytest.raises(error, match=words):
        fgd.fit(args.pop("loss"), args.pop("params"), args.pop("opt"), args.pop("X"), args.pop("Y"),
                epochs=args.pop("epochs", 3), **args)


# --- the small-dot rewrite ---------------------------------------------------------------
@pytest.mark.parametrize("spec, shapes", [
    ("ij,jk->ik", [(8, 3), (3, 20)]),
    ("ji,jk->ik", [(3, 8), (3, 20)]),          # transposed lhs, as in W^T dZ
    ("ij,kj->ik", [(2, 20), (8, 20)]),         # dZ A^T
    ("bij,bjk->bik", [(4, 2, 3), (4, 3, 5)]),  # batch dims
    ("ijk,jkl->il", [(2, 3, 4), (3, 4, 5)]),   # two contracting dims
    ("i,j->ij", [(5,), (6,)]),                 # outer product: nothing contracted
])
def test_fuse_small_dots_equals_dot(spec, shapes):
    from fgd._compile import _fuse_small_dots as fuse_small_dots

    keys = jax.random.split(jax.random.key(0), len(shapes))
    args = [jax.random.normal(k, s, jnp.float64) for k, s in zip(keys, shapes)]
    f = lambda *a: jnp.einsum(spec, *a)
    fused = jax.jit(fuse_small_dots(f))
    np.testing.assert_allclose(fused(*args), f(*args), rtol=1e-13, atol=1e-13)
    assert "dot(" not in fused.lower(*args).compile().as_text()


# --- a small loop as one XLA:CPU kernel ------------------------------------------------
def _chunk_setup(X, Y, batch_size):
    opt = fgd.sgd(0.05)
    params = init()
    setup = fgd.training.fit.prepare(LOSS, opt, False, params, X, Y, 40, batch_size, jax.random.key(0),
                              None, validation_data=None, patience=None, min_grad=None,
                              time_limit=None, history=("loss", "grad_norm"))
    carry = fgd.training.chunk.init_carry(setup.spec, params, opt.init(params))
    return setup, carry, setup.knobs._replace(end=jnp.int32(40))


@pytest.mark.skipif(not fgd._compile.tricks(jax.default_backend()).one_kernel,
                    reason="one-kernel loops are an XLA:CPU trick, on where this jax supports it")
@pytest.mark.parametrize("batch_size, one", [(None, True), (5, True)])
def test_small_loop_is_one_kernel_with_the_same_numbers(traffic, batch_size, one):
    """The 3-8-2 full-batch chunk is marked as one kernel, and so is a
    mini-batch chunk's loop over the batches of an epoch (its permutation,
    a sort, and the gather of the epoch's batches stay outside), and
    `compiled_chunk` compiles them with ONE_KERNEL_OPTIONS; the numbers equal
    the per-operation runtime's with XLA's default options, which gathers
    each batch as it goes (float64, the same operations in the same order)."""
    X, Y = traffic
    setup, carry, knobs = _chunk_setup(X, Y, batch_size)
    args = (setup.spec, carry, setup.data, knobs, setup.hparams)
    tricks = setup.spec.tricks
    one_kernel_chunk = fgd.training.chunk._jitted(tricks.compiler_options(True))
    hlo = one_kernel_chunk.lower(*args, one_kernel=True).compile().as_text()
    marked = [line for line in hlo.splitlines() if "one_kernel_loop" in line and " call(" in line]
    assert bool(marked) == one and all('xla_cpu_small_call="true"' in line for line in marked)
    (c1, rows1) = fgd.training.chunk.compiled_chunk(*args)
    assert [v for k, v in fgd.training.chunk._ONE_KERNEL._data.items() if k[0] == setup.spec] == [one]
    (c0, rows0) = fgd.training.chunk._CHUNK(*args, one_kernel=False)
    for name in rows0:
        np.testing.assert_allclose(rows1[name], rows0[name], rtol=F64_TOL, atol=F64_TOL)
    assert_params_close(c1.params, c0.params, F64_TOL)
    assert int(c1.epoch) == int(c0.epoch) == 40


@pytest.mark.parametrize("output, cost", [(o, c) for o, cs in fgd.losses.CANONICAL.items() for c in cs])
@pytest.mark.parametrize("hidden", [n for n in fgd.nn.activations.HIDDEN_NAMES
                                    if n not in fgd.nn.activations.ALIASES])
def test_every_built_in_step_can_be_one_kernel(hidden, output, cost):
    """A small net's step holds only primitives a one-kernel loop takes, for
    every built-in hidden activation and output/cost pair, once its small
    products are multiply + sum: softmax + cross_entropy's log-softmax holds
    a stop_gradient, which had kept its chunks on the per-operation
    runtime (16-8-4 tanh net, 20 examples: 313k -> 766k epochs/s)."""
    from fgd._compile import _fuse_small_dots, _kernel_elements

    net = fgd.MLP((3, 8, 2), hidden=hidden, output=output)
    X = np.linspace(-1, 1, 60).reshape(3, 20)
    Y = np.eye(2)[:, np.arange(20) % 2]
    step = _fuse_small_dots(jax.value_and_grad(fgd.make_loss(net, cost)))
    jaxpr = jax.make_jaxpr(step)(net.init(jax.random.key(0), dtype=jnp.float64), X, Y).jaxpr
    assert _kernel_elements(jaxpr) is not None


@pytest.mark.skipif(not fgd._compile.tricks(jax.default_backend()).one_kernel,
                    reason="one-kernel loops are an XLA:CPU trick, on where this jax supports it")
def test_softmax_cross_entropy_chunk_is_one_kernel():
    """fit's chunk of a small softmax + cross_entropy net is compiled as one
    kernel (a net of its own here: the cache holds one decision for it)."""
    net = fgd.MLP((3, 7, 3), hidden="tanh", output="softmax")
    loss = fgd.make_loss(net, "cross_entropy")
    X = np.linspace(-1, 1, 63).reshape(3, 21)
    Y = np.eye(3)[:, np.arange(21) % 3]
    fit = fgd.fit(loss, net.init(jax.random.key(0), dtype=jnp.float64), fgd.sgd(0.1), X, Y,
                  epochs=5)
    assert fit.epochs == 5
    decided = [v for k, v in fgd.training.chunk._ONE_KERNEL._data.items() if k[0].loss == loss]
    assert decided == [True]


# --- batch_gather: the examples-first copy is optional ---------------------------------
@pytest.mark.parametrize("tricks_off", [False, True])
def test_batch_gather_columns_gives_the_copys_batches_and_numbers(traffic, monkeypatch, tricks_off):
    """batch_gather="columns" gathers the same batches from X as given (no
    examples-first copy): the same history, diagnostics and params as the
    default, on the one-kernel path and on the per-operation runtime."""
    if tricks_off:
        monkeypatch.setenv("FGD_COMPILE_TRICKS", "0")
    X, Y = traffic
    kw = dict(epochs=25, batch_size=6, key=jax.random.key(3), progress=False,
              history=("loss", "grad_norm", "mse", "layer_grad_norm"))
    copy = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, **kw)
    cols = fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, batch_gather="columns", **kw)
    for name in copy.history:
        np.testing.assert_allclose(cols.history[name], copy.history[name], rtol=F64_TOL, atol=F64_TOL)
    assert_params_close(cols.params, copy.params, F64_TOL)


def test_batch_gather_is_checked(traffic):
    X, Y = traffic
    with pytest.raises(ValueError, match="batch_gather must be one of .*'rows'"):
        fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=1, batch_size=5, batch_gather="rows")
    mesh = fgd.parallel.data_mesh()
    with pytest.raises(ValueError, match="batch_gather='columns' does not go with mesh="):
        fgd.fit(LOSS, init(), fgd.sgd(0.05), X, Y, epochs=1, batch_size=4, mesh=mesh,
                batch_gather="columns")
