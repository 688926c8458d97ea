"""Weight encodings: how a tensor's values become the byte blobs of a TensorRecord, and back.

A tensor is stored as two symbol streams, each raw bit-packed or Huffman-coded (whichever is
smaller when Huffman is allowed; symbols of up to 8 bits, formats/huffman.py), plus small
side tables:

    VALUES     one symbol per stored entry: raw bits | int8 (q + 128) | codebook index |
               zigzag integers at their minimal bit width
    POSITIONS  which flat positions are stored: all (dense) | bitmask | CSR relative indices
    CODEBOOK   the shared values (float32, or int8 with one scale)        [codebook only]
    SCALES     float32 per-output-channel scales (int8) or one (int8 codebook)

For a pruned tensor the encoder tries dense, bitmask and CSR positions and keeps the smallest
file; CSR uses Deep Compression's relative indices with filler zeros (formats/sparse.py).
Encoding is lossless with respect to the float values the passes left in the IR: decode
returns exactly the array that was encoded.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from dlcc.errors import BundleFormatError
from dlcc.formats import bitpack, huffman, sparse
from dlcc.formats.bundle import TensorRecord
from dlcc.formats.huffman import SYMBOL_BITS


class EncodingSpec(Protocol):
    """How a tensor is to be stored: the fields `encode` reads (the IR's `dlcc.encoding`)."""

    sparse: bool  # zeros are pruned weights: store the positions of the rest
    codebook: tuple[float, ...] | None  # shared values, sorted; entries index into it
    int8: bool  # values (or the codebook) are int8 times a scale
    scales: tuple[float, ...]  # int8: one per output channel, or one per tensor/codebook
    channel_axis: int  # int8 per-channel scales run along this axis
    huffman: bool  # Huffman-code the symbol streams where that is smaller


@dataclasses.dataclass(frozen=True)
class _Values:
    """The value symbols of every flat position, and how to store them."""

    kind: str  # raw | int8 | codebook
    symbols: np.ndarray
    bits: int
    zero: int  # the symbol of 0.0 (for pruned positions and CSR fillers)
    tables: list[tuple[str, bytes]]  # (role, bytes) side tables


def encode(
    name: str, array: np.ndarray, enc: EncodingSpec, integer: bool = False
) -> tuple[TensorRecord, list]:
    """The record (offsets to be filled) and the (role, coding, bytes) blobs of `array`.

    With `integer`, an int8 encoding decodes to its int8 values (for integer execution)
    instead of the real values q * scale.
    """
    array = np.asarray(array, order="C")  # not ascontiguousarray: it makes 0-d 1-D
    if integer and not enc.int8:
        raise ValueError(f"tensor {name!r}: only an int8 encoding decodes to integers")
    # Only the chosen layout's streams outlive the search (a large layer's symbols are freed).
    best = _smallest_layout(name, array, enc, integer)
    return best.record, best.blobs(enc.huffman)


def _smallest_layout(name: str, array: np.ndarray, enc: EncodingSpec, integer: bool) -> _Layout:
    """The layout of `array` (dense, bitmask or CSR positions) of the fewest estimated bytes."""
    values = _value_symbols(name, array, enc, integer)
    base = TensorRecord(
        name,
        "int8" if integer else str(array.dtype),
        tuple(array.shape),
        values=values.kind,
        value_bits=values.bits,
        channel_axis=enc.channel_axis,
    )
    best = _dense_positions(base, values)
    if enc.sparse:
        mask = values.symbols != values.zero
        best_size = best.size(enc.huffman)
        bitmask = _bitmask_positions(base, values, mask)
        if bitmask.size(enc.huffman) < best_size:
            best, best_size = bitmask, bitmask.size(enc.huffman)
        # Raw widths have a closed-form best; Huffman shifts it, so then try them all.
        widths = (
            range(sparse.MIN_INDEX_BITS, sparse.MAX_INDEX_BITS + 1)
            if enc.huffman
            else [sparse.best_index_bits(mask, values.bits)]
        )
        # Layouts are compared by estimated size; only the smallest is built and coded.
        runs = sparse.zero_runs(mask)
        huffman_values = enc.huffman and values.bits <= SYMBOL_BITS
        nonzero = values.symbols[mask] if huffman_values else None
        chosen = None
        for bits in widths:
            size = _csr_size(values, runs, nonzero, bits, enc.huffman)
            if size is not None and size < best_size:
                chosen, best_size = bits, size
        if chosen is not None:
            best = _csr_positions(base, values, mask, chosen)
    return best


def decode(record: TensorRecord, data: bytes) -> np.ndarray:
    """The values of `record`, read from the DATA section `data` (float array); plain numbers
    stored densely (an -O0 weight) are a read-only view of `data`, not a copy."""
    view = _plain_view(record, data)
    if view is not None:
        return view
    size = int(np.prod(record.shape, dtype=np.int64))
    where = f"section TENSORS: tensor {record.name!r}"
    blobs = {role: (coding, data[at : at + n]) for role, coding, at, n in record.blobs}
    if "VALUES" not in blobs:
        raise BundleFormatError(f"{where}: no VALUES blob")
    try:
        symbols = _read_stream(*blobs["VALUES"], record.value_bits, record.entries, "VALUES")
        positions = _positions(record, blobs, size)
        values = _symbol_values(record, blobs, symbols, positions)
    except (ValueError, IndexError, BundleFormatError) as e:  # (a Huffman stream's: its role)
        raise BundleFormatError(f"{where}: {e}") from None
    stored = size if positions is None else len(positions)
    if stored != record.entries:
        raise BundleFormatError(f"{where}: {stored} positions for {record.entries} entries")
    if positions is not None:
        dense = np.zeros(size, dtype=values.dtype)
        dense[positions] = values
        values = dense
    values = values.reshape(record.shape)
    if _scaled_after(record, blobs):
        values = _times_scales(values, np.frombuffer(_raw(blobs, "SCALES"), "<f4"), record, where)
    return values


def _scaled_after(record: TensorRecord, blobs: dict) -> bool:
    """Whether the values are int8 levels that their scales multiply after the scatter (a
    float tensor stored as int8 with scales: `_symbol_values` gives the levels)."""
    return record.values == "int8" and record.dtype != "int8" and "SCALES" in blobs


def _times_scales(q: np.ndarray, scales: np.ndarray, record: TensorRecord, where: str):
    """Levels q times their scales (one, or one per index of the channel axis), in one pass
    over the dense tensor: each product rounded once to the tensor's dtype, as the exact
    product q * s (|q| <= 128, s float32) would be."""
    axis = record.channel_axis
    if len(scales) not in (1, record.shape[axis] if record.shape else 1):
        raise BundleFormatError(f"{where}: {len(scales)} scales for {record.shape} on axis {axis}")
    view = [1] * q.ndim
    if len(scales) > 1:
        view[axis] = -1
    if q.dtype == np.float32:
        return np.multiply(q, scales.reshape(view), out=q)
    return (q * scales.reshape(view).astype(np.float64)).astype(record.dtype)


def _plain_view(record: TensorRecord, data: bytes) -> np.ndarray | None:
    """Dense raw little-endian numbers as a view of `data`; None for anything else (or
    anything inconsistent: the general path then says what)."""
    dtype = np.dtype(record.dtype)
    roles = [(role, coding) for role, coding, _, _ in record.blobs]
    if (record.positions, record.values, roles) != ("dense", "raw", [("VALUES", "raw")]):
        return None
    size = int(np.prod(record.shape, dtype=np.int64))
    _, _, offset, length = record.blobs[0]
    plain = dtype.kind in "iuf" and record.value_bits == 8 * dtype.itemsize
    if not plain or record.entries != size or length != size * dtype.itemsize:
        return None
    view = np.frombuffer(data, dtype.newbyteorder("<"), size, offset)
    return view.astype(dtype, copy=False).reshape(record.shape)


def stream_stats(record: TensorRecord, data: bytes) -> dict[str, dict]:
    """Per symbol stream (VALUES, POSITIONS): coding, symbols, raw and stored bytes, entropy."""
    stats = {}
    for role, coding, offset, length in record.blobs:
        if (
            role not in ("VALUES", "POSITIONS")
            or (role, coding) == ("POSITIONS", "raw")
            and record.positions == "bitmask"
        ):
            continue
        bits = record.value_bits if role == "VALUES" else record.index_bits
        payload = data[offset : offset + length]
        symbols = _read_stream(coding, payload, bits, record.entries, role)
        counts = np.bincount(symbols.astype(np.int64)) if bits <= 16 and len(symbols) else None
        huffman_coded = coding == "huffman" and counts is not None
        stats[role] = {
            "coding": coding,
            "symbols": int(len(symbols)),
            "bits": bits,
            "raw_bytes": -(-len(symbols) * bits // 8),
            "bytes": length,
            "table_bytes": huffman.table_bytes(counts, len(symbols)) if huffman_coded else 0,
            "entropy_bytes": None if counts is None else huffman.shannon_bits(counts) / 8,
        }
    return stats


# -- values -------------------------------------------------------------------------------
def _value_symbols(name: str, array: np.ndarray, enc: EncodingSpec, integer: bool) -> _Values:
    flat = array.reshape(-1)
    scales = [] if integer else [("SCALES", _f32(enc.scales))]  # integer use needs no scales
    if enc.codebook is not None:
        book = np.asarray(enc.codebook, dtype=array.dtype)
        zero = int(np.searchsorted(book, 0.0)) if 0.0 in book else -1
        # The zeros (most of a pruned tensor) need no search: only the rest is looked up.
        where = np.flatnonzero(flat) if zero >= 0 else slice(None)
        found = np.searchsorted(book, flat[where]).clip(0, len(book) - 1)
        if not np.array_equal(book[found], flat[where]):
            raise ValueError(f"tensor {name!r}: a value is not in its codebook")
        symbols = np.full(flat.size, max(zero, 0), np.uint8 if len(book) <= 256 else np.uint32)
        symbols[where] = found
        bits = max(1, int(np.ceil(np.log2(len(book)))))
        if enc.int8:
            q = np.round(book / enc.scales[0]).astype(np.int8)
            tables = [("CODEBOOK", q.tobytes()), *scales]
        else:
            tables = [("CODEBOOK", book.astype("<f4").tobytes())]
        return _Values("codebook", symbols, bits, zero, tables)
    if enc.int8:
        q = np.round(array / _channel_scales(enc, array.shape)).reshape(-1)
        return _Values("int8", (q + 128).astype(np.uint32), 8, 128, scales)
    if array.dtype.kind == "i" and array.size:
        zigzag = (flat.astype(np.int64) << 1) ^ (flat.astype(np.int64) >> 63)
        bits = max(1, int(zigzag.max()).bit_length())
        if bits <= 32:  # integers at their minimal width (biases, tables, indices)
            return _Values("zigzag", zigzag.astype(np.uint32), bits, 0, [])
    words = flat.astype(array.dtype.newbyteorder("<"), copy=False).view(f"<u{array.dtype.itemsize}")
    return _Values("raw", words, 8 * array.dtype.itemsize, 0, [])


def _symbol_values(
    record: TensorRecord, blobs: dict, symbols: np.ndarray, positions: np.ndarray | None
) -> np.ndarray:
    dtype = np.dtype(record.dtype)
    if record.values == "raw":
        if dtype == np.bool_ and len(symbols) and int(symbols.max()) > 1:
            raise ValueError("a bool value is a byte other than 0 or 1")
        words = symbols.astype(f"<u{dtype.itemsize}")
        return words.view(dtype.newbyteorder("<")).astype(dtype)
    if record.values == "zigzag":
        z = symbols.astype(np.int64)
        return ((z >> 1) ^ -(z & 1)).astype(dtype)
    scales = np.frombuffer(_raw(blobs, "SCALES"), "<f4") if "SCALES" in blobs else None
    if record.values == "codebook":
        table = _raw(blobs, "CODEBOOK")
        if dtype == np.int8:  # integer execution: the int8 centroids themselves
            return np.frombuffer(table, np.int8)[symbols]
        if scales is None:
            return np.frombuffer(table, "<f4").astype(dtype)[symbols]
        return (np.frombuffer(table, np.int8) * scales[0]).astype(dtype)[symbols]
    if record.values == "int8" and (dtype == np.int8 or _scaled_after(record, blobs)):
        q = symbols.astype(np.int16) - 128  # the levels
        if dtype == np.int8:  # integer execution: q itself
            return q.astype(np.int8)
        return q.astype(np.float32 if dtype == np.float32 else np.float64)  # scaled in `_finish`
    raise ValueError(f"cannot decode values stored as {record.values!r}")


def _channel_scales(enc: EncodingSpec, shape: tuple[int, ...]) -> np.ndarray:
    if len(enc.scales) == 1:  # per tensor
        return np.float32(enc.scales[0])
    view = [1] * len(shape)
    view[enc.channel_axis] = shape[enc.channel_axis]
    return np.asarray(enc.scales, dtype=np.float32).reshape(view)


# -- positions ----------------------------------------------------------------------------
@dataclasses.dataclass
class _Layout:
    """A way to store a tensor: its record, the symbol streams to code, the plain blobs."""

    record: TensorRecord
    streams: list[tuple[str, np.ndarray, int]]  # (role, symbols, bits): raw or Huffman
    plain: list[tuple[str, bytes]]  # side tables and bitmasks, stored as they are

    def size(self, huffman: bool) -> int:
        """Estimated bytes (exact for raw streams; Huffman from its code lengths)."""
        coded = sum(_stream_size(symbols, bits, huffman) for _, symbols, bits in self.streams)
        return coded + sum(len(blob) for _, blob in self.plain)

    def blobs(self, huffman: bool) -> list[tuple[str, str, bytes]]:
        """The (role, coding, bytes) blobs of this layout."""
        return [(role, "raw", blob) for role, blob in self.plain] + [
            _stream(role, symbols, bits, huffman) for role, symbols, bits in self.streams
        ]


def _dense_positions(base: TensorRecord, values: _Values) -> _Layout:
    record = dataclasses.replace(base, positions="dense", entries=len(values.symbols))
    return _Layout(record, [("VALUES", values.symbols, values.bits)], values.tables)


def _bitmask_positions(base: TensorRecord, values: _Values, mask: np.ndarray) -> _Layout:
    record = dataclasses.replace(base, positions="bitmask", entries=int(mask.sum()))
    streams = [("VALUES", values.symbols[mask], values.bits)]
    return _Layout(record, streams, values.tables + [("POSITIONS", sparse.bitmask_encode(mask))])


def _csr_size(
    values: _Values, runs: np.ndarray, nonzero: np.ndarray | None, index_bits: int, huffman: bool
) -> int | None:
    """`_csr_positions(...).size(huffman)` without building the layout: its streams' counts
    follow from the zero runs before each nonzero (`runs`) and the nonzero symbols."""
    span = 1 << index_bits
    fillers = int(np.sum(runs >> index_bits))
    if values.zero < 0 and fillers:
        return None
    entries = runs.size + fillers
    value_counts = gap_counts = None
    if nonzero is not None and entries:  # value symbols Huffman may code
        value_counts = np.bincount(nonzero, minlength=max(values.zero, 0) + 1)
        value_counts[max(values.zero, 0)] += fillers
    if huffman and entries:
        gap_counts = np.bincount(runs & (span - 1), minlength=span)
        gap_counts[span - 1] += fillers
    tables = sum(len(blob) for _, blob in values.tables)
    return (
        _counted_size(value_counts, entries, values.bits, huffman)
        + _counted_size(gap_counts, entries, index_bits, huffman)
        + tables
    )


def _csr_positions(base: TensorRecord, values: _Values, mask: np.ndarray, index_bits: int):
    """CSR relative indices with filler zeros; None when fillers have no zero symbol."""
    gaps, slots = sparse.relative_index_encode(mask, index_bits)
    filler = ~mask[slots]
    if values.zero < 0 and filler.any():
        return None
    symbols = np.where(filler, max(values.zero, 0), values.symbols[slots])
    record = dataclasses.replace(base, positions="csr", index_bits=index_bits, entries=len(slots))
    streams = [("VALUES", symbols, values.bits), ("POSITIONS", gaps, index_bits)]
    return _Layout(record, streams, values.tables)


def _positions(record: TensorRecord, blobs: dict, size: int) -> np.ndarray | None:
    """The flat positions of the stored entries; None for all of them in order (dense)."""
    if record.positions == "dense":
        return None
    if record.positions == "bitmask":
        return np.flatnonzero(sparse.bitmask_decode(_raw(blobs, "POSITIONS"), size))
    if record.positions == "csr":
        gaps = _read_stream(*blobs["POSITIONS"], record.index_bits, record.entries, "POSITIONS")
        positions = sparse.relative_index_decode(gaps, record.index_bits, size)
        if len(positions) and positions[-1] >= size:
            raise ValueError(f"position {positions[-1]} past the tensor's {size} entries")
        return positions
    raise ValueError(f"unknown positions coding {record.positions!r}")


# -- streams ------------------------------------------------------------------------------
def _stream_size(symbols: np.ndarray, bits: int, allow_huffman: bool) -> int:
    """Bytes `_stream` will take: raw exactly, Huffman estimated from its code lengths."""
    coded = _huffman_codes(allow_huffman, bits, len(symbols))
    return _counted_size(_histogram(symbols) if coded else None, len(symbols), bits, coded)


def _counted_size(counts: np.ndarray | None, count: int, bits: int, allow_huffman: bool) -> int:
    """`_stream_size` of `count` symbols whose histogram is `counts` (needed for Huffman)."""
    raw = count * bits // 8 if bits in (8, 16, 32, 64) else bitpack.packed_size(count, bits)
    if not _huffman_codes(allow_huffman, bits, count):
        return raw
    lengths = huffman.code_lengths(counts)
    payload = -(-int(counts @ lengths.astype(np.int64)) // 8)
    return min(raw, payload + huffman.table_bytes(counts, count))


def _huffman_codes(allow_huffman: bool, bits: int, count: int) -> bool:
    """Whether a stream of `count` `bits`-bit symbols is a Huffman candidate (where allowed,
    non-empty, of byte symbols: formats/huffman.py)."""
    return bool(allow_huffman and bits <= SYMBOL_BITS and count)


def _histogram(symbols: np.ndarray, chunk: int = 1 << 22) -> np.ndarray:
    """np.bincount of a symbol stream, a chunk at a time: a 100M-symbol stream is not
    copied to int64 whole."""
    counts = np.zeros(int(symbols.max()) + 1, np.int64)
    for start in range(0, len(symbols), chunk):
        part = np.bincount(symbols[start : start + chunk])
        counts[: len(part)] += part
    return counts


def _stream(role: str, symbols: np.ndarray, bits: int, allow_huffman: bool):
    """(role, coding, bytes): raw bit-packed, or Huffman where allowed and smaller."""
    whole = bits in (8, 16, 32, 64)  # whole bytes: plain little-endian words (a view, no copy)
    raw = (
        memoryview(np.ascontiguousarray(symbols.astype(f"<u{bits // 8}", copy=False))).cast("B")
        if whole
        else bitpack.pack_bits(symbols, bits)
    )
    if _huffman_codes(allow_huffman, bits, len(symbols)):
        coded = huffman.pack_stream(symbols)
        if len(coded) < len(raw):
            return role, "huffman", coded
    return role, "raw", raw


def _read_stream(coding: str, payload, bits: int, count: int, role: str) -> np.ndarray:
    """The `count` symbols of the `role` stream `payload`: raw bytes or a Huffman stream."""
    if coding == "huffman":
        return huffman.unpack_stream(payload, count, role)
    if bits in (8, 16, 32, 64):
        if len(payload) != bits // 8 * count:
            raise ValueError(f"{len(payload)} bytes for {count} {bits}-bit values")
        return np.frombuffer(payload, f"<u{bits // 8}")
    return bitpack.unpack_bits(payload, bits, count)


def _raw(blobs: dict, role: str) -> bytes:
    if role not in blobs:
        raise ValueError(f"missing {role} blob")
    return blobs[role][1]


def _f32(values) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()
