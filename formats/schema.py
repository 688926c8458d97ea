"""The bundle file format, top-down: leaf structs first, the root (`HEADER`) last. This is the spec.

A bundle is a header (magic, version, section table, CRC-32 of the header) followed by
sections, each at a 16-byte aligned offset, with zero padding between them:

    META     zlib-compressed JSON: producer, model name, resolved pipeline, pass log
    TENSORS  table of weight tensors: name, dtype, shape, encoding, byte ranges in DATA
    DATA     the tensors' payloads, 16-byte aligned
    BUFFERS  the activation buffers of the program (UB/ACC addresses): dtype, shape, dims
    ATTRS    attribute records referenced by instructions: named, typed fields (strides, ...)
    PROGRAM  host input/output bindings, symbol names and the instruction stream (see isa.py)

Every section carries a CRC-32 in the table; every variable-length field is length-prefixed.
Counts, dimensions, offsets and integer attributes are LEB128 varints (signed: zigzag).
"""

from __future__ import annotations

import dataclasses
import zlib

from construct import (
    Array,
    Checksum,
    Compressed,
    Const,
    Enum,
    Float32l,
    Float64l,
    GreedyString,
    If,
    Int8sl,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    PascalString,
    PrefixedArray,
    RawCopy,
    Struct,
    Switch,
    VarInt,
    ZigZag,
    len_,
    this,
)

from dlcc.formats.isa import PROGRAM

MAGIC = b"DLCC"
VERSION = 4  # 4: Huffman streams in DEFLATE framing; 3: buffers carry symbolic dims;
# 2: attribute fields named (1: in field order)
ALIGN = 16

# -- leaves -------------------------------------------------------------------------------
Dtype = Enum(Int8ul, float32=0, int8=1, int32=2, uint8=3, int64=4, bool=5)
ValueCoding = Enum(Int8ul, raw=0, int8=1, codebook=2, zigzag=3)
PositionCoding = Enum(Int8ul, dense=0, csr=1, bitmask=2)
BlobRole = Enum(Int8ul, VALUES=0, POSITIONS=1, CODEBOOK=2, SCALES=3)
StreamCoding = Enum(Int8ul, raw=0, huffman=1)
Name = PascalString(Int16ul, "utf8")

Blob = Struct(
    "role" / BlobRole,  # what the bytes hold (see formats/encodings.py)
    "coding" / StreamCoding,  # raw (bit-packed / plain) or a Huffman stream (formats/huffman.py)
    "offset" / VarInt,  # byte offset inside the DATA section
    "length" / VarInt,  # byte length
)
Dims = PrefixedArray(Int8ul, VarInt)

TensorEntry = Struct(
    "name" / Name,  # the ONNX initializer name (or the pass that made the tensor)
    "dtype" / Dtype,  # element type after decoding
    "shape" / Dims,  # shape after decoding
    "values" / ValueCoding,  # stored values: raw bits, int8 (+128), codebook index, zigzag int
    "positions" / PositionCoding,  # which positions are stored: all, a bitmask, CSR
    "value_bits" / Int8ul,  # bits per value symbol
    "index_bits" / Int8ul,  # CSR: bits per relative index (0 otherwise)
    "channel_axis" / Int8sl,  # int8: the axis the per-channel scales run along
    "entries" / VarInt,  # stored entries (CSR: nonzeros plus filler zeros)
    "blobs" / PrefixedArray(Int8ul, Blob),  # the payloads
)

BufferEntry = Struct(
    "dtype" / Dtype,
    "shape" / Dims,  # shape at the reference binding (batch 1)
    "dims" / Array(len_(this.shape), Int8ul),  # per axis: 0 static, a symbol id, 255 derived
    "scale" / If(this.dtype == "int8", Float32l),  # int8: real value = q * scale
)

AttrKind = Enum(Int8ul, INT=0, INTS=1, FLOAT=2, FLOATS=3, STRING=4)
AttrField = Struct(
    "name" / PascalString(Int8ul, "utf8"),  # the op's attribute field it sets
    "kind" / AttrKind,
    "value"
    / Switch(
        this.kind,
        {
            "INT": ZigZag,
            "INTS": PrefixedArray(Int8ul, ZigZag),
            "FLOAT": Float64l,
            "FLOATS": PrefixedArray(Int8ul, Float64l),
            "STRING": PascalString(Int8ul, "utf8"),
        },
    ),
)

