"""Reliability, second pass: special files, concurrent writers, full disks,
bfloat16, invalid targets, the mini-batch NaN undo, schedules, clear errors.

Reference values: a run hindered by a bad file, a full disk or a transient
I/O error must end bit-identical (`np.array_equal` on every leaf and on the
history) to the same run unhindered; bfloat16 and float16 training is
compared with the float32 run within the narrow format's tolerance; the
mini-batch NaN undo must return exactly the params of a run stopped one
epoch earlier.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd
from fgd import checkpoint as ckpt
from fgd.checkpoint import CheckpointLockedError, CheckpointWarning, NotRegularFileError

ROOT = Path(__file__).resolve().parent.parent
NET = fgd.MLP((2, 4, 1), hidden="tanh", output="identity")
LOSS = fgd.make_loss(NET, "mse")
OPT = fgd.adam(1e-2)


@pytest.fixture(scope="module")
def data():
    kx, kp = jax.random.split(jax.random.key(0))
    X = jax.random.normal(kx, (2, 32))
    return X, jnp.sin(X[:1]) * X[1:], NET.init(kp, "xavier")


def train(data, **kw):
    X, Y, p0 = data
    kw = {"epochs": 6, "batch_size": 8, "key": jax.random.key(1), "checkpoint_every": 2, **kw}
    if "checkpoint_dir" not in kw:
        kw.pop("checkpoint_every")
    return fgd.fit(LOSS, p0, OPT, X, Y, **kw)


def flat(result):
    out = {f"leaf_{i}": np.asarray(x)
           for i, x in enumerate(jax.tree.leaves((result.params, result.opt_state)))}
    out.update({f"history_{k}": v for k, v in result.history.items()})
    return out


def assert_same_run(got, want):
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name


def steps(d):
    return sorted(int(p.name[5:-4]) for p in Path(d).glob("ckpt-*.npz") if p.name[5:-4].isdigit())


@pytest.fixture()
def saved(data, tmp_path):
    d = tmp_path / "ckpt"
    train(data, checkpoint_dir=d)
    assert steps(d) == [2, 4, 6]
    return d, flat(train(data, epochs=8))


# --- names that are not regular files --------------------------------------------
SPECIAL = textwrap.dedent('''
    import json, os, resource, signal, sys, time, warnings
    import jax, jax.numpy as jnp
    import fgd
    signal.alarm(120)                            # a blocked open would hang here forever
    net = fgd.MLP((2, 4, 1), hidden="tanh", output="identity")
    loss = fgd.make_loss(net, "mse")
    X = jax.random.normal(jax.random.key(0), (2, 32)); Y = jnp.sin(X[:1])
    p0 = net.init(jax.random.key(1), "xavier")
    kw = dict(batch_size=8, key=jax.random.key(1), checkpoint_every=2)
    out = {}
    for kind in ("symlink", "fifo"):
        d = os.path.join(sys.argv[1], kind)
        fgd.fit(loss, p0, fgd.adam(1e-2), X, Y, epochs=6, checkpoint_dir=d, **kw)
        bad = os.path.join(d, "ckpt-99.npz")
        os.symlink("/dev/zero", bad) if kind == "symlink" else os.mkfifo(bad)
        if not out:                              # bounded memory: 1 GiB more address space
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (used + 2**30, resource.RLIM_INFINITY))
        t0 = time.perf_counter()
        try:
            fgd.checkpoint.read_header(bad)
        except fgd.checkpoint.NotRegularFileError:
            refused = time.perf_counter() - t0
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = fgd.fit(loss, p0, fgd.adam(1e-2), X, Y, epochs=8, checkpoint_dir=d, **kw)
        out[kind] = {"seconds": time.perf_counter() - t0, "refused": refused, "resumed": r.resumed_epoch,
                     "warnings": [str(w.message) for w in caught],
                     "left": os.path.islink(bad) or os.path.exists(bad),
                     "renamed": os.path.lexists(bad + ".corrupt"), "epochs": r.epochs}
    print(json.dumps(out))
''')


@pytest.mark.slow              # a child process: about 10 s on a loaded 2-core machine
@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/dev/zero").exists(), reason="POSIX")
def test_symlink_to_dev_zero_and_fifo_named_like_the_newest_checkpoint_fall_back(tmp_path):
    """In a child whose address space is capped at 1 GiB more than it uses
    (reading /dev/zero would exhaust it) and with an alarm against a blocked
    open: fit(resume=True) skips both names with a warning, resumes from the
    newest real checkpoint, and leaves them in place, not renamed."""
    script = tmp_path / "special.py"
    script.write_text(SPECIAL)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    for kind, what in (("symlink", "outside its directory"), ("fifo", "a FIFO")):
        r = out[kind]
        assert r["resumed"] == 6 and r["epochs"] == 8, r
        assert any("ckpt-99.npz" in w and what in w for w in r["warnings"]), r["warnings"]
        assert r["left"] and not r["renamed"]


def test_non_regular_entries_are_refused_and_left_alone(data, saved, tmp_path):
    d, reference = saved
    outside = tmp_path / "elsewhere.npz"
    ckpt.save(outside, {"w": np.ones(2)})
    (d / "ckpt-7.npz").symlink_to(outside)              # a link out of the directory
    (d / "ckpt-99.npz").mkdir()                         # a directory named like a checkpoint
    (d / ".tmp-fgd-x.part").mkdir()                     # and like a temp file
    with pytest.raises(NotRegularFileError, match="outside its directory"):
        ckpt.restore(d / "ckpt-7.npz", {"w": np.ones(2)})
    with pytest.raises(NotRegularFileError, match="a directory"):
        ckpt.read_header(d / "ckpt-99.npz")
    (d / "latest.npz").symlink_to("ckpt-6.npz")         # a link inside it is followed
    assert ckpt.read_metadata(d / "latest.npz")["epoch"] == 6
    with pytest.warns(CheckpointWarning, match="ckpt-99.npz"):
        result = train(data, epochs=8, checkpoint_dir=d)
    assert result.resumed_epoch == 6
    assert_same_run(flat(result), reference)
    assert (d / "ckpt-99.npz").is_dir() and (d / ".tmp-fgd-x.part").is_dir()
    assert (d / "ckpt-7.npz").is_symlink() and not list(d.glob("*.corrupt"))
    with pytest.warns(CheckpointWarning, match="not regular files"):
        train(data, epochs=2, checkpoint_dir=d, resume=False)
    assert (d / "ckpt-99.npz").is_dir() and steps(d) == [2, 7, 99]


@pytest.mark.parametrize("times, outcome", [(1, "resumed"), (2, "raised")])
def test_transient_read_error_is_retried_once_then_raised_never_corruption(data, saved,
                                                                          monkeypatch, times, outcome):
    d, reference = saved
    real, calls = ckpt._Capped._read, []

    def flaky(self, n):
        if len(calls) < times:
            calls.append(1)
            raise OSError(errno.EIO, "Input/output error")
        return real(self, n)

    monkeypatch.setattr(ckpt._Capped, "_read", flaky)
    if outcome == "resumed":
        result = train(data, epochs=8, checkpoint_dir=d)
        assert result.resumed_epoch == 6
        assert_same_run(flat(result), reference)
    else:
        with pytest.raises(OSError) as err:
            train(data, epochs=8, checkpoint_dir=d)
        assert err.value.errno == errno.EIO
    assert steps(d)[-1] >= 6 and not list(d.glob("*.corrupt")), "an I/O error is not damage"


# --- one writer per directory --------------------------------------------------------
HOLDER = textwrap.dedent('''
    import sys, time
    from fgd.checkpoint import CheckpointManager
    manager = CheckpointManager(sys.argv[1], lock=True)
    print("locked", flush=True)
    time.sleep(120)
''')


def test_second_process_gets_the_lock_error_and_a_killed_holders_lock_is_taken_over(data, tmp_path):
    d = tmp_path / "ckpt"
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    holder = subprocess.Popen([sys.executable, str(script), str(d)], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with pytest.raises(CheckpointLockedError, match=f"process {holder.pid}") as err:
            train(data, checkpoint_dir=d)
        assert err.value.pid == holder.pid and steps(d) == []
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
        holder.stderr.close()
    result = train(data, checkpoint_dir=d)               # the dead holder's lock is taken over
    assert result.epochs == 6 and steps(d) == [2, 4, 6]
    assert (d / ckpt.LOCK_NAME).read_text().strip() == str(os.getpid())


def test_lock_in_this_process_and_a_stale_holder_record(data, tmp_path):
    d = tmp_path / "ckpt"
    with ckpt.CheckpointManager(d, lock=True):
        with pytest.raises(CheckpointLockedError, match=f"process {os.getpid()}"):
            train(data, checkpoint_dir=d)
    train(data, epochs=2, checkpoint_dir=d)               # released: the next fit writes
    # a lock still held (by a descriptor a dead writer's forked child kept) whose
    # recorded holder is dead is taken over
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    fd = os.open(d / ckpt.LOCK_NAME, os.O_RDWR)
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{gone.pid}\n".encode())
        assert train(data, epochs=4, checkpoint_dir=d).resumed_epoch == 2
    finally:
        os.close(fd)


def test_stale_temp_files_and_directories_are_handled(data, saved):
    d, reference = saved
    (d / ".tmp-fgd-x.part").mkdir()
    (d / ".tmp-fgd-ckpt-8.npz-999999999-abcdefgh.part").write_bytes(b"a dead writer's")
    result = train(data, epochs=8, checkpoint_dir=d)
    assert_same_run(flat(result), reference)
    assert (d / ".tmp-fgd-x.part").is_dir()
    assert not (d / ".tmp-fgd-ckpt-8.npz-999999999-abcdefgh.part").exists()


# --- a full disk, a read-only or forbidden directory ------------------------------------
def _in(directory, fd_or_path):
    if isinstance(fd_or_path, int):
        try:
            fd_or_path = os.readlink(f"/proc/self/fd/{fd_or_path}")
        except OSError:
            return fd_or_path > 2
    return os.fspath(directory) in os.fspath(fd_or_path)


@pytest.fixture(params=["tmpfs", "patched"])
def full_disk(request, tmp_path, monkeypatch):
    """A checkpoint directory on a full filesystem: a small tmpfs filled up
    (where it can be mounted), else a patched os.write raising ENOSPC."""
    d = tmp_path / "disk"
    d.mkdir()
    if request.param == "tmpfs":
        if os.name != "posix" or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                                                 str(d)], capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(d)]))
        (d / "ckpt").mkdir()
        (d / "ckpt" / ckpt.LOCK_NAME).write_text("1\n")     # its block, before the disk is full
        fd = os.open(d / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as err:
            assert err.errno == errno.ENOSPC
        finally:
            os.close(fd)
    else:
        real = os.write

        def write(fd, data):
            if _in(d, fd):
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(fd, data)
        monkeypatch.setattr(os, "write", write)
    return d / "ckpt"


def test_full_disk_with_warn_completes_and_equals_an_unhindered_run(data, full_disk):
    reference = flat(train(data, epochs=8))
    with pytest.raises(OSError) as err:                  # the default: raise
        train(data, epochs=8, checkpoint_dir=full_disk)
    assert err.value.errno == errno.ENOSPC
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(data, epochs=8, checkpoint_dir=full_disk, checkpoint_on_error="warn")
    assert_same_run(flat(result), reference)
    full = [w for w in caught if "ENOSPC" in str(w.message)]
    assert len(full) == 1 and issubclass(full[0].category, CheckpointWarning), "once per kind"


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_read_only_or_forbidden_directory_with_warn(data, tmp_path, monkeypatch, code):
    d = tmp_path / "ckpt"
    real = os.open

    def refuse(path, flags, *a, **k):
        if _in(d, path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(OSError):
        train(data, checkpoint_dir=d)
    with pytest.warns(CheckpointWarning, match=errno.errorcode[code]):
        result = train(data, checkpoint_dir=d, checkpoint_on_error="warn")
    assert_same_run(flat(result), flat(train(data)))
    with pytest.raises(ValueError, match="checkpoint_on_error"):
        train(data, checkpoint_dir=d, checkpoint_on_error="ignore")


# --- bfloat16 ------------------------------------------------------------------------
def _traffic():
    t = fgd.data.traffic(jnp.float32)
    lo, hi = t.X.min(axis=1, keepdims=True), t.X.max(axis=1, keepdims=True)
    lo_y, hi_y = t.Y.min(axis=1, keepdims=True), t.Y.max(axis=1, keepdims=True)
    net = fgd.MLP((3, 8, 2), hidden="sigmoid", output="identity")
    return (fgd.make_loss(net, "sse"), net, 2 * (t.X - lo) / (hi - lo) - 1,
            2 * (t.Y - lo_y) / (hi_y - lo_y) - 1, fgd.sgd(0.01), dict(epochs=30))


def _digits():
    pytest.importorskip("sklearn")
    d = fgd.data.digits(jnp.float32)
    net = fgd.MLP((64, 32, 10), hidden="relu", output="softmax")
    return (fgd.make_loss(net, "cross_entropy"), net, d.X, d.Y, fgd.sgd(0.5), dict(epochs=10))


@pytest.mark.slow              # six compiles: about 10-20 s on a loaded 2-core machine
@pytest.mark.parametrize("problem", [_traffic, _digits], ids=["traffic 3-8-2", "digits 64-32-10"])
def test_bfloat16_and_float16_train_like_float32(problem):
    loss, net, X, Y, opt, kw = problem()
    p32 = net.init(jax.random.key(0), "xavier", dtype=jnp.float32)
    ref = fgd.fit(loss, p32, opt, X, Y, **kw)
    for dtype, rtol in ((jnp.float16, 1e-2), (jnp.bfloat16, 5e-2)):   # 11- and 8-bit mantissas
        p = jax.tree.map(lambda a: a.astype(dtype), p32)
        got = fgd.fit(loss, p, opt, X, Y, **kw)
        assert got.params[0]["W"].dtype == dtype
        assert got.history["loss"].dtype == np.float32, "losses recorded in float32"
        assert got.stop_reason == "epochs" and np.isfinite(got.history["loss"]).all()
        np.testing.assert_allclose(got.history["loss"], ref.history["loss"], rtol=rtol)
        for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(ref.params)):
            scale = float(jnp.max(jnp.abs(b)))
            np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=rtol * 2 * scale)


# --- invalid targets -------------------------------------------------------------------
@pytest.mark.parametrize("bad", [2.0, -1.0])
def test_invalid_targets_are_refused_by_fit_and_sweep(bad):
    net = fgd.MLP((2, 3, 1), hidden="tanh", output="sigmoid")
    loss = fgd.make_loss(net, "bce")
    X = jax.random.normal(jax.random.key(0), (2, 8))
    Y = jnp.full((1, 8), bad)
    p0 = net.init(jax.random.key(1))
    with pytest.raises(ValueError, match=r"Y must hold targets in \[0, 1\] for the bce cost"):
        loss(p0, X, Y)
    with pytest.raises(ValueError, match=r"Y must hold targets in \[0, 1\] for the bce cost"):
        fgd.fit(loss, p0, fgd.sgd(0.1), X, Y, epochs=3)
    with pytest.raises(ValueError, match=r"Yv must hold targets in \[0, 1\]"):
        fgd.fit(loss, p0, fgd.sgd(0.1), X, Y * 0 + 0.5, epochs=3, validation=(X, Y))
    with pytest.raises(ValueError, match=r"Y must hold targets in \[0, 1\]"):
        fgd.sweep(loss, fgd.sgd, X, Y, init=net.init, keys=jax.random.split(jax.random.key(0), 2),
                  lrs=[0.1], epochs=3)


# --- the mini-batch NaN undo -----------------------------------------------------------------
def test_minibatch_nan_epoch_is_undone_to_the_params_it_started_from():
    """float32 SGD past its stable rate: the loss overflows within some epoch k;
    fit returns the params and state epoch k started from, exactly those of a
    run of k epochs."""
    X = jax.random.normal(jax.random.key(0), (2, 64), jnp.float32) * 3
    Y = X[:1] - X[1:]
    linear = fgd.MLP((2, 1), output="identity")
    loss = fgd.make_loss(linear, "sse")
    p0 = linear.init(jax.random.key(1), "xavier", dtype=jnp.float32)
    opt, kw = fgd.sgd(0.3, momentum=0.5), dict(batch_size=16, key=jax.random.key(3))
    with pytest.warns(RuntimeWarning, match="loss became"):
        stopped = fgd.fit(loss, p0, opt, X, Y, epochs=200, **kw)
    k = stopped.nonfinite_epoch
    assert stopped.stop_reason == "nonfinite" and k is not None and k >= 2
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(stopped.params))
    earlier = fgd.fit(loss, p0, opt, X, Y, epochs=k, **kw)
    assert earlier.stop_reason == "epochs"
    for a, b in zip(jax.tree.leaves((stopped.params, stopped.opt_state)),
                    jax.tree.leaves((earlier.params, earlier.opt_state))):
        np.testing.assert_array_equal(a, b)
    assert stopped.updates == earlier.updates == k * 4


# --- schedules over their whole range -------------------------------------------------------
def test_schedules_are_checked_over_their_whole_range():
    S = fgd.schedules
    with pytest.raises(ValueError, match="alpha"):
        S.cosine_decay(0.1, 10, alpha=-1)                # -0.1 after step 10: gradient ascent
    with pytest.raises(ValueError, match="end_value"):
        S.warmup_cosine_decay(0.0, 0.1, 2, 10, end_value=-0.01)
    for make in (lambda: S.cosine_decay(0.1, 2.5), lambda: S.inverse_time(0.1, 0.5, 2.5),
                 lambda: S.exponential_decay(0.1, 2.5, 0.5),
                 lambda: S.exponential_decay(0.1, 2, 0.5, transition_begin=1.5),
                 lambda: S.warmup_cosine_decay(0.0, 0.1, 2, 10.5),
                 lambda: S.piecewise_constant(0.1, {2.5: 0.1})):
        with pytest.raises(TypeError, match="integer"):
            make()
    big, top = 10 ** 30, jnp.int32(2 ** 31 - 1)
    for schedule, at_top in ((S.cosine_decay(0.1, big), 0.1), (S.inverse_time(0.1, 0.5, big), 0.1),
                             (S.exponential_decay(0.1, big, 0.5), 0.1),
                             (S.exponential_decay(0.1, 2, 0.5, transition_begin=big), 0.1),
                             (S.piecewise_constant(0.1, {big: 0.5}), 0.1),
                             (S.warmup_cosine_decay(0.1, 0.1, big, 2 * big), 0.1)):
        for count in (jnp.int32(0), top):
            value = float(schedule(count))
            assert np.isfinite(value) and value == pytest.approx(at_top, rel=1e-6)
    cosine = S.cosine_decay(0.1, 10, alpha=0.0)
    assert min(float(cosine(jnp.int32(t))) for t in range(0, 40)) >= 0


# --- errors that name the argument -------------------------------------------------------
def _step_with(X):
    step = fgd.make_step(LOSS, fgd.sgd(0.1))
    p = NET.init(jax.random.key(0))
    return step(p, fgd.sgd(0.1).init(p), X, jnp.zeros((1, 4)))


UNCLEAR = [
    ("history None", lambda d: train(d, history=None), TypeError, "history"),
    ("history 3", lambda d: train(d, history=3), TypeError, "history"),
    ("piecewise list", lambda d: fgd.schedules.piecewise_constant(0.1, [(1, 0.1)]), TypeError,
     "boundaries_and_scales"),
    ("sweep 0 keys", lambda d: fgd.sweep(LOSS, fgd.sgd, d[0], d[1], init=NET.init,
                                         keys=jax.random.split(jax.random.key(0), 0), lrs=[0.1]),
     ValueError, "keys"),
    ("init 2 keys", lambda d: NET.init(jax.random.split(jax.random.key(0), 2)), ValueError, "key"),
    ("step X object", lambda d: _step_with(object()), TypeError, "X must be an array"),
    ("step X string", lambda d: _step_with("abc"), TypeError, "X must be an array"),
]


@pytest.mark.parametrize("name, call, exc, match", UNCLEAR, ids=[c[0] for c in UNCLEAR])
def test_unclear_errors_now_name_the_argument(data, name, call, exc, match):
    with pytest.raises(exc, match=match) as err:
        call(data)
    assert "Traceback" not in str(err.value) and "jaxlib" not in str(err.value)


def _x64_off(fn):
    def call(d):
        with fgd.enable_x64(False):
            return fn(d)
    return call


SILENT = [
    ("NaN initial params", lambda d: fgd.fit(LOSS, jax.tree.map(lambda a: a * jnp.nan, d[2]), OPT,
                                             d[0], d[1], epochs=3),
     ValueError, r"params\[0\]\['W'\] must be finite"),
    ("every 1e400s", lambda d: train(d, checkpoint_dir="unused", checkpoint_every="1e400s"),
     ValueError, "checkpoint_every"),
    ("progress yes", lambda d: train(d, progress="yes"), TypeError, "progress"),
    ("progress 5", lambda d: train(d, progress=5), TypeError, "progress"),
    ("2 typed keys, full batch", lambda d: train(d, batch_size=None,
                                                key=jax.random.split(jax.random.key(0), 2)),
     ValueError, "key"),
    ("float64 with x64 off", _x64_off(lambda d: NET.init(jax.random.key(0), dtype="float64")),
     ValueError, "dtype"),
    ("sweep sgd(-lr)", lambda d: fgd.sweep(LOSS, lambda lr: fgd.sgd(-lr), d[0], d[1], init=NET.init,
                                           keys=jax.random.split(jax.random.key(0), 2), lrs=[0.1]),
     ValueError, "lr"),
    ("backprop 1e300 float32", lambda d: fgd.backprop(
        NET, "mse", jax.tree.map(lambda a: a.astype(jnp.float32), d[2]),
        np.full((2, 4), 1e300), np.zeros((1, 4))), ValueError, "X must be finite in float32"),
]
ON_PURPOSE = [   # accepted, and documented in the README's reliability table
    ("legacy uint32[2] key", lambda d: train(d, batch_size=None, key=jax.random.PRNGKey(0))),
    ("softmax output with bce", lambda d: fgd.fit(
        fgd.make_loss(fgd.MLP((2, 3, 2), output="softmax"), "bce"),
        fgd.MLP((2, 3, 2), output="softmax").init(jax.random.key(0)), OPT, d[0],
        jnp.concatenate([d[1] > 0, d[1] <= 0]).astype(d[0].dtype), epochs=3)),
]


@pytest.mark.parametrize("name, call, exc, match", SILENT, ids=[c[0] for c in SILENT])
def test_once_silent_cases_now_raise(data, tmp_path, monkeypatch, name, call, exc, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exc, match=match):
        call(data)
    assert not (tmp_path / "unused").exists(), "refused before anything was written"


@pytest.mark.parametrize("name, call", ON_PURPOSE, ids=[c[0] for c in ON_PURPOSE])
def test_cases_accepted_on_purpose(data, name, call):
    result = call(data)
    assert result.epochs == 3 if "bce" in name else result.epochs == 6
    assert np.isfinite(result.history["loss"]).all()
