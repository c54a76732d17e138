"""fgd.parallel: data-parallel fit and make_step equal one device's.

Every test runs its JAX code in a fresh Python subprocess, because the device
count (`XLA_FLAGS=--xla_force_host_platform_device_count=N`) and
`jax.distributed` must be set before JAX starts. Subprocesses run in float32
(the test session's float64 switch is not inherited) with tiny networks, and
print one `RESULT {json}` line that the test reads.

Reference values: the same call without a mesh (or with one process and one
device). Data parallelism only splits the sums of the loss and the gradient
over devices, so the two differ by the order of float32 sums: `RTOL_F32`,
relative to each array's largest entry.
"""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fgd

RTOL_F32 = 1e-5
TIMEOUT = 240          # seconds per subprocess: JAX start-up + compiles on a busy machine
ROOT = Path(__file__).resolve().parents[1]

# Shared by the subprocess programs: a relative difference that does not blow
# up on entries near 0 (each array scaled by its largest entry).
PRELUDE = """
import json, os
import numpy as np
import jax, jax.numpy as jnp
import fgd

def rel(a, b):
    out = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        assert x.shape == y.shape, (x.shape, y.shape)
        out = max(out, float(np.max(np.abs(x - y)) / max(np.max(np.abs(x)), 1e-30)))
    return out

def report(**values):
    print("RESULT " + json.dumps(values), flush=True)
"""


def _env(devices: int, **extra) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("JAX_ENABLE_X64", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _result(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][len("RESULT "):]) if lines else {}


def _describe(proc, what: str) -> str:
    return (f"{what} exited with {proc.returncode}\n--- stdout (tail) ---\n{proc.stdout[-3000:]}"
            f"\n--- stderr (tail) ---\n{proc.stderr[-5000:]}")


def run_python(code: str, devices: int, **env) -> dict:
    """Run `PRELUDE + code` in a fresh interpreter with `devices` CPU devices;
    the dict it reported. Fails the test with the output on error or timeout."""
    try:
        proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
                              env=_env(devices, **env), capture_output=True, text=True,
                              timeout=TIMEOUT, cwd=ROOT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"subprocess timed out after {TIMEOUT} s\n{(e.stderr or b'')[-3000:]!r}")
    if proc.returncode != 0 or not _result(proc.stdout):
        pytest.fail(_describe(proc, "subprocess"))
    return _result(proc.stdout)


# --- one process, 8 simulated devices ---------------------------------------------
FIT_CODE = """
mode = os.environ["MODE"]
m = {"full": 96, "mini": 96, "mini_replicated": 100}[mode]       # 100: 8 does not divide m
batch_size = None if mode == "full" else 16
rng = np.random.default_rng(0)
X = rng.normal(size=(5, m)).astype(np.float32)
Y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, m)].T
Xv = rng.normal(size=(5, 20)).astype(np.float32)                  # 20: replicated
Yv = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 20)].T
net = fgd.MLP((5, 16, 3), hidden="tanh", output="softmax")
params = net.init(jax.random.key(1), scheme="xavier", dtype=jnp.float32)
loss = fgd.make_loss(net, "cross_entropy", l2=1e-3)
mesh = fgd.parallel.data_mesh()
kw = dict(epochs=25, batch_size=batch_size, key=jax.random.key(3), validation=(Xv, Yv),
          history=("loss", "val_loss", "grad_norm"))
one = fgd.fit(loss, params, fgd.adam(0.01), X, Y, **kw)
many = fgd.fit(loss, params, fgd.adam(0.01), X, Y, mesh=mesh, **kw)
report(devices=jax.device_count(), epochs=[one.epochs, many.epochs],
       updates=[one.updates, many.updates],
       params=rel(one.params, many.params), opt_state=rel(one.opt_state, many.opt_state),
       history={k: rel(one.history[k], many.history[k]) for k in one.history},
       replicated=all(x.sharding.is_fully_replicated for x in jax.tree.leaves(many.params)),
       loss_drop=float(one.history["loss"][0] - one.history["loss"][-1]))
"""


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
@pytest.mark.parametrize("mode", ["full", "mini", "mini_replicated"])
def test_fit_on_8_devices_equals_one_device(mode):
    r = run_python(FIT_CODE, 8, MODE=mode)
    assert r["devices"] == 8
    assert r["epochs"] == [25, 25] and r["updates"][0] == r["updates"][1]
    assert r["loss_drop"] > 0                      # the runs compared do train
    assert r["params"] < RTOL_F32, r
    assert r["opt_state"] < RTOL_F32, r
    assert max(r["history"].values()) < RTOL_F32, r
    assert r["replicated"]


