"""Typed bundle contents and their byte form; the reader trusts nothing.

`BundleFile` is what a bundle holds, as plain dataclasses (Construct containers stay inside
this module). `pieces()` lays the sections out as consecutive buffers (DATA's chunks as they
are, never joined into a copy: a file is written piece by piece), `to_bytes()` joins them;
`BundleFile.from_bytes()` checks the header, every section's bounds, alignment and CRC-32,
and the zero padding between sections before it parses a section, and checks every tensor's
byte range before anything reads it.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from typing import Any

from construct import ConstructError

from dlcc.errors import BundleFormatError
from dlcc.formats import isa
from dlcc.formats.schema import (
    ALIGN,
    ATTRS,
    BUFFERS,
    HEADER,
    LAYER_COLUMNS,
    MAGIC,
    META,
    META_FIELDS,
    NUMBER,
    PREFIX_BYTES,
    PROGRAM_SECTION,
    SECTION_ORDER,
    TENSORS,
    VERSION,
    Required,
    header_bytes,
)

Attr = int | float | str | tuple[int, ...] | tuple[float, ...]
MAX_META_BYTES = 4 << 20  # a pass log of thousands of layers takes well under 1 MiB


@dataclasses.dataclass(frozen=True)
class TensorRecord:
    """A weight tensor: decoded dtype and shape, how it is coded, and its payload blobs."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    values: str = "raw"  # raw | int8 | codebook | zigzag
    positions: str = "dense"  # dense | bitmask | csr
    value_bits: int = 32
    index_bits: int = 0
    channel_axis: int = 0
    entries: int = 0
    blobs: tuple[tuple[str, str, int, int], ...] = ()  # (role, coding, offset, length) in DATA

    @property
    def nbytes(self) -> int:
        """Bytes the encoded payloads take."""
        return sum(blob[3] for blob in self.blobs)


# What a buffer's dimension is at run time (`BufferRecord.dims`): fixed, a symbol bound from
# the inputs (ids 1.. name `BundleFile.symbols`; id 1 is the batch), or computed by the ops
# from the symbols (a strided conv's output width, the batch folded into time steps).
STATIC, BATCH, DERIVED = 0, 1, 255


@dataclasses.dataclass(frozen=True)
class BufferRecord:
    """An activation buffer (a UB or ACC address): dtype, its shape at the reference binding
    (batch 1, every other symbol at the value the compile chose), and per axis what the
    dimension is at run time: STATIC, a symbol id, or DERIVED."""

    dtype: str
    shape: tuple[int, ...]
    dims: tuple[int, ...]
    scale: float | None = None  # int8 buffers: real value = q * scale

    @property
    def batch_axis(self) -> int | None:
        """The axis holding the batch (samples stack along it), if one does."""
        return self.dims.index(BATCH) if self.dims.count(BATCH) == 1 else None

    def labels(self, symbols: list[str]) -> tuple[str, ...]:
        """Per axis: "" static, the symbol's name, or "?" derived (unknown ids too)."""
        names = {STATIC: "", **{i + 1: name for i, name in enumerate(symbols)}}
        return tuple(names.get(d, "?") for d in self.dims)


