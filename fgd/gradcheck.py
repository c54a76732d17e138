"""Check a hand-derived gradient against jax.grad and finite differences.

Three gradients of J = make_loss(net, cost, l2, l1) are computed in float64,
whatever the caller's precision:

    hand      the `backprop` under test (fgd.backprop by default, or the user's own)
    autodiff  jax.grad(J)
    fd        central differences  (J(theta + h e_i) - J(theta - h e_i)) / (2h)

and compared leaf by leaf with the norm-wise relative error

    rel(a, b) = ||a - b|| / (||a|| + ||b||)          (0 when both are 0)

A hand-derived gradient typically agrees with autodiff to ~1e-15 and with
finite differences to ~1e-9; the thresholds are 1e-10 and 1e-6.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _checks, _jax, losses
from fgd.backprop import backprop as fgd_backprop

Array = jax.Array

AUTODIFF_TOL = 1e-10   # hand vs jax.grad, both exact up to rounding in float64
FD_TOL = 1e-6          # anything vs central differences: O(h^2) + O(eps/h) error
FD_STEP = 1e-6         # h
FD_MAX_ENTRIES = 2000  # per leaf; larger leaves are checked on a fixed random sample

COMPARISONS = ("hand~autodiff", "hand~fd", "autodiff~fd")


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||), and 0 when both are zero."""
    den = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if den == 0 else float(np.linalg.norm(a - b) / den)


@dataclasses.dataclass(frozen=True)
class LeafCheck:
    """One leaf's comparison: where it is and the three relative errors."""

    layer: str
    leaf: str
    shape: tuple
    errors: dict          # comparison name -> relative error
    fd_entries: int       # how many entries the finite differences covered


@dataclasses.dataclass(frozen=True)
class GradCheckReport:
    """The result of `check_gradients`; `str(report)` prints the table."""

    rows: tuple
    tolerances: dict

    def failures(self) -> list[tuple[LeafCheck, str]]:
        """(row, comparison) pairs over tolerance, in layer order."""
        return [
            (r, c) for r in self.rows for c in COMPARISONS if not r.errors[c] <= self.tolerances[c]
        ]

    @property
    def ok(self) -> bool:
        return not self.failures()

    @property
    def max_rel_error(self) -> float:
        return max(e for r in self.rows for e in r.errors.values())

    @property
    def first_failure(self) -> Optional[str]:
        """"layer 2, leaf 'W'" for the first leaf that disagrees, or None."""
        f = self.failures()
        return None if not f else f"layer {f[0][0].layer}, leaf {f[0][0].leaf!r}"

    def __str__(self) -> str:
        head = f"{'layer':>5}  {'leaf':<4}  {'shape':<14}" + "".join(f"  {c:>13}" for c in COMPARISONS)
        lines = [head, "-" * len(head)]
        for r in self.rows:
            cells = "".join(
                f"  {r.errors[c]:>11.2e}{' !' if r.errors[c] > self.tolerances[c] else '  '}"
                for c in COMPARISONS
            )
            sampled = "" if r.fd_entries == int(np.prod(r.shape)) else f"  (fd on {r.fd_entries} entries)"
            lines.append(f"{r.layer:>5}  {r.leaf:<4}  {str(r.shape):<14}{cells}{sampled}")
        tol = ", ".join(f"{c} {t:.0e}" for c, t in self.tolerances.items())
        lines.append(f"tolerances: {tol}; max relative error {self.max_rel_error:.2e}")
        if self.ok:
            lines.append("OK: the hand-derived gradient matches autodiff and finite differences")
        else:
            row, comp = self.failures()[0]
            lines.append(
                f"FAILED: first disagreement at {self.first_failure} "
                f"({comp}: {row.errors[comp]:.2e} > {self.tolerances[comp]:.0e})"
            )
        return "\n".join(lines)


def _where(path) -> tuple[str, str]:
    """(layer, leaf) names: list index + 1 and dict key for fgd's params."""
    first, last = path[0], path[-1]
    layer = str(first.idx + 1) if hasattr(first, "idx") else jax.tree_util.keystr(path[:-1])
    leaf = str(getattr(last, "key", jax.tree_util.keystr((last,))))
    return layer, leaf


