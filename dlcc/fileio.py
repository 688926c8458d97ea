"""Reading and writing user files: atomic writes, and arrays from .npy/.npz."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np

from dlcc.errors import DlccError


def write_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename: all or nothing."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".dlcc-", dir=directory)
    except OSError as e:
        raise DlccError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as e:
        os.unlink(tmp)
        if isinstance(e, OSError):
            raise DlccError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def read_arrays(path: str) -> dict[str, np.ndarray] | np.ndarray:
    """The array of a .npy file, or the arrays of a .npz file by key."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    except FileNotFoundError:
        raise DlccError(f"{path}: no such file") from None
    except (OSError, ValueError, EOFError) as e:
        raise DlccError(f"{path}: not a .npy or .npz file ({e})") from None


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
