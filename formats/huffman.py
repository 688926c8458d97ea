"""Canonical, length-limited Huffman coding stored as code lengths only (Deep Compression, §4).

Lengths come from package-merge (optimal under a maximum length). `pack_stream` limits codes to
14 bits, or to as many as the alphabet needs (at most 16): the decoder's table has 2**longest
entries or more, and the limit costs ~0.02% of size on ResNet-50's streams. Codes are
canonical: present symbols sorted by (length, symbol) get consecutive codes, so the lengths
alone define the code. Each code is written MSB-first, codes are concatenated, and the bit
stream is MSB-first within each byte, zero-padded to a whole byte.

Decoding: formats/huffman_decode.py (many lanes in lockstep).

HUFFMAN_STREAM, a self-contained coded stream (sizes in bytes; VarInt is LEB128, 1+):

    count          Int64ul   8   number of symbols
    alphabet_size  Int32ul   4   symbols are < alphabet_size
    block          VarInt        symbols per decoding block (1..MAX_BLOCK: a lane steps at most
                                 `block` + 16 times, so this bounds the decoder's loop)
    n_entries      VarInt        dense table: largest present symbol + 1; sparse: present count
    len_bits       Int8ul    1   width of a stored code length (dense: l; sparse: l - 1)
    gap_bits       Int8ul    1   0: dense table; else sparse, present symbols as gaps
    gaps           ceil(n_entries * gap_bits / 8)  symbol[i] - symbol[i-1] - 1 (first: symbol)
    lengths        ceil(n_entries * len_bits / 8)  code lengths, bit-packed (bitpack.py)
    offset_base    VarInt        smallest bit length among blocks 0..nb-2
    offset_bits    Int8ul    1   width of (block bit length - offset_base)
    offsets        ceil((nb - 1) * offset_bits / 8)  those, bit-packed; nb = ceil(count / block)
    payload        VarInt length + bytes of the coded bit stream
"""

from __future__ import annotations

import construct as cs
import numpy as np

from dlcc.errors import BundleFormatError
from dlcc.formats.bitpack import pack_bits, packed_size, unpack_bits
from dlcc.formats.huffman_decode import MAX_LEN, canonical, decode_many

MAX_BLOCK = 4096
FAST_LEN = 14  # pack_stream's default length limit, where the alphabet allows it


def code_lengths(counts: np.ndarray, max_len: int = MAX_LEN) -> np.ndarray:
    """Optimal code lengths (uint8, 0 for absent symbols) of at most `max_len` bits.

    Package-merge: the leaves sorted by count, and at each of max_len levels the leaves merged
    with the pairs of the level below. The 2n - 2 cheapest items of the top level select a prefix
    of each level, and a leaf's length is the number of levels whose prefix holds it.
    One present symbol gets length 1; none present gives all zeros.
    """
    counts = np.asarray(counts).ravel()
    if not 1 <= max_len <= MAX_LEN:
        raise ValueError(f"max_len must be in 1..{MAX_LEN}, got {max_len}")
    if counts.size and counts.min() < 0:
        raise ValueError("symbol counts must be non-negative")
    lengths = np.zeros(counts.size, dtype=np.uint8)
    present = np.flatnonzero(counts > 0)
    n = present.size
    if n <= 1:
        lengths[present] = 1
        return lengths
    if n > 1 << max_len:
        raise ValueError(f"{n} symbols cannot be coded in at most {max_len} bits")
    order = present[np.argsort(counts[present], kind="stable")]
    leaves = counts[order].astype(np.float64 if counts.dtype.kind == "f" else np.int64)
    items, leaf_flags = leaves, [np.ones(n, dtype=bool)]  # deepest level first
    for _ in range(max_len - 1):
        half = items.size // 2 * 2
        merged = np.concatenate([leaves, items[0:half:2] + items[1:half:2]])
        idx = np.argsort(merged, kind="stable")  # leaves before packages of equal weight
        items = merged[idx]
        leaf_flags.append(idx < n)
    depth = np.zeros(n, dtype=np.uint8)
    take = 2 * n - 2
    for is_leaf in reversed(leaf_flags):  # top level down: selections are prefixes
        leaves_taken = int(np.count_nonzero(is_leaf[:take]))
        depth[:leaves_taken] += 1
        take = 2 * (take - leaves_taken)
    lengths[order] = depth
    return lengths


