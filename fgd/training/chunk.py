"""The device side of training: one compiled chunk of epochs, and its stopping rules.

A *chunk* of epochs is one compiled call: a
`lax.while_loop` over epochs whose condition checks the stopping rules on
the device; in mini-batch mode each epoch is a `lax.scan` over its batches.
`Spec` holds everything static about a chunk (it is the `jax.jit` cache key),
`Knobs` the traced scalars that never recompile (epoch range, goal,
min_grad, patience), `Carry` what an iteration carries (params, optimizer
state, counters, the stop code). The host side, which runs chunk after
chunk, is `fgd.training.driver`.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _cache, _compile, metrics, parallel
from fgd._types import Array, OptState, Params, PRNGKey
from fgd.optim import tree
from fgd.optim.base import Identity, Structure, is_structural
from fgd.optim.optimizers import current_lr
from fgd.training import diagnostics
from fgd.training.step import train_step

#: Epochs one compiled chunk can record: full batch, mini-batch.
CAPACITY_FULL, CAPACITY_MINI = 16384, 1024
#: every name `history=` takes: the figures of the step, the metrics on the
#: training and validation data (`fgd.metrics.HISTORY`), and the on-device
#: diagnostics (`fgd.training.diagnostics.NAMES`), opt-in by name
HISTORY_NAMES: tuple[str, ...] = (("loss", "val_loss", "grad_norm", "lr")
                                  + tuple(metrics.HISTORY) + tuple(diagnostics.NAMES))


# --- what a compiled chunk of epochs is made of ---------------------------------
def static_optimizer(opt) -> tuple:
    """(the optimizer as a static argument, its traced numbers): fgd's by
    structure with `opt.hparams` as jax arrays (Python floats stay weakly
    typed); any other object by identity, with no numbers."""
    if is_structural(opt):
        return Structure(opt), jax.tree.map(jnp.asarray, opt.hparams)
    return Identity(opt), None


class Spec(NamedTuple):
    """Everything static about a compiled chunk; the jit cache key."""

    loss: Any                  # a hashable loss (Loss by value) or Identity
    optimizer: Any             # Structure or Identity; with `factory` Identity(function hparams -> optimizer)
    factory: bool
    batch_size: Optional[int]  # None: full batch
    n_batches: int             # updates per epoch
    capacity: int              # history rows per chunk
    history: tuple             # names recorded, from HISTORY_NAMES
    min_grad: bool
    patience: bool
    skip: bool = False         # nonfinite="skip": epoch loss over finite batches
    diverge: bool = False      # the divergence guard is on
    batched: bool = False      # a last axis of runs on every carry leaf (fgd.sweep)
    mesh: Any = None           # a Mesh: batches split over its "data" axis (fgd.parallel)
    tricks: _compile.Tricks = _compile.NONE   # the compile tricks this chunk uses
    diagnostics_every: int = 1  # diagnostics (fgd.training.diagnostics) every k-th epoch
    columns: bool = False      # mini-batch: gather batch columns of X as given (no examples-first copy)

    def build_optimizer(self, hparams):
        return self.optimizer.obj(hparams) if self.factory else self.optimizer.build(hparams)

    def loss_fn(self):
        return self.loss.obj if isinstance(self.loss, Identity) else self.loss


class Knobs(NamedTuple):
    """Traced scalars of a chunk: changing them never recompiles."""

    start: Array     # () int32: the epoch the chunk's history row 0 belongs to
    end: Array       # () int32: run until this many epochs are done
    goal: Array      # () float: stop when the loss is <= goal
    min_grad: Array  # () float: stop when the gradient norm is <= min_grad
    patience: Array  # () int32: stop after this many epochs without improvement
    diverge: Any = None  # () float: stop once loss > diverge * lowest loss so far


class Data(NamedTuple):
    """Training data in the layout the mode reads: full batch (..., m);
    mini-batch examples first (m, ...), so a batch is a contiguous row
    gather, or (..., m) as given with `Spec.columns` (strided gathers)."""

    X: Array
    Y: Array
    Xv: Optional[Array]
    Yv: Optional[Array]
    key: PRNGKey


class Carry(NamedTuple):
    """What a while-loop iteration carries, and what the host keeps between chunks."""

    epoch: Array      # () int32: epochs run (= history rows)
    updates: Array    # () int32: optimizer updates applied
    stop: Array       # () int32: 0 while running, else the STOP_RULES code
    params: Params    # the params to go on from (or to return once stopped)
    opt_state: OptState
    best: Any         # patience: (params, best val loss, its epoch)
    low: Any = None   # diverge: () float, the lowest finite loss of the epochs run
    bad_batch: Any = None  # () int32: first non-finite batch loss of the last epoch (0 if none)


class Metrics(NamedTuple):
    """One epoch's figures, from which the stopping rules decide."""

    epoch: Array
    loss: Array
    grad_norm: Optional[Array]
    val_loss: Optional[Array]
    best_epoch: Optional[Array]
    low: Optional[Array] = None   # the lowest loss before this epoch (diverge)


