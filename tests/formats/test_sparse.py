"""Sparse positions: relative indices with filler zeros (Deep Compression) and bitmasks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcc.errors import BundleFormatError
from dlcc.formats.sparse import (
    best_index_bits,
    bitmask_decode,
    bitmask_encode,
    entry_count,
    relative_index_decode,
    relative_index_encode,
)


def reference_encode(mask: list[bool], index_bits: int) -> tuple[list[int], list[int]]:
    """Brute force, one position at a time: (stored gaps, slots) with filler entries."""
    gaps, slots, previous = [], [], -1
    span = 1 << index_bits
    for position, nonzero in enumerate(mask):
        if not nonzero:
            continue
        while position - previous > span:  # the jump does not fit: pad a filler zero
            previous += span
            gaps.append(span - 1)
            slots.append(previous)
        gaps.append(position - previous - 1)
        slots.append(position)
        previous = position
    return gaps, slots


def random_mask(size: int, density: float, seed: int) -> np.ndarray:
    """A random boolean mask of `size` with about `density` of it set."""
    return np.random.default_rng(seed).random(size) < density


@settings(max_examples=200, deadline=None)
@given(
    size=st.integers(0, 400),
    density=st.floats(0.0, 1.0),
    index_bits=st.integers(3, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_matches_brute_force_and_round_trips(size, density, index_bits, seed) -> None:
    """Gaps, slots and filler count equal the reference; decoding gives the slots back."""
    mask = random_mask(size, density**3, seed)  # cube: many very sparse masks
    gaps, slots = relative_index_encode(mask, index_bits)
    ref_gaps, ref_slots = reference_encode(mask.tolist(), index_bits)
    assert gaps.dtype == np.uint8 and gaps.tolist() == ref_gaps
    assert slots.tolist() == ref_slots
    assert entry_count(mask, index_bits) == len(ref_gaps)
    assert np.count_nonzero(mask[slots]) == np.count_nonzero(mask)
    positions = relative_index_decode(gaps, index_bits, size)
    np.testing.assert_array_equal(positions, slots)
    rebuilt = np.zeros(size, dtype=bool)
    rebuilt[positions[mask[positions]]] = True
    np.testing.assert_array_equal(rebuilt, mask)


def test_paper_figure_2() -> None:
    """Han et al. Fig. 2: 3-bit indices, nonzeros at 1, 4, 15; a filler at 12 (jump of 8)."""
    mask = np.zeros(16, dtype=bool)
    mask[[1, 4, 15]] = True
    gaps, slots = relative_index_encode(mask, 3)
    assert slots.tolist() == [1, 4, 12, 15]
    assert (gaps.astype(int) + 1).tolist() == [2, 3, 8, 3]  # index differences
    assert entry_count(mask, 3) == 4


def test_long_runs_and_2d_masks() -> None:
    """A run of 1000 zeros at 3 bits takes 125 fillers; masks of any shape are flattened."""
    mask = np.zeros((10, 101), dtype=bool)
    mask[9, 100] = True  # flat position 1009
    gaps, slots = relative_index_encode(mask, 3)
    assert len(gaps) == 1009 // 8 + 1 and slots[-1] == 1009
    assert relative_index_decode(gaps, 3, mask.size)[-1] == 1009
    empty_gaps, empty_slots = relative_index_encode(np.zeros(50, dtype=bool), 5)
    assert empty_gaps.size == 0 and empty_slots.size == 0
    assert relative_index_decode(empty_gaps, 5, 50).size == 0


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(0, 3000),
    density=st.floats(0.0, 1.0),
    value_bits=st.integers(1, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_best_index_bits_is_the_cheapest(size, density, value_bits, seed) -> None:
    """The chosen width minimises entries * (index_bits + value_bits) over 3..8."""
    mask = random_mask(size, density**2, seed)
    costs = {b: len(reference_encode(mask.tolist(), b)[0]) * (b + value_bits) for b in range(3, 9)}
    best = best_index_bits(mask, value_bits)
    assert costs[best] == min(costs.values())
    assert best == min(b for b, c in costs.items() if c == costs[best])


def test_best_index_bits_follows_sparsity() -> None:
    """Dense masks want narrow indices, very sparse ones wide indices."""
    assert best_index_bits(random_mask(10_000, 0.5, 0), 5) == 3
    assert best_index_bits(random_mask(10_000, 0.005, 0), 5) == 8


def test_relative_index_bad_input() -> None:
    """Widths outside 3..8 are refused; oversized gaps and positions past the end are malformed."""
    with pytest.raises(ValueError):
        relative_index_encode(np.ones(4, dtype=bool), 2)
    with pytest.raises(ValueError):
        relative_index_decode(np.zeros(1, dtype=np.uint8), 9, 4)
    with pytest.raises(BundleFormatError, match="gap"):
        relative_index_decode(np.array([8], dtype=np.uint8), 3, 100)
    with pytest.raises(BundleFormatError, match="position 4"):
        relative_index_decode(np.array([0, 3], dtype=np.uint8), 3, 4)


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, 500), density=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_bitmask_round_trip(size, density, seed) -> None:
    """A mask packs to ceil(size / 8) bytes and comes back unchanged."""
    mask = random_mask(size, density, seed)
    data = bitmask_encode(mask)
    assert len(data) == (size + 7) // 8
    np.testing.assert_array_equal(bitmask_decode(data, size), mask)


def test_bitmask_bad_input() -> None:
    """Wrong lengths and nonzero padding bits are malformed."""
    assert bitmask_encode(np.array([1, 0, 0, 0, 0, 0, 0, 0, 1], dtype=bool)) == b"\x80\x80"
    with pytest.raises(BundleFormatError, match="bytes"):
        bitmask_decode(b"\x00", 9)
    with pytest.raises(BundleFormatError, match="padding"):
        bitmask_decode(b"\x01", 7)
