"""Canonical Huffman: optimality, layout, the decoder's table and lanes, round trips, bad input."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcc.errors import BundleFormatError
from dlcc.formats import huffman, huffman_decode
from dlcc.formats.huffman import (
    FAST_LEN,
    HUFFMAN_STREAM,
    MAX_LEN,
    code_lengths,
    encode,
    pack_stream,
    shannon_bits,
    unpack_stream,
)
from dlcc.formats.huffman_decode import decode


def kraft(lengths: np.ndarray) -> float:
    """Sum of 2**-l over the present symbols."""
    lengths = lengths[lengths > 0].astype(np.float64)
    return float(np.sum(2.0**-lengths))


def cost(counts: np.ndarray, lengths: np.ndarray) -> int:
    """Coded bits of a stream with these counts under these lengths."""
    return int(np.sum(np.asarray(counts, dtype=np.int64) * lengths.astype(np.int64)))


def reference_huffman_cost(counts: list[int]) -> int:
    """Unlimited Huffman cost, by the textbook heap (sum of the merged weights)."""
    heap = [c for c in counts if c > 0]
    if len(heap) <= 1:
        return sum(heap)
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def reference_limited_cost(counts: list[int], max_len: int) -> int:
    """Optimal cost with lengths <= max_len: textbook package-merge over explicit item lists."""
    leaves = sorted((c, (i,)) for i, c in enumerate(counts) if c > 0)
    items = list(leaves)
    for _ in range(max_len - 1):
        packages = [
            (items[k][0] + items[k + 1][0], items[k][1] + items[k + 1][1])
            for k in range(0, len(items) - 1, 2)
        ]
        items = sorted(leaves + packages, key=lambda item: item[0])
    chosen = items[: 2 * len(leaves) - 2]
    return sum(counts[i] for _, members in chosen for i in members)


def laplace_symbols(n: int, seed: int = 0) -> np.ndarray:
    """A discretized Laplace stream over 32 symbols, like quantized weights."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(0.0, 3.0, n)) + 16, 0, 31).astype(np.uint8)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=40), st.integers(0, 16))
def test_code_lengths_optimal_and_complete(counts: list[int], extra: int) -> None:
    """Package-merge matches the reference cost; Kraft holds with equality; lengths fit."""
    present = sum(c > 0 for c in counts)
    max_len = min(16, max(1, (present - 1).bit_length()) + extra)
    lengths = code_lengths(np.array(counts), max_len)
    assert lengths.dtype == np.uint8 and lengths.shape == (len(counts),)
    assert np.array_equal(lengths > 0, np.array(counts) > 0)
    assert lengths.max(initial=0) <= max_len
    if present >= 2:
        assert kraft(lengths) == 1.0
        assert cost(counts, lengths) == reference_limited_cost(counts, max_len)
    if max_len == 16:  # no limit binds on 40 symbols of these counts unless the tree is deep
        assert cost(counts, lengths) >= reference_huffman_cost(counts)


def test_code_lengths_edge_cases() -> None:
    """No symbol, one symbol, equal counts, 2**16 symbols, and too many symbols."""
    assert code_lengths(np.zeros(7, dtype=np.int64)).tolist() == [0] * 7
    assert code_lengths(np.array([0, 0, 5, 0])).tolist() == [0, 0, 1, 0]
    assert code_lengths(np.full(32, 9)).tolist() == [5] * 32
    assert code_lengths(np.full(1 << 16, 3)).tolist() == [16] * (1 << 16)
    assert code_lengths(np.array([], dtype=np.int64)).size == 0
    with pytest.raises(ValueError):
        code_lengths(np.ones(9), 3)
    with pytest.raises(ValueError):
        code_lengths(np.ones(4), 17)


def test_fibonacci_counts_force_length_limit() -> None:
    """Fibonacci counts over 40 symbols want a 39-bit code; limited to 16 it stays optimal."""
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = code_lengths(np.array(fib), 16)
    assert lengths.max() == 16 and kraft(lengths) == 1.0
    assert cost(fib, lengths) == reference_limited_cost(fib, 16)
    assert cost(fib, lengths) >= reference_huffman_cost(fib)
    symbols = np.repeat(np.arange(40), np.minimum(fib, 50))
    payload, offsets = encode(symbols, lengths, 64)
    np.testing.assert_array_equal(decode(payload, lengths, symbols.size, offsets, 64), symbols)


