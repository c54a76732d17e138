"""Training speed of fgd.fit and fgd.sweep against numpy, PyTorch and the machine's roofline.

    python experiments/benchmark.py            # about 30 s on 2 cores
    python experiments/benchmark.py --quick    # fewer epochs and samples, about 15 s
    python experiments/benchmark.py --only compile   # one section: tiny, medium, sweep, compile, grid
    python experiments/benchmark.py --only tiny,sweep   # several, comma-separated
    python experiments/benchmark.py --only all       # the three and compile
    python experiments/benchmark.py --only grid      # the size grid (experiments/benchmark_grid.py)

Three cases, each contender measured side by side in one process: the
repeats are interleaved (A B C A B C ...) so that load from other processes
hits all of them alike, and the medians are compared. The first call of each
contender (compilation included for fgd) is printed as "cold".

- tiny: the MATLAB BP example's 3-8-2 network (sigmoid hidden, identity output) on the 20
  traffic samples (premnmx-scaled), full-batch gradient descent on sse, lr
  0.05, float32. fgd.fit vs a hand-written numpy BP loop (targets: >= 12x its
  epochs/s) and a PyTorch autograd loop (>= 100x), torch.set_num_threads set
  to the CPU count. In both this case and the next PyTorch is timed after
  the others, in repeats of its own (`interleave_torch`).
- medium: a 784-512-512-10 ReLU MLP, softmax cross-entropy, Adam, shuffled
  mini-batches of 256, one epoch of synthetic samples. fgd.fit vs the
  roofline (target >= 0.9) and PyTorch (target: faster; it runs a quarter
  epoch, its samples/s compared). "fgd.fit" trains on the same X every
  call, as a loop of one-epoch fits does, and reuses the examples-first copy
  of X that mini-batch mode gathers from; "fgd.fit, new X" gets a new array
  each call and pays for that copy (printed, no target); "fgd.fit, columns"
  gathers batch columns of X as given (`batch_gather="columns"`: no copy,
  printed, no target). Then, in a new process for each of the two, the peak
  resident memory of the fit beside the sizes of X, Y and the params (Linux).
  Roofline samples/s =
  (median float32 GEMM FLOP/s of a 2048^3 jax product, measured interleaved
  with the fits) / (training FLOPs per sample: forward 2P, weight gradients
  2P, input gradients 2(P - 784*512), P the number of weights).
  "GEMMs alone" is an epoch of just those matrix products at
  the step's shapes (batches of 256, fit's layout, W2^T dZ from a
  transposed copy as fit computes it on XLA:CPU) in one jitted scan: how
  near the roofline XLA's GEMMs themselves come at these shapes, the
  ceiling for any fit of this net (printed, no target).
- sweep: 64 random starts of the tiny network in one fgd.sweep call vs 64
  sequential fgd.fit calls (the same optimizer object, so fit compiles once;
  target: >= 12x). Both start from the same 64 params, drawn before the
  clock starts: the fits from each, the sweep from them stacked. A 1-epoch
  sweep, interleaved with them, measures the sweep's host work per call;
  the rest of the sweep's time over its epochs is printed as its time per
  epoch of all runs. A 1-epoch sweep given `init` and the 64 keys instead
  (it draws the params itself, one vmapped init per call) is timed beside
  them: what drawing the params adds to the host work.

- compile (with --only compile or --only all: it starts new processes):
  what compiles. A 10-rate loop of fgd.fit with a new fgd.sgd(lr)
  each time (target: the first fit compiles, the 9 others nothing: one
  compilation of the chunk); `python -m fgd run traffic` in two new
  processes sharing a fresh persistent compilation cache, cold then warm
  (target: the warm run compiles nothing, every program a cache hit); and
  the wall time of `python -m fgd list` (target: under 1 s). Compilations
  are counted with jax.monitoring's backend-compile events.

- grid (with --only grid; --quick for its smoke setting): fgd.fit against
  the plain jitted loop, make_step, flax + optax, PyTorch and numpy over
  126 points of sizes, costs and batch modes; see benchmark_grid.py.

PyTorch is skipped when it is not installed. Its settings are left as they
are: on a busy machine its OpenMP threads, which spin between operations,
make its tiny-case figure erratic (OMP_WAIT_POLICY=PASSIVE steadies it, but
halves it on a quiet machine).
"""
from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

