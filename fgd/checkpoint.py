"""Safe, atomic checkpoints of pytrees: `save`, `restore`, `CheckpointManager`.

A checkpoint is an ``.npz`` file (an uncompressed zip of ``.npy`` members), one
member ``leaf_<i>.npy`` per leaf plus ``header.json``::

    {"format": "fgd.checkpoint", "version": 1, "treedef": "PyTreeDef(...)",
     "environment": {"fgd": ..., "jax": ..., "numpy": ..., "x64": ...}, "metadata": {...},
     "leaves": [{"path": "[0]['W']", "member": "leaf_0.npy", "shape": [8, 3],
                 "dtype": "float32", "sha256": "..."}, ...]}

Loading never unpickles, evals or execs: each npy header is parsed by
`numpy.lib.format` and checked against the member's real size before anything
is allocated, then the bytes against their SHA-256. bfloat16/float8 leaves are
stored as same-width unsigned ints, typed PRNG keys as `jax.random.key_data`.
A bad file raises `CheckpointError` (file and reason); a `like` tree of
another structure raises `CheckpointMismatchError` (first differing leaf).

Writes are atomic: ``.tmp-fgd-<name>-<pid>-<random>.part`` in the same
directory is written (through `os.write`, so a full disk fails the write that
hits it), fsynced and `os.replace`d onto the name, then the directory fsynced:
a crash never leaves a half-written ``ckpt-*.npz``.

Reading opens only regular files: the name is `lstat`ed, a symbolic link is
followed only to a file in the same directory, the file is opened with
``O_NONBLOCK | O_NOFOLLOW`` and `fstat`ed again, and no read goes past the
size it had then. A FIFO, device, directory or link out of the directory
raises `NotRegularFileError` at once (never blocks, never reads /dev/zero).
An `OSError` of the read itself (EIO, EACCES, a timeout) is not damage: the
read is tried once more and the second error is raised as it is.

One writer per directory: `CheckpointManager(..., lock=True)` (what `fit`
uses) holds ``fcntl.flock`` on ``<directory>/.fgd-lock`` (which records the
holder's PID) until `close`; a second writer gets `CheckpointLockedError`
naming that PID. The kernel drops the lock of a process that dies, and a
lock whose recorded holder is dead is taken over.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
import re
import stat
import tempfile
import warnings
import weakref
import zipfile
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import keystr

try:
    import fcntl
except ImportError:         # Windows: no flock; the one-writer rule is not enforced there
    fcntl = None

from fgd._version import __version__

FORMAT = "fgd.checkpoint"
FORMAT_VERSION = 1
HEADER_MEMBER = "header.json"
DEFAULT_MAX_BYTES = 16 * 2**30     # refuse archives whose members exceed this
TEMP_PREFIX, TEMP_SUFFIX = ".tmp-fgd-", ".part"
LOCK_NAME = ".fgd-lock"            # the one-writer lock file of a checkpoint directory
_TEMP_PID_RE = re.compile(r".*-([0-9]+)-[a-z0-9_]+\.part")   # the writer's PID in a temp name
_MAX_HEADER = 64 * 2**20           # bytes of header.json
_MEMBER_RE = re.compile(r"leaf_(0|[1-9][0-9]{0,8})\.npy")
_CKPT_RE = re.compile(r"ckpt-(0|[1-9][0-9]*)\.npz")     # canonical names only
_NATIVE = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
           "uint64", "float16", "float32", "float64", "complex64", "complex128")
_EXTENDED = ("bfloat16", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
             "float8_e5m2fnuz", "float8_e4m3b11fnuz", "int4", "uint4")
_DTYPES = {n: np.dtype(getattr(jnp, n)) for n in _NATIVE + _EXTENDED
           if hasattr(jnp, n)}                     # older jax lacks some float8s
# Stored little-endian; bfloat16 and float8s as same-width uints, key data as uint32.
_STORED = {n: d.newbyteorder("<") if n in _NATIVE else np.dtype(f"<u{d.itemsize}")
           for n, d in _DTYPES.items()}
# What zipfile/json/numpy parsers raise on a hostile or damaged file. An OSError is
# I/O, not damage (see `_parse_oserror`), and is left out.
_PARSE_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError,
                 KeyError, TypeError, OverflowError, RecursionError, NotImplementedError)
_O_READ = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
           | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


class CheckpointError(ValueError):
    """A checkpoint file is missing parts, damaged, hostile or unreadable."""


class CheckpointMismatchError(CheckpointError):
    """A sound checkpoint whose tree does not match the `like` tree."""


class NotRegularFileError(CheckpointError):
    """A checkpoint name that is not a regular file of its directory (a FIFO, a
    device, a directory, a symbolic link out of the directory): skipped, never
    read, renamed or deleted."""


class CheckpointLockedError(RuntimeError):
    """Another live process writes to this checkpoint directory (one writer per
    directory). `pid` is the holder's process id (None if it was not recorded)."""

    def __init__(self, message: str, pid: Optional[int]):
        super().__init__(message)
        self.pid = pid


