"""Plain gradient descent vs momentum, Nesterov, RMSProp and Adam: a saddle, Rosenbrock's valley, three wells, digits.

    python -m fgd run optimizers            # CPU, about 20 s
    python -m fgd run optimizers --full     # finer learning-rate grid, longer runs

Five optimizers (the claim: momentum and Adam improve on plain
gradient descent in practice; the picture of walking down into a valley):

    gd        fgd.sgd(lr)
    momentum  fgd.sgd(lr, momentum=0.9)
    nesterov  fgd.sgd(lr, momentum=0.9, nesterov=True)
    rmsprop   fgd.rmsprop(lr)            (decay 0.9)
    adam      fgd.adam(lr)               (b1 0.9, b2 0.999)

On three 2-D surfaces (the "params" are a (2,) array) each optimizer's
learning rate is tuned on a log grid, and the best one is stated:

- saddle  f = 50 x^2 - y^2 + y^4/4, start (0.3, 0.001), next to the saddle at
  the origin; minima (0, +-sqrt 2), f = -1. The x direction is stiff (curvature
  100), which caps plain GD's rate below 0.02, so it crawls off the flat y
  direction. Measured: steps until f < -0.5 (left the saddle).
- rosenbrock  f = (1 - x)^2 + 100 (y - x^2)^2 from (-1.5, 2): steps until the
  iterate is first within `tol` of (1, 1), and the step from which it stays
  there (Adam at a constant rate can circle near the minimum and leave it).
- wells  three Gaussian wells in a wide bowl, start (-3, 0.3); a shallow well
  lies on the way to the deepest: which well each optimizer ends in, at the
  stated rate `lr` and over the whole grid.

Then the same optimizers train an MLP 64-64-10 (relu, softmax, He init) on
the 8x8 digits with mini-batches, at rates picked beforehand on the training
loss (`digits_lrs`, stated in the table): loss curves and test accuracy.

What the default run shows (float32, CPU), each at its best rate of the grid:
leaving the saddle takes gd 195 steps, momentum 36, Nesterov 66, RMSProp
and Adam 3; reaching 1e-3 of Rosenbrock's minimum takes gd 9,625 steps,
momentum 858, Nesterov 1,573, Adam 762 (at lr 1, staying there from step
3,910), RMSProp 9,163 (no better than gd). At lr 0.1 in the wells, gd,
RMSProp and Adam stop in the shallow well on the way, momentum and Nesterov
roll on into the deepest. On digits after 10 epochs: training loss gd 0.069,
momentum 0.024, Nesterov 0.022, RMSProp 0.022, Adam 0.030; test accuracy
95.1% against 96.7-97.1%. So momentum (and, on digits and Rosenbrock, Adam)
improve on plain gradient descent; RMSProp and Adam are not better at
everything.
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

NAME = "optimizers"
OPTIMIZERS = {
    "gd": lambda lr: fgd.sgd(lr),
    "momentum": lambda lr: fgd.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: fgd.sgd(lr, momentum=0.9, nesterov=True),
    "rmsprop": lambda lr: fgd.rmsprop(lr),
    "adam": lambda lr: fgd.adam(lr),
}


@dataclasses.dataclass(frozen=True)
class Config:
    """Optimizers on 2-D surfaces and on digits."""

    lr: float = 0.1                 # the common rate of the paths drawn on the wells surface
    epochs: int = 10                # digits epochs
    batch_size: int = 32            # digits mini-batch
    seed: int = 0
    steps: int = 50_000             # steps on Rosenbrock (saddle and wells: steps // 20)
    grid: int = 17                  # learning rates on the log grid 1e-4 .. 1
    tol: float = 1e-3               # Rosenbrock: distance to (1, 1)
    digits_lrs: tuple[float, ...] = (0.3, 0.1, 0.1, 0.01, 0.01)  # gd, momentum, nesterov, rmsprop, adam
    out: str = "runs"
    full: bool = False


# --- the surfaces: f(params, X, Y) ignores the data -----------------------------
def saddle(p, X=None, Y=None):
    x, y = p[0], p[1]
    return 50 * x**2 - y**2 + y**4 / 4


def rosenbrock(p, X=None, Y=None):
    x, y = p[0], p[1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


WELL_CENTRES = np.array([[-1.0, 0.2], [1.5, 0.0], [0.2, -1.5]])
WELL_DEPTHS = np.array([0.5, 1.0, 0.7])
WELL_WIDTHS = np.array([0.35, 0.6, 0.4])


def wells(p, X=None, Y=None):
    """A bowl centred on the deepest well minus three Gaussian wells."""
    c = jnp.asarray(WELL_CENTRES, p.dtype)
    d2 = jnp.sum((p[None, :] - c) ** 2, axis=1)
    return 0.1 * jnp.sum((p - c[1]) ** 2) - jnp.sum(
        jnp.asarray(WELL_DEPTHS, p.dtype) * jnp.exp(-d2 / (2 * jnp.asarray(WELL_WIDTHS, p.dtype) ** 2)))


def numpy_surface(f):
    """f on numpy grids, for the contour plots."""
    return lambda GX, GY: np.asarray(jax.vmap(f)(jnp.stack([GX.ravel(), GY.ravel()], 1))).reshape(GX.shape)


def paths(f, opt, start, lrs, steps):
    """Iterates (len(lrs), steps + 1, 2) of `opt` on f, one run per rate, vmapped.

    The rate is a traced value in the optimizer state (`state._replace(lr=)`),
    so the whole grid is one compiled scan.
    """

    def run(lr):
        state = opt.init(start)._replace(lr=lr)

        def body(carry, _):
            p, s = carry
            updates, s = opt.update(jax.grad(f)(p), s, p)
            p = fgd.apply_updates(p, updates)
            return (p, s), p

        _, ps = jax.lax.scan(body, (start, state), None, length=steps)
        return jnp.concatenate([start[None], ps])

    return np.asarray(jax.jit(jax.vmap(run))(lrs))


def first_settled(ok):
    """Per row, the first step from which `ok` holds to the end; -1 if none."""
    stays = np.flip(np.logical_and.accumulate(np.flip(ok, -1), -1), -1)
    return np.where(stays.any(-1), stays.argmax(-1), -1)


def first_true(ok):
    return np.where(ok.any(-1), ok.argmax(-1), -1)


def best(steps, lrs):
    """(rate, steps) of the fewest steps; (nan, -1) when no rate got there."""
    reached = steps >= 0
    if not reached.any():
        return float("nan"), -1
    i = np.flatnonzero(reached)[np.argmin(steps[reached])]
    return float(lrs[i]), int(steps[i])


def surfaces(config: Config, dtype):
    lrs = np.geomspace(1e-4, 1.0, config.grid)
    short = max(config.steps // 20, 100)
    out = {}
    for name, make in OPTIMIZERS.items():
        opt = make(0.1)  # the rate is replaced per run
        lr_arr = jnp.asarray(lrs, dtype)
        P = paths(saddle, opt, jnp.asarray([0.3, 1e-3], dtype), lr_arr, short)
        f = np.asarray(jax.vmap(jax.vmap(saddle))(jnp.asarray(P)))
        saddle_steps = first_true(np.nan_to_num(f, nan=np.inf) < -0.5)
        R = paths(rosenbrock, opt, jnp.asarray([-1.5, 2.0], dtype), lr_arr, config.steps)
        dist = np.linalg.norm(np.nan_to_num(R, nan=np.inf) - 1.0, axis=-1)
        rosen_steps = first_true(dist < config.tol)
        rosen_settled = first_settled(dist < config.tol)
        W = paths(wells, opt, jnp.asarray([-3.0, 0.3], dtype),
                  jnp.asarray(np.append(lrs, config.lr), dtype), short)
        end = np.nan_to_num(W[:, -1], nan=np.inf)
        well = np.argmin(np.linalg.norm(end[:, None] - WELL_CENTRES[None], axis=-1), -1)
        well = np.where(np.isfinite(end).all(-1), well, -1)
        out[name] = dict(saddle=(P, saddle_steps), rosenbrock=(R, rosen_steps), rosenbrock_settled=rosen_settled, wells=(W, well))
    return lrs, out


# --- digits -------------------------------------------------------------------
def digits(config: Config, dtype):
    k_split, k_init, k_batch = jax.random.split(jax.random.key(config.seed), 3)
    d = fgd.data.digits(dtype)
    split = fgd.data.train_test_split(k_split, d.X, d.Y, 0.25, stratify=True)
    net = fgd.MLP((64, 64, 10), hidden="relu", output="softmax")
    loss = fgd.make_loss(net, "cross_entropy")
    params0 = net.init(k_init, "he", dtype=dtype)
    histories, rows = {}, []
    for (name, make), lr in zip(OPTIMIZERS.items(), config.digits_lrs):
        result = fgd.fit(loss, params0, make(lr), split.X_train, split.Y_train, epochs=config.epochs,
                         batch_size=config.batch_size, key=k_batch)
        params, history = result.params, result.history["loss"]
        accuracy = float(np.mean(np.asarray(net.apply(params, split.X_test)).argmax(0)
                                 == np.asarray(split.Y_test).argmax(0)))
        histories[f"{name} (lr {lr:g})"] = history
        rows.append({"optimizer": name, "lr": lr,
                     "train_loss": float(loss(params, split.X_train, split.Y_train)),
                     "test_accuracy": accuracy})
    return histories, rows


def main(config: Config) -> dict:
    if config.full:
        config = dataclasses.replace(config, steps=max(config.steps, 200_000), grid=max(config.grid, 33),
                                     epochs=max(config.epochs, 40))
    if len(config.digits_lrs) != len(OPTIMIZERS):
        raise ValueError(f"digits_lrs must give {len(OPTIMIZERS)} rates ({', '.join(OPTIMIZERS)}); "
                         f"got {config.digits_lrs!r}")
    out = records.experiment_dir(config.out, NAME)
    dtype = jnp.zeros(()).dtype
    t0 = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"):  # diverged runs overflow on purpose
        lrs, runs = surfaces(config, dtype)

    numbers = {"lr_grid": lrs, "tol": config.tol}
    tables = {"saddle": [], "rosenbrock": [], "wells": []}
    drawn = {"saddle": {}, "rosenbrock": {}, "wells": {}}
    heights = {}  # f - f_min along the saddle paths
    for name, run in runs.items():
        for surface, key in (("saddle", "steps_to_leave"), ("rosenbrock", "steps_to_tol")):
            P, steps = run[surface]
            lr, n = best(steps, lrs)
            numbers[f"{surface}_{name}_best_lr"] = lr
            numbers[f"{surface}_{name}_{key}"] = n
            tables[surface].append({"optimizer": name, "best lr": lr,
                                    key.replace("_", " "): n if n >= 0 else "never",
                                    "rates that get there": f"{int((steps >= 0).sum())}/{len(lrs)}"})
            if surface == "rosenbrock":
                # Adam, at a constant rate, can reach the tolerance and leave it again
                settled = int(run["rosenbrock_settled"][np.flatnonzero(lrs == lr)[0]]) if n >= 0 else -1
                numbers[f"rosenbrock_{name}_stays_from"] = settled
                tables[surface][-1]["stays within tol from"] = settled if settled >= 0 else "never"
            if n >= 0:
                i = int(np.flatnonzero(lrs == lr)[0])
                drawn[surface][f"{name}, lr {lr:.2g}"] = P[i, : n + 1]
                if surface == "saddle":
                    # f + 1 = f - min f; float32 rounding makes it noisy below 1e-6
                    heights[f"{name}, lr {lr:.2g}"] = np.maximum(
                        np.asarray(jax.vmap(saddle)(jnp.asarray(P[i, :400]))) + 1.0, 1e-6)
        W, well = run["wells"]
        where = ["shallow", "deepest", "middle"][well[-1]] if well[-1] >= 0 else "diverged"
        numbers[f"wells_{name}_well_at_lr"] = int(well[-1])
        numbers[f"wells_{name}_rates_reaching_deepest"] = int((well[:-1] == 1).sum())
        tables["wells"].append({"optimizer": name, f"well at lr {config.lr:g}": where,
                                "rates ending in deepest": f"{int((well[:-1] == 1).sum())}/{len(lrs)}"})
        drawn["wells"][f"{name} -> {where} well"] = W[-1]

    records.print_table(f"Saddle 50x^2 - y^2 + y^4/4 from (0.3, 0.001): steps until f < -0.5, best rate of {len(lrs)}",
                        tables["saddle"])
    records.print_table(f"Rosenbrock from (-1.5, 2): steps until within {config.tol:g} of (1, 1), "
                        f"best rate of {len(lrs)}", tables["rosenbrock"])
    records.print_table("Gaussian wells from (-3, 0.3): which well (depths shallow 0.5, middle 0.7, deepest 1.0)",
                        tables["wells"])

    plots.optimizer_paths(
        numpy_surface(saddle), drawn["saddle"], (-0.4, 0.4), (-2.0, 2.0), path=out / "saddle.png",
        title="Saddle: steps to leave it, each at its best rate")
    fig = plots.loss_curves(heights, xlabel="step", ylabel="f - min f",
                            title="Saddle: the loss plateaus at f - min f = 1 until the optimizer leaves")
    plots.save(fig, out / "saddle_loss.png")
    plots.optimizer_paths(
        numpy_surface(rosenbrock), drawn["rosenbrock"], (-2.0, 2.0), (-1.0, 3.0), path=out / "rosenbrock.png",
        title=f"Rosenbrock: steps to within {config.tol:g} of (1,1)")
    plots.optimizer_paths(
        numpy_surface(wells), drawn["wells"], (-3.5, 3.0), (-3.0, 2.0), path=out / "wells.png",
        title=f"Three wells (shallow -1, 0.2; deepest 1.5, 0), lr {config.lr:g}")

    histories, rows = digits(config, dtype)
    records.print_table(f"Digits, MLP 64-64-10, {config.epochs} epochs of mini-batches of {config.batch_size}", rows)
    for row in rows:
        numbers[f"digits_{row['optimizer']}_lr"] = row["lr"]
        numbers[f"digits_{row['optimizer']}_train_loss"] = row["train_loss"]
        numbers[f"digits_{row['optimizer']}_test_accuracy"] = row["test_accuracy"]
    plots.loss_curves(
        histories, path=out / "digits_loss.png",
        title=f"Digits MLP: mean mini-batch loss (batch {config.batch_size})")
    numbers["seconds"] = time.perf_counter() - t0
    return records.finish(out, numbers, {k.split(" ")[0]: v for k, v in histories.items()})


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