import fgd
import fgd._compile
import fgd.cli


@dataclasses.dataclass(frozen=True)
class Config:
    """Training-speed benchmark: fgd vs numpy, PyTorch and the roofline."""

    quick: bool = False
    repeats: int = 5                # interleaved repeats per case (medians)
    tiny_epochs: int = 20_000       # epochs of the tiny 3-8-2 net
    torch_tiny_epochs: int = 2_000  # PyTorch's loop is ~100x slower: fewer epochs, same rate
    medium_samples: int = 61_440    # examples of the medium MLP's epoch
    torch_medium_samples: int = 15_360   # PyTorch: a quarter epoch, same samples/s
    sweep_configs: int = 64         # configurations of the sweep case
    sweep_epochs: int = 20_000      # epochs of each sweep configuration
    seed: int = 0
    only: tuple[str, ...] = ()      # sections, comma-separated: tiny, medium, sweep, compile, grid; all: the first four; empty: the first three


#: the sections of `--only`, in the order they run ("all": the first four)
SECTIONS = ("tiny", "medium", "sweep", "compile", "grid")


def check_only(only: tuple) -> None:
    """Refuse an unknown section of `--only` before anything runs."""
    unknown = [name for name in only if name not in (*SECTIONS, "all")]
    if unknown:
        raise fgd.cli.UsageError(f"python experiments/benchmark.py: --only takes "
                                 f"{', '.join(SECTIONS)} or all, comma-separated; got "
                                 f"{','.join(only)}")


def quick_config(config: Config) -> Config:
    return dataclasses.replace(config, repeats=3, tiny_epochs=5_000, torch_tiny_epochs=500,
                               medium_samples=10_240, torch_medium_samples=2_560, sweep_epochs=5_000)


