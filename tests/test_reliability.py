"""Reliability of fit: crashes, bad numbers, hostile files, bad inputs.

Reference values: a run killed with SIGKILL and resumed must equal, bit for
bit (`np.array_equal` on every leaf and on the history), the same run never
interrupted; a nonfinite batch index and a divergence epoch are checked
against a plain numpy/`make_step` replay of the same batches; bad inputs must
raise fgd's error before the loss is traced (a patched counter stays at 0).
"""
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
import fgd.losses
import fgd.training.chunk
from fgd.checkpoint import CheckpointMismatchError, CheckpointWarning
from fgd.training.faults import NonFiniteLossError
from fgd.training.resume import ConfigMismatchError

ROOT = Path(__file__).resolve().parent.parent
KILL_SEED = 6          # the random kill points are drawn from this seed (reproducible)

# --- the child process: one tiny training, optionally slowed to be killed -------
CHILD = textwrap.dedent('''
    import json, os, sys, time
    cfg = json.loads(sys.argv[1])
    import jax
    jax.config.update("jax_enable_x64", True)
    if cfg.get("cache"):                        # the chain's later processes skip compiling
        jax.config.update("jax_compilation_cache_dir", cfg["cache"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    import numpy as np
    import fgd
    from fgd import checkpoint

    def problem(mode):
        key = jax.random.key(3)
        kx, kp = jax.random.split(key)
        m = {"full": 48, "sgd": 24, "mini": 60}[mode]
        X = jax.random.normal(kx, (2, m))
        Y = jnp.tanh(X[:1] - 0.5 * X[1:] ** 2)
        net = fgd.MLP((2, 5, 1), hidden="tanh", output="identity")
        loss = fgd.make_loss(net, "mse", l2=1e-3)
        p0 = net.init(kp, "xavier")
        if mode == "full":
            opt = fgd.sgd(0.05, momentum=0.9)
            kw = dict(epochs=400, batch_size=None, history=("loss", "grad_norm", "lr"),
                      diverge=1e6, checkpoint_every=20)
        elif mode == "sgd":
            opt = fgd.adam(fgd.schedules.cosine_decay(1e-2, 40 * m))
            kw = dict(epochs=40, batch_size=1, validation=(X[:, :8], Y[:, :8]), patience=1000,
                      nonfinite="skip", checkpoint_every=2)
        else:
            opt = fgd.chain(fgd.clip_by_global_norm(1.0), fgd.adamw(3e-2))
            kw = dict(epochs=100, batch_size=8, history=("loss", "lr"), checkpoint_every=5)
        return loss, p0, opt, X, Y, dict(kw, key=jax.random.key(11))

    import jax.numpy as jnp
    loss, p0, opt, X, Y, kw = problem(cfg["mode"])
    if cfg.get("slow_at") is not None:          # hold the write of one checkpoint open
        real_replace = os.replace
        def slow_replace(src, dst, *a, **k):
            if os.path.basename(os.fspath(dst)) == f"ckpt-{cfg['slow_at']}.npz":
                open(cfg["marker"], "w").close()
                time.sleep(60)                  # the parent kills us here
            return real_replace(src, dst, *a, **k)
        os.replace = slow_replace
    if cfg.get("pace"):                         # a little time between checkpoints
        real_save = checkpoint.CheckpointManager.save
        def paced(self, *a, **k):
            out = real_save(self, *a, **k)
            time.sleep(cfg["pace"])
            return out
        checkpoint.CheckpointManager.save = paced

    def flat(result):
        leaves = jax.tree.leaves((result.params, result.opt_state))
        out = {f"leaf_{i}": np.asarray(x) for i, x in enumerate(leaves)}
        out.update({f"history_{k}": v for k, v in result.history.items()})
        out["counts"] = np.array([result.epochs, result.updates, result.skipped])
        out["reason"] = np.array(result.stop_reason)
        return out

    saved = {}
    if cfg.get("dir") is not None:
        result = fgd.fit(loss, p0, opt, X, Y, checkpoint_dir=cfg["dir"], **kw)
        saved.update({f"resumed/{k}": v for k, v in flat(result).items()})
        saved["resumed_epoch"] = np.array(-1 if result.resumed_epoch is None else result.resumed_epoch)
    if cfg.get("reference"):
        saved.update({f"reference/{k}": v for k, v in flat(fgd.fit(loss, p0, opt, X, Y, **kw)).items()})
    np.savez(cfg["out"], **saved)
''')


