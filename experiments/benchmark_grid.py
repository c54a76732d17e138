"""fgd.fit against the loops people write, over a grid of sizes, costs and batch modes.

    python experiments/benchmark_grid.py              # the whole grid: 126 points, about 15 min on 2 cores
    python experiments/benchmark_grid.py --quick      # 12 points, a smoke run of a minute or two
    python experiments/benchmark_grid.py --ms 400 --widths 8 --depths 1 --costs bce
    python experiments/benchmark.py --only grid       # the same, from the main benchmark

Each point is a tanh MLP with `depth` hidden layers of `width` units, n_x = 16
inputs and n_y = 4 outputs, trained on m synthetic float32 examples with
plain SGD, full batch or in shuffled mini-batches of 64 (a point with m < 64
has no mini-batch mode). The output/cost pairs are the canonical ones:
identity + sse, sigmoid + bce, softmax + cross_entropy (sse's rate is divided
by m: it sums over the examples). At each point, in one process:

- fgd.fit: `fgd.fit(loss, params, fgd.sgd(lr), X, Y, epochs=E, batch_size=...)`,
  recording the loss of every epoch (its history), stopping rules on.
- plain loop: what a JAX user writes in five lines, one jitted
  `lax.fori_loop` over E epochs of `value_and_grad(loss)`, `opt.update` and
  `fgd.apply_updates` (the same loss and optimizer; mini-batch: a
  permutation per epoch and a `lax.scan` over its batches, `X[:, idx]`). It
  records nothing, so XLA drops the loss value and computes the gradient only.
- plain+loss: the same loop as a `lax.scan` over epochs that returns each
  epoch's loss (mini-batch: the mean of its batch losses), as fit records it.
- make_step loop: a Python loop of `fgd.make_step` calls (mini-batch: the
  batch `X[:, idx]` cut per call with a numpy permutation).
- flax + optax: an `nnx.Linear` MLP with `optax.sgd`, the jitted train step
  of flax's examples in a Python loop (when flax is installed).
- PyTorch: `nn.Sequential` of `Linear`/`Tanh` layers with `torch.optim.SGD`,
  the usual `zero_grad`/`backward`/`step` loop (when torch is installed;
  `torch.set_num_threads` set to the CPU count, its other settings left as
  they are: on a busy 2-core machine its OpenMP threads, which spin after
  each operation, made a small net's epoch 3-100 ms instead of 0.3 ms, and
  `OMP_WAIT_POLICY=PASSIVE` cures that but doubles it on a quiet one).
- numpy: a hand-written backprop loop, dZ[L] = (A[L] - Y) / (1 or m),
  dW = dZ A^T, db = sum(dZ), dZ[l] = W[l+1]^T dZ[l+1] * (1 - A[l]^2).

Every contender's call is timed `repeats` times, interleaved (A B C A B C
...) so that other load hits all alike (JAX's contenders among themselves,
then PyTorch and numpy, whose spinning threads would slow the next call),
after a first "cold" call (fgd's,
the plain loop's and flax's include compilation; printed apart). fit and the
plain loops run E epochs, E chosen so that fit's call takes about `seconds`
(at least 3);
the Python loops run as many epochs as fit into the same time (at least
one). The table shows epochs per second (medians) and each contender's rate
divided by fit's (below 1: fit is faster). fit's target: at least the plain
loop's rate at every point.
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import statistics
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

import fgd
import fgd.cli

OUTPUTS = {"sse": "identity", "bce": "sigmoid", "cross_entropy": "softmax"}
CONTENDERS = ("fit", "plain", "plain+loss", "make_step", "flax", "torch", "numpy")


@dataclasses.dataclass(frozen=True)
class Config:
    """fgd.fit against the plain JAX loop, make_step, flax+optax, PyTorch and numpy over sizes."""

    quick: bool = False
    ms: tuple[int, ...] = (20, 400, 4000, 40000)       # examples
    widths: tuple[int, ...] = (8, 64, 512)             # hidden units per layer
    depths: tuple[int, ...] = (1, 3)                   # hidden layers
    costs: tuple[str, ...] = ("sse", "bce", "cross_entropy")   # with identity, sigmoid, softmax outputs
    batches: tuple[int, ...] = (0, 64)                 # 0: full batch; k: mini-batches of k
    contenders: tuple[str, ...] = CONTENDERS           # those to run (flax, torch: when installed)
    n_x: int = 16                            # inputs
    n_y: int = 4                             # outputs (classes for softmax)
    lr: float = 0.05                         # SGD rate (sse: lr / m)
    seconds: float = 0.15                    # aim of one timed call of fit
    repeats: int = 3                         # interleaved timed calls per contender (medians)
    max_epochs: int = 20_000                 # cap on E
    figure: str = ""                         # a PNG of epochs/s against m (fit, plain loop)
    seed: int = 0


def quick_config(config: Config) -> Config:
    return dataclasses.replace(config, ms=(20, 400), widths=(8, 64), depths=(1,),
                               costs=("sse", "bce"), seconds=0.05, repeats=2, max_epochs=5_000)


# --- one point ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Point:
    m: int
    width: int
    depth: int
    cost: str
    batch: int            # 0: full batch

    @property
    def label(self) -> str:
        mode = "full" if not self.batch else f"mb{self.batch}"
        return f"m={self.m:<6,} {self.width:>3}x{self.depth} {self.cost:<13} {mode}"


def grid(config: Config) -> list:
    points = [Point(m, w, d, c, b) for m, w, d, c, b in itertools.product(
        config.ms, config.widths, config.depths, config.costs, config.batches)]
    return [p for p in points if p.batch <= p.m]


def problem(config: Config, p: Point):
    sizes = (config.n_x, *[p.width] * p.depth, config.n_y)
    net = fgd.MLP(sizes, hidden="tanh", output=OUTPUTS[p.cost])
    rng = np.random.default_rng(config.seed)
    X = rng.standard_normal((config.n_x, p.m), dtype=np.float32)
    if p.cost == "sse":
        Y = rng.standard_normal((config.n_y, p.m), dtype=np.float32)
    elif p.cost == "bce":
        Y = (rng.random((config.n_y, p.m)) < 0.5).astype(np.float32)
    else:
        Y = np.eye(config.n_y, dtype=np.float32)[:, rng.integers(0, config.n_y, p.m)]
    params = net.init(jax.random.key(config.seed), "xavier", dtype=jnp.float32)
    lr = config.lr / p.m if p.cost == "sse" else config.lr
    return net, fgd.make_loss(net, p.cost), params, X, Y, lr


def plain_loop(loss, opt, epochs: int, batch: int, m: int, record: bool = False) -> Callable:
    """The jitted loop a JAX user writes: fori_loop over epochs (and a scan
    over each epoch's batches); with `record`, a scan over epochs that
    returns each epoch's (mean batch) loss, as one who plots it writes."""
    def update(carry, xb, yb):
        params, state = carry
        value, g = jax.value_and_grad(loss)(params, xb, yb)
        u, state = opt.update(g, state, params)
        return (fgd.apply_updates(params, u), state), value

    @jax.jit
    def train(params, X, Y, key):
        def epoch(i, carry):
            if not batch:
                return update(carry, X, Y)
            order = jax.random.permutation(jax.random.fold_in(key, i), m)
            idx = order[: (m // batch) * batch].reshape(m // batch, batch)
            carry, values = jax.lax.scan(lambda c, b: update(c, X[:, b], Y[:, b]), carry, idx)
            return carry, jnp.mean(values)
        start = (params, opt.init(params))
        if record:
            return jax.lax.scan(lambda c, i: epoch(i, c), start, jnp.arange(epochs))
        return jax.lax.fori_loop(0, epochs, lambda i, c: epoch(i, c)[0], start)

    return train


def make_step_loop(loss, opt, batch: int, m: int) -> Callable:
    step = fgd.make_step(loss, opt)

    def run(params, X, Y, epochs):
        state = opt.init(params)
        rng = np.random.default_rng(0)
        for _ in range(epochs):
            if not batch:
                params, state, value = step(params, state, X, Y)
                continue
            order = rng.permutation(m)
            for i in range(m // batch):
                idx = order[i * batch:(i + 1) * batch]
                params, state, value = step(params, state, X[:, idx], Y[:, idx])
        return jax.block_until_ready(params)

    return run


def numpy_loop(params, X, Y, cost: str, lr: float, batch: int, epochs: int):
    """Hand-written backprop: forward, dZ[L] = (A[L] - Y) * scale, then back."""
    Ws = [np.array(p["W"]) for p in params]
    bs = [np.array(p["b"]) for p in params]
    rng = np.random.default_rng(0)
    m = X.shape[1]

    def step(xb, yb):
        A = [xb]
        for l, (W, b) in enumerate(zip(Ws, bs)):
            Z = W @ A[-1] + b
            if l < len(Ws) - 1:
                A.append(np.tanh(Z))
            elif cost == "bce":
                A.append(1 / (1 + np.exp(-Z)))
            elif cost == "cross_entropy":
                E = np.exp(Z - Z.max(0))
                A.append(E / E.sum(0))
            else:
                A.append(Z)
        dZ = (A[-1] - yb) * (1.0 if cost == "sse" else 1.0 / xb.shape[1])
        for l in range(len(Ws) - 1, -1, -1):
            dW, db = dZ @ A[l].T, dZ.sum(1, keepdims=True)
            if l:
                dZ = (Ws[l].T @ dZ) * (1 - A[l] ** 2)
            Ws[l] -= lr * dW
            bs[l] -= lr * db

    for _ in range(epochs):
        if not batch:
            step(X, Y)
            continue
        order = rng.permutation(m)
        for i in range(m // batch):
            idx = order[i * batch:(i + 1) * batch]
            step(X[:, idx], Y[:, idx])
    return Ws


def torch_loop(torch, params, X, Y, cost: str, lr: float, batch: int):
    layers = []
    for l, p in enumerate(params):
        lin = torch.nn.Linear(*np.shape(p["W"])[::-1])
        with torch.no_grad():
            lin.weight.copy_(torch.tensor(np.asarray(p["W"])))
            lin.bias.copy_(torch.tensor(np.asarray(p["b"])[:, 0]))
        layers += [lin] + ([torch.nn.Tanh()] if l < len(params) - 1 else [])
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    Xt, Yt = torch.tensor(np.ascontiguousarray(X.T)), torch.tensor(np.ascontiguousarray(Y.T))
    labels = Yt.argmax(1)
    F = torch.nn.functional

    def loss_of(z, yb, lb):
        if cost == "sse":
            return 0.5 * ((z - yb) ** 2).sum()
        if cost == "bce":
            return F.binary_cross_entropy_with_logits(z, yb, reduction="sum") / z.shape[0]
        return F.cross_entropy(z, lb)

    gen = torch.Generator().manual_seed(0)
    m = Xt.shape[0]

    def run(epochs):
        for _ in range(epochs):
            if not batch:
                opt.zero_grad()
                loss_of(model(Xt), Yt, labels).backward()
                opt.step()
                continue
            order = torch.randperm(m, generator=gen)
            for i in range(m // batch):
                idx = order[i * batch:(i + 1) * batch]
                opt.zero_grad()
                loss_of(model(Xt[idx]), Yt[idx], labels[idx]).backward()
                opt.step()

    return run


def flax_loop(nnx, optax, params, X, Y, cost: str, lr: float, batch: int):
    """flax's own examples' way: an nnx module, optax, a jitted train step."""
    sizes = [np.shape(p["W"])[::-1] for p in params]

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in sizes])

        def __call__(self, x):
            for layer in self.layers[:-1]:
                x = jnp.tanh(layer(x))
            return self.layers[-1](x)

    model = MLP(nnx.Rngs(0))
    for layer, p in zip(model.layers, params):
        layer.kernel = nnx.Param(jnp.asarray(p["W"]).T)
        layer.bias = nnx.Param(jnp.asarray(p["b"])[:, 0])
    optimizer = nnx.Optimizer(model, optax.sgd(lr), wrt=nnx.Param)

    def loss_fn(model, xb, yb):
        z = model(xb)
        if cost == "sse":
            return 0.5 * jnp.sum((z - yb) ** 2)
        if cost == "bce":
            return jnp.sum(optax.sigmoid_binary_cross_entropy(z, yb)) / z.shape[0]
        return jnp.mean(optax.softmax_cross_entropy(z, yb))

    @nnx.jit
    def train_step(model, optimizer, xb, yb):
        grads = nnx.grad(loss_fn)(model, xb, yb)
        optimizer.update(model, grads)

    Xr, Yr = jnp.asarray(X.T), jnp.asarray(Y.T)
    m = Xr.shape[0]
    rng = np.random.default_rng(0)

    def run(epochs):
        for _ in range(epochs):
            if not batch:
                train_step(model, optimizer, Xr, Yr)
                continue
            order = rng.permutation(m)
            for i in range(m // batch):
                idx = order[i * batch:(i + 1) * batch]
                train_step(model, optimizer, Xr[idx], Yr[idx])
        jax.block_until_ready(model.layers[-1].kernel[...])

    return run


def timed(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure_point(config: Config, p: Point, libs: dict) -> dict:
    """{contender: {"epochs", "cold_s", "warm_s", "epochs_per_s"}} at one point."""
    net, loss, params, X, Y, lr = problem(config, p)
    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)
    batch = p.batch or None
    opt = fgd.sgd(lr)
    key = jax.random.key(config.seed)

    def fit(epochs):
        r = fgd.fit(loss, params, opt, Xd, Yd, epochs=epochs, batch_size=batch, key=key,
                    progress=False)
        jax.block_until_ready(r.params)
        if r.epochs != epochs:
            raise RuntimeError(f"{p.label}: fit stopped after {r.epochs} of {epochs} epochs "
                               f"({r.stop_reason})")

    cold = {"fit": timed(lambda: fit(2))}
    E, t = 2, timed(lambda: fit(2))        # grow E until a call takes a quarter of `seconds`
    while t < config.seconds / 4 and E < config.max_epochs:
        E = min(config.max_epochs, 4 * E)
        t = timed(lambda: fit(E))
    # at least 3: XLA unrolls a plain loop of one epoch, which no real run is
    E = int(np.clip(E * config.seconds / t, 3, max(3, config.max_epochs)))
    runs: dict = {"fit": (E, lambda: fit(E))}
    wanted = set(config.contenders)

    def budgeted(name: str, make_run: Callable[[int], Callable], compile_first: bool):
        """A Python loop: its epoch count from a timed one-epoch call."""
        one = make_run(1)
        cold[name] = timed(one)                       # compiles (if it does)
        per = timed(one) if compile_first else cold[name]
        n = int(np.clip(config.seconds / max(per, 1e-7), 1, E))
        runs[name] = (n, make_run(n) if n != 1 else one)

    for name, record in (("plain", False), ("plain+loss", True)):
        if name in wanted:
            train = plain_loop(loss, opt, E, p.batch, p.m, record)
            go = lambda train=train: jax.block_until_ready(train(params, Xd, Yd, key))
            cold[name] = timed(go)
            runs[name] = (E, go)
    if "make_step" in wanted:
        loop = make_step_loop(loss, opt, p.batch, p.m)
        budgeted("make_step", lambda n: (lambda: loop(params, Xd, Yd, n)), True)
    if "flax" in wanted and libs.get("flax") is not None:
        nnx, optax = libs["flax"]
        run = flax_loop(nnx, optax, params, X, Y, p.cost, lr, p.batch)
        budgeted("flax", lambda n: (lambda: run(n)), True)
    warm: dict = {}

    def interleave(names: list) -> None:
        for name in names:
            warm[name] = []
        for _ in range(config.repeats):
            for name in names:
                warm[name].append(timed(runs[name][1]))

    # JAX's contenders interleaved among themselves, then PyTorch and numpy,
    # first called (compiled, sized) only after: their BLAS and OpenMP
    # threads spin for a while after each call, which would slow whichever
    # contender came next
    interleave(list(runs))
    if "torch" in wanted and libs.get("torch") is not None:
        run = torch_loop(libs["torch"], params, X, Y, p.cost, lr, p.batch)
        budgeted("torch", lambda n: (lambda: run(n)), True)
    if "numpy" in wanted:
        budgeted("numpy", lambda n: (lambda: numpy_loop(params, X, Y, p.cost, lr, p.batch, n)), False)
    interleave([n for n in runs if n not in warm])
    return {name: {"epochs": n, "cold_s": cold[name], "warm_s": statistics.median(warm[name]),
                   "epochs_per_s": n / statistics.median(warm[name])}
            for name, (n, _) in runs.items()}


def libraries(config: Config) -> dict:
    libs: dict = {"torch": None, "flax": None}
    if "torch" in config.contenders:
        try:
            import torch
            torch.set_num_threads(os.cpu_count() or 1)
            libs["torch"] = torch
        except ImportError:
            pass
    if "flax" in config.contenders:
        try:
            import optax
            from flax import nnx
            libs["flax"] = (nnx, optax)
        except ImportError:
            pass
    return libs


# --- report -------------------------------------------------------------------------------
def print_header(config: Config, libs: dict) -> list:
    shown = [c for c in config.contenders if c in ("fit", "plain", "plain+loss", "make_step", "numpy")
             or libs.get(c) is not None]
    cols = "".join(f"{name + '/fit':>16}" for name in shown if name != "fit")
    print(f"\n{'point':<36}{'E':>7}{'fit ep/s':>11}{cols}{'fit cold s':>12}")
    return shown


def print_row(p: Point, rows: dict, shown: list) -> None:
    fit = rows["fit"]["epochs_per_s"]
    cols = "".join(f"{rows[name]['epochs_per_s'] / fit:>16.3g}" if name in rows else f"{'-':>16}"
                   for name in shown if name != "fit")
    print(f"{p.label:<36}{rows['fit']['epochs']:>7}{fit:>11,.0f}{cols}"
          f"{rows['fit']['cold_s']:>12.2f}", flush=True)


def summary(results: list) -> dict:
    """Per contender: the range and median of its rate / fit's over the points."""
    out = {}
    names = {name for r in results for name in r["rows"]} - {"fit"}
    for name in sorted(names):
        ratios = [r["rows"][name]["epochs_per_s"] / r["rows"]["fit"]["epochs_per_s"]
                  for r in results if name in r["rows"]]
        out[name] = {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios),
                     "points": len(ratios), "fit_ahead": sum(x <= 1.0 for x in ratios)}
    return out


def plot(results: list, config: Config, path: str) -> bool:
    """Epochs/s against m, fit (solid) and the plain loop (dashed), per width,
    depth 1, the first cost: one panel per batch mode measured."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["point"].batch for r in results if r["point"].depth == 1
                      and r["point"].cost == config.costs[0]})
    if not batches:
        return False
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), sharey=False,
                             squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for i, width in enumerate(config.widths):
            pts = [r for r in results if r["point"].width == width and r["point"].depth == 1
                   and r["point"].batch == batch and r["point"].cost == config.costs[0]]
            if not pts:
                continue
            ms = [r["point"].m for r in pts]
            color = f"C{i}"
            ax.loglog(ms, [r["rows"]["fit"]["epochs_per_s"] for r in pts], "-o", color=color,
                      label=f"fit, w = {width}")
            if all("plain" in r["rows"] for r in pts):
                ax.loglog(ms, [r["rows"]["plain"]["epochs_per_s"] for r in pts], "--x",
                          color=color, label=f"plain loop, w = {width}")
        ms = sorted({r["point"].m for r in results})
        ax.set_xticks(ms, [f"{m:,}" for m in ms])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("examples m")
        ax.set_ylabel("epochs / s")
        ax.set_title("full batch" if not batch else f"mini-batches of {batch}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{config.n_x}-w-{config.n_y} tanh MLP (w: width), one hidden layer, "
                 f"{config.costs[0]}, SGD, float32, {os.cpu_count()} CPUs; solid: fgd.fit, "
                 f"dashed: the plain jitted loop", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(config: Config) -> dict:
    if config.quick:
        config = quick_config(config)
    unknown = set(config.contenders) - set(CONTENDERS)
    if unknown:
        raise ValueError(f"contenders must be among {CONTENDERS}; got {sorted(unknown)}")
    bad = [c for c in config.costs if c not in OUTPUTS]
    if bad:
        raise ValueError(f"costs must be among {tuple(OUTPUTS)}; got {bad}")
    libs = libraries(config)
    print(f"machine: {os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()}), "
          f"PyTorch {libs['torch'].__version__ if libs['torch'] else 'not installed'}, "
          f"flax {'installed' if libs['flax'] else 'not installed'}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("rates are epochs/s (medians of interleaved calls); X/fit is X's rate over fit's: "
          "below 1 fit is faster")
    shown = print_header(config, libs)
    results = []
    for p in grid(config):
        rows = measure_point(config, p, libs)
        results.append({"point": p, "rows": rows})
        print_row(p, rows, shown)
    stats = summary(results)
    print(f"\nover {len(results)} points (load average now {os.getloadavg()[0]:.1f}):")
    for name, s in stats.items():
        print(f"  {name + ' / fit':<18} min {s['min']:.2f}  median {s['median']:.2f}  "
              f"max {s['max']:.2f}   fit at least as fast at {s['fit_ahead']} of {s['points']}")
    if config.figure and plot(results, config, config.figure):
        print(f"figure: {config.figure}")
    return {"points": [{**dataclasses.asdict(r["point"]), "rows": r["rows"]} for r in results],
            "summary": stats}


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config, sys.argv[1:], prog="python experiments/benchmark_grid.py"))
