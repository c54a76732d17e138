"""Overfitting and L2/L1 regularisation: training error vs generalisation error across penalty strengths.

    python -m fgd run regularization            # CPU, about 30 s
    python -m fgd run regularization --full     # 10,000 epochs

Overfitting and underfitting, training error vs generalisation error,
L1/L2 regularisation.

A wide MLP 1-128-128-1 (tanh, Xavier init, identity output, mse) fits 20
noisy samples of y = sin(3x) + N(0, 0.3^2) on [-1, 1] with full-batch Adam
for `epochs` epochs; 200 fresh noisy samples on a grid are the test set.
Without a penalty it threads the noise: training error near 0, test error
high. `fgd.make_loss(net, "mse", l2=s)` (and `l1=s`) adds
s/(2m) sum W^2 (s/m sum |W|) over the weights, never the biases, for each
strength s in `strengths`. The test error against s is U-shaped (too little:
overfits, too much: underfits) and the train/test gap closes as s grows.
L1 drives most weights to (near) zero, L2 shrinks them without zeroing:
the share of weights with |W| < `zero_tol` is measured for each.
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

NAME = "regularization"


@dataclasses.dataclass(frozen=True)
class Config:
    """A wide MLP on 20 noisy points, with L2 and L1 penalties of several strengths."""

    lr: float = 3e-3
    epochs: int = 3000
    batch_size: int = 0                 # 0: full batch (the 20 points)
    strengths: tuple[float, ...] = (0.0, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0)  # penalties
    n_train: int = 20                   # training points
    noise: float = 0.3                  # std of the noise on the targets
    hidden: int = 128
    zero_tol: float = 1e-3              # |W| below this counts as zero
    seed: int = 0
    out: str = "runs"
    full: bool = False


def make_data(config: Config, dtype, key):
    k_x, k_noise, k_test = jax.random.split(key, 3)
    f = lambda x: jnp.sin(3 * x)
    X = jax.random.uniform(k_x, (1, config.n_train), dtype, -1, 1)                   # (1, m)
    Y = f(X) + config.noise * jax.random.normal(k_noise, X.shape, dtype)
    Xt = jnp.linspace(-1, 1, 200, dtype=dtype)[None]                                  # (1, 200)
    Yt = f(Xt) + config.noise * jax.random.normal(k_test, Xt.shape, dtype)
    return X, Y, Xt, Yt


def main(config: Config) -> dict:
    if config.full:
        config = dataclasses.replace(config, epochs=max(config.epochs, 10_000))
    out = records.experiment_dir(config.out, NAME)
    dtype = jnp.zeros(()).dtype
    k_data, k_init = jax.random.split(jax.random.key(config.seed))
    X, Y, Xt, Yt = make_data(config, dtype, k_data)
    net = fgd.MLP((1, config.hidden, config.hidden, 1), hidden="tanh", output="identity")
    mse = fgd.make_loss(net, "mse")
    params0 = net.init(k_init, "xavier", dtype=dtype)
    opt = fgd.adam(config.lr)
    batch = config.batch_size or None
    t0 = time.perf_counter()

    results, rows = {}, []
    for kind in ("l2", "l1"):
        for s in config.strengths:
            if s == 0 and kind == "l1":
                results[(kind, s)] = results[("l2", 0.0)]  # the same unpenalised run
            else:
                loss = fgd.make_loss(net, "mse", **{kind: s})
                r = fgd.fit(loss, params0, opt, X, Y, epochs=config.epochs, batch_size=batch,
                            key=k_init)
                W = np.concatenate([np.abs(np.asarray(layer["W"])).ravel() for layer in r.params])
                results[(kind, s)] = dict(params=r.params, train=float(mse(r.params, X, Y)),
                                          test=float(mse(r.params, Xt, Yt)),
                                          zero=float(np.mean(W < config.zero_tol)), W=np.sort(W))
            res = results[(kind, s)]
            rows.append({"penalty": kind, "strength": s, "train error": res["train"], "test error": res["test"],
                         "gap": res["test"] - res["train"], f"|W|<{config.zero_tol:g}": res["zero"]})
    records.print_table(f"MLP 1-{config.hidden}-{config.hidden}-1 on {config.n_train} noisy points, "
                        f"{config.epochs} epochs (errors: mse = 1/(2m) sum E^2; noise floor "
                        f"{config.noise ** 2 / 2:.3g})", rows)

    numbers = {"noise_floor": config.noise ** 2 / 2, "strengths": config.strengths}
    for kind in ("l2", "l1"):
        test = [results[(kind, s)]["test"] for s in config.strengths]
        best = config.strengths[int(np.argmin(test))]
        numbers[f"{kind}_best_strength"] = best
        for key in ("train", "test", "zero"):
            numbers[f"{kind}_{key}"] = [results[(kind, s)][key] for s in config.strengths]
    none = results[("l2", 0.0)]
    best_l2, best_l1 = results[("l2", numbers["l2_best_strength"])], results[("l1", numbers["l1_best_strength"])]
    numbers["gap_unregularised"] = none["test"] - none["train"]
    numbers["gap_best_l2"] = best_l2["test"] - best_l2["train"]

    # training error vs generalisation error against the strength
    series = {f"{kind.upper()}: {name}": numbers[f"{kind}_{key}"]
              for kind in ("l2", "l1")
              for key, name in (("train", "training error"), ("test", "test (generalisation) error"))}
    fig = plots.loss_curves(series, diverge_factor=np.inf, xlabel="penalty strength",
                            ylabel="mse", title="Training error vs generalisation error")
    ax = fig.axes[0]
    styles = {"L2": "tab:blue", "L1": "tab:red"}
    for line in ax.lines:
        kind = line.get_label().split(":")[0]
        line.set_color(styles[kind])
        line.set_linestyle("--" if "training" in line.get_label() else "-")
        line.set_marker("o")
    ax.axhline(config.noise ** 2 / 2, color="gray", lw=0.8, ls=":")
    ax.text(0, config.noise ** 2 / 2 * 1.08, "noise floor", fontsize="small", color="gray")
    ax.set_xticks(range(len(config.strengths)), [f"{s:g}" for s in config.strengths])
    ax.legend(fontsize="small")
    plots.save(fig, out / "errors.png")

    # the fits themselves: overfit, best, underfit
    order = np.argsort(np.asarray(X)[0])
    picks = {"no penalty (overfits)": none,
             f"L2 {numbers['l2_best_strength']:g} (best test error)": best_l2,
             f"L2 {config.strengths[-1]:g} (underfits)": results[("l2", config.strengths[-1])]}
    fitted = np.stack([np.asarray(net.apply(p["params"], Xt))[0] for p in picks.values()])
    fig = plots.fitted_vs_actual(np.asarray(Xt)[0], np.repeat(np.asarray(Yt), len(picks), 0), fitted,
                                 labels=list(picks), xlabel="x",
                                 title=f"Fits to {config.n_train} training points (black), test points (blue)")
    for ax in fig.axes:
        ax.plot(np.asarray(X)[0, order], np.asarray(Y)[0, order], "k^", ms=6, label="training points")
        ax.set_ylim(-2, 2)
        ax.legend(fontsize="x-small", loc="upper left", ncol=3)
    plots.save(fig, out / "fits.png")

    # sorted |W|: L1 zeros most weights, L2 only shrinks them
    fig = plots.loss_curves({"no penalty": none["W"],
                             f"L2 {numbers['l2_best_strength']:g}": best_l2["W"],
                             f"L1 {numbers['l1_best_strength']:g}": best_l1["W"]},
                            diverge_factor=np.inf, xlabel="weight (sorted by |W|)", ylabel="|W|",
                            title="L1 makes the weights sparse, L2 only shrinks them")
    fig.axes[0].set_ylim(1e-8, None)
    fig.axes[0].axhline(config.zero_tol, color="gray", lw=0.8, ls=":")
    plots.save(fig, out / "weights.png")

    numbers["zero_share_unregularised"] = none["zero"]
    numbers["zero_share_best_l2"] = best_l2["zero"]
    numbers["zero_share_best_l1"] = best_l1["zero"]
    numbers["seconds"] = time.perf_counter() - t0
    return records.finish(out, numbers)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