@pytest.fixture(scope="module")
def child_script(tmp_path_factory):
    path = tmp_path_factory.mktemp("child") / "child.py"
    path.write_text(CHILD)
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A persistent compilation cache shared by the kill chains' processes
    (the same executables, loaded instead of compiled again: faster, and
    bit-exactness does not rest on it; the determinism test compiles afresh)."""
    return str(tmp_path_factory.mktemp("jax_cache"))


def spawn(script, **cfg):
    env = dict(os.environ, PYTHONHASHSEED="0")
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # only cfg["cache"]: the determinism test compiles afresh
    return subprocess.Popen([sys.executable, str(script), json.dumps(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def steps(directory):
    return sorted(int(p.stem.split("-")[1]) for p in Path(directory).glob("ckpt-*.npz"))


def wait_for(predicate, proc, timeout=90.0):
    """Polls (every 2 ms) until `predicate()`; fails if the child exits first."""
    t0 = time.monotonic()
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"child exited (rc {proc.returncode}) before the kill point: "
                                 f"{proc.stderr.read()[-2000:]}")
        assert time.monotonic() - t0 < timeout, "no progress from the child"
        time.sleep(0.002)


def kill(proc):
    assert proc.poll() is None, "the child had already finished: the kill proves nothing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def leaves_of(npz, prefix):
    return {k[len(prefix):]: npz[k] for k in npz.files if k.startswith(prefix)}


def assert_same_run(got, want):
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert np.array_equal(got[name], want[name]), f"{name} differs"


# (mode, every, final epoch, kill 1, kill 2 in a checkpoint write?)
CHAINS = [("full", 20, 400, False), ("sgd", 2, 40, True), ("mini", 5, 100, False)]


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
@pytest.mark.parametrize("mode, every, epochs, write_kill", CHAINS, ids=[c[0] for c in CHAINS])
def test_sigkill_twice_then_resume_is_bit_identical(child_script, cache, tmp_path, mode, every,
                                                     epochs, write_kill):
    """Two SIGKILLs per batch mode at random checkpoints (one inside a checkpoint
    write in the SGD chain), then a resume to the end: params, optimizer state
    and history equal the uninterrupted run's bit for bit."""
    rng = np.random.default_rng([KILL_SEED, len(mode)])
    saves = list(range(every, epochs, every))
    first, second = sorted(rng.choice(saves[1:-2], 2, replace=False))
    d, out = tmp_path / "ckpt", tmp_path / "result.npz"

    proc = spawn(child_script, mode=mode, dir=str(d), out=str(out), pace=0.01, cache=cache)
    wait_for(lambda: first in steps(d), proc)
    time.sleep(rng.uniform(0, 0.01))               # somewhere in the next chunk or save
    kill(proc)
    killed_at = steps(d)[-1]
    assert killed_at < epochs

    marker = tmp_path / "writing"
    slow = dict(slow_at=int(second), marker=str(marker)) if write_kill else {}
    proc = spawn(child_script, mode=mode, dir=str(d), out=str(out), pace=0.01, cache=cache, **slow)
    if write_kill:
        wait_for(marker.exists, proc)              # inside save(): the temp file is written
        kill(proc)
        assert list(d.glob(".tmp-fgd-ckpt-*.part")), "the kill should leave a partial write"
        assert second not in steps(d)
    else:
        wait_for(lambda: second in steps(d), proc)
        time.sleep(rng.uniform(0, 0.01))
        kill(proc)
    newest = steps(d)[-1]

    finish(spawn(child_script, mode=mode, dir=str(d), out=str(out), reference=True, cache=cache))
    with np.load(out) as npz:
        assert int(npz["resumed_epoch"]) == newest
        assert_same_run(leaves_of(npz, "resumed/"), leaves_of(npz, "reference/"))
        assert int(npz["reference/counts"][0]) == epochs
    assert not list(d.glob(".tmp-fgd-*")), "a resumed writer removes stale temp files"


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_same_seed_in_two_fresh_processes_is_identical(child_script, tmp_path):
    runs = []
    for i in range(2):
        finish(spawn(child_script, mode="mini", out=str(tmp_path / f"{i}.npz"), reference=True))
        with np.load(tmp_path / f"{i}.npz") as npz:
            runs.append(leaves_of(npz, "reference/"))
    assert_same_run(runs[0], runs[1])


