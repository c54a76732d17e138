"""Exploding gradients tamed by clipping; vanishing gradients in a deep sigmoid net, fixed by relu + He init.

    python -m fgd run gradients            # CPU, about 20 s
    python -m fgd run gradients --full     # more epochs

The claims: gradient clipping bounds gradients to fight exploding gradients;
vanishing gradients make learning stall; sigmoid units in their flat regions
can make gradients vanish.

Exploding. An 8-hidden-layer relu net (1-32x8-1, He init, identity output,
mse) fits y = sin(2x) + noise on 200 points with full-batch gradient descent
at the large rate `lr`. Plain `fgd.sgd(lr)`: the gradient norm grows, the
loss turns inf/NaN within a few epochs (fit stops with "nonfinite").
`fgd.chain(fgd.clip_by_global_norm(clip), fgd.sgd(lr))` at the same rate
stays finite and fits; a run at `lr / 10` without clipping is the baseline.

Vanishing. A 10-layer net (64-32x9-10, softmax, cross-entropy) on the 8x8
digits, with sigmoid hidden units and Xavier init, then with relu and He
init, trained by mini-batch `fgd.sgd(deep_lr)`. The per-layer gradient norms
||g[l]|| (W and b) over the whole training set at init and along training
(fit's on-device history "layer_grad_norm", with "dead_fraction" and
"saturated_fraction" per hidden layer, and `fgd.diagnose` on each run):
with sigmoid, g'(z) <= 1/4 shrinks the backward signal at every layer, so
layer 1's gradient is orders of magnitude below layer 10's and the net does
not learn; with relu + He the norms stay within a small factor of each other
and the same net trains.
"""
from __future__ import annotations

import dataclasses
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

import fgd
import fgd.cli
from fgd import plots, records

NAME = "gradients"


@dataclasses.dataclass(frozen=True)
class Config:
    """Exploding and vanishing gradients."""

    lr: float = 0.1             # the large rate of the exploding part
    clip: float = 1.0           # clip_by_global_norm bound
    epochs: int = 300           # full-batch epochs of the exploding part
    batch_size: int = 64        # mini-batch of the digits (vanishing) part
    deep_epochs: int = 20       # digits epochs
    deep_lr: float = 0.1        # learning rate of the digits part
    depth: int = 10             # weight layers of the digits net
    width: int = 32
    seed: int = 0
    out: str = "runs"
    full: bool = False


def layer_norms(loss):
    """A jitted params, X, Y -> ||g[l]|| (W and b together) for l = 1..L over the whole set,
    the same figure as fit's history entry "layer_grad_norm"."""

    @jax.jit
    def norms(params, X, Y):
        return jnp.stack([jnp.sqrt(jnp.sum(layer["W"] ** 2) + jnp.sum(layer["b"] ** 2))
                          for layer in jax.grad(loss)(params, X, Y)])

    return lambda params, X, Y: np.asarray(norms(params, X, Y))


def exploding(config: Config, dtype, key):
    k_noise, k_init = jax.random.split(key)
    X = jnp.linspace(-2, 2, 200, dtype=dtype)[None]                       # (1, 200)
    Y = jnp.sin(2 * X) + 0.1 * jax.random.normal(k_noise, X.shape, dtype)  # (1, 200)
    net = fgd.MLP((1,) + (32,) * 8 + (1,), hidden="relu", output="identity")
    loss = fgd.make_loss(net, "mse")
    params = net.init(k_init, "he", dtype=dtype)
    runs = {
        f"sgd lr {config.lr:g}": fgd.sgd(config.lr),
        f"sgd lr {config.lr:g}, clip {config.clip:g}": fgd.chain(fgd.clip_by_global_norm(config.clip),
                                                                 fgd.sgd(config.lr)),
        f"sgd lr {config.lr / 10:g}": fgd.sgd(config.lr / 10),
    }
    results = {}
    for name, opt in runs.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fit warns when the loss turns non-finite: expected here
            results[name] = fgd.fit(loss, params, opt, X, Y, epochs=config.epochs,
                                    history=("loss", "grad_norm"))
    return results


