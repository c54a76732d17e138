"""Ten learning rates in one fgd.sweep call: too small is slow, a good one converges, too large oscillates or diverges.

    python -m fgd run learning_rate            # 1-16-1 tanh net fits sin(3x), 2,000 epochs (~1 min)
    python -m fgd run learning_rate --full     # 40 rates, 20,000 epochs

Too large a rate overshoots or diverges, too small converges slowly. A
1-16-1 net (tanh hidden, linear output, mse, xavier
start, the same start for every rate) fits y = sin(3x) on 64 points of
[-1, 1] by full-batch gradient descent. The rates 10^-3, 10^-2.5, ..., 10^1.5
(0.01, the common first value, among them) all train in ONE vmapped
`fgd.sweep` call.

Each rate is classified by this rule, in this order:
- "diverges": the loss becomes non-finite, or ends above where it started;
- "oscillates": over the second half of the epochs the loss rises from one
  epoch to the next more than 10% of the time;
- "slow": the final loss is more than 10x the best final loss of the sweep;
- "converges": otherwise.

Curvature (the measured theory). On a quadratic loss a full-batch step
multiplies the error along the Hessian's top eigenvector by
(1 - eta lambda_max), so a run diverges exactly when eta > 2 / lambda_max.
The experiment checks this on the one case where the loss IS quadratic, a
linear least-squares fit of the same data (rates 0.9, 0.99, 1.01 and 1.1
times 2/lambda_max), and on the net it measures lambda_max at the shared
start (`fgd.hessian_eigs`) and along the run of each rate that does not blow
up at once (`history=("sharpness",)`, every SHARPNESS_EVERY epochs), and
prints eta * lambda_max at the end: near 2 means the run trained its way to
the edge of stability (Cohen et al., 2021).
"""
from __future__ import annotations

