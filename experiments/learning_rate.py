"""Ten learning rates in one fgd.sweep call: too small is slow, a good one converges, too large oscillates or diverges.

    python -m fgd run learning_rate            # 1-16-1 tanh net fits sin(3x), 2,000 epochs
    python -m fgd run learning_rate --full     # 40 rates, 20,000 epochs

SEEDS.md section 6. A 1-16-1 net (tanh hidden, linear output, mse, xavier
start, the same start for every rate) fits y = sin(3x) on 64 points of
[-1, 1] by full-batch gradient descent. The rates 10^-3, 10^-2.5, ..., 10^1.5
(0.01, the seed's common first value, among them) all train in ONE vmapped
`fgd.sweep` call.

Each rate is classified by this rule, in this order:
- "diverges": the loss becomes non-finite, or ends above where it started;
- "oscillates": over the second half of the epochs the loss rises from one
  epoch to the next more than 10% of the time;
- "slow": the final loss is more than 10x the best final loss of the sweep;
- "converges": otherwise.
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

RISE_FRACTION = 0.1   # "oscillates": rises on more than this share of late epochs
SLOW_FACTOR = 10.0    # "slow": final loss above this multiple of the best
COLOURS = {"slow": "tab:blue", "converges": "tab:green", "oscillates": "tab:orange",
           "diverges": "tab:red"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Full-batch gradient descent at many learning rates, in one sweep."""

    lr: float = 0.01                   # the seed's first value; always in the grid
    epochs: int = 2_000
    batch_size: Optional[int] = None   # full batch
    seed: int = 0
    lr_min_exp: float = -3.0           # rates 10^lr_min_exp ... 10^lr_max_exp
    lr_max_exp: float = 1.5            # the largest rate is 10^lr_max_exp
    n_rates: int = 10                  # rates, log-spaced
    out: str = "runs"
    full: bool = False


def classify(losses: np.ndarray, best_final: float) -> str:
    """The rule of the module docstring for one loss history."""
    finite = losses[np.isfinite(losses)]
    if finite.size < losses.size or finite[-1] > finite[0]:
        return "diverges"
    late = np.diff(losses[losses.size // 2:])
    if np.mean(late > 0) > RISE_FRACTION:
        return "oscillates"
    if losses[-1] > SLOW_FACTOR * best_final:
        return "slow"
    return "converges"


def rate_grid(config: Config, n: int) -> np.ndarray:
    rates = np.logspace(config.lr_min_exp, config.lr_max_exp, n)
    if not np.any(np.isclose(rates, config.lr)):
        rates = np.sort(np.append(rates, config.lr))
    return rates


def main(config: Config) -> dict:
    n, epochs = (40, 20_000) if config.full else (config.n_rates, config.epochs)
    directory = records.experiment_dir(config.out, "learning_rate")
    x = jnp.linspace(-1.0, 1.0, 64)[None, :]           # (1, 64)
    X, Y = x, jnp.sin(3.0 * x)                           # (1, 64), (1, 64)
    net = fgd.MLP((1, 16, 1), hidden="tanh", output="identity")
    loss = fgd.make_loss(net, "mse")
    rates = rate_grid(config, n)

    key = jax.random.key(config.seed)
    runs = fgd.sweep(loss, fgd.sgd, X, Y, init=lambda k: net.init(k, "xavier"),
                     keys=key[None], lrs=rates, epochs=epochs)
    histories = np.asarray(runs.history["loss"], dtype=float)[0]   # (rates, epochs), NaN after a stop
    nonfinite = np.asarray(runs.nonfinite_epoch)[0]                # (rates,), -1 if none

    finals = np.array([h[np.isfinite(h)][-1] if np.isfinite(h).any() else np.inf for h in histories])
    ok = np.array([np.isfinite(h).all() for h in histories])
    best = float(finals[ok].min())
    classes = [classify(h, best) for h in histories]
    rows, curves, numbers = [], {}, {"rates": rates, "epochs": epochs, "best_final_loss": best}
    for lr, h, cls, final, bad in zip(rates, histories, classes, finals, nonfinite):
        late = np.diff(h[h.size // 2:])
        rises = float(np.mean(late > 0)) if np.isfinite(late).all() else float("nan")
        rows.append({"lr": float(lr), "class": cls, "initial loss": float(h[0]),
                     "final loss": float(final) if np.isfinite(h).all() else "non-finite",
                     "late rises %": 100 * rises,
                     "non-finite at epoch": int(bad) if bad >= 0 else "-"})
        curves[f"lr {lr:.3g} ({cls})"] = h
        numbers[f"{lr:.6g}"] = {"class": cls, "final_loss": float(final) if np.isfinite(h).all() else None,
                                "late_rise_fraction": rises,
                                "nonfinite_epoch": int(bad) if bad >= 0 else None}
    numbers["classes"] = classes
    records.print_table(f"learning rates, one fgd.sweep call: 1-16-1 tanh net on sin(3x), mse, "
                        f"full-batch GD, {epochs} epochs", rows)
    print(f"rule: diverges = non-finite or ends above its start; oscillates = rises on > "
          f"{RISE_FRACTION:.0%} of second-half epochs; slow = final > {SLOW_FACTOR:g}x best; "
          "else converges")

    fig = plots.loss_curves(curves, ylabel="mse loss",
                            title="Loss per epoch for each learning rate (full-batch GD)")
    fig.axes[0].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    plots.save(fig, directory / "loss.png")
    _final_vs_rate(rates, histories, classes, directory / "final_loss.png")
    return records.finish(directory, numbers, curves)


def _final_vs_rate(rates, histories, classes, path) -> None:
    """Final loss against the rate, coloured by class; diverged runs drawn as
    triangles on a line above the starting loss."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    start = float(histories[0, 0])
    top = 3 * start
    for cls, colour in COLOURS.items():
        idx = [i for i, c in enumerate(classes) if c == cls]
        if not idx:
            continue
        if cls == "diverges":
            ax.plot(rates[idx], np.full(len(idx), top), "^", ms=9, color=colour,
                    label="diverges (loss -> inf, drawn at the top)")
        else:
            ax.plot(rates[idx], histories[idx, -1], "o", ms=8, color=colour, label=cls)
    ax.axhline(start, color="k", ls=":", lw=1, label="loss at the start")
    ax.set(xscale="log", yscale="log", xlabel="learning rate (log scale)",
           ylabel="final mse (log scale)",
           title="Final loss by learning rate (full-batch GD)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    plots.save(fig, path)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
