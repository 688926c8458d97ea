"""Huffman stream vs zlib and lzma on a quantized-weight-like stream: size and decode speed.

    python benchmarks/huffman.py [--count N]

Draws N (default 10 M) symbols from a discretized Laplace over 32 symbols (what weight sharing
with 5-bit indices produces), codes them with `pack_stream`, and prints, beside zlib (level 9)
and lzma (preset 6) compressing the same symbols as uint8 bytes: the size, its ratio to the
Shannon bound, the decode time and the throughput (M symbols/s = MB/s of uint8 symbols).
Decode times are the best of a few runs after a warm-up; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import lzma
import time
import zlib

import numpy as np
from _common import best_time, table

from dlcc.formats.huffman import HUFFMAN_STREAM, pack_stream, shannon_bits, unpack_stream


def laplace_stream(count: int, seed: int = 0) -> np.ndarray:
    """`count` symbols of a discretized Laplace (scale 3) clipped to 0..31, as uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(0.0, 3.0, count)) + 16, 0, 31).astype(np.uint8)


def main() -> None:
    """Measure the three codecs on one stream and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000_000)
    args = parser.parse_args()
    symbols = laplace_stream(args.count)
    raw = symbols.tobytes()
    bound = shannon_bits(np.bincount(symbols, minlength=32)) / 8

    start = time.perf_counter()
    stream = pack_stream(symbols, 32)
    encode_s = time.perf_counter() - start
    assert np.array_equal(unpack_stream(stream), symbols)
    payload = len(HUFFMAN_STREAM.parse(stream).payload)
    codecs = [
        ("huffman (dlcc)", stream, lambda: unpack_stream(stream), encode_s, 3),
    ]
    for name, compress, decompress, repeat in (
        ("zlib -9", lambda: zlib.compress(raw, 9), zlib.decompress, 3),
        ("lzma -6", lambda: lzma.compress(raw, preset=6), lzma.decompress, 1),
    ):
        start = time.perf_counter()
        blob = compress()
        seconds = time.perf_counter() - start
        assert decompress(blob) == raw
        codecs.append((name, blob, lambda d=decompress, b=blob: d(b), seconds, repeat))

    rows = [("shannon bound", f"{bound:,.0f}", "1.000", "", "", "", "")]
    for name, blob, decode, encode_seconds, repeat in codecs:
        seconds = best_time(decode, repeat)
        rows.append(
            (
                name,
                f"{len(blob):,}",
                f"{len(blob) / bound:.3f}",
                f"{8 * len(blob) / args.count:.3f}",
                f"{encode_seconds:.2f}",
                f"{seconds * 1e3:.0f}",
                f"{args.count / seconds / 1e6:.1f}",
            )
        )
    header = ("codec", "bytes", "/ shannon", "bits/sym", "encode s", "decode ms", "M sym/s")
    print(
        f"{args.count:,} symbols, 32-symbol Laplace stream, {bound * 8 / args.count:.3f} bits/sym"
    )
    print(table(rows, header))
    overhead = len(stream) - payload
    print(
        f"huffman payload {payload:,} B = {payload / bound:.4f} x shannon; "
        f"header + code table + block offsets {overhead:,} B"
    )


if __name__ == "__main__":
    main()