# --- in-process fixtures: a tiny regression and its checkpoints ----------------
NET = fgd.MLP((2, 4, 1), hidden="tanh", output="identity")
LOSS = fgd.make_loss(NET, "mse")
OPT = fgd.adam(1e-2)


@pytest.fixture(scope="module")
def data():
    kx, kp = jax.random.split(jax.random.key(0))
    X = jax.random.normal(kx, (2, 32))
    Y = jnp.sin(X[:1]) * X[1:]
    return X, Y, NET.init(kp, "xavier")


def train(data, **kw):
    X, Y, p0 = data
    kw = {"epochs": 6, "batch_size": 8, "key": jax.random.key(1), **kw}
    return fgd.fit(LOSS, p0, kw.pop("opt", OPT), X, Y, **kw)


def flat(result):
    out = {f"leaf_{i}": np.asarray(x)
           for i, x in enumerate(jax.tree.leaves((result.params, result.opt_state)))}
    out.update({f"history_{k}": v for k, v in result.history.items()})
    return out


@pytest.fixture()
def saved(data, tmp_path):
    """A directory with checkpoints after epochs 2, 4, 6, and the 8-epoch reference."""
    d = tmp_path / "ckpt"
    train(data, checkpoint_dir=d, checkpoint_every=2)
    assert steps(d) == [2, 4, 6]
    return d, flat(train(data, epochs=8))


def resumed(data, d):
    return train(data, epochs=8, checkpoint_dir=d, checkpoint_every=2)


# --- hostile files in the checkpoint directory, through fit's resume path --------
def _flip(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _pickle(path, marker):
    class Evil:
        def __reduce__(self):
            return (Path.touch, (Path(marker),))
    path.write_bytes(pickle.dumps(Evil()))


def _npy_pickle(path, marker):
    np.save(open(path, "wb"), np.array([object()], dtype=object), allow_pickle=True)


def _empty(path):
    path.write_bytes(b"")


def _foreign(path):                    # a sound fgd checkpoint, but not a fit state
    fgd.checkpoint.save(path, {"w": np.ones(3)}, {"epoch": 6})


def _renamed(path):                    # a sound fit state under another epoch's name
    os.replace(path.with_name("ckpt-4.npz"), path)


def _oversized(path):                  # a member claims far more bytes than the file holds
    import zipfile
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("header.json", "{}")
    raw = bytearray(path.read_bytes())
    at = raw.rfind(b"PK\x01\x02") + 24            # central directory: uncompressed size
    raw[at:at + 4] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(raw))


HOSTILE = {"bit flip": _flip, "truncated": _truncate, "pickle": _pickle, "npy pickle": _npy_pickle,
           "empty": _empty, "foreign tree": _foreign, "renamed epoch": _renamed,
           "forged sizes": _oversized}


