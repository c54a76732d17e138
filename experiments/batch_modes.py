"""Batch vs stochastic vs mini-batch (32, 64) gradient descent on the same moons problem: loss against epochs and against seconds.

    python -m fgd run batch_modes            # 2,000 moons points, 40 epochs per mode
    python -m fgd run batch_modes --full     # 20,000 points, 100 epochs

Batch, stochastic and mini-batch gradient descent. One 2-16-1 tanh/sigmoid net (bce, xavier start, the same
start for every mode) trained by `fgd.fit` with plain `fgd.sgd` at the same
learning rate, with batch_size None (batch GD: 1 update per epoch), 1
(stochastic: m updates per epoch), 32 and 64 (m // k updates; the m % k
examples left over are a different few each epoch).

The loss plotted is the whole training set's bce at the params each epoch
ends with (fit's "val_loss" with the training set passed as validation), so
all modes are measured alike. Each mode is timed on a second `fit` call after
a first, identical one has compiled it: compilation is excluded; the fastest
of `repeats` timed runs counts (the machine is shared). Seconds per epoch are
that run's wall time over its epochs; the time axis assumes epochs take equal
time. With the defaults a stochastic epoch (2,000 updates) costs about 30
batch epochs, yet it is still ahead per second: one batch update moves the
params no further than one stochastic update at this learning rate.
Mini-batch 64 sits longer on the plateau near loss 0.29 than mini-batch 32.

The textbook remark that the noise of stochastic updates can help leave poor
optima is shown by the `local_minima` experiment, not here.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import jax
import numpy as np
from matplotlib.figure import Figure

import fgd
import fgd.cli
from fgd import plots, records


@dataclasses.dataclass(frozen=True)
class Config:
    """The same problem trained with batch, stochastic and mini-batch GD."""

    lr: float = 0.1
    epochs: int = 40
    batch_size: Optional[int] = None    # one more mini-batch size to compare, if given
    modes: tuple[int, ...] = (0, 1, 32, 64)  # 0 stands for the full batch (batch_size None)
    repeats: int = 3                    # timed runs per mode; the fastest counts
    seed: int = 0
    m: int = 2000
    hidden: int = 16
    out: str = "runs"
    full: bool = False


def main(config: Config) -> dict:
    m, epochs = (20_000, 100) if config.full else (config.m, config.epochs)
    directory = records.experiment_dir(config.out, "batch_modes")
    key_data, key_init, key_order = jax.random.split(jax.random.key(config.seed), 3)
    X, Y = fgd.data.moons(key_data, m, noise=0.2)
    net = fgd.MLP((2, config.hidden, 1), hidden="tanh", output="sigmoid")
    loss = fgd.make_loss(net, "bce")
    params = net.init(key_init, "xavier")
    opt = fgd.sgd(config.lr)

    rows, curves, seconds, numbers = [], {}, {}, {"m": m, "epochs": epochs, "lr": config.lr}
    modes = config.modes + ((config.batch_size,) if config.batch_size else ())
    for size in modes:
        batch_size = None if size == 0 else size
        name = "batch (all m)" if batch_size is None else (
            "stochastic (1)" if batch_size == 1 else f"mini-batch {batch_size}")
        run = lambda: fgd.fit(loss, params, opt, X, Y, epochs=epochs, batch_size=batch_size,
                              key=key_order, validation=(X, Y), progress=False)
        run()                                   # compiles; not timed
        wall = float("inf")
        for _ in range(max(config.repeats, 1)):
            start = time.perf_counter()
            result = run()
            jax.block_until_ready(result.params)
            wall = min(wall, time.perf_counter() - start)
        train_loss = np.asarray(result.history["val_loss"])  # whole training set, epoch end
        updates = 1 if batch_size is None else m // batch_size
        acc = float(np.mean((np.asarray(net.apply(result.params, X)) > 0.5) == (np.asarray(Y) > 0.5)))
        numbers[name] = {"batch_size": batch_size, "updates_per_epoch": updates,
                         "final_loss": float(train_loss[-1]), "accuracy": acc,
                         "seconds": wall, "seconds_per_epoch": wall / epochs}
        rows.append({"mode": name, "updates/epoch": updates, "final loss": float(train_loss[-1]),
                     "accuracy %": 100 * acc, "seconds (compile excluded)": wall,
                     "ms/update": 1e3 * wall / (updates * epochs)})
        curves[name] = train_loss
        seconds[name] = wall / epochs * np.arange(1, epochs + 1)

    records.print_table(f"batch modes: {net.sizes} net, bce, sgd lr {config.lr}, {epochs} epochs, "
                        f"{m} moons points (loss: whole training set at each epoch's end)", rows)
    _loss_vs_epochs_and_time(curves, seconds, config.lr, directory / "loss.png")
    return records.finish(directory, numbers, curves)


def _loss_vs_epochs_and_time(curves: dict, seconds: dict, lr: float, path) -> None:
    fig = Figure(figsize=(11, 4.2))
    ax_e, ax_t = fig.subplots(1, 2, sharey=True)
    for name, loss in curves.items():
        ax_e.plot(np.arange(1, loss.size + 1), loss, label=name, lw=1.5)
        ax_t.plot(seconds[name], loss, label=name, lw=1.5)
    ax_e.set(xlabel="epoch", ylabel="training-set bce (log scale)", yscale="log",
             title=f"Loss against epochs (sgd lr {lr})")
    ax_t.set(xlabel="wall-clock seconds (compile excluded)", xscale="log",
             title="Loss against time (log time axis)")
    for ax in (ax_e, ax_t):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    plots.save(fig, path)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
