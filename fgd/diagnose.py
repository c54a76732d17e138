"""`diagnose(result)`: name what a fit's history shows, each with the number behind it.

Reads `result.history` (record the diagnostics to get more findings, e.g.
`history=("loss", "lr", "layer_grad_norm", "dead_fraction",
"saturated_fraction", "unit_spread", "sharpness")`) and reports:

    non-finite loss      the first NaN/Inf loss, its epoch (and batch)
    vanishing gradients  ||g_first layer|| / ||g_last layer|| < 1 / GRAD_RATIO
    exploding gradients  ||g_first layer|| / ||g_last layer|| > GRAD_RATIO
                         (both at the first epoch measured)
    dead units           a hidden layer with dead_fraction >= DEAD_LIMIT
    saturated units      a hidden layer with saturated_fraction >= SATURATED_LIMIT
    symmetric units      a hidden layer with unit_spread <= SYMMETRIC_SPREAD
                         (all its units equal: they get equal gradients forever)
    rate too large       eta * lambda_max > 2 (needs "sharpness" and "lr", or lr=)
    loss barely moving   |loss[0] - loss[-1]| / |loss[0]| < STALL_CHANGE over >= 10 epochs
"""
from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

GRAD_RATIO = 100.0
DEAD_LIMIT = 0.25
SATURATED_LIMIT = 0.5
SYMMETRIC_SPREAD = 1e-7
STALL_CHANGE = 1e-3


class Diagnosis(NamedTuple):
    """The findings of `diagnose`, one sentence each, with its number."""

    findings: list

    def __str__(self) -> str:
        if not self.findings:
            return "diagnosis: nothing abnormal in the recorded history"
        return "diagnosis:\n" + "\n".join(f"  - {f}" for f in self.findings)


def _rows(history: dict, name: str) -> Optional[np.ndarray]:
    """The measured rows of a history entry (NaN rows of skipped epochs dropped)."""
    if name not in history:
        return None
    h = np.asarray(history[name], float)
    if h.size == 0:
        return None
    measured = ~np.all(np.isnan(h.reshape(h.shape[0], -1)), axis=1)
    return h[measured] if measured.any() else None


def _epochs(history: dict, name: str) -> np.ndarray:
    h = np.asarray(history[name], float)
    return np.flatnonzero(~np.all(np.isnan(h.reshape(h.shape[0], -1)), axis=1))


def diagnose(result: Any, lr: Optional[float] = None) -> Diagnosis:
    """What `result`'s history shows (module docstring for the rules).

    Args:
      result: an `fgd.FitResult` (anything with `.history`; `.history_columns`,
        `.nonfinite_epoch`, `.nonfinite_batch` are used when present).
      lr: the rate, for the 2/lambda_max rule when "lr" was not recorded.

    Returns:
      A `Diagnosis`; `str()` of it lists the findings.
    """
    history = getattr(result, "history", None)
    if not isinstance(history, dict) or "loss" not in history:
        raise TypeError(f"result must be a FitResult (with a history holding 'loss'); "
                        f"got {type(result).__name__}")
    cols = getattr(result, "history_columns", None) or {}
    label = lambda name, j: cols[name][j] if name in cols and j < len(cols[name]) else f"column {j + 1}"
    found = []
    loss = np.asarray(history["loss"], float)

    bad = np.flatnonzero(~np.isfinite(loss))
    epoch = getattr(result, "nonfinite_epoch", None)
    if epoch is None and bad.size:
        epoch = int(bad[0])
    if epoch is not None:
        batch = getattr(result, "nonfinite_batch", None)
        where = f" (batch {batch} of that epoch)" if batch is not None else ""
        found.append(f"non-finite loss {loss[epoch]} at epoch {epoch}{where}; "
                     f"last finite loss {loss[:epoch][np.isfinite(loss[:epoch])][-1]:.4g}"
                     if epoch and np.isfinite(loss[:epoch]).any() else
                     f"non-finite loss {loss[epoch]} at epoch {epoch}{where}")

    g = _rows(history, "layer_grad_norm")
    if g is not None and g.ndim == 2 and g.shape[1] >= 2:
        first, last = g[0, 0], g[0, -1]
        ratio = first / last if last > 0 else np.inf
        e = int(_epochs(history, "layer_grad_norm")[0])
        if ratio < 1 / GRAD_RATIO:
            found.append(f"vanishing gradients: ||g|| of {label('layer_grad_norm', 0)} is "
                         f"{ratio:.3g} x that of {label('layer_grad_norm', g.shape[1] - 1)} "
                         f"at epoch {e} ({first:.3g} vs {last:.3g})")
        elif ratio > GRAD_RATIO:
            found.append(f"exploding gradients: ||g|| of {label('layer_grad_norm', 0)} is "
                         f"{ratio:.3g} x that of {label('layer_grad_norm', g.shape[1] - 1)} "
                         f"at epoch {e} ({first:.3g} vs {last:.3g})")

    for name, limit, what in (("dead_fraction", DEAD_LIMIT, "dead"),
                              ("saturated_fraction", SATURATED_LIMIT, "saturated")):
        h = _rows(history, name)
        if h is None:
            continue
        e = int(_epochs(history, name)[-1])
        for j, v in enumerate(h[-1]):
            if np.isfinite(v) and v >= limit:
                unit = "units" if what == "dead" else "unit-example pairs"
                found.append(f"{what} units: {100 * v:.1f}% of {label(name, j)}'s {unit} "
                             f"are {what} at epoch {e}")

    s = _rows(history, "unit_spread")
    if s is not None:
        e = int(_epochs(history, "unit_spread")[-1])
        for j, v in enumerate(s[-1]):
            if np.isfinite(v) and v <= SYMMETRIC_SPREAD:
                found.append(f"symmetric units: the units of {label('unit_spread', j)} are equal "
                             f"(spread {v:.3g}) at epoch {e}; they will stay equal")

    sharp = _rows(history, "sharpness")
    rates = np.asarray(history["lr"], float) if "lr" in history else None
    if sharp is not None and (rates is not None or lr is not None):
        idx = _epochs(history, "sharpness")
        eta = rates[idx] if rates is not None else np.full(idx.size, float(lr))
        over = np.flatnonzero(eta * sharp > 2)
        if over.size:
            i = over[0]
            found.append(f"rate too large: eta = {eta[i]:.4g} > 2/lambda_max = {2 / sharp[i]:.4g} "
                         f"(eta lambda_max = {eta[i] * sharp[i]:.3g}) at epoch {int(idx[i])}")

    finite = loss[np.isfinite(loss)]
    if finite.size >= 10 and finite[0] != 0:
        change = abs(finite[0] - finite[-1]) / abs(finite[0])
        if change < STALL_CHANGE:
            found.append(f"loss barely moving: it changed by {100 * change:.3g}% over "
                         f"{finite.size} epochs ({finite[0]:.6g} -> {finite[-1]:.6g})")
    return Diagnosis(found)
