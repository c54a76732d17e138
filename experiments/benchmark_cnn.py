"""CNN training throughput on the CPU: fgd against PyTorch, same network, same batches.

    python experiments/benchmark_cnn.py                 # 5 interleaved repeats of 3 epochs
    python experiments/benchmark_cnn.py --full          # 11 repeats of 5 epochs
    python experiments/benchmark_cnn.py --batch-size 128

The network of `experiments/cnn.py` on the 1,347 training digits, float32,
Adam, cross-entropy averaged over the batch, mini-batches of `batch_size`
reshuffled every epoch (the last `m % batch_size` examples left out, in both):

    Conv(16, 3, same) relu, MaxPool(2), Conv(32, 3, same) relu, MaxPool(2),
    Flatten, Dense(64) relu, Dense(10) softmax

Three trainers, each timed after a warm-up run (compilation excluded):

    fgd.fit        autodiff gradients, epochs inside one compiled loop (fit's path)
    fgd.make_step  the jitted autodiff step, called once per batch from Python
    fgd.backprop   the hand-derived gradient (`fgd.backprop` inside a jitted
                   `lax.scan` over an epoch's batches)
    torch         torch.nn with the same layers, a Python loop of
                  zero_grad / forward / backward / Adam step per batch

Repeats are interleaved (fgd, hand, torch, fgd, hand, torch, ...) so that a
busy machine slows all alike; the figures are medians of samples/s over the
repeats, and the ratio is fgd's median over torch's (the median of the
per-repeat ratios is printed too: on a shared machine it is the steadier
figure). PyTorch is optional:
without it only fgd's numbers are reported. Not an experiment of `fgd run`
(the CLI lists it out); the project benchmark calls `main(config)`.

Measured (`--full --threads 1`, a 2-core CPU shared with other work, so
ratios from the same run are the figures to compare): fgd.fit 115k samples/s,
fgd.make_step 108k, fgd.backprop 120k, torch 31k; fit / torch = 3.7 (3.4
against torch on its 2 default threads). Before the chunks of larger work
kept XLA:CPU's YNNPACK fusions (`fgd.kernels.ONE_KERNEL_OPTIONS`), fit ran at
83k samples/s. Before `fgd.conv`
computed its convolutions as patches and matmuls, fit ran at 0.47 of torch: XLA:CPU
gives a convolution its fast (Eigen) kernel only in the entry computation, and
fit's epochs run inside while/scan loops.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

import fgd
import fgd.cli
from fgd import records

NAME = "benchmark_cnn"


@dataclasses.dataclass(frozen=True)
class Config:
    """CNN training samples/s, fgd vs PyTorch, CPU, float32."""

    lr: float = 1e-3
    epochs: int = 3                 # per timed repeat
    batch_size: int = 32
    repeats: int = 5
    seed: int = 0
    threads: Optional[int] = None   # torch intra-op threads; None keeps torch's default
    out: str = "runs"
    full: bool = False


def digits_cnn() -> fgd.CNN:
    """The `cnn` experiment's own network, so the benchmark times what it trains."""
    return fgd.cli.load_experiment("cnn").digits_cnn()


def training_data(seed: int):
    """The 1,347 training images (1, 8, 8, m) and one-hot labels (10, m), float32."""
    digits = fgd.data.digits(dtype=jnp.float32)
    split = fgd.data.train_test_split(jax.random.key(seed), digits.images, digits.Y,
                                      test_fraction=0.25, stratify=True)
    return split.X_train, split.Y_train


# --- fgd: fit (autodiff) --------------------------------------------------------------
def fgd_fit_trainer(config: Config, X, Y):
    """A function epochs -> (seconds, samples) running fgd.fit from fresh params."""
    net = digits_cnn()
    loss = fgd.make_loss(net, "cross_entropy")
    opt = fgd.adam(config.lr)   # one object: fit's compiled loop is cached on it
    params = net.init(jax.random.key(config.seed), "he", dtype=jnp.float32)

    def train(epochs: int):
        start = time.perf_counter()
        result = fgd.fit(loss, params, opt, X, Y, epochs=epochs, batch_size=config.batch_size,
                         key=jax.random.key(config.seed))
        jax.block_until_ready(result.params)
        return time.perf_counter() - start, result.updates * config.batch_size

    return train


# --- fgd: make_step called once per batch from Python ----------------------------------
def fgd_step_trainer(config: Config, X, Y):
    """A function epochs -> (seconds, samples): the jitted `fgd.make_step`
    (autodiff) called per batch from a Python loop, batches cut on the host."""
    net = digits_cnn()
    opt = fgd.adam(config.lr)
    step = fgd.make_step(fgd.make_loss(net, "cross_entropy"), opt)
    Xn, Yn = np.asarray(X), np.asarray(Y)
    m, bs = Xn.shape[-1], config.batch_size
    n_batches = m // bs
    rng = np.random.default_rng(config.seed)

    def train(epochs: int):
        params = net.init(jax.random.key(config.seed), "he", dtype=jnp.float32)
        state = opt.init(params)
        start = time.perf_counter()
        for _ in range(epochs):
            for idx in rng.permutation(m)[: n_batches * bs].reshape(n_batches, bs):
                params, state, _ = step(params, state, Xn[..., idx], Yn[:, idx])
        jax.block_until_ready(params)
        return time.perf_counter() - start, epochs * n_batches * bs

    return train