@pytest.mark.parametrize("damage", HOSTILE, ids=list(HOSTILE))
def test_damaged_newest_checkpoint_falls_back(data, saved, damage, tmp_path):
    d, reference = saved
    marker = tmp_path / "pwned"
    fn = HOSTILE[damage]
    fn(d / "ckpt-6.npz", marker) if damage in ("pickle", "npy pickle") else fn(d / "ckpt-6.npz")
    with pytest.warns(CheckpointWarning, match="ckpt-6.npz"):
        result = resumed(data, d)
    assert not marker.exists(), "a pickle was loaded"
    expected_from = 2 if damage == "renamed epoch" else 4
    assert result.resumed_epoch == expected_from
    assert (d / "ckpt-6.npz.corrupt").exists()
    assert_same_run(flat(result), reference)


def test_every_checkpoint_damaged_starts_over(data, saved):
    d, reference = saved
    for step in steps(d):
        _truncate(d / f"ckpt-{step}.npz")
    with pytest.warns(CheckpointWarning):
        result = resumed(data, d)
    assert result.resumed_epoch is None
    assert_same_run(flat(result), reference)


def test_stray_files_are_ignored(data, saved):
    d, reference = saved
    (d / "ckpt-007.npz").write_bytes(b"not canonical")
    (d / "ckpt-99.npz.corrupt").write_bytes(b"junk")
    (d / ".tmp-fgd-ckpt-8.npz-x.part").write_bytes(b"half a write")
    result = resumed(data, d)
    assert result.resumed_epoch == 6
    assert_same_run(flat(result), reference)
    assert not (d / ".tmp-fgd-ckpt-8.npz-x.part").exists()


def test_checkpoint_of_another_architecture_is_refused(data, saved, tmp_path):
    d, _ = saved
    other = fgd.MLP((2, 3, 1), hidden="tanh", output="identity")
    X, Y, _ = data
    with pytest.raises(CheckpointMismatchError, match=r"\['carry'\]\.params\[0\]\['W'\]: `like` expects float64\[3, 2\]"):
        fgd.fit(fgd.make_loss(other, "mse"), other.init(jax.random.key(0)), OPT, X, Y, epochs=8,
                batch_size=8, key=jax.random.key(1), checkpoint_dir=d)
    assert steps(d) == [2, 4, 6], "a refused checkpoint is left in place"


@pytest.mark.parametrize("change, named", [
    (dict(batch_size=4), "batch_size"),
    (dict(opt=fgd.adam(2e-2)), "opt_state"),           # the rate lives in the initial state
    (dict(key=jax.random.key(2)), "key"),
    (dict(diverge=100.0), "diverge"),
    (dict(loss=fgd.make_loss(NET, "mse", l2=0.1)), "loss"),
    (dict(Y_scale=2.0), "Y"),
])
def test_checkpoint_of_another_configuration_is_refused(data, saved, change, named):
    d, _ = saved
    X, Y, p0 = data
    change = dict(change)
    loss = change.pop("loss", LOSS)
    Y = Y * change.pop("Y_scale", 1.0)
    kw = {"epochs": 8, "batch_size": 8, "key": jax.random.key(1), **change}
    # ConfigMismatchError, or its parent when the state's tree differs too (diverge)
    with pytest.raises(CheckpointMismatchError, match=named) as err:
        fgd.fit(loss, p0, kw.pop("opt", OPT), X, Y, checkpoint_dir=d, **kw)
    assert isinstance(err.value, ValueError)
    assert isinstance(err.value, ConfigMismatchError) or "carry" in str(err.value)


def test_resume_false_starts_over(data, saved):
    d, _ = saved
    with pytest.warns(CheckpointWarning, match="deleted 3"):
        result = train(data, epochs=3, checkpoint_dir=d, resume=False, checkpoint_every=2)
    assert result.resumed_epoch is None and steps(d) == [2, 3]
    assert_same_run(flat(result), flat(train(data, epochs=3)))