import dataclasses
import warnings
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
SHARPNESS_EVERY = 20  # epochs between lambda_max measurements along a run
QUADRATIC_SIDES = (0.9, 0.99, 1.01, 1.1)   # rates as multiples of 2 / lambda_max
COLOURS = {"slow": "tab:blue", "converges": "tab:green", "oscillates": "tab:orange",
           "diverges": "tab:red"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Full-batch gradient descent at many learning rates, in one sweep."""

    lr: float = 0.01                   # the common first value 0.01; always in the grid
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
    numbers.update(curvature_numbers(config, loss, net.init(key, "xavier"), X, Y, rates, classes,
                                     epochs, directory))
    records.print_table(f"learning rates, one fgd.sweep call: 1-16-1 tanh net on sin(3x), mse, "
                        f"full-batch GD, {epochs} epochs", rows)
    print(f"rule: diverges = non-finite or ends above its start; oscillates = rises on > "
          f"{RISE_FRACTION:.0%} of second-half epochs; slow = final > {SLOW_FACTOR:g}x best; "
          "else converges")

    fig = plots.loss_curves(curves, ylabel="mse loss",
                            title="Loss per epoch for each learning rate (full-batch GD)")
    _mark_exits(fig.axes[0], histories)
    fig.axes[0].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    plots.save(fig, directory / "loss.png")
    _final_vs_rate(rates, histories, classes, directory / "final_loss.png",
                   numbers["lambda_max_start"])
    return records.finish(directory, numbers, curves)


def quadratic_case(X, Y) -> dict:
    """Linear least squares on the same data: the mse is exactly quadratic in
    (w, b), lambda_max is known in closed form, and GD at eta = s * 2/lambda_max
    diverges exactly for s > 1."""
    net = fgd.MLP((1, 1), output="identity")
    loss = fgd.make_loss(net, "mse")
    Y = Y + 0.5      # a target off the zero start along every eigenvector (bias one included)
    params = net.init(jax.random.key(0), "zeros")
    lam = float(fgd.hessian_eigs(loss, params, X, Y)[0])
    A = np.vstack([np.asarray(X, float), np.ones((1, X.shape[1]))])          # (2, m)
    closed = float(np.linalg.eigvalsh(A @ A.T / X.shape[1])[-1])             # H = A A^T / m
    rows, out = [], {"quadratic_lambda_max": lam, "quadratic_lambda_max_closed_form": closed}
    for side in QUADRATIC_SIDES:
        eta = side * 2 / lam
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")    # fit warns when the loss turns non-finite: expected above 2/lambda
            r = fgd.fit(loss, params, fgd.sgd(eta), X, Y, epochs=3000, progress=False)
        h = np.asarray(r.history["loss"], float)
        diverged = r.stop_reason == "nonfinite" or h[-1] > h[0]
        rows.append({"eta / (2/lambda_max)": side, "eta": eta, "|1 - eta lambda_max|": abs(1 - eta * lam),
                     "final loss": float(h[-1]), "diverged": diverged})
        out[f"quadratic_diverged_at_{side:g}"] = bool(diverged)
    records.print_table(f"quadratic case (linear least squares): lambda_max = {lam:.6g} by Lanczos, "
                        f"{closed:.6g} closed form; 2/lambda_max = {2 / lam:.6g}", rows)
    out["quadratic_rule_holds"] = all(out[f"quadratic_diverged_at_{s:g}"] == (s > 1) for s in QUADRATIC_SIDES)
    print(f"diverging runs are exactly those with eta > 2/lambda_max: {out['quadratic_rule_holds']}")
    return out


def curvature_numbers(config, loss, params, X, Y, rates, classes, epochs, directory) -> dict:
    """lambda_max at the start and along each run of the net; the figure sharpness.png."""
    lam0 = float(fgd.hessian_eigs(loss, params, X, Y)[0])
    out = {"lambda_max_start": lam0, "two_over_lambda_max_start": 2 / lam0}
    out.update(quadratic_case(X, Y))
    above = rates > 2 / lam0
    diverged = np.array([c == "diverges" for c in classes])
    out["net_diverged_rates"] = rates[diverged].tolist()
    out["net_rates_above_2_over_lambda0"] = rates[above].tolist()
    # the rates where curvature matters: from a tenth of 2/lambda_max to the first diverging one
    chosen = [i for i in range(rates.size) if 0.05 / lam0 <= rates[i] <= 4 / lam0]
    rows, tracks = [], {}
    for i in chosen:
        r = fgd.fit(loss, params, fgd.sgd(float(rates[i])), X, Y, epochs=epochs, progress=False,
                    history=("loss", "sharpness"), diagnostics_every=SHARPNESS_EVERY)
        sharp = np.asarray(r.history["sharpness"], float)
        idx = np.flatnonzero(np.isfinite(sharp))
        tracks[float(rates[i])] = (idx, sharp[idx])
        end = float(sharp[idx[-1]]) if idx.size else float("nan")
        peak = float(sharp[idx].max()) if idx.size else float("nan")
        rows.append({"lr": float(rates[i]), "class": classes[i], "eta*lam0": rates[i] * lam0,
                     "lam_max end": end, "eta*lam end": rates[i] * end, "eta*lam max": rates[i] * peak})
        out[f"sharpness_{float(rates[i]):.6g}"] = {"end": end, "max": peak, "eta_lambda_end": rates[i] * end}
    records.print_table(f"the net: lambda_max = {lam0:.4g} at the start (2/lambda_max = {2 / lam0:.4g}); "
                        f"along each run every {SHARPNESS_EVERY} epochs", rows)
    agree = bool(np.array_equal(above, diverged))
    out["net_diverged_exactly_above_2_over_lambda0"] = agree
    edge = [row["lr"] for row in rows if abs(row["eta*lam end"] - 2) < 0.2]
    out["edge_of_stability_rates"] = edge
    print(f"net: diverged rates {np.round(rates[diverged], 4).tolist()}; rates above 2/lambda_max(start) "
          f"{np.round(rates[above], 4).tolist()}; the same set: {agree}")
    print(f"net: runs ending with eta * lambda_max within 0.2 of 2 (edge of stability): {edge or 'none'}")
    _sharpness_figure(tracks, lam0, directory / "sharpness.png")
    return out


def _sharpness_figure(tracks, lam0, path) -> None:
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for j, (lr, (idx, sharp)) in enumerate(tracks.items()):
        colour = f"C{j % 10}"
        ax.plot(idx, sharp, color=colour, lw=1.4, label=f"lr {lr:.3g}")
        ax.axhline(2 / lr, color=colour, ls="--", lw=0.8)
    ax.axhline(lam0, color="k", ls=":", lw=1, label=f"lambda_max at start {lam0:.3g}")
    finite = np.concatenate([s for _, s in tracks.values()] + [[lam0]])
    ax.set_ylim(max(finite.min() / 2, 1e-6), finite.max() * 3)
    ax.set(yscale="log", xlabel="epoch", ylabel="lambda_max of the Hessian (log scale)",
           title="Sharpness along each run; dashed: 2/lr of the same colour")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    plots.save(fig, path)


def _mark_exits(ax, histories) -> None:
    """Mark where a diverging curve leaves the axes (x at the top edge)."""
    top = ax.get_ylim()[1]
    for line, h in zip(ax.get_lines(), histories):
        out = np.flatnonzero(~np.isfinite(h) | (h > top))
        if out.size:
            ax.plot([out[0]], [top], "x", ms=9, mew=2, color=line.get_color(), clip_on=False)
    ax.plot([], [], "x", color="k", label="x: a run leaves the axes (diverges)")


def _final_vs_rate(rates, histories, classes, path, lam0) -> None:
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
    ax.axvline(2 / lam0, color="tab:purple", ls="--", lw=1, label=f"2/lambda_max at start = {2 / lam0:.3g}")
    ax.set(xscale="log", yscale="log", xlabel="learning rate (log scale)",
           ylabel="final mse (log scale)",
           title="Final loss by learning rate (full-batch GD)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    plots.save(fig, path)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
