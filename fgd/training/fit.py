"""`fit`: gradient descent in batch, stochastic and mini-batch mode, many epochs per device call.

`fit` runs many update steps (`fgd.training.step`) on the device: the steps
of an epoch run inside one `lax.scan`, and a chunk of epochs runs inside one
`lax.while_loop` whose condition checks the stopping rules on the device
(`fgd.training.chunk`; the host side is `fgd.training.driver`). The
host wakes up only at chunk ends: to read the history, update the progress
bar, check the time limit and size the next chunk. A chunk's length is a traced value, so
chunking never recompiles; the compiled chunk is cached by `jax.jit` on a
hashable `Spec` (the `Loss` by value, an fgd optimizer by its structural
key with its numbers passed in traced, any other optimizer by identity, the
modes), so a second `fit` with an equal loss, an optimizer of the same
structure (``fgd.sgd(0.2)`` after ``fgd.sgd(0.1)``) and the same shapes does
not compile again. `fgd.sweep` runs the same chunk for many configurations at once. With
`checkpoint_dir`, chunks also end on checkpoint epochs and `fgd.resume` saves
the whole training state after them; `fgd.faults` holds the NaN policies.

Tiny networks. On a 3-8-2 network one epoch is a dozen operations on
matrices of a few dozen entries, and the cost is per-operation overhead, not
arithmetic: on XLA:CPU the private `fgd._compile` turns the step's small
matrix products into fusible sums and a small chunk loop into one kernel
(`FGD_COMPILE_TRICKS=0` switches that off). Boundary checks live in
`fgd._checks`.
"""
from __future__ import annotations

import weakref
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _cache, _checks, _compile, metrics, parallel
from fgd._types import Array, OptState, Params, PRNGKey
from fgd.losses import Loss, check_targets
from fgd.optim import tree
from fgd.optim.base import Identity
from fgd.optim.optimizers import check_lr_state
from fgd.training import chunk, diagnostics, driver, faults
from fgd.training.callbacks import check_callbacks, close_all
from fgd.training.resume import check_args as resume_checks
from fgd.training.resume import open_saver


# --- fit's arguments, checked and laid out ---------------------------------------
def check_history(history: Any, has_validation: bool) -> tuple:
    if isinstance(history, str) or not isinstance(history, (tuple, list)) or \
            not all(isinstance(h, str) for h in history):
        raise TypeError(f"history must be a tuple of names from {chunk.HISTORY_NAMES}; got {history!r}")
    unknown = [h for h in history if h not in chunk.HISTORY_NAMES]
    if unknown:
        raise ValueError(f"history names must be among {chunk.HISTORY_NAMES}; got unknown {unknown}")
    names = set(history) | {"loss"} | ({"val_loss"} if has_validation else set())
    if "val_loss" in names and not has_validation:
        raise ValueError("history 'val_loss' needs validation=(Xv, Yv)")
    return tuple(h for h in chunk.HISTORY_NAMES if h in names)


class Setup(NamedTuple):
    """A checked fit call, ready to compile: static spec, traced knobs, data."""

    spec: chunk.Spec
    knobs: chunk.Knobs
    data: chunk.Data
    dtype: np.dtype
    m: int
    hparams: Any = None     # the optimizer's numbers, traced arguments of the chunk


