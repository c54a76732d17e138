"""The verdicts of the gradient checks: one row per leaf, and a report.

Each leaf is compared three ways. A comparison passes when

    ||a - b|| <= tol (||a|| + ||b||) + allowance

and reports the relative error that this bounds by tol,

    rel(a, b) = ||a - b|| / (||a|| + ||b|| + allowance / tol)

    hand~autodiff   every entry; tol = AUTODIFF_TOL, allowance = floor
    hand~fd         the sampled entries that are differentiable; tol = FD_TOL,
    autodiff~fd     allowance = ||fd error bound|| + floor (on those entries)

The absolute floor keeps a correct gradient at (or near) an optimum, where
both sides are rounding noise, from failing:

    floor = FLOOR_C eps sqrt(n) (|J| / s + kappa s)

with n the leaf's size, s its scale (RMS), kappa the loss's curvature along
its entries (from the finite differences): |J| / s and kappa s are the sizes a
gradient of this loss has away from the optimum, so rounding in them is
what hand and autodiff may differ by. A planted bug of 1e-3 relative on a
gradient that is not itself rounding noise stays far above it; at an exact
optimum a wrong factor (1/m, a sign) is invisible, as the gradient is 0.

A hand gradient returned in a lower precision (float32, float16) is held to
min(500 eps, 1e-2) of that dtype instead of AUTODIFF_TOL.

For a failing leaf the row keeps the worst entry (its index and the hand,
autodiff and fd values) and a hint when the disagreement has the pattern of
a common slip: a constant ratio m (a missing 1/m), 1/m (an extra one, or a
bias averaged instead of summed), -1 (a sign), 2 or 1/2, or the transpose.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

AUTODIFF_TOL = 1e-10   # hand vs jax.grad, both exact up to rounding in float64
FD_TOL = 1e-6          # against finite differences, on top of their own error bound
FLOOR_C = 64.0
EPS = float(np.finfo(np.float64).eps)
COMPARISONS = ("hand~autodiff", "hand~fd", "autodiff~fd")
_RATIO_TOL = 1e-6      # how constant a ratio (or how exact a transpose) must be for a hint


def rel_error(a: np.ndarray, b: np.ndarray, allowance: float = 0.0) -> float:
    """||a - b|| / (||a|| + ||b|| + allowance), 0 when that is 0/0, inf with NaN/Inf."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("inf")
    den = np.linalg.norm(a) + np.linalg.norm(b) + allowance
    return 0.0 if den == 0 else float(np.linalg.norm(a - b) / den)


def hand_tolerance(dtype) -> float:
    """AUTODIFF_TOL for a float64 hand gradient, min(500 eps, 1e-2) below it."""
    eps = float(np.finfo(np.dtype(dtype)).eps) if np.dtype(dtype).kind == "f" else EPS
    return AUTODIFF_TOL if eps <= EPS else min(500 * eps, 1e-2)


@dataclasses.dataclass(frozen=True)
class Worst:
    """The entry of a failing leaf that disagrees most."""

    index: tuple
    hand: float
    autodiff: float
    fd: float          # NaN when that entry has no finite difference (a kink)

    def __str__(self) -> str:
        idx = "[" + ", ".join(map(str, self.index)) + "]"
        return f"entry {idx}: hand {self.hand:.10g}, autodiff {self.autodiff:.10g}, fd {self.fd:.10g}"


@dataclasses.dataclass(frozen=True)
class LeafCheck:
    """One leaf's comparison.

    Attributes:
      name: how reports name it: "layer 2, leaf 'W'" for fgd's list of layers,
        the pytree path ("['encoder']['W']") otherwise, "input 0 (x)" for a vjp.
      layer, leaf: the two halves of the name for fgd's list of layers
        (layer "" otherwise, and leaf the path).
      shape, errors (comparison -> relative error; NaN when not compared),
      limits (comparison -> the relative error allowed), fd_entries (entries
      with finite differences), kinks (of those, not differentiable here),
      worst (a failing leaf's worst entry), hint (a likely slip), note.
    """

    name: str
    layer: str
    leaf: str
    shape: tuple
    errors: dict
    limits: dict
    fd_entries: int
    kinks: int = 0
    worst: Optional[Worst] = None
    hint: Optional[str] = None
    note: Optional[str] = None

    def failed(self) -> list:
        """The comparisons over their limit, in COMPARISONS order."""
        return [c for c in COMPARISONS if not np.isnan(self.errors[c])
                and not self.errors[c] <= self.limits[c]]


