"""Checkpointed training: the whole state of a `fit` saved at chunk ends, and resumed.

`fit(..., checkpoint_dir=D)` writes ``D/ckpt-<epoch>.npz`` (`fgd.checkpoint`
files: atomic, checksummed, never unpickled) holding, after epoch k:

- the loop's carry: epoch, updates, stop code, params, optimizer state (step
  counts, `apply_if_finite` skip counters, schedule position), the patience
  record (best params, loss and epoch), the divergence guard's lowest loss;
- the PRNG key (the mini-batch order is `permutation(fold_in(key, epoch), m)`,
  so the epoch is the position in the data order);
- the history of epochs 0..k-1;
- metadata: the epoch, a fingerprint of the configuration and the
  description it hashes (`describe`); `fgd.checkpoint` adds the fgd, jax and
  numpy versions and the x64 flag.

`fit` ends its chunks on checkpoint epochs, so a saved state is exactly the
carry after an epoch, and the compiled chunk runs the same epoch function
whatever the chunk lengths: a run killed at any moment and resumed ends with
params and history bit-identical (on one machine) to a run never stopped.

Resuming (`resume=True`, the default) loads the newest checkpoint that reads
cleanly: a damaged, truncated, hostile or foreign file is renamed
``<name>.corrupt`` with a `CheckpointWarning` and the one before it is tried.
A sound checkpoint of another model or optimizer raises
`CheckpointMismatchError` naming the first leaf that differs; one written
under another configuration (loss, data, batch size, initial params or
optimizer state, key, stopping rules) raises `ConfigMismatchError` naming
the entries that differ (the leaf error names them too). `resume=False` deletes the directory's checkpoints
and starts over. A checkpoint name that is not a regular file (a FIFO, a
device, a symbolic link out of the directory) is skipped with a warning and
left in place; an I/O error while reading (EIO, EACCES, a timeout) is tried
once more and then raised, never taken for damage.

One writer per directory: the `Saver` holds the directory's lock
(`fgd.checkpoint.DirectoryLock`) from the start of the fit to its end, so a
second fit on the same directory raises `CheckpointLockedError` naming the
first one's PID. `checkpoint_on_error="warn"` lets a run go on when a save
fails for lack of space or permission (ENOSPC, EDQUOT, EROFS, EACCES, EPERM):
one `CheckpointWarning` per kind, and the result stays in memory.

For inference, `load(D)` opens the newest good file without a model at hand
(each file also stores its tree's layout, `fgd.layout`) and returns its
params, optimizer state, epoch and history.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import time
import warnings
import zlib
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

from fgd import checkpoint, layout
from fgd._version import __version__
from fgd.checkpoint import (
    CheckpointError,
    CheckpointManager,
    CheckpointMismatchError,
    CheckpointWarning,
    NotRegularFileError,
)
from fgd.optim import tree
from fgd.training import faults
from fgd.training.chunk import NONFINITE

#: Default `checkpoint_every`: a save at the first chunk end 60 s after the last.
DEFAULT_EVERY = "60s"
_SECONDS_RE = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|min|h)\s*")
_UNIT = {"s": 1.0, "min": 60.0, "h": 3600.0}
_ADDRESS_RE = re.compile(r" at 0x[0-9a-fA-F]+")
#: fit's `checkpoint_on_error` choices, and the errors "warn" lets a run survive
ON_ERROR = ("raise", "warn")
SAVE_ERRNOS = frozenset(getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM")
                        if hasattr(errno, n))


class ConfigMismatchError(CheckpointMismatchError):
    """The checkpoint was written by a fit with another configuration."""


class Every(NamedTuple):
    """When to save: every `epochs` epochs, or at the first chunk end `seconds` after the last save."""

    epochs: Optional[int]
    seconds: Optional[float]


def check_args(checkpoint_dir: Any, checkpoint_every: Any, resume: Any, keep: Any,
               on_error: Any = "raise") -> Every:
    """Checks fit's checkpoint arguments (nothing is created or traced)."""
    if not isinstance(on_error, str):
        raise TypeError(f"checkpoint_on_error must be one of {ON_ERROR}; got "
                        f"{type(on_error).__name__} {on_error!r}"[:200])
    if on_error not in ON_ERROR:
        raise ValueError(f"checkpoint_on_error must be one of {ON_ERROR}; got {on_error!r}")
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path (str or os.PathLike) or None; got "
                        f"{type(checkpoint_dir).__name__} {checkpoint_dir!r}"[:200])
    if not isinstance(resume, (bool, np.bool_)):
        raise TypeError(f"resume must be True or False; got {type(resume).__name__} {resume!r}"[:200])
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)) or keep < 1:
        raise ValueError(f"keep must be an integer >= 1 (checkpoints kept); got {keep!r}"[:200])
    every = DEFAULT_EVERY if checkpoint_every is None else checkpoint_every
    if isinstance(every, (int, np.integer)) and not isinstance(every, bool):
        if every < 1:
            raise ValueError(f"checkpoint_every must be >= 1 epochs (or a duration such as "
                             f"'30s', '5min'); got {every!r}")
        return Every(int(every), None)
    match = _SECONDS_RE.fullmatch(every) if isinstance(every, str) else None
    if match is None or not 0 < float(match.group(1)) < math.inf:
        raise ValueError(f"checkpoint_every must be a number of epochs >= 1 or a duration "
                         f"such as '30s', '5min', '1h'; got {every!r}"[:200])
    return Every(None, float(match.group(1)) * _UNIT[match.group(2)])


