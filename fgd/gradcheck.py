"""Check a hand-derived gradient against jax.grad and finite differences.

Three gradients of a scalar loss J(theta) are computed in float64, whatever
the caller's precision (x64 need not be enabled):

    hand      the gradient under test: the user's grad(params, *data), a
              model's backprop, or a layer's hand backward pass
    autodiff  jax.grad(J)
    fd        Richardson-extrapolated central differences, entry by entry,
              with a step fitted to each entry (see fgd._fd)

and compared leaf by leaf (see fgd.gradreport for the verdicts, the floor
that keeps correct gradients at an optimum from failing, the kink test and
the hints). Three entry points:

    check_grad(loss, params, *data, grad=my_grad)   any pure loss, any pytree
    check_gradients(net, cost, params, X, Y, ...)   an fgd model, its backprop
    check_vjp(f, f_backward, *inputs)               a layer's backward pass:
        J(x) = <dout, f(x)> for a random cotangent dout, hand = f_backward(dout, *x)

Finite differences cover every entry of small leaves and a seeded random
sample of large ones (always including the entry where hand and autodiff
differ most); hand~autodiff covers every entry.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from fgd import _cache, _checks, _fd, _jax, losses
from fgd.backprop import backprop as fgd_backprop
from fgd.gradreport import (
    AUTODIFF_TOL,
    COMPARISONS,
    FD_TOL,
    GradCheckReport,
    LeafCheck,
    Worst,
    floor,
    hand_tolerance,
    hint,
    rel_error,
)
from fgd.nn import activations

__all__ = ["check_grad", "check_gradients", "check_vjp", "GradCheckReport", "LeafCheck",
           "rel_error", "COMPARISONS", "AUTODIFF_TOL", "FD_TOL"]

FD_MAX_ENTRIES = 2000  # per leaf; larger leaves get finite differences on a seeded sample
FD_MIN_ENTRIES = 16    # per leaf, however large the model
FD_WORK = 10_000_000   # entries per leaf x parameters: a 670k-parameter model gets 16 per leaf


def float64() -> contextlib.AbstractContextManager:
    """A context in which jax computes in float64 (`fgd.enable_x64(True)`)."""
    return _jax.enable_x64(True)


# --- trees --------------------------------------------------------------------
def _is_float(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and (np.dtype(dtype).kind == "f" or str(dtype) == "bfloat16")


def _float_leaves(tree: Any, name: str) -> list:
    """The (path, leaf) pairs of `tree`, all floating-point arrays (or floats)."""
    try:
        leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    except Exception as e:  # noqa: BLE001 -- a malformed custom node
        raise TypeError(f"{name} must be a pytree of arrays; got {type(tree).__name__}") from e
    if not leaves:
        raise ValueError(f"{name} must hold at least one array; got an empty pytree {tree!r}"[:200])
    for path, x in leaves:
        where = f"{name}{jax.tree_util.keystr(path)}"
        if isinstance(x, float) or _is_float(x):
            continue
        kind = getattr(x, "dtype", type(x).__name__)
        raise TypeError(f"{where} must be a floating-point array (gradients are taken of floats "
                        f"only; pass the others inside the data or a closure); got {kind}")
    return leaves


def _describe(x: Any) -> str:
    if isinstance(x, dict):
        return f"a {type(x).__name__} with keys {sorted(map(str, x))}"
    if isinstance(x, (list, tuple)):
        return f"a {type(x).__name__} of length {len(x)}"
    if x is None:
        return "None"
    shape = getattr(x, "shape", None)
    return f"an array of shape {tuple(shape)}" if shape is not None else type(x).__name__


def first_difference(expected: Any, got: Any, path: tuple = ()) -> Optional[tuple]:
    """(path, expected node, got node) where two pytrees first differ in structure, or None."""
    one = lambda t: jax.tree_util.tree_structure(t, is_leaf=lambda n: n is not t)  # noqa: E731
    if one(expected) != one(got):  # type: ignore[operator]  # PyTreeDef compares
        return path, expected, got
    kids_e = jax.tree_util.tree_flatten_with_path(expected, is_leaf=lambda n: n is not expected)[0]
    kids_g = jax.tree_util.tree_flatten_with_path(got, is_leaf=lambda n: n is not got)[0]
    if len(kids_e) == 1 and kids_e[0][0] == ():
        return None                                            # both leaves
    for (k, e), (_, g) in zip(kids_e, kids_g):
        found = first_difference(e, g, path + k)
        if found:
            return found
    return None


def _hand_leaves(hand: Any, params: Any, who: str, name: str = "params") -> list:
    """The leaves of `hand` as float64 numpy arrays, after checking it is a tree like params."""
    found = first_difference(params, hand)
    if found is None and jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(hand):  # type: ignore[operator]
        found = ((), params, hand)
    if found:
        path, e, g = found
        where = f"{name}{jax.tree_util.keystr(path)}" if path else name
        raise ValueError(f"{who} must return a tree like {name}; they first differ at {where}: "
                         f"{name} has {_describe(e)}, {who} returned {_describe(g)}")
    out = []
    for (path, p), h in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(hand)):
        shape = tuple(np.shape(h))
        if shape != tuple(np.shape(p)):
            t = " (the transpose: W where W^T belongs?)" if shape == tuple(np.shape(p))[::-1] else ""
            raise ValueError(f"{who} returned shape {shape} for {name}{jax.tree_util.keystr(path)}; "
                             f"expected {tuple(np.shape(p))}{t}")
        dtype = getattr(h, "dtype", np.float64)
        if np.dtype(dtype).kind not in "fiub" and str(dtype) != "bfloat16":
            raise TypeError(f"{who} returned dtype {dtype} for {name}{jax.tree_util.keystr(path)}; "
                            f"expected real numbers")
        out.append((np.asarray(h, np.float64), dtype))
    return out


def _layer_names(params: Any, paths: list) -> Optional[list]:
    """(name, layer, leaf) for fgd's list of layer dicts, else None."""
    if not isinstance(params, list) or not all(
            len(p) == 2 and isinstance(p[0], jax.tree_util.SequenceKey)
            and isinstance(p[1], jax.tree_util.DictKey) for p in paths):
        return None
    return [(f"layer {p[0].idx + 1}, leaf {p[1].key!r}", str(p[0].idx + 1), str(p[1].key)) for p in paths]