STEP_CODE = """
rng = np.random.default_rng(1)
X = rng.normal(size=(4, 64)).astype(np.float32)
Y = rng.normal(size=(2, 64)).astype(np.float32)
net = fgd.MLP((4, 8, 2), hidden="sigmoid", output="identity")
mesh = fgd.parallel.data_mesh()
out = {}
for cost in ("mse", "sse"):                    # a mean over m and a plain sum
    loss = fgd.make_loss(net, cost)
    init = lambda: net.init(jax.random.key(0), scheme="normal", dtype=jnp.float32)
    lr = 0.05 if cost == "mse" else 0.05 / 64   # the same steps: sse's gradient is m times mse's
    one, many = fgd.make_step(loss, fgd.sgd(lr)), fgd.make_step(loss, fgd.sgd(lr), mesh=mesh)
    p1 = init(); s1 = fgd.sgd(lr).init(p1)
    p8 = init(); s8 = fgd.sgd(lr).init(p8)
    v1, v8 = [], []
    for _ in range(5):
        p1, s1, a = one(p1, s1, X, Y)
        p8, s8, b = many(p8, s8, X, Y)
        v1.append(float(a)); v8.append(float(b))
    out[cost] = dict(params=rel(p1, p8), loss=rel(np.array(v1), np.array(v8)))
    # the loss of one step equals the loss over the whole batch, never a per-device sum
    out[cost]["first_loss_vs_direct"] = rel(np.array(v1[0]), np.array(loss(init(), X, Y)))
    out[cost]["first_loss_mesh"] = rel(np.array(v1[0]), np.array(v8[0]))
hlo = many.jitted.lower(fgd.parallel.replicate(mesh, p8), fgd.parallel.replicate(mesh, s8),
                        fgd.parallel.shard_examples(mesh, X), fgd.parallel.shard_examples(mesh, Y)
                        ).compile().as_text()
report(out=out, all_reduce="all-reduce" in hlo,
       x_shard=list(fgd.parallel.shard_examples(mesh, X).addressable_shards[0].data.shape))
"""


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_make_step_on_8_devices_equals_one_device():
    r = run_python(STEP_CODE, 8)
    for cost, d in r["out"].items():
        assert max(d.values()) < RTOL_F32, (cost, d)
    assert r["all_reduce"]                          # XLA sums the devices' partial gradients
    assert r["x_shard"] == [4, 8]                   # each device holds 64 / 8 examples


ERROR_CODE = """
net = fgd.MLP((2, 3, 1))
params = net.init(jax.random.key(0), dtype=jnp.float32)
loss = fgd.make_loss(net, "mse")
X, Y = np.zeros((2, 12), np.float32), np.zeros((1, 12), np.float32)
mesh = fgd.parallel.data_mesh()
def message(f):
    try:
        f()
    except (ValueError, TypeError) as e:
        return [type(e).__name__, str(e)]
    return None
step = fgd.make_step(loss, fgd.sgd(0.1), mesh=mesh)
report(
    full=message(lambda: fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=2, mesh=mesh)),
    mini=message(lambda: fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=2, batch_size=6, mesh=mesh)),
    step=message(lambda: step(params, fgd.sgd(0.1).init(params), X, Y)),
    local=message(lambda: fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=2, local_data=True)),
    not_mesh=message(lambda: fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=2, mesh="data")),
    ok=message(lambda: fgd.fit(loss, params, fgd.sgd(0.1), X, Y, epochs=2, batch_size=8, mesh=mesh)))
"""


def test_indivisible_batch_is_rejected_naming_both_numbers():
    r = run_python(ERROR_CODE, 8)
    for case, size in (("full", 12), ("mini", 6), ("step", 12)):
        kind, msg = r[case]
        assert kind == "ValueError", r[case]
        assert f"got {size} examples for 8 devices" in msg, msg
    assert r["mini"][1].startswith("batch_size")
    assert r["local"][0] == "ValueError" and "mesh" in r["local"][1]
    assert r["not_mesh"][0] == "TypeError" and "Mesh" in r["not_mesh"][1]
    assert r["ok"] is None                          # m = 12 need not divide: batch 8 does


# --- several processes: the README's script ----------------------------------------
def readme_script() -> str:
    """The "Scaling out" script, as fgd.parallel's docstring shows it."""
    doc = fgd.parallel.__doc__
    start = doc.index("each::\n") + len("each::\n")
    return textwrap.dedent(doc[start:]).strip() + "\n"