# --- the configuration fingerprint ---------------------------------------------
def _checksum(x: Any) -> str:
    """CRC-32 of an array's bytes (cheap; detects changed data, not attacks)."""
    if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    a = np.ascontiguousarray(np.asarray(x))
    return f"{zlib.crc32(a.reshape(-1).view(np.uint8).tobytes()):08x}"


def _array(x: Any) -> Optional[list]:
    return None if x is None else [list(np.shape(x)), str(x.dtype), _checksum(x)]


def _tree(t: Any) -> dict:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(t)
    crc = 0
    for _, leaf in leaves:
        crc = zlib.crc32(_checksum(leaf).encode(), crc)
    return {"structure": _ADDRESS_RE.sub("", str(treedef)),
            "leaves": [[keystr(p), list(np.shape(x)), str(x.dtype)] for p, x in leaves],
            "values": f"{crc:08x}"}


def _callable(fn: Any) -> str:
    """A description of a loss that is the same in every process (no addresses)."""
    text = repr(fn) if type(fn).__repr__ is not object.__repr__ else \
        f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"
    return _ADDRESS_RE.sub("", text)


def describe(loss: Any, batch_size: Optional[int], data: Any, params: Any, opt_state: Any,
             history: tuple, rules: dict) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint.

    The optimizer itself is a tuple of closures (not hashable across
    processes); its initial state's structure, dtypes and values stand for it
    (fgd's optimizers keep their initial rate there). `epochs`, `time_limit`
    and `progress` are left out: a run may be resumed with more epochs.
    """
    desc = {"loss": _callable(loss), "batch_size": batch_size,
            "X": _array(data.X), "Y": _array(data.Y),
            "Xv": _array(data.Xv), "Yv": _array(data.Yv),
            "key": _array(data.key), "params": _tree(params), "opt_state": _tree(opt_state),
            "history": list(history), **rules}
    # tuples -> lists and numpy scalars -> numbers, as the JSON metadata reads back
    return json.loads(json.dumps(desc, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _differences(saved: Any, now: dict) -> list[str]:
    if not isinstance(saved, dict):
        return ["the checkpoint holds no configuration description"]
    out = []
    for name in sorted(set(saved) | set(now)):
        a, b = saved.get(name, "(absent)"), now.get(name, "(absent)")
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):   # name the sub-entries
                sub = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
                out.append(f"{name} ({', '.join(sub)} differ)")
            else:
                out.append(f"{name} (checkpoint {json.dumps(a)[:120]}, now {json.dumps(b)[:120]})")
    return out


# --- saving and restoring fit's state --------------------------------------------
class Saver:
    """fit's checkpoint writer/reader for one run (one writer per directory).

    `drive` calls `chunk_end` to end chunks on checkpoint epochs and
    `chunk_done` after each chunk; `fit` calls `start` before the first chunk
    and `complete` after the last.
    """

    def __init__(self, directory, every: Every, keep: int, resume: bool, nonfinite: str,
                 description: dict, key: Any, names: tuple, dtype: Any, on_error: str = "raise"):
        self.on_error, self.directory = on_error, Path(directory)
        self.warned: set = set()
        try:
            self.manager = CheckpointManager(directory, keep=int(keep), lock=True)
        except OSError as err:          # no lock file on a read-only or full directory
            if not self._tolerated(err):
                raise
            self.manager = CheckpointManager(directory, keep=int(keep))
        self.every, self.resume, self.nonfinite = every, bool(resume), nonfinite
        self.description = description
        self.fingerprint = checkpoint.fingerprint(description)
        self.key, self.names, self.dtype = key, names, np.dtype(dtype)
        self.prefix = {name: np.zeros(0, self.dtype) for name in names}
        self.resumed_epoch: Optional[int] = None
        self.saved: Optional[tuple] = None     # (epoch, stop code) last saved or restored
        self.last_save = time.perf_counter()

    def close(self) -> None:
        """Releases the directory lock; `fit` calls it however the run ends."""
        self.manager.close()

    def _tolerated(self, err: OSError) -> bool:
        """With on_error="warn", warns (once per kind of error) about a failed
        write and returns True; False for an error to raise."""
        if self.on_error != "warn" or err.errno not in SAVE_ERRNOS:
            return False
        kind = errno.errorcode.get(err.errno, str(err.errno))
        if kind not in self.warned:
            self.warned.add(kind)
            warnings.warn(f"fit: could not write in checkpoint directory "
                          f"{os.fspath(self.directory)!r} "
                          f"({kind}: {err.strerror}); training goes on and its result stays in "
                          f"memory (checkpoint_on_error='warn'); further {kind} failures of this "
                          f"run are not reported", CheckpointWarning, stacklevel=5)
        return True

    # -- restore
    def _like(self, carry, epoch: int) -> dict:
        history = {n: jax.ShapeDtypeStruct((epoch,), self.dtype) for n in self.names}
        return {"carry": carry, "key": self.key, "history": history}

    def _skip(self, path: Path, err: Exception) -> None:
        if isinstance(err, NotRegularFileError):        # not a file of ours: never renamed
            warnings.warn(f"{err}; skipped it (left in place) and trying the previous "
                          f"checkpoint", CheckpointWarning, stacklevel=4)
            return
        try:
            os.replace(path, path.with_name(path.name + ".corrupt"))
        except OSError:
            pass
        warnings.warn(f"{err}; renamed it {path.name}.corrupt and trying the previous "
                      f"checkpoint", CheckpointWarning, stacklevel=4)

    def start(self, carry):
        """The carry to begin with: the newest good checkpoint's (resume) or `carry`."""
        steps = self.manager.steps()
        if not self.resume:
            left = [step for step in steps if not self.manager.remove(step)]
            if left:
                warnings.warn(f"resume=False: left {len(left)} checkpoint name(s) that are not "
                              f"regular files in place ({', '.join(f'ckpt-{s}.npz' for s in left)})",
                              CheckpointWarning, stacklevel=3)
            steps = [step for step in steps if step not in left]
            if steps:
                warnings.warn(f"resume=False: deleted {len(steps)} checkpoint(s) of an earlier "
                              f"run in {os.fspath(self.manager.directory)!r}", CheckpointWarning,
                              stacklevel=3)
            return carry
        for step in reversed(steps):
            path = self.manager.path(step)
            try:
                header = checkpoint.read_header(path, max_bytes=self.manager.max_bytes)
                meta = header["metadata"]
                if meta.get("epoch") != step or not isinstance(meta.get("fingerprint"), str):
                    raise CheckpointError(f"checkpoint {os.fspath(path)!r}: not a fit state of "
                                          f"epoch {step} (metadata {json.dumps(meta)[:120]})")
                state, meta = checkpoint.load(path, self._like(carry, step),
                                              max_bytes=self.manager.max_bytes)
                if int(state["carry"].epoch) != step:
                    raise CheckpointError(f"checkpoint {os.fspath(path)!r}: holds epoch "
                                          f"{int(state['carry'].epoch)}, named {step}")
            except CheckpointMismatchError as err:    # another model, optimizer or rule set
                diff = _differences(meta.get("config"), self.description)
                raise CheckpointMismatchError(f"{err}; its configuration differs in: "
                                              f"{'; '.join(diff) or 'nothing recorded'}") from None
            except (CheckpointError, FileNotFoundError) as err:
                self._skip(path, err)
                continue
            if meta["fingerprint"] != self.fingerprint:
                diff = _differences(meta.get("config"), self.description)
                raise ConfigMismatchError(
                    f"checkpoint {os.fspath(path)!r} was written by a fit with another "
                    f"configuration: {'; '.join(diff) or 'fingerprints differ'}. Use another "
                    f"checkpoint_dir, or resume=False to start over there")
            self._check_environment(path, header.get("environment"))
            self.prefix = {n: np.asarray(state["history"][n]) for n in self.names}
            self.resumed_epoch, self.saved = step, (step, int(state["carry"].stop))
            return state["carry"]
        return carry

    def _check_environment(self, path: Path, env: Any) -> None:
        env = env if isinstance(env, dict) else {}
        now = {"fgd": __version__, "jax": jax.__version__}
        changed = [f"{k} {env.get(k)} -> {v}" for k, v in now.items() if env.get(k) != v]
        if changed:
            warnings.warn(f"resuming {path.name} across versions ({', '.join(changed)}): the "
                          f"run goes on, but need not match an uninterrupted one bit for bit",
                          CheckpointWarning, stacklevel=4)

    # -- save
    def chunk_end(self, done: int, end: int) -> int:
        """`end`, cut at the next checkpoint epoch."""
        if self.every.epochs is None:
            return end
        return min(end, (done // self.every.epochs + 1) * self.every.epochs)

    def history(self, chunks: list) -> dict:
        return {n: np.concatenate([self.prefix[n], *(c[n] for c in chunks)]) for n in self.names}

    def save(self, carry, history: dict) -> None:
        epoch = int(carry.epoch)
        state = {"carry": carry, "key": self.key, "history": history}
        try:
            self.manager.save(epoch, state, {"epoch": epoch, "fingerprint": self.fingerprint,
                                            "config": self.description,
                                            "layout": layout.describe(state)})   # for `load`
        except OSError as err:
            if not self._tolerated(err):
                raise
            self.last_save = time.perf_counter()     # try again at the next due save
            return
        self.saved, self.last_save = (epoch, int(carry.stop)), time.perf_counter()

    def chunk_done(self, carry, chunks: list) -> None:
        """Saves after a chunk that ended on a checkpoint epoch (or time), while running."""
        epoch = int(carry.epoch)
        if int(carry.stop) != 0 or (epoch, 0) == self.saved:
            return                      # a stopped run is saved by `complete`, after replay
        due = (epoch % self.every.epochs == 0 if self.every.epochs is not None
               else time.perf_counter() - self.last_save >= self.every.seconds)
        if due:
            self.save(carry, self.history(chunks))

    def complete(self, out, run, knobs, replay: bool):
        """`out` (a `driver.Run`) with the whole history; saves the final state,
        except the failing one of nonfinite="raise"."""
        history = self.history([out.history] if out.history else [])
        carry = out.carry
        failed = int(carry.stop) == NONFINITE
        if failed and replay and int(carry.epoch) - 1 == self.resumed_epoch:
            carry = self._reach_back(carry, run, knobs)
            out = out._replace(carry=carry)
        if not (failed and self.nonfinite == "raise") and \
                (int(carry.epoch), int(carry.stop)) != self.saved:
            self.save(carry, history)
        return out._replace(history=history)

    def _reach_back(self, carry, run, knobs):
        """Full batch, NaN/Inf in the first epoch k after a resume: `drive`'s
        replay cannot reach the params of epoch k - 1 from the resumed state,
        so replay from the newest older checkpoint up to there instead."""
        k = int(carry.epoch) - 1
        for step in reversed([s for s in self.manager.steps() if s < k]):
            try:
                state, meta = checkpoint.load(self.manager.path(step), self._like(carry, step),
                                              max_bytes=self.manager.max_bytes)
            except (CheckpointError, FileNotFoundError):
                continue
            if meta.get("fingerprint") != self.fingerprint:
                continue
            end = jax.numpy.int32(k - 1)
            again, _ = run(state["carry"], knobs._replace(start=jax.numpy.int32(step), end=end))
            return carry._replace(params=again.params, opt_state=again.opt_state)
        if k > 0:
            warnings.warn(f"fit: the loss became non-finite in epoch {k}, the first after the "
                          f"resume, and no older checkpoint is left to replay epoch {k - 1} "
                          f"from: returning the params epoch {k} started from",
                          CheckpointWarning, stacklevel=4)
        return carry


def open_saver(checkpoint_dir: Any, every: Every, keep: int, resume: bool, nonfinite: str,
               loss: Any, setup: Any, params: Any, opt_state: Any, rules: dict,
               on_error: str = "raise") -> Optional[Saver]:
    """fit's Saver for `checkpoint_dir` (None: no checkpoints). `setup` is fit's
    checked `fit.Setup`; `params`, `opt_state` the initial ones."""
    if checkpoint_dir is None:
        return None
    description = describe(loss, setup.spec.batch_size, setup.data, params, opt_state,
                           setup.spec.history, {**rules, "nonfinite": nonfinite})
    return Saver(checkpoint_dir, every, keep, resume, nonfinite, description, setup.data.key,
                 setup.spec.history, tree.scalar_dtype(params), on_error)


# --- opening a fit checkpoint for inference ----------------------------------------
_FIT_FILE_RE = re.compile(r"ckpt-(0|[1-9][0-9]*)\.npz")


class Loaded(NamedTuple):
    """What `load` returns: the training state saved after `epoch` epochs.

    Attributes:
      params: the params fit would go on from (those it returns, had it
        stopped there).
      opt_state: the optimizer's own state at that point (fit's NaN-skip
        wrapper, if any, taken off).
      epoch: epochs run when the file was written.
      history: name -> numpy array, one value per epoch 0..epoch-1.
      path: the file read.
    """

    params: Any
    opt_state: Any
    epoch: int
    history: dict
    path: Path


def _like_leaf(record: dict) -> Any:
    """A stand-in leaf with a stored leaf's shape and dtype, for `checkpoint.load`."""
    shape, dtype = tuple(record["shape"]), record["dtype"]
    if dtype.startswith("key<"):
        impl = {"key<fry>": "threefry2x32", "key<rbg>": "rbg", "key<urbg>": "unsafe_rbg"}.get(dtype)
        if impl is None:
            raise CheckpointError(f"leaf {record['path']}: unknown PRNG key type {dtype}")
        width = jax.random.key_data(jax.random.key(0, impl=impl)).shape[-1]
        return jax.random.wrap_key_data(jnp.zeros(shape + (width,), jnp.uint32), impl=impl)
    return jax.ShapeDtypeStruct(shape, checkpoint._DTYPES[dtype])


def _open_fit_file(path: Path, step: int) -> Loaded:
    header = checkpoint.read_header(path)
    meta = header["metadata"]
    if meta.get("epoch") != step or "fingerprint" not in meta:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r}: not a fit checkpoint of "
                              f"epoch {step} (metadata {json.dumps(meta)[:120]})")
    if "layout" not in meta:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r}: written by an fgd that did not "
                              f"record the tree layout; go on training from it with "
                              f"fit(..., checkpoint_dir=...) and load the newer file")
    try:
        like = layout.rebuild(meta["layout"], [_like_leaf(r) for r in header["leaves"]])
    except ValueError as err:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r}: {err}") from None
    state, meta = checkpoint.load(path, like)
    if not isinstance(state, dict) or not {"carry", "history"} <= set(state):
        raise CheckpointError(f"checkpoint {os.fspath(path)!r}: not a fit state")
    carry = state["carry"]
    if int(carry.epoch) != step:
        raise CheckpointError(f"checkpoint {os.fspath(path)!r}: holds epoch {int(carry.epoch)}, "
                              f"named {step}")
    policy = (meta.get("config") or {}).get("nonfinite", "stop")
    opt_state, _ = faults.unwrap(carry.opt_state, policy)
    history = {name: np.asarray(v) for name, v in state["history"].items()}
    return Loaded(carry.params, opt_state, step, history, path)


