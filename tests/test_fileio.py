"""dlcc.fileio: untrusted .npy/.npz headers checked before allocation; atomic, careful writes."""

from __future__ import annotations

import io
import os
import stat
import zipfile

import numpy as np
import pytest

from dlcc import fileio
from dlcc.errors import DlccError
from dlcc.fileio import read_arrays, write_atomic


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def lying_npy(shape: tuple, payload: bytes = b"\0" * 64, version=(1, 0)) -> bytes:
    """An .npy whose header declares `shape` float32, followed by only `payload`."""
    buf = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": shape}
    if version == (1, 0):
        np.lib.format.write_array_header_1_0(buf, header)
    else:
        np.lib.format.write_array_header_2_0(buf, header)
    return buf.getvalue() + payload


def garbled_header_length() -> bytes:
    """An .npy whose header length cuts its dict short (numpy raises a tokenizer error)."""
    blob = bytearray(npy_bytes(np.arange(3.0)))
    blob[8] ^= 0x55
    return bytes(blob)


def write_npz(path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(path)


def error_of(fn, *args) -> str:
    with pytest.raises(DlccError) as info:
        fn(*args)
    return str(info.value)


# -- reading --------------------------------------------------------------------------------
def test_round_trip_npy_and_npz(tmp_path):
    x, y = np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2, 3])
    (tmp_path / "x.npy").write_bytes(npy_bytes(np.asfortranarray(x)))
    np.savez_compressed(tmp_path / "d.npz", image=x, labels=y)
    np.testing.assert_array_equal(read_arrays(str(tmp_path / "x.npy"))[""], x)
    both = read_arrays(str(tmp_path / "d.npz"))
    assert sorted(both) == ["image", "labels"]
    np.testing.assert_array_equal(both["labels"], y)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_npy_header_declaring_a_huge_shape_is_refused_before_allocation(tmp_path, version):
    path = tmp_path / "huge.npy"
    path.write_bytes(lying_npy((100_000, 100_000, 100), version=version))
    message = error_of(read_arrays, str(path))
    assert "huge.npy" in message and "(100000, 100000, 100)" in message and "truncated" in message


def test_npz_member_declaring_more_than_its_size_is_refused(tmp_path):
    path = write_npz(tmp_path / "bomb.npz", {"image.npy": lying_npy((10**6, 10**6))})
    message = error_of(read_arrays, path)
    assert "bomb.npz: array 'image'" in message and "only" in message


def test_arrays_larger_than_memory_are_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "d.npz")
    np.savez(path, a=np.zeros(100, np.float32), b=np.zeros(100, np.float32))
    monkeypatch.setattr(fileio, "_memory_bytes", lambda: 600)  # a fits, a + b does not
    message = error_of(read_arrays, path)
    assert "array 'b'" in message and "does not fit in memory" in message


@pytest.mark.parametrize(
    "content, fragment",
    [
        (npy_bytes(np.array([{"a": 1}], dtype=object)), "Python objects"),
        (b"\x93NUMPY\x03\x00" + lying_npy((2,))[8:], "unsupported .npy version 3.0"),
        (lying_npy((-1, 4)), "negative dimension"),
        (garbled_header_length(), "not a valid .npy or .npz"),
        (b"this is text, not numpy\n", "not a valid .npy or .npz"),
        (b"", "not a valid .npy or .npz"),
        (b"PK\x03\x04 a broken zip", "not a valid .npy or .npz"),
    ],
)
def test_bad_files_are_clean_errors(tmp_path, content, fragment):
    path = tmp_path / "bad.npy"
    path.write_bytes(content)
    message = error_of(read_arrays, str(path))
    assert "bad.npy" in message and fragment in message


def test_npz_with_a_member_that_is_not_an_array(tmp_path):
    path = write_npz(tmp_path / "d.npz", {"x.npy": npy_bytes(np.ones(3)), "README": b"hi"})
    assert "member 'README' is not an .npy array" in error_of(read_arrays, path)


def test_missing_file_and_directory(tmp_path):
    assert "no such file" in error_of(read_arrays, str(tmp_path / "none.npz"))
    assert "cannot read" in error_of(read_arrays, str(tmp_path))


@pytest.mark.parametrize("at", [0.1, 0.5, 0.9, 0.99])
def test_truncated_or_flipped_npz_is_read_or_refused_cleanly(tmp_path, at):
    buf = io.BytesIO()
    np.savez_compressed(buf, image=np.random.default_rng(0).random((16, 8)), labels=np.arange(16))
    blob = buf.getvalue()
    k = int(len(blob) * at)
    for name, data in {
        "cut": blob[:k],
        "flip": blob[:k] + bytes([blob[k] ^ 0x55]) + blob[k + 1 :],
    }.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(data)
        try:
            read_arrays(str(path))
        except DlccError as e:  # anything else escaping is the bug this test looks for
            assert f"{name}.npz" in str(e)


# -- writing --------------------------------------------------------------------------------
def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def leftovers(directory) -> list[str]:
    return [p for p in os.listdir(directory) if p.startswith(".dlcc-")]


def test_new_file_respects_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_atomic(str(tmp_path / "new.bin"), b"data")
    finally:
        os.umask(old)
    assert mode(tmp_path / "new.bin") == 0o640


def test_chunks_are_written_one_after_another(tmp_path):
    path = tmp_path / "m.bin"
    write_atomic(str(path), b"head", memoryview(b"-data-"), b"", bytearray(b"tail"))
    assert path.read_bytes() == b"head-data-tail"
    with pytest.raises(TypeError):  # a failing chunk: the old file stays, nothing is left
        write_atomic(str(path), b"new", None)
    assert path.read_bytes() == b"head-data-tail" and not leftovers(tmp_path)


@pytest.mark.parametrize("existing", [0o600, 0o755])
def test_replacing_keeps_the_mode(tmp_path, existing):
    path = tmp_path / "old.bin"
    path.write_bytes(b"old")
    os.chmod(path, existing)
    write_atomic(str(path), b"new")
    assert path.read_bytes() == b"new" and mode(path) == existing


def test_a_symlink_to_a_regular_file_writes_its_target(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "m.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(target)
    write_atomic(str(link), b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert not leftovers(tmp_path) and not leftovers(tmp_path / "real")


def test_only_regular_files_are_replaced(tmp_path):
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "is a directory" in error_of(write_atomic, str(tmp_path / "dir"), b"x")
    assert "not a regular file" in error_of(write_atomic, str(tmp_path / "fifo"), b"x")
    assert "dangling symbolic link" in error_of(write_atomic, str(tmp_path / "dangling"), b"x")
    assert not (tmp_path / "nowhere").exists() and not leftovers(tmp_path)


def test_file_and_directory_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.fstat(fd).st_mode) or real(fd))
    write_atomic(str(tmp_path / "m.bin"), b"data")
    assert [stat.S_ISREG(m) for m in synced] == [True, False]


def test_interrupt_before_the_rename_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "m.bin"
    path.write_bytes(b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(str(path), b"new")
    assert path.read_bytes() == b"old" and not leftovers(tmp_path)


def test_a_failed_cleanup_does_not_mask_the_error(tmp_path, monkeypatch):
    def fail(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", fail)
    monkeypatch.setattr(os, "unlink", fail)
    assert "cannot write (Permission denied)" in error_of(write_atomic, str(tmp_path / "m"), b"x")
