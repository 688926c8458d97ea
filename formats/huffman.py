"""Canonical, length-limited Huffman coding stored as code lengths only (Deep Compression, §4).

Lengths come from package-merge (optimal under a maximum length, at most 16 bits). Codes are
canonical: present symbols sorted by (length, symbol) get consecutive codes, so the lengths
alone define the code. Each code is written MSB-first, codes are concatenated, and the bit
stream is MSB-first within each byte, zero-padded to a whole byte.

Decoding is vectorized over blocks: the encoder records the bit offset of every `block`-th
symbol, and the decoder advances all blocks in lockstep, `block` steps, each step one table
look-up per block (numpy gathers over a max_len-bit window). The cost is about
``block * (~15 us of numpy overhead) + count * (~10 ns)``, so a block should leave hundreds of
blocks; each block costs a few bits of offset in the stream (`pack_stream` picks ~sqrt(4n)).

HUFFMAN_STREAM, a self-contained coded stream (sizes in bytes; VarInt is LEB128, 1+):

    count          Int64ul   8   number of symbols
    alphabet_size  Int32ul   4   symbols are < alphabet_size
    block          VarInt        symbols per decoding block (1..MAX_BLOCK: the decoder steps
                                 `block` times, so this bounds its time)
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

MAX_LEN = 16
MAX_BLOCK = 4096


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


def _canonical(lengths: np.ndarray, error: type[Exception] = BundleFormatError):
    """(symbols in canonical order, their lengths, first table slot, L = longest length).

    A code's table slot is its value left-aligned to L bits; the code itself is slot >> (L - l).
    Raises `error` on lengths above MAX_LEN or lengths violating the Kraft inequality.
    """
    lengths = np.asarray(lengths).ravel()
    if lengths.size and (lengths.min() < 0 or lengths.max() > MAX_LEN):
        raise error(f"Huffman code lengths must be in 0..{MAX_LEN}")
    present = np.flatnonzero(lengths)
    order = present[np.lexsort((present, lengths[present]))]
    lens = lengths[order].astype(np.int64)
    top = int(lens.max(initial=0))
    units = np.left_shift(1, top - lens)
    slots = np.cumsum(units) - units
    if lens.size and int(slots[-1] + units[-1]) > 1 << top:
        raise error("Huffman code lengths violate the Kraft inequality (not a prefix code)")
    return order, lens, slots, top


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
    order, lens, slots, top = _canonical(lengths, ValueError)
    if symbols.min() < 0 or symbols.max() >= np.asarray(lengths).size:
        raise ValueError("symbol outside the alphabet of the code lengths")
    table_len, table_code = np.zeros((2, np.asarray(lengths).size), dtype=np.int64)
    table_len[order] = lens
    table_code[order] = slots >> (top - lens)
    bits = table_len[symbols]
    if not bits.all():
        raise ValueError("a symbol to encode has code length 0")
    ends = np.cumsum(bits)
    offsets = ends - bits
    nbytes = (int(ends[-1]) + 7) // 8
    windows = table_code[symbols] << (24 - bits - (offsets & 7))
    acc = np.bincount(offsets >> 3, weights=windows, minlength=nbytes).astype(np.int64)
    out = np.zeros(nbytes + 2, dtype=np.int64)
    out[:nbytes] += acc >> 16
    out[1 : nbytes + 1] += (acc >> 8) & 255
    out[2 : nbytes + 2] += acc & 255
    return out[:nbytes].astype(np.uint8).tobytes(), offsets[::block].astype(np.uint64)


def decode(
    data: bytes, lengths: np.ndarray, count: int, block_offsets: np.ndarray, block: int = 4096
) -> np.ndarray:
    """The `count` symbols coded in `data` (smallest unsigned dtype of the alphabet).

    All ceil(count / block) blocks step in lockstep, `block` steps: gather the 32-bit
    big-endian word at each block's byte, shift out its max_len-bit window, look it up in a
    2**max_len table of (symbol << 5 | length), advance. Every block must end exactly where the
    next begins and the last at the end of `data`, else BundleFormatError.
    """
    lengths = np.asarray(lengths).ravel()
    nblocks = -(-int(count) // block) if count >= 0 and block >= 1 else -1
    offsets = np.asarray(block_offsets).ravel().astype(np.uint64)
    if nblocks < 0 or offsets.size != nblocks or count > 8 * len(data):
        raise BundleFormatError(
            f"Huffman stream: {count} symbols in {offsets.size} blocks of {block} cannot fill "
            f"a {len(data)}-byte payload"
        )
    if count == 0:
        return np.zeros(0, dtype=np.min_scalar_type(max(lengths.size - 1, 0)))
    order, lens, slots, top = _canonical(lengths)
    if order.size == 0 or offsets[0] != 0 or np.any(np.diff(offsets.astype(np.int64)) < 0):
        raise BundleFormatError("Huffman stream: no code, or block offsets not increasing from 0")
    if int(offsets[-1]) > 8 * len(data):
        raise BundleFormatError(f"Huffman stream: block offset beyond the {len(data)}-byte payload")
    entry = np.int32 if lengths.size < 1 << 26 else np.int64
    table = np.zeros(1 << top, dtype=entry)  # length 0: no code starts with this window
    table[: int(slots[-1] + (1 << (top - lens[-1])))] = np.repeat(
        (order << 5 | lens).astype(entry), np.left_shift(1, top - lens)
    )
    raw = np.pad(np.frombuffer(data, np.uint8).astype(np.int64), (0, 3))  # reads clip at end
    words = raw[:-3] << 24 | raw[1:-2] << 16 | raw[2:-1] << 8 | raw[3:]
    pos = offsets.astype(np.int64)
    steps, last = min(block, count), count - (nblocks - 1) * block
    out = np.empty((steps, nblocks), dtype=entry)
    live, base, mask = pos, 32 - top, (1 << top) - 1
    for step in range(steps):
        if step == last:
            live = pos[: nblocks - 1]  # the last block is done
        window = words.take(live >> 3, mode="clip") >> (base - (live & 7))
        np.take(table, window & mask, out=out[step, : live.size], mode="clip")
        live += out[step, : live.size] & 31
    flat = out.T.reshape(-1)[:count]
    if not np.all(flat & 31):
        raise BundleFormatError("Huffman stream: invalid code in payload")
    if np.any(pos[:-1] != offsets[1:].astype(np.int64)) or (int(pos[-1]) + 7) // 8 != len(data):
        raise BundleFormatError("Huffman stream: block boundaries or payload length do not match")
    return (flat >> 5).astype(np.min_scalar_type(max(lengths.size - 1, 0)))


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


def _auto_block(count: int) -> int:
    """Default block: the power of two >= sqrt(4 * count), within 64..4096 (see module doc)."""
    return min(MAX_BLOCK, max(64, 1 << _width(int(np.sqrt(4 * count)))))


def pack_stream(
    symbols: np.ndarray, alphabet_size: int, block: int | None = None, max_len: int = MAX_LEN
) -> bytes:
    """`symbols` (< alphabet_size) as a self-contained HUFFMAN_STREAM; block: see module doc."""
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


def unpack_stream(data: bytes) -> np.ndarray:
    """The symbols of a HUFFMAN_STREAM (smallest unsigned dtype of its alphabet)."""
    try:
        s = cs.Struct("stream" / HUFFMAN_STREAM, cs.Terminated).parse(data).stream
    except (cs.ConstructError, ValueError) as exc:
        raise BundleFormatError(f"Huffman stream: malformed header or table: {exc}") from exc
    n = s.n_entries
    if s.gap_bits:
        present = np.cumsum(unpack_bits(s.gaps, s.gap_bits, n).astype(np.int64) + 1) - 1
        lens = unpack_bits(s.lengths, s.len_bits, n).astype(np.int64) + 1
    else:
        lens = unpack_bits(s.lengths, s.len_bits, n).astype(np.int64)
        present = np.flatnonzero(lens)
        lens = lens[present]
    if present.size and int(present[-1]) >= s.alphabet_size:
        raise BundleFormatError(f"Huffman stream: symbol {present[-1]} >= {s.alphabet_size}")
    sizes = unpack_bits(s.offsets, s.offset_bits, _blocks(s)).astype(np.int64) + s.offset_base
    offsets = np.concatenate([[0], np.cumsum(sizes)])[: -(-s.count // s.block)]
    ranks = decode(s.payload, lens, s.count, offsets.astype(np.uint64), s.block)
    symbols = ranks if np.array_equal(present, np.arange(present.size)) else present[ranks]
    return symbols.astype(np.min_scalar_type(max(s.alphabet_size - 1, 0)))
