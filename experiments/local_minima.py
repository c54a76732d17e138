"""Random restarts of a 2-2-1 XOR net end in different minima; the learning rate and stochastic updates change which.

    python -m fgd run local_minima            # CPU, about 20 s
    python -m fgd run local_minima --full     # 1,024 restarts, 10,000 epochs

The claims: gradient descent is a local search and can stop in a
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
saddle-like regions.

What the default run shows (float32, CPU): the same 128 starts end in the
global minimum or at ln(2)/2 (about a quarter of them, gradient norm ~1e-3),
so random initialisation decides the optimum. The rate decides too: full
batch reaches the global minimum from 0% of starts at lr 0.1 (still on the
plateau after 2,000 epochs) to 70% at lr 1-3. Stochastic updates (batch 1)
do best at small rates (58% at lr 0.1, 66% at 0.3), but at equal epochs
they also make four times as many updates; at lr 1 and 3 they reach the
global minimum LESS often than full batch (56% and 39% vs 70% and 72%).
So on XOR 2-2-1 the noise of batch-1 updates does not by itself rescue
starts from the ln(2)/2 minimum: the textbook claim that stochastic updates
help leave poor optima is not borne out here beyond the small-rate regime.

Hessian spectrum of critical points, at several widths. Gradient descent
is drawn away from saddles, so to test the claim that in high dimensions
most near-zero-gradient points are saddles rather than minima, this part
looks for critical points directly: from `critical_restarts` random starts
of a 2-w-1 tanh net (identity output, mse on XOR) for each width w in
`widths`, Adam minimises 1/2 ||grad J||^2 (one `fgd.sweep` per width). An
end point with ||grad J|| < CRITICAL_GRAD is a critical point; its Hessian
eigenvalues (all n of them, float64 `jax.hessian` + `eigvalsh`; the top one
checked against `fgd.hessian_eigs`) classify it, with eigenvalues within
ZERO_EIG x the largest |eigenvalue| counted as zero:
  minimum       every eigenvalue > 0
  saddle (k)    k eigenvalues < 0 (its index)
  flat          none < 0 but some zero (a degenerate minimum or flat valley)
The table prints the counts per width and the median index of the saddles.

What the default run shows (float32 search, float64 spectra; Lanczos top
eigenvalue = eigvalsh to the digits printed): no critical point found at any
width was a strict minimum. At width 2, 5 of 24 starts ended at critical
points, all saddles of index 2 at loss 0.125 (the net predicting the mean);
at widths 4 and 8 the search ended (1 and 7 of 24 starts) only at flat,
degenerate global minima (loss < 1e-11, many zero eigenvalues). So every
non-global critical point found was a saddle, consistent with the claim;
but wider nets here did not yield more saddles, the search found global
minima instead, so the run does not show that saddles dominate a growing
number of critical points; it shows only that poor ones were saddles.
"""
from __future__ import annotations

import dataclasses
import math
import time
import warnings

import jax
import jax.flatten_util
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
    widths: tuple[int, ...] = (2, 4, 8)       # hidden widths whose critical points are classified
    critical_restarts: int = 24                # random starts of the critical-point search per width
    critical_epochs: int = 2000                # Adam steps minimising 1/2 ||grad J||^2


CRITICAL_GRAD = 1e-3   # ||grad J|| below this: a critical point
ZERO_EIG = 1e-4        # |eigenvalue| below this x the largest: zero
GLOBAL_LOSS = 1e-3     # a critical point with a loss above this is not a global minimum


def classify_spectrum(eigs: np.ndarray) -> tuple[str, int]:
    """("minimum" | "saddle" | "flat", the number of negative eigenvalues)."""
    tol = ZERO_EIG * max(float(np.max(np.abs(eigs))), 1e-30)
    neg, zero = int(np.sum(eigs < -tol)), int(np.sum(np.abs(eigs) <= tol))
    if neg:
        return "saddle", neg
    return ("flat" if zero else "minimum"), 0