# --- helpers ---------------------------------------------------------------------------
def timed(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def interleave(contenders: dict, repeats: int) -> dict:
    """{name: fn} -> {name: (cold seconds, [warm seconds...])}, calls interleaved."""
    cold = {name: timed(fn) for name, fn in contenders.items()}
    warm = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            warm[name].append(timed(fn))
    return {name: (cold[name], warm[name]) for name in contenders}


def interleave_torch(fn: Callable, repeats: int) -> dict:
    """{"PyTorch": (cold, [warm...])}, timed after the JAX and numpy contenders.

    PyTorch's OpenMP threads keep spinning for a while after each of its
    calls; interleaved with the others they slowed the next contender's call
    (the medium fit's epoch 0.55 s alone, 0.69-0.73 s right after PyTorch,
    in runs on the 2-core machine), so PyTorch gets repeats of its own.
    """
    return interleave({"PyTorch": fn}, repeats)


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def block(tree):
    jax.block_until_ready(tree)
    return tree


# --- tiny: the MATLAB BP example's 3-8-2 network ----------------------------------------------------
def tiny_data():
    d = fgd.data.traffic(jnp.float32)
    X, _ = fgd.data.premnmx(d.X)
    Y, _ = fgd.data.premnmx(d.Y)
    return np.asarray(X, np.float32), np.asarray(Y, np.float32)


TINY = fgd.MLP((3, 8, 2), hidden="sigmoid", output="identity")


def numpy_bp(params, X, Y, lr, epochs):
    """The MATLAB BP example's loop in numpy, in place."""
    W1, b1, W2, b2 = (np.array(params[0]["W"]), np.array(params[0]["b"]),
                      np.array(params[1]["W"]), np.array(params[1]["b"]))
    lr = np.float32(lr)
    for _ in range(epochs):
        H = 1 / (1 + np.exp(-(W1 @ X + b1)))
        E = Y - (W2 @ H + b2)
        D1 = (W2.T @ E) * H * (1 - H)
        W2 += lr * (E @ H.T)
        b2 += lr * E.sum(1, keepdims=True)
        W1 += lr * (D1 @ X.T)
        b1 += lr * D1.sum(1, keepdims=True)
    return W1


def torch_tiny(torch, params, X, Y, lr, epochs):
    ps = [torch.tensor(np.asarray(params[l][k]), requires_grad=True) for l in (0, 1) for k in ("W", "b")]
    W1, b1, W2, b2 = ps
    Xt, Yt = torch.tensor(X), torch.tensor(Y)
    opt = torch.optim.SGD(ps, lr=lr)
    for _ in range(epochs):
        opt.zero_grad()
        loss = 0.5 * ((W2 @ torch.sigmoid(W1 @ Xt + b1) + b2 - Yt) ** 2).sum()
        loss.backward()
        opt.step()
    return loss.item()


def bench_tiny(config: Config, torch) -> dict:
    X, Y = tiny_data()
    loss = fgd.make_loss(TINY, "sse")
    params = TINY.init(jax.random.key(config.seed), "uniform", dtype=jnp.float32)
    opt = fgd.sgd(0.05)
    E, Et = config.tiny_epochs, config.torch_tiny_epochs
    contenders = {
        "fgd.fit": lambda: block(fgd.fit(loss, params, opt, X, Y, epochs=E, progress=False).params),
        "numpy BP loop": lambda: numpy_bp(params, X, Y, 0.05, E),
    }
    epochs = {"fgd.fit": E, "numpy BP loop": E, "PyTorch": Et}
    times = interleave(contenders, config.repeats)
    if torch is not None:         # after the others: see `interleave_torch`
        times.update(interleave_torch(lambda: torch_tiny(torch, params, X, Y, 0.05, Et),
                                      config.repeats))
    rows = {name: {"epochs": epochs[name], "cold_s": cold, "warm_s": statistics.median(warm),
                   "epochs_per_s": epochs[name] / statistics.median(warm)}
            for name, (cold, warm) in times.items()}
    fgd_rate = rows["fgd.fit"]["epochs_per_s"]
    out = {"rows": rows, "vs_numpy": fgd_rate / rows["numpy BP loop"]["epochs_per_s"]}
    if torch is not None:
        out["vs_torch"] = fgd_rate / rows["PyTorch"]["epochs_per_s"]
    return out


# --- medium: 784-512-512-10 with Adam -----------------------------------------------------
MEDIUM = fgd.MLP((784, 512, 512, 10), hidden="relu", output="softmax")


def medium_flops_per_sample(net: fgd.MLP) -> int:
    P = sum(a * b for a, b in zip(net.sizes[:-1], net.sizes[1:]))
    first = net.sizes[0] * net.sizes[1]
    return 2 * P + 2 * P + 2 * (P - first)


def step_products(net: fgd.MLP, X, batch: int) -> Callable:
    """A jitted epoch of the medium step's matrix products alone, at its
    shapes and in fit's layout (features x examples): per batch A[l] =
    W[l] A[l-1] forward, dW[l] = dZ[l] A[l-1]^T and dA[l-1] = W[l]^T dZ[l]
    backward (no dA[0]), with W[l] -= 1e-9 dW[l] so that each step reads the
    last one's weights. Its products go through the same rewrite as fit's
    step (`fgd._compile`'s transposed copies, on where fit has them: on
    XLA:CPU W2^T dZ2 comes from a contiguous copy of W2^T; W3 is too narrow
    for one). No activation, loss, Adam or gather: its time is what XLA's
    GEMMs take for the step's FLOPs, the most any fit of this net could
    approach."""
    tricks = fgd._compile.tricks(jax.default_backend())
    tricks = tricks._replace(small_dots=False)       # fit's chunks of this size have none
    tn = (((0,), (0,)), ((), ()))                   # W^T d: both contracted over axis 0
    steps = X.shape[1] // batch
    Xb = X[:, :steps * batch].reshape(X.shape[0], steps, batch).transpose(1, 0, 2)
    Ws = [0.01 * jnp.ones((b, a), X.dtype) for a, b in zip(net.sizes[:-1], net.sizes[1:])]

    def one(Ws, x):
        acts = [x]
        for W in Ws:
            acts.append(W @ acts[-1])
        d, grads = acts[-1], []
        for i in reversed(range(len(Ws))):
            grads.append(d @ acts[i].T)
            if i:
                d = jax.lax.dot_general(Ws[i], d, tn)
        return [W - 1e-9 * g for W, g in zip(Ws, reversed(grads))], None

    epoch = jax.jit(lambda Ws, Xb: jax.lax.scan(tricks.rewrite_dots(one), Ws, Xb)[0])
    return lambda: block(epoch(Ws, Xb))


def medium_data(m: int, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((784, m), dtype=np.float32)
    Y = np.eye(10, dtype=np.float32)[:, rng.integers(0, 10, m)]
    return X, Y


def torch_medium(torch, params, X, Y, epochs=1, batch=256, seed=0):
    layers = [torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512), torch.nn.ReLU(),
              torch.nn.Linear(512, 10)]
    with torch.no_grad():
        for lin, p in zip(layers[::2], params):
            lin.weight.copy_(torch.tensor(np.asarray(p["W"])))
            lin.bias.copy_(torch.tensor(np.asarray(p["b"])[:, 0]))
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt = torch.tensor(np.ascontiguousarray(X.T))           # (m, 784): rows per example
    labels = torch.tensor(np.argmax(Y, axis=0))
    gen = torch.Generator().manual_seed(seed)
    m = Xt.shape[0]
    for _ in range(epochs):
        order = torch.randperm(m, generator=gen)
        for i in range(m // batch):
            idx = order[i * batch:(i + 1) * batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(Xt[idx]), labels[idx])
            loss.backward()
            opt.step()
    return loss.item()


def bench_medium(config: Config, torch) -> dict:
    m = config.medium_samples
    X, Y = medium_data(m, config.seed)
    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)
    loss = fgd.make_loss(MEDIUM, "cross_entropy")
    params = MEDIUM.init(jax.random.key(config.seed), "he", dtype=jnp.float32)
    opt = fgd.adam(1e-3)
    a = jax.random.normal(jax.random.key(1), (2048, 2048), jnp.float32)
    b = jax.random.normal(jax.random.key(2), (2048, 2048), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    repeats = config.repeats
    fresh = iter([jnp.array(Xd) for _ in range(repeats + 1)])   # new arrays: no layout to reuse
    run = lambda X_, gather="copy": block(fgd.fit(loss, params, opt, X_, Yd, epochs=1, batch_size=256,
                                                  progress=False, batch_gather=gather).params)
    gemm = lambda: block(matmul(a, b))
    contenders = {"gemm 2048^3": gemm, "fgd.fit": lambda: run(Xd),
                  "fgd.fit, columns": lambda: run(Xd, "columns"),
                  "GEMMs alone": step_products(MEDIUM, Xd, 256)}
    mt = min(m, config.torch_medium_samples)
    times = interleave(contenders, repeats)
    if torch is not None:         # after the others: see `interleave_torch`
        times.update(interleave_torch(lambda: torch_medium(torch, params, X[:, :mt], Y[:, :mt]),
                                      repeats))
    # apart: fgd keeps the copy of the last X only, so interleaving would drop Xd's
    new_x = interleave({"gemm 2048^3": gemm, "fgd.fit, new X": lambda: run(next(fresh))}, repeats)
    samples = {"fgd.fit": (m // 256) * 256, "fgd.fit, new X": (m // 256) * 256,
               "fgd.fit, columns": (m // 256) * 256, "PyTorch": (mt // 256) * 256,
               "GEMMs alone": (m // 256) * 256}
    flops = medium_flops_per_sample(MEDIUM)
    roofline_of = lambda t: 2 * 2048 ** 3 / statistics.median(t["gemm 2048^3"][1]) / flops
    rows = {}
    for name, (cold, warm) in [*times.items(), *new_x.items()]:
        if name.startswith("gemm"):
            continue
        rows[name] = {"samples": samples[name], "cold_s": cold, "warm_s": statistics.median(warm),
                      "samples_per_s": samples[name] / statistics.median(warm)}
    roofline = roofline_of(times)
    out = {"rows": rows, "gemm_flops": roofline * flops, "flops_per_sample": flops,
           "roofline_samples_per_s": roofline,
           "vs_roofline": rows["fgd.fit"]["samples_per_s"] / roofline,
           "new_x_vs_roofline": rows["fgd.fit, new X"]["samples_per_s"] / roofline_of(new_x),
           "columns_vs_roofline": rows["fgd.fit, columns"]["samples_per_s"] / roofline,
           "products_vs_roofline": rows["GEMMs alone"]["samples_per_s"] / roofline,
           "vs_products": rows["fgd.fit"]["samples_per_s"] / rows["GEMMs alone"]["samples_per_s"],
           "memory": {gather: medium_memory(m, config.seed, gather) for gather in ("copy", "columns")}}
    if torch is not None:
        out["vs_torch"] = rows["fgd.fit"]["samples_per_s"] / rows["PyTorch"]["samples_per_s"]
    return out


MEMORY = """
import gc, json, os, sys
import jax, jax.numpy as jnp, numpy as np
sys.path.insert(0, sys.argv[1])
import benchmark as b
import fgd
m, seed, gather = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
params = b.MEDIUM.init(jax.random.key(seed), "he", dtype=jnp.float32)
loss, opt = fgd.make_loss(b.MEDIUM, "cross_entropy"), fgd.adam(1e-3)
run = lambda X, Y: jax.block_until_ready(fgd.fit(loss, params, opt, X, Y, epochs=1, batch_size=256,
                                                 progress=False, batch_gather=gather).params)
X, Y = (jnp.asarray(a) for a in b.medium_data(m, seed))
jax.block_until_ready((jnp.sum(X), jnp.sum(Y)))  # a first use copies an array aliasing numpy's memory
gc.collect()
with open("/proc/self/clear_refs", "w") as f:           # the peak (VmHWM) starts again from now
    f.write("5")
before = rss()
run(X, Y)
print(json.dumps({"data_bytes": X.nbytes + Y.nbytes,
                  "params_bytes": sum(a.nbytes for a in jax.tree.leaves(params)),
                  "rss_before": before, "peak_rss": peak()}))
"""


def medium_memory(m: int, seed: int, gather: str) -> Optional[dict]:
    """The medium fit's peak resident memory, in a new process (Linux only:
    /proc; None elsewhere): the sizes of X, Y and the params, the resident
    memory with them loaded, and the peak during the fit (its compilation,
    its examples-first copy if any, activations and optimizer state)."""
    if not os.path.exists("/proc/self/statm"):
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    here = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", MEMORY, here, str(m), str(seed), gather],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the memory run failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_memory(memory: dict) -> None:
    mb = lambda n: f"{n / 2**20:,.0f} MiB"
    for gather, r in memory.items():
        if r is None:
            continue
        print(f"  memory, batch_gather={gather!r}: X and Y {mb(r['data_bytes'])}, params "
              f"{mb(r['params_bytes'])}; resident before the fit {mb(r['rss_before'])}, peak "
              f"{mb(r['peak_rss'])} (+{mb(r['peak_rss'] - r['rss_before'])})")


# --- sweep: 64 random starts --------------------------------------------------------------
def bench_sweep(config: Config) -> dict:
    X, Y = tiny_data()
    loss = fgd.make_loss(TINY, "sse")
    n, E = config.sweep_configs, config.sweep_epochs
    keys = jax.random.split(jax.random.key(config.seed), n)
    init = lambda k: TINY.init(k, "uniform", dtype=jnp.float32)
    starts = [init(k) for k in keys]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *starts)
    opt = fgd.sgd(0.05)

    def sequential():
        for p in starts:
            block(fgd.fit(loss, p, opt, X, Y, epochs=E, progress=False).params)

    def one_sweep(epochs, draws=False):
        given = {"init": init, "keys": keys} if draws else {"init": stacked}
        return lambda: block(fgd.sweep(loss, fgd.sgd, X, Y, **given, lrs=[0.05],
                                       epochs=epochs, progress=False).params)

    contenders = {"fgd.sweep": one_sweep(E), f"{n} x fgd.fit": sequential,
                  "fgd.sweep, 1 epoch": one_sweep(1),       # its host work: checks, threads
                  "fgd.sweep, 1 epoch, init + keys": one_sweep(1, draws=True)}
    times = interleave(contenders, config.repeats)
    rows = {name: {"runs": n, "epochs": E, "cold_s": cold, "warm_s": statistics.median(warm),
                   "run_epochs_per_s": n * E / statistics.median(warm)}
            for name, (cold, warm) in times.items()}
    host = rows.pop("fgd.sweep, 1 epoch")["warm_s"]
    host_drawing = rows.pop("fgd.sweep, 1 epoch, init + keys")["warm_s"]
    epoch_us = (rows["fgd.sweep"]["warm_s"] - host) / max(E - 1, 1) * 1e6
    return {"rows": rows, "speedup": rows[f"{n} x fgd.fit"]["warm_s"] / rows["fgd.sweep"]["warm_s"],
            "host_s": host, "epoch_us": epoch_us,
            "init_s": host_drawing - host}


COUNT_COMPILES = """
import collections, json, sys, time
t0 = time.perf_counter()
from jax import monitoring
n = collections.Counter()
monitoring.register_event_duration_secs_listener(lambda name, secs, **kw: n.update({name: 1}))
monitoring.register_event_listener(lambda name, **kw: n.update({name: 1}))
from fgd import cli
code = cli.main(sys.argv[1:])
print(json.dumps({"rc": code, "wall_s": time.perf_counter() - t0,
                  "compiles": n["/jax/core/compile/backend_compile_duration"],
                  "cache_hits": n["/jax/compilation_cache/cache_hits"],
                  "cache_misses": n["/jax/compilation_cache/cache_misses"]}), file=sys.stderr)
"""


def backend_compiles() -> Callable[[], int]:
    """A counter of XLA compilations from now on (jax.monitoring events)."""
    from jax import monitoring

    box = {"n": 0}

    def listen(name, secs, **kw):
        if name == "/jax/core/compile/backend_compile_duration":
            box["n"] += 1

    monitoring.register_event_duration_secs_listener(listen)
    return lambda: box["n"]


def bench_compile(config: Config) -> dict:
    X, Y = tiny_data()
    loss = fgd.make_loss(TINY, "sse")
    params = TINY.init(jax.random.key(config.seed), "uniform", dtype=jnp.float32)
    rates = np.linspace(0.01, 0.1, 10)
    fgd.clear_caches()
    count = backend_compiles()
    seconds, compiles = [], []
    for lr in rates:
        before, t = count(), time.perf_counter()
        block(fgd.fit(loss, params, fgd.sgd(float(lr)), X, Y, epochs=100, progress=False).params)
        seconds.append(time.perf_counter() - t)
        compiles.append(count() - before)
    loop = {"first_fit_compiles": compiles[0], "later_fits_compiles": sum(compiles[1:]),
            "first_fit_s": seconds[0], "later_fits_s": sum(seconds[1:]), "total_s": sum(seconds)}

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    runs = {}
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
        env_run = {**env, "XDG_CACHE_HOME": cache, "FGD_COMPILE_CACHE": "1"}
        extra = ["--epochs", "2000"] if config.quick else []
        for name in ("cold", "warm"):
            done = subprocess.run([sys.executable, "-c", COUNT_COMPILES, "run", "traffic",
                                   "--out", out, *extra], env=env_run, capture_output=True, text=True)
            runs[name] = json.loads(done.stderr.strip().splitlines()[-1])
    lists = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fgd", "list"], env=env, check=True,
                       capture_output=True)
        lists.append(time.perf_counter() - t)
    return {"loop": loop, "traffic": runs, "traffic_args": extra,
            "list_s": statistics.median(lists)}


def print_compile(c: dict) -> None:
    loop = c["loop"]
    print("\ncompile: a 10-rate loop of fgd.fit (3-8-2, 100 epochs), a new fgd.sgd(lr) each time")
    print(f"  first fit: {loop['first_fit_compiles']} XLA compilations (the chunk and its "
          f"helpers), {loop['first_fit_s']:.2f} s; the 9 later fits: "
          f"{loop['later_fits_compiles']} compilations, {loop['later_fits_s']:.2f} s together")
    args = " ".join(c["traffic_args"])
    print(f"  python -m fgd run traffic {args} (new processes, one fresh persistent cache):")
    for name, r in c["traffic"].items():
        print(f"    {name}: {r['wall_s']:.1f} s, {r['cache_misses']} programs compiled, "
              f"{r['cache_hits']} loaded from the cache")
    print(f"  python -m fgd list: {c['list_s']:.2f} s (median of 3)")


def grid_module():
    """experiments/benchmark_grid.py, beside this file (run as a script or installed)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).with_name("benchmark_grid.py")
    spec = importlib.util.spec_from_file_location("fgd_benchmark_grid", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module                      # for its dataclasses
    spec.loader.exec_module(module)
    return module


# --- report ---------------------------------------------------------------------------------
def print_table(title: str, rows: dict, rate: str) -> None:
    width = max(16, *map(len, rows))
    print(f"\n{title}")
    print(f"  {'contender':<{width}} {'cold s':>9} {'warm s':>9} {rate:>18}")
    for name, r in rows.items():
        print(f"  {name:<{width}} {r['cold_s']:>9.3f} {r['warm_s']:>9.4f} {r[rate]:>18,.0f}")


def verdict(label: str, value: float, target: float) -> bool:
    ok = value >= target
    print(f"  {label:<34} {value:>9.2f}   target >= {target:g}   {'met' if ok else 'NOT met'}")
    return ok


def main(config: Config) -> dict:
    check_only(config.only)
    if config.quick:
        config = quick_config(config)
    torch = torch_or_none()
    print(f"machine: {os.cpu_count()} CPUs, jax {jax.__version__} backend {jax.default_backend()} "
          f"({', '.join(str(d) for d in jax.devices())}), "
          f"PyTorch {torch.__version__ + f' ({torch.get_num_threads()} threads)' if torch else 'not installed'}, "
          f"load average {os.getloadavg()[0]:.1f}")
    results = {"cpus": os.cpu_count(), "backend": jax.default_backend(),
               "devices": [str(d) for d in jax.devices()], "torch": torch.__version__ if torch else None}
    wanted = lambda name: (name in config.only or (name != "grid" and "all" in config.only)
                           or (not config.only and name not in ("compile", "grid")))
    met = {}
    if wanted("tiny"):
        tiny = bench_tiny(config, torch)
        print_table(f"tiny: 3-8-2 full-batch GD, {config.tiny_epochs} epochs (PyTorch "
                    f"{config.torch_tiny_epochs}), float32", tiny["rows"], "epochs_per_s")
        results["tiny"] = tiny
    if wanted("medium"):
        medium = bench_medium(config, torch)
        print_table(f"medium: 784-512-512-10 ReLU, Adam, batches of 256, "
                    f"{medium['rows']['fgd.fit']['samples']} samples (PyTorch "
                    f"{config.torch_medium_samples})", medium["rows"], "samples_per_s")
        print(f"  roofline: {medium['gemm_flops'] / 1e9:.1f} GFLOP/s (2048^3 GEMM, median) / "
              f"{medium['flops_per_sample'] / 1e6:.3f} MFLOP per sample = "
              f"{medium['roofline_samples_per_s']:,.0f} samples/s")
        print_memory(medium["memory"])
        results["medium"] = medium
    if wanted("sweep"):
        sweep = bench_sweep(config)
        print_table(f"sweep: {config.sweep_configs} random starts of 3-8-2, "
                    f"{config.sweep_epochs} epochs", sweep["rows"], "run_epochs_per_s")
        print(f"  of one sweep: host work {sweep['host_s'] * 1e3:.1f} ms (a 1-epoch sweep), "
              f"then {sweep['epoch_us']:.2f} us per epoch of all {config.sweep_configs} runs; "
              f"drawing the params from init + keys adds {sweep['init_s'] * 1e3:.1f} ms")
        results["sweep"] = sweep
    if wanted("compile"):
        results["compile"] = bench_compile(config)
        print_compile(results["compile"])
    if any(wanted(name) for name in SECTIONS[:4]):
        print(f"\ntargets (medians; load average now {os.getloadavg()[0]:.1f}):")
    if wanted("tiny"):
        met["tiny_vs_numpy"] = verdict("tiny: fgd.fit / numpy BP loop", tiny["vs_numpy"], 12)
        if torch is not None:
            met["tiny_vs_torch"] = verdict("tiny: fgd.fit / PyTorch", tiny["vs_torch"], 100)
    if wanted("medium"):
        met["medium_vs_roofline"] = verdict("medium: fgd.fit / roofline", medium["vs_roofline"], 0.9)
        print(f"  {'medium: fgd.fit, new X / roofline':<34} {medium['new_x_vs_roofline']:>9.2f}   "
              f"(the examples-first copy made in the call)")
        print(f"  {'medium: fit, columns / roofline':<34} {medium['columns_vs_roofline']:>9.2f}   "
              f"(batch_gather='columns': no copy)")
        print(f"  {'medium: GEMMs alone / roofline':<34} {medium['products_vs_roofline']:>9.2f}   "
              f"(XLA's GEMMs at the step's shapes: the ceiling for fit)")
        print(f"  {'medium: fgd.fit / GEMMs alone':<34} {medium['vs_products']:>9.2f}   "
              f"(all the rest of the step: activations, loss, Adam, gather)")
        if torch is not None:
            met["medium_vs_torch"] = verdict("medium: fgd.fit / PyTorch", medium["vs_torch"], 1.0)
    if wanted("sweep"):
        met["sweep_speedup"] = verdict("sweep: 64 fits / one sweep", sweep["speedup"], 12)
    if wanted("compile"):
        c = results["compile"]
        for label, ok in (("compile: 9 later fits compile nothing", c["loop"]["later_fits_compiles"] == 0),
                          ("compile: warm traffic run, no misses", c["traffic"]["warm"]["cache_misses"] == 0),
                          ("compile: fgd list under 1 s", c["list_s"] < 1.0)):
            print(f"  {label:<44} {'met' if ok else 'NOT met'}")
            met[label] = ok
    results["targets_met"] = met
    if wanted("grid"):
        grid = grid_module()
        results["grid"] = grid.main(grid.Config(quick=config.quick))
    return results


if __name__ == "__main__":
    try:     # main checks --only first of all
        main(fgd.cli.parse_config(Config, sys.argv[1:], prog="python experiments/benchmark.py"))
    except fgd.cli.UsageError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
