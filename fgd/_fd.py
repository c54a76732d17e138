"""Finite differences of a scalar loss, entry by entry, with an error estimate
and a kink test for each entry (private; `fgd.gradcheck` uses it).

For entry k of the flattened parameters theta, with step h = h_k:

    D(h)   = (J(theta + h e_k) - J(theta - h e_k)) / 2h          error O(h^2)
    R      = (4 D(h) - D(2h)) / 3                                 Richardson, error O(h^4)
    error  <= |D(h) - D(2h)|  +  1.5 rho / h                      truncation + rounding
    rho    = ROUND_C eps |J|                                      rounding of one J

The step follows the dtype and the parameter's scale,
h_k = H0 max(|theta_k|, s) with s the RMS of the entry's leaf (of all params
when the leaf is zero, 1 when all are), so a loss of 1e9 or parameters of
1e-4 get a step that fits them.

Kinks. With second differences d(h) = J(+h) + J(-h) - 2 J(theta), a smooth
J gives d(2h) = 4 d(h) (1 + O(h^2)); a kink (|x|, relu, a max) inside the
stencil gives d ~ jump x h, so d(2h) ~ 2 d(h). An entry with
|d(2h) - 4 d(h)| > KINK_REL (|d(2h)| + 4 |d(h)|) (and above 16 rho, the
rounding of that combination) is retried with the step h x RETRY; if the kink
is still inside, the loss is not differentiable at this point along that
entry, and the entry is left out of the finite-difference verdict.

|d(h)| / h^2 estimates the curvature along the entry; `fgd.gradcheck`
scales its absolute floor with it.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EPS = float(np.finfo(np.float64).eps)
H0 = 5e-4            # relative step
RETRY = 1e-3         # step factor of the second try at a kink
ROUND_C = 1e4        # one loss evaluation is taken to carry ROUND_C eps |J| of rounding
KINK_REL = 0.05
CHUNK_ELEMS = 2**22  # (stencil points x parameters) per vmapped call: bounds the memory
MAX_CHUNK = 256      # entries per vmapped call
SEQUENTIAL_BELOW = 8  # fewer entries than this per vmapped call: evaluate in a loop instead
SEQUENTIAL_CHUNK = 32  # entries per call then

#: the errors a loss that JAX cannot trace raises; finite differences then run eagerly
_TRACE_ERRORS = tuple(getattr(jax.errors, n) for n in (
    "ConcretizationTypeError", "TracerBoolConversionError", "TracerArrayConversionError",
    "TracerIntegerConversionError") if hasattr(jax.errors, n))


class Differences(NamedTuple):
    """Per sampled entry (flat index into the raveled params)."""

    fd: np.ndarray         # Richardson estimate of dJ/dtheta_k
    error: np.ndarray      # its error bound
    kink: np.ndarray       # bool: the stencil crosses a non-differentiable point
    curvature: np.ndarray  # |d(h)| / h^2
    h: np.ndarray          # the step used


def steps(flat: np.ndarray, leaf_of: np.ndarray, leaf_rms: np.ndarray) -> np.ndarray:
    """h_k = H0 max(|theta_k|, s_leaf) for every entry (see the module docstring)."""
    overall = float(np.sqrt(np.mean(flat * flat))) or 1.0
    s = np.where(leaf_rms > 0, leaf_rms, overall)
    return H0 * np.maximum(np.abs(flat), s[leaf_of])


def _evaluator(J_flat: Callable, flat: jax.Array, n_params: int) -> Callable:
    """(idx (c,), h (c,)) -> J at theta + [h, -h, 2h, -2h] e_k, shape (4, c)."""
    chunk = int(min(MAX_CHUNK, CHUNK_ELEMS // (4 * n_params)))
    # small models: the 4c evaluations batched by vmap; large ones: one after the other
    # inside one compiled loop (a batch of copies of large parameters is slower than a loop)
    sequential = chunk < SEQUENTIAL_BELOW
    chunk = SEQUENTIAL_CHUNK if sequential else chunk
    offsets = jnp.asarray([1.0, -1.0, 2.0, -2.0])

    @jax.jit
    def batch(theta, idx, h):
        k = jnp.tile(idx, 4)
        dh = (offsets[:, None] * h[None, :]).reshape(-1)
        at = lambda kd: J_flat(theta.at[kd[0]].add(kd[1]))   # noqa: E731
        out = jax.lax.map(at, (k, dh)) if sequential else jax.vmap(lambda kk, d: at((kk, d)))(k, dh)
        return out.reshape(4, -1)

    def eager(idx, h):
        out = np.empty((4, len(idx)))
        for j, (k, hk) in enumerate(zip(idx, h)):
            for r, o in enumerate((1.0, -1.0, 2.0, -2.0)):
                out[r, j] = float(J_flat(flat.at[int(k)].add(o * hk)))
        return out

    state = {"eager": False}

    def run(idx: np.ndarray, h: np.ndarray) -> np.ndarray:
        if state["eager"]:
            return eager(idx, h)
        n = len(idx)
        pad = -(-n // chunk) * chunk
        idx_p = np.resize(idx, pad).reshape(-1, chunk)
        h_p = np.resize(h, pad).reshape(-1, chunk)
        try:
            parts = [np.asarray(batch(flat, jnp.asarray(i), jnp.asarray(hh))) for i, hh in zip(idx_p, h_p)]
        except _TRACE_ERRORS:
            state["eager"] = True      # Python control flow on values: no jit, no vmap
            return eager(idx, h)
        return np.concatenate(parts, axis=1)[:, :n]

    return run


def _stencil(values: np.ndarray, J0: float, h: np.ndarray):
    Jp, Jm, J2p, J2m = values
    D1 = (Jp - Jm) / (2 * h)
    D2 = (J2p - J2m) / (4 * h)
    rho = ROUND_C * EPS * np.maximum(abs(J0), np.max(np.abs(values), axis=0))
    d1, d2 = Jp + Jm - 2 * J0, J2p + J2m - 2 * J0
    kink = np.abs(d2 - 4 * d1) > np.maximum(KINK_REL * (np.abs(d2) + 4 * np.abs(d1)), 16 * rho)
    kink |= ~np.isfinite(values).all(axis=0)
    fd = (4 * D1 - D2) / 3
    error = np.abs(D1 - D2) + 1.5 * rho / h
    return Differences(fd, error, kink, np.abs(d1) / h**2, h)


def differences(J_flat: Callable, flat: jax.Array, J0: float, idx: np.ndarray,
                h: np.ndarray) -> Differences:
    """Richardson central differences of J_flat at `flat` on the entries `idx`,
    with steps `h`, each kinked stencil retried once with h x RETRY."""
    run = _evaluator(J_flat, flat, flat.size)
    out = _stencil(run(idx, h), J0, h)
    bad = np.flatnonzero(out.kink)
    if bad.size:
        again = _stencil(run(idx[bad], h[bad] * RETRY), J0, h[bad] * RETRY)
        fixed = ~again.kink
        for field, new in zip(out, again):
            field[bad[fixed]] = new[fixed]
    return out
