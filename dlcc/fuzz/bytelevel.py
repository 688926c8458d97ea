"""BYTES mutations: flip, set, insert or delete bytes inside one section and recompute the
CRCs, rewrite the section table (with a valid header CRC), or truncate the file.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dlcc.formats.bundle import pack_sections
from dlcc.formats.schema import (
    HEADER,
    SECTION_ORDER,
    SectionKind,
)
from dlcc.fuzz.mutant import BYTES, Mutant, _choice, _edit_list, _kind, _uint


def _section_bytes(rng, m: Mutant, edit: Callable[[bytearray, int], str]) -> None:
    """Apply `edit(payload, position)` to one section and re-pack it with fresh CRCs."""
    kind = _choice(rng, SECTION_ORDER)
    payload = bytearray(m.seed.sections[kind])
    starts = [o for t in m.seed.file.tensors for _, _, o, _ in t.blobs] if kind == "DATA" else []
    if starts and rng.random() < 0.5:  # near a payload's start, where its headers are
        pos = _choice(rng, starts) + int(rng.integers(24))
    else:
        pos = int(rng.integers(len(payload) + 1))
    pos = min(pos, len(payload))
    m.note(f"section {kind} at {pos}: {edit(payload, pos)}")
    m.blob = pack_sections({**m.seed.sections, kind: bytes(payload)})


@_kind(BYTES)
def flip_bits(rng, m: Mutant) -> None:
    """One to eight random bits flipped in one section."""

    def edit(p: bytearray, pos: int) -> str:
        for _ in range(int(rng.integers(1, 9))):
            if p:
                p[min(pos, len(p) - 1)] ^= 1 << int(rng.integers(8))
                pos = int(rng.integers(len(p)))
        return "bits flipped"

    _section_bytes(rng, m, edit)


@_kind(BYTES)
def set_bytes(rng, m: Mutant) -> None:
    """One to four bytes of one section set to 0x00, 0x01, 0x7F, 0x80, 0xFF or random."""

    def edit(p: bytearray, pos: int) -> str:
        value = _choice(rng, (0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(256))))
        n = int(rng.integers(1, 5))
        p[pos : pos + n] = bytes([value]) * len(p[pos : pos + n])
        return f"{n} bytes set to {value:#x}"

    _section_bytes(rng, m, edit)


@_kind(BYTES)
def insert_bytes(rng, m: Mutant) -> None:
    """One to sixteen random bytes inserted into one section."""

    def edit(p: bytearray, pos: int) -> str:
        p[pos:pos] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
        return "bytes inserted"

    _section_bytes(rng, m, edit)


@_kind(BYTES)
def delete_bytes(rng, m: Mutant) -> None:
    """One to sixteen bytes deleted from one section."""

    def edit(p: bytearray, pos: int) -> str:
        del p[pos : pos + int(rng.integers(1, 17))]
        return "bytes deleted"

    _section_bytes(rng, m, edit)


@_kind(BYTES)
def truncate(rng, m: Mutant) -> None:
    """The whole file cut short (CRCs not recomputed)."""
    size = int(rng.integers(len(m.seed.blob)))
    m.blob = m.seed.blob[:size]
    m.note(f"file truncated to {size} bytes")


@_kind(BYTES)
def header_table(rng, m: Mutant) -> None:
    """A section-table entry's kind, offset, length or CRC changed, or an entry dropped or
    copied; the header gets a valid CRC of its own."""
    body = HEADER.parse(m.seed.blob).body
    entries = [dict(e) for e in body.value.sections]
    if rng.random() < 0.3:
        what = _edit_list(rng, entries, lambda: _choice(rng, entries))
    else:
        e, field = _choice(rng, entries), _choice(rng, ("kind", "offset", "length", "crc32"))
        if field == "kind":
            e["kind"] = _choice(rng, [*map(str, SectionKind.encmapping), 0, 7, 65535])
        else:
            e[field] = _uint(rng, 32 if field == "crc32" else 64, (len(m.seed.blob), e[field]))
        what = f"{field} -> {e[field]}"
    for e in entries:
        e.pop("_io", None)
    value = {"version": body.value.version, "count": len(entries), "sections": entries}
    header = HEADER.build({"body": {"value": value}})
    m.blob = header + m.seed.blob[len(body.data) + 4 :]
    m.note(f"section table: {what}")
