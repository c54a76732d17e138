"""Random restarts of a 2-2-1 XOR net end in different minima; the learning rate and stochastic updates change which.

    python -m fgd run local_minima            # CPU, about 20 s
    python -m fgd run local_minima --full     # 1,024 restarts, 10,000 epochs

SEEDS.md section 4: gradient descent is a local search and can stop in a
local optimum; random initialisation (different runs reach different optima),
the learning rate and stochastic updates change which one is reached.

A 2-2-1 net with sigmoid hidden and output units (bce cost) learns XOR from
`restarts` random starts (W ~ N(0, 1), b = 0), for each rate in `lrs`, with
full-batch gradient descent (batch_size None: one update per epoch) and with
stochastic gradient descent (batch_size 1: four updates per epoch), the same
number of epochs. Each of the two settings is ONE `fgd.sweep` call: every
restart and rate trains in one vmapped compiled program.

Each run's end point is classified by its full-batch loss L:
  global   L < 0.05 (XOR solved: the loss keeps falling towards 0)
  ln2/2    0.30 < L < 0.40: the known 2-2-1 local minimum at bce = ln(2)/2
           = 0.347 (two points classified with certainty, two left at 0.5),
           with a gradient norm near zero
  other    anything else (mostly runs still on a plateau when time ran out)
The table gives, per setting, the fraction of restarts in each class and the
median gradient norm there; the figures show the share reaching the global
minimum against the rate, the sorted final losses (the flat step at ln(2)/2
is the local minimum) and loss curves whose long plateaus are the slow,
saddle-like regions of SEEDS.md section 4.

What the default run shows (float32, CPU): the same 128 starts end in the
global minimum or at ln(2)/2 (about a quarter of them, gradient norm ~1e-3),
so random initialisation decides the optimum. The rate decides too: full
batch reaches the global minimum from 0% of starts at lr 0.1 (still on the
plateau after 2,000 epochs) to 70% at lr 1-3. Stochastic updates (batch 1)
do best at small rates (58% at lr 0.1, 66% at 0.3), but at equal epochs
they also make four times as many updates; at lr 1 and 3 they reach the
global minimum LESS often than full batch (56% and 39% vs 70% and 72%).
So on XOR 2-2-1 the noise of batch-1 updates does not by itself rescue
starts from the ln(2)/2 minimum: the seed's claim that stochastic updates
help leave poor optima is not borne out here beyond the small-rate regime.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import fgd
import fgd.cli
from fgd import plots, records

NAME = "local_minima"
PLATEAU = math.log(2) / 2   # bce of the 2-2-1 local minimum


@dataclasses.dataclass(frozen=True)
class Config:
    """XOR 2-2-1 from many random starts, full batch vs stochastic, several rates."""

    lr: float = 1.0                                  # rate of the loss curves drawn
    lrs: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    epochs: int = 2000
    batch_size: int = 1                              # the stochastic setting (vs full batch)
    restarts: int = 128                              # random starts
    seed: int = 0
    out: str = "runs"
    full: bool = False


def classify(final_loss: np.ndarray) -> np.ndarray:
    """0 global, 1 the ln2/2 minimum, 2 other."""
    return np.where(final_loss < 0.05, 0, np.where((final_loss > 0.30) & (final_loss < 0.40), 1, 2))


CLASSES = ("global", "ln2/2", "other")


def main(config: Config) -> dict:
    if config.full:
        config = dataclasses.replace(config, restarts=max(config.restarts, 1024),
                                     epochs=max(config.epochs, 10_000))
    if config.lr not in config.lrs:
        raise ValueError(f"lr must be one of lrs {config.lrs}; got {config.lr!r}")
    out = records.experiment_dir(config.out, NAME)
    dtype = jnp.zeros(()).dtype
    k_init, k_batch = jax.random.split(jax.random.key(config.seed))
    data = fgd.data.xor(dtype)
    net = fgd.MLP((2, 2, 1), hidden="sigmoid", output="sigmoid")
    loss = fgd.make_loss(net, "bce")
    keys = jax.random.split(k_init, config.restarts)
    full_loss = jax.jit(jax.vmap(jax.vmap(lambda p: loss(p, data.X, data.Y))))
    full_grad = jax.jit(jax.vmap(jax.vmap(lambda p: fgd.global_norm(jax.grad(loss)(p, data.X, data.Y)))))
    t0 = time.perf_counter()

    settings = {"full batch": None, f"batch {config.batch_size}": config.batch_size}
    numbers, rows, sweeps = {"plateau_loss": PLATEAU}, [], {}
    for name, batch_size in settings.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a run hitting NaN stops on its own; counted as "other"
            runs = fgd.sweep(loss, fgd.sgd, data.X, data.Y, init=lambda k: net.init(k, "normal", dtype=dtype),
                             keys=keys, lrs=config.lrs, epochs=config.epochs, batch_size=batch_size,
                             key=k_batch)
        final = np.asarray(full_loss(runs.params))            # (restarts, rates)
        gnorm = np.asarray(full_grad(runs.params))
        label = classify(np.nan_to_num(final, nan=np.inf))
        sweeps[name] = dict(runs=runs, final=final, label=label)
        for j, lr in enumerate(config.lrs):
            row = {"setting": name, "lr": lr}
            for c, cls in enumerate(CLASSES):
                share = float(np.mean(label[:, j] == c))
                row[cls] = share
                numbers[f"{name.replace(' ', '_')}_lr{lr:g}_{cls.replace('/', '_')}"] = share
            stuck = label[:, j] == 1
            row["grad norm at ln2/2 (median)"] = float(np.median(gnorm[stuck, j])) if stuck.any() else "-"
            rows.append(row)
        numbers[f"{name.replace(' ', '_')}_seconds"] = runs.seconds
    distinct = sorted({int(c) for s in sweeps.values() for c in np.unique(s["label"])})
    numbers["classes_reached"] = [CLASSES[c] for c in distinct]
    records.print_table(f"XOR 2-2-1, {config.restarts} restarts x {len(config.lrs)} rates, {config.epochs} epochs "
                        "(share of restarts ending in each minimum)", rows)

    # fraction reaching the global minimum against the rate
    shares = {name: [float(np.mean(s["label"][:, j] == 0)) for j in range(len(config.lrs))]
              for name, s in sweeps.items()}
    fig = plots.loss_curves(shares, log=False, diverge_factor=np.inf, xlabel="learning rate", ylabel="share of restarts",
                            title=f"XOR 2-2-1: share of {config.restarts} restarts reaching the global minimum")
    ax = fig.axes[0]
    for line in ax.lines:
        line.set_marker("o")
    ax.set_xticks(range(len(config.lrs)), [f"{lr:g}" for lr in config.lrs])
    ax.set_ylim(0, 1)
    plots.save(fig, out / "share_global.png")

    # sorted final losses: flat steps are distinct minima
    j = config.lrs.index(config.lr)
    ordered = {f"{name}, lr {config.lrs[k]:g}": np.sort(s["final"][:, k])
               for name, s in sweeps.items() for k in sorted({0, j})}
    fig = plots.loss_curves(ordered, xlabel="restart (sorted by final loss)", ylabel="final loss",
                            title="Final losses, sorted: the flat step at ln(2)/2 is the local minimum")
    fig.axes[0].axhline(PLATEAU, color="k", lw=0.8, ls="--")
    fig.axes[0].text(0, PLATEAU * 1.15, "ln(2)/2: local minimum", fontsize="small")
    plots.save(fig, out / "final_losses.png")

    # loss curves of the first restarts: plateaus, then a drop or not
    hist = sweeps["full batch"]["runs"].history["loss"][:8, j]
    fig = plots.loss_curves({f"restart {i}": h for i, h in enumerate(hist)},
                            title=f"Full batch, lr {config.lr:g}: plateaus, then the global minimum or ln(2)/2")
    fig.axes[0].axhline(PLATEAU, color="k", lw=0.8, ls="--")
    plots.save(fig, out / "curves.png")

    numbers["seconds"] = time.perf_counter() - t0
    history = {f"restart_{i}": h for i, h in enumerate(hist)}
    return records.finish(out, numbers, history)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