# --- stopping rules: (code, reason, enabled(spec), hit(metrics, knobs)) ---------
def _nonfinite(m: Metrics, k: Knobs) -> Array:
    return ~jnp.isfinite(m.loss)


def _goal(m: Metrics, k: Knobs) -> Array:
    return m.loss <= k.goal


def _min_grad(m: Metrics, k: Knobs) -> Array:
    return m.grad_norm <= k.min_grad


def _patience(m: Metrics, k: Knobs) -> Array:
    return m.epoch - m.best_epoch >= k.patience


def _diverged(m: Metrics, k: Knobs) -> Array:
    return m.loss > k.diverge * m.low


#: In priority order; "epochs" and "time_limit" are decided on the host.
STOP_RULES = (
    (1, "nonfinite", lambda s: True, _nonfinite),
    (5, "diverged", lambda s: s.diverge, _diverged),
    (2, "goal", lambda s: True, _goal),                 # goal=None is -inf: never
    (3, "min_grad", lambda s: s.min_grad, _min_grad),
    (4, "patience", lambda s: s.patience, _patience),
)
STOP_REASONS = {code: reason for code, reason, _, _ in STOP_RULES}
NONFINITE, PATIENCE = 1, 4


def stop_code(spec: Spec, m: Metrics, knobs: Knobs) -> Array:
    """The code of the first enabled rule that fires, 0 if none."""
    code = jnp.zeros((), jnp.int32)
    for number, _, enabled, hit in reversed(STOP_RULES):
        if enabled(spec):
            code = jnp.where(hit(m, knobs), jnp.int32(number), code)
    return code


# --- one epoch, full batch and mini-batch --------------------------------------
def _track_best(spec: Spec, c: Carry, val: Optional[Array], params: Params, epoch: Array):
    """Patience: remember the params with the lowest validation loss so far."""
    if not spec.patience:
        return None, None
    best_params, best_val, best_epoch = c.best
    improved = val < best_val
    best = (tree.tree_where(improved, params, best_params),
            jnp.where(improved, val.astype(best_val.dtype), best_val),
            jnp.where(improved, epoch, best_epoch))
    return best, best[2]


def _lowest(spec: Spec, low: Any, value: Array) -> Any:
    """The divergence guard's lowest finite loss, `value` included."""
    if not spec.diverge:
        return low
    return jnp.where(jnp.isfinite(value) & (value < low), value.astype(low.dtype), low)


def _epoch_loss(spec: Spec, values: Array, params: Params) -> Array:
    """The mean of an epoch's batch losses; with nonfinite="skip" the mean of
    the finite ones, NaN when none is or the params are no longer finite.
    Summed in the scalar dtype (float32 for float16/bfloat16 params: their
    8- or 11-bit mantissas would lose the small batch losses of a long epoch)."""
    values = values.astype(tree.scalar_dtype(params))
    if not spec.skip:
        return jnp.mean(values)
    finite = jnp.isfinite(values)
    mean = jnp.sum(jnp.where(finite, values, 0)) / jnp.sum(finite)
    return jnp.where(tree.tree_all_finite(params), mean, jnp.nan)