def _examples(data: Sequence) -> tuple:
    """Candidate numbers of examples m (first and last axes of the data), for the hints."""
    ms = set()
    for x in jax.tree_util.tree_leaves(data):
        if np.ndim(x) >= 1:
            ms.update({np.shape(x)[-1], np.shape(x)[0]})
    return tuple(sorted(ms))


def _to64(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: jnp.asarray(np.asarray(x, np.float64)) if
                                  (_is_float(x) or isinstance(x, float)) else x, tree)


# --- the core -----------------------------------------------------------------
def _fd_cap(n_params: int, fd_entries: Optional[int]) -> int:
    if fd_entries is not None:
        return fd_entries
    return min(FD_MAX_ENTRIES, max(FD_MIN_ENTRIES, FD_WORK // max(n_params, 1)))


#: jax.jit(jax.value_and_grad(loss)) per loss (equal `make_loss` results share one)
_VALUE_AND_GRAD = _cache.LRU("gradcheck_value_and_grad", 8)


def _value_and_grad(loss: Callable, p64: Any, d64: tuple) -> Optional[tuple]:
    """(J, jax.grad(J)) at p64 from one compiled program, or None when the
    loss cannot be compiled so (Python control flow on values, numpy calls,
    non-array data, a non-scalar result): the caller then evaluates eagerly,
    which also raises the loss's own errors as they are. One program costs one
    compilation, where an eager gradient compiles each operation on its own."""
    try:
        hash(loss)
        jitted = _VALUE_AND_GRAD.get(loss, lambda: jax.jit(jax.value_and_grad(loss)))
    except TypeError:                      # an unhashable callable: not remembered
        jitted = jax.jit(jax.value_and_grad(loss))
    try:
        J0, g = jitted(p64, *d64)
    except Exception:  # noqa: BLE001 -- whatever it was, the eager path reports it
        return None
    return J0, g


def _run(loss: Callable, p64: Any, d64: tuple, grad: Callable, *, who: str, names: Optional[list],
         ms: tuple, seed: int, fd_entries: Optional[int], title: str,
         pname: str = "params") -> GradCheckReport:
    """Everything in float64 (the caller holds the float64 context)."""
    compiled = _value_and_grad(loss, p64, d64)
    J0 = loss(p64, *d64) if compiled is None else compiled[0]
    if np.shape(J0) != ():
        raise ValueError(f"loss must return a scalar; got an array of shape {np.shape(J0)}")
    if not _is_float(jnp.asarray(J0)):
        raise TypeError(f"loss must return a real floating-point scalar; got dtype {jnp.asarray(J0).dtype}")
    J0 = float(J0)
    if not np.isfinite(J0):
        raise ValueError(f"loss must be finite at params; got {J0}")
    hand = _hand_leaves(grad(p64, *d64), p64, who, pname)
    auto_tree = jax.grad(loss)(p64, *d64) if compiled is None else compiled[1]
    auto = [np.asarray(a, np.float64) for a in jax.tree_util.tree_leaves(auto_tree)]
    paths_leaves = jax.tree_util.tree_flatten_with_path(p64)[0]
    xs = [np.asarray(x) for _, x in paths_leaves]
    if names is None:
        names = _layer_names(p64, [p for p, _ in paths_leaves]) or [
            (jax.tree_util.keystr(p) or pname, "", jax.tree_util.keystr(p) or pname) for p, _ in paths_leaves]

    # finite differences on a sample of every leaf, with the worst hand~autodiff entry in it
    flat, unravel = ravel_pytree(p64)
    sizes = [x.size for x in xs]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    cap = _fd_cap(int(offsets[-1]), fd_entries)
    rng = np.random.default_rng(seed)
    samples = []
    for x, (h, _), a in zip(xs, hand, auto):
        idx = np.arange(x.size) if x.size <= cap else rng.choice(x.size, cap, replace=False)
        worst = int(np.argmax(np.abs(np.nan_to_num(h - a, nan=np.inf)).ravel()))
        samples.append(np.unique(np.append(idx, worst)) if x.size > cap else idx)
    leaf_of = np.repeat(np.arange(len(xs)), sizes)
    rms = np.array([np.sqrt(np.mean(x.astype(np.float64) ** 2)) for x in xs])
    flat_np = np.asarray(flat)
    gidx = np.concatenate([s + o for s, o in zip(samples, offsets[:-1])])
    steps = _fd.steps(flat_np, leaf_of, rms)[gidx]
    diffs = _fd.differences(lambda th: loss(unravel(th), *d64), flat, J0, gidx, steps)

    rows, start = [], 0
    for i, (x, (h, hdtype), a, idx) in enumerate(zip(xs, hand, auto, samples)):
        part = _fd.Differences(*(f[start:start + len(idx)] for f in diffs))
        start += len(idx)
        scale = rms[i] if rms[i] > 0 else float(np.sqrt(np.mean(flat_np ** 2))) or 1.0
        rows.append(_compare(x, h, a, idx, part, J0, scale, names[i], ms, hdtype))
    return GradCheckReport(tuple(rows), {"hand~autodiff": AUTODIFF_TOL, "fd": FD_TOL}, title=title)


def _compare(x, h, a, idx, d: "_fd.Differences", J0, scale, name, ms, hdtype) -> LeafCheck:
    n = x.size
    smooth = ~d.kink
    kappa = float(np.mean(d.curvature[smooth])) if smooth.any() else 0.0
    fl = floor(J0, scale, kappa, n)
    errors, limits = {}, {}

    def verdict(comp, u, v, allowance, tol):
        # ||u - v|| / (||u|| + ||v|| + allowance / tol) <= tol  exactly when
        # ||u - v|| <= tol (||u|| + ||v||) + allowance
        errors[comp] = rel_error(u, v, allowance / tol)
        limits[comp] = tol

    verdict("hand~autodiff", h, a, fl, hand_tolerance(hdtype))
    S = idx[smooth]
    if S.size:
        fd, fl_S = d.fd[smooth], fl * np.sqrt(S.size / n)
        allowance = float(np.linalg.norm(d.error[smooth])) + fl_S
        verdict("hand~fd", h.ravel()[S], fd, allowance, FD_TOL)
        verdict("autodiff~fd", a.ravel()[S], fd, allowance, FD_TOL)
    else:
        for c in ("hand~fd", "autodiff~fd"):
            errors[c], limits[c] = float("nan"), float("nan")
    row = LeafCheck(name[0], name[1], name[2], tuple(x.shape), errors, limits, int(idx.size),
                    int(d.kink.sum()))
    failed = row.failed()
    if not failed:
        return row
    fd_at = dict(zip(idx.tolist(), np.where(d.kink, np.nan, d.fd).tolist()))
    if "hand~autodiff" in failed:
        j = int(np.argmax(np.abs(np.nan_to_num(h - a, nan=np.inf)).ravel()))
        why = hint(h, a, name[2], ms)
        note = ("some entries of this leaf are not differentiable here: hand and autodiff may pick "
                "different subgradients at a kink" if row.kinks else None)
        if hand_tolerance(hdtype) > AUTODIFF_TOL:
            note = f"the hand gradient came back in {np.dtype(hdtype)}: held to {hand_tolerance(hdtype):.0e}"
    else:
        u = (h if "hand~fd" in failed else a).ravel()[S]
        j = int(S[np.argmax(np.abs(u - d.fd[smooth]))])
        why = ("hand and autodiff agree, but finite differences of the loss do not: autodiff is not "
               "the derivative of this loss here (a stop_gradient, a custom_vjp, or a step such as "
               "round, argmax or a comparison)" if "autodiff~fd" in failed else
               "hand agrees with autodiff, not with fd, on the sampled entries")
        note = None
    worst = Worst(tuple(int(k) for k in np.unravel_index(j, x.shape)), float(h.ravel()[j]),
                  float(a.ravel()[j]), float(fd_at.get(j, np.nan)))
    return dataclasses.replace(row, worst=worst, hint=why, note=note)


def _check_seed(seed: Any, fd_entries: Any) -> tuple:
    return _checks.check_int(seed, "seed", 0), _checks.check_int(fd_entries, "fd_entries", 1, allow_none=True)


# --- any loss, any pytree -------------------------------------------------------
def check_grad(loss: Callable, params: Any, *data: Any, grad: Callable, seed: int = 0,
               fd_entries: Optional[int] = None) -> GradCheckReport:
    """Check a hand-derived gradient of any pure loss over any pytree of params.

    Args:
      loss: loss(params, *data) -> scalar, a function JAX can differentiate.
      params: any pytree of floating-point arrays (dicts, nested dicts, lists,
        tuples, NamedTuples; any float dtypes: all are checked in float64).
      *data: passed to loss and grad after params (floating arrays in float64).
      grad: the hand gradient, grad(params, *data) -> a tree like params
        (numpy or jax arrays).
      seed: picks the sampled fd entries of large leaves.
      fd_entries: fd entries per leaf (None: all up to FD_MAX_ENTRIES, fewer
        per leaf for large models, at least FD_MIN_ENTRIES).

    Returns:
      A GradCheckReport: `.ok`, `.max_rel_error`, `.first_failure` (the
      pytree path, "['encoder']['W']", or "layer 2, leaf 'W'" for a list of
      layer dicts), `.rows`, and the table in `str(report)`.

    Raises:
      TypeError: loss or grad not callable, a non-float leaf in params.
      ValueError: grad returns a tree unlike params (the message names the
        first path that differs) or a leaf of another shape; a non-scalar or
        non-finite loss.
    """
    if not callable(loss):
        raise TypeError(f"loss must be a function loss(params, *data) -> scalar; got {type(loss).__name__}")
    if not callable(grad):
        raise TypeError(f"grad must be a function grad(params, *data) -> a tree like params; "
                        f"got {type(grad).__name__}")
    _float_leaves(params, "params")
    seed, fd_entries = _check_seed(seed, fd_entries)
    with float64():
        return _run(loss, _to64(params), _to64(data), grad, who="grad", names=None,
                    ms=_examples(data), seed=seed, fd_entries=fd_entries, title="gradient")


# --- a layer's backward pass ----------------------------------------------------
def check_vjp(f: Callable, f_backward: Callable, *inputs: Any, seed: int = 0,
              fd_entries: Optional[int] = None, _ms: Optional[tuple] = None) -> GradCheckReport:
    """Check a layer's hand backward pass against jax.vjp and finite differences.

    With a random cotangent dout (standard normal, of f's output shape, from
    `seed`), the hand cotangents f_backward(dout, *inputs) must equal the
    gradient of J(inputs) = <dout, f(*inputs)>: jax.vjp(f, *inputs)[1](dout)
    and finite differences of J. One row per input.

    Args:
      f: the forward pass f(*inputs) -> array (bind non-array arguments such
        as strides with functools.partial or a lambda).
      f_backward: f_backward(dout, *inputs) -> one cotangent per input, a
        tuple (a bare array when there is one input); the shape of a course's
        `affine_backward(dout, cache)` with the cache unpacked.
      *inputs: floating-point arrays (checked in float64).

    Returns:
      A GradCheckReport whose rows are named "input 0 (x)", "input 1 (W)", ...
    """
    if not callable(f):
        raise TypeError(f"f must be the forward function f(*inputs) -> array; got {type(f).__name__}")
    if not callable(f_backward):
        raise TypeError(f"f_backward must be a function f_backward(dout, *inputs); "
                        f"got {type(f_backward).__name__}")
    if not inputs:
        raise ValueError("check_vjp needs at least one input array after f and f_backward")
    for i, x in enumerate(inputs):
        if not (_is_float(x) or isinstance(x, float)):
            raise TypeError(f"inputs[{i}] must be a floating-point array (bind other arguments of f "
                            f"with functools.partial or a lambda); got {getattr(x, 'dtype', type(x).__name__)}")
    seed, fd_entries = _check_seed(seed, fd_entries)
    try:
        argnames = [p.name for p in inspect.signature(f).parameters.values()
                    if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        argnames = []
    names = [(f"input {i}" + (f" ({argnames[i]})" if i < len(argnames) else ""), "",
              f"input {i}" + (f" ({argnames[i]})" if i < len(argnames) else "")) for i in range(len(inputs))]
    with float64():
        xs = tuple(_to64(list(inputs)))
        out = jax.eval_shape(f, *xs)
        if not hasattr(out, "shape") or not _is_float(out):
            raise TypeError(f"f must return one floating-point array; got {out!r}"[:200])
        dout = jnp.asarray(np.random.default_rng(seed).standard_normal(out.shape))

        def J(args):
            return jnp.sum(dout * f(*args))

        def hand(args):
            got = f_backward(dout, *args)
            if len(args) == 1 and not isinstance(got, (tuple, list)):
                got = (got,)
            if not isinstance(got, (tuple, list)) or len(got) != len(args):
                n = len(got) if isinstance(got, (tuple, list)) else "a bare array"
                raise ValueError(f"f_backward must return one cotangent per input ({len(args)}, "
                                 f"as a tuple); got {n}")
            return tuple(got)

        ms = _examples(inputs) if _ms is None else _ms
        return _run(J, xs, (), hand, who="f_backward", names=names, ms=ms, seed=seed,
                    fd_entries=fd_entries, title="backward pass", pname="inputs")


# --- the model form ---------------------------------------------------------------
def _user_functions(net: Any, cost: Any, p64: Any, X64, Y64, seed: int) -> list:
    ms = (int(Y64.shape[-1]),)
    """Rows checking the user's own activations (their vjp, i.e. g') and cost
    derivative at the values the model takes at params."""
    layer_acts = ([(l, net.activation(l)) for l in range(1, net.n_layers + 1)] if hasattr(net, "n_layers")
                  else [(i + 1, net.activation(i)) for i in range(len(net.layers))])
    rows: list = []
    if isinstance(cost, losses.Cost) or any(act is not None and not activations.is_builtin(act)
                                            for _, act in layer_acts):
        cache = net.forward(p64, X64)       # only then: fgd's own functions need no forward pass here
    else:
        return rows
    seen: dict = {}
    for l, act in layer_acts:
        if act is not None and not activations.is_builtin(act):
            seen.setdefault(act, []).append(cache.Z[l - 1])
    for act, Zs in seen.items():
        for k, Z in enumerate(Zs):
            rep = check_vjp(lambda z, g=act.fn: g(z), lambda dA, z, a=act: a.vjp(z, a.fn(z), dA),
                            Z, seed=seed, _ms=ms)
            where = f"activation {act.name!r}" + (f" (use {k + 1})" if len(Zs) > 1 else "")
            rows.append(dataclasses.replace(rep.rows[0], name=f"{where}: g'", layer="", leaf=f"{where}: g'"))
    if isinstance(cost, losses.Cost):
        Z, A, g = cache.Z[-1], cache.A[-1], net.output_activation
        if cost.dA is not None:
            rep = _run(lambda A_: cost.fn(A_, Y64), A, (), lambda A_: cost.dA(A_, Y64), who="dJ_dA",
                       names=None, ms=ms, seed=seed, fd_entries=None, title="cost derivative", pname="A")
            rows.append(dataclasses.replace(rep.rows[0], name=f"cost {cost.name!r}: dJ/dA", layer="",
                                            leaf=f"cost {cost.name!r}: dJ/dA"))
        if cost.dZ is not None:
            rep = _run(lambda Z_: cost.fn(g.fn(Z_), Y64), Z, (), lambda Z_: cost.dZ(Z_, g.fn(Z_), Y64),
                       who="dJ_dZ", names=None, ms=ms, seed=seed, fd_entries=None,
                       title="cost derivative", pname="Z")
            rows.append(dataclasses.replace(rep.rows[0], name=f"cost {cost.name!r}: dJ/dZ", layer="",
                                            leaf=f"cost {cost.name!r}: dJ/dZ"))
    return rows


def check_gradients(
    net, cost, params, X, Y, *, l2: float = 0.0, l1: float = 0.0,
    backprop: Callable = fgd_backprop, seed: int = 0, fd_entries: Optional[int] = None,
) -> GradCheckReport:
    """Check a model's hand-derived gradient: `check_grad` on make_loss(net, cost, l2, l1).

    Args:
      net, cost, params, X, Y, l2, l1: as for `fgd.backprop` (cost may be a
        user's `fgd.Cost`, net may hold user `fgd.Activation`s).
      backprop: the hand-derived gradient under test, with fgd.backprop's
        signature `backprop(net, cost, params, X, Y, l2=..., l1=...)`.
      seed, fd_entries: as for `check_grad`.

    Returns:
      A GradCheckReport, rows named "layer 2, leaf 'W'" for fgd's list of
      layers. The user's own activations (their g') and cost derivative are
      checked too, as rows of `report.checks`, named "activation 'swish': g'"
      and "cost 'huber': dJ/dA"; a wrong one is the first failure.
    """
    if not (hasattr(net, "forward") and hasattr(net, "init") and hasattr(net, "check_input")):
        extra = (" (to check a loss function of your own, use fgd.check_grad(loss, params, *data, "
                 "grad=my_grad))" if callable(net) else "")
        raise TypeError(f"net must be a model such as fgd.MLP or fgd.CNN; got {type(net).__name__}{extra}")
    if not callable(backprop):
        raise TypeError(f"backprop must be a function like fgd.backprop; got {type(backprop).__name__}")
    losses.check_cost(cost)
    _checks.check_params(net, params)
    X, Y = _checks.check_xy(net, X, Y, finite=True)
    losses.check_targets(cost, Y)
    l2, l1 = _checks.check_nonneg(l2, "l2"), _checks.check_nonneg(l1, "l1")
    seed, fd_entries = _check_seed(seed, fd_entries)
    J = losses.make_loss(net, cost, l2, l1)

    def hand(p, X_, Y_):
        return backprop(net, cost, p, X_, Y_, l2=l2, l1=l1)

    with float64():
        p64, X64, Y64 = _to64(params), _to64(np.asarray(X)), _to64(np.asarray(Y))
        report = _run(J, p64, (X64, Y64), hand, who="backprop", names=None, ms=(X.shape[-1],),
                      seed=seed, fd_entries=fd_entries, title="gradient")
        checks = _user_functions(net, cost, p64, X64, Y64, seed)
    return dataclasses.replace(report, checks=tuple(checks))