def critical_points(config: Config, key) -> tuple[list, dict]:
    """The Hessian-spectrum part of the module docstring; (rows, numbers)."""
    data = fgd.data.xor(jnp.float32)
    rows, numbers = [], {}
    for width in config.widths:
        net = fgd.MLP((2, width, 1), hidden="tanh", output="identity")
        loss = fgd.make_loss(net, "mse")
        grad_sq = lambda p, X, Y: 0.5 * sum(jnp.sum(g * g) for g in jax.tree.leaves(jax.grad(loss)(p, X, Y)))
        keys = jax.random.split(jax.random.fold_in(key, width), config.critical_restarts)
        runs = fgd.sweep(grad_sq, fgd.adam, data.X, data.Y, init=lambda k: net.init(k, "normal"),
                         keys=keys, lrs=[0.01], epochs=config.critical_epochs)
        with fgd.enable_x64(True):
            X64, Y64 = (jnp.asarray(np.asarray(a), jnp.float64) for a in (data.X, data.Y))
            points = jax.tree.map(lambda a: jnp.asarray(a[:, 0], jnp.float64), runs.params)
            flat0, unravel = jax.flatten_util.ravel_pytree(jax.tree.map(lambda a: a[0], points))
            f = lambda v: loss(unravel(v), X64, Y64)
            flats = jax.vmap(lambda p: jax.flatten_util.ravel_pytree(p)[0])(points)
            H = np.asarray(jax.jit(jax.vmap(jax.hessian(f)))(flats))
            gnorm = np.asarray(jax.jit(jax.vmap(lambda v: jnp.linalg.norm(jax.grad(f)(v))))(flats))
            losses = np.asarray(jax.jit(jax.vmap(f))(flats))
            top_lanczos = float(fgd.hessian_eigs(loss, jax.tree.map(lambda a: a[0], points), X64, Y64,
                                                 k=1, steps=flat0.size)[0])
        eigs = np.linalg.eigvalsh(H)                                         # (restarts, n)
        critical = gnorm < CRITICAL_GRAD
        kinds = [classify_spectrum(e) for e in eigs[critical]]
        count = {k: sum(1 for c, _ in kinds if c == k) for k in ("minimum", "saddle", "flat")}
        index = [i for c, i in kinds if c == "saddle"]
        n_crit = int(critical.sum())
        above = [c for (c, _), l in zip(kinds, losses[critical]) if l > GLOBAL_LOSS]
        rows.append({"width": width, "params": int(flat0.size), "critical / restarts":
                     f"{n_crit}/{config.critical_restarts}", **count,
                     "saddle share": count["saddle"] / n_crit if n_crit else float("nan"),
                     "median index": float(np.median(index)) if index else "-",
                     "median loss": float(np.median(losses[critical])) if n_crit else "-",
                     "top eig: eigvalsh vs Lanczos": f"{eigs[0, -1]:.6g} vs {top_lanczos:.6g}"})
        rows[-1]["saddle share above global loss"] = (sum(c == "saddle" for c in above) / len(above)
                                                      if above else float("nan"))
        numbers[f"width{width}_critical"] = n_crit
        numbers[f"width{width}_saddle_share_above_global"] = rows[-1]["saddle share above global loss"]
        numbers[f"width{width}_spectrum"] = count
        numbers[f"width{width}_saddle_share"] = count["saddle"] / n_crit if n_crit else None
        numbers[f"width{width}_saddle_indices"] = index
        numbers[f"width{width}_lanczos_top_error"] = abs(eigs[0, -1] - top_lanczos)
    return rows, numbers


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

    crit_rows, crit_numbers = critical_points(config, jax.random.fold_in(k_init, 1))
    numbers.update(crit_numbers)
    records.print_table(f"critical points (||grad J|| < {CRITICAL_GRAD:g}) found by minimising "
                        f"||grad J||^2 from {config.critical_restarts} starts, 2-w-1 tanh on XOR (mse), "
                        "classified by their Hessian spectrum", crit_rows)
    shares = [r["saddle share"] for r in crit_rows]
    above = [r["saddle share above global loss"] for r in crit_rows]
    print("share of critical points that are saddles, by width "
          f"{list(config.widths)}: {np.round(np.asarray(shares, float), 2).tolist()}; among those "
          f"with a loss above {GLOBAL_LOSS:g} (not global minima): {np.round(np.asarray(above, float), 2).tolist()}")
    _spectrum_figure(crit_rows, out / "critical_points.png")

    numbers["seconds"] = time.perf_counter() - t0
    history = {f"restart_{i}": h for i, h in enumerate(hist)}
    return records.finish(out, numbers, history)


def _spectrum_figure(rows, path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    widths = [r["width"] for r in rows]
    bottom = np.zeros(len(rows))
    for kind, colour in (("minimum", "tab:green"), ("flat", "tab:gray"), ("saddle", "tab:red")):
        vals = np.array([r[kind] for r in rows], float)
        ax.bar([str(w) for w in widths], vals, bottom=bottom, color=colour, label=kind)
        bottom += vals
    ax.set(xlabel="hidden width w (2-w-1 tanh, XOR)", ylabel="critical points found",
           title="Critical points by Hessian spectrum")
    ax.legend(fontsize="small")
    plots.save(fig, path)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
