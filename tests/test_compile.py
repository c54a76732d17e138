"""The private compile tricks (fgd._compile): same numbers with them on and off.

Reference: the same training run with every trick switched off
(`FGD_COMPILE_TRICKS=0`), which is plain public JAX. The tricks may only
reorder float sums, so float32 runs agree within float32 rounding.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd import _compile

F32_TOL = 2e-5      # float32 rounding, accumulated over a few dozen epochs

NET = fgd.MLP((3, 8, 2), hidden="sigmoid", output="identity")
LOSS = fgd.make_loss(NET, "sse")


def _data():
    d = fgd.data.traffic(np.float32)
    X, _ = fgd.data.premnmx(d.X)
    Y, _ = fgd.data.premnmx(d.Y)
    return np.asarray(X, np.float32), np.asarray(Y, np.float32)


def _runs():
    X, Y = _data()
    params = NET.init(jax.random.key(0), "uniform", dtype=jnp.float32)
    full = fgd.fit(LOSS, params, fgd.sgd(0.05), X, Y, epochs=60, history=("loss", "grad_norm"))
    mini = fgd.fit(LOSS, params, fgd.adam(0.01), X, Y, epochs=20, batch_size=4,
                   key=jax.random.key(1), validation=(X, Y))
    runs = fgd.sweep(LOSS, fgd.sgd, X, Y, init=lambda k: NET.init(k, "uniform", dtype=jnp.float32),
                     keys=jax.random.split(jax.random.key(2), 3), lrs=[0.01, 0.05], epochs=40)
    step = fgd.make_step(LOSS, fgd.sgd(0.05))
    p1, _, value = step(params, fgd.sgd(0.05).init(params), X, Y)
    return full, mini, runs, (p1, value)


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=F32_TOL, atol=F32_TOL)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the tricks apply on XLA:CPU only")
def test_switch_off_gives_the_same_numbers_in_float32(monkeypatch):
    monkeypatch.setenv(_compile.ENV_SWITCH, "1")
    if not _compile.tricks("cpu").small_dots:
        pytest.skip("this JAX's internals do not take the tricks (its self-test failed): "
                    "fgd runs plain JAX, which test_tricks_off_* cover")
    on = _runs()
    monkeypatch.setenv(_compile.ENV_SWITCH, "0")
    assert _compile.tricks("cpu") == _compile.NONE
    off = _runs()
    (full1, mini1, runs1, step1), (full0, mini0, runs0, step0) = on, off
    assert full1.params[0]["W"].dtype == jnp.float32
    for a, b in ((full1, full0), (mini1, mini0)):
        _close(a.params, b.params)
        _close(a.history, b.history)
        assert a.epochs == b.epochs and a.stop_reason == b.stop_reason
    _close(runs1.params, runs0.params)
    _close(runs1.history, runs0.history)
    _close(step1, step0)


def test_no_tricks_off_cpu():
    for platform in ("gpu", "tpu", "cuda", "rocm"):
        assert _compile.tricks(platform) == _compile.NONE


def test_tricks_off_when_internals_are_missing(monkeypatch):
    monkeypatch.setattr(_compile, "AVAILABLE", False)
    assert _compile.tricks("cpu") == _compile.NONE


def test_self_test_failure_turns_every_trick_off(monkeypatch):
    def broken(*args, **kwargs):
        raise AttributeError("an internal API this JAX lacks")

    monkeypatch.setattr(_compile, "_bind", broken)
    _compile._SELF_TEST.clear()
    try:
        assert _compile.tricks("cpu") == _compile.NONE
    finally:
        _compile._SELF_TEST.clear()


def test_plain_tricks_are_public_jax():
    """With every trick off, each method is the plain JAX it stands for."""
    f = lambda x: jnp.sum(x ** 2)
    assert _compile.NONE.rewrite_dots(f) is f
    assert _compile.NONE.compiler_options(True) is None
    xs = jnp.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(_compile.NONE.batched(f, 2)(xs), jnp.sum(xs ** 2, axis=0))
    assert _compile.NONE.loop(lambda s: s + 1, 1) == 2


@pytest.mark.parametrize("precision, preferred", [
    (jax.lax.Precision.HIGHEST, None),
    (None, jnp.float64),
])
def test_small_dots_keep_precision_and_preferred_type(precision, preferred):
    """A dot with a non-default precision or another accumulation type is left
    to XLA (on GPU/TPU they decide TF32 and bf16 passes)."""
    def f(a, b):
        return jax.lax.dot_general(a, b, (((1,), (0,)), ((), ())), precision=precision,
                                   preferred_element_type=preferred)

    want = jnp.float64 if preferred is not None else jnp.float32
    with fgd.enable_x64(True):
        a, b = jnp.ones((2, 3), jnp.float32), jnp.ones((3, 4), jnp.float32)
        fused = _compile._fuse_small_dots(f)
        assert "dot_general" in str(jax.make_jaxpr(fused)(a, b))
        assert fused(a, b).dtype == want
        plain = jax.make_jaxpr(_compile._fuse_small_dots(lambda a, b: a @ b))(a, b)
        assert "dot_general" not in str(plain)        # a default small dot is rewritten


# --- large transposed-lhs products from a transposed copy -------------------------------
WIDE = fgd.MLP((16, 256, 256, 4), hidden="tanh", output="softmax")
TN = (((0,), (0,)), ((), ()))            # L^T R: both operands contracted over axis 0


def _wide_problem(dtype):
    params = WIDE.init(jax.random.key(3), "he", dtype=dtype)
    X = jax.random.normal(jax.random.key(4), (16, 40), dtype)
    Y = jax.nn.one_hot(jnp.arange(40) % 4, 4, dtype=dtype).T
    return params, X, Y


def test_the_hidden_weight_is_copied_transposed_to_the_same_gradient():
    """Of the backward pass's products W[l]^T dZ[l], only W2's (256 x 256) is
    computed from a copy of W2^T (W3 is 4 x 256: too few rows; there is no
    W1^T dZ1); the gradient equals jax.grad's to float64 rounding."""
    with fgd.enable_x64(True):
        params, X, Y = _wide_problem(jnp.float64)
        grad = jax.value_and_grad(fgd.make_loss(WIDE, "cross_entropy"))
        copied = _compile._rewrite_dots(grad, small=False, transposed=True)
        assert str(jax.make_jaxpr(grad)(params, X, Y)).count("optimization_barrier") == 0
        assert str(jax.make_jaxpr(copied)(params, X, Y)).count("optimization_barrier") == 1
        for a, b in zip(jax.tree.leaves(jax.jit(copied)(params, X, Y)),
                        jax.tree.leaves(jax.jit(grad)(params, X, Y))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("flip", [False, True])
def test_the_copied_operand_makes_the_product_plain(flip):
    """L^T R copies L; (L^T R)^T, the backward pass's form, copies R so that
    the transposes cancel: the compiled product then reads no transposed
    operand (XLA:CPU's dot with lhs_contracting_dims={0}, the slow one)."""
    L = jax.random.normal(jax.random.key(5), (256, 64 if flip else 300))
    R = jax.random.normal(jax.random.key(6), (256, 300 if flip else 64))

    def f(L, R):
        out = jax.lax.dot_general(L, R, TN)
        return out.T if flip else out

    copied = _compile._rewrite_dots(f, small=False, transposed=True)
    np.testing.assert_allclose(jax.jit(copied)(L, R), jax.jit(f)(L, R), rtol=1e-5, atol=1e-4)
    jaxpr = jax.make_jaxpr(copied)(L, R).jaxpr
    barrier = next(e for e in jaxpr.eqns if e.primitive.name == "optimization_barrier")
    assert barrier.invars[0].aval.shape == (300, 256)            # the wide operand, transposed
    plain_hlo = jax.jit(f).lower(L, R).compile().as_text()
    if jax.default_backend() == "cpu" and "lhs_contracting_dims={0}" in plain_hlo:
        assert "lhs_contracting_dims={0}" not in jax.jit(copied).lower(L, R).compile().as_text()


@pytest.mark.parametrize("shape, dtype", [
    ((255, 512), jnp.float32),      # too few rows
    ((512, 255), jnp.float32),      # too few columns
    ((4096, 512), jnp.float32),     # too large: an examples-first data set, slower copied
    ((256, 256), jnp.int32),        # not a float product
])
def test_no_copy_outside_the_measured_shapes(shape, dtype):
    L = jnp.ones(shape, dtype)
    R = jnp.ones((shape[0], 8), dtype)
    f = lambda L, R: jax.lax.dot_general(L, R, TN)
    text = str(jax.make_jaxpr(_compile._rewrite_dots(f, small=False, transposed=True))(L, R))
    assert "optimization_barrier" not in text


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the tricks apply on XLA:CPU only")
def test_wide_fit_with_copies_equals_plain_jax_in_float32(monkeypatch):
    """fit and make_step on the 16-256-256-4 net, full batch and mini-batch,
    with the tricks (W2^T copied) and without: the same numbers to float32
    rounding."""
    params, X, Y = _wide_problem(jnp.float32)
    loss = fgd.make_loss(WIDE, "cross_entropy")

    def runs():
        full = fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=5)
        mini = fgd.fit(loss, params, fgd.adam(1e-3), X, Y, epochs=3, batch_size=8, key=jax.random.key(7))
        step = fgd.make_step(loss, fgd.sgd(0.1))(params, fgd.sgd(0.1).init(params), X, Y)
        return full.params, full.history, mini.params, mini.history, step

    monkeypatch.setenv(_compile.ENV_SWITCH, "1")
    if not _compile.tricks("cpu").transposed_copies:
        pytest.skip("this JAX's internals do not take the tricks (its self-test failed)")
    on = runs()
    monkeypatch.setenv(_compile.ENV_SWITCH, "0")
    off = runs()
    _close(on, off)