def _record(spec: Spec, loss: Array, grad_norm, val, lr, extra: Optional[dict] = None) -> dict:
    values = {"loss": loss, "val_loss": val, "grad_norm": grad_norm, "lr": lr, **(extra or {})}
    return {name: values[name] for name in spec.history if name in values}


def _metrics(spec: Spec, params: Params, data: Data, examples_first: bool) -> dict:
    """The `fgd.metrics.HISTORY` entries of `spec.history` at `params`: on the
    whole training set (moved back to (..., m) in mini-batch mode) and on the
    validation set."""
    names = tuple(n for n in spec.history if n in metrics.HISTORY)
    if not names:
        return {}
    X, Y = data.X, data.Y
    if examples_first and any(not metrics.HISTORY[n][1] for n in names):
        X, Y = jnp.moveaxis(X, 0, -1), jnp.moveaxis(Y, 0, -1)
    return metrics.history_metrics(spec.loss_fn(), names, params, X, Y, data.Xv, data.Yv)


def full_batch_epoch(spec: Spec, step, val_fn, c: Carry, data: Data, knobs: Knobs,
                     one_kernel: bool = False):
    """One update on all of X. Every figure is taken at the params the update
    starts from, and the rules decide before the update: a stopped epoch
    keeps its params (the best ones after running out of patience; after a
    non-finite loss `drive` replays the chunk up to the epoch before).
    (`one_kernel` changes nothing here: the whole loop is the kernel.)"""
    params, state, value, grads = step(c.params, c.opt_state, data.X, data.Y)
    gnorm = tree.global_norm(grads) if spec.min_grad or "grad_norm" in spec.history else None
    val = val_fn(c.params, data.Xv, data.Yv) if data.Xv is not None else None
    lr = current_lr(c.opt_state) if "lr" in spec.history else None
    best, best_epoch = _track_best(spec, c, val, c.params, c.epoch)
    code = stop_code(spec, Metrics(c.epoch, value, gnorm, val, best_epoch, c.low), knobs)
    go = code == 0
    keep = tree.tree_where(code == PATIENCE, best[0], c.params) if spec.patience else c.params
    new_params, new_state = tree.tree_where(go, (params, state), (keep, c.opt_state))
    # c.updates stays as it is: `run_chunk` counts a full-batch chunk's updates after its loop
    carry = Carry(c.epoch + 1, c.updates, code, new_params, new_state, best,
                  _lowest(spec, c.low, value), c.bad_batch)
    diag = diagnostics.measure(spec, spec.loss_fn(), c.params, lambda: grads,
                               lambda: jax.tree.map(jnp.subtract, params, c.params),
                               data.X, data.Y, c.epoch)
    return carry, {**_record(spec, value, gnorm, val, lr, _metrics(spec, c.params, data, False)),
                   **diag}