@dataclasses.dataclass
class BundleFile:
    """Everything a bundle holds."""

    meta: dict[str, Any]
    tensors: list[TensorRecord]
    data: bytes | memoryview  # DATA (read: a view of the file); codegen: chunks (`pieces`)
    buffers: list[BufferRecord]
    attrs: list[tuple[tuple[str, Attr], ...]]  # per record: (field name, value) pairs
    inputs: list[tuple[str, int]]  # (name, buffer)
    outputs: list[tuple[str, int]]
    program: list[isa.Instruction]
    symbols: list[str] = dataclasses.field(default_factory=lambda: ["N"])  # ids 1, 2, ...

    # -- writing ------------------------------------------------------------------------
    def sections(self) -> dict[str, bytes | list]:
        """Each section's bytes, by kind (DATA as `data` holds it: one buffer or chunks)."""
        return {
            "META": META.build(json.dumps(self.meta, sort_keys=True, separators=(",", ":"))),
            "TENSORS": TENSORS.build([_tensor_container(t) for t in self.tensors]),
            "DATA": self.data,
            "BUFFERS": BUFFERS.build([_buffer_container(b) for b in self.buffers]),
            "ATTRS": ATTRS.build(
                [[{"name": n, **_attr_container(v)} for n, v in rec] for rec in self.attrs]
            ),
            "PROGRAM": PROGRAM_SECTION.build(
                {
                    "inputs": [{"name": n, "buffer": b} for n, b in self.inputs],
                    "outputs": [{"name": n, "buffer": b} for n, b in self.outputs],
                    "symbols": list(self.symbols),
                    "program": {"instructions": [isa.to_container(i) for i in self.program]},
                }
            ),
        }

    def pieces(self) -> list:
        """The bundle file's bytes as consecutive buffers, DATA's chunks not copied."""
        return section_pieces(self.sections())

    def to_bytes(self) -> bytes:
        """The bundle file's bytes (deterministic)."""
        return b"".join(self.pieces())

    # -- reading ------------------------------------------------------------------------
    @classmethod
    def from_bytes(
        cls, blob: bytes | memoryview, source: str = "bundle", max_meta_bytes: int = MAX_META_BYTES
    ) -> BundleFile:
        """Parse and validate a bundle; a BundleFormatError names the section at fault.

        META may decompress to at most `max_meta_bytes`.
        """
        raw = unpack_sections(blob, source)
        meta = _read_meta(raw["META"], max_meta_bytes, f"{source}: section META")
        data = raw["DATA"]
        tensors = [_tensor_record(c) for c in _parse(source, "TENSORS", TENSORS, raw["TENSORS"])]
        for t in tensors:
            for _, _, offset, length in t.blobs:
                if offset + length > len(data):
                    raise BundleFormatError(
                        f"{source}: section TENSORS: tensor {t.name!r} payload "
                        f"[{offset}, {offset + length}) lies past the DATA section ({len(data)} B)"
                    )
        buffers = [_buffer_record(c) for c in _parse(source, "BUFFERS", BUFFERS, raw["BUFFERS"])]
        attrs = [
            tuple((f.name, _attr_value(f)) for f in rec)
            for rec in _parse(source, "ATTRS", ATTRS, raw["ATTRS"])
        ]
        prog = _parse(source, "PROGRAM", PROGRAM_SECTION, raw["PROGRAM"])
        try:
            program = [isa.from_container(c) for c in prog.program.instructions]
        except ValueError as e:
            raise BundleFormatError(f"{source}: section PROGRAM: {e}") from None
        return cls(
            meta=meta,
            tensors=tensors,
            data=data,
            buffers=buffers,
            attrs=attrs,
            inputs=[(b.name, b.buffer) for b in prog.inputs],
            outputs=[(b.name, b.buffer) for b in prog.outputs],
            symbols=list(prog.symbols),
            program=program,
        )


def _read_meta(payload: bytes, limit: int, where: str) -> dict[str, Any]:
    """META's JSON object, decompressed to at most `limit` bytes before anything else."""
    inflate = zlib.decompressobj()
    try:
        text = inflate.decompress(payload, limit + 1)
    except zlib.error as e:
        raise BundleFormatError(f"{where}: {_why(e)}") from None
    if len(text) > limit:
        raise BundleFormatError(f"{where}: decompresses to more than {limit:,} bytes")
    if not inflate.eof or inflate.unused_data:
        raise BundleFormatError(f"{where}: truncated zlib stream or trailing bytes")
    try:
        meta = json.loads(text.decode("utf8"))
    except (ValueError, RecursionError) as e:  # RecursionError: absurdly nested JSON
        raise BundleFormatError(f"{where}: not JSON ({_why(e)})") from None
    if not _conforms(meta, META_FIELDS):
        raise BundleFormatError(f"{where}: not a JSON object of the META schema (schema.py)")
    for entry in meta.get("log", []):
        columns = entry.get("layers", {})
        lengths = {len(v) for v in columns.values()}
        typed = all(_conforms(v, [LAYER_COLUMNS.get(k, object)]) for k, v in columns.items())
        if "pass" not in entry or len(lengths) > 1 or not typed:
            raise BundleFormatError(f"{where}: a pass-log entry is malformed")
    return meta


def _conforms(value: Any, spec: Any) -> bool:
    """Whether JSON `value` has the form `spec` (see schema.META_FIELDS)."""
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return False
        if str in spec:
            return all(_conforms(v, spec[str]) for v in value.values())
        required = all(k in value for k, s in spec.items() if isinstance(s, Required))
        return required and all(_conforms(value[k], s) for k, s in spec.items() if k in value)
    if isinstance(spec, Required):
        return _conforms(value, spec.spec)
    if isinstance(spec, list):
        return isinstance(value, list) and all(_conforms(v, spec[0]) for v in value)
    numeric = spec is int or spec == NUMBER  # JSON true is no number, though Python says so
    return isinstance(value, spec) and not (numeric and isinstance(value, bool))


def pack_sections(sections: dict[str, bytes | list]) -> bytes:
    """Header plus sections in SECTION_ORDER, each aligned to ALIGN with zero padding."""
    return b"".join(section_pieces(sections))


def section_pieces(sections: dict[str, bytes | list]) -> list:
    """`pack_sections` as consecutive buffers; a section given as a list of chunks (DATA from
    codegen) stays in its chunks, so a large model's weights are never joined into a copy."""
    kinds = [k for k in SECTION_ORDER if k in sections]
    offset = _align(header_bytes(len(kinds)))
    entries, body = [], []
    for kind in kinds:
        chunks = sections[kind] if isinstance(sections[kind], list) else [sections[kind]]
        length, crc = 0, 0
        for chunk in chunks:
            length, crc = length + len(chunk), zlib.crc32(chunk, crc)
        entries.append(
            {"kind": kind, "reserved": 0, "offset": offset, "length": length, "crc32": crc}
        )
        body += [*chunks, bytes(_align(length) - length)]
        offset += _align(length)
    value = {"version": VERSION, "count": len(kinds), "sections": entries}
    header = HEADER.build({"body": {"value": value}})
    return [header, bytes(_align(len(header)) - len(header)), *body]


