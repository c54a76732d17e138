"""The MATLAB BP example: a 3-8-2 net forecasts road traffic; SSE never reaches 1e-3 in 50,000 epochs.

    python -m fgd run traffic                  # uniform [0, 1] start from --seed
    python -m fgd run traffic --matlab-init    # MATLAB's own rand start (MT19937, seed 5489)
    python -m fgd run traffic --full           # also 256 random starts in one fgd.sweep call

With its exact settings: inputs (population, vehicles,
road area) and targets (passengers, freight) scaled to [-1, 1] by premnmx; 8
logsig hidden units, 2 purelin outputs; weights and biases uniform on [0, 1];
full-batch gradient descent, learning rate 0.05, on the sum of squared errors;
stop when SSE = sum(E^2) < 1e-3 or after 50,000 epochs. fgd's "sse" cost is
1/2 sum(E^2), whose gradient is exactly the MATLAB script's update (D2 = E, no
1/m), so `fgd.sgd(0.05)` on it is that update and the goal passed to fit is
1e-3 / 2. Runs in float64 (x64 is on inside `main`), as MATLAB does.

`--matlab-init` draws W1 = rand(8,3), B1 = rand(8,1), W2 = rand(2,8),
B2 = rand(2,1) in that order from MATLAB's default generator: MT19937 seeded
with 5489, 53-bit doubles, filled column by column. numpy's legacy
RandomState(5489).random_sample gives the same stream (its first value is
MATLAB's famous first rand, 0.8147236863931789), reshaped in Fortran order.

The two forecast years' inputs lie outside the training range (they scale to
about 1.6 to 1.8): the net extrapolates, and tramnmx warns so.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import jax
import numpy as np

import fgd
import fgd.cli
from fgd import plots, records

MATLAB_FIRST_RAND = 0.8147236863931789  # rand() right after MATLAB starts


@dataclasses.dataclass(frozen=True)
class Config:
    """The MATLAB BP example."""

    lr: float = 0.05
    epochs: int = 50_000
    batch_size: Optional[int] = None   # None: full batch, as the MATLAB script
    seed: int = 0
    goal: float = 1e-3                 # on SSE = sum(E^2), MATLAB's units
    hidden: int = 8
    matlab_init: bool = False          # start from MATLAB rand weights (MT19937, seed 5489)
    starts: int = 256                  # random starts of the --full sweep
    out: str = "runs"
    full: bool = False


def matlab_rand_params(hidden: int = 8) -> tuple[list, float]:
    """W1 = rand(h,3), B1 = rand(h,1), W2 = rand(2,h), B2 = rand(2,1) as MATLAB
    draws them at startup; returns (float64 numpy params, the first value drawn)."""
    shapes = [(hidden, 3), (hidden, 1), (2, hidden), (2, 1)]
    stream = np.random.RandomState(5489).random_sample(sum(r * c for r, c in shapes))
    arrays, at = [], 0
    for r, c in shapes:
        arrays.append(stream[at:at + r * c].reshape((r, c), order="F"))  # column by column
        at += r * c
    W1, B1, W2, B2 = arrays
    return [{"W": W1, "b": B1}, {"W": W2, "b": B2}], float(stream[0])


def main(config: Config) -> dict:
    with fgd.enable_x64(True):  # MATLAB computes in double
        return _main(config)


def _main(config: Config) -> dict:
    directory = records.experiment_dir(config.out, "traffic")
    data = fgd.data.traffic(dtype=np.float64)
    Xs, x_scaler = fgd.data.premnmx(data.X)    # (3, 20) in [-1, 1]
    Ys, y_scaler = fgd.data.premnmx(data.Y)    # (2, 20) in [-1, 1]

    net = fgd.MLP((3, config.hidden, 2), hidden="logsig", output="purelin")
    loss = fgd.make_loss(net, "sse")           # 1/2 sum(E^2): SSE / 2
    numbers: dict = {}
    if config.matlab_init:
        params, first = matlab_rand_params(config.hidden)
        numbers["init"] = "MATLAB rand (MT19937, seed 5489)"
        numbers["first_rand"] = first
        print(f"MATLAB's first rand: {first!r} (MATLAB prints 0.8147236863931789)")
    else:
        params = net.init(jax.random.key(config.seed), "uniform", dtype=np.float64)
        numbers["init"] = f"uniform [0, 1], key {config.seed}"

    result = fgd.fit(loss, params, fgd.sgd(config.lr), Xs, Ys, epochs=config.epochs,
                     batch_size=config.batch_size, key=jax.random.key(config.seed),
                     goal=config.goal / 2)
    sse = 2 * np.asarray(result.history["loss"])          # SSE at each epoch's start
    final_sse = 2 * float(loss(result.params, Xs, Ys))    # after the last update
    # min_sse is the lowest SSE over every params of the run: those each epoch
    # started from (the history) and the final ones, after the last update

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Xf = fgd.data.tramnmx(data.X_forecast, x_scaler)  # (3, 2), outside [-1, 1]
    for w in caught:  # recorded for results.json, passed on to the caller (stderr)
        warnings.warn(w.message, w.category, stacklevel=2)
    forecast = np.asarray(fgd.data.postmnmx(net.apply(result.params, Xf), y_scaler))
    fitted = np.asarray(fgd.data.postmnmx(net.apply(result.params, Xs), y_scaler))

    numbers.update(
        epochs=result.epochs, stop_reason=result.stop_reason,
        final_sse=final_sse, min_sse=min(float(sse.min()), final_sse), goal_sse=config.goal,
        reached_goal=bool(final_sse < config.goal or result.stop_reason == "goal"),
        forecast_inputs_scaled=np.asarray(Xf),
        forecast_passengers=forecast[0], forecast_freight=forecast[1],
        forecast_warning=str(caught[0].message) if caught else "",
        fit_max_abs_error=np.abs(fitted - np.asarray(data.Y)).max(axis=1),
    )
    records.print_table("traffic: 3-8-2 BP net, full-batch GD, lr 0.05, SSE goal 1e-3", [
        {"init": numbers["init"], "epochs": result.epochs, "stop": result.stop_reason,
         "final SSE": final_sse, "goal": config.goal},
    ])
    lo, hi = float(np.min(Xf)), float(np.max(Xf))
    records.print_table(f"forecast, original units (inputs scale to {lo:.2f}..{hi:.2f}, outside the "
                        "training range [-1, 1]: the net extrapolates; see the warning)", [
        {"sample": int(i), "inputs scaled": " ".join(f"{v:.2f}" for v in np.asarray(Xf)[:, k]),
         "passengers (10k)": float(forecast[0, k]), "freight (10k t)": float(forecast[1, k])}
        for k, i in enumerate(np.asarray(data.index_forecast))
    ])

    if config.full:
        numbers.update(_many_starts(config, net, loss, Xs, Ys))

    t, tf = np.asarray(data.index), np.asarray(data.index_forecast)
    plots.fitted_vs_actual(t, np.asarray(data.Y), fitted, fgd.data.TRAFFIC_OUTPUT_NAMES,
                           forecast=(tf, forecast), path=directory / "fit.png",
                           title=f"3-8-2 BP net after {result.epochs} epochs (SSE {final_sse:.3g})",
                           xlabel="sample (yearly; 20, 21 = forecast, extrapolated)")
    fig = plots.loss_curves({f"SSE ({numbers['init']})": sse}, log=True, ylabel="SSE, scaled units",
                            title="traffic: SSE per epoch, full-batch GD lr 0.05")
    ax = fig.axes[0]
    ax.axhline(config.goal, color="k", ls="--", lw=1, label=f"goal SSE = {config.goal:g}")
    ax.set_ylim(config.goal / 2, max(sse.max(), config.goal) * 2)
    ax.legend(fontsize="small")
    plots.save(fig, directory / "sse.png")
    return records.finish(directory, numbers, {"sse": sse})


def _many_starts(config: Config, net, loss, Xs, Ys) -> dict:
    """Many uniform [0, 1] starts in one vmapped sweep: does any reach the goal?"""
    keys = jax.random.split(jax.random.key(config.seed), config.starts)
    runs = fgd.sweep(loss, fgd.sgd, Xs, Ys, init=lambda k: net.init(k, "uniform", dtype=np.float64),
                     keys=keys, lrs=[config.lr], epochs=config.epochs, goal=config.goal / 2)
    final = 2 * np.asarray(runs.final_loss).ravel()   # history is NaN after a run stops
    reached = int(np.sum(final <= config.goal))
    records.print_table(f"{config.starts} random uniform starts, {config.epochs} epochs", [
        {"reached goal": reached, "median SSE": float(np.median(final)),
         "best SSE": float(final.min()), "worst SSE": float(final.max())}])
    return {"starts": config.starts, "starts_reached_goal": reached,
            "starts_median_sse": float(np.median(final)), "starts_best_sse": float(final.min())}


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