# --- fgd: the hand-derived gradient in a scanned epoch ---------------------------------
def fgd_hand_trainer(config: Config, X, Y):
    """A function epochs -> (seconds, samples): Adam on fgd.backprop's gradient,
    one jitted lax.scan over the batches of each epoch, batch order as fit's."""
    net = digits_cnn()
    opt = fgd.adam(config.lr)
    m, bs = X.shape[-1], config.batch_size
    n_batches = m // bs
    params0 = net.init(jax.random.key(config.seed), "he", dtype=jnp.float32)

    @jax.jit
    def epoch(params, state, key):
        order = jax.random.permutation(key, m)[: n_batches * bs].reshape(n_batches, bs)

        def step(carry, idx):
            params, state = carry
            grads = fgd.backprop(net, "cross_entropy", params, X[..., idx], Y[:, idx])
            updates, state = opt.update(grads, state, params)
            return (fgd.apply_updates(params, updates), state), None

        return jax.lax.scan(step, (params, state), order)[0]

    def train(epochs: int):
        key = jax.random.key(config.seed)
        start = time.perf_counter()
        params, state = params0, opt.init(params0)
        for e in range(epochs):
            params, state = epoch(params, state, jax.random.fold_in(key, e))
        jax.block_until_ready(params)
        return time.perf_counter() - start, epochs * n_batches * bs

    return train


# --- PyTorch ----------------------------------------------------------------------------
def torch_trainer(config: Config, X, Y):
    """A function epochs -> (seconds, samples) training the same network in torch."""
    import torch

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    images = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(X), -1, 0)))  # (m, 1, 8, 8)
    labels = torch.from_numpy(np.asarray(Y).argmax(axis=0))
    m, bs = images.shape[0], config.batch_size
    n_batches = m // bs
    nn = torch.nn

    def train(epochs: int):
        model = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
        opt = torch.optim.Adam(model.parameters(), lr=config.lr)
        cross_entropy = nn.CrossEntropyLoss()
        start = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(m)[: n_batches * bs].view(n_batches, bs)
            for idx in order:
                opt.zero_grad(set_to_none=True)
                cross_entropy(model(images[idx]), labels[idx]).backward()
                opt.step()
        return time.perf_counter() - start, epochs * n_batches * bs

    return train


def main(config: Config) -> dict:
    epochs, repeats = (5, 11) if config.full else (config.epochs, config.repeats)
    X, Y = training_data(config.seed)
    trainers = {"fgd.fit": fgd_fit_trainer(config, X, Y),
                "fgd.make_step": fgd_step_trainer(config, X, Y),
                "fgd.backprop": fgd_hand_trainer(config, X, Y)}
    try:
        import torch
        trainers["torch"] = torch_trainer(config, X, Y)
        torch_info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    except ImportError:
        torch_info = "torch not installed"

    for train in trainers.values():   # warm-up: compilation, caches, allocator
        train(1)
    rates = {name: [] for name in trainers}
    for _ in range(repeats):
        for name, train in trainers.items():
            seconds, samples = train(epochs)
            rates[name].append(samples / seconds)

    medians = {name: float(np.median(r)) for name, r in rates.items()}
    rows = [{"trainer": name, "median samples/s": medians[name],
             "min": float(np.min(r)), "max": float(np.max(r)),
             "vs torch": medians[name] / medians["torch"] if "torch" in medians else ""}
            for name, r in rates.items()]
    records.print_table(
        f"CNN training on the CPU, float32, batch {config.batch_size}, {X.shape[-1]} images, "
        f"{epochs} epochs x {repeats} interleaved repeats ({torch_info}; jax {jax.__version__})", rows)
    numbers = {
        "batch_size": config.batch_size, "epochs_per_repeat": epochs, "repeats": repeats,
        "m_train": int(X.shape[-1]), "torch": torch_info,
        "samples_per_second": medians, "all_samples_per_second": rates,
    }
    if "torch" in medians:
        numbers["fit_over_torch"] = medians["fgd.fit"] / medians["torch"]
        numbers["make_step_over_torch"] = medians["fgd.make_step"] / medians["torch"]
        numbers["backprop_over_torch"] = medians["fgd.backprop"] / medians["torch"]
        # each repeat's three runs are neighbours in time: their ratio cancels a
        # load that changes between repeats
        paired = float(np.median(np.array(rates["fgd.fit"]) / np.array(rates["torch"])))
        numbers["fit_over_torch_paired"] = paired
        print(f"\nratio fgd.fit / torch = {numbers['fit_over_torch']:.2f}, "
              f"fgd.make_step / torch = {numbers['make_step_over_torch']:.2f}, "
              f"fgd.backprop / torch = {numbers['backprop_over_torch']:.2f} (medians of samples/s); "
              f"median of per-repeat fgd.fit / torch = {paired:.2f}")
    return records.finish(records.experiment_dir(config.out, NAME), numbers)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config, prog="benchmark_cnn"))