@dataclasses.dataclass(frozen=True)
class GradCheckReport:
    """The result of a check; `str(report)` prints the table.

    `checks` are rows for the user's own functions inside a model (an
    activation's g', a cost's dJ/dA), printed first; `rows` one per leaf.
    """

    rows: tuple
    tolerances: dict
    checks: tuple = ()
    title: str = "gradient"

    def failures(self) -> list:
        """(row, comparison) pairs over their limit: user functions first, then leaves in order."""
        return [(r, c) for r in (*self.checks, *self.rows) for c in r.failed()]

    @property
    def ok(self) -> bool:
        return not self.failures()

    @property
    def max_rel_error(self) -> float:
        errs = [e for r in (*self.checks, *self.rows) for e in r.errors.values() if not np.isnan(e)]
        return max(errs) if errs else 0.0

    @property
    def first_failure(self) -> Optional[str]:
        """The name of the first leaf (or function) that disagrees, or None."""
        f = self.failures()
        return None if not f else f[0][0].name

    def _table(self, rows: Sequence[LeafCheck], layered: bool) -> list:
        if layered:
            width = max(4, *(len(r.leaf) for r in rows))
            left = f"{'layer':>5}  {'leaf':<{width}}"
            cell = lambda r: f"{r.layer:>5}  {r.leaf:<{width}}"   # noqa: E731
        else:
            width = max(4, *(len(r.name) for r in rows))
            left = f"{'leaf':<{width}}"
            cell = lambda r: f"{r.name:<{width}}"                 # noqa: E731
        head = f"{left}  {'shape':<14}" + "".join(f"  {c:>13}" for c in COMPARISONS)
        lines = [head, "-" * len(head)]
        for r in rows:
            cells = ""
            for c in COMPARISONS:
                e = r.errors[c]
                if np.isnan(e):
                    cells += f"  {'-':>11}  "
                else:
                    cells += f"  {e:>11.2e}{' !' if not e <= r.limits[c] else '  '}"
            notes = []
            n = int(np.prod(r.shape))
            if r.fd_entries != n:
                notes.append(f"fd on {r.fd_entries} entries")
            if r.kinks:
                notes.append(f"{r.kinks} not differentiable here")
            sampled = f"  ({'; '.join(notes)})" if notes else ""
            lines.append(f"{cell(r)}  {str(r.shape):<14}{cells}{sampled}")
        return lines

    def __str__(self) -> str:
        lines = []
        if self.checks:
            lines.append("your own functions (hand derivative vs autodiff and fd, at this model's values):")
            lines += self._table(self.checks, False) + [""]
        layered = bool(self.rows) and all(r.layer for r in self.rows)
        lines += self._table(self.rows, layered)
        tol = ", ".join(f"{c} {t:.0e}" for c, t in self.tolerances.items())
        lines.append(f"tolerances: {tol}; errors relative to ||a|| + ||b|| plus a rounding floor "
                     f"(and the fd error bound); max relative error {self.max_rel_error:.2e}")
        kinks = sum(r.kinks for r in (*self.checks, *self.rows))
        if kinks:
            lines.append(f"{kinks} sampled entries are not differentiable at this point (a kink such as "
                         f"relu at 0, |w| at 0 or a max-pool tie inside the fd stencil): left out of the "
                         f"fd verdict; hand~autodiff decides there")
        if self.ok:
            lines.append(f"OK: the hand-derived {self.title} matches autodiff and finite differences")
            return "\n".join(lines)
        row, comp = self.failures()[0]
        lines.append(f"FAILED: first disagreement at {row.name} "
                     f"({comp}: {row.errors[comp]:.2e} > {row.limits[comp]:.1e})")
        failing = [r for r in (*self.checks, *self.rows) if r.failed()]
        for r in failing:
            why = ", ".join(r.failed())
            lines.append(f"  {r.name}: {why} over the limit" + (f"; worst {r.worst}" if r.worst else ""))
            if r.hint:
                lines.append(f"    hint: {r.hint}")
            if r.note:
                lines.append(f"    note: {r.note}")
        return "\n".join(lines)


