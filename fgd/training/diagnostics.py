"""Training diagnostics computed on the device, inside fit's compiled chunk.

Opt-in per name in `fit(..., history=...)`; each is measured at the epoch's
params (full batch: the params the update starts from, with the gradient and
update of that step; mini-batch: the params the epoch ends with, the
gradient of the whole training set there, and the epoch's net change as the
update), every epoch or every k-th with `diagnostics_every=k` (NaN rows
between). No host sync: the figures are history rows like the loss.

Columns ("groups"). For an fgd model (params a list of per-layer dicts) a
group is a layer, labelled "layer l" (1-based; layers without parameters,
such as pooling, are left out); for any other params pytree a group is a
leaf, labelled by its path (`jax.tree_util.keystr`). `columns` gives the
labels; `FitResult.history_columns` holds them per name.

    layer_grad_norm     ||g_l||, the gradient's norm over group l           (groups)
    update_ratio        ||u_l|| / ||p_l||, update over params, per group    (groups)
                        (inf where p_l = 0, as after a zero start)
    unit_spread         sqrt(mean_i ||r_i - r_1||^2) over the units i of a     (hidden groups)
                        layer, r_i the unit's incoming weights and bias (row i
                        of every leaf, axis 0 = units), against the first unit
                        (not the mean, whose rounding is not exact); exactly 0 when
                        all units are equal, as after a zero start
    dead_fraction       the share of a hidden layer's units whose slope g'(z)  (hidden layers)
                        is exactly 0 for every example (a ReLU with z <= 0 on
                        all of X: no gradient reaches its weights)
    saturated_fraction  the share of (unit, example) pairs of a sigmoid or      (hidden layers)
                        tanh layer with |g'(z)| < SATURATION_FLOOR; NaN for other
                        activations
    sharpness           lambda_max of the loss Hessian on the training set     (a scalar)
                        (`fgd.curvature`, SHARPNESS_STEPS Lanczos steps)

dead_fraction and saturated_fraction read the pre-activations Z from the
model protocol (`net.forward(params, X).Z`, `net.activation`), so they need
an `fgd.Loss`; for other losses they raise ValueError. "Hidden" groups are
all but the last layer for an fgd model and every group otherwise.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from fgd import curvature
from fgd.losses import Loss

NAMES = ("layer_grad_norm", "update_ratio", "unit_spread", "dead_fraction",
         "saturated_fraction", "sharpness")
#: |g'(z)| below this is saturated (sigmoid: |z| > 4.6; tanh: |z| > 2.65).
SATURATION_FLOOR = 0.01
SATURATING = ("sigmoid", "tanh")
NEEDS_MODEL = ("dead_fraction", "saturated_fraction")


def check_names(names: tuple, loss: Any) -> None:
    """dead/saturated fractions need an fgd Loss (the model's pre-activations)."""
    bad = [n for n in names if n in NEEDS_MODEL]
    if bad and not isinstance(loss, Loss):
        raise ValueError(f"history {bad} needs an fgd Loss (fgd.make_loss): they read the "
                         f"model's pre-activations Z; got a loss of type {type(loss).__name__}")


def _layered(params: Any) -> bool:
    return isinstance(params, (list, tuple)) and all(isinstance(p, dict) for p in params)


def groups(params: Any) -> list:
    """[(label, subtree)]: layers of an fgd params list, else leaves by path."""
    if _layered(params):
        return [(f"layer {i + 1}", p) for i, p in enumerate(params) if jax.tree.leaves(p)]
    return [(jax.tree_util.keystr(path), leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]]


def _spread_groups(loss: Any, params: Any) -> list:
    found = groups(params)
    return found[:-1] if isinstance(loss, Loss) and _layered(params) else found


def _activation(net: Any, i: int):
    """g after Z[i] (0-based): CNNs index layers from 0, MLPs from 1."""
    return net.activation(i) if hasattr(net, "layers") else net.activation(i + 1)


def _hidden_layers(net: Any, params: Any) -> list:
    """[(label, index into Z, Activation)] of the hidden elementwise layers."""
    out = []
    for i in range(len(params) - 1):
        g = _activation(net, i)
        if g is not None and g.deriv is not None and jax.tree.leaves(params[i]):
            out.append((f"layer {i + 1}", i, g))
    return out


def columns(loss: Any, params: Any, name: str) -> tuple:
    """The column labels of history entry `name` (() for the scalar "sharpness")."""
    if name in ("layer_grad_norm", "update_ratio"):
        return tuple(label for label, _ in groups(params))
    if name == "unit_spread":
        return tuple(label for label, _ in _spread_groups(loss, params))
    if name in NEEDS_MODEL:
        return tuple(label for label, _, _ in _hidden_layers(loss.net, params))
    return ()


def _norm(tree: Any) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def unit_spread(tree: Any) -> jax.Array:
    """RMS distance of the units' rows (axis 0 of every leaf) to the first
    unit's row: exactly 0 when every unit is equal, in any precision."""
    leaves = [x for x in jax.tree.leaves(tree) if jnp.ndim(x) >= 1]
    if not leaves:
        return jnp.zeros(())
    rows = jnp.concatenate([x.reshape(x.shape[0], -1) for x in leaves], axis=1)
    centred = rows - rows[:1]
    return jnp.sqrt(jnp.mean(jnp.sum(centred * centred, axis=1)))


def unit_fractions(net: Any, params: Any, X: jax.Array) -> tuple:
    """(dead, saturated) fractions per hidden layer, each (layers,)."""
    Z = net.forward(params, X).Z
    dead, sat = [], []
    for _, i, g in _hidden_layers(net, params):
        slope = g.deriv(Z[i])                                   # (units..., m)
        dead.append(jnp.mean(jnp.all(slope == 0, axis=-1)))
        if g.name in SATURATING:
            sat.append(jnp.mean(jnp.abs(slope) < SATURATION_FLOOR))
        else:
            sat.append(jnp.full((), jnp.nan))
    if not dead:
        return jnp.zeros((0,)), jnp.zeros((0,))
    return jnp.stack(dead), jnp.stack(sat)


def compute(names: tuple, loss: Callable, params: Any, grads: Any, update: Any,
            X: jax.Array, Y: jax.Array) -> dict:
    """name -> value of every diagnostic in `names`, at `params` (traceable);
    `grads` and `update` are thunks, called only when a name needs them."""
    dtype = jax.tree.leaves(params)[0].dtype
    out = {}
    if "layer_grad_norm" in names:
        out["layer_grad_norm"] = jnp.stack([_norm(g) for _, g in groups(grads())])
    if "update_ratio" in names:
        out["update_ratio"] = jnp.stack([_norm(u) / _norm(p) for (_, u), (_, p)
                                         in zip(groups(update()), groups(params))])
    if "unit_spread" in names:
        out["unit_spread"] = jnp.stack([unit_spread(t) for _, t in _spread_groups(loss, params)])
    if "dead_fraction" in names or "saturated_fraction" in names:
        dead, sat = unit_fractions(loss.net, params, X)  # type: ignore[attr-defined]
        out.update({"dead_fraction": dead, "saturated_fraction": sat})
    if "sharpness" in names:
        out["sharpness"] = curvature.sharpness(loss, params, X, Y)
    return {n: out[n].astype(dtype) for n in names}


def measure(spec: Any, loss: Callable, params: Any, grads: Callable, update: Callable,
            X: jax.Array, Y: jax.Array, epoch: jax.Array) -> dict:
    """The diagnostics of `spec.history` for one epoch; with
    `spec.diagnostics_every = k > 1` NaN rows on epochs not divisible by k.
    `grads` and `update` (new params - params) are thunks, so the skipped
    epochs never compute them."""
    names = tuple(n for n in spec.history if n in NAMES)
    if not names:
        return {}
    run = lambda: compute(names, loss, params, grads, update, X, Y)
    k = spec.diagnostics_every
    if k == 1:
        return run()
    shapes = jax.eval_shape(run)
    skip = lambda: {n: jnp.full(s.shape, jnp.nan, s.dtype) for n, s in shapes.items()}
    return jax.lax.cond(epoch % k == 0, run, skip)
