"""Tests for fgd.checkpoint: exact round trips, atomic writes, hostile files.

The reference value of every round trip is the saved array itself: restored
leaves must be bit-identical (same dtype, same bytes), so no tolerance is used.
"""
import io
import os
import pickle
import tracemalloc
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fgd import checkpoint as ckpt
from fgd.checkpoint import CheckpointError, CheckpointManager, CheckpointMismatchError


class AdamState(NamedTuple):
    count: jax.Array   # () int32
    mu: list
    nu: list


class Evil:
    """Unpickling this creates `marker`: proof that a loader ran pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def make_tree(seed=0, impl="threefry2x32", n_hidden=3):
    """Params in every supported float width, an Adam-like state and a key."""
    rng = np.random.default_rng(seed)
    params = [
        {"W": jnp.asarray(rng.normal(size=(n_hidden, 2)), jnp.float16),
         "b": jnp.asarray(rng.normal(size=(n_hidden, 1)), jnp.bfloat16)},
        {"W": jnp.asarray(rng.normal(size=(1, n_hidden)), jnp.float32),
         "b": jnp.asarray(rng.normal(size=(1, 1)), jnp.float64)},
    ]
    state = AdamState(count=jnp.asarray(7, jnp.int32),
                      mu=jax.tree_util.tree_map(lambda x: x * 0.5, params),
                      nu=jax.tree_util.tree_map(lambda x: x * x, params))
    return {"params": params, "opt": state, "key": jax.random.key(seed, impl=impl),
            "order": np.arange(5, dtype=np.int32), "lr": 0.125, "epoch": 3,
            "mask": np.array([True, False]), "done": False}


def assert_bit_identical(got, want):
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0],
                            jax.tree_util.tree_leaves(want)):
        if isinstance(w, (int, float)):
            assert type(g) is type(w) and g == w, path
            continue
        assert isinstance(g, jax.Array) and g.dtype == w.dtype and g.shape == w.shape, path
        if jnp.issubdtype(w.dtype, jax.dtypes.prng_key):
            assert jax.random.key_impl(g) == jax.random.key_impl(w), path
            g, w = jax.random.key_data(g), jax.random.key_data(w)
        assert np.asarray(g).tobytes() == np.asarray(w).tobytes(), path


def rewrite(path, replace=None, drop=()):
    """Rebuilds the archive at `path` with members replaced, added or dropped."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members = {k: v for k, v in members.items() if k not in drop} | (replace or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data)


