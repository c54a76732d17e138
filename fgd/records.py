"""What an experiment leaves behind: numbers (JSON), histories (CSV), a summary.

Every experiment writes under `<out>/<name>/`:

    results.json   the figures it printed (plus the device it ran on)
    history.csv    one row per epoch, one column per recorded series
    *.png          its figures (written with fgd.plots)
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import jax
import numpy as np


def device_description() -> str:
    """The JAX backend and device the run uses, e.g. "cpu: TFRT_CPU_0 (1 device)"."""
    devices = jax.devices()
    return f"{jax.default_backend()}: {devices[0]} ({len(devices)} device{'s' if len(devices) > 1 else ''})"


def experiment_dir(out: str | Path, name: str) -> Path:
    """`<out>/<name>/`, created."""
    path = Path(out) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _plain(value: Any) -> Any:
    """JSON-ready: arrays become lists, numpy scalars numbers, NaN/Inf strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (jax.Array, np.ndarray)):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_results(directory: Path, numbers: Mapping[str, Any]) -> Path:
    """Write `numbers` (and the device) to results.json."""
    path = Path(directory) / "results.json"
    payload = {"device": device_description(), **_plain(dict(numbers))}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def write_history(directory: Path, history: Mapping[str, Any], name: str = "history.csv") -> Path:
    """Write equal-or-unequal-length series as CSV columns (blank where a series ended)."""
    path = Path(directory) / name
    columns = {k: np.asarray(v).reshape(-1) for k, v in history.items()}
    n = max((len(v) for v in columns.values()), default=0)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *columns])
        for i in range(n):
            writer.writerow([i, *(repr(float(v[i])) if i < len(v) else "" for v in columns.values())])
    return path


def plain(value: float) -> str:
    """A float for a table: 4 significant digits, and from 10,000 up a plain
    integer with thousands separators (44,038, never 4.404e+04)."""
    value = float(value)
    if math.isfinite(value) and 1e4 <= abs(value) < 1e16:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def describe_resume(resumed_epoch: Optional[int], checkpoint_dir: Any) -> str:
    """One line saying where a checkpointed run started: the epoch and file it
    resumed from, or that it started at epoch 0."""
    if checkpoint_dir is None:
        return ""
    if resumed_epoch is None:
        return f"started at epoch 0 (no checkpoint taken from {Path(checkpoint_dir)}/)"
    return f"resumed at epoch {resumed_epoch} from {Path(checkpoint_dir) / f'ckpt-{resumed_epoch}.npz'}"


def print_table(title: str, rows: list[Mapping[str, Any]]) -> None:
    """Print rows of {column: value} as an aligned table under `title`."""
    print(f"\n{title}")
    if not rows:
        return
    cols = list(rows[0])

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return plain(v)
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def finish(directory: Path, numbers: Mapping[str, Any], history: Optional[Mapping[str, Any]] = None) -> dict:
    """Write results.json (and history.csv), print where, return `numbers` as plain data."""
    write_results(directory, numbers)
    if history:
        write_history(directory, history)
    print(f"\ndevice: {device_description()}")
    print(f"wrote {directory}/")
    return _plain(dict(numbers))
