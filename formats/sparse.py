"""Positions of the nonzero weights of a flattened tensor: relative indices or a bitmask.

Relative indices (Deep Compression, Han et al. ICLR 2016, §2 and Fig. 2): the nonzero positions
are stored in order, each as the index difference from the previous stored entry, in
`index_bits` bits (3..8). Stored value g means "skip g zeros": the entry sits at
previous + g + 1, the first one at g (a virtual previous entry at -1). One entry therefore
jumps at most 2**index_bits positions, 8 for 3 bits as in the paper. "When we need an index
difference larger than the bound, we pad a filler zero": a filler is an extra entry with the
largest value, 2**index_bits - 1, placed 2**index_bits positions after the previous entry,
whose weight value is 0 (the caller stores the zero symbol there). As many fillers as needed
are chained before a distant nonzero; zeros after the last nonzero are not stored.

Bitmask: one bit per position, np.packbits order (position i is bit 7 - i % 8 of byte i // 8),
zero-padded to a whole byte.
"""

from __future__ import annotations

import numpy as np

from dlcc.errors import BundleFormatError

MIN_INDEX_BITS, MAX_INDEX_BITS = 3, 8


def _check_index_bits(index_bits: int) -> None:
    """Raise ValueError unless index_bits is in 3..8."""
    if not MIN_INDEX_BITS <= int(index_bits) <= MAX_INDEX_BITS:
        raise ValueError(
            f"index_bits must be in {MIN_INDEX_BITS}..{MAX_INDEX_BITS}, got {index_bits}"
        )


def zero_runs(mask: np.ndarray) -> np.ndarray:
    """Zeros skipped before each nonzero of the flattened mask (int64)."""
    positions = np.flatnonzero(np.asarray(mask).ravel())
    return np.diff(positions, prepend=-1) - 1


def relative_index_encode(mask: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, slots): the relative-index entries of the nonzeros of `mask`, fillers included.

    gaps (uint8) holds the stored value of every entry (zeros skipped before it); slots (int64)
    the flat position of every entry. A slot where `mask` is False is a filler: store value 0.
    """
    _check_index_bits(index_bits)
    runs = zero_runs(mask)
    span = 1 << index_bits
    fillers = runs // span  # fillers chained before each nonzero
    gaps = np.full(int(runs.size + fillers.sum()), span - 1, dtype=np.uint8)
    gaps[np.cumsum(fillers + 1) - 1] = runs - fillers * span
    slots = np.cumsum(gaps.astype(np.int64) + 1) - 1
    return gaps, slots


def relative_index_decode(gaps: np.ndarray, index_bits: int, size: int) -> np.ndarray:
    """The flat positions (int64) of all entries, fillers included, of a tensor of `size`.

    Raises BundleFormatError if a gap does not fit in index_bits or an entry lies past `size`.
    """
    _check_index_bits(index_bits)
    gaps = np.asarray(gaps).ravel()
    if gaps.size == 0:
        return np.zeros(0, dtype=np.int64)
    if gaps.dtype.kind not in "iu" or gaps.min() < 0 or gaps.max() >= 1 << index_bits:
        raise BundleFormatError(f"relative index: gap outside 0..{(1 << index_bits) - 1}")
    positions = gaps.astype(np.int64)  # then in place: 1.6x faster than new arrays each step
    positions += 1
    np.cumsum(positions, out=positions)
    positions -= 1
    if positions[-1] >= size:
        raise BundleFormatError(
            f"relative index: entry at position {positions[-1]} of a {size}-element tensor"
        )
    return positions


def entry_count(mask: np.ndarray, index_bits: int) -> int:
    """Number of relative-index entries (nonzeros plus fillers) of `mask` at `index_bits`."""
    _check_index_bits(index_bits)
    runs = zero_runs(mask)
    return int(runs.size + np.sum(runs >> index_bits))


def best_index_bits(mask: np.ndarray, value_bits: int) -> int:
    """The index width in 3..8 minimising entries * (index_bits + value_bits); ties: narrower."""
    runs = zero_runs(mask)
    widths = np.arange(MIN_INDEX_BITS, MAX_INDEX_BITS + 1)
    costs = [(runs.size + np.sum(runs >> b)) * (int(b) + value_bits) for b in widths]
    return int(widths[int(np.argmin(costs))])


def bitmask_encode(mask: np.ndarray) -> bytes:
    """The flattened boolean `mask`, one bit per position (np.packbits order)."""
    return np.packbits(np.asarray(mask, dtype=bool).ravel()).tobytes()


def bitmask_decode(data: bytes, size: int) -> np.ndarray:
    """The flat boolean mask of `size` positions from bitmask_encode's bytes.

    Raises BundleFormatError unless `data` has exactly ceil(size / 8) bytes and zero padding.
    """
    if size < 0 or len(data) != (size + 7) // 8:
        raise BundleFormatError(f"bitmask: {len(data)} bytes for {size} positions")
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if bits[size:].any():
        raise BundleFormatError("bitmask: nonzero padding bits after the last position")
    return bits[:size].astype(bool)
