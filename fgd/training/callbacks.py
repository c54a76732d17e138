"""Callbacks: fit's history handed to the host at chunk ends, and two loggers.

`fit(..., callbacks=[cb, ...])` calls each callback on the host after every
compiled chunk of epochs (never per step or per epoch: the device runs a
whole chunk without the host), in the order given:

    cb(epochs, rows)

- `epochs`: a `range` of the epochs the chunk ran, e.g. `range(128, 384)`;
  after a resume the first chunk starts at the resumed epoch.
- `rows`: name -> numpy array of `len(epochs)` values, the chunk's part of
  `result.history` (the names fit records: "loss", "val_loss", ...).

When fit ends (normally or by an exception) it calls `cb.close()` on each
callback that has one. A callback's return value is ignored; an exception in
it stops fit. Chunks are sized to take about a quarter of a second once the
epoch rate is known, so a callback runs a few times a second at most.

Built in: `CSVLogger(path)` (one row per epoch) and `TensorBoardLogger(logdir)`
(scalars "loss", ... against the epoch, in a TensorBoard event file, through
the optional `tensorboardX` package: the "tensorboard" extra).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np


def check_callbacks(callbacks: Any) -> tuple:
    """The callbacks as a tuple (TypeError for anything not callable)."""
    if callbacks is None:
        return ()
    if callable(callbacks) or isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a list of callables cb(epochs, rows); got "
                        f"{type(callbacks).__name__}")
    out = tuple(callbacks)
    for i, cb in enumerate(out):
        if not callable(cb):
            raise TypeError(f"callbacks[{i}] must be callable as cb(epochs, rows); got "
                            f"{type(cb).__name__}")
    return out


def close_all(callbacks: Iterable) -> None:
    """Calls `close()` on each callback that has one."""
    for cb in callbacks:
        close = getattr(cb, "close", None)
        if callable(close):
            close()


class CSVLogger:
    """Writes fit's history to a CSV file, one row per epoch: ``epoch,loss,...``.

    A run that starts at epoch 0 overwrites the file; a resumed run (first
    epoch > 0) appends to it when it exists, so the file holds the whole run.
    Values are written with `repr` (exact round trip of float64). The file is
    flushed after every chunk, so it can be read while fit runs.

    Example:
      >>> fgd.fit(loss, params, opt, X, Y, callbacks=[fgd.CSVLogger("run.csv")])
    """

    def __init__(self, path: Any):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"CSVLogger: path must be a str or os.PathLike; got {type(path).__name__}")
        self.path = Path(path)
        self._file: Optional[Any] = None
        self._names: Optional[list] = None

    def __call__(self, epochs: range, rows: dict) -> None:
        if self._file is None:
            append = epochs.start > 0 and self.path.exists()
            self._file = self.path.open("a" if append else "w", newline="")
            self._names = list(rows)
            if not append:
                csv.writer(self._file).writerow(["epoch", *self._names])
        writer = csv.writer(self._file)
        columns = [np.asarray(rows[n]).reshape(-1) for n in self._names]
        for i, epoch in enumerate(epochs):
            writer.writerow([epoch, *(repr(float(c[i])) for c in columns)])
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file, self._names = None, None


class TensorBoardLogger:
    """Writes fit's history as TensorBoard scalars: tag `prefix + name`, step = epoch.

    Uses `tensorboardX.SummaryWriter` (`pip install "fgd[tensorboard]"`, a
    small pure-Python package depending only on numpy and protobuf; the
    event-file format is TensorBoard's own, so `tensorboard --logdir DIR`
    shows the runs side by side). The writer is opened at the first chunk and
    closed when fit ends.

    Example:
      >>> fgd.fit(..., callbacks=[fgd.TensorBoardLogger("tb/adam-1e-3")])
      $ tensorboard --logdir tb
    """

    def __init__(self, logdir: Any, prefix: str = ""):
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"TensorBoardLogger: logdir must be a str or os.PathLike; got "
                            f"{type(logdir).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"TensorBoardLogger: prefix must be a str; got {type(prefix).__name__}")
        try:
            import tensorboardX  # noqa: F401  (optional: the "tensorboard" extra)
        except ImportError:
            raise ImportError("TensorBoardLogger needs tensorboardX: pip install tensorboardX "
                              "(or fgd[tensorboard])") from None
        self.logdir, self.prefix = os.fspath(logdir), prefix
        self._writer: Any = None

    def __call__(self, epochs: range, rows: dict) -> None:
        if self._writer is None:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(self.logdir)
        for name, values in rows.items():
            values = np.asarray(values).reshape(-1)
            for i, epoch in enumerate(epochs):
                self._writer.add_scalar(self.prefix + name, float(values[i]), epoch)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