class CheckpointWarning(UserWarning):
    """`CheckpointManager.restore_latest` skipped a damaged checkpoint."""


def _parse_oserror(err: OSError) -> bool:
    """An OSError that a parser raises on a hostile file (a seek before the
    start of the file), not an I/O failure."""
    return err.errno == errno.EINVAL


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


class _Capped(io.RawIOBase):
    """A read-only view of an open regular file that never reads past `size`,
    its size when it was opened: neither a file that grows while it is read
    nor a forged offset can make fgd read more than the file held."""

    def __init__(self, fd: int, size: int):
        super().__init__()
        self._fd, self._size, self._pos = fd, size, 0
        self.failure: Optional[OSError] = None   # zipfile turns I/O errors into BadZipFile

    def _read(self, n: int) -> bytes:
        os.lseek(self._fd, self._pos, os.SEEK_SET)
        return os.read(self._fd, n)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._size - self._pos))
        if n == 0:
            return 0
        try:
            data = self._read(n)
        except OSError as err:
            self.failure = err
            raise
        buffer[:len(data)] = data
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        pos = offset + {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        if pos < 0:
            raise OSError(errno.EINVAL, "seek before the start of the file")
        self._pos = pos
        return pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def regular_file(path) -> Optional[os.stat_result]:
    """`path`'s lstat if it is a regular file, else None (missing: FileNotFoundError)."""
    st = os.lstat(path)
    return st if stat.S_ISREG(st.st_mode) else None


def _open_regular(path) -> io.BufferedReader:
    """`path` opened for reading if it is a regular file (or a symbolic link to
    one in the same directory); NotRegularFileError otherwise, without blocking."""
    path = Path(path)
    st = os.lstat(path)                 # FileNotFoundError for a missing file
    if stat.S_ISLNK(st.st_mode):
        target = Path(os.path.realpath(path))
        if target.parent != Path(os.path.realpath(path.parent)):
            _fail(path, f"a symbolic link to {os.fspath(target)!r}, outside its directory: "
                        f"not followed", NotRegularFileError)
        path, st = target, os.lstat(target)
    if not stat.S_ISREG(st.st_mode):
        _fail(path, f"{_kind(st.st_mode)}, not a regular file: not read", NotRegularFileError)
    try:
        fd = os.open(path, _O_READ)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENXIO):    # replaced by a link or a FIFO meanwhile
            _fail(path, f"not a regular file when opened: {err}", NotRegularFileError)
        raise
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            _fail(path, f"{_kind(fst.st_mode)} when opened, not a regular file", NotRegularFileError)
        return io.BufferedReader(_Capped(fd, fst.st_size))
    except BaseException:
        os.close(fd)
        raise


def _retried(read, *args, **kwargs):
    """`read(...)`, tried once more after an I/O error (EIO, EACCES, a timeout:
    not evidence of a damaged file); the second error is raised as it is."""
    try:
        return read(*args, **kwargs)
    except (CheckpointError, FileNotFoundError):
        raise
    except OSError:
        return read(*args, **kwargs)


def _fail(path, reason: str, cls=CheckpointError):
    raise cls(f"checkpoint {os.fspath(path)!r}: {reason}")


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _describe(keypath, leaf) -> tuple[str, tuple[int, ...]]:
    """(logical dtype name, shape) of a leaf; TypeError for non-array leaves."""
    if _is_key(leaf):
        return str(leaf.dtype), tuple(leaf.shape)
    leaf = np.asarray(leaf) if isinstance(leaf, (bool, int, float, complex)) else leaf
    name = np.dtype(leaf.dtype).name if hasattr(leaf, "dtype") else None
    if name not in _DTYPES or not hasattr(leaf, "shape"):
        raise TypeError(f"leaf {keystr(keypath)}: expected an array of one of "
                        f"{sorted(_DTYPES)} or a Python scalar, got {type(leaf).__name__} "
                        f"(dtype {name})")
    return name, tuple(leaf.shape)


