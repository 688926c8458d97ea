"""Huffman streams vs zlib, lzma (and zstd) on a quantized-weight-like stream: size and speed.

    python benchmarks/huffman.py [--count N] [--repeat R] [--streams S]

Draws N (default 10 M) symbols from a discretized Laplace over 32 symbols (what weight sharing
with 5-bit indices produces), codes them with `pack_stream` (Huffman-only DEFLATE blocks,
formats/huffman.py), and prints, beside zlib (level 9, with LZ77 matches),
lzma (preset 6) and zstd (level 19, only if the `zstandard` module is importable) compressing
the same symbols as uint8 bytes: the size, its ratio to the Shannon bound, the decode time, the
throughput (M symbols/s = MB/s of uint8 symbols) and each codec's throughput as a multiple of
dlcc's. Decode times are the best of R runs after a warm-up; the machine is shared and noisy.
Then it checks the size bar of the issue "Speed", stream <= 1.02 x (Shannon bound + code
tables), counting no table (the stricter bar), and decodes the first N / 10 symbols cut into
S (default 100) streams, as a bundle holds them.
"""

from __future__ import annotations

import argparse
import lzma
import time
import zlib

import numpy as np
from _common import best_time, table

from dlcc.formats.huffman import pack_stream, shannon_bits, unpack_stream

SIZE_BAR = 1.02  # stream / (Shannon bound + code tables)


def laplace_stream(count: int, seed: int = 0) -> np.ndarray:
    """`count` symbols of a discretized Laplace (scale 3) clipped to 0..31, as uint8."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.laplace(0.0, 3.0, count)) + 16, 0, 31).astype(np.uint8)


def byte_codecs() -> tuple[list[tuple], str]:
    """(name, compress, decompress, slow) of the general-purpose codecs here, and a note."""
    codecs = [
        ("zlib -9", lambda raw: zlib.compress(raw, 9), zlib.decompress, False),
        ("lzma -6", lambda raw: lzma.compress(raw, preset=6), lzma.decompress, True),
    ]
    try:
        import zstandard
    except ImportError:
        return codecs, "zstd: skipped, the zstandard module is not importable"
    compressor, decompressor = zstandard.ZstdCompressor(level=19), zstandard.ZstdDecompressor()
    codecs.append(("zstd -19", compressor.compress, decompressor.decompress, False))
    return codecs, ""


def main() -> None:
    """Measure the codecs on one stream and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=5, help="timed decodes of dlcc's stream")
    parser.add_argument("--streams", type=int, default=100, help="small streams, decoded together")
    args = parser.parse_args()
    symbols = laplace_stream(args.count)
    raw = symbols.tobytes()
    bound = shannon_bits(np.bincount(symbols, minlength=32)) / 8

    start = time.perf_counter()
    stream = pack_stream(symbols)
    encode_s = time.perf_counter() - start
    count = symbols.size
    assert np.array_equal(unpack_stream(stream, count), symbols)
    decode = lambda: unpack_stream(stream, count)  # noqa: E731
    codecs = [("huffman (dlcc)", stream, decode, encode_s, args.repeat)]
    others, note = byte_codecs()
    for name, compress, decompress, slow in others:
        start = time.perf_counter()
        blob = compress(raw)
        seconds = time.perf_counter() - start
        assert decompress(blob) == raw
        repeat = 1 if slow else args.repeat
        codecs.append((name, blob, lambda d=decompress, b=blob: d(b), seconds, repeat))

    rows = [("shannon bound", f"{bound:,.0f}", "1.000", "", "", "", "", "")]
    speeds = {}
    for name, blob, decode, encode_seconds, repeat in codecs:
        seconds = best_time(decode, repeat)
        speeds[name] = args.count / seconds / 1e6
        rows.append(
            (
                name,
                f"{len(blob):,}",
                f"{len(blob) / bound:.3f}",
                f"{8 * len(blob) / args.count:.3f}",
                f"{encode_seconds:.2f}",
                f"{seconds * 1e3:.0f}",
                f"{speeds[name]:.1f}",
                f"{speeds[name] / speeds['huffman (dlcc)']:.2f}",
            )
        )
    header = (
        "codec", "bytes", "/ shannon", "bits/sym", "encode s", "decode ms", "M sym/s", "x dlcc"
    )  # fmt: skip
    print(
        f"{args.count:,} symbols, 32-symbol Laplace stream, {bound * 8 / args.count:.3f} bits/sym"
    )
    print(table(rows, header))
    dlcc = speeds.pop("huffman (dlcc)")
    ratios = ", ".join(f"{dlcc / speed:.2f}x {name}" for name, speed in speeds.items())
    print(f"dlcc decodes {dlcc:.1f} M sym/s: {ratios}" + (f"; {note}" if note else ""))
    bar = len(stream) / bound
    print(
        f"huffman stream {len(stream):,} B = {bar:.4f} x shannon, code tables included "
        f"({'within' if bar <= SIZE_BAR else 'OVER'} {SIZE_BAR} x (shannon + tables))"
    )
    parts = np.array_split(symbols[: args.count // 10], args.streams)
    streams = [(pack_stream(part), part.size) for part in parts]
    seconds = best_time(lambda: [unpack_stream(s, n) for s, n in streams], args.repeat)
    n = args.count // 10
    print(f"{n:,} symbols in {len(streams)} streams: {n / seconds / 1e6:.1f} M sym/s")


if __name__ == "__main__":
    main()
