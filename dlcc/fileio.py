"""Reading and writing user files: arrays from .npy/.npz, checked before allocation; atomic writes.

Reading trusts no header: the size an .npy header declares (shape x itemsize) must fit in
the bytes that follow it (the file, or the zip member's uncompressed size), and all arrays
together must fit in the machine's physical memory, before anything is allocated.

Writing goes through a temporary file beside the target, fsynced, then renamed over it:
all or nothing; the bytes come in chunks, written one by one. Only a regular file is
replaced (through a symbolic link, its target); a new file gets 0o666 minus the umask, a
replaced one keeps its mode.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import tempfile
import tokenize
import zipfile
import zlib

import numpy as np

from dlcc.errors import DlccError

_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def read_arrays(path: str) -> dict[str, np.ndarray]:
    """The arrays of a .npz file by key, or the one array of a .npy file under ""."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"PK":
                f.seek(0)
                return {"": _read_npy(f, os.fstat(f.fileno()).st_size, path, _memory_bytes())}
            with zipfile.ZipFile(f) as z:
                return _read_npz(z, path)
    except FileNotFoundError:
        raise DlccError(f"{path}: no such file") from None
    except OSError as e:
        raise DlccError(f"{path}: cannot read ({e.strerror or e})") from None
    except MemoryError:
        raise DlccError(f"{path}: too large to load into memory") from None
    except (
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,  # zip compression methods zipfile lacks
        RuntimeError,  # encrypted zip members
        tokenize.TokenError,  # numpy's parser of a garbled .npy header
    ) as e:
        raise DlccError(f"{path}: not a valid .npy or .npz file ({e})") from None


def _read_npz(z: zipfile.ZipFile, path: str) -> dict[str, np.ndarray]:
    arrays, budget = {}, _memory_bytes()
    for info in z.infolist():
        name = info.filename.removesuffix(".npy")
        if name == info.filename:
            raise DlccError(f"{path}: member {info.filename!r} is not an .npy array")
        with z.open(info) as member:
            arrays[name] = _read_npy(member, info.file_size, f"{path}: array {name!r}", budget)
        if budget is not None:
            budget -= arrays[name].nbytes
    return arrays


def _read_npy(f, size: int, where: str, budget: int | None) -> np.ndarray:
    """One .npy stream of `size` bytes; its header is checked against `size` and `budget`."""
    version = np.lib.format.read_magic(f)
    if version not in _HEADERS:
        raise DlccError(f"{where}: unsupported .npy version {version[0]}.{version[1]}")
    shape, _, dtype = _HEADERS[version](f)
    if dtype.hasobject:
        raise DlccError(f"{where}: holds Python objects (pickles), which dlcc does not load")
    if any(d < 0 for d in shape):
        raise DlccError(f"{where}: the header declares a negative dimension {shape}")
    declared = math.prod(shape) * dtype.itemsize
    if declared > size - f.tell():
        raise DlccError(
            f"{where}: the header declares {shape} {dtype} ({declared:,} bytes) but only "
            f"{max(size - f.tell(), 0):,} bytes follow; the file is truncated or corrupt"
        )
    if budget is not None and declared > budget:
        raise DlccError(f"{where}: {shape} {dtype} ({declared:,} bytes) does not fit in memory")
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def _memory_bytes() -> int | None:
    """Physical memory: more data than this cannot be held (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def write_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Save one array as .npy, or several (or a .npz path) as .npz keyed by name; atomically."""
    buf = io.BytesIO()
    if path.endswith(".npz"):
        np.savez(buf, **arrays)
    elif len(arrays) == 1:
        np.save(buf, next(iter(arrays.values())))
    else:
        raise DlccError(f"{path}: the model has {len(arrays)} outputs; write them to a .npz")
    write_atomic(path, buf.getvalue())


def refuse_overwrite(output: str | None, *inputs: str | None) -> None:
    """Refuse an output that is one of the command's inputs (by any path or link to it)."""
    for source in inputs:
        if output and source:
            with contextlib.suppress(OSError):  # a missing file cannot be overwritten
                if os.path.samefile(output, source):
                    raise DlccError(f"{output}: is the input {source}; choose another output")


def write_atomic(path: str, *chunks: bytes) -> None:
    """Write `chunks` one after another to `path` through a temporary file and a rename: all
    or nothing (chunks, not their join: a large bundle is not copied to be written)."""
    try:
        target, mode = _target(path)
        directory = os.path.dirname(target)
        fd, tmp = tempfile.mkstemp(prefix=".dlcc-", dir=directory)
    except OSError as e:
        raise DlccError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as e:  # KeyboardInterrupt too: never leave the temporary file
        with contextlib.suppress(OSError):  # gone already after the rename; never masks `e`
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise DlccError(f"{path}: cannot write ({e.strerror or e})") from None
        raise
    _fsync_directory(directory)


def _target(path: str) -> tuple[str, int]:
    """(the file to replace, following links; its mode) — or a new file's mode from the umask."""
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        if os.path.islink(path):
            raise DlccError(f"{path}: is a dangling symbolic link; refusing to write") from None
        umask = os.umask(0)
        os.umask(umask)
        return target, 0o666 & ~umask
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise DlccError(f"{path}: is {kind}; refusing to replace it")
    return target, stat.S_IMODE(st.st_mode)


def _fsync_directory(directory: str) -> None:
    """Make the rename durable, where the OS lets a directory be opened and synced."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
