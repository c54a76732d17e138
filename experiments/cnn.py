"""A small CNN on the 8x8 digits, trained by gradient descent (the same gradient descent trains CNNs).

    python -m fgd run cnn                 # CPU, 1 seed, 30 epochs: well under a minute
    python -m fgd run cnn --full          # 5 seeds (5 splits), 60 epochs each

The network (`fgd.CNN`, images (1, 8, 8, m), examples last):

    Conv(16, 3, same) relu -> MaxPool(2) -> Conv(32, 3, same) relu -> MaxPool(2)
    -> Flatten (128) -> Dense(64) relu -> Dense(10) softmax,  cross-entropy

He init, Adam with mini-batches of `batch_size`, float32. A quarter of the
1,797 images, stratified by class and drawn from the key of --seed, is held out
as the test set; it is never used for training or for any choice made here
(its loss is recorded only to draw the curve). The trained network's
hand-derived gradient (`fgd.backprop`, the correlations and flipped-kernel
convolutions of `fgd.conv`) is compared with jax.grad on the test images in
float64, as a check that the model trained is the one the formulas describe.

Figures: the 16 learned first-layer 3x3 filters, and the training (and test)
loss per epoch. Numbers: test accuracy, train accuracy, training time.

Measured (30 epochs, CPU): seed 0 reaches 98.9% test accuracy (100% train) in
about 3 s of training, compilation included; seeds 0-4 (five splits) give 98.9,
97.8, 98.7, 99.1, 99.8%, mean 98.8%: split 1 is the hard one. An L2 penalty
did not help (l2=3 costs 15 points with batches of 32, where it weighs 3/32 per
weight).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

import fgd
import fgd.cli
from fgd import plots, records

NAME = "cnn"


@dataclasses.dataclass(frozen=True)
class Config:
    """A small CNN on the 8x8 digits."""

    lr: float = 3e-3
    epochs: int = 30
    batch_size: int = 32
    seed: int = 0
    test_fraction: float = 0.25
    out: str = "runs"
    full: bool = False


def digits_cnn() -> fgd.CNN:
    return fgd.CNN(
        (1, 8, 8),
        (fgd.Conv(16, 3, padding="same"), fgd.MaxPool(2),
         fgd.Conv(32, 3, padding="same"), fgd.MaxPool(2),
         fgd.Flatten(), fgd.Dense(64), fgd.Dense(10)),
        hidden="relu", output="softmax")


def accuracy(net, params, X, Y) -> float:
    return float(np.mean(np.argmax(net.apply(params, X), axis=0) == np.argmax(Y, axis=0)))


def hand_vs_autodiff(net, params, X, Y) -> float:
    """max over leaves of ||hand - jax.grad|| / (||hand|| + ||jax.grad||), in float64."""
    with fgd.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
        X64, Y64 = (jnp.asarray(np.asarray(a, np.float64)) for a in (X, Y))
        hand = fgd.backprop(net, "cross_entropy", p64, X64, Y64)
        auto = jax.jit(jax.grad(fgd.make_loss(net, "cross_entropy")))(p64, X64, Y64)
        errors = [np.linalg.norm(h - a) / (np.linalg.norm(h) + np.linalg.norm(a))
                  for h, a in zip(jax.tree_util.tree_leaves(hand), jax.tree_util.tree_leaves(auto))]
    return float(max(errors))


def run(config: Config, seed: int, epochs: int) -> dict:
    """Split, train and evaluate one seed; returns its numbers and curves."""
    key_split, key_init, key_batches = jax.random.split(jax.random.key(seed), 3)
    digits = fgd.data.digits(dtype=jnp.float32)
    split = fgd.data.train_test_split(key_split, digits.images, digits.Y,
                                      test_fraction=config.test_fraction, stratify=True)
    net = digits_cnn()
    params = net.init(key_init, "he", dtype=jnp.float32)
    loss = fgd.make_loss(net, "cross_entropy")
    start = time.perf_counter()
    result = fgd.fit(loss, params, fgd.adam(config.lr), split.X_train, split.Y_train,
                     epochs=epochs, batch_size=config.batch_size, key=key_batches,
                     validation=(split.X_test, split.Y_test))
    seconds = time.perf_counter() - start
    return {
        "seed": seed,
        "train_accuracy": accuracy(net, result.params, split.X_train, split.Y_train),
        "test_accuracy": accuracy(net, result.params, split.X_test, split.Y_test),
        "final_loss": float(result.history["loss"][-1]),
        "train_seconds": seconds,
        "samples_per_second": result.updates * config.batch_size / seconds,
        "hand_vs_autodiff": hand_vs_autodiff(net, result.params, split.X_test, split.Y_test),
        "m_train": int(split.X_train.shape[-1]),
        "m_test": int(split.X_test.shape[-1]),
        "params": result.params,
        "history": result.history,
    }


def main(config: Config) -> dict:
    seeds = range(config.seed, config.seed + 5) if config.full else (config.seed,)
    epochs = 60 if config.full else config.epochs
    directory = records.experiment_dir(config.out, NAME)
    runs = [run(config, seed, epochs) for seed in seeds]

    keys = ("train_accuracy", "test_accuracy", "final_loss", "train_seconds",
            "samples_per_second", "hand_vs_autodiff")
    rows = [{"seed": r["seed"], "train acc %": 100 * r["train_accuracy"],
             "test acc %": 100 * r["test_accuracy"], "final loss": r["final_loss"],
             "train s": r["train_seconds"], "samples/s": r["samples_per_second"],
             "hand~autodiff": f"{r['hand_vs_autodiff']:.1e}"} for r in runs]
    first = runs[0]
    records.print_table(
        f"CNN on 8x8 digits: {first['m_train']} train / {first['m_test']} held-out test images, "
        f"Adam lr {config.lr}, batch {config.batch_size}, {epochs} epochs", rows)

    net = digits_cnn()
    plots.filters(first["params"][0]["W"], path=directory / "filters.png",
                  title=f"First-layer filters (seed {first['seed']})")
    curves = {"train": first["history"]["loss"], "test (held out)": first["history"]["val_loss"]}
    plots.loss_curves(curves, path=directory / "loss.png", ylabel="cross-entropy",
                      title=f"CNN on digits: loss per epoch (Adam lr {config.lr}, batch {config.batch_size})")

    test_accs = np.array([r["test_accuracy"] for r in runs])
    numbers = {
        "architecture": repr(net.layers),
        "lr": config.lr, "epochs": epochs, "batch_size": config.batch_size,
        "test_fraction": config.test_fraction,
        "test_accuracy": float(test_accs.mean()),
        "test_accuracy_min": float(test_accs.min()),
        "runs": [{k: r[k] for k in ("seed", *keys)} for r in runs],
    }
    return records.finish(directory, numbers, curves)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