IoBinding = Struct(
    "name" / Name,  # the ONNX graph input/output name
    "buffer" / Int16ul,  # the UB buffer it is read into / written from
)

# -- sections -----------------------------------------------------------------------------
META = Compressed(GreedyString("utf8"), "zlib", level=9)  # JSON, of the form META_FIELDS

# META's JSON: the keys readers use and their types (others are kept as they are). A dict
# keyed by `str` maps any key; a one-element list is a list of that; `NUMBER` is int | float;
# `Required(spec)` marks a key that must be present.
NUMBER = (int, float)


@dataclasses.dataclass(frozen=True)
class Required:
    """A META key that must be present, of the form `spec`."""

    spec: object


REPORT = {  # the compile's before/after report (dlcc/report.py)
    "fp32_weight_bytes": Required(int),
    "onnx_bytes": Required(int),
    "fidelity": {
        "data": Required(str),
        "samples": Required(int),
        "outputs": Required(
            {str: {"agreement": NUMBER, "sqnr_db": Required(NUMBER), "cosine": Required(NUMBER)}}
        ),
        "accuracy": {"original": Required(NUMBER), "bundle": Required(NUMBER)},
    },
}
PASS_LOG_ENTRY = {
    "pass": str,  # required: the pass and its options as text
    "layers": {str: list},  # per-layer columns, each one value per layer
    "metric": str,
    "baseline": NUMBER,
    "noise_band": NUMBER,
    "samples": int,
}
META_FIELDS = {
    "producer": str,
    "model": str,
    "source": str,
    "pipeline": str,
    "array": [int],
    "notes": [str],
    "log": [PASS_LOG_ENTRY],
    "report": REPORT,
}
# Columns of "layers" that are computed with, not only shown: their element types.
LAYER_COLUMNS = {"layer": str, "pass": str, "setting": NUMBER, "delta": NUMBER, "safe": bool}
TENSORS = PrefixedArray(VarInt, TensorEntry)
BUFFERS = PrefixedArray(Int16ul, BufferEntry)
ATTRS = PrefixedArray(Int16ul, PrefixedArray(Int8ul, AttrField))
PROGRAM_SECTION = Struct(
    "inputs" / PrefixedArray(Int8ul, IoBinding),
    "outputs" / PrefixedArray(Int8ul, IoBinding),
    "symbols" / PrefixedArray(Int8ul, Name),  # names of symbol ids 1, 2, ...: 1 is the batch
    "program" / PROGRAM,
)

SectionKind = Enum(Int16ul, META=1, TENSORS=2, DATA=3, BUFFERS=4, ATTRS=5, PROGRAM=6)
SECTION_ORDER = ("META", "TENSORS", "BUFFERS", "ATTRS", "PROGRAM", "DATA")

SectionEntry = Struct(
    "kind" / SectionKind,
    "reserved" / Const(0, Int16ul),
    "offset" / Int64ul,  # from the start of the file, a multiple of ALIGN
    "length" / Int64ul,
    "crc32" / Int32ul,  # zlib.crc32 of the section's bytes
)
SECTION_ENTRY_BYTES = SectionEntry.sizeof()

# -- root ---------------------------------------------------------------------------------
HeaderBody = Struct(
    "magic" / Const(MAGIC),
    "version" / Int16ul,
    "count" / Int16ul,  # number of sections
    "sections" / Array(this.count, SectionEntry),
)
HEADER = Struct(
    "body" / RawCopy(HeaderBody),
    "crc32" / Checksum(Int32ul, lambda data: zlib.crc32(data), this.body.data),
)
PREFIX_BYTES = 8  # magic, version, count: read first to bound the rest


def header_bytes(count: int) -> int:
    """Size of a header with `count` sections."""
    return PREFIX_BYTES + count * SECTION_ENTRY_BYTES + 4