def minibatch_epoch(spec: Spec, step, val_fn, c: Carry, data: Data, knobs: Knobs,
                    one_kernel: bool = False):
    """`n_batches` updates on batches of `batch_size` examples in the order
    `permutation(fold_in(key, epoch), m)`; the last `m % batch_size` examples
    of that order are left out. The rules decide after the epoch, on the
    mean batch loss; an epoch with a non-finite batch loss is undone.

    Each batch is gathered from the examples-first data as it is needed. With
    `one_kernel` the whole epoch's batches are gathered at once instead (a
    shuffled copy of the data, (n_batches, ..., k)), so that the loop over
    batches holds no gather and a small one can be one XLA:CPU kernel
    (`spec.tricks.loop`); the batches are the same."""
    m, k = data.X.shape[-1 if spec.columns else 0], spec.batch_size
    order = spec.tricks.permutation(jax.random.fold_in(data.key, c.epoch), m)
    batches = order[: spec.n_batches * k].reshape(spec.n_batches, k)
    want_norm = spec.min_grad or "grad_norm" in spec.history

    def take(a, idx):
        """The examples `idx` ((k,) or (n_batches, k)) of `a`, examples last."""
        if spec.columns:                                       # (..., [n_batches,] k)
            got = a.at[..., idx].get(mode="promise_in_bounds")
            return got if idx.ndim == 1 else jnp.moveaxis(got, -2, 0)
        got = a.at[idx].get(mode="promise_in_bounds")           # ([n_batches,] k, ...)
        return jnp.moveaxis(got, idx.ndim - 1, -1)

    def batch_step(carry, xy):
        params, state = carry
        xb, yb = xy                                                # (..., k)
        if spec.mesh is not None:
            xb, yb = (parallel.constrain_examples(spec.mesh, b) for b in (xb, yb))
        params, state, value, grads = step(params, state, xb, yb)
        gnorm = tree.global_norm(grads) if want_norm else jnp.zeros((), value.dtype)
        return (params, state), (value, gnorm)

    start = (c.params, c.opt_state)
    if one_kernel:
        shuffled = (take(data.X, batches), take(data.Y, batches))   # (n_batches, ..., k)
        loop = lambda carry: jax.lax.scan(batch_step, carry, shuffled)
        (params, state), (values, gnorms) = spec.tricks.loop(loop, start)
    else:
        gather = lambda carry, idx: batch_step(carry, (take(data.X, idx), take(data.Y, idx)))
        (params, state), (values, gnorms) = jax.lax.scan(gather, start, batches)
    value = _epoch_loss(spec, values, params)
    gnorm = jnp.mean(gnorms) if want_norm else None
    val = val_fn(params, data.Xv, data.Yv) if data.Xv is not None else None
    extra = _metrics(spec, params, data, not spec.columns)   # at the params the epoch ends with
    lr = current_lr(c.opt_state) if "lr" in spec.history else None
    best, best_epoch = _track_best(spec, c, val, params, c.epoch)
    code = stop_code(spec, Metrics(c.epoch, value, gnorm, val, best_epoch, c.low), knobs)
    finite = code != NONFINITE
    params, state = tree.tree_where(finite, (params, state), (c.params, c.opt_state))
    if spec.patience:
        params = tree.tree_where(code == PATIENCE, best[0], params)
    updates = c.updates + jnp.where(finite, spec.n_batches, 0).astype(jnp.int32)
    bad = jnp.argmax(~jnp.isfinite(values)).astype(jnp.int32)    # first bad batch, 0 if none
    carry = Carry(c.epoch + 1, updates, code, params, state, best, _lowest(spec, c.low, value), bad)
    return carry, {**_record(spec, value, gnorm, val, lr, extra),
                   **_minibatch_diagnostics(spec, c, params, data)}


def _minibatch_diagnostics(spec: Spec, c: Carry, params: Params, data: Data) -> dict:
    """Diagnostics at the params the epoch ends with, on all of X (back in
    the (..., m) layout), the epoch's net change as the update."""
    if not any(n in diagnostics.NAMES for n in spec.history):
        return {}
    loss_fn = spec.loss_fn()
    X, Y = (data.X, data.Y) if spec.columns else (jnp.moveaxis(data.X, 0, -1), jnp.moveaxis(data.Y, 0, -1))
    return diagnostics.measure(spec, loss_fn, params, lambda: jax.grad(loss_fn)(params, X, Y),
                               lambda: jax.tree.map(jnp.subtract, params, c.params), X, Y, c.epoch)


