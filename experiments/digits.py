"""An MLP on the real 8x8 handwritten digits: 97.6% accuracy on a held-out quarter (loss curves, misclassified digits).

    python -m fgd run digits                 # CPU, about 10 s
    python -m fgd run digits --full          # a wider net, 100 epochs
    python -m fgd run digits --checkpoint-dir ckpt [--resume]   # checkpoint / resume

The 1,797 digits of scikit-learn (`fgd.data.digits`, pixels / 16), split
75/25 at random from the key (stratified by class), train an MLP
64-`hidden`-10 (relu hidden units, He init, softmax output, cross-entropy)
with mini-batch Adam whose rate follows a cosine decay from `lr` to lr/100
over the run. Test accuracy is measured once, on the held-out quarter, which
training never sees (the test loss curve is only drawn, never used to choose
anything). Figures: training and test loss per epoch, and the misclassified
test digits with their true and predicted labels. results.json holds
`test_accuracy`, the confusion matrix (rows: true digit, columns: predicted)
and the per-digit accuracy. Over split seeds 0-4 this setting gave 97.6%
to 98.4% (seed 0, the default: 97.6%, 11 of 450 wrong).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

import fgd
import fgd.cli
from fgd import plots, records

NAME = "digits"


@dataclasses.dataclass(frozen=True)
class Config:
    """An MLP on the 8x8 digits."""

    lr: float = 3e-3
    epochs: int = 30
    batch_size: int = 32
    hidden: int = 256
    test_fraction: float = 0.25
    seed: int = 0
    checkpoint_dir: Optional[str] = None   # fgd.fit's checkpoint_dir: the training state is saved there
    checkpoint_every: int = 5              # epochs between checkpoints (each ~16 ms, 243 kB)
    resume: bool = False                   # go on from checkpoint_dir's newest checkpoint
    out: str = "runs"
    full: bool = False


def checkpoint_options(config: Config) -> dict:
    """fit's checkpoint keywords: `--checkpoint-dir D` saves the whole training
    state in D after every `--checkpoint-every` epochs; `--resume` goes on from
    D's newest good checkpoint (bit-identical to an uninterrupted run); without
    it D's checkpoints are deleted and the run starts over."""
    if config.checkpoint_dir is None:
        if config.resume:
            raise ValueError("--resume needs --checkpoint-dir (the directory to resume from)")
        return {}
    if config.checkpoint_every < 1:
        raise ValueError(f"--checkpoint-every must be >= 1 (epochs between checkpoints); "
                         f"got {config.checkpoint_every}")
    return {"checkpoint_dir": config.checkpoint_dir, "checkpoint_every": config.checkpoint_every,
            "resume": config.resume}


def main(config: Config) -> dict:
    checkpoints = checkpoint_options(config)      # a bad flag fails before any work
    if config.full:
        config = dataclasses.replace(config, hidden=max(config.hidden, 1024), epochs=max(config.epochs, 100))
    out = records.experiment_dir(config.out, NAME)
    dtype = jnp.zeros(()).dtype
    k_split, k_init, k_batch = jax.random.split(jax.random.key(config.seed), 3)
    d = fgd.data.digits(dtype)
    split = fgd.data.train_test_split(k_split, d.X, d.Y, config.test_fraction, stratify=True)
    m = split.X_train.shape[1]
    net = fgd.MLP((64, config.hidden, 10), hidden="relu", output="softmax")
    loss = fgd.make_loss(net, "cross_entropy")
    schedule = fgd.schedules.cosine_decay(config.lr, config.epochs * (m // config.batch_size), alpha=0.01)
    t0 = time.perf_counter()
    result = fgd.fit(loss, net.init(k_init, "he", dtype=dtype), fgd.adam(schedule), split.X_train, split.Y_train,
                     epochs=config.epochs, batch_size=config.batch_size, key=k_batch,
                     validation=(split.X_test, split.Y_test), **checkpoints)
    seconds = time.perf_counter() - t0
    if config.checkpoint_dir is not None:
        print(records.describe_resume(result.resumed_epoch, config.checkpoint_dir))

    predict = lambda X: np.asarray(net.apply(result.params, X)).argmax(0)
    true_test, pred_test = np.asarray(split.Y_test).argmax(0), predict(split.X_test)
    test_accuracy = float(np.mean(pred_test == true_test))
    train_accuracy = float(np.mean(predict(split.X_train) == np.asarray(split.Y_train).argmax(0)))
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (true_test, pred_test), 1)
    per_digit = confusion.diagonal() / confusion.sum(1)

    records.print_table(f"Digits MLP 64-{config.hidden}-10, Adam {config.lr:g} (cosine), {result.epochs} epochs "
                        f"of batch {config.batch_size}, {m} train / {true_test.size} test", [
                            {"train loss": float(loss(result.params, split.X_train, split.Y_train)),
                             "test loss": float(result.history["val_loss"][-1]),
                             "train accuracy": train_accuracy, "test accuracy": test_accuracy,
                             "misclassified": int((pred_test != true_test).sum()),
                             "seconds": seconds}])
    records.print_table("Test accuracy per digit", [{str(k): float(per_digit[k]) for k in range(10)}])

    plots.loss_curves({"training (mean mini-batch loss)": result.history["loss"],
                       "test (held out)": result.history["val_loss"]}, path=out / "loss.png",
                      title=f"Digits MLP 64-{config.hidden}-10: test accuracy {test_accuracy:.1%}",
                      ylabel="cross-entropy")
    wrong = np.flatnonzero(pred_test != true_test)[:24]
    if wrong.size:
        images = np.asarray(split.X_test)[:, wrong].T.reshape(-1, 8, 8)
        fig = plots.filters(images, title="Misclassified test digits", cmap="gray_r", ncols=8)
        for ax, i in zip(fig.axes, wrong):
            ax.set_title(f"{true_test[i]} -> {pred_test[i]}", fontsize="small", color="tab:red")
            ax.images[0].set_clim(0, 1)  # pixels in [0, 1]: white paper, black ink
        fig.suptitle(f"Misclassified test digits (true -> predicted): {int((pred_test != true_test).sum())} "
                     f"of {true_test.size}")
        plots.save(fig, out / "misclassified.png")

    numbers = {"test_accuracy": test_accuracy, "train_accuracy": train_accuracy,
               "final_train_loss": float(result.history["loss"][-1]),
               "final_test_loss": float(result.history["val_loss"][-1]),
               "epochs": result.epochs, "stop_reason": result.stop_reason,
               "n_train": m, "n_test": int(true_test.size), "hidden": config.hidden,
               "per_digit_accuracy": per_digit, "confusion": confusion, "seconds": seconds}
    return records.finish(out, numbers, {"loss": result.history["loss"], "test_loss": result.history["val_loss"]})


if __name__ == "__main__":
    main(fgd.cli.parse_config(Config))
