"""Fixed-width bit packing: round trips, exact layout, sizes and truncated input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcc.errors import BundleFormatError
from dlcc.formats.bitpack import pack_bits, packed_size, unpack_bits


@settings(max_examples=150, deadline=None)
@given(bits=st.integers(1, 32), count=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_round_trip(bits: int, count: int, seed: int) -> None:
    """Random values of every width come back unchanged; the size is ceil(n * bits / 8)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 1 << bits, size=count, dtype=np.uint64)
    data = pack_bits(values, bits)
    assert len(data) == packed_size(count, bits) == (count * bits + 7) // 8
    out = unpack_bits(data, bits, count)
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, values)


def test_layout_is_lsb_first_little_endian() -> None:
    """Value i starts at stream bit i * bits, least significant bit first."""
    assert pack_bits(np.array([1, 2, 3]), 3) == bytes([0b11010001, 0b0])
    assert pack_bits(np.array([0xABCDE]), 20) == bytes([0xDE, 0xBC, 0x0A])
    assert pack_bits(np.array([0xFFFFFFFF, 1], dtype=np.uint32), 32) == bytes(
        [255] * 4 + [1, 0, 0, 0]
    )


def test_large_input_crosses_chunks() -> None:
    """More values than one internal chunk, at an odd width."""
    values = np.arange(3_000_001, dtype=np.uint64) % 127
    np.testing.assert_array_equal(unpack_bits(pack_bits(values, 7), 7, values.size), values)


def test_zero_width_and_empty() -> None:
    """Width 0 holds only zeros in no bytes; empty input packs to nothing."""
    assert pack_bits(np.zeros(5, dtype=np.int64), 0) == b""
    np.testing.assert_array_equal(unpack_bits(b"", 0, 5), np.zeros(5))
    assert pack_bits(np.array([], dtype=np.uint8), 9) == b""
    assert unpack_bits(b"", 9, 0).size == 0


def test_bad_input() -> None:
    """Values too wide, negative values or bad widths are refused; short data is malformed."""
    with pytest.raises(ValueError):
        pack_bits(np.array([8]), 3)
    with pytest.raises(ValueError):
        pack_bits(np.array([-1]), 3)
    with pytest.raises(ValueError):
        pack_bits(np.array([1]), 33)
    with pytest.raises(ValueError):
        pack_bits(np.array([1.5]), 3)
    with pytest.raises(BundleFormatError, match="need 2"):
        unpack_bits(b"\x00", 3, 5)
    with pytest.raises(BundleFormatError):
        unpack_bits(b"", 3, -1)
