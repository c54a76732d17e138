"""`sweep`: many trainings of one architecture in one compiled program.

A sweep trains a grid of configurations, initialisations (one per key, or
given stacked params) times learning rates, through fit's own compiled chunk
(`fgd.training.chunk.run_chunk` with `spec.batched`): the same epoch body, the same
stopping rules, the same history, run for every configuration at once, with
the runs on the last axis of every array::

    runs = fgd.sweep(loss, fgd.sgd, X, Y, init=lambda k: net.init(k, "uniform"),
                     keys=jax.random.split(key, 64), lrs=[0.01, 0.05], epochs=20_000)
    runs.history["loss"]        # (64, 2, 20_000)
    runs.params[0]["W"]         # (64, 2, 8, 3)

Learning-rate sweeps, initialisation comparisons and random restarts (different
starts reach different optima) are one device program
each. Every configuration stops on its own (goal, min_grad, patience,
nonfinite) exactly as `fgd.fit` would stop it: the chunk's `while_loop` runs
while any configuration is active, and a stopped one keeps its state. On a
multi-core CPU the runs are split into one group per core, each group such a
program driven from its own thread (`groups`, `drive_groups` below).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _checks, _jax
from fgd._types import Params, PRNGKey
from fgd.optim import tree
from fgd.optim.base import Identity, Structure, is_structural
from fgd.optim.optimizers import check_lr_state
from fgd.training import chunk, diagnostics, driver
from fgd.training.fit import prepare, stop_reason


class SweepResult(NamedTuple):
    """What `sweep` returns; every array has the grid's leading axes (I, R):
    I initialisations (keys or stacked params), R learning rates.

    Attributes:
      params: the trained params, each leaf (I, R, ...).
      opt_state: the optimizers' states, each leaf (I, R, ...).
      history: name -> (I, R, E) numpy array, E the most epochs any run ran;
        entries after a run stopped are NaN.
      epochs: (I, R) int, epochs each run ran (its history length).
      stop_reason: (I, R) str array, one of fit's reasons per run.
      updates: (I, R) int, optimizer updates each run applied.
      nonfinite_epoch: (I, R) int, the epoch of a NaN/Inf loss, -1 if none.
      final_loss: (I, R), the last loss each run recorded.
      seconds: wall time of the call, compilation included.
    """

    params: Params
    opt_state: Any
    history: dict
    epochs: np.ndarray
    stop_reason: np.ndarray
    updates: np.ndarray
    nonfinite_epoch: np.ndarray
    final_loss: np.ndarray
    seconds: float


def _stacked_params(init: Any, keys: Optional[PRNGKey]) -> tuple[Params, int]:
    """(params with a leading axis I, I) from `init(key)` over `keys` or stacked params."""
    if callable(init):
        if keys is None:
            raise ValueError("keys must be given when init is a function key -> params "
                             "(e.g. keys=jax.random.split(key, 16))")
        keys = jnp.asarray(keys) if not hasattr(keys, "dtype") else keys
        if not jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key) or keys.ndim != 1:
            raise TypeError(f"keys must be a 1-D array of PRNG keys such as "
                            f"jax.random.split(key, 16); got {_checks._describe(keys)}")
        if keys.shape[0] == 0:
            raise ValueError("keys must hold at least one PRNG key (one per initialisation); "
                             "got 0")
        return jax.vmap(init)(keys), int(keys.shape[0])
    if keys is not None:
        raise ValueError("keys is only for an init function; stacked params already hold the inits")
    leaves = jax.tree.leaves(init)
    if not leaves or any(np.ndim(x) < 1 for x in leaves):
        raise TypeError("init must be a function key -> params or params stacked along a "
                        "leading axis (one entry per initialisation)")
    sizes = {int(np.shape(x)[0]) for x in leaves}
    if len(sizes) != 1:
        raise ValueError(f"stacked params must share their leading axis; got sizes {sorted(sizes)}")
    return jax.tree.map(jnp.asarray, init), sizes.pop()


def _rates(make_opt: Any, lrs: Optional[Sequence[float]]) -> tuple[bool, np.ndarray]:
    """(make_opt is a factory, the rates as floats) after checking them."""
    is_optimizer = callable(getattr(make_opt, "init", None)) and callable(getattr(make_opt, "update", None))
    if is_optimizer:
        if lrs is not None:
            raise ValueError("lrs needs make_opt to be a function lr -> optimizer such as fgd.sgd; "
                             "got an optimizer")
        return False, np.zeros(1)
    if not callable(make_opt):
        raise TypeError(f"make_opt must be a function lr -> optimizer (e.g. fgd.sgd) or an "
                        f"optimizer; got {type(make_opt).__name__}")
    if lrs is None:
        raise ValueError("lrs must be given when make_opt is a function lr -> optimizer")
    rates = np.asarray(lrs)
    if rates.ndim != 1 or rates.size == 0 or rates.dtype.kind not in "fiu":
        raise TypeError(f"lrs must be a non-empty 1-D sequence of numbers; got {lrs!r}"[:200])
    if not np.all(np.isfinite(rates)) or np.any(rates < 0):
        raise ValueError(f"lrs must be finite numbers >= 0; got {rates}")
    for rate in np.unique(rates):       # inside the program the rate is traced, unchecked:
        make_opt(float(rate))           # run the optimizer's own checks on each value now
    return True, rates.astype(np.float64)


def _grid_optimizer(make_opt: Any, factory: bool, rates: np.ndarray, n_init: int,
                    dtype: Any) -> tuple[Any, bool, Any]:
    """(the optimizer as a static argument of the chunk, whether it is a
    factory of traced rates, the numbers of run i * R + r on a last axis).

    An fgd optimizer, and a `make_opt` whose optimizers (built here, one per
    rate) share one structural key, run by structure: each run's numbers are
    its own optimizer's `hparams`, stacked, so a new lambda of the same
    optimizers compiles nothing new. Stacks of Python floats stay weakly
    typed, so each run multiplies by its numbers exactly as `fit` would.
    Any other `make_opt` is called with the traced rate inside the program
    (cached on its identity); any other optimizer is one object for all runs.
    """
    if factory:
        try:
            opts = [make_opt(float(r)) for r in rates]
        except Exception:                     # a factory meant for traced rates only
            opts = []
        if opts and all(is_structural(o) for o in opts) and len({o.key for o in opts}) == 1:
            return Structure(opts[0]), False, _stacked([o.hparams for o in opts], n_init)
        return Identity(make_opt), True, jnp.asarray(np.tile(rates, n_init), dtype)
    if is_structural(make_opt):
        return Structure(make_opt), False, _stacked([make_opt.hparams], n_init)
    return Identity(make_opt), False, jnp.asarray(np.tile(rates, n_init), dtype)


@functools.partial(jax.jit, static_argnums=1)
def _stacked(numbers: list, n_init: int) -> Any:
    """The R rates' hparams pytrees stacked leaf by leaf on a new last (only)
    axis and tiled for the `n_init` initialisations (run i * R + r holds
    `numbers[r]`), in one compiled call however many runs and leaves (one
    conversion per run and number had cost 2.7 ms of a 64-run sweep, one
    stack and tile per leaf 0.1 ms). Python floats enter jit weakly typed,
    and their stacks and tiles stay so."""
    return jax.tree.map(lambda *xs: jnp.tile(jnp.stack(xs), n_init), *numbers)


def sweep(loss: Callable, make_opt: Any, X: Any, Y: Any, *, init: Any,
          keys: Optional[PRNGKey] = None, lrs: Optional[Sequence[float]] = None,
          epochs: int = 1000, batch_size: Optional[int] = None,
          key: Optional[PRNGKey] = None, goal: Optional[float] = None,
          validation: Optional[tuple] = None, patience: Optional[int] = None,
          min_grad: Optional[float] = None, time_limit: Optional[float] = None,
          progress: Optional[bool] = None, history: tuple = ("loss",)) -> SweepResult:
    """Train the grid (initialisations x learning rates) in one compiled program.

    Run (i, r) equals `fgd.fit(loss, params_i, make_opt(lrs[r]), X, Y, ...)`
    with the same `epochs`, `batch_size`, `key` (so the same batch order in
    every run), `goal` and other rules; only the summation order of the
    batched arithmetic can differ, by a few ulps.

    Args:
      loss: as in `fgd.fit`.
      make_opt: a function `lr -> optimizer` (e.g. `fgd.sgd`,
        `lambda lr: fgd.adam(lr, b1=0.8)`); or one optimizer for every run
        (then no `lrs`). When its optimizers are fgd's, of one structure, each
        run's numbers are traced values and the program is shared by every
        sweep of that structure (a new lambda compiles nothing new); any other
        `make_opt` is called with a traced rate inside the program and cached
        on its identity.
      X, Y: data, examples along the last axis, shared by all runs.
      init: a function `key -> params` (with `keys`), or params stacked along
        a leading axis of I initialisations.
      keys: (I,) PRNG keys for `init`, e.g. `jax.random.split(key, 64)`.
      lrs: R learning rates for `make_opt`.
      epochs, batch_size, key, goal, validation, patience, min_grad,
      time_limit, progress, history: as in `fgd.fit`, for every run;
        `time_limit` stops all runs. `key=None` means `jax.random.key(0)`.
        With groups of runs (on a multi-core CPU) the progress bar counts
        the first group's epochs. A sweep runs on one device: it takes no
        `mesh` (its runs are vmapped; for data parallelism use
        `fgd.fit(..., mesh=...)`).

    Returns:
      A `SweepResult` whose arrays have leading axes (I, R).
    """
    key = jax.random.key(0) if key is None else key
    if any(n in diagnostics.NAMES for n in history if isinstance(n, str)):
        raise ValueError(f"sweep records no diagnostics {diagnostics.NAMES}; got history="
                         f"{history!r}: run fgd.fit per configuration for them")
    factory, rates = _rates(make_opt, lrs)
    params, n_init = _stacked_params(init, keys)
    one = _first(params)
    setup = prepare(loss, make_opt, factory, one, X, Y, epochs, batch_size, key, goal,
                          validation_data=validation, patience=patience, min_grad=min_grad,
                          time_limit=time_limit, history=history, progress=progress)
    _checks.check_finite_tree(params, "init")
    n_rate = rates.size
    optimizer, factory, hparams = _grid_optimizer(make_opt, factory, rates, n_init,
                                                  tree.scalar_dtype(one))
    spec = setup.spec._replace(batched=True, optimizer=optimizer, factory=factory)
    carry = _start(spec, n_rate, params, hparams)
    if "lr" in spec.history:
        check_lr_state(jax.tree.map(lambda a: a[..., 0], carry.opt_state))
    platform = next(iter(setup.data.X.devices())).platform
    out = drive_groups(spec, carry, setup, hparams, groups(n_init * n_rate, platform), epochs=epochs,
                       time_limit=time_limit, progress=progress)
    return _result(out, spec, (n_init, n_rate), epochs)


# --- runs in concurrent groups on a multi-core CPU ------------------------------------
#: The fewest runs a group of a CPU sweep holds.
GROUP_RUNS = 16


def groups(runs: int, platform: str) -> int:
    """How many groups of runs `sweep` drives at once: on XLA:CPU one per
    core, each of at least `GROUP_RUNS` runs; elsewhere 1.

    XLA:CPU runs a chunk compiled as one kernel (`fgd._compile`,
    every small net) on one core, and runs one program after another, so a
    sweep in one program leaves the other cores idle. Groups of runs driven
    from one host thread each run side by side: 64 runs of the 3-8-2 net on 2
    cores, 5.9 -> 3.3-3.5 us per epoch. Smaller groups are also cheaper per run
    (64 runs in one kernel: 5.9 us per epoch; two kernels of 32: 2 x 2.5). On
    an accelerator all runs stay one program.
    """
    if platform != "cpu":
        return 1
    return max(1, min(_cores(), runs // GROUP_RUNS))


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


#: jax settings that a context manager (`with fgd.enable_x64(True):`) sets
#: for its own thread only, and the managers a group's thread enters to take
#: over the caller's values.
THREAD_SETTINGS = _jax.thread_setting_managers()


def caller_settings() -> Optional[dict]:
    """{name: value} of the jax settings this thread has and a group's thread
    would not (set by context managers); None if one of them is not in
    `THREAD_SETTINGS`, so that a group's thread cannot take it over. A
    group's thread leaves every setting it entered when its drive ends, so
    it reads what a new thread would."""
    here = dict(jax.config.values)
    fresh = _pool().submit(lambda: dict(jax.config.values)).result()
    differ = {}
    for name, value in here.items():
        try:
            same = value is fresh.get(name) or bool(value == fresh.get(name))
        except Exception:                            # values that do not compare
            same = False
        if not same:
            differ[name] = value
    return differ if set(differ) <= set(THREAD_SETTINGS) else None


def drive_groups(spec: chunk.Spec, carry: chunk.Carry, setup: Any, hparams: jax.Array, n: int, *,
                 epochs: int, time_limit: Optional[float], progress: Optional[bool]) -> driver.Run:
    """`driver.drive` for the runs (last axis of `carry`, `hparams`) split into
    `n` contiguous groups, each driven from its own thread; one `driver.Run`
    for all of them, runs in their order. Every run computes what it would
    alone, so the split changes no number. Each thread enters the caller's
    thread-local jax settings (`caller_settings`; with one it cannot take
    over, the runs stay one group). The first group shows the progress bar;
    an error in one group (or Ctrl-C) stops the others at their next chunk
    end and is raised here. A group whose program ran before starts with a
    chunk sized by that program's epoch rate (as `fgd.fit` does), not with
    one epoch."""
    def drive(c, h, show, cancel=None, settings=None):
        run = lambda c_, knobs: chunk.compiled_chunk(spec, c_, setup.data, knobs, h)
        with contextlib.ExitStack() as stack:
            for name, value in (settings or {}).items():
                stack.enter_context(THREAD_SETTINGS[name](value))
            return driver.drive(run, c, setup.knobs, epochs=epochs, capacity=spec.capacity,
                                time_limit=time_limit, progress=show, replay=spec.batch_size is None,
                                desc="sweep", cancel=cancel,
                                rate_key=chunk.program_key(spec, c, setup.data, setup.knobs, h))

    settings = caller_settings() if n > 1 else None
    if settings is None:
        return drive(carry, hparams, progress)
    runs = int(carry.epoch.shape[-1])
    bounds = tuple(int(b) for b in np.linspace(0, runs, n + 1))
    parts = _split(bounds, (carry, hparams))
    cancel = threading.Event()
    futures = [_pool().submit(drive, c, h, progress if i == 0 else False, cancel, settings)
               for i, (c, h) in enumerate(parts)]
    try:
        outs = [f.result() for f in futures]
    except BaseException:
        cancel.set()
        concurrent.futures.wait(futures)             # no group outlives the call
        raise
    history = {}
    for name in outs[0].history:                     # NaN past each group's last epoch
        parts_ = [o.history[name] for o in outs]
        rows = np.full((runs, max(p.shape[-1] for p in parts_)), np.nan, parts_[0].dtype)
        for lo, p in zip(bounds, parts_):
            rows[lo:lo + p.shape[0], :p.shape[-1]] = p
        history[name] = rows
    return driver.Run(_join([o.carry for o in outs]), history, any(o.timed_out for o in outs),
                    max(o.seconds for o in outs))


#: pid -> the process's pool of group threads (one per core, made on first
#: use) instead of two new threads and a probe thread on every call: with
#: `_first` and the one-call `_stacked`, a 1-epoch sweep of 64 runs of the
#: 3-8-2 net took 1.9 ms instead of 2.8 ms (2-core CPU machine).
_POOLS: dict = {}
_POOLS_LOCK = threading.Lock()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads `drive_groups` runs its groups on, kept for later sweeps;
    a forked child (which has none of its parent's threads) makes its own."""
    with _POOLS_LOCK:
        pool = _POOLS.get(os.getpid())
        if pool is None:
            pool = _POOLS[os.getpid()] = concurrent.futures.ThreadPoolExecutor(
                _cores(), thread_name_prefix="fgd-sweep")
        return pool