def test_finished_run_resumes_to_the_same_result(data, saved):
    d, _ = saved
    again = train(data, checkpoint_dir=d)
    assert again.resumed_epoch == 6 and again.epochs == 6
    assert_same_run(flat(again), flat(train(data)))


# --- numerical faults ---------------------------------------------------------------
def poisoned_loss(bad_value):
    """`LOSS`, but NaN on any batch holding an example whose x0 equals `bad_value`."""
    def loss(params, X, Y):                 # NaN through the forward pass: NaN gradients too
        poisoned = jnp.any(X[0] == bad_value)
        return LOSS(params, X * jnp.where(poisoned, jnp.nan, 1.0), Y)
    return loss


def first_bad_batch(loss, params, opt, X, Y, key, epoch, k):
    """Reference: the first batch of `epoch` whose loss is NaN, stepping by hand."""
    step = fgd.make_step(loss, opt)
    params = jax.tree.map(jnp.copy, params)          # make_step donates its inputs
    state = opt.init(params)
    for e in range(epoch + 1):
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, e), X.shape[1]))
        for b in range(X.shape[1] // k):
            idx = order[b * k:(b + 1) * k]
            params, state, value = step(params, state, X[:, idx], Y[:, idx])
            if not np.isfinite(value):
                return e, b
    return None


def test_nonfinite_raise_names_epoch_and_batch(data, tmp_path):
    X, Y, p0 = data
    X = X.at[0, 13].set(7.0)
    loss, key = poisoned_loss(7.0), jax.random.key(1)
    want = first_bad_batch(loss, p0, OPT, X, Y, key, 0, 8)
    assert want == (0, want[1])
    d = tmp_path / "ckpt"
    with pytest.raises(NonFiniteLossError, match=f"epoch 0, batch {want[1]}") as err:
        fgd.fit(loss, p0, OPT, X, Y, epochs=5, batch_size=8, key=key, nonfinite="raise",
                checkpoint_dir=d, checkpoint_every=1)
    assert isinstance(err.value, FloatingPointError)
    assert (err.value.epoch, err.value.batch) == want
    assert steps(d) == [], "the failing state is not saved"
    with pytest.warns(RuntimeWarning, match=f"epoch 0, batch {want[1]}"):
        stopped = fgd.fit(loss, p0, OPT, X, Y, epochs=5, batch_size=8, key=key)
    assert (stopped.nonfinite_epoch, stopped.nonfinite_batch) == want
    assert stopped.stop_reason == "nonfinite"


def test_nonfinite_skip_skips_exactly_the_bad_batches(data):
    """Batch size 1, one poisoned example: each epoch skips exactly its update;
    the params equal a hand loop over the same order that leaves it out."""
    X, Y, p0 = data
    X = X.at[0, 5].set(7.0)
    loss, key, epochs = poisoned_loss(7.0), jax.random.key(4), 3
    result = fgd.fit(loss, p0, OPT, X, Y, epochs=epochs, batch_size=1, key=key, nonfinite="skip")
    assert result.stop_reason == "epochs" and result.skipped == epochs
    params = jax.tree.map(jnp.copy, p0)              # make_step donates its inputs
    step, state, means = fgd.make_step(LOSS, OPT), OPT.init(params), []
    for e in range(epochs):
        values = []
        for i in np.asarray(jax.random.permutation(jax.random.fold_in(key, e), X.shape[1])):
            if i != 5:
                params, state, v = step(params, state, X[:, i:i + 1], Y[:, i:i + 1])
                values.append(float(v))
        means.append(np.mean(values))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14),
                 result.params, params)
    np.testing.assert_allclose(result.history["loss"], means, rtol=1e-12)
    assert int(result.opt_state.count) == int(state.count), "skipped updates keep the count"