def prepare(loss, optimizer, factory, params, X, Y, epochs, batch_size, key, goal, *,
            nonfinite: str = "stop", diverge: Optional[float] = None,
            validation_data, patience, min_grad, time_limit, history, mesh=None,
            local_data=False, progress=None, batch_gather: str = "copy") -> Setup:
    """Every boundary check of `fit`/`sweep`, then the data cast to the params'
    dtype and laid out for the mode (with a mesh: global arrays split over its
    "data" axis, `fgd.parallel.place_training_data`). Nothing is traced here."""
    _checks.check_loss(loss)
    if mesh is not None:
        parallel.check_mesh(mesh)
    elif local_data:
        raise ValueError("local_data=True needs mesh=: it says each process holds its own "
                         "block of the examples of a multi-process mesh")
    if isinstance(loss, Loss):
        _checks.check_params(loss.net, params)
    dtype = _checks.param_dtype(params)
    _checks.check_finite_tree(params, "params")
    net = loss.net if isinstance(loss, Loss) else None
    X, Y = _checks.check_data(net, X, Y, dtype)
    if isinstance(loss, Loss):          # as loss(...) itself refuses them: bce needs Y in [0, 1]
        check_targets(loss.cost, Y)
    _checks.check_bool(progress, "progress", allow_none=True)
    if batch_gather not in BATCH_GATHER:
        raise ValueError(f"batch_gather must be one of {BATCH_GATHER}; got {batch_gather!r}")
    columns = batch_gather == "columns" and batch_size is not None
    if columns and mesh is not None:
        raise ValueError("batch_gather='columns' does not go with mesh=: a mesh lays the "
                         "examples out itself (fgd.parallel.place_training_data)")
    m = parallel.global_examples(int(X.shape[-1]), local_data)
    _checks.check_int(epochs, "epochs", 0)
    batch_size = _checks.check_int(batch_size, "batch_size", 1, m, allow_none=True)
    _checks.check_key(key)
    goal = _checks.check_real(goal, "goal")
    min_grad = _checks.check_real(min_grad, "min_grad", nonneg=True)
    _checks.check_real(time_limit, "time_limit", positive=True)
    faults.check_policy(nonfinite)
    diverge = faults.check_diverge(diverge)
    Xv = Yv = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError(f"validation must be a pair (Xv, Yv); got {type(validation_data).__name__}")
        Xv, Yv = _checks.check_data(net, *validation_data, dtype, names=("Xv", "Yv"))  # type: ignore[call-arg,misc]
        if isinstance(loss, Loss):
            check_targets(loss.cost, Yv, "Yv")
    patience = _checks.check_int(patience, "patience", 1, allow_none=True)
    if patience is not None and Xv is None:
        raise ValueError("patience needs validation=(Xv, Yv): it counts epochs without a "
                         "lower validation loss")
    names = check_history(history, Xv is not None)
    metrics.check_history(loss, names, Xv is not None)
    diagnostics.check_names(names, loss)

    if mesh is not None:
        X, Y, Xv, Yv = parallel.place_training_data(mesh, X, Y, Xv, Yv, batch_size=batch_size,
                                                    local_data=local_data)
        key = parallel.replicate(mesh, key)
    elif batch_size is not None and not columns:
        X, Y = laid_out(X, Y)
    opt_static, hparams = ((Identity(optimizer), None) if factory
                           else chunk.static_optimizer(optimizer))
    spec = chunk.Spec(loss if _hashable(loss) else Identity(loss), opt_static, factory, batch_size,
                1 if batch_size is None else m // batch_size,
                chunk.CAPACITY_FULL if batch_size is None else chunk.CAPACITY_MINI, names,
                min_grad is not None, patience is not None,
                skip=nonfinite == "skip", diverge=diverge is not None, mesh=mesh,
                tricks=_compile.tricks(_compile.platform_of(X), shuffles=batch_size is not None),
                columns=columns)
    sdt = tree.scalar_dtype(params)
    knobs = chunk.Knobs(chunk.host(0, np.int32), chunk.host(0, np.int32),
                  chunk.host(-np.inf if goal is None else goal, sdt),
                  chunk.host(-1.0 if min_grad is None else min_grad, sdt),
                  chunk.host(0 if patience is None else patience, np.int32),
                  None if diverge is None else chunk.host(diverge, sdt))
    if mesh is not None:
        hparams = parallel.replicate(mesh, hparams)
    return Setup(spec, knobs, chunk.Data(X, Y, Xv, Yv, key), dtype, m, hparams)


#: How mini-batch mode gathers a batch: "copy", rows of an examples-first
#: copy of the data (kept while X lives); "columns", columns of X as given.
BATCH_GATHER = ("copy", "columns")


def _hashable(obj: Any) -> bool:
    if isinstance(obj, Loss):
        return True
    try:
        hash(obj)
    except TypeError:
        return False
    return not isinstance(obj, (list, dict, set))