# After the script: save what it trained, then train full batch once more with
# each process passing only its own block of examples (local_data=True).
DUMP_CODE = """
P, p = jax.process_count(), jax.process_index()
block = slice(p * X.shape[1] // P, (p + 1) * X.shape[1] // P)
local = fgd.fit(fgd.make_loss(net, "bce"), params, fgd.sgd(0.5), X[:, block], Y[:, block],
                epochs=15, mesh=mesh, local_data=True)
np.savez(os.environ["FGD_TEST_OUT"] + f"/p{p}.npz",
         *[np.asarray(x) for x in jax.tree.leaves((result.params, result.history["loss"],
                                                   local.params, local.history["loss"]))])
report(process=p, devices=jax.device_count(), processes=P)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_together(jobs: dict, tmp_path: Path) -> dict:
    """Start every `name: (code, devices, env)` at once; {name: stdout} when all
    exit 0. The first to fail (or the deadline) kills the others and fails the
    test with its output: a process left waiting for a dead peer is not the
    cause. Output goes to files, so a full pipe never blocks a process."""
    import time

    procs = {}
    for name, (code, devices, env) in jobs.items():
        out = open(tmp_path / f"{name}.out", "w+")
        err = open(tmp_path / f"{name}.err", "w+")
        procs[name] = (subprocess.Popen([sys.executable, "-c", code], env=_env(devices, **env),
                                        stdout=out, stderr=err, text=True, cwd=ROOT), out, err)
    text = lambda f: (f.seek(0), f.read())[1]
    deadline = time.monotonic() + TIMEOUT
    try:
        while any(p.poll() is None for p, _, _ in procs.values()):
            for name, (p, out, err) in procs.items():
                if p.poll() not in (None, 0):
                    pytest.fail(_describe(subprocess.CompletedProcess(p.args, p.returncode,
                                                                      text(out), text(err)), name))
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {TIMEOUT} s; stderr tails: " + "; ".join(
                    f"{name}: {text(err)[-1500:]}" for name, (_, _, err) in procs.items()))
            time.sleep(0.2)
        for name, (p, out, err) in procs.items():
            if p.returncode != 0:
                pytest.fail(_describe(subprocess.CompletedProcess(p.args, p.returncode,
                                                                  text(out), text(err)), name))
        return {name: text(out) for name, (_, out, _) in procs.items()}
    finally:
        for p, out, err in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
            out.close()
            err.close()


@pytest.mark.slow   # a long end-to-end run: deselected by -m 'not slow'
def test_readme_script_two_processes_equal_one(tmp_path):
    import numpy as np

    code = readme_script() + PRELUDE + DUMP_CODE
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    coordinator = f"127.0.0.1:{_free_port()}"
    jobs = {f"process {i} of 2": (code, 2, dict(JAX_COORDINATOR_ADDRESS=coordinator,
                                                 FGD_NUM_PROCESSES=2, FGD_PROCESS_ID=i,
                                                 FGD_TEST_OUT=tmp_path / "two"))
            for i in range(2)}
    jobs["single process"] = (code, 1, dict(FGD_TEST_OUT=tmp_path / "one"))
    outs = list(_run_together(jobs, tmp_path).values())
    assert "processes: 2, devices: 4, loss:" in outs[0]     # the script's own line
    assert "processes: 1, devices: 1, loss:" in outs[2]
    assert [_result(o)["devices"] for o in outs] == [4, 4, 1]

    load = lambda path: [a for _, a in sorted(np.load(path).items(), key=lambda kv: int(kv[0][4:]))]
    ref = load(tmp_path / "one" / "p0.npz")
    for p in range(2):
        got = load(tmp_path / "two" / f"p{p}.npz")
        assert len(got) == len(ref)
        for a, b in zip(ref, got):
            assert np.max(np.abs(a - b)) <= RTOL_F32 * np.max(np.abs(a)), (p, a, b)
    diffs = [float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
             for p in range(2) for a, b in zip(ref, load(tmp_path / "two" / f"p{p}.npz"))]
    print(f"2 processes x 2 devices vs 1 process: max relative difference {max(diffs):.3g}")
    assert ref[len(ref) // 2 - 1][-1] < ref[len(ref) // 2 - 1][0]    # the script's loss fell


def test_readme_shows_the_tested_script():
    """The README's "Scaling out" script is this one."""
    import re

    readme = (ROOT / "README.md").read_text()
    heading = re.search(r"^#+ Scaling out.*$", readme, re.MULTILINE)
    assert heading is not None, "README.md has no 'Scaling out' section"
    section = readme[heading.end():]
    assert "```python\n" in section, "the Scaling out section shows no ```python block"
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert block.strip() == readme_script().strip()