def test_canonical_code_layout() -> None:
    """Lengths [2, 1, 3, 3] give codes 10, 0, 110, 111, written MSB-first."""
    payload, offsets = encode(np.array([0, 1, 2, 3, 1]), np.array([2, 1, 3, 3]), block=2)
    assert payload == bytes([0b10011011, 0b10000000])  # 10 0 110 111 0, zero-padded
    assert offsets.dtype == np.uint64 and offsets.tolist() == [0, 3, 9]


@settings(max_examples=120, deadline=None)
@given(
    count=st.integers(0, 3000),
    alphabet=st.integers(1, 300),
    skew=st.floats(0.0, 3.0),
    block=st.sampled_from([1, 2, 7, 64, 4096]),
    max_len=st.integers(9, 16),
    seed=st.integers(0, 2**32 - 1),
)
def test_round_trip(count, alphabet, skew, block, max_len, seed) -> None:
    """Random alphabets, skews and blocks: encode then decode gives the symbols back."""
    rng = np.random.default_rng(seed)
    p = np.exp(-skew * np.arange(alphabet))
    symbols = rng.choice(alphabet, size=count, p=p / p.sum())
    lengths = code_lengths(np.bincount(symbols, minlength=alphabet), max_len)
    payload, offsets = encode(symbols, lengths, block)
    assert len(offsets) == -(-count // block)
    assert len(payload) == (cost(np.bincount(symbols, minlength=alphabet), lengths) + 7) // 8
    out = decode(payload, lengths, count, offsets, block)
    np.testing.assert_array_equal(out, symbols)
    data = pack_stream(symbols, alphabet, block, max_len)
    assert pack_stream(symbols, alphabet, block, max_len) == data  # deterministic
    np.testing.assert_array_equal(unpack_stream(data), symbols)


@pytest.mark.parametrize("count", [0, 1, 5, 100_000])
def test_single_distinct_symbol(count: int) -> None:
    """A one-symbol stream takes one bit per symbol and decodes back."""
    symbols = np.full(count, 7, dtype=np.uint8)
    data = pack_stream(symbols, 8)
    out = unpack_stream(data)
    assert out.dtype == np.uint8 and np.array_equal(out, symbols)
    assert len(HUFFMAN_STREAM.parse(data).payload) == (count + 7) // 8


def test_empty_stream() -> None:
    """Count 0: no payload, no offsets, an empty array back."""
    payload, offsets = encode(np.array([], dtype=np.int64), np.array([1, 1]))
    assert payload == b"" and offsets.size == 0
    assert decode(b"", np.array([1, 1]), 0, offsets).size == 0
    data = pack_stream(np.array([], dtype=np.int64), 1000)
    assert len(data) < 20 and unpack_stream(data).dtype == np.uint16
    assert unpack_stream(data).size == 0


def test_all_2_16_symbols_equally_likely() -> None:
    """Every one of 2**16 symbols present: 16 bits each, and the round trip holds."""
    symbols = np.random.default_rng(1).permutation(np.tile(np.arange(1 << 16), 2))
    data = pack_stream(symbols, 1 << 16)
    out = unpack_stream(data)
    assert out.dtype == np.uint16 and np.array_equal(out, symbols)
    stream = HUFFMAN_STREAM.parse(data)
    assert len(stream.payload) == symbols.size * 2 and stream.len_bits == 5


def test_sparse_large_alphabet_table_is_small() -> None:
    """A few symbols of a 2**30 alphabet: the table lists only the present symbols."""
    rng = np.random.default_rng(2)
    present = np.sort(rng.choice(1 << 30, 20, replace=False))
    symbols = present[rng.integers(0, 20, 5000)]
    data = pack_stream(symbols, 1 << 30)
    assert np.array_equal(unpack_stream(data), symbols)
    stream = HUFFMAN_STREAM.parse(data)
    assert stream.gap_bits > 0 and len(stream.gaps) + len(stream.lengths) <= 20 * 35 // 8
    high = pack_stream(np.array([60000, 60001, 60000]), 1 << 16)  # dense would take 37 KB
    assert len(high) < 40 and unpack_stream(high).tolist() == [60000, 60001, 60000]


def test_size_close_to_entropy() -> None:
    """100k Laplace symbols: payload within 3% of Shannon; header, table and offsets small."""
    symbols = laplace_symbols(100_000)
    bound = shannon_bits(np.bincount(symbols)) / 8
    data = pack_stream(symbols, 32)
    payload = len(HUFFMAN_STREAM.parse(data).payload)
    table = len(data) - payload
    assert payload <= 1.03 * bound
    assert table < 200
    assert len(data) <= 1.03 * (bound + table)


def test_shannon_bits() -> None:
    """Entropy of uniform and degenerate streams, in bits for the whole stream."""
    assert shannon_bits(np.array([4, 4, 4, 4])) == pytest.approx(32.0)
    assert shannon_bits(np.array([0, 10, 0])) == 0.0
    assert shannon_bits(np.zeros(3)) == 0.0


def test_bad_arguments() -> None:
    """Encoding refuses symbols outside the code and lengths that are not a prefix code."""
    with pytest.raises(ValueError):
        encode(np.array([0, 2]), np.array([1, 1, 0]))
    with pytest.raises(ValueError):
        encode(np.array([0, 3]), np.array([1, 1]))
    with pytest.raises(ValueError):
        encode(np.array([0]), np.array([1, 1, 1]))
    with pytest.raises(ValueError):
        pack_stream(np.array([5]), 5)
    with pytest.raises(BundleFormatError, match="Kraft"):
        decode(b"\x00", np.array([1, 1, 2]), 1, np.array([0]))
    with pytest.raises(BundleFormatError):
        decode(b"\x00", np.array([1, 1]), 9, np.array([0]))
    with pytest.raises(BundleFormatError):
        decode(b"\x00\x00", np.array([1, 1]), 8, np.array([0]))  # payload too long


def test_every_corruption_is_caught_or_decodes() -> None:
    """Each truncation is malformed; each flipped byte gives BundleFormatError or symbols."""
    symbols = laplace_symbols(300, seed=3)
    data = pack_stream(symbols, 40, block=16)
    for cut in range(len(data)):
        with pytest.raises(BundleFormatError):
            unpack_stream(data[:cut])
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[i] ^= flip
            try:
                out = unpack_stream(bytes(bad))
            except BundleFormatError:
                continue
            assert out.size <= 8 * len(data)
    invalid = np.array([1, 2, 0, 0])  # code 0, 10: window 11 is no code
    with pytest.raises(BundleFormatError, match="invalid code"):
        decode(bytes([0b11000000]), invalid, 1, np.array([0]))


def test_auto_block_keeps_many_blocks() -> None:
    """The default block grows with sqrt(count) between 64 and 4096."""
    assert huffman._auto_block(0) == 64
    assert huffman._auto_block(100_000) == 1024
    assert huffman._auto_block(10_000_000) == 4096


def test_lookup_table_entries() -> None:
    """Lengths [2, 1, 3, 3] (codes 10, 0, 110, 111), 4-bit windows: every whole code, greedily."""
    order, lens, slots, top = huffman_decode.canonical(np.array([2, 1, 3, 3]))
    order4, lens4, slots4, top4 = order, lens, slots, top
    table = huffman_decode._lookup_table(order, lens, slots, top, 4, 1, 4)

    def entry(window: int) -> tuple[list[int], int]:
        value = int(table[window])
        count = (value >> 40 & 255) // 8
        return [value >> 8 * j & 255 for j in range(count)], value >> 56

    assert entry(0b0000) == ([1, 1, 1, 1], 4)
    assert entry(0b1000) == ([0, 1, 1], 4)  # 10 0 0
    assert entry(0b1100) == ([2, 1], 4)  # 110 0
    assert entry(0b1111) == ([3], 3)  # 111, then a 1 that opens no whole code
    assert int(table[0b1111]) & ~(255 << 40 | 255 << 56) == 3  # zero bytes past the symbols
    wide = huffman_decode._lookup_table(order, lens, slots, top, 4, 2, 4)
    assert int(wide[0b0000]) & 0xFFFFFFFF == 1 | 1 << 16 and int(wide[0]) >> 40 & 255 == 32
    incomplete = np.array([1, 2, 0, 0])  # codes 0, 10: a window 11.. opens no code
    order, lens, slots, top = huffman_decode.canonical(incomplete)
    assert int(huffman_decode._lookup_table(order, lens, slots, top, 3, 1, 4)[0b110]) == 0
    single = huffman_decode._lookup_table(order4, lens4, slots4, top4, 3, 1, 1)  # one code a window
    one = [(1, 1), (1, 1), (1, 1), (1, 1), (0, 2), (0, 2), (2, 3), (3, 3)]  # (symbol, length)
    assert single.tolist() == [v | 8 << 40 | length << 56 for v, length in one]


def test_lanes_in_batches(monkeypatch) -> None:
    """More blocks than _LANES decode in even batches; a short last block is cut right."""
    monkeypatch.setattr(huffman_decode, "_LANES", 5)
    symbols = laplace_symbols(23 * 16 - 3, seed=4)
    lengths = code_lengths(np.bincount(symbols, minlength=32))
    payload, offsets = encode(symbols, lengths, 16)
    np.testing.assert_array_equal(decode(payload, lengths, symbols.size, offsets, 16), symbols)


def test_streams_decode_together(monkeypatch) -> None:
    """unpack_streams steps the lanes of every stream together: streams of each symbol width,
    table kind and block, empty ones too, across lane batches, give what each gives alone."""
    monkeypatch.setattr(huffman_decode, "_LANES", 64)
    rng = np.random.default_rng(8)
    shapes = [(0, 5, 64), (1, 3, 64), (700, 40, 16), (200_000, 32, None), (5000, 1 << 12, 64)]
    shapes += [(3000, 100_000, 128), (999, 256, 7), (40, 2, 1)]
    expected = [rng.zipf(1.6, count).clip(max=alphabet) - 1 for count, alphabet, _ in shapes]
    streams = [pack_stream(x, a, block) for x, (_, a, block) in zip(expected, shapes)]
    for got, want, data in zip(huffman.unpack_streams(streams), expected, streams):
        alone = unpack_stream(data)
        assert got.dtype == alone.dtype and np.array_equal(got, want)
        np.testing.assert_array_equal(alone, want)


def test_a_bad_stream_among_many_is_named() -> None:
    """decode_many names the stream at fault by its label: an invalid code, a block that does
    not end where the next begins, a last block overrunning its payload."""
    lengths = np.array([1, 2, 0, 0])  # codes 0 and 10; 11 is no code
    good = (bytes([0b01001000, 0]), lengths, 9, np.array([0]), 4096)
    bad = (bytes([0b01011000, 0]), lengths, 9, np.array([0]), 4096)
    with pytest.raises(BundleFormatError, match="^b: invalid code"):
        huffman_decode.decode_many([good, bad, good], ["a", "b", "c"])
    symbols = laplace_symbols(500, seed=9)
    code = code_lengths(np.bincount(symbols, minlength=32))
    payload, offsets = encode(symbols, code, 16)
    moved = offsets.copy()
    moved[5] += np.uint64(1)
    streams = [(payload, code, 500, offsets, 16), (payload, code, 500, moved, 16), good]
    with pytest.raises(BundleFormatError, match="^y: block boundaries"):
        huffman_decode.decode_many(streams, ["x", "y", "z"])
    short = (payload[:-1], code, 500, offsets, 16)
    with pytest.raises(BundleFormatError, match="^q: block boundaries or payload length"):
        huffman_decode.decode_many([streams[0], short, good], ["p", "q", "r"])


@pytest.mark.parametrize("block", [1, 3, 64])
def test_every_lane_stops_exactly(block: int) -> None:
    """Lanes run past their block; each must still end exactly at the next block's offset."""
    symbols = laplace_symbols(2000, seed=5)
    lengths = code_lengths(np.bincount(symbols, minlength=32))
    payload, offsets = encode(symbols, lengths, block)
    np.testing.assert_array_equal(decode(payload, lengths, 2000, offsets, block), symbols)
    for j in range(1, min(offsets.size, 40)):
        moved = offsets.copy()
        moved[j] += np.uint64(1)  # one interior offset off by a bit
        with pytest.raises(BundleFormatError, match="boundaries"):
            decode(payload, lengths, 2000, moved, block)


def test_invalid_code_inside_a_block() -> None:
    """A lane meeting a window that opens no code, after good symbols, is an error."""
    lengths = np.array([1, 2, 0, 0])  # codes 0 and 10; 11 is no code
    good = bytes([0b01001000, 0])  # 0 10 0 10 0 0 ...: decodes
    assert decode(good, lengths, 9, np.array([0])).tolist() == [0, 1, 0, 1, 0, 0, 0, 0, 0]
    bad = bytes([0b01011000, 0])  # 0 10 11...
    with pytest.raises(BundleFormatError, match="invalid code"):
        decode(bad, lengths, 9, np.array([0]))


def test_wide_alphabet_decodes_ranks_back() -> None:
    """lengths over > 2**16 symbols: the table holds canonical ranks, mapped back to symbols."""
    rng = np.random.default_rng(6)
    present = np.sort(rng.choice(100_000, 30, replace=False))
    counts = np.zeros(100_000, dtype=np.int64)
    counts[present] = rng.integers(1, 100, 30)
    lengths = code_lengths(counts)
    symbols = rng.choice(present, 3000)
    payload, offsets = encode(symbols, lengths, 64)
    out = decode(payload, lengths, symbols.size, offsets, 64)
    assert out.dtype == np.uint32 and np.array_equal(out, symbols)


def test_default_length_limit() -> None:
    """pack_stream limits codes to FAST_LEN bits unless the present symbols need more."""
    fib = [1, 1]
    while len(fib) < 25:  # 196,417 symbols; unlimited, the rarest take 24 bits
        fib.append(fib[-1] + fib[-2])
    symbols = np.repeat(np.arange(25), fib)
    counts = np.bincount(symbols)
    lengths = code_lengths(counts, FAST_LEN)
    assert code_lengths(counts, MAX_LEN).max() == MAX_LEN and lengths.max() == FAST_LEN
    stream = HUFFMAN_STREAM.parse(pack_stream(symbols, 25))
    assert len(stream.payload) == (cost(counts, lengths) + 7) // 8
    wide = np.arange(1 << 15)  # 2**15 symbols, once each, need 15 bits
    data = pack_stream(wide, 1 << 15)
    assert len(HUFFMAN_STREAM.parse(data).payload) == 15 * len(wide) // 8
    assert np.array_equal(unpack_stream(data), wide)


def test_size_bar_of_the_speed_issue() -> None:
    """The benchmark's bar: stream <= 1.02 x (Shannon bound + header, table and offsets)."""
    symbols = laplace_symbols(400_000, seed=7)
    bound = shannon_bits(np.bincount(symbols)) / 8
    data = pack_stream(symbols, 32)
    overhead = len(data) - len(HUFFMAN_STREAM.parse(data).payload)
    assert len(data) <= 1.02 * (bound + overhead)


def test_a_stream_longer_than_one_encoding_chunk() -> None:
    """encode() works a chunk of whole blocks at a time: codes meeting in a byte at a chunk
    boundary, and the block offsets after it, must come out as if coded in one piece (a block
    longer than the stream is one chunk)."""
    rng = np.random.default_rng(6)
    symbols = rng.zipf(1.3, (1 << 20) + 12_345).clip(max=200) - 1
    lengths = code_lengths(np.bincount(symbols))
    whole, _ = encode(symbols, lengths, 1 << 21)
    bits = lengths.astype(np.int64)[symbols]
    for block in (4096, 1000):
        payload, offsets = encode(symbols, lengths, block)
        assert payload == whole
        assert offsets.tolist() == (np.cumsum(bits) - bits)[::block].tolist()
    np.testing.assert_array_equal(unpack_stream(pack_stream(symbols, 200)), symbols)