@jax.jit
def examples_first(X: Array) -> Array:
    """(..., m) -> (m, ...): one contiguous row per example, for batch gathers."""
    return jnp.moveaxis(X, -1, 0)


#: (id(X), id(Y)) -> (weakref to X, weakref to Y, X examples first, Y examples
#: first): the last pair `laid_out` transposed, at most one.
_LAYOUT = _cache.LRU("examples_first_layout", 1)


def laid_out(X: Array, Y: Array) -> tuple[Array, Array]:
    """`examples_first(X), examples_first(Y)`, remembered for the last pair.

    Mini-batch mode gathers a batch as rows of an (m, ...) copy of the data.
    Making that copy is a pass over all of it: for a 784 x 61,440 float32 X
    about 60 ms on XLA:CPU (mostly page faults on the fresh 193 MB), a tenth
    of an epoch of a 784-512-512-10 net. jax arrays are immutable, so while
    the same X and Y live their copy stays right, and a `fit` called again
    on them (an epoch at a time, a loop over learning rates) reuses it. One
    pair is kept, and dropped as soon as X or Y is garbage-collected (or by
    `fgd.clear_caches()`).
    """
    def make():
        forget = lambda _: _LAYOUT.clear()
        return weakref.ref(X, forget), weakref.ref(Y, forget), examples_first(X), examples_first(Y)

    x_ref, y_ref, Xt, Yt = _LAYOUT.get((id(X), id(Y)), make)
    if x_ref() is not X or y_ref() is not Y:          # ids reused by new arrays
        _LAYOUT.clear()
        x_ref, y_ref, Xt, Yt = _LAYOUT.get((id(X), id(Y)), make)
    return Xt, Yt


# --- fit ---------------------------------------------------------------------------
class FitResult(NamedTuple):
    """What `fit` returns.

    Attributes:
      params: the trained params (same structure and dtypes as given); see
        `fit` for which params a stopped run returns.
      opt_state: the optimizer's own state, as its `init` made it, at the same point.
      history: name -> numpy array with one value per epoch run
        ("loss" always; "val_loss", "grad_norm", "lr", "accuracy",
        "val_accuracy", "mse", "val_mse" when recorded).
      epochs: epochs run, `len(history["loss"])`.
      stop_reason: "epochs", "goal", "min_grad", "patience", "time_limit"
        or "nonfinite".
      updates: optimizer updates applied during the run.
      nonfinite_epoch: the epoch whose loss was NaN/Inf, else None.
      best_epoch: with patience, the epoch of the lowest validation loss.
      seconds: wall time of the call, compilation included.
      nonfinite_batch: mini-batch mode: the batch (index in the epoch's order)
        of the first NaN/Inf batch loss of `nonfinite_epoch`, else None.
      skipped: nonfinite="skip": updates skipped for a NaN/Inf gradient.
      resumed_epoch: the epoch a checkpoint restored the run at, else None.
      history_columns: name -> column labels of each per-layer diagnostic
        in `history` (arrays (epochs, columns)); see `fgd.training.diagnostics`.
    """

    params: Params
    opt_state: OptState
    history: dict
    epochs: int
    stop_reason: str
    updates: int
    nonfinite_epoch: Optional[int]
    best_epoch: Optional[int]
    seconds: float
    nonfinite_batch: Optional[int] = None
    skipped: int = 0
    resumed_epoch: Optional[int] = None
    history_columns: Optional[dict] = None   # diagnostics name -> its column labels


