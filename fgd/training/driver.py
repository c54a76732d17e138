"""The host side of training: chunk after chunk, the time limit, the progress bar.

`drive` runs compiled chunks (`fgd.training.chunk`) one after another. The
host reads the carry's counters and the history only at chunk ends, checks
the time limit there, updates the progress bar and sizes the next chunk.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fgd import _cache
from fgd.training.chunk import NONFINITE, Carry, Knobs, host

#: Wall time a chunk aims at once the epoch rate is known: how often the
#: progress bar, the callbacks and the time limit hear from the run. Each
#: device call also costs a fixed amount, which grows with the program's
#: temporaries: on XLA:CPU a 40,000-example 16-512-512-512-4 full-batch epoch
#: took 464 ms as a call of its own and 375-386 ms inside a longer call, so a
#: chunk of one such epoch per call lost 15-20% to the loop a user writes;
#: at 1 s (two epochs a call) it ran 416-427 ms an epoch (2-core CPU machine).
CHUNK_SECONDS = 1.0


class Run(NamedTuple):
    """What `drive` hands back: the final carry, the history, the host stop."""

    carry: Carry
    history: dict       # name -> rows (epochs,) or (configs, epochs)
    timed_out: bool
    seconds: float


def progress_bar(progress: Optional[bool], total: int, desc: str):
    """A tqdm bar, or None: off with progress=False, on with True, and by
    default only when stderr is a terminal (and tqdm is installed)."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm  # optional: the "progress" extra
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


#: rate key (a compiled chunk's spec and shapes) -> epochs per second of its
#: last chunk: a later run of the same program starts with a chunk of about
#: `CHUNK_SECONDS`, not with one epoch (a short fit is then one device call)
_RATES = _cache.LRU("epoch_rates", 256)


def drive(run: Callable, carry: Carry, knobs: Knobs, *, epochs: int, capacity: int,
          time_limit: Optional[float], progress: Optional[bool], replay: bool,
          desc: str = "fit", saver: Any = None, cancel: Any = None, callbacks: tuple = (),
          rate_key: Any = None, chunk_seconds: Optional[Callable[[], float]] = None) -> Run:
    """Call `run(carry, knobs) -> (carry, rows)` chunk after chunk, from the
    carry's epoch on. A `saver` (`fgd.resume.Saver`) cuts chunks at checkpoint
    epochs and saves the state after them. A set `cancel` (a
    `threading.Event`) ends the run at the next chunk end. Each of
    `callbacks` (`fgd.training.callbacks`, one run only) is called as
    `cb(range(first, end), rows)` after each chunk.

    Chunks aim at about `chunk_seconds()` each (`CHUNK_SECONDS` without it;
    asked once, when a chunk is first sized by a rate, so after the first
    chunk has compiled the program unless it ran before; or what is left of
    `time_limit`), at most `capacity` epochs, so the progress bar moves, the
    time limit is kept and Ctrl-C is answered within about that long. The
    first chunk is one epoch, unless `rate_key` (hashable: the compiled
    program and its shapes) names a program that ran before, whose epoch
    rate then sizes it; later chunks grow at most 64-fold, and without a time
    limit a chunk that would leave at most half a chunk of epochs takes them
    too. The host reads
    the carry's counters and the history only at chunk ends (one transfer);
    the time limit is checked after each chunk. Works for one run and for a
    batch of runs (`fgd.sweep`, runs on the last axis of every carry leaf),
    whose counters and `knobs.end` are then (R,) arrays.

    With `replay` (full batch), a run stopped by a non-finite loss in epoch k
    gets the params and state of epoch k - 1 by rerunning the compiled chunk
    from the previous chunk's input up to there: the same program on the same
    inputs, so the same numbers, and no copy of the params on every epoch.
    """
    t0 = time.perf_counter()
    bar = progress_bar(progress, epochs, desc)
    ends = lambda e: host(np.full(np.shape(carry.epoch), e), np.int32)
    chunks: list = []
    inputs: list = []
    epoch_now, stops = jax.device_get((carry.epoch, carry.stop))
    done = int(np.max(epoch_now))                       # > 0 when resumed
    aims: list = []

    def budget(now: float) -> float:
        if not aims:
            aims.append(CHUNK_SECONDS if chunk_seconds is None else chunk_seconds())
        return aims[0] if time_limit is None else min(aims[0], time_limit - (now - t0))

    known = None if rate_key is None else _RATES.peek(rate_key)
    n = 1 if known is None else int(min(capacity, max(1, known * budget(t0))))
    timed_out = False
    try:
        while done < epochs and not np.all(stops != 0):
            if cancel is not None and cancel.is_set():
                break
            end = min(epochs, done + n)
            if time_limit is None and epochs - end <= n // 2 and epochs - done <= capacity:
                end = epochs                    # no short tail chunk
            if saver is not None:
                end = saver.chunk_end(done, end)
            t_chunk = time.perf_counter()
            inputs = (inputs + [(done, carry)])[-2:]
            carry, rows = run(carry, knobs._replace(start=host(done, np.int32), end=ends(end)))
            epoch_now, stops, rows = jax.device_get((carry.epoch, carry.stop, rows))
            epoch_now = int(np.max(epoch_now))
            ran = epoch_now - done
            chunks.append({name: r[..., :ran] for name, r in rows.items()})
            for cb in callbacks:
                cb(range(done, epoch_now), chunks[-1])
            done = epoch_now
            if saver is not None:
                saver.chunk_done(carry, chunks)
            now = time.perf_counter()
            if bar is not None:
                bar.update(ran)
                last = np.asarray(chunks[-1]["loss"])[..., -1]
                bar.set_postfix(loss=f"{float(np.nanmin(last)) if last.size else float('nan'):.4g}")
            if time_limit is not None and now - t0 >= time_limit:
                timed_out = done < epochs and not np.all(stops != 0)
                break
            rate = ran / max(now - t_chunk, 1e-9)
            if rate_key is not None and ran >= n:       # a full chunk: its rate is the program's
                _RATES.put(rate_key, rate)
            n = int(min(capacity, max(1, min(64 * n, rate * budget(now)))))
        failed = np.asarray(stops) == NONFINITE
        if replay and failed.any() and inputs:
            start, base = inputs[0]
            # stopped in epoch k = epoch - 1; epochs start .. k - 2 lead to p[k - 1]
            to = np.where(failed, np.asarray(carry.epoch) - 2, start)
            again, _ = run(base, knobs._replace(start=host(start, np.int32), end=host(to, np.int32)))
            pick = lambda a, b: jnp.where(failed, a, b)   # runs on the last axis
            params, state = jax.tree.map(pick, (again.params, again.opt_state),
                                         (carry.params, carry.opt_state))
            carry = carry._replace(params=params, opt_state=state)
    finally:
        if bar is not None:
            bar.close()
    names = chunks[0].keys() if chunks else ()
    history = {name: np.concatenate([c[name] for c in chunks], axis=-1) for name in names}
    return Run(carry, history, timed_out, time.perf_counter() - t0)