def floor(J0: float, scale: float, curvature: float, n: int) -> float:
    """The absolute floor of the module docstring (on the norm of a difference)."""
    s = scale if scale > 0 else 1.0
    return FLOOR_C * EPS * np.sqrt(n) * (abs(J0) / s + curvature * s)


def _is_bias(leaf: str, shape: tuple) -> bool:
    key = leaf.strip("[]'\"").split("'][")[-1].lower()
    return key in ("b", "bias", "db") or (len(shape) == 2 and shape[1] == 1) or len(shape) == 1


def hint(hand: np.ndarray, auto: np.ndarray, leaf: str, ms: Sequence[int]) -> Optional[str]:
    """A likely slip, from the pattern of hand against autodiff (None if none fits)."""
    h, a = hand.astype(np.float64).ravel(), auto.astype(np.float64).ravel()
    if not np.isfinite(h).all():
        return "the hand gradient holds NaN or Inf (a log or division of 0, or an overflow)"
    nh, na = np.linalg.norm(h), np.linalg.norm(a)
    if nh == 0:
        return "the hand gradient of this leaf is all zeros (the leaf is missing from the backward pass?)"
    if hand.ndim == 2 and hand.shape[0] == hand.shape[1] > 1 and \
            np.linalg.norm(hand - auto.T) <= _RATIO_TOL * nh:
        return ("the hand leaf equals autodiff's transpose: W where W^T belongs "
                "(e.g. A_prev @ dZ.T instead of dZ @ A_prev.T)")
    if na > 0:
        c = float(h @ a / (a @ a))
        if np.linalg.norm(h - c * a) <= _RATIO_TOL * nh:
            close = lambda x: abs(c - x) <= 1e-6 * abs(x)   # noqa: E731
            for m in sorted(set(int(m) for m in ms if m > 1)):
                if close(m):
                    return f"hand = {m} x autodiff, with m = {m} examples: a missing 1/m"
                if close(1.0 / m):
                    if _is_bias(leaf, hand.shape):
                        return (f"hand = autodiff / {m}, with m = {m} examples: a bias gradient averaged "
                                f"over the examples instead of summed (mean where sum belongs), "
                                f"or an extra 1/m")
                    return f"hand = autodiff / {m}, with m = {m} examples: an extra 1/m"
            if close(-1.0):
                return "hand = -autodiff: a sign slip (Y - A for A - Y, or a minus sign of the update)"
            if close(2.0):
                return "hand = 2 x autodiff: a missing 1/2 (d/dx x^2/2 = x)"
            if close(0.5):
                return "hand = autodiff / 2: an extra 1/2"
            return f"hand = {c:.6g} x autodiff on every entry: a constant factor is off"
    off = np.abs(h - a) > AUTODIFF_TOL * (np.abs(h) + np.abs(a)) + EPS * (nh + na)
    k = int(off.sum())
    if 0 < k < h.size:
        where = ""
        if hand.ndim == 2:
            rows = np.unique(np.nonzero(off.reshape(hand.shape))[0])
            cols = np.unique(np.nonzero(off.reshape(hand.shape))[1])
            if rows.size == 1:
                where = f", all in row {rows[0]}"
            elif cols.size == 1:
                where = f", all in column {cols[0]}"
        return f"{k} of {h.size} entries disagree{where}; the others match"
    return None
