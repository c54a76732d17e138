"""Initialisation schemes compared: zeros and equal weights keep hidden units identical, x10 weights saturate tanh, small/xavier/he train.

    python -m fgd run initialization           # 2-10-10-1 tanh net, 400 flower points
    python -m fgd run initialization --full    # 2-50-50-1 net, 4,000 points, 3x the epochs

One tanh/sigmoid net (two hidden layers, bce) on the flower, trained by
full-batch gradient descent (`fgd.sgd`, lr 0.5) from each start:

- "zeros": W = 0, b = 0. Every hidden unit computes the same function; with
  tanh it is 0 and its gradient is 0, so nothing but the output bias moves.
- "equal": every W entry 0.5, b = 0 (built by hand). The units do move, but
  they get identical gradients and stay identical.
  Measured: the largest difference between two hidden units' weight rows,
  over every epoch (`spread`), in each hidden layer.
- "small": W ~ N(0, 1) x 0.01 (the classic exercise's default).
- "large": W ~ N(0, 1) x 10 (scheme "normal", scale 10).
- "xavier", "he".

Measured at the start: the fraction of hidden units (over units x examples)
whose tanh is saturated, tanh'(z) = 1 - tanh(z)^2 < 0.01 (|z| > 3.0), per
hidden layer; the first layer's gradient norm ||dW[1]||; the loss. Then the
loss curves, the epochs to reach loss 0.3 and the accuracy.

What the defaults show (400 points, 3,000 epochs): zeros and equal end at
50% and 67% accuracy with a unit spread of exactly 0 at every epoch (equal's
hidden weights move by about 0.5 yet stay identical). Large saturates about
86% / 93% of the two hidden layers' units and needs about 300 epochs to
reach loss 0.3 against 30-60 for he/xavier. Its first-layer gradient norm is
NOT small, though (about 2, vs 0.15 for xavier): the gradient flows through
the few unsaturated units, multiplied by 10x weights and a loss of about 12.
The vanishing gradient at the start is the "small" one here, 2e-4: 0.01
weights shrink the backpropagated delta layer by layer (it still trains, after
a plateau of about 400 epochs).

Along training (fit's on-device history: "layer_grad_norm",
"saturated_fraction", "unit_spread" per layer, every epochs/100 epochs;
figures saturated_fraction.png and layer_grad_norm.png): the history's unit
spread of zeros and equal is exactly 0 at every measured epoch, as the
hand-made trace says; saturation GROWS during training for every random
start (first hidden layer at the end: small 45%, xavier 51%, he 60%, large
87%), as the weights grow to fit the flower, and large stays near 87-96%
throughout.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

import fgd
import fgd.cli
from fgd import plots, records

SATURATED = 0.01   # tanh'(z) below this counts as saturated (|z| > 3.0)
TARGET_LOSS = 0.3  # "epochs to reach": the first epoch with loss <= this


@dataclasses.dataclass(frozen=True)
class Config:
    """One net trained from each initialisation scheme."""

    lr: float = 0.5
    epochs: int = 3_000
    batch_size: Optional[int] = None   # full batch
    seed: int = 0
    m: int = 400
    hidden: tuple[int, ...] = (10, 10)
    large_scale: float = 10.0          # std of the 'large' scheme's N(0, s^2) weights
    out: str = "runs"
    full: bool = False


#: fit's on-device per-layer history entries this experiment plots
PER_LAYER = ("layer_grad_norm", "saturated_fraction", "unit_spread")


def initial_params(net: fgd.MLP, scheme: str, key, large_scale: float):
    if scheme == "equal":
        dtype = jnp.zeros(()).dtype
        return [{"W": np.full((n, k), 0.5, dtype), "b": np.zeros((n, 1), dtype)}
                for k, n in zip(net.sizes[:-1], net.sizes[1:])]
    if scheme == "large":
        return net.init(key, "normal", scale=large_scale)
    return net.init(key, scheme)


def unit_spread(params) -> jax.Array:
    """(hidden layers,): max over units i of max |W[l][i, :] - W[l][0, :]|, and of b."""
    return jnp.stack([jnp.maximum(jnp.abs(layer["W"] - layer["W"][:1]).max(),
                                  jnp.abs(layer["b"] - layer["b"][:1]).max())
                      for layer in params[:-1]])


def symmetry_trace(loss, opt, params, X, Y, epochs: int):
    """Train with fgd.make_step inside a scan, recording unit_spread each epoch;
    returns (spread per epoch (epochs, hidden layers), final params)."""
    step = fgd.make_step(loss, opt)

    @jax.jit
    def run(params, state):
        def body(carry, _):
            params, state = carry
            params, state, _ = step(params, state, X, Y)
            return (params, state), unit_spread(params)
        (params, _), spread = jax.lax.scan(body, (params, state), None, length=epochs)
        return spread, params

    return run(params, opt.init(params))


def at_start(net: fgd.MLP, loss, params, X, Y) -> dict:
    cache = net.forward(params, X)
    saturated = [float(jnp.mean(1 - jnp.tanh(Z) ** 2 < SATURATED)) for Z in cache.Z[:-1]]
    grads = jax.grad(loss)(params, X, Y)
    return {"loss0": float(loss(params, X, Y)), "saturated": saturated,
            "grad_W1": float(jnp.linalg.norm(grads[0]["W"])),
            "Z1": np.asarray(cache.Z[0]).ravel()}


def main(config: Config) -> dict:
    m, epochs, hidden = ((4000, 3 * config.epochs, (50, 50)) if config.full
                         else (config.m, config.epochs, config.hidden))
    directory = records.experiment_dir(config.out, "initialization")
    X, Y = fgd.data.flower(jax.random.key(1), m)
    net = fgd.MLP((2, *hidden, 1), hidden="tanh", output="sigmoid")
    loss = fgd.make_loss(net, "bce")
    opt = fgd.sgd(config.lr)
    key = jax.random.key(config.seed)

    numbers: dict = {"net": net.sizes, "m": m, "epochs": epochs, "lr": config.lr}
    rows, curves, z_samples, layers = [], {}, {}, {}
    for scheme in ("zeros", "equal", "small", "large", "xavier", "he"):
        params = initial_params(net, scheme, key, config.large_scale)
        start = at_start(net, loss, params, X, Y)
        result = fgd.fit(loss, params, opt, X, Y, epochs=epochs, batch_size=config.batch_size, key=key,
                         history=("loss",) + PER_LAYER, diagnostics_every=max(epochs // 100, 1))
        layers[scheme] = result
        history = np.asarray(result.history["loss"])
        reached = np.flatnonzero(history <= TARGET_LOSS)
        acc = float(np.mean((np.asarray(net.apply(result.params, X)) > 0.5) == (np.asarray(Y) > 0.5)))
        row = {"scheme": scheme, "loss at init": start["loss0"],
               "saturated % (per layer)": " ".join(f"{100 * s:.0f}" for s in start["saturated"]),
               "||dW1|| at init": start["grad_W1"],
               f"epochs to loss {TARGET_LOSS}": int(reached[0]) if reached.size else "never",
               "final loss": float(history[-1]), "accuracy %": 100 * acc}
        entry = {"loss0": start["loss0"], "saturated_fraction": start["saturated"],
                 "grad_norm_W1_at_init": start["grad_W1"], "final_loss": float(history[-1]),
                 "accuracy": acc, "epochs_to_target": int(reached[0]) if reached.size else None}
        if scheme in ("zeros", "equal"):
            spread, final = symmetry_trace(loss, opt, params, X, Y, epochs)
            moved = max(float(jnp.abs(a["W"] - np.asarray(b["W"])).max())
                        for a, b in zip(final[:-1], params[:-1]))
            entry.update(spread_max_over_epochs=np.asarray(spread).max(axis=0),
                         hidden_weights_moved=moved)
            row["unit spread (max over epochs)"] = float(np.asarray(spread).max())
            row["hidden W moved"] = moved
        h = result.history
        measured = ~np.isnan(h["saturated_fraction"][:, 0])
        entry.update(history_saturated_end=h["saturated_fraction"][measured][-1],
                     history_grad_norm_start=h["layer_grad_norm"][measured][0],
                     history_unit_spread_max=np.nanmax(h["unit_spread"], axis=0))
        row["saturated % end (history)"] = " ".join(f"{100 * v:.0f}" for v in entry["history_saturated_end"])
        row["unit spread max (history)"] = float(np.max(entry["history_unit_spread_max"]))
        numbers[scheme] = entry
        rows.append(row)
        curves[f"large (N(0,1) x {config.large_scale:g})" if scheme == "large" else scheme] = history
        z_samples[scheme] = start["Z1"]

    records.print_table(f"initialisation: {net.sizes} tanh/sigmoid net, bce, GD lr {config.lr}, "
                        f"{epochs} epochs, {m} flower points (saturated: tanh'(z) < {SATURATED})", rows)
    plots.loss_curves(curves, path=directory / "loss.png", ylabel="bce loss",
                      title=f"Loss per epoch by initialisation ({'-'.join(map(str, net.sizes))} tanh net)")
    _z_histogram(z_samples, directory / "preactivations.png")
    columns = next(iter(layers.values())).history_columns
    for name, what, log, ylim in (("saturated_fraction", "saturated (tanh'(z) < 0.01) unit-example pairs",
                                   False, (-0.02, 1.02)),
                                  ("layer_grad_norm", "gradient norm ||g[l]||", True, None)):
        plots.per_layer({s: r.history[name] for s, r in layers.items()}, columns[name],
                        path=directory / f"{name}.png", log=log, ylim=ylim,
                        title=f"{what}, per layer over epochs (fit history '{name}')")
    return records.finish(directory, numbers, curves)


def _z_histogram(z_samples: dict, path) -> None:
    """Histogram of the first hidden layer's z = W x + b at the start, per random scheme."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    bins = np.linspace(-60, 60, 121)
    for scheme in ("small", "xavier", "he", "large"):
        z = np.clip(z_samples[scheme], bins[0], bins[-1])
        ax.hist(z, bins=bins, histtype="step", lw=1.5, density=True, label=scheme)
    for edge in (-3, 3):
        ax.axvline(edge, color="k", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set(xlabel="first-layer pre-activation z at init (clipped to +-60)",
           ylabel="density (log scale)",
           title="Large weights push z past |z| = 3, where tanh'(z) < 0.01 (dotted)")
    ax.legend(fontsize="small")
    plots.save(fig, path)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
