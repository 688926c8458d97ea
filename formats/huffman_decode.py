"""Decoding canonical Huffman streams (formats/huffman.py codes them): lanes in lockstep.

Decoding is vectorized over blocks: the encoder records the bit offset of every `block`-th
symbol, and each block is a lane. `decode_many` (`unpack_streams`, which `dlcc.load` calls
once per bundle) steps the lanes of all its streams together (`_decode_lanes`): payloads and
tables concatenated, each lane adding its stream's bases. A step loads the 64 bits at each
lane's position and looks up two k-bit windows of them in its stream's table (k >= the
longest code): an entry gives up to 4 codes lying whole in its window on a large stream (k up
to 16; ~6 symbols a step on a 4-bit stream), 2 on a mid-sized one, 1 on a small one (2**k
entries in one np.repeat), written out as one 8-byte word. A step is 26 numpy calls over the
live lanes, so the cost is about ``steps * (~40 us) + lane-steps * (30-75 ns) + entries *
(1-30 ns)`` plus ~0.25 ms a stream (header, code, table): streams decoded together share
their steps. Measured (one thread, shared machine, so +-20%): one 10 M-symbol 4-bit
stream 230 M symbols/s; 1 M symbols in 100 streams 9 M/s one at a time, 30-36 M/s together;
ResNet-50 -O3's 105 streams (8.1 M symbols, 7,949 lanes, ~590 steps, 2.0 M lane-steps)
~70 M/s together, ~30 M/s one at a time. A block should leave hundreds of blocks, and each
block costs a few bits of offset (`pack_stream` picks ~sqrt(4n)).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from dlcc.errors import BundleFormatError

MAX_LEN = 16


def canonical(lengths: np.ndarray, error: type[Exception] = BundleFormatError):
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


_WINDOW = 16  # widest table window (bits): 2**16 entries; two windows fit a loaded word
_TABLE_SHARE = 16  # an entry of 4 codes costs ~30 ns: worth it from ~16 symbols an entry
_ENTRY_BYTES = 4  # symbol bytes in an entry, so that two entries fill one 8-byte write
_STEPS = 8  # steps between two checks for finished and stuck lanes
_SLACK = 8 * _STEPS + 8  # bytes a lane may write past its symbols before it retires
_LANES = 8192  # lanes stepped together; more are decoded in batches


def _lookup_table(values, lens, slots, top: int, k: int, width: int, depth: int) -> np.ndarray:
    """The table of k-bit windows (top <= k <= 16): 2**k uint64 entries.

    Entry of window w: the codes lying whole in w, read from its top bit, at most `depth` and
    _ENTRY_BYTES // width of them (none if w opens with no code). Bits 0..31 hold their values,
    `width` bytes each, the first lowest, zeros after the last; bits 40..47 hold 8 times their
    byte count, bits 56..63 their total length (0 only when w opens with no code). Entries of
    one or two codes are runs laid out by one np.repeat; each further code is ~8 passes.
    """
    values = values.astype(np.int64)
    one = values | 8 * width << 40 | lens << 56  # each code alone
    single = np.zeros(1 << k, dtype=np.int64)
    single[: int(np.left_shift(1, k - lens).sum())] = np.repeat(one, np.left_shift(1, k - lens))
    depth = min(depth, _ENTRY_BYTES // width, k // int(lens[0]))  # lens[0] is the shortest
    if depth == 1:
        return single.view(np.uint64)
    # Runs of first code i: (i, j) for each code j of length <= k - l_i, then (i) alone.
    room = k - lens
    fits = np.searchsorted(lens, room, side="right")
    ends = np.append(slots, slots[-1] + (1 << (top - lens[-1])))[fits]  # in top bits
    covered = np.where(room >= top, ends << np.maximum(room - top, 0), ends >> (top - room))
    first = np.repeat(np.arange(lens.size), fits + 1)
    second = np.arange(first.size) - np.repeat(np.cumsum(fits + 1) - fits - 1, fits + 1)
    pair, second = second < fits[first], np.minimum(second, lens.size - 1)
    runs = np.where(pair, 1 << room[first] - lens[second], (1 << room[first]) - covered[first])
    both = values[second] << 8 * width | one[second] >> 40 << 40
    table = np.zeros(1 << k, dtype=np.int64)
    table[: int(runs.sum())] = np.repeat(one[first] + np.where(pair, both, 0), runs)
    if depth > 2:
        windows, live = np.arange(1 << k), (table >> 40 & 255) == 16 * width
        for j in range(2, depth):
            used = table >> 56
            code = single[(windows << used) & ((1 << k) - 1)]  # the code opening what is left
            live &= (code != 0) & (used + (code >> 56) <= k)
            table += np.where(live, (code & 0xFFFF) << 8 * width * j | code >> 40 << 40, 0)
    return table.view(np.uint64)


class _Lanes(NamedTuple):
    """Per lane (one block of one stream): where it starts and what it decodes with."""

    start: np.ndarray  # bit of the concatenated payloads where its block starts
    target: np.ndarray  # symbols in its block
    table_base: np.ndarray  # its stream's first entry in the concatenated tables
    drop: np.ndarray  # 64 - its stream's window bits
    owner: np.ndarray  # its stream's index


def _decode_lanes(words, table, code_len, width: int, lanes: _Lanes, labels: list[str]):
    """Lanes in lockstep, lane i decoding lanes.target[i] symbols from bit lanes.start[i].

    Returns (symbols, at, ends): lane i's symbols (uint8 or uint16 by `width`) are
    symbols[at[i] : at[i] + target[i]] and ends[i] is the bit just past their codes. A step
    loads each lane's 64-bit word, looks up two windows of it in its stream's table (at most
    31 + 2 * 16 bits in) and writes both entries' symbols as one unaligned 8-byte word at the
    lane's output byte; the bytes past the decoded ones are garbage that the next write
    overwrites. Every _STEPS steps the lanes that reached their target retire and a lane that
    has not moved (it met an invalid code) is an error naming labels[owner]. Retired lanes ran
    past their block: the lengths of the extra symbols (code_len[owner, symbol]), back from
    their end bit, give the exact end of the block.
    """
    n, most = lanes.start.size, int(lanes.target.max())
    stride = lanes.target + _SLACK // width  # symbols
    at = np.cumsum(stride) - stride
    buf = np.empty(int(stride.sum()) * width, dtype=np.uint8)
    sink = np.ndarray((buf.size - 7,), dtype="<u8", buffer=buf, strides=(1,))  # unaligned
    first_bit = at.astype(np.uint64) * np.uint64(8 * width)
    goal = first_bit + lanes.target.astype(np.uint64) * np.uint64(8 * width)
    # Rows: position, output bit, goal, table base, window drop, lane; compacted together.
    state = np.stack([lanes.start, first_bit, goal, lanes.table_base, lanes.drop, np.arange(n)])
    state = state.astype(np.uint64)
    final = state[:2].copy()
    scratch = np.empty((7, n), dtype=np.uint64)  # rows 0 and 1 also serve as int64 indices
    # Array operands and `out` by position: numpy's overhead per call is then ~3x smaller.
    consts = np.array([5, 31, 56, 40, 255, 0xFFFFFFFF, 3], dtype=np.uint64)
    consts = np.repeat(consts[:, None], n, axis=1)
    shr, shl, band, bor, add = np.right_shift, np.left_shift, np.bitwise_and, np.bitwise_or, np.add
    take_word, take_entry = words.take, table.take
    for _ in range(most // _STEPS + 2):  # a lane not stuck decodes >= 1 symbol a step
        live = state.shape[1]
        pos, out_bits, goal, base, drop, ids = state
        index, window, shift, word, first, second, field = scratch[:, :live]
        c5, c31, c56, c40, c255, low, c3 = consts[:, :live]
        index_i, window_i = index.view(np.int64), window.view(np.int64)
        before = pos.copy()
        for _ in range(_STEPS):
            shr(pos, c5, index)
            band(pos, c31, shift)
            take_word(index_i, None, word, "clip")  # past the end: the last word, zeros
            shl(word, shift, word)  # the lane's next bits, from the top
            shr(word, drop, window)
            add(window, base, window)
            take_entry(window_i, None, first, "clip")
            shr(first, c56, field)  # its code bits
            add(pos, field, pos)
            shl(word, field, word)
            shr(word, drop, window)
            add(window, base, window)
            take_entry(window_i, None, second, "clip")
            shr(second, c56, field)
            add(pos, field, pos)
            shr(first, c40, field)
            band(field, c255, field)  # 8 * its symbol bytes
            shl(second, field, word)
            band(first, low, first)
            bor(first, word, first)  # both entries' symbols
            shr(out_bits, c3, index)
            sink[index_i] = first
            add(out_bits, field, out_bits)
            shr(second, c40, field)
            band(field, c255, field)
            add(out_bits, field, out_bits)
        done = out_bits >= goal
        if np.count_nonzero(done):
            gone, keep = np.flatnonzero(done), np.flatnonzero(~done)
            final[:, ids[gone].astype(np.int64)] = state[:2, gone]
            if keep.size == 0:
                break
            state, before = state[:, keep], before[keep]
        stuck = np.flatnonzero(state[0] == before)
        if stuck.size:
            lane = int(lanes.owner[int(state[5, stuck[0]])])
            raise BundleFormatError(f"{labels[lane]}: invalid code in payload")
    else:
        raise BundleFormatError("Huffman stream: a lane did not finish")  # unreachable
    symbols = buf.view(np.uint8 if width == 1 else "<u2")
    extra = (final[1] >> np.uint64(3)).astype(np.int64) // width - at - lanes.target
    span = 8 * _STEPS // width  # > extra
    tail = symbols.take(at[:, None] + lanes.target[:, None] + np.arange(span))
    tail_len = code_len.take(lanes.owner[:, None] << 8 * width | tail)
    tail_bits = np.where(np.arange(span) < extra[:, None], tail_len, 0).sum(axis=1)
    return symbols, at, final[0].astype(np.int64) - tail_bits


def _words(data: bytes) -> np.ndarray:
    """uint64 words[i] = bits 32 * i .. 32 * i + 63 of `data` (MSB first), zeros past its end."""
    pairs = len(data) // 8 + 2  # words[2 * j] starts at byte 8 * j, words[2 * j + 1] at 8 * j + 4
    whole = max(len(data) - 4, 0) // 8  # pairs lying whole in `data`
    words = np.empty((pairs, 2), dtype=np.uint64)
    if whole:
        words[:whole, 0] = np.frombuffer(data, dtype=">u8", count=whole)
        words[:whole, 1] = np.frombuffer(data, dtype=">u8", count=whole, offset=4)
    tail = np.zeros(8 * (pairs - whole) + 8, dtype=np.uint8)
    tail[: len(data) - 8 * whole] = np.frombuffer(data, dtype=np.uint8, offset=8 * whole)
    words[whole:, 0] = tail[: 8 * (pairs - whole)].view(">u8")
    words[whole:, 1] = tail[4 : 8 * (pairs - whole) + 4].view(">u8")
    return words.reshape(-1)


@dataclasses.dataclass
class _Stream:
    """A coded stream checked and ready for the lanes (`decode_many`)."""

    label: str
    data: bytes
    count: int
    block: int
    offsets: np.ndarray  # int64 bit offset of each block
    dtype: np.dtype  # of the symbols
    order: np.ndarray  # canonical order: symbol of each rank
    lens: np.ndarray  # code length of each rank
    width: int  # bytes of a decoded symbol (1 or 2; wider alphabets decode ranks)
    table: np.ndarray | None = None
    out: np.ndarray | None = None

    @property
    def values(self) -> np.ndarray:
        """What the table decodes for each rank: the symbol, or the rank of a wide alphabet."""
        return self.order if self.dtype.itemsize <= 2 else np.arange(self.order.size)


def _check(data, lengths, count: int, block_offsets, block: int, label: str) -> _Stream:
    """`decode`'s arguments checked, with the code's table (BundleFormatError naming `label`)."""
    lengths = np.asarray(lengths).ravel()
    dtype = np.min_scalar_type(max(lengths.size - 1, 0))
    nblocks = -(-int(count) // block) if count >= 0 and block >= 1 else -1
    offsets = np.asarray(block_offsets).ravel().astype(np.int64)
    if nblocks < 0 or offsets.size != nblocks or count > 8 * len(data):
        raise BundleFormatError(
            f"{label}: {count} symbols in {offsets.size} blocks of {block} cannot fill "
            f"a {len(data)}-byte payload"
        )
    empty = np.zeros(0, dtype=np.int64)
    if count == 0:
        return _Stream(label, data, 0, block, offsets, dtype, empty, empty, 0, out=empty)
    try:
        order, lens, slots, top = canonical(lengths)
    except BundleFormatError as e:
        raise BundleFormatError(f"{label}: {e}") from None
    if order.size == 0 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise BundleFormatError(f"{label}: no code, or block offsets not increasing from 0")
    if int(offsets[-1]) > 8 * len(data):
        raise BundleFormatError(f"{label}: block offset beyond the {len(data)}-byte payload")
    width = min(dtype.itemsize, 2)
    stream = _Stream(label, data, int(count), block, offsets, dtype, order, lens, width)
    # Entries of up to 4 codes pay from ~_TABLE_SHARE symbols an entry (k grows with count),
    # of 2 codes from ~2 (2**top entries), else one code an entry costs one np.repeat.
    k = min(_WINDOW, (count // _TABLE_SHARE).bit_length())
    depth = _ENTRY_BYTES if k >= top else 2 if count >= 2 << top else 1
    stream.table = _lookup_table(stream.values, lens, slots, top, max(k, top), width, depth)
    stream.out = np.empty(count, dtype=np.uint8 if width == 1 else np.uint16)
    return stream


def _decode_group(streams: list[_Stream]) -> None:
    """Fill the `out` of `streams` (one symbol width), all their lanes stepped together.

    Payloads and tables are concatenated; a lane adds its stream's base to its bit position
    and window. A lane past its payload reads the next one's bits: its extra symbols are
    garbage that only the end-of-block arithmetic sees, and the checks below still hold.
    """
    width, labels = streams[0].width, [s.label for s in streams]
    sizes = np.array([len(s.data) for s in streams])
    counts = np.array([s.count for s in streams])
    blocks = np.array([s.block for s in streams])
    nblocks = np.array([s.offsets.size for s in streams])
    table_sizes = np.array([s.table.size for s in streams])
    words = _words(b"".join(s.data for s in streams))
    table = np.concatenate([s.table for s in streams])
    code_len = np.zeros((len(streams), 1 << 8 * width), dtype=np.int64)
    for i, s in enumerate(streams):
        code_len[i, s.values] = s.lens
    first, last = np.cumsum(nblocks) - nblocks, np.cumsum(nblocks) - 1
    owner = np.repeat(np.arange(len(streams)), nblocks)
    starts = np.concatenate([s.offsets for s in streams]) + 8 * (np.cumsum(sizes) - sizes)[owner]
    targets = blocks[owner]
    targets[last] = counts - (nblocks - 1) * blocks
    drop = 64 - np.log2(table_sizes).astype(np.int64)
    lanes = _Lanes(
        starts, targets, (np.cumsum(table_sizes) - table_sizes)[owner], drop[owner], owner
    )
    ends = np.empty(owner.size, dtype=np.int64)
    per = -(-owner.size // -(-owner.size // _LANES))  # even batches of at most _LANES lanes
    for lo in range(0, owner.size, per):
        hi = min(lo + per, owner.size)
        batch = _Lanes(*(a[lo:hi] for a in lanes))
        symbols, at, ends[lo:hi] = _decode_lanes(words, table, code_len, width, batch, labels)
        for i in range(owner[lo], owner[hi - 1] + 1):  # the streams of this batch
            s, a, b = streams[i], max(lo, first[i]), min(hi, last[i] + 1)
            whole = b - a - (b == last[i] + 1 and targets[last[i]] < s.block)  # full lanes
            row, out = at[a - lo], s.out[(a - first[i]) * s.block :]
            if whole:
                rows = symbols[row : row + whole * (s.block + _SLACK // width)]
                rows = rows.reshape(whole, -1)
                np.copyto(out[: whole * s.block].reshape(whole, s.block), rows[:, : s.block])
            if whole < b - a:
                row = at[b - 1 - lo]
                out[whole * s.block :] = symbols[row : row + targets[last[i]]]
    follows = ends == np.append(starts[1:], 0)
    follows[last] = (ends[last] - 8 * (np.cumsum(sizes) - sizes) + 7) // 8 == sizes
    if not follows.all():
        bad = labels[owner[np.argmin(follows)]]
        raise BundleFormatError(f"{bad}: block boundaries or payload length do not match")


def decode_many(streams: list[tuple], labels: list[str] | None = None) -> list[np.ndarray]:
    """`decode` of each (data, lengths, count, block_offsets, block), in one lockstep pass.

    The lanes of every stream step together (`_decode_group`, once per symbol width), so a
    small stream costs its table and its symbols, not steps of its own. A malformed stream
    raises BundleFormatError naming its label (default "Huffman stream").
    """
    labels = labels or ["Huffman stream"] * len(streams)
    checked = [_check(*args, label) for args, label in zip(streams, labels)]
    for width in (1, 2):
        group = [s for s in checked if s.count and s.width == width]
        if group:
            _decode_group(group)
    return [
        s.out.astype(s.dtype, copy=False)
        if s.dtype.itemsize <= 2
        else s.order[s.out].astype(s.dtype)
        for s in checked
    ]


def decode(
    data: bytes, lengths: np.ndarray, count: int, block_offsets: np.ndarray, block: int = 4096
) -> np.ndarray:
    """The `count` symbols coded in `data` (smallest unsigned dtype of the alphabet).

    Block i is a lane decoding from bit block_offsets[i] (`_decode_lanes`), _LANES lanes at a
    time at most. Every block must end exactly where the next begins and the last at the end
    of `data`, and no lane may meet an invalid code, else BundleFormatError.
    """
    return decode_many([(data, lengths, count, block_offsets, block)])[0]