def run_chunk(spec: Spec, carry: Carry, data: Data, knobs: Knobs, hparams: Any = None, *,
              one_kernel: bool = False):
    """Epochs `carry.epoch .. knobs.end - 1` (or until a rule stops) in one
    `lax.while_loop`. Returns the new carry and `{name: (capacity,)}` history
    rows, row i for epoch `knobs.start + i` (NaN past the last epoch run).
    With `one_kernel` (XLA:CPU), a small loop is compiled as one kernel
    (`spec.tricks.loop`).

    With `spec.batched` (`fgd.sweep`) every carry leaf has a LAST axis of R
    runs, and `hparams` and `knobs.end` are (R,): the epoch body runs batched
    (`spec.tricks.batched`), the loop runs while any run is active and a
    finished run keeps its carry. Active runs are always at the same epoch,
    so they share the history column; rows are then (R, capacity).
    """
    loss_fn = spec.loss_fn()
    val_fn = spec.tricks.rewrite_dots(loss_fn) if data.Xv is not None else None
    epoch_fn = full_batch_epoch if spec.batch_size is None else minibatch_epoch

    def epoch(c, h):
        step = train_step(loss_fn, spec.build_optimizer(h), spec.tricks)
        return epoch_fn(spec, step, val_fn, c, data, knobs, one_kernel)

    if spec.batched:
        epoch = spec.tricks.batched(epoch, carry.epoch.shape[0])
    dtype = tree.scalar_dtype(carry.params)
    runs = carry.epoch.shape                                # () or (R,)
    width = lambda name: (len(diagnostics.columns(loss_fn, carry.params, name)),) \
        if name in diagnostics.NAMES and name != "sharpness" else ()
    rows = {name: jnp.full(runs + width(name) + (spec.capacity,), jnp.nan, dtype)
            for name in spec.history}

    def active(c):
        return (c.epoch < knobs.end) & (c.stop == 0)

    def body(state):
        c, rows, i, _ = state                           # i: the history column
        new, record = epoch(c, hparams)
        if spec.batched:
            on = active(c)
            new = jax.tree.map(lambda a, b: jnp.where(on, a, b), new, c)
            record = {name: jnp.where(on, v, jnp.nan) for name, v in record.items()}
        put = jax.lax.dynamic_update_index_in_dim               # not a scatter: kernel-friendly
        rows = {name: put(rows[name], record[name].astype(dtype), i, -1) for name in rows}
        return new, rows, i + 1, jnp.any(active(new))

    # active runs are at epoch knobs.start when the chunk starts, and move together
    state = (carry, rows, jnp.int32(0), jnp.any(active(carry)))
    loop = lambda state: jax.lax.while_loop(lambda state: state[3], body, state)
    start = carry
    carry, rows, _, _ = spec.tricks.loop(loop, state) if one_kernel else loop(state)
    if spec.batch_size is None:
        carry = carry._replace(updates=_full_batch_updates(start, carry))
    return carry, rows


def _full_batch_updates(start: Carry, end: Carry) -> Array:
    """The update count after a full-batch chunk: one update an epoch, but
    none in the epoch a rule stopped (`full_batch_epoch` keeps its params).
    Counted once here rather than carried through every epoch, which on
    XLA:CPU's per-operation runtime is one operation fewer an epoch (20
    examples x 64 tanh units, 1 hidden layer, sse: 9.0-9.8 -> 7.9-8.0 us
    an epoch). It adds to the loop's own (unchanged) count, not the start's:
    XLA:CPU fails to compile a one-kernel loop that carries a value it
    never changes when that output is then left unused."""
    stopped = (end.stop != 0) & (start.stop == 0)
    return end.updates + (end.epoch - start.epoch) - stopped.astype(end.updates.dtype)


#: The compiled chunk, cached by jax.jit on (spec, shapes and dtypes). The
#: carry is not donated: the driver keeps a chunk's input to replay it.
_CHUNK = jax.jit(run_chunk, static_argnums=0, static_argnames="one_kernel")
#: compiler options -> run_chunk jitted with them
_WITH_OPTIONS = _cache.LRU("chunk_compilers", 4)
#: (spec, argument tree and shapes) -> whether the chunk compiles as one kernel
_ONE_KERNEL = _cache.LRU("one_kernel_chunks", 256)


def _jitted(options: Optional[dict]):
    if options is None:
        return _CHUNK
    return _WITH_OPTIONS.get(tuple(sorted(options.items())), lambda: jax.jit(
        run_chunk, static_argnums=0, static_argnames="one_kernel", compiler_options=options))