def test_divergence_guard_stops_at_the_first_blow_up(data):
    X, Y, _ = data
    linear = fgd.MLP((2, 1), output="identity")
    loss_fn, p0 = fgd.make_loss(linear, "sse"), linear.init(jax.random.key(0), "xavier")
    opt = fgd.sgd(0.1)                      # past 2 / (largest eigenvalue of X X^T): diverges
    free = fgd.fit(loss_fn, p0, opt, X, Y, epochs=60)
    loss = free.history["loss"]
    lowest = np.minimum.accumulate(np.where(np.isfinite(loss), loss, np.inf))
    blown = [k for k in range(1, len(loss)) if loss[k] > 10 * lowest[k - 1]]
    assert blown, "the reference run should blow up"
    guarded = fgd.fit(loss_fn, p0, opt, X, Y, epochs=60, diverge=10.0)
    assert guarded.stop_reason == "diverged" and guarded.epochs == blown[0] + 1
    np.testing.assert_array_equal(guarded.history["loss"], loss[: blown[0] + 1])


# --- trace counts -------------------------------------------------------------------
def test_fit_traces_its_step_once_per_batch_shape(data, tmp_path):
    X, Y, p0 = data
    shapes = []

    def loss(params, Xb, Yb):
        shapes.append(Xb.shape)
        return LOSS(params, Xb, Yb)

    opt = fgd.adam(1e-2)
    fgd.fit(loss, p0, opt, X, Y, epochs=30, batch_size=6, key=jax.random.key(0),
            checkpoint_dir=tmp_path / "a", checkpoint_every=1)       # 30 chunks of one epoch
    once = list(shapes)
    assert once and set(once) == {(2, 6)}
    fgd.fit(loss, p0, opt, X, Y, epochs=50, batch_size=6, key=jax.random.key(0),
            checkpoint_dir=tmp_path / "a", checkpoint_every=7)       # resumed: more chunks
    assert shapes == once, "resuming and other chunk lengths do not retrace"
    fgd.fit(loss, p0, opt, X, Y, epochs=4, batch_size=None)
    assert shapes[len(once):] and set(shapes[len(once):]) == {(2, 32)}
    assert len(shapes) == 2 * len(once), "one trace per batch shape"


# --- bad inputs: fgd's error before anything is traced ---------------------------------
def _fit(**change):
    def call(env):
        X, Y, p0 = env["data"]
        kw = {"epochs": 3, "batch_size": 8, "key": jax.random.key(1), **change}
        loss = kw.pop("loss", LOSS)
        opt = kw.pop("opt", OPT)
        params = kw.pop("params", p0)
        X = kw.pop("X", X)
        Y = kw.pop("Y", Y)
        return fgd.fit(loss, params, opt, X, Y, **kw)
    return call


def _X(f):
    return lambda env: _fit(X=f(np.asarray(env["data"][0])))(env)


def _Y(f):
    return lambda env: _fit(Y=f(np.asarray(env["data"][1])))(env)


def _nan(a, v=np.nan):
    a = a.copy()
    a[0, 3] = v
    return a