# --- long chunks for programs with large temporaries ----------------------------------
def test_chunk_seconds_closed_form():
    """2% of a chunk for the call's page faults at 0.33 ms per MiB: 157 MiB
    of temporaries -> 157 x 0.33e-3 / 0.02 = 2.59 s; below 64 MiB, or with
    the trick off, the usual second; never more than 8 s."""
    on = _compile.NONE._replace(long_chunks=True)
    mib = 2 ** 20
    assert on.chunk_seconds(1.0, 157 * mib) == pytest.approx(157 * 0.33e-3 / 0.02)
    assert on.chunk_seconds(1.0, 63 * mib) == 1.0
    assert on.chunk_seconds(1.0, 64 * mib) == pytest.approx(1.056)   # from 64 MiB on
    assert on.chunk_seconds(1.0, 100 * 1024 * mib) == _compile.MAX_CHUNK_SECONDS
    assert on.chunk_seconds(3.0, 157 * mib) == 3.0                 # never shorter than asked
    assert _compile.NONE.chunk_seconds(1.0, 157 * mib) == 1.0


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the tricks apply on XLA:CPU only")
def test_fit_aims_its_chunks_by_the_programs_temporaries(monkeypatch):
    """fit hands the driver `chunk_seconds(1 s, temp_bytes)`, where the
    compiled chunk's temporaries hold at least its hidden activations (a
    64 x 4,000 float32 A[1]: 1 MB); with the tricks off, the driver's 1 s."""
    from fgd.training import chunk, driver

    net = fgd.MLP((16, 64, 4), hidden="tanh", output="identity")
    X = np.random.default_rng(0).standard_normal((16, 4000), dtype=np.float32)
    Y = np.random.default_rng(1).standard_normal((4, 4000), dtype=np.float32)
    params = net.init(jax.random.key(0), "xavier", dtype=jnp.float32)
    seen = {}
    real_drive, real_temps = driver.drive, chunk.temp_bytes

    def spy_drive(*args, **kwargs):
        aim = kwargs["chunk_seconds"]
        seen["seconds"] = None if aim is None else aim()
        return real_drive(*args, **kwargs)

    def spy_temps(*args):
        seen["temps"] = real_temps(*args)
        return seen["temps"]

    monkeypatch.setattr(driver, "drive", spy_drive)
    monkeypatch.setattr(chunk, "temp_bytes", spy_temps)
    monkeypatch.setattr(_compile, "FAULT_MIN_BYTES", 0)           # count this small program as large
    monkeypatch.setattr(_compile, "FAULT_SECONDS_PER_BYTE", 1e-6)   # and its faults as dear
    monkeypatch.setenv(_compile.ENV_SWITCH, "1")
    if not _compile.tricks("cpu").long_chunks:
        pytest.skip("this JAX's internals do not take the tricks (its self-test failed)")
    result = fgd.fit(fgd.make_loss(net, "sse"), params, fgd.sgd(1e-4), X, Y, epochs=2)
    assert result.epochs == 2
    assert seen["temps"] >= 64 * 4000 * 4
    assert seen["seconds"] == min(_compile.MAX_CHUNK_SECONDS, max(1.0, seen["temps"] * 1e-6 / 0.02))
    seen.clear()
    monkeypatch.setenv(_compile.ENV_SWITCH, "0")
    fgd.fit(fgd.make_loss(net, "sse"), params, fgd.sgd(1e-4), X, Y, epochs=2)
    assert seen == {"seconds": None}                    # the driver's 1 s