FD_CHUNK = 256  # entries per vmapped call; idx is padded to a multiple, so one trace per leaf


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _central_differences(J: Callable, treedef: Any, i: int, leaves: list, X, Y, idx) -> Array:
    """(J(theta + h e_k) - J(theta - h e_k)) / 2h for the flat entries idx of leaf i."""
    def at(k, h):
        bumped = list(leaves)
        bumped[i] = leaves[i].reshape(-1).at[k].add(h).reshape(leaves[i].shape)
        return J(jax.tree_util.tree_unflatten(treedef, bumped), X, Y)

    return jax.vmap(lambda k: (at(k, FD_STEP) - at(k, -FD_STEP)) / (2 * FD_STEP))(idx)


def _finite_differences(J: Callable, params: Any, X, Y, entries: list) -> list:
    """Central differences of J at `params`, on the given flat entries of each leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    out = []
    for i, idx in enumerate(entries):
        padded = np.resize(idx, -(-len(idx) // FD_CHUNK) * FD_CHUNK)
        chunks = [_central_differences(J, treedef, i, leaves, X, Y, c)
                  for c in padded.reshape(-1, FD_CHUNK)]
        out.append(np.concatenate([np.asarray(c) for c in chunks])[: len(idx)])
    return out


def check_gradients(
    net, cost, params, X, Y, *, l2: float = 0.0, l1: float = 0.0,
    backprop: Callable = fgd_backprop, seed: int = 0,
) -> GradCheckReport:
    """Compare `backprop` with jax.grad and central finite differences, in float64.

    Args:
      net, cost, params, X, Y, l2, l1: as for `fgd.backprop`.
      backprop: the hand-derived gradient under test, with fgd.backprop's
        signature `backprop(net, cost, params, X, Y, l2=..., l1=...)`.
      seed: picks the sampled entries of leaves larger than FD_MAX_ENTRIES.

    Returns:
      A GradCheckReport: `.ok`, `.max_rel_error`, `.first_failure`, and a
      per-layer, per-leaf table in `str(report)`.
    """
    if not callable(backprop):
        raise TypeError(f"backprop must be a function like fgd.backprop; got {type(backprop).__name__}")
    losses.check_cost(cost)
    _checks.check_params(net, params)
    X, Y = _checks.check_xy(net, X, Y, finite=True)
    losses.check_targets(cost, Y)
    l2, l1 = _checks.check_nonneg(l2, "l2"), _checks.check_nonneg(l1, "l1")

    with _jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, np.float64)), params)
        X64, Y64 = (jnp.asarray(np.asarray(a, np.float64)) for a in (X, Y))
        J = losses.make_loss(net, cost, l2, l1)
        hand = backprop(net, cost, p64, X64, Y64, l2=l2, l1=l1)
        auto = jax.grad(J)(p64, X64, Y64)
        rng = np.random.default_rng(seed)
        paths_leaves = jax.tree_util.tree_flatten_with_path(p64)[0]
        entries = [
            np.arange(x.size) if x.size <= FD_MAX_ENTRIES
            else np.sort(rng.choice(x.size, FD_MAX_ENTRIES, replace=False))
            for _, x in paths_leaves
        ]
        fds = _finite_differences(J, p64, X64, Y64, entries)
        hand_leaves = jax.tree_util.tree_leaves(hand)
        auto_leaves = jax.tree_util.tree_leaves(auto)
        if len(hand_leaves) != len(paths_leaves):
            raise ValueError(
                f"backprop must return a tree like params with {len(paths_leaves)} leaves; "
                f"got {len(hand_leaves)}"
            )
        rows = []
        for (path, x), h, a, fd, idx in zip(paths_leaves, hand_leaves, auto_leaves, fds, entries):
            h = np.asarray(h, np.float64)
            a = np.asarray(a, np.float64)
            if h.shape != x.shape:
                raise ValueError(f"backprop returned shape {h.shape} for {jax.tree_util.keystr(path)}; expected {x.shape}")
            errors = {
                "hand~autodiff": rel_error(h, a),
                "hand~fd": rel_error(h.reshape(-1)[idx], fd),
                "autodiff~fd": rel_error(a.reshape(-1)[idx], fd),
            }
            rows.append(LeafCheck(*_where(path), tuple(x.shape), errors, len(idx)))
    tolerances = {"hand~autodiff": AUTODIFF_TOL, "hand~fd": FD_TOL, "autodiff~fd": FD_TOL}
    return GradCheckReport(tuple(rows), tolerances)