def _encode(keypath, leaf) -> tuple[dict, np.ndarray]:
    """A leaf's header record (without member name) and its stored array."""
    name, shape = _describe(keypath, leaf)
    data = np.asarray(jax.random.key_data(leaf) if _is_key(leaf) else leaf)
    if name not in _NATIVE:
        data = data.view(_STORED.get(name, np.dtype("<u4")))
    data = np.asarray(data.astype(data.dtype.newbyteorder("<"), copy=False), order="C")
    record = {"path": keystr(keypath), "shape": list(shape),
              "dtype": name, "sha256": hashlib.sha256(data.data).hexdigest()}
    return record, data


def fingerprint(config) -> str:
    """SHA-256 (hex) of `config` as canonical JSON; TypeError if not JSON-able."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()


class _FdWriter(io.RawIOBase):
    """Writes through `os.write`, so that the write a full disk refuses
    raises its OSError (ENOSPC) right there."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        return os.write(self.fd, data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def _fsync_dir(directory: Path) -> None:
    if os.name == "posix":      # Windows cannot open a directory to fsync it
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(path, tree, metadata: Optional[dict] = None) -> Path:
    """Writes `tree` to `path` atomically (temp file, fsync, `os.replace`).

    Args:
      path: the file to write (``.npz`` advised); its directory must exist.
      tree: a pytree of jax/numpy arrays, Python scalars, typed PRNG keys.
      metadata: a JSON-serialisable dict stored with the arrays.

    Returns:
      The path written. TypeError, with nothing written, for a leaf of another
      kind or dtype or for `metadata` that is not a JSON-able dict.
    """
    path, metadata = Path(path), {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata: expected a dict, got {type(metadata).__name__}")
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    encoded = [_encode(keypath, leaf) for keypath, leaf in leaves]
    records = [{"member": f"leaf_{i}.npy", **rec} for i, (rec, _) in enumerate(encoded)]
    environment = {"fgd": __version__, "jax": jax.__version__,
                   "numpy": np.__version__, "x64": bool(jax.config.read("jax_enable_x64"))}
    header = {"format": FORMAT, "version": FORMAT_VERSION, "treedef": str(treedef),
              "environment": environment, "leaves": records, "metadata": metadata}
    try:
        text = json.dumps(header, indent=1)
    except (TypeError, ValueError) as err:
        raise TypeError(f"metadata: expected JSON-serialisable values: {err}") from err
    # the PID in the name: a cleaner can tell a dead writer's file from a live one's
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}-{os.getpid()}-",
                               suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with io.BufferedWriter(_FdWriter(fd), 1 << 20) as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                zf.writestr(HEADER_MEMBER, text)
                for record, (_, data) in zip(records, encoded):
                    with zf.open(record["member"], "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, data, allow_pickle=False)
            f.flush()
            os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _check_header(path, header) -> list[dict]:
    """Validates the header's schema; returns its leaf records."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        _fail(path, f"{HEADER_MEMBER} is not an {FORMAT} header")
    if header.get("version") != FORMAT_VERSION:
        _fail(path, f"format version {header.get('version')!r}, expected {FORMAT_VERSION}")
    records = header.get("leaves")
    if not isinstance(records, list) or not isinstance(header.get("metadata"), dict):
        _fail(path, f"{HEADER_MEMBER} lacks a 'leaves' list or a 'metadata' dict")
    for i, rec in enumerate(records):
        ok = (isinstance(rec, dict) and rec.get("member") == f"leaf_{i}.npy"
              and isinstance(rec.get("path"), str) and isinstance(rec.get("shape"), list)
              and all(type(n) is int and n >= 0 for n in rec["shape"])
              and isinstance(rec.get("dtype"), str)
              and (rec["dtype"] in _DTYPES or re.fullmatch(r"key<\w+>", rec["dtype"]))
              and re.fullmatch(r"[0-9a-f]{64}", str(rec.get("sha256"))))
        if not ok:
            _fail(path, f"{HEADER_MEMBER}: malformed record for leaf {i}: {rec!r:.200}")
    return records


@contextlib.contextmanager
def _opened(path, max_bytes: int):
    """The archive, opened as a regular file, with its checked header:
    ``with _opened(path, max_bytes) as (zf, header)``."""
    with _open_regular(path) as fp:
        try:
            zf, header = _open(path, fp, max_bytes)
            with zf:
                yield zf, header
        except CheckpointError:
            failure = getattr(fp.raw, "failure", None)
            if failure is not None:              # an I/O error that a parser took for damage
                raise failure from None
            raise


def _open(path, fp, max_bytes: int) -> tuple[zipfile.ZipFile, dict]:
    """Opens the archive in `fp` and checks members and header; arrays are not read."""
    size = fp.seek(0, os.SEEK_END)
    fp.seek(0)
    try:
        zf = zipfile.ZipFile(fp)
    except _PARSE_ERRORS as err:
        _fail(path, f"not a readable npz (truncated, or not a zip; pickles are never "
                    f"loaded): {err}")
    except OSError as err:
        if not _parse_oserror(err):
            raise
        _fail(path, f"not a readable npz: {err}")
    try:
        names, total = zf.namelist(), 0
        for info in zf.infolist():
            name = info.filename
            if name.startswith("/") or "\\" in name or ".." in name.split("/"):
                _fail(path, f"unsafe member name {name!r}")
            if name != HEADER_MEMBER and not _MEMBER_RE.fullmatch(name):
                _fail(path, f"unexpected member {name!r}")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                _fail(path, f"member {name!r} is compressed or encrypted")
            total += info.file_size
        if len(set(names)) != len(names):
            _fail(path, "duplicate member names")
        if total > min(max_bytes, size):
            _fail(path, f"members claim {total} bytes; file {size}, max_bytes={max_bytes}")
        if HEADER_MEMBER not in names or zf.getinfo(HEADER_MEMBER).file_size > _MAX_HEADER:
            _fail(path, f"no {HEADER_MEMBER} member of at most {_MAX_HEADER} bytes")
        try:
            header = json.loads(zf.read(HEADER_MEMBER).decode("utf-8"))
        except _PARSE_ERRORS as err:
            _fail(path, f"{HEADER_MEMBER} is damaged: {err}")
        except OSError as err:
            if not _parse_oserror(err):
                raise
            _fail(path, f"{HEADER_MEMBER} is damaged: {err}")
        records = _check_header(path, header)
        expected = {HEADER_MEMBER} | {rec["member"] for rec in records}
        if set(names) != expected:
            extra, missing = sorted(set(names) - expected), sorted(expected - set(names))
            _fail(path, f"members do not match the header: unexpected {extra}, "
                        f"missing {missing}")
        return zf, header
    except BaseException:
        zf.close()
        raise


def _read_member(path, zf: zipfile.ZipFile, rec: dict) -> np.ndarray:
    """Reads one leaf's stored array after checking its npy header and size."""
    member, dtype = rec["member"], _STORED.get(rec["dtype"], np.dtype("<u4"))
    info = zf.getinfo(member)
    try:
        with zf.open(info) as fp:
            version = np.lib.format.read_magic(fp)
            if version not in ((1, 0), (2, 0)):
                _fail(path, f"{member}: unsupported npy version {version}")
            shape, fortran_order, stored = (
                np.lib.format.read_array_header_1_0(fp) if version == (1, 0)
                else np.lib.format.read_array_header_2_0(fp))
            if stored.hasobject:
                _fail(path, f"{member}: object array refused (it would need pickle)")
            key_ok = rec["dtype"].startswith("key<") and len(shape) == len(rec["shape"]) + 1
            if stored != dtype or fortran_order or not (
                    list(shape) == rec["shape"] or key_ok and list(shape[:-1]) == rec["shape"]):
                _fail(path, f"{member}: npy header {stored.str}{list(shape)} does not "
                            f"match the record {rec['dtype']}{rec['shape']}")
            nbytes, offset = math.prod(shape) * stored.itemsize, fp.tell()
            if offset + nbytes != info.file_size:
                _fail(path, f"{member}: npy header claims shape {tuple(shape)} ({nbytes} "
                            f"bytes) but the member holds {info.file_size - offset}")
            data = fp.read(nbytes)
    except zipfile.BadZipFile as err:
        _fail(path, f"{member}: checksum mismatch (zip CRC-32): {err}")
    except CheckpointError:
        raise
    except _PARSE_ERRORS as err:
        _fail(path, f"{member}: damaged npy member: {err}")
    except OSError as err:
        if not _parse_oserror(err):
            raise
        _fail(path, f"{member}: damaged npy member: {err}")
    if len(data) != nbytes:
        _fail(path, f"{member}: truncated ({len(data)} of {nbytes} bytes)")
    if hashlib.sha256(data).hexdigest() != rec["sha256"]:
        _fail(path, f"{member} ({rec['path']}): SHA-256 checksum mismatch")
    return np.frombuffer(data, stored).reshape(shape)


def _match(path, records: list[dict], like_leaves: list) -> None:
    """Refuses a `like` tree whose paths, shapes or dtypes differ from the file."""
    for i, (rec, (keypath, leaf)) in enumerate(zip(records, like_leaves)):
        want, (dtype, shape) = keystr(keypath), _describe(keypath, leaf)
        if rec["path"] != want:
            _fail(path, f"leaf {i}: `like` has path {want}, the file has {rec['path']}",
                  CheckpointMismatchError)
        if (dtype, list(shape)) != (rec["dtype"], rec["shape"]):
            _fail(path, f"leaf {want}: `like` expects {dtype}{list(shape)}, the file "
                        f"holds {rec['dtype']}{rec['shape']}", CheckpointMismatchError)
        if (not isinstance(leaf, (bool, int, float, complex)) and not _is_key(leaf)
                and jax.dtypes.canonicalize_dtype(_DTYPES[dtype]) != _DTYPES[dtype]):
            _fail(path, f"leaf {want}: {dtype} needs jax_enable_x64", CheckpointMismatchError)
    n = min(len(records), len(like_leaves))
    if len(records) != len(like_leaves):
        extra = (f"`like` has extra leaf {keystr(like_leaves[n][0])}" if n < len(like_leaves)
                 else f"the file has extra leaf {records[n]['path']}")
        _fail(path, f"{extra} after {n} matching leaves", CheckpointMismatchError)


def _decode(path, rec: dict, data: np.ndarray, leaf):
    """The restored leaf: a jax array (keys rewrapped) or a Python scalar."""
    if isinstance(leaf, (bool, int, float, complex)):
        return type(leaf)(data.item())
    if _is_key(leaf):
        if data.shape != jax.random.key_data(leaf).shape:
            _fail(path, f"{rec['member']}: key data {data.shape} does not fit {rec['dtype']}")
        value = jax.random.wrap_key_data(jnp.asarray(data.astype(np.uint32)),
                                         impl=jax.random.key_impl(leaf))
    else:
        native = data.astype(data.dtype.newbyteorder("="), copy=False)
        value = native.view(_DTYPES[rec["dtype"]])
    sharding = getattr(leaf, "sharding", None)
    return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)