UNIT_HISTORY = ("layer_grad_norm", "dead_fraction", "saturated_fraction")


def vanishing(config: Config, dtype, key):
    k_split, k_init, k_batch = jax.random.split(key, 3)
    d = fgd.data.digits(dtype)
    split = fgd.data.train_test_split(k_split, d.X, d.Y, 0.25, stratify=True)
    sizes = (64,) + (config.width,) * (config.depth - 1) + (10,)
    out = {}
    for hidden, scheme in (("sigmoid", "xavier"), ("relu", "he")):
        net = fgd.MLP(sizes, hidden=hidden, output="softmax")
        loss = fgd.make_loss(net, "cross_entropy")
        params = net.init(k_init, scheme, dtype=dtype)
        opt = fgd.sgd(config.deep_lr)
        # the per-layer norms (and dead/saturated units) along training come from
        # fit's on-device history entries, measured on the whole training set at
        # the params each epoch ends with; epoch 0 is the start, measured here
        result = fgd.fit(loss, params, opt, split.X_train, split.Y_train, epochs=config.deep_epochs,
                         batch_size=config.batch_size, key=k_batch, progress=False,
                         history=("loss",) + UNIT_HISTORY)
        params = result.params
        norms = np.vstack([layer_norms(loss)(net.init(k_init, scheme, dtype=dtype), split.X_train,
                                             split.Y_train), result.history["layer_grad_norm"]])
        epochs, losses = np.arange(config.deep_epochs + 1), result.history["loss"]
        accuracy = float(np.mean(np.asarray(net.apply(params, split.X_test)).argmax(0)
                                 == np.asarray(split.Y_test).argmax(0)))
        out[f"{hidden} + {scheme}"] = dict(norms=np.array(norms), epochs=np.array(epochs),
                                           loss=np.array(losses), test_accuracy=accuracy,
                                           result=result)
    return out