BAD_INPUTS = [
    ("X NaN", _X(_nan), ValueError, "X must be finite"),
    ("Y Inf", _Y(lambda a: _nan(a, np.inf)), ValueError, "Y must be finite"),
    ("X empty", _X(lambda a: a[:, :0]), ValueError, "X must not be empty"),
    ("X rows", _X(lambda a: np.vstack([a, a])), ValueError, "X"),
    ("Y rows", _Y(lambda a: np.vstack([a, a])), ValueError, "Y must have shape"),
    ("m differs", _Y(lambda a: a[:, :-1]), ValueError, "same number of examples"),
    ("X 1-D", _X(lambda a: a[0]), ValueError, "X"),
    ("X object", _X(lambda a: a.astype(object)), TypeError, "real numbers"),
    ("X complex", _X(lambda a: a + 1j), TypeError, "complex"),
    ("X strings", _X(lambda a: a.astype(str)), TypeError, "real numbers"),
    ("X ragged", _fit(X=[[1.0, 2.0], [3.0]]), TypeError, "X"),
    ("params shape", lambda env: _fit(params=NET.init(jax.random.key(0))[::-1])(env),
     ValueError, "params"),
    ("params int", lambda env: _fit(params=jax.tree.map(lambda a: a.astype(jnp.int32),
                                                        env["data"][2]))(env), TypeError, "params"),
    ("epochs -1", _fit(epochs=-1), ValueError, "epochs"),
    ("epochs str", _fit(epochs="10"), TypeError, "epochs"),
    ("batch 0", _fit(batch_size=0), ValueError, "batch_size"),
    ("batch > m", _fit(batch_size=33), ValueError, "batch_size"),
    ("batch float", _fit(batch_size=8.0), TypeError, "batch_size"),
    ("goal NaN", _fit(goal=float("nan")), ValueError, "goal"),
    ("key int", _fit(key=0), TypeError, "key"),
    ("patience 0", _fit(patience=0), ValueError, "patience"),
    ("min_grad -1", _fit(min_grad=-1.0), ValueError, "min_grad"),
    ("time_limit 0", _fit(time_limit=0), ValueError, "time_limit"),
    ("history name", _fit(history=("loss", "acc")), ValueError, "history"),
    ("validation 3", _fit(validation=(1, 2, 3)), TypeError, "validation"),
    ("nonfinite name", _fit(nonfinite="ignore"), ValueError, "nonfinite"),
    ("diverge 0.5", _fit(diverge=0.5), ValueError, "diverge"),
    ("diverge inf", _fit(diverge=float("inf")), ValueError, "diverge"),
    ("every 0", _fit(checkpoint_every=0), ValueError, "checkpoint_every"),
    ("every soon", _fit(checkpoint_every="soon"), ValueError, "checkpoint_every"),
    ("keep 0", _fit(keep=0), ValueError, "keep"),
    ("resume str", _fit(resume="yes"), TypeError, "resume"),
    ("dir int", _fit(checkpoint_dir=3), TypeError, "checkpoint_dir"),
    ("loss object", _fit(loss=object()), TypeError, "loss"),
    ("opt str", _fit(opt="adam"), TypeError, "opt"),
    ("lr -1", lambda env: fgd.adam(-1.0), ValueError, "lr"),
    ("b1 1.5", lambda env: fgd.adam(1e-3, b1=1.5), ValueError, "b1"),
    ("eps 0", lambda env: fgd.adam(1e-3, eps=0.0), ValueError, "eps"),
    ("momentum -0.5", lambda env: fgd.sgd(0.1, momentum=-0.5), ValueError, "momentum"),
    ("clip -1", lambda env: fgd.clip_by_global_norm(-1.0), ValueError, "max_norm"),
    ("lr NaN", lambda env: fgd.sgd(float("nan")), ValueError, "lr"),
    ("make_step opt", lambda env: fgd.make_step(LOSS, "sgd"), TypeError, "opt"),
    ("activation", lambda env: fgd.MLP((2, 3, 1), hidden="sigmoidal"), ValueError, "sigmoid"),
    ("cost", lambda env: fgd.make_loss(NET, "hinge"), ValueError, "sse"),
    ("backprop NaN", lambda env: fgd.backprop(NET, "mse", env["data"][2],
                                              _nan(np.asarray(env["data"][0])), env["data"][1]),
     ValueError, "X must be finite"),
    ("architecture", lambda env: _fit(loss=env["other"][0], params=env["other"][1],
                                      checkpoint_dir=env["dir"])(env),
     CheckpointMismatchError, r"params\[0\]\[.W.\]"),
    ("configuration", lambda env: _fit(batch_size=4, checkpoint_dir=env["dir"])(env),
     ConfigMismatchError, "batch_size"),
]