def load(path, like, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[Any, dict]:
    """Like `restore`, but returns ``(tree, metadata)`` read in one pass."""
    return _retried(_load, path, like, max_bytes)


def _load(path, like, max_bytes: int) -> tuple[Any, dict]:
    like_leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    with _opened(path, max_bytes) as (zf, header):
        records = header["leaves"]
        _match(path, records, like_leaves)
        values = [_decode(path, rec, _read_member(path, zf, rec), leaf)
                  for rec, (_, leaf) in zip(records, like_leaves)]
    return jax.tree_util.tree_unflatten(treedef, values), header["metadata"]


def restore(path, like, *, max_bytes: int = DEFAULT_MAX_BYTES):
    """Reads the checkpoint at `path` into the structure of `like`.

    Args:
      path: a file written by `save`.
      like: a pytree of the expected structure; its leaves give the expected
        shape and dtype (arrays, `jax.ShapeDtypeStruct`, Python scalars, typed
        keys, whose impl is used to rewrap the stored key data).
      max_bytes: refuse archives whose members total more than this.

    Returns:
      A tree with `like`'s structure holding the stored values: jax arrays of
      the stored dtype (placed with `like`'s sharding where it has one); Python
      scalar leaves come back as Python scalars of the same type.

    Raises:
      CheckpointError: the file is truncated, damaged (checksum), hostile
        (pickle, object arrays, forged shapes, unexpected members) or too big;
        `NotRegularFileError` (a CheckpointError) when `path` is not a
        regular file or is a symbolic link out of its directory.
      OSError: reading failed twice (EIO, EACCES, a timeout): an I/O error,
        not a verdict on the file.
      CheckpointMismatchError: the tree differs from `like`; names the first
        differing leaf path with the expected and stored dtype and shape.
    """
    return load(path, like, max_bytes=max_bytes)[0]


def read_header(path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """The validated JSON header (format, environment, leaves, metadata)."""
    def read():
        with _opened(path, max_bytes) as (_, header):
            return header
    return _retried(read)


def read_metadata(path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> dict:
    """The `metadata` dict given to `save`; arrays are not read or verified."""
    return read_header(path, max_bytes=max_bytes)["metadata"]


def _alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (True when unsure)."""
    if pid == os.getpid():
        return True
    if os.name != "posix":              # os.kill(pid, 0) would terminate it on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:                     # EPERM: alive, another user's
        return True
    return True


class DirectoryLock:
    """The one-writer lock of a checkpoint directory: ``fcntl.flock`` on
    ``<directory>/.fgd-lock``, which holds the holder's PID.

    `acquire` raises `CheckpointLockedError` naming the holder while another
    live process holds it. The kernel releases the lock of a process that
    dies; a lock still held although its recorded holder is dead (a forked
    child kept the file open) is taken over: the lock file is replaced by a
    new one. On systems without ``fcntl`` (Windows) nothing is enforced.
    """

    def __init__(self, directory):
        self.path = Path(directory) / LOCK_NAME
        self._fd: Optional[int] = None
        self._finalizer: Any = None

    @staticmethod
    def _holder(fd: int) -> Optional[int]:
        try:
            text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> "DirectoryLock":
        if fcntl is None or self._fd is not None:
            return self
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        for _ in range(3):
            fd = os.open(self.path, flags, 0o644)
            try:
                taken = self._take(fd)
            except BaseException:
                os.close(fd)
                raise
            if not taken:                 # a stale file replaced, or replaced meanwhile: again
                os.close(fd)
                continue
            self._fd = fd
            self._finalizer = weakref.finalize(self, os.close, fd)
            return self
        raise CheckpointLockedError(f"checkpoint directory {os.fspath(self.path.parent)!r}: "
                                    f"could not take its lock", None)

    def _take(self, fd: int) -> bool:
        """flock on `fd`, then our PID in the file; False to try again."""
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = self._holder(fd)
            if pid is not None and not _alive(pid):
                self.path.unlink(missing_ok=True)         # a dead holder's: take it over
                return False
            raise CheckpointLockedError(
                f"checkpoint directory {os.fspath(self.path.parent)!r} is in use by another "
                f"writer (process {pid if pid is not None else 'unknown'}, lock file "
                f"{LOCK_NAME}): one writer per directory. Wait for it to end, stop it, or "
                f"use another checkpoint_dir", pid) from None
        except OSError as err:            # a filesystem without flock (some network mounts)
            if err.errno not in {getattr(errno, n) for n in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "EINVAL")
                                 if hasattr(errno, n)}:
                raise
            warnings.warn(f"checkpoint directory {os.fspath(self.path.parent)!r}: cannot lock "
                          f"it ({err}); one writer per directory is not enforced there",
                          CheckpointWarning, stacklevel=4)
        try:
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                return False
        except FileNotFoundError:
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def release(self) -> None:
        if self._fd is not None:
            self._finalizer()                     # closing the descriptor drops the lock
            self._fd = self._finalizer = None

    @property
    def held(self) -> bool:
        return self._fd is not None


class CheckpointManager:
    """Numbered checkpoints ``ckpt-<step>.npz`` in one directory, last `keep` kept.

    `directory` is created if missing; `keep=None` keeps all; `max_bytes` goes
    to `restore`. One writer per directory: with `lock=True` (as `fit` uses
    it) the manager holds the directory's `DirectoryLock` until `close()` (or
    the end of a ``with`` block), and a second writer gets
    `CheckpointLockedError` naming the holder's PID. Construction removes the
    temp files a crashed writer left (``.tmp-fgd-*.part``, never read): with
    the lock, every one; without, those whose writer's PID is dead. Entries
    that are not regular files (a directory named like a temp file, a FIFO
    or symbolic link named like a checkpoint) are never deleted or renamed.
    """

    def __init__(self, directory, keep: Optional[int] = 3, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, lock: bool = False):
        if keep is not None and (type(keep) is not int or keep < 1):
            raise ValueError(f"keep: expected a positive int or None, got {keep!r}")
        self.directory, self.keep, self.max_bytes = Path(directory), keep, max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self.lock = DirectoryLock(self.directory)
        if lock:
            self.lock.acquire()
        self._clean_temps()

    def _clean_temps(self) -> None:
        """Best effort: a temp file that cannot be removed is ignored (never read)."""
        for entry in self.directory.iterdir():
            name = entry.name
            if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
                continue
            match = _TEMP_PID_RE.fullmatch(name)
            pid = int(match.group(1)) if match else None
            try:
                if regular_file(entry) is None:
                    continue
                if self.lock.held or (pid is not None and not _alive(pid)):
                    entry.unlink(missing_ok=True)
            except OSError:
                continue

    def close(self) -> None:
        """Releases the directory lock (if held)."""
        self.lock.release()

    def __enter__(self) -> "CheckpointManager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def path(self, step: int) -> Path:
        """The file name for `step`: ``<directory>/ckpt-<step>.npz``."""
        return self.directory / f"ckpt-{step}.npz"

    def steps(self, *, regular: bool = False) -> list[int]:
        """Steps of the checkpoint names present, oldest first; with `regular`,
        only those that are regular files."""
        out = []
        for entry in self.directory.iterdir():
            m = _CKPT_RE.fullmatch(entry.name)
            if m is None:
                continue
            if regular:
                try:
                    if regular_file(entry) is None:
                        continue
                except FileNotFoundError:
                    continue
            out.append(int(m.group(1)))
        return sorted(out)

    def remove(self, step: int) -> bool:
        """Deletes checkpoint `step` if it is a regular file; False if it is not
        one (left in place) or missing."""
        path = self.path(step)
        try:
            if regular_file(path) is None:
                return False
        except FileNotFoundError:
            return False
        path.unlink(missing_ok=True)
        return True

    def save(self, step: int, tree, metadata: Optional[dict] = None) -> Path:
        """Saves `tree` as step `step` (also stored as metadata["step"]), then
        deletes all but the newest `keep` checkpoints (never the one just saved,
        never an entry that is not a regular file)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"step: expected a non-negative int, got {step!r}")
        step = int(step)      # numpy ints are not JSON
        path = save(self.path(step), tree, {**(metadata or {}), "step": step})
        if self.keep is not None:
            for old in self.steps(regular=True)[:-self.keep]:
                if old != step:
                    self.remove(old)
            _fsync_dir(self.directory)
        return path

    def restore_latest(self, like) -> Optional[tuple[Any, dict]]:
        """``(tree, metadata)`` of the newest checkpoint that loads, or None.

        A damaged checkpoint is renamed ``<name>.corrupt`` (so it is neither
        retried nor counted by `keep`) with a `CheckpointWarning` naming the
        file and why, and the previous one is tried. A name that is not a
        regular file is skipped with a warning and left as it is.

        Raises:
          CheckpointMismatchError: a sound checkpoint does not match `like`
            (another model or optimizer); older ones are not tried.
          OSError: an I/O error that persisted over a second try.
        """
        for step in reversed(self.steps()):
            path = self.path(step)
            try:
                return load(path, like, max_bytes=self.max_bytes)
            except CheckpointMismatchError:
                raise
            except NotRegularFileError as err:
                warnings.warn(f"{err}; skipped it (left in place) and trying the previous "
                              f"checkpoint", CheckpointWarning, stacklevel=2)
            except FileNotFoundError:
                continue
            except CheckpointError as err:
                os.replace(path, path.with_name(path.name + ".corrupt"))
                warnings.warn(f"{err}; renamed it {path.name}.corrupt and trying the "
                              f"previous checkpoint", CheckpointWarning, stacklevel=2)
        return None