def unpack_sections(blob: bytes | memoryview, source: str) -> dict[str, bytes | memoryview]:
    """Validate the header and return every section's bytes, by kind: DATA as a view of
    `blob` (a large model's weights are not copied), the others as bytes."""
    blob = memoryview(blob).cast("B")
    size = len(blob)
    if size < PREFIX_BYTES or blob[:4] != MAGIC:
        raise BundleFormatError(f"{source}: header: not a dlcc bundle (bad magic)")
    version = int.from_bytes(blob[4:6], "little")
    if version != VERSION:
        hint = "; compile the model again with this dlcc" if version < VERSION else ""
        raise BundleFormatError(
            f"{source}: header: version {version}, this dlcc reads {VERSION}{hint}"
        )
    count = int.from_bytes(blob[6:8], "little")
    if header_bytes(count) > size:
        raise BundleFormatError(f"{source}: header: {count} sections do not fit in {size} bytes")
    try:
        header = HEADER.parse(bytes(blob[: header_bytes(count)]))
    except ConstructError as e:
        raise BundleFormatError(f"{source}: header: {_why(e)}") from None
    sections: dict[str, bytes | memoryview] = {}
    covered = [(0, header_bytes(count))]
    for entry in header.body.value.sections:
        kind, offset, length = str(entry.kind), entry.offset, entry.length
        where = f"{source}: section {kind}"
        if kind in sections:
            raise BundleFormatError(f"{where}: appears twice")
        if offset % ALIGN or offset < covered[0][1] or offset + length > size:
            raise BundleFormatError(
                f"{where}: [{offset}, {offset + length}) is misaligned or outside the file "
                f"({size} bytes)"
            )
        payload = blob[offset : offset + length]
        if zlib.crc32(payload) != entry.crc32:
            raise BundleFormatError(f"{where}: CRC-32 mismatch (the file is corrupted)")
        sections[kind] = payload if kind == "DATA" else bytes(payload)
        covered.append((offset, offset + length))
    missing = [k for k in SECTION_ORDER if k not in sections]
    if missing:
        raise BundleFormatError(f"{source}: header: missing sections {', '.join(missing)}")
    _check_gaps(blob, sorted(covered), source)
    return sections


def _check_gaps(blob: memoryview, spans: list[tuple[int, int]], source: str) -> None:
    """Every byte outside the header and the sections is zero padding shorter than ALIGN."""
    end = 0
    for start, stop in spans + [(len(blob), len(blob))]:
        if start < end:
            raise BundleFormatError(f"{source}: sections overlap at byte {start}")
        gap = blob[end:start]
        if len(gap) >= ALIGN or any(gap):
            raise BundleFormatError(f"{source}: unexpected bytes at offset {end} (corrupted?)")
        end = stop


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _parse(source: str, kind: str, schema, payload: bytes):
    try:
        return schema.parse(payload)
    except (ConstructError, UnicodeDecodeError) as e:
        raise BundleFormatError(f"{source}: section {kind}: {_why(e)}") from None


def _why(e: Exception) -> str:
    return str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__


def _tensor_container(t: TensorRecord) -> dict:
    fields = dataclasses.asdict(t)
    fields["shape"] = list(t.shape)
    fields["blobs"] = [dict(zip(("role", "coding", "offset", "length"), b)) for b in t.blobs]
    return fields


def _tensor_record(c) -> TensorRecord:
    blobs = tuple((str(b.role), str(b.coding), b.offset, b.length) for b in c.blobs)
    scalars = {f.name: c[f.name] for f in dataclasses.fields(TensorRecord)}
    for key in ("dtype", "values", "positions"):
        scalars[key] = str(scalars[key])
    return TensorRecord(**{**scalars, "shape": tuple(c.shape), "blobs": blobs})


def _buffer_container(b: BufferRecord) -> dict:
    return {"dtype": b.dtype, "shape": list(b.shape), "dims": list(b.dims), "scale": b.scale}


def _buffer_record(c) -> BufferRecord:
    return BufferRecord(str(c.dtype), tuple(c.shape), tuple(c.dims), c.scale)


def _attr_container(v: Attr) -> dict:
    if isinstance(v, bool | int):
        return {"kind": "INT", "value": int(v)}
    if isinstance(v, float):
        return {"kind": "FLOAT", "value": v}
    if isinstance(v, str):
        return {"kind": "STRING", "value": v}
    if all(isinstance(x, bool | int) for x in v):
        return {"kind": "INTS", "value": [int(x) for x in v]}
    return {"kind": "FLOATS", "value": [float(x) for x in v]}


def _attr_value(c) -> Attr:
    kind = str(c.kind)
    return tuple(c.value) if kind in ("INTS", "FLOATS") else c.value