def encode(symbols: np.ndarray, lengths: np.ndarray, block: int = 4096) -> tuple[bytes, np.ndarray]:
    """(payload, block_offsets): `symbols` coded with the canonical code of `lengths`.

    block_offsets (uint64) holds the bit offset of symbols 0, block, 2 * block, ...
    Codes are summed as 24-bit windows per starting byte (their bits are disjoint), then each
    window is split over its three bytes.
    """
    symbols = np.asarray(symbols).ravel()
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    if symbols.size == 0:
        return b"", np.zeros(0, dtype=np.uint64)
    order, lens, slots, top = canonical(lengths, ValueError)
    if symbols.min() < 0 or symbols.max() >= np.asarray(lengths).size:
        raise ValueError("symbol outside the alphabet of the code lengths")
    table_len, table_code = np.zeros((2, np.asarray(lengths).size), dtype=np.int64)
    table_len[order] = lens
    table_code[order] = slots >> (top - lens)
    # Whole blocks at a time: a 10M-symbol stream needs no int64 arrays of its length. Windows
    # of two chunks meeting in a byte have disjoint bits, so their sums still add up.
    step = block * max(1, (1 << 20) // block)
    chunks = [symbols[i : i + step] for i in range(0, symbols.size, step)]
    nbytes = (sum(int(table_len[c].sum()) for c in chunks) + 7) // 8
    out = np.zeros(nbytes + 2, dtype=np.int64)
    starts, start = [], 0
    for chunk in chunks:
        bits = table_len[chunk]
        if not bits.all():
            raise ValueError("a symbol to encode has code length 0")
        offsets = np.cumsum(bits) - bits + start
        windows = table_code[chunk] << (24 - bits - (offsets & 7))
        first = int(offsets[0]) >> 3
        acc = np.bincount((offsets >> 3) - first, weights=windows).astype(np.int64)
        out[first : first + acc.size] += acc >> 16
        out[first + 1 : first + acc.size + 1] += (acc >> 8) & 255
        out[first + 2 : first + acc.size + 2] += acc & 255
        starts.append(offsets[::block])
        start = int(offsets[-1] + bits[-1])
    return out[:nbytes].astype(np.uint8).tobytes(), np.concatenate(starts).astype(np.uint64)


def shannon_bits(counts: np.ndarray) -> float:
    """Entropy lower bound, in bits, of a whole stream with these symbol counts."""
    counts = np.extract(np.asarray(counts) > 0, counts).astype(np.float64)
    total = counts.sum()
    return float(np.sum(counts * np.log2(total / counts))) if counts.size else 0.0


def _width(value: int) -> int:
    """Bits needed for unsigned integers up to `value` (0 for 0)."""
    return int(value).bit_length()


def _blocks(ctx) -> int:
    """Number of stored block widths: ceil(count / block) - 1, at least 0."""
    return max(-(-ctx.count // ctx.block) - 1, 0)


HUFFMAN_STREAM = cs.Struct(
    "count" / cs.Int64ul,
    "alphabet_size" / cs.Int32ul,
    "block" / cs.VarInt,
    cs.Check((cs.this.block >= 1) & (cs.this.block <= MAX_BLOCK)),
    "n_entries" / cs.VarInt,
    "len_bits" / cs.Int8ul,
    "gap_bits" / cs.Int8ul,
    cs.Check((cs.this.len_bits <= 5) & (cs.this.gap_bits <= 32)),
    cs.Check((cs.this.len_bits > 0) | (cs.this.gap_bits > 0) | (cs.this.n_entries == 0)),
    "gaps" / cs.Bytes(lambda ctx: packed_size(ctx.n_entries, ctx.gap_bits)),
    "lengths" / cs.Bytes(lambda ctx: packed_size(ctx.n_entries, ctx.len_bits)),
    "offset_base" / cs.VarInt,
    "offset_bits" / cs.Int8ul,
    cs.Check(cs.this.offset_bits <= 32),
    "offsets" / cs.Bytes(lambda ctx: packed_size(_blocks(ctx), ctx.offset_bits)),
    "payload" / cs.Prefixed(cs.VarInt, cs.GreedyBytes),
    cs.Check(lambda ctx: ctx.count <= 8 * len(ctx.payload)),  # every code has a bit or more
    cs.Check(lambda ctx: ctx.offset_base <= 8 * len(ctx.payload)),
)
_TERMINATED = cs.Struct("stream" / HUFFMAN_STREAM, cs.Terminated)  # nothing after the stream


def _auto_block(count: int) -> int:
    """Default block: the power of two >= sqrt(4 * count), within 64..4096 (see module doc)."""
    return min(MAX_BLOCK, max(64, 1 << _width(int(np.sqrt(4 * count)))))


def pack_stream(
    symbols: np.ndarray,
    alphabet_size: int,
    block: int | None = None,
    max_len: int | None = None,
) -> bytes:
    """`symbols` (< alphabet_size) as a self-contained HUFFMAN_STREAM; block: see module doc.

    max_len: the code length limit; by default FAST_LEN, or as many bits as the present symbols
    need (<= MAX_LEN), which keeps the decoder's table small (module doc).
    """
    symbols = np.asarray(symbols).ravel()
    if not 0 < alphabet_size <= 0xFFFFFFFF:
        raise ValueError(f"alphabet_size must be in 1..2**32 - 1, got {alphabet_size}")
    if symbols.size and (symbols.min() < 0 or symbols.max() >= alphabet_size):
        raise ValueError(f"symbols must be in 0..{alphabet_size - 1}")
    block = _auto_block(symbols.size) if block is None else block
    if symbols.size and symbols.max() < 1 << 22:  # dense count, renumber by a table gather
        full = np.bincount(symbols)
        present, counts = np.flatnonzero(full), full[full > 0]
        ranks = symbols if present.size == full.size else (np.cumsum(full > 0) - 1)[symbols]
    else:  # canonical order survives renumbering present symbols by rank
        present, counts = np.unique(symbols, return_counts=True)
        ranks = np.searchsorted(present, symbols)
    if max_len is None:
        max_len = min(MAX_LEN, max(FAST_LEN, _width(present.size - 1)))
    lens = code_lengths(counts, max_len).astype(np.int64)
    payload, offsets = encode(ranks, lens, block)
    top = int(lens.max(initial=0))
    gaps = np.diff(present, prepend=-1) - 1  # zero-run before each present symbol
    gap_bits = max(1, _width(gaps.max(initial=0)))
    n_dense = int(present[-1]) + 1 if present.size else 0
    if packed_size(n_dense, _width(top)) <= packed_size(present.size, gap_bits + _width(top - 1)):
        stored, gap_bits, len_bits = np.zeros(n_dense, dtype=np.int64), 0, _width(top)
        stored[present] = lens
    else:
        stored, len_bits = lens - 1, _width(top - 1)
    sizes = np.diff(offsets.astype(np.int64))  # bit lengths of blocks 0..nb-2
    base = int(sizes.min()) if sizes.size else 0
    offset_bits = _width(int(sizes.max(initial=0)) - base)
    return HUFFMAN_STREAM.build(
        dict(
            count=symbols.size,
            alphabet_size=alphabet_size,
            block=block,
            n_entries=stored.size,
            len_bits=len_bits,
            gap_bits=gap_bits,
            gaps=pack_bits(gaps, gap_bits) if gap_bits else b"",  # dense: no gaps
            lengths=pack_bits(stored, len_bits),
            offset_base=base,
            offset_bits=offset_bits,
            offsets=pack_bits(sizes - base, offset_bits),
            payload=payload,
        )
    )


def stream_count(data: bytes) -> int:
    """The symbol count a HUFFMAN_STREAM declares (its first field), without decoding it."""
    if len(data) < 8:
        raise BundleFormatError(f"Huffman stream: {len(data)} B, shorter than its header")
    return int.from_bytes(data[:8], "little")


def _parse(data: bytes, label: str) -> tuple[tuple, np.ndarray | None, int]:
    """(`decode`'s arguments, the symbol of each decoded rank or None, alphabet size) of a
    HUFFMAN_STREAM: the code is over the symbols themselves when they are < 2**16, so that
    the lanes write symbols, else over the ranks of the present ones."""
    try:
        s = _TERMINATED.parse(data).stream
    except (cs.ConstructError, ValueError) as exc:
        raise BundleFormatError(f"{label}: malformed header or table: {exc}") from exc
    n = s.n_entries
    lens = unpack_bits(s.lengths, s.len_bits, n).astype(np.int64)
    if s.gap_bits:
        present = np.cumsum(unpack_bits(s.gaps, s.gap_bits, n).astype(np.int64) + 1) - 1
        lens += 1
    else:
        present = np.flatnonzero(lens)
        lens = lens[present]
    if present.size and int(present[-1]) >= s.alphabet_size:
        raise BundleFormatError(f"{label}: symbol {present[-1]} >= {s.alphabet_size}")
    symbols = present if present.size and int(present[-1]) >= 1 << 16 else None
    if symbols is None:  # a code over the symbols themselves
        lens, short = np.zeros(int(present[-1]) + 1 if present.size else 0, np.int64), lens
        lens[present] = short
    sizes = unpack_bits(s.offsets, s.offset_bits, _blocks(s)).astype(np.int64) + s.offset_base
    offsets = np.concatenate([[0], np.cumsum(sizes)])[: -(-s.count // s.block)]
    return (s.payload, lens, s.count, offsets, s.block), symbols, s.alphabet_size


def unpack_streams(streams: list[bytes], labels: list[str] | None = None) -> list[np.ndarray]:
    """The symbols of each HUFFMAN_STREAM (smallest unsigned dtype of its alphabet), all
    decoded in one lockstep pass (`decode_many`); errors name the stream's label."""
    labels = labels or ["Huffman stream"] * len(streams)
    parsed = [_parse(data, label) for data, label in zip(streams, labels)]
    out = []
    for decoded, (_, symbol, alphabet) in zip(decode_many([p[0] for p in parsed], labels), parsed):
        dtype = np.min_scalar_type(max(alphabet - 1, 0))
        out.append(
            decoded.astype(dtype, copy=False) if symbol is None else symbol.astype(dtype)[decoded]
        )
    return out


def unpack_stream(data: bytes) -> np.ndarray:
    """The symbols of a HUFFMAN_STREAM (smallest unsigned dtype of its alphabet)."""
    return unpack_streams([data])[0]