def fit(loss: Callable, params: Params, opt: Any, X: Any, Y: Any, epochs: int = 1000,
        batch_size: Optional[int] = None, key: Optional[PRNGKey] = None,
        goal: Optional[float] = None, *, validation: Optional[tuple] = None,
        patience: Optional[int] = None, min_grad: Optional[float] = None,
        time_limit: Optional[float] = None, progress: Optional[bool] = None,
        history: tuple = ("loss",), checkpoint_dir: Any = None,
        checkpoint_every: Any = None, resume: bool = True, keep: int = 3,
        checkpoint_on_error: str = "raise", nonfinite: str = "stop", diverge: Optional[float] = None, mesh: Any = None,
        local_data: bool = False, callbacks: Any = None,
        diagnostics_every: int = 1, batch_gather: str = "copy") -> FitResult:
    """Train `params` on (X, Y) with `opt`, many epochs per device call.

    Modes:
      - `batch_size=None`: full batch, one update per epoch. `history["loss"][k]`
        is the loss at the params epoch k's update starts from (the value
        computed with its gradient); "grad_norm" and "val_loss" are taken at
        the same params. The stopping rules decide before the update, so a
        run stopped by `goal` ends with `history["loss"][-1] <= goal` and
        `updates == epochs - 1`, and an unstopped run of E epochs makes
        exactly E updates.
      - `batch_size=k` (1 for stochastic GD): `m // k` updates per epoch on
        batches taken in the order `jax.random.permutation(fold_in(key, epoch), m)`,
        a pure function of (key, epoch); the `m % k` examples at the end of
        that order are left out of the epoch (a different few each epoch;
        never a ragged batch, so never a retrace). `history["loss"][k]` is the
        mean of epoch k's batch losses, each taken at the params of its own
        update; "grad_norm" the mean of the batch gradients' global norms;
        "val_loss" is taken at the params the epoch ends with; "lr" is the rate
        of the epoch's first update. The rules decide after the epoch.
        Batches are gathered from an examples-first copy of X and Y
        (`batch_gather="copy"`); for jax arrays the copy is kept while they
        live (`laid_out`), so a second fit on the same arrays does not make
        it again. `batch_gather="columns"` gathers the columns of X and Y as
        given instead: no copy (the memory of one more data set), slower
        gathers (strided; a 784-512-512-10 Adam epoch in batches of 256 on
        the CPU: 20-40% longer), the same batches and numbers.

    Stopping rules (`result.stop_reason`), checked every epoch on the device
    in this order:
      - "nonfinite": the loss is NaN or Inf. fit warns and returns the last
        params with a finite loss (full batch: those of epoch k - 1; mini-batch:
        those the failing epoch k started from, the epoch being undone), with
        their optimizer state; `result.nonfinite_epoch = k`.
      - "diverged" (with `diverge=F`): the loss is > F times the lowest
        finite loss of the epochs before (full batch: before the update).
      - "goal": the loss is <= goal.
      - "min_grad": the gradient's global norm is <= min_grad (MATLAB's min_grad).
      - "patience": `patience` epochs in a row without a validation loss
        strictly below the best so far; returns the params of the best epoch
        (`result.best_epoch`) with the current optimizer state.
      - "epochs": `epochs` epochs ran. "time_limit": `time_limit` seconds
        (compilation included) passed; checked at chunk ends, and chunks are
        sized to end near it.

    Args:
      loss: `loss(params, X, Y) -> scalar`; an `fgd.Loss` also gets its shapes
        checked against `loss.net` (any other callable skips those checks).
      params: the initial params (not modified); their dtype is kept, and the
        data are cast to it.
      opt: an optimizer (`init`/`update`, fgd's or optax's); `value=loss` is
        passed to an `update` that takes it.
      X, Y: data, examples along the last axis (X (n_x, m) or images (C, H, W, m)).
      epochs: at most this many epochs (>= 0).
      batch_size: None, or an integer in [1, m].
      key: a PRNG key; the mini-batch order depends on it and the epoch only.
        None means `jax.random.key(0)`, made at the call (a default made at
        import would start JAX's backend before `fgd.parallel.initialize()`).
      goal: stop once the loss is <= goal.
      validation: (Xv, Yv) to report "val_loss" each epoch (needed by patience).
      patience: an integer >= 1 (see above).
      min_grad: a number >= 0 (see above).
      time_limit: seconds > 0.
      progress: a tqdm bar per chunk; None shows it when stderr is a terminal.
      history: names among ("loss", "val_loss", "grad_norm", "lr", "accuracy",
        "val_accuracy", "mse", "val_mse") to record; "loss" always, "val_loss"
        whenever validation is given. "lr" is `fgd.current_lr` of the state
        the update starts from. The metrics (`fgd.metrics`, an `fgd.Loss`
        needed) are computed on the device: "accuracy" and "mse" on all of
        (X, Y), the "val_" ones on the validation data, at the params
        "val_loss" is taken at (full batch: those the update starts from;
        mini-batch: those the epoch ends with). Diagnostics, computed on the
        device in the same compiled loop: "layer_grad_norm", "update_ratio",
        "unit_spread", "dead_fraction", "saturated_fraction" (arrays (epochs,
        columns), labels in `result.history_columns`) and "sharpness"
        (lambda_max of the Hessian); `fgd.training.diagnostics`.
      diagnostics_every: measure the diagnostics every k-th epoch (NaN rows
        between), an integer >= 1.
      batch_gather: mini-batch mode: "copy" (default) or "columns", how
        batches are gathered (see Modes).
      checkpoint_dir: a directory for `ckpt-<epoch>.npz` files holding the whole
        training state (`fgd.resume`); None (default) saves nothing.
      checkpoint_every: an int N: save after every N-th epoch (chunks end
        there); or a duration such as "30s", "5min": save at the first chunk
        end that long after the last save. Default "60s". The final state is
        always saved.
      resume: True (default): go on from the newest good checkpoint in
        `checkpoint_dir` (bit-identical to an uninterrupted run); False:
        delete its checkpoints and start over.
      keep: checkpoints kept (the newest), an integer >= 1.
      checkpoint_on_error: what a failed save does (no space, read-only or
        forbidden directory: ENOSPC, EDQUOT, EROFS, EACCES, EPERM): "raise"
        (default; the run stops, older checkpoints stay intact) or "warn" (one
        `CheckpointWarning` per kind of error, training goes on and the
        result is returned; checkpoints are then missing). Only one fit at a
        time may write to a `checkpoint_dir` (a lock held for the whole run);
        a second raises `fgd.checkpoint.CheckpointLockedError` naming the
        first one's PID.
      nonfinite: what a NaN/Inf loss does: "stop" (default; warns), "raise"
        (`fgd.faults.NonFiniteLossError`, a FloatingPointError naming epoch
        and batch) or "skip" (mini-batch: skip bad updates; `fgd.faults`).
      diverge: a factor F > 1: stop with "diverged" once the loss exceeds F
        times the lowest so far.
      mesh: a `jax.sharding.Mesh` with a "data" axis (`fgd.parallel.data_mesh()`)
        to train data-parallel: every batch is split over the devices, params
        and optimizer state are replicated, and XLA all-reduces the gradient,
        so the results equal one device's (up to the order of sums). The
        device count must divide the global batch (`batch_size`, or m for full
        batch; ValueError otherwise). The returned arrays are replicated.
      local_data: with a mesh over several processes: False (default), every
        process passes the same full X, Y (and validation) and fgd keeps its
        devices' slice; True, process p passes only its own contiguous block
        of the examples, the p-th of `jax.process_count()` equal blocks.
      callbacks: callables `cb(epochs, rows)` called on the host after each
        chunk of epochs (never per step) with the `range` of epochs it ran and
        its history rows, name -> array; `cb.close()`, if defined, when fit
        ends. Built in: `fgd.CSVLogger(path)`, `fgd.TensorBoardLogger(logdir)`
        (`fgd.training.callbacks`).

    Returns:
      A `FitResult`.

    Raises:
      ValueError, TypeError: a bad argument, named, before anything is traced.
    """
    _checks.check_optimizer(opt)
    diagnostics_every = _checks.check_int(diagnostics_every, "diagnostics_every", 1)
    every = resume_checks(checkpoint_dir, checkpoint_every, resume, keep, checkpoint_on_error)
    callbacks = check_callbacks(callbacks)
    opt = faults.wrap(opt, faults.check_policy(nonfinite))
    key = jax.random.key(0) if key is None else key
    setup = prepare(loss, opt, False, params, X, Y, epochs, batch_size, key, goal,
                    nonfinite=nonfinite, diverge=diverge,
                    validation_data=validation, patience=patience, min_grad=min_grad,
                    time_limit=time_limit, history=history, mesh=mesh, local_data=local_data,
                    progress=progress, batch_gather=batch_gather)
    setup = setup._replace(spec=setup.spec._replace(diagnostics_every=diagnostics_every))
    if "lr" in setup.spec.history:
        check_lr_state(opt.init(params))
    carry = chunk.init_carry(setup.spec, params, opt.init(params))
    if mesh is not None:
        carry = parallel.replicate(mesh, carry)
    saver = open_saver(checkpoint_dir, every, keep, resume, nonfinite, loss, setup,
                                params, carry.opt_state, {"goal": goal, "min_grad": min_grad,
                                "patience": patience, "diverge": diverge}, checkpoint_on_error)
    try:                    # the saver holds the directory's one-writer lock until the end
        carry = carry if saver is None else saver.start(carry)
        # the optimizer's numbers are traced: a new rate never recompiles
        run = lambda c, knobs: chunk.compiled_chunk(setup.spec, c, setup.data, knobs, setup.hparams)
        program = (setup.spec, carry, setup.data, setup.knobs, setup.hparams)
        seconds = None                          # XLA:CPU: calls that page-fault large temporaries
        if setup.spec.tricks.long_chunks:
            seconds = lambda: setup.spec.tricks.chunk_seconds(driver.CHUNK_SECONDS,
                                                              chunk.temp_bytes(*program))
        try:
            out = driver.drive(run, carry, setup.knobs, epochs=epochs, capacity=setup.spec.capacity,
                               time_limit=time_limit, progress=progress, replay=batch_size is None,
                               saver=saver, callbacks=callbacks, chunk_seconds=seconds,
                               rate_key=chunk.program_key(*program))
        finally:
            close_all(callbacks)
        out = out if saver is None else saver.complete(out, run, setup.knobs, replay=batch_size is None)
    finally:
        if saver is not None:
            saver.close()
    result = finish(out, setup.spec.history, nonfinite, batch_size is not None, saver)
    return _with_columns(result, loss, params)