def npy_bytes(array, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


# --- round trips -----------------------------------------------------------

@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_round_trip_is_bit_identical(tmp_path, impl):
    tree = make_tree(impl=impl)
    path = ckpt.save(tmp_path / "a.npz", tree)
    restored = ckpt.restore(path, like=make_tree(seed=1, impl=impl))
    assert_bit_identical(restored, tree)
    assert isinstance(restored["opt"], AdamState)
    assert restored["opt"].count.dtype == jnp.int32
    # the restored key still draws the same numbers
    np.testing.assert_array_equal(jax.random.normal(restored["key"], (3,)),
                                  jax.random.normal(tree["key"], (3,)))


def test_restore_into_shape_dtype_structs_and_numpy_like(tmp_path):
    tree = {"w": np.linspace(0.0, 1.0, 6).reshape(2, 3), "n": np.int32(4)}
    ckpt.save(tmp_path / "a.npz", tree)
    like = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    assert_bit_identical(ckpt.restore(tmp_path / "a.npz", like), tree)


def test_metadata_round_trip_and_header(tmp_path):
    meta = {"epoch": 12, "position": 340, "config": "ab12", "losses": [0.5, 0.25],
            "nested": {"ok": True, "none": None}}
    tree = make_tree()
    path = ckpt.save(tmp_path / "a.npz", tree, meta)
    assert ckpt.read_metadata(path) == meta
    header = ckpt.read_header(path)
    assert header["version"] == ckpt.FORMAT_VERSION
    assert header["environment"]["x64"] is True      # conftest enables float64
    assert header["environment"]["jax"] == jax.__version__
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    assert [r["path"] for r in header["leaves"]] == paths and "['opt'].count" in paths
    assert ckpt.load(path, make_tree())[1] == meta
    with np.load(path, allow_pickle=False) as plain:       # plain numpy reads it too
        i = paths.index("['order']")
        np.testing.assert_array_equal(plain[f"leaf_{i}"], tree["order"])
    assert ckpt.fingerprint({"b": 1, "a": [2]}) == ckpt.fingerprint({"a": [2], "b": 1})


def test_save_rejects_bad_leaves_and_metadata_without_writing(tmp_path):
    with pytest.raises(TypeError, match=r"\['s'\].*str"):
        ckpt.save(tmp_path / "a.npz", {"s": "text"})
    with pytest.raises(TypeError, match="metadata"):
        ckpt.save(tmp_path / "a.npz", {"w": np.ones(2)}, {"f": object()})
    assert list(tmp_path.iterdir()) == []


# --- atomic writes and the manager -----------------------------------------

def test_leftover_temp_file_is_cleaned_and_never_read(tmp_path):
    tree = make_tree()
    CheckpointManager(tmp_path).save(3, tree)
    leftover = tmp_path / f"{ckpt.TEMP_PREFIX}ckpt-9.npz-x1y2{ckpt.TEMP_SUFFIX}"
    leftover.write_bytes(b"half a checkpoint")
    other = tmp_path / "notes.txt"
    other.write_text("not ours")
    live = tmp_path / f"{ckpt.TEMP_PREFIX}ckpt-8.npz-{os.getpid()}-abc{ckpt.TEMP_SUFFIX}"
    live.write_bytes(b"a live writer's")
    assert CheckpointManager(tmp_path).steps() == [3] and leftover.exists(), \
        "without the lock only dead writers' temp files go"
    manager = CheckpointManager(tmp_path, lock=True)     # the one writer: every temp file goes
    assert not leftover.exists() and not live.exists() and other.exists()
    manager.close()
    assert manager.steps() == [3]
    restored, meta = manager.restore_latest(make_tree(seed=1))
    assert meta["step"] == 3
    assert_bit_identical(restored, tree)


def test_crash_before_replace_leaves_no_checkpoint(tmp_path, monkeypatch):
    ckpt.save(tmp_path / "ckpt-1.npz", {"w": np.zeros(3)})

    def crash(src, dst):
        raise KeyboardInterrupt("killed between write and replace")

    monkeypatch.setattr(ckpt.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        CheckpointManager(tmp_path).save(2, {"w": np.ones(3)})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-1.npz"]
    assert CheckpointManager(tmp_path).steps() == [1]


@pytest.mark.parametrize("keep, expected", [(1, [5]), (3, [3, 4, 5]), (None, list(range(6)))])
def test_keep_last_k(tmp_path, keep, expected):
    manager = CheckpointManager(tmp_path / "run", keep=keep)
    for step in range(6):
        manager.save(np.int64(step), {"w": np.full(2, step, np.float32)}, {"epoch": step})
    assert manager.steps() == expected
    tree, meta = manager.restore_latest({"w": np.zeros(2, np.float32)})
    assert meta == {"epoch": 5, "step": 5}
    np.testing.assert_array_equal(tree["w"], np.full(2, 5, np.float32))


def test_manager_validates_arguments_and_empty_directory(tmp_path):
    for keep in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="keep"):
            CheckpointManager(tmp_path, keep=keep)
    manager = CheckpointManager(tmp_path)
    with pytest.raises(ValueError, match="step"):
        manager.save(-1, {"w": np.ones(1)})
    assert manager.restore_latest({"w": np.ones(1)}) is None


# --- damaged files ----------------------------------------------------------

@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.99])
def test_truncated_file_is_rejected_and_manager_falls_back(tmp_path, fraction):
    manager = CheckpointManager(tmp_path)
    good, newer = make_tree(seed=1), make_tree(seed=2)
    manager.save(1, good)
    path = manager.save(2, newer)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="ckpt-2.npz"):
        ckpt.restore(path, like=good)
    with pytest.warns(ckpt.CheckpointWarning, match="ckpt-2.npz"):
        restored, meta = manager.restore_latest(good)
    assert meta["step"] == 1
    assert_bit_identical(restored, good)
    assert (tmp_path / "ckpt-2.npz.corrupt").exists() and manager.steps() == [1]


def test_flipped_byte_in_an_array_fails_the_checksum(tmp_path):
    values = np.arange(1.0, 65.0) * 1.25           # a byte pattern found once
    path = ckpt.save(tmp_path / "a.npz", {"w": values})
    data = bytearray(path.read_bytes())
    at = data.find(values.tobytes())
    assert at > 0
    data[at + 8 * 10 + 3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"a\.npz.*checksum"):
        ckpt.restore(path, like={"w": values})


def test_consistent_zip_with_altered_array_fails_sha256(tmp_path):
    values = np.arange(6, dtype=np.float32)
    path = ckpt.save(tmp_path / "a.npz", {"w": values})
    rewrite(path, {"leaf_0.npy": npy_bytes(values + 1)})    # fresh zip CRC
    with pytest.raises(CheckpointError, match=r"\['w'\].*SHA-256"):
        ckpt.restore(path, like={"w": values})


# --- hostile files ----------------------------------------------------------

def test_pickle_named_npz_is_never_unpickled(tmp_path):
    probe = tmp_path / "probe"
    assert pickle.loads(pickle.dumps(Evil(probe))) is None and probe.exists()  # it is live
    marker = tmp_path / "marker"
    manager = CheckpointManager(tmp_path / "run")
    path = manager.path(5)
    path.write_bytes(pickle.dumps({"w": Evil(marker)}))
    with pytest.raises(CheckpointError, match="ckpt-5.npz.*pickles are never loaded"):
        ckpt.restore(path, like={"w": np.ones(1)})
    with pytest.raises(CheckpointError):
        ckpt.read_metadata(path)
    with pytest.warns(ckpt.CheckpointWarning):
        assert manager.restore_latest({"w": np.ones(1)}) is None
    assert not marker.exists()