def program_key(spec: Spec, carry: Carry, data: Data, knobs: Knobs, hparams: Any = None) -> tuple:
    """A hashable name of the compiled chunk these arguments run: the spec,
    the argument tree and every leaf's shape and dtype."""
    leaves, treedef = jax.tree.flatten((carry, data, knobs, hparams))
    return spec, treedef, tuple((np.shape(x), getattr(x, "dtype", type(x))) for x in leaves)


def _program(spec: Spec, args: tuple) -> tuple:
    """(the jitted `run_chunk`, the spec it runs, `one_kernel`) for these
    arguments: see `compiled_chunk`."""
    carry = args[0]
    tricks = spec.tricks
    if spec.batched or spec.mesh is not None:      # measured on one device's unbatched steps only
        spec = spec._replace(tricks=tricks._replace(transposed_copies=False))
        tricks = spec.tricks
    if tricks.one_kernel and spec.mesh is None:
        key = program_key(spec, *args)
        trace = lambda: jax.make_jaxpr(lambda *a: run_chunk(spec, *a, one_kernel=True))(*args)
        if _ONE_KERNEL.get(key, lambda: _compile.is_one_kernel(trace().jaxpr)):
            return _jitted(tricks.compiler_options(True)), spec, True
        spec = spec._replace(tricks=tricks._replace(small_dots=False))
    largest = max((math.prod(np.shape(w)) for w in jax.tree.leaves(carry.params)), default=0)
    return _jitted(tricks.compiler_options(False, largest)), spec, False


def compiled_chunk(spec: Spec, carry: Carry, data: Data, knobs: Knobs, hparams: Any = None):
    """`run_chunk`, jitted (spec static). With `spec.tricks.one_kernel` and no
    mesh, a chunk whose loop can be one kernel is compiled so, with the
    tricks' one-kernel compiler options (decided by one trace per spec and
    shapes). Any other chunk runs on XLA's usual per-operation runtime with
    `spec.tricks.compiler_options(False, largest weight)` and its products left as
    products: the small-dot rewrite pays only inside one kernel (3-8-2 net,
    400 examples, full batch, on the per-operation runtime: 10.1 us per
    epoch as products, 16.3 us with the rewrite). Large transposed-lhs
    products are computed from a transposed copy (`fgd._compile`) in an
    unbatched chunk on one device."""
    args = (carry, data, knobs, hparams)
    fn, spec, one_kernel = _program(spec, args)
    return fn(spec, *args, one_kernel=one_kernel)


#: program key -> bytes of temporaries its compiled chunk allocates per call
_TEMPS = _cache.LRU("chunk_temporaries", 256)


def temp_bytes(spec: Spec, carry: Carry, data: Data, knobs: Knobs, hparams: Any = None) -> int:
    """The bytes of temporaries the compiled chunk of these arguments
    allocates per call (0 where the backend does not say). Compiles the
    chunk if it has not been (`compiled_chunk` then reuses it)."""
    args = (carry, data, knobs, hparams)

    def measure() -> int:
        fn, run_spec, one_kernel = _program(spec, args)
        try:
            analysis = fn.lower(run_spec, *args, one_kernel=one_kernel).compile().memory_analysis()
        except NotImplementedError:               # pragma: no cover - backends without one
            return 0
        return int(getattr(analysis, "temp_size_in_bytes", 0) or 0)

    return _TEMPS.get(program_key(spec, *args), measure)


def host(value: Any, dtype: Any) -> Array:
    """`value` as an array made on the host, with no device operation: jit
    takes it as an argument like a device array (knobs, fresh counters)."""
    return np.asarray(value, dtype)  # type: ignore[return-value]


def init_carry(spec: Spec, params: Params, opt_state: OptState) -> Carry:
    """A fresh carry (int32 counters at 0)."""
    zero = lambda: host(0, np.int32)
    best = None
    if spec.patience:
        best = (params, host(np.inf, tree.scalar_dtype(params)), zero())
    low = host(np.inf, tree.scalar_dtype(params)) if spec.diverge else None
    return Carry(zero(), zero(), zero(), params, opt_state, best, low, zero())