@functools.partial(jax.jit, static_argnums=0)
def _split(bounds: tuple, tree_: Any) -> list:
    """`tree_` (runs on the last axis) cut at `bounds` into groups, in one call."""
    return [jax.tree.map(lambda a: a[..., lo:hi], tree_) for lo, hi in zip(bounds[:-1], bounds[1:])]


@jax.jit
def _first(tree_: Any) -> Any:
    """The first initialisation of stacked params, in one call (not one per leaf)."""
    return jax.tree.map(lambda a: a[0], tree_)


@jax.jit
def _join(trees: list) -> Any:
    return jax.tree.map(lambda *a: jnp.concatenate(a, axis=-1), *trees)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _start(spec: chunk.Spec, n_rate: int, params: Params, hparams: jax.Array) -> chunk.Carry:
    """The grid's first carry, runs on the last axis, in one compiled call:
    params repeated for the rates (run i * R + r), optimizer states made
    with each run's rate."""
    flat = jax.tree.map(lambda a: jnp.repeat(a, n_rate, axis=0), params)
    states = jax.vmap(lambda p, h: spec.build_optimizer(h).init(p))(flat, hparams)
    return jax.vmap(functools.partial(chunk.init_carry, spec), out_axes=-1)(flat, states)


@functools.partial(jax.jit, static_argnums=0)
def _by_grid(grid: tuple, tree_: Any) -> Any:
    """Leaves (..., runs) -> (I, R, ...)."""
    return jax.tree.map(lambda a: jnp.moveaxis(a, -1, 0).reshape(grid + a.shape[:-1]), tree_)


