"""Fixed-width bit packing: unsigned integers of `bits` bits each, LSB-first, little-endian.

Value i occupies stream bits [i * bits, (i + 1) * bits), its least significant bit first;
stream bit k is bit (k % 8) of byte k // 8 (numpy's ``bitorder="little"``). The stream is
zero-padded to a whole byte, so it takes ceil(n * bits / 8) bytes. Widths are 1..32; width 0
is accepted too (every value is 0, no bytes), which suits headers of all-zero arrays.

Both directions work on a (values, bits) bit matrix with np.packbits / np.unpackbits, a
chunk of values at a time so that memory stays bounded on large inputs.
"""

from __future__ import annotations

import numpy as np

from dlcc.errors import BundleFormatError

_CHUNK = 1 << 20  # values per chunk; a multiple of 8, so every chunk starts on a byte


def _check_bits(bits: int) -> None:
    """Raise ValueError unless 0 <= bits <= 32."""
    if not 0 <= int(bits) <= 32:
        raise ValueError(f"bit width must be in 0..32, got {bits}")


def packed_size(count: int, bits: int) -> int:
    """Bytes taken by `count` values packed at `bits` bits each."""
    return (int(count) * int(bits) + 7) // 8


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """`values` (unsigned ints, each < 2**bits) packed LSB-first at `bits` bits each."""
    _check_bits(bits)
    values = np.asarray(values).ravel()
    if values.size == 0 or (bits == 0 and not values.any()):
        return b""
    if values.dtype.kind not in "iub":
        raise ValueError(f"pack_bits needs integers, got dtype {values.dtype}")
    if values.dtype.kind == "i" and values.min() < 0:
        raise ValueError("pack_bits needs non-negative values")
    if int(values.max()) >> bits:
        raise ValueError(f"value {int(values.max())} does not fit in {bits} bits")
    values = values.astype(np.uint64, copy=False)
    shifts = np.arange(bits, dtype=np.uint64)
    parts = []
    for start in range(0, values.size, _CHUNK):
        chunk = values[start : start + _CHUNK]
        matrix = ((chunk[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
        parts.append(np.packbits(matrix.ravel(), bitorder="little").tobytes())
    return b"".join(parts)


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """The `count` values of `bits` bits packed in `data` by pack_bits, as uint32.

    All widths are at most 32 bits, so uint32 always holds the result. Raises
    BundleFormatError if `data` is shorter than ceil(count * bits / 8) bytes.
    """
    _check_bits(bits)
    if count < 0:
        raise BundleFormatError(f"bit-packed array: negative count {count}")
    need = packed_size(count, bits)
    if len(data) < need:
        raise BundleFormatError(
            f"bit-packed array: {len(data)} bytes for {count} values of {bits} bits (need {need})"
        )
    out = np.zeros(count, dtype=np.uint32)
    if bits == 0:
        return out
    raw = np.frombuffer(data, dtype=np.uint8, count=need)
    step = _CHUNK * bits // 8  # bytes per chunk
    for first in range(0, count, _CHUNK):
        n = min(_CHUNK, count - first)
        chunk = raw[first * bits // 8 : first * bits // 8 + step]
        matrix = np.unpackbits(chunk, bitorder="little", count=n * bits).reshape(n, bits)
        wide = np.zeros((n, 32), dtype=np.uint8)
        wide[:, :bits] = matrix
        out[first : first + n] = np.packbits(wide, axis=1, bitorder="little").view("<u4")[:, 0]
    return out