@pytest.fixture(scope="module")
def env(data, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad") / "ckpt"
    train(data, epochs=2, checkpoint_dir=d)
    other = fgd.MLP((2, 3, 1), hidden="tanh", output="identity")
    return {"data": data, "dir": d, "other": (fgd.make_loss(other, "mse"), other.init(jax.random.key(0)))}


@pytest.mark.parametrize("name, call, exc, match", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_raises_before_tracing(env, monkeypatch, name, call, exc, match):
    traces = []
    real_call = fgd.losses.Loss.__call__
    monkeypatch.setattr(fgd.losses.Loss, "__call__",
                        lambda self, *a: traces.append(1) or real_call(self, *a))
    monkeypatch.setattr(fgd.training.chunk, "compiled_chunk",
                        lambda *a, **k: pytest.fail("fit reached its compiled chunk"))
    with pytest.raises(exc, match=match) as err:
        call(env)
    assert traces == [], "the loss was traced before the error"
    text = str(err.value)
    for noise in ("Traceback", "XlaRuntimeError", "jaxlib", "File \""):
        assert noise not in text


@pytest.mark.parametrize("argv, fragment", [
    (["--epochs", "abc"], "--epochs"),
    (["--resume"], "--checkpoint-dir"),
    (["--checkpoint-every", "0", "--checkpoint-dir", "D"], "--checkpoint-every must be >= 1"),
])
def test_bad_cli_flags_exit_2_with_one_line(argv, fragment, tmp_path, capsys):
    """`fgd run digits` as the console script calls it (`fgd.cli.main`; the
    `python -m fgd` entry is the same function, tested in test_experiments)."""
    from fgd import cli

    argv = [a.replace("D", str(tmp_path / "ck")) if a == "D" else a for a in argv]
    status = cli.main(["--no-compile-cache", "run", "digits", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in err
    assert not (tmp_path / "digits").exists()          # refused before any work


def test_full_batch_nan_right_after_a_resume_returns_the_last_finite_params(tmp_path):
    """Full batch: the loss overflows in epoch k; a run resumed at exactly k
    must still return p[k - 1], as the uninterrupted run does."""
    X = jax.random.normal(jax.random.key(0), (2, 32), jnp.float32)
    Y = X[:1] - X[1:]
    linear = fgd.MLP((2, 1), output="identity")
    loss, p0 = fgd.make_loss(linear, "sse"), linear.init(jax.random.key(1), "xavier", dtype=jnp.float32)
    opt = fgd.sgd(0.1)                                   # diverges: float32 overflows
    with pytest.warns(RuntimeWarning, match="loss became"):
        free = fgd.fit(loss, p0, opt, X, Y, epochs=500)
    k = free.nonfinite_epoch
    assert free.stop_reason == "nonfinite" and 2 < k < 500
    d = tmp_path / "ckpt"
    fgd.fit(loss, p0, opt, X, Y, epochs=k, checkpoint_dir=d, checkpoint_every=1)
    with pytest.warns(RuntimeWarning, match=f"epoch {k}"):
        again = fgd.fit(loss, p0, opt, X, Y, epochs=500, checkpoint_dir=d)
    assert again.resumed_epoch == k and again.nonfinite_epoch == k
    assert_same_run(flat(again), flat(free))


def test_time_based_checkpoints_and_version_warning(data, tmp_path, monkeypatch):
    d = tmp_path / "ckpt"
    first = train(data, epochs=5, checkpoint_dir=d, checkpoint_every="1e-9s")
    assert steps(d)[-1] == 5 and first.resumed_epoch is None   # every chunk end is due
    monkeypatch.setattr(fgd.training.resume, "__version__", "9.9.9")
    with pytest.warns(CheckpointWarning, match="across versions"):
        again = train(data, epochs=8, checkpoint_dir=d)
    assert again.resumed_epoch == 5
    assert_same_run(flat(again), flat(train(data, epochs=8)))
