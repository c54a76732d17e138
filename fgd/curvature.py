"""Curvature: Hessian eigenvalues by Lanczos on Hessian-vector products.

The Hessian H of loss(params, X, Y) with respect to params is never formed.
A Hessian-vector product is one forward-over-reverse pass:

    Hv = d/dt grad(loss)(p + t v) |_{t=0}   = jax.jvp(jax.grad(loss), (p,), (v,))[1]

and m steps of Lanczos (with full reorthogonalization) build an orthonormal
basis V of the Krylov space span{v, Hv, ..., H^(m-1) v} and the tridiagonal
T = V^T H V, whose extreme eigenvalues (Ritz values) converge to those of H
first. With m = n (the number of parameters) they are H's, up to rounding.

Why it matters (the stability rule). Full-batch gradient descent with rate
eta on a quadratic J(p) = 1/2 p^T H p makes p <- (I - eta H) p; along the
eigenvector of lambda_max the error is multiplied by (1 - eta lambda_max) per
step, so the run diverges exactly when |1 - eta lambda_max| > 1, i.e. when
eta * lambda_max > 2. `sharpness` (lambda_max) is what fit records as the
history entry "sharpness".
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fgd import _cache, _checks

#: Lanczos steps fit's "sharpness" history entry takes per measurement.
SHARPNESS_STEPS = 20


def hvp_fn(loss: Callable, params: Any, *data) -> tuple:
    """(v_flat -> (H v)_flat, p_flat): the Hessian-vector product on the
    parameters raveled into one vector (`jax.flatten_util.ravel_pytree`)."""
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda p: loss(unravel(p), *data))

    def hvp(v):
        return jax.jvp(grad, (flat,), (v.astype(flat.dtype),))[1]

    return hvp, flat


def lanczos(hvp: Callable, n: int, steps: int, key: Any, dtype) -> jax.Array:
    """The Ritz values (ascending, (steps,)) of `steps` Lanczos steps on the
    symmetric n x n operator `hvp`, traceable (jit, inside loops).

    Full reorthogonalization (twice) against every basis vector so far keeps
    V orthonormal in floating point. When the Krylov space closes (beta ~ 0:
    an invariant subspace), the next vector is a fresh random one made
    orthogonal to V, and T gets a zero off-diagonal there, so its
    eigenvalues stay eigenvalues of H.
    """
    v0 = jax.random.normal(key, (n,), dtype)
    v0 = v0 / jnp.linalg.norm(v0)
    V = jnp.zeros((steps + 1, n), dtype).at[0].set(v0)
    alphas = jnp.zeros((steps,), dtype)
    betas = jnp.zeros((steps,), dtype)
    eps = jnp.finfo(dtype).eps

    def orth(w, V, j):
        mask = (jnp.arange(steps + 1) <= j).astype(dtype)[:, None]
        for _ in range(2):
            w = w - (mask * V).T @ ((mask * V) @ w)
        return w

    def body(j, state):
        V, alphas, betas, scale = state
        w = hvp(V[j])
        alpha = V[j] @ w
        w = orth(w, V, j)
        beta = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(alpha) + beta)
        closed = beta <= 1e3 * eps * scale
        fresh = orth(jax.random.normal(jax.random.fold_in(key, j + 1), (n,), dtype), V, j)
        nxt = jnp.where(closed, fresh / jnp.linalg.norm(fresh), w / jnp.where(closed, 1, beta))
        return (V.at[j + 1].set(nxt), alphas.at[j].set(alpha),
                betas.at[j].set(jnp.where(closed, 0, beta)), scale)

    _, alphas, betas, _ = jax.lax.fori_loop(0, steps, body, (V, alphas, betas, jnp.zeros((), dtype)))
    T = jnp.diag(alphas) + jnp.diag(betas[:-1], 1) + jnp.diag(betas[:-1], -1)
    return jnp.linalg.eigvalsh(T)


def sharpness(loss: Callable, params: Any, *data, steps: int = SHARPNESS_STEPS,
              key: Any = None) -> jax.Array:
    """lambda_max of the Hessian, traceable: the largest Ritz value of
    min(steps, n) Lanczos steps (a lower bound that converges from below)."""
    hvp, flat = hvp_fn(loss, params, *data)
    key = jax.random.key(0) if key is None else key
    return lanczos(hvp, flat.size, min(steps, flat.size), key, flat.dtype)[-1]


def hessian_eigs(loss: Callable, params: Any, *data, k: int = 1, which: str = "top",
                 steps: Any = None, key: Any = None) -> np.ndarray:
    """The top-k (or bottom-k) eigenvalues of the Hessian of `loss` at `params`.

    Lanczos on Hessian-vector products (module docstring), any params pytree,
    never forming the Hessian.

    Args:
      loss: `loss(params, *data) -> scalar`, e.g. an `fgd.Loss` with data X, Y.
      params: a pytree of float arrays.
      *data: the loss's other arguments (X, Y).
      k: how many eigenvalues, an integer in [1, n] (n: number of parameters).
      which: "top" (largest first, descending), "bottom" (smallest first,
        ascending) or "both" (a pair (top descending, bottom ascending)).
      steps: Lanczos steps; None: min(n, max(4 k, 40)). With steps = n the
        values are exact up to rounding; fewer give the extreme ones first.
      key: a PRNG key for the start vector (default `jax.random.key(0)`).

    Returns:
      A numpy array of k eigenvalues (or a pair of them for "both").
    """
    _checks.check_loss(loss)
    flat, _ = ravel_pytree(params)
    n = int(flat.size)
    if n == 0:
        raise ValueError("params must hold at least one parameter; got an empty pytree")
    k = _checks.check_int(k, "k", 1, n)
    if which not in ("top", "bottom", "both"):
        raise ValueError(f"which must be 'top', 'bottom' or 'both'; got {which!r}")
    steps = min(n, max(4 * k, 40)) if steps is None else _checks.check_int(steps, "steps", k, n)
    if key is None:
        key = jax.random.key(0)
    _checks.check_key(key)
    ritz = np.asarray(_ritz(loss, steps)(params, data, key))
    top, bottom = ritz[::-1][:k], ritz[:k]
    return {"top": top, "bottom": bottom, "both": (top, bottom)}[which]  # type: ignore[return-value]


#: (loss, steps) -> the jitted Lanczos run, for hashable losses (fgd.Loss)
_RITZ = _cache.LRU("hessian_eigs", 16)


def _ritz(loss: Callable, steps: int) -> Callable:
    try:
        hash(loss)
    except TypeError:
        return _make_ritz(loss, steps)
    return _RITZ.get((loss, steps), lambda: _make_ritz(loss, steps))


def _make_ritz(loss: Callable, steps: int) -> Callable:
    def run(params, data, key):
        hvp, flat = hvp_fn(loss, params, *data)
        return lanczos(hvp, flat.size, steps, key, flat.dtype)

    return jax.jit(run)
