"""fit's callbacks: called at chunk ends with the epochs and history rows; the CSV
and TensorBoard loggers, read back (TensorBoard with tensorboardX's own proto)."""
import csv
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fgd

RNG = np.random.default_rng(2)
NET = fgd.MLP((3, 8, 2), hidden="logsig", output="purelin")
LOSS = fgd.make_loss(NET, "sse")
X, Y = RNG.uniform(-1, 1, (3, 20)), RNG.uniform(-1, 1, (2, 20))
PARAMS = NET.init(jax.random.key(0), "uniform", dtype=jnp.float64)


class Recorder:
    def __init__(self):
        self.calls, self.closed = [], 0

    def __call__(self, epochs, rows):
        self.calls.append((epochs, {k: np.array(v) for k, v in rows.items()}))

    def close(self):
        self.closed += 1


def test_callbacks_get_each_chunk_once_with_its_epochs_and_rows():
    rec = Recorder()
    result = fgd.fit(LOSS, PARAMS, fgd.sgd(0.05), X, Y, epochs=3000, callbacks=[rec],
                     history=("loss", "grad_norm"), validation=(X, Y))
    epochs = [e for r, _ in rec.calls for e in r]
    assert epochs == list(range(3000)) and rec.closed == 1
    assert len(rec.calls) < 100                  # chunks of epochs, not one call per epoch
    for name in ("loss", "grad_norm", "val_loss"):
        got = np.concatenate([rows[name] for _, rows in rec.calls])
        np.testing.assert_array_equal(got, result.history[name])
    assert all(len(rows["loss"]) == len(r) for r, rows in rec.calls)


def test_a_failing_callback_stops_fit_and_is_still_closed():
    class Boom(Recorder):
        def __call__(self, epochs, rows):
            raise RuntimeError("disk full")

    boom = Boom()
    with pytest.raises(RuntimeError, match="disk full"):
        fgd.fit(LOSS, PARAMS, fgd.sgd(0.05), X, Y, epochs=10, callbacks=[boom])
    assert boom.closed == 1
    with pytest.raises(TypeError, match=r"callbacks\[1\] must be callable"):
        fgd.fit(LOSS, PARAMS, fgd.sgd(0.05), X, Y, epochs=10, callbacks=[boom, 3])
    with pytest.raises(TypeError, match="callbacks must be a list"):
        fgd.fit(LOSS, PARAMS, fgd.sgd(0.05), X, Y, epochs=10, callbacks=boom)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], np.array([[float(v) for v in r] for r in rows[1:]])


def test_csv_logger_reads_back_exactly_and_a_resumed_run_appends(tmp_path):
    path, ckpt = tmp_path / "run.csv", tmp_path / "ckpt"
    fgd.fit(LOSS, PARAMS, fgd.sgd(0.05), X, Y, epochs=40, history=("loss", "lr"),
            checkpoint_dir=ckpt, checkpoint_every=10, callbacks=[fgd.CSVLogger(path)])
    result = fgd.fit(LOSS, PARAMS, fgd.sgd(0.05), X, Y, epochs=100, history=("loss", "lr"),
                     checkpoint_dir=ckpt, checkpoint_every=10, callbacks=[fgd.CSVLogger(path)])
    assert result.resumed_epoch == 40
    header, table = read_csv(path)
    assert header == ["epoch", "loss", "lr"]
    np.testing.assert_array_equal(table[:, 0], np.arange(100))
    np.testing.assert_array_equal(table[:, 1], result.history["loss"])     # repr: exact
    np.testing.assert_array_equal(table[:, 2], 0.05)
    fgd.fit(LOSS, PARAMS, fgd.sgd(0.05), X, Y, epochs=5, callbacks=[fgd.CSVLogger(path)])
    assert read_csv(path)[1].shape == (5, 2)                     # a fresh run overwrites


