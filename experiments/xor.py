"""XOR with 2-2-1 and 2-4-1 sigmoid BP nets over many seeds: the 2-4-1 nearly always learns it, the 2-2-1 often sticks at loss ln(2)/2.

    python -m fgd run xor                # 20 random starts per net, 5,000 epochs
    python -m fgd run xor --full         # 1,000 starts per net, 20,000 epochs

Both nets have sigmoid hidden and output units, are trained by full-batch
gradient descent (`fgd.sgd`, lr 1.0) and start from W ~ N(0, 1), b = 0
(scheme "normal"). The cost is binary cross-entropy ("bce"), not SSE: with a
sigmoid output, bce gives the output delta dZ = A - Y, so an output that is
confidently wrong still gets a full-sized gradient, where SSE multiplies it by
sigma'(z) and stalls it (`--cost sse` runs the classic SSE version; it sticks
just as often).

A start "solves" XOR when all four outputs lie on the right side of 0.5. All
random starts of one net train in one vmapped `fgd.sweep` call. The stuck
2-2-1 runs end at the same loss, ln(2)/2 = 0.347 with bce: two inputs are
classified with certainty and the other two get 0.5, with a gradient norm
near zero -- a local-minimum-like plateau that more epochs do not leave.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import jax
import numpy as np

import fgd
import fgd.cli
from fgd import plots, records


@dataclasses.dataclass(frozen=True)
class Config:
    """A 2-2-1 and a 2-4-1 sigmoid net learn XOR, from many random starts."""

    lr: float = 1.0
    epochs: int = 5_000
    batch_size: Optional[int] = None   # full batch: the four points
    seed: int = 0
    seeds: int = 20                    # random starts per net
    cost: str = "bce"
    out: str = "runs"
    full: bool = False


def train_many(net: fgd.MLP, loss, X, Y, config: Config, starts: int, epochs: int):
    """All `starts` random inits of `net` in one sweep; (params per start, losses (starts, epochs))."""
    keys = jax.random.split(jax.random.key(config.seed), starts)
    runs = fgd.sweep(loss, fgd.sgd, X, Y, init=lambda k: net.init(k, "normal"),
                     keys=keys, lrs=[config.lr], epochs=epochs)
    params = [jax.tree.map(lambda a, i=i: a[i, 0], runs.params) for i in range(starts)]
    return params, np.asarray(runs.history["loss"])[:, 0, :]


def main(config: Config) -> dict:
    starts, epochs = (1000, 20_000) if config.full else (config.seeds, config.epochs)
    directory = records.experiment_dir(config.out, "xor")
    X, Y = fgd.data.xor()
    y = np.asarray(Y[0])
    plateau = math.log(2) / 2 if config.cost == "bce" else 0.25  # two inputs at 0.5
    numbers: dict = {"cost": config.cost, "starts": starts, "epochs": epochs,
                     "stuck_plateau_loss": plateau}
    rows, curves, boundaries = [], {}, []
    for hidden in (2, 4):
        name = f"2-{hidden}-1"
        net = fgd.MLP((2, hidden, 1), hidden="sigmoid", output="sigmoid")
        loss = fgd.make_loss(net, config.cost)
        params, losses = train_many(net, loss, X, Y, config, starts, epochs)
        outputs = np.stack([np.asarray(net.apply(p, X))[0] for p in params])  # (starts, 4)
        solved = np.all((outputs > 0.5) == (y > 0.5), axis=1)
        grad_norms = np.array([float(fgd.global_norm(jax.grad(loss)(p, X, Y))) for p in params])
        final = losses[:, -1]
        stuck = ~solved
        numbers[name] = {
            "solved": int(solved.sum()),
            "solved_fraction": float(solved.mean()),
            "final_loss_solved_median": float(np.median(final[solved])) if solved.any() else None,
            "final_loss_stuck": np.unique(np.round(final[stuck], 4)),
            "grad_norm_stuck_max": float(grad_norms[stuck].max()) if stuck.any() else None,
            "outputs_first_solved": outputs[np.argmax(solved)] if solved.any() else None,
            "outputs_first_stuck": outputs[np.argmax(stuck)] if stuck.any() else None,
        }
        rows.append({"net": name, "solved": f"{solved.sum()}/{starts}",
                     "median loss (solved)": numbers[name]["final_loss_solved_median"] or float("nan"),
                     "loss (stuck)": ", ".join(f"{v:.4f}" for v in numbers[name]["final_loss_stuck"]) or "-",
                     "max |grad| (stuck)": numbers[name]["grad_norm_stuck_max"] or float("nan")})
        for label, mask in (("solved", solved), ("stuck", stuck)):
            if mask.any():
                i = int(np.argmax(mask))
                curves[f"{name} start {i} ({label})"] = losses[i]
                boundaries.append((name, label, i, net, params[i], outputs[i]))

    records.print_table(f"XOR, {config.cost}, full-batch GD lr {config.lr}, {epochs} epochs, "
                        f"{starts} random starts per net", rows)
    records.print_table("final outputs per input (x1, x2) -> target", [
        {"net": f"{n} start {i} ({lab})",
         **{f"({int(a)},{int(b)})->{int(t)}": float(o[k])
            for k, (a, b, t) in enumerate(zip(np.asarray(X[0]), np.asarray(X[1]), y))}}
        for n, lab, i, _, _, o in boundaries])
    print(f"stuck runs sit at loss {plateau:.4f} ({'ln(2)/2' if config.cost == 'bce' else '1/4'}): "
          "two inputs right with certainty, two at 0.5")

    fig = plots.loss_curves(curves, log=True, ylabel=f"{config.cost} loss",
                            title=f"XOR: loss per epoch (lr {config.lr})")
    fig.axes[0].axhline(plateau, color="k", ls=":", lw=1, label=f"plateau {plateau:.3f}")
    fig.axes[0].legend(fontsize="small")
    plots.save(fig, directory / "loss.png")
    for name, label, i, net, p, _ in boundaries:
        plots.decision_boundary(lambda G, net=net, p=p: net.apply(p, G), X, Y, margin=0.5,
                                path=directory / f"boundary_{name}_{label}.png",
                                title=f"XOR, {name} net, start {i}: {label}")
    return records.finish(directory, numbers, curves)


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