def test_object_array_member_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = ckpt.save(tmp_path / "a.npz", {"w": np.ones(2)})
    payload = np.array([Evil(marker), 1], dtype=object)
    rewrite(path, {"leaf_0.npy": npy_bytes(payload, allow_pickle=True)})
    with pytest.raises(CheckpointError, match="leaf_0.npy: object array"):
        ckpt.restore(path, like={"w": np.ones(2)})
    assert not marker.exists()


def forged_npy(shape, descr="<f8", payload=b"\0" * 64):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def test_forged_huge_shape_is_rejected_before_allocating(tmp_path):
    path = ckpt.save(tmp_path / "a.npz", {"w": np.ones(8)})
    header = ckpt.read_header(path)
    header["leaves"][0]["shape"] = [10**12]      # the record agrees with the lie
    import json
    rewrite(path, {"leaf_0.npy": forged_npy((10**12,)),
                   "header.json": json.dumps(header).encode()})
    like = {"w": jax.ShapeDtypeStruct((10**12,), jnp.float64)}
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"claims shape \(1000000000000,\)"):
            ckpt.restore(path, like)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**24, f"restore allocated {peak} bytes"


def test_npy_header_disagreeing_with_record_is_rejected(tmp_path):
    path = ckpt.save(tmp_path / "a.npz", {"w": np.ones(8)})
    rewrite(path, {"leaf_0.npy": forged_npy((10**12,))})
    with pytest.raises(CheckpointError, match="does not match the record"):
        ckpt.restore(path, {"w": np.ones(8)})


def test_total_size_cap(tmp_path):
    path = ckpt.save(tmp_path / "a.npz", {"w": np.ones(1000)})
    with pytest.raises(CheckpointError, match="max_bytes=100"):
        ckpt.restore(path, {"w": np.ones(1000)}, max_bytes=100)


@pytest.mark.parametrize("name, reason", [
    ("../evil", "unsafe member name '../evil'"),
    ("/etc/evil", "unsafe member name '/etc/evil'"),
    ("extra.npy", "unexpected member 'extra.npy'"),
    ("leaf_1.npy", r"unexpected \['leaf_1.npy'\]"),
])
def test_unexpected_or_unsafe_members_are_refused(tmp_path, name, reason):
    path = ckpt.save(tmp_path / "a.npz", {"w": np.ones(2)})
    rewrite(path, {name: npy_bytes(np.ones(2))})
    with pytest.raises(CheckpointError, match=reason):
        ckpt.restore(path, {"w": np.ones(2)})
    assert not (tmp_path.parent / "evil").exists()


def test_missing_member_and_foreign_header_are_refused(tmp_path):
    path = ckpt.save(tmp_path / "a.npz", {"w": np.ones(2)})
    rewrite(path, drop=["leaf_0.npy"])
    with pytest.raises(CheckpointError, match=r"missing \['leaf_0.npy'\]"):
        ckpt.restore(path, {"w": np.ones(2)})
    rewrite(path, {"header.json": b'{"format": "other"}'})
    with pytest.raises(CheckpointError, match="not an fgd.checkpoint header"):
        ckpt.read_metadata(path)


@pytest.mark.parametrize("header", [
    b"not json", b"[" * 100000, b'{"format": "fgd.checkpoint", "version": 99}',
    b'{"format": "fgd.checkpoint", "version": 1, "leaves": [{"dtype": []}], "metadata": {}}',
])
def test_malformed_header_is_refused(tmp_path, header):
    path = ckpt.save(tmp_path / "a.npz", {"w": np.ones(2)})
    rewrite(path, {"header.json": header})
    with pytest.raises(CheckpointError, match="a.npz"):
        ckpt.restore(path, {"w": np.ones(2)})


# --- restoring into another structure ---------------------------------------

@pytest.mark.parametrize("like_fn, match", [
    (lambda: make_tree(n_hidden=4), r"\['opt'\]\.mu\[0\]\['W'\]: `like` expects float16\[4, 2\], "
                                    r"the file holds float16\[3, 2\]"),
    (lambda: {**make_tree(), "order": np.arange(5, dtype=np.int64)},
     r"\['order'\]: `like` expects int64\[5\], the file holds int32\[5\]"),
    (lambda: {**make_tree(), "opt": (jnp.asarray(0, jnp.int32),)},
     r"`like` has path \['opt'\]\[0\], the file has \['opt'\]\.count"),
    (lambda: {k: v for k, v in make_tree().items() if k != "params"},
     r"extra leaf \[.params.\]\[0\]\[.W.\] after 15 matching"),
])
def test_structure_mismatch_names_the_leaf(tmp_path, like_fn, match):
    manager = CheckpointManager(tmp_path)
    path = manager.save(1, make_tree())
    with pytest.raises(CheckpointMismatchError, match=match):
        ckpt.restore(path, like_fn())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointMismatchError):
            manager.restore_latest(like_fn())
    assert manager.steps() == [1]                 # a sound file is never renamed