def load(checkpoint_dir: Any) -> Loaded:
    """The newest good fit checkpoint in `checkpoint_dir`, for inference or a look.

    Opens what `fit(..., checkpoint_dir=D)` wrote without knowing the model:
    the tree's layout is stored in each file (`fgd.layout`), so no `like`
    tree is needed. The same safety as resuming: nothing is unpickled, every
    array is checked against its SHA-256, and a damaged, truncated or foreign
    newest file is skipped (with a `CheckpointWarning`; unlike resuming, the
    file is left as it is) for the one before it. Read-only: nothing in the
    directory is created, renamed or deleted.

    Example:
      >>> state = fgd.resume.load("ckpt")
      >>> labels = net.predict(state.params, X)       # state.epoch, state.history

    Returns:
      A `Loaded` (params, opt_state, epoch, history, path).

    Raises:
      FileNotFoundError: the directory does not exist or holds no
        ``ckpt-<epoch>.npz`` file.
      CheckpointError: no file in it reads cleanly (each one's reason given).
    """
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir must be a path (str or os.PathLike); got "
                        f"{type(checkpoint_dir).__name__} {checkpoint_dir!r}"[:200])
    directory = Path(checkpoint_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint_dir {os.fspath(directory)!r} is not a directory")
    steps = sorted(int(m.group(1)) for entry in directory.iterdir()
                   if (m := _FIT_FILE_RE.fullmatch(entry.name)))
    if not steps:
        raise FileNotFoundError(f"no fit checkpoint (ckpt-<epoch>.npz) in {os.fspath(directory)!r}")
    reasons = []
    for step in reversed(steps):
        path = directory / f"ckpt-{step}.npz"
        try:
            return _open_fit_file(path, step)
        except (CheckpointError, FileNotFoundError) as err:
            reasons.append(str(err))
            warnings.warn(f"{err}; trying the previous checkpoint", CheckpointWarning, stacklevel=2)
    raise CheckpointError(f"no fit checkpoint in {os.fspath(directory)!r} reads cleanly: "
                          + "; ".join(reasons))