def _result(out: driver.Run, spec: chunk.Spec, grid: tuple, epochs: int) -> SweepResult:
    c = out.carry
    grid_of = lambda a: np.asarray(a).reshape(grid + np.shape(a)[1:])
    codes, ran = grid_of(c.stop), grid_of(c.epoch)
    dtype = tree.scalar_dtype(c.params)
    history = {name: grid_of(out.history.get(name, np.zeros((ran.size, 0), dtype)))
               for name in spec.history}
    reasons = np.vectorize(lambda code, e: stop_reason(
        int(code), bool(out.timed_out and e < epochs)), otypes=[object])(codes, ran).astype(str)
    nonfinite = np.where(codes == chunk.NONFINITE, ran - 1, -1)
    loss = history["loss"]
    final = (np.take_along_axis(loss, np.maximum(ran - 1, 0)[..., None], axis=-1)[..., 0]
             if loss.shape[-1] else np.full(grid, np.nan))
    final = np.where(ran > 0, final, np.nan)
    if (nonfinite >= 0).any():
        warnings.warn(f"sweep: {int((nonfinite >= 0).sum())} of {codes.size} runs hit a NaN/Inf "
                      f"loss; they stopped with their last finite params", RuntimeWarning, stacklevel=3)
    params, opt_state = _by_grid(grid, (c.params, c.opt_state))
    return SweepResult(params, opt_state, history, ran, reasons, grid_of(c.updates), nonfinite,
                       final, out.seconds)