def main(config: Config) -> dict:
    if config.full:
        config = dataclasses.replace(config, epochs=max(config.epochs, 2000),
                                     deep_epochs=max(config.deep_epochs, 100))
    out = records.experiment_dir(config.out, NAME)
    dtype = jnp.zeros(()).dtype
    k_explode, k_vanish = jax.random.split(jax.random.key(config.seed))
    t0 = time.perf_counter()

    # --- exploding ---
    runs = exploding(config, dtype, k_explode)
    numbers, rows = {}, []
    for name, r in runs.items():
        g = r.history["grad_norm"]
        tag = name.replace(" ", "_").replace(",", "")
        numbers[f"explode_{tag}_stop"] = r.stop_reason
        numbers[f"explode_{tag}_final_loss"] = float(r.history["loss"][-1]) if r.stop_reason != "nonfinite" \
            else float("nan")
        numbers[f"explode_{tag}_max_grad_norm"] = float(np.nanmax(np.where(np.isfinite(g), g, np.nan)))
        rows.append({"run": name, "stop": r.stop_reason,
                     "epochs": r.epochs if r.nonfinite_epoch is None else f"NaN at {r.nonfinite_epoch}",
                     "first loss": float(r.history["loss"][0]),
                     "last finite loss": float(r.history["loss"][np.isfinite(r.history["loss"])][-1]),
                     "grad norm first -> last finite": f"{g[0]:.3g} -> {g[np.isfinite(g)][-1]:.3g}"})
    records.print_table(f"Exploding: relu 1-32x8-1, mse, full batch, {config.epochs} epochs", rows)
    plots.loss_curves({k: r.history["loss"] for k, r in runs.items()}, path=out / "exploding_loss.png",
                      title=f"Deep relu net at lr {config.lr:g}: clipping keeps it finite")
    plots.gradient_norms({k: r.history["grad_norm"] for k, r in runs.items()}, path=out / "exploding_grad_norm.png",
                         title="Global gradient norm (before clipping)")

    # --- vanishing ---
    deep = vanishing(config, dtype, k_vanish)
    rows = []
    for name, v in deep.items():
        n0, n1 = v["norms"][0], v["norms"][-1]
        tag = name.split(" ")[0]
        numbers[f"vanish_{tag}_init_layer_norms"] = n0
        numbers[f"vanish_{tag}_init_first_over_last"] = float(n0[0] / n0[-1])
        numbers[f"vanish_{tag}_end_first_over_last"] = float(n1[0] / n1[-1])
        numbers[f"vanish_{tag}_final_loss"] = float(v["loss"][-1])
        numbers[f"vanish_{tag}_test_accuracy"] = v["test_accuracy"]
        r = v["result"]
        dead, sat = r.history["dead_fraction"], r.history["saturated_fraction"]
        numbers[f"vanish_{tag}_dead_fraction_end"] = dead[-1]
        numbers[f"vanish_{tag}_saturated_fraction_end"] = sat[-1]
        numbers[f"vanish_{tag}_diagnosis"] = fgd.diagnose(r).findings
        print(f"{name}: dead fraction per hidden layer at the end {np.round(dead[-1].astype(float), 3).tolist()}; "
              f"saturated {np.round(sat[-1].astype(float), 3).tolist()}")
        print(f"{name}: {fgd.diagnose(r)}")
        rows.append({"net": name, "||dW1|| init": n0[0], f"||dW{config.depth}|| init": n0[-1],
                     "ratio init": n0[0] / n0[-1], "ratio end": n1[0] / n1[-1],
                     "final loss": float(v["loss"][-1]), "test acc": v["test_accuracy"]})
    records.print_table(f"Vanishing: {config.depth}-layer digits net, sgd lr {config.deep_lr:g}, "
                        f"{config.deep_epochs} epochs of batch {config.batch_size}", rows)

    fig = plots.gradient_norms({name: v["norms"][0] for name, v in deep.items()}, xlabel="layer",
                               title=f"||dW[l]|| at init, {config.depth}-layer digits net")
    ax = fig.axes[0]
    ax.set_xticks(range(config.depth), [str(l + 1) for l in range(config.depth)])
    ax.set_xlabel("layer l (1 = next to the input)")
    plots.save(fig, out / "vanishing_init.png")
    lows, highs = [], []
    figs = {}
    for name, v in deep.items():
        series = {f"layer {l + 1}": v["norms"][:, l] for l in range(config.depth)}
        figs[name] = fig = plots.gradient_norms(series, title=f"{name}: ||dW[l]|| along training "
                                                f"(test acc {v['test_accuracy']:.1%})")
        for line in fig.axes[0].lines:
            line.set_xdata(v["epochs"])
        fig.axes[0].relim()
        fig.axes[0].autoscale_view()
        lo, hi = fig.axes[0].get_ylim()
        lows.append(lo)
        highs.append(hi)
    for name, fig in figs.items():  # one y range, so the two nets compare at a glance
        fig.axes[0].set_ylim(min(lows), max(highs))
        fig.axes[0].legend(fontsize="x-small", ncol=2)
        plots.save(fig, out / f"vanishing_{name.split(' ')[0]}.png")
    first = next(iter(deep.values()))["result"]
    for entry, what in (("saturated_fraction", "saturated (|g'(z)| < 0.01) unit-example pairs"),
                        ("dead_fraction", "dead units (slope 0 on every example)")):
        series = {name: v["result"].history[entry] for name, v in deep.items()}
        if all(np.isnan(h).all() for h in series.values()):
            continue
        plots.per_layer({k: np.nan_to_num(h, nan=0.0) for k, h in series.items()},
                        first.history_columns[entry], path=out / f"vanishing_{entry}.png",
                        title=f"Share of {what} per hidden layer (fit history '{entry}'; 0 where it does not apply)",
                        ylabel="fraction")
    plots.loss_curves({name: v["loss"] for name, v in deep.items()}, path=out / "vanishing_loss.png",
                      title=f"{config.depth}-layer digits net: sigmoid stalls, relu + He trains",
                      ylabel="mean mini-batch loss")

    numbers["seconds"] = time.perf_counter() - t0
    history = {k.replace(" ", "_").replace(",", ""): r.history["loss"] for k, r in runs.items()}
    history.update({f"deep_{k.split(' ')[0]}": v["loss"] for k, v in deep.items()})
    return records.finish(out, numbers, history)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