# --- the mini-batch permutation ------------------------------------------------------
@pytest.mark.parametrize("m", [1, 2, 20, 401, 5000, 70_000])
def test_permutation_trick_is_jax_random_permutation(m):
    """`_permutation` (single-array sorts) gives jax.random.permutation's
    order, bit for bit, for typed and raw keys and sizes on both sides of the
    packed-tie limit (2^16); whichever branch a round takes."""
    for key in (jax.random.key(m), jax.random.PRNGKey(m + 1), jax.random.fold_in(jax.random.key(2), m)):
        got = jax.jit(_compile._permutation, static_argnums=1)(key, m)
        np.testing.assert_array_equal(got, jax.random.permutation(key, m))


@pytest.mark.parametrize("m", [7, 1000, 70_000])
def test_stable_order_with_ties_is_sort_key_val(m):
    """With tied keys a round takes its slow branch (the packed sort up to 2^16
    examples, lax.sort_key_val above) and still equals the stable sort."""
    keys = jax.random.randint(jax.random.key(0), (m,), 0, max(2, m // 3)).astype(jnp.uint32)
    x = jax.random.permutation(jax.random.key(1), m)
    np.testing.assert_array_equal(jax.jit(_compile._stable_order)(keys, x),
                                  jax.lax.sort_key_val(keys, x)[1])


@pytest.fixture
def traffic_fit(traffic):
    """(loss, params, X, Y): the MATLAB BP example's 3-8-2 net in float32."""
    X, Y = (jnp.asarray(a, jnp.float32) for a in traffic)
    net = fgd.MLP((3, 8, 2), hidden="tanh", output="identity")
    return fgd.make_loss(net, "sse"), net.init(jax.random.key(0), "xavier", dtype=jnp.float32), X, Y


def test_minibatch_fit_uses_the_permutation_trick_to_the_same_numbers(traffic_fit, monkeypatch):
    """fit's mini-batch history is the same with the trick as with
    jax.random.permutation (tricks off), float32."""
    loss, params, X, Y = traffic_fit
    assert _compile.tricks("cpu", shuffles=True).permutation_sort == _compile.AVAILABLE
    assert not _compile.tricks("cpu").permutation_sort          # full batch: never asked
    on = fgd.fit(loss, params, fgd.sgd(0.01), X, Y, epochs=30, batch_size=4, progress=False)
    monkeypatch.setenv("FGD_COMPILE_TRICKS", "0")
    off = fgd.fit(loss, params, fgd.sgd(0.01), X, Y, epochs=30, batch_size=4, progress=False)
    np.testing.assert_allclose(on.history["loss"], off.history["loss"], rtol=2e-6)


def test_only_a_mini_batch_fit_asks_for_the_shuffle_check(traffic_fit, monkeypatch):
    """The shuffle check compiles programs of its own (about 2 s on a CPU):
    a full-batch fit never asks for it, a mini-batch fit does."""
    asked = []
    monkeypatch.setattr(_compile, "_permutation_matches", lambda: asked.append(True) or True)
    loss, params, X, Y = traffic_fit
    fgd.fit(loss, params, fgd.sgd(0.01), X, Y, epochs=3, progress=False)
    assert asked == []
    fgd.fit(loss, params, fgd.sgd(0.01), X, Y, epochs=3, batch_size=4, progress=False)
    assert asked == ([True] if _compile.AVAILABLE and _compile._self_test() else [])