def _with_columns(result: FitResult, loss: Any, params: Params) -> FitResult:
    """Per-layer diagnostics as (epochs, columns) arrays, with their labels."""
    cols = {n: diagnostics.columns(loss, params, n) for n in result.history
            if n in diagnostics.NAMES and n != "sharpness"}
    if not cols:
        return result
    history = dict(result.history)
    for n, labels in cols.items():
        h = np.asarray(history[n])
        history[n] = h.T if h.ndim == 2 else np.zeros((0, len(labels)), h.dtype)
    return result._replace(history=history, history_columns=cols)


def stop_reason(code: int, timed_out: bool) -> str:
    if code:
        return chunk.STOP_REASONS[code]
    return "time_limit" if timed_out else "epochs"


def finish(out: driver.Run, names: tuple, policy: str = "stop", minibatch: bool = False,
           saver: Any = None) -> FitResult:
    """Turn a single run's final carry into a FitResult (warning on NaN/Inf)."""
    c = out.carry
    counters = jax.device_get((c.stop, c.epoch, c.updates, c.bad_batch,
                               None if c.best is None else c.best[2]))   # one transfer
    code, ran, updates, bad, best = (None if v is None else int(v) for v in counters)
    reason = stop_reason(code, out.timed_out)
    nonfinite = ran - 1 if reason == "nonfinite" else None
    batch = bad if nonfinite is not None and minibatch else None
    if nonfinite is not None:
        faults.report(out.history["loss"][nonfinite], nonfinite, batch, policy)
    empty = np.zeros(0, tree.scalar_dtype(c.params))
    history = {name: out.history.get(name, empty) for name in names}
    opt_state, skipped = faults.unwrap(c.opt_state, policy)
    return FitResult(c.params, opt_state, history, ran, reason, updates, nonfinite, best,
                     out.seconds, batch, skipped, None if saver is None else saver.resumed_epoch)