def read_events(logdir):
    """(tag, step, value) of every scalar in the event files, framing and CRCs checked."""
    from tensorboardX.crc32c import crc32c
    from tensorboardX.proto import event_pb2

    def masked(data):
        crc = crc32c(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    out = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            header = data[at:at + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[at + 8:at + 12])[0] == masked(header)
            body = data[at + 12:at + 12 + length]
            assert struct.unpack("<I", data[at + 12 + length:at + 16 + length])[0] == masked(body)
            at += 16 + length
            event = event_pb2.Event.FromString(body)
            for v in event.summary.value:
                out.append((v.tag, event.step, v.simple_value))
    return out


def test_tensorboard_logger_writes_scalars_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboardX")
    result = fgd.fit(LOSS, PARAMS, fgd.adam(0.01), X, Y, epochs=50, validation=(X, Y),
                     callbacks=[fgd.TensorBoardLogger(tmp_path / "adam", prefix="traffic/")])
    events = read_events(tmp_path / "adam")
    for name in ("loss", "val_loss"):
        got = sorted((s, v) for tag, s, v in events if tag == f"traffic/{name}")
        assert [s for s, _ in got] == list(range(50))
        np.testing.assert_allclose([v for _, v in got], result.history[name], rtol=1e-6)  # float32


# --- how the driver cuts a run into chunks ---------------------------------------------------
def _fake_chunks(monkeypatch, epochs: int, rate: float, capacity: int = 1000,
                 time_limit=None, chunk_seconds=None) -> list:
    """The (start, end) epochs of each chunk `drive` asks for, from a chunk
    runner that does no device work but moves the driver's clock on by
    `rate` epochs per second, a rate the driver also remembers from before
    (so the first chunk is sized by it too), with 1 s chunks unless
    `chunk_seconds` (the driver's callable aim) says otherwise."""
    import types

    from fgd.training import driver
    from fgd.training.chunk import Carry, Knobs

    clock = [0.0]
    asked = []

    def run(carry, knobs):
        start, end = int(knobs.start), int(knobs.end)
        asked.append((start, end))
        clock[0] += (end - start) / rate
        return carry._replace(epoch=np.int32(end)), {"loss": np.zeros(capacity)}

    monkeypatch.setattr(driver, "CHUNK_SECONDS", 1.0)
    monkeypatch.setattr(driver, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    driver._RATES.put("fake program", rate)
    carry = Carry(np.int32(0), np.int32(0), np.int32(0), None, None, None)
    knobs = Knobs(*(np.int32(0),) * 5)
    out = driver.drive(run, carry, knobs, epochs=epochs, capacity=capacity, time_limit=time_limit,
                       progress=False, replay=False, rate_key="fake program",
                       chunk_seconds=chunk_seconds)
    assert out.history["loss"].shape == (epochs,)
    return asked


def test_a_chunk_takes_a_tail_of_at_most_half_a_chunk(monkeypatch):
    """At 4 epochs/s and 1 s chunks: 10 epochs are 4 + 6 (the 2 left after 8
    are half a chunk), 11 epochs 4 + 4 + 3, 13 epochs 4 + 4 + 5."""
    assert _fake_chunks(monkeypatch, 10, 4.0) == [(0, 4), (4, 10)]
    assert _fake_chunks(monkeypatch, 11, 4.0) == [(0, 4), (4, 8), (8, 11)]
    assert _fake_chunks(monkeypatch, 13, 4.0) == [(0, 4), (4, 8), (8, 13)]
    assert _fake_chunks(monkeypatch, 1, 4.0) == [(0, 1)]


def test_the_tail_rule_keeps_the_capacity_and_the_time_limit(monkeypatch):
    """A chunk never holds more epochs than the compiled history (`capacity`),
    and with a time limit the chunks are cut at the time left, tail or not."""
    assert _fake_chunks(monkeypatch, 10, 4.0, capacity=5) == [(0, 4), (4, 8), (8, 10)]
    assert _fake_chunks(monkeypatch, 10, 4.0, time_limit=60.0) == [(0, 4), (4, 8), (8, 10)]


def test_chunk_seconds_sets_the_chunks_aim(monkeypatch):
    """At 4 epochs/s, chunks aimed at 2.5 s hold 10 epochs (25 epochs: 10 +
    15, the last 5 being half a chunk)."""
    aim = lambda: 2.5
    assert _fake_chunks(monkeypatch, 25, 4.0, chunk_seconds=aim) == [(0, 10), (10, 25)]
    assert _fake_chunks(monkeypatch, 30, 4.0, chunk_seconds=aim) == [(0, 10), (10, 20), (20, 30)]
