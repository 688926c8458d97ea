"""Structure-aware fuzzing of bundles: a developer tool (no dependency beyond the runtime's).

A case is named `KIND:SEED:INDEX` and is fully determined by that name: the mutation KIND is
applied, with the random generator of (SEED, INDEX, KIND), to one of the seed bundles (the
shipped samples and test models compiled at -O0 to -O3, see `compile_seeds`).

- STRUCTURED kinds edit the parsed BundleFile (tensor, buffer and attribute records,
  instructions, the program, the IO bindings, META, the Huffman streams in DATA) and
  re-serialize it, so every CRC is right and the mutation reaches the parsers, the verifier
  and the kernels. Out-of-enum values are stored as raw ints in the dataclass fields, which
  Construct writes as they are.
- BYTES kinds flip, set, insert or delete bytes inside one section and recompute the CRCs,
  rewrite the section table (with a valid header CRC), or truncate the file.

`execute` loads a blob, renders `dlcc explain --asm` of it and runs it on every target at
batch 1 and 2 with zero and random inputs, and classifies the outcome: ok, rejected (a
DlccError), traceback (any other exception: a bug), memory (MemoryError, or the loader
accepted an input too large to build). `run_cases` executes cases in spawned worker processes
(address space limited to 4 GB); a worker that dies is a "crash", one that exceeds the timeout
is killed and is a "hang". With `trace_memory`, each case also records its tracemalloc peak
against its declared need (file + decoded weights + every buffer at batch 2), see
`Result.overallocated`. `benchmarks/fuzz_bundles.py` runs long campaigns and replays cases.
"""

from __future__ import annotations

import copy
import dataclasses
import faulthandler
import math
import multiprocessing
import os
import re
import resource
import signal
import tempfile
import time
import traceback
import tracemalloc
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait

import construct as cs
import numpy as np

from dlcc.formats import isa
from dlcc.formats.bundle import BundleFile, pack_sections, unpack_sections
from dlcc.formats.huffman import HUFFMAN_STREAM
from dlcc.formats.schema import (
    HEADER,
    PROGRAM_SECTION,
    SECTION_ORDER,
    BlobRole,
    Dtype,
    PositionCoding,
    SectionKind,
    StreamCoding,
    ValueCoding,
)

FAILURES = ("traceback", "crash", "hang", "memory")
OUTCOMES = ("ok", "rejected", *FAILURES, "invalid")  # invalid: the mutant could not be written
TARGETS = ("interp", "systolic")
SEED_MODELS = (  # (name, path from the repository root)
    ("lenet_300_100", "samples/lenet_300_100.onnx"),
    ("lenet5", "samples/lenet5.onnx"),
    ("mlp", "tests/data/torch/mlp_legacy.onnx"),
    ("cnn", "tests/data/torch/cnn_legacy.onnx"),
    ("lstm_bi", "tests/data/torch/lstm_bi_legacy.onnx"),
)
MAX_INPUT = 1 << 26  # elements: a loaded bundle declaring a larger input is a "memory" outcome
SLACK = 16 << 20  # bytes of interpreter overhead allowed beyond 2 x the declared need
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_VARINTS = (0, 1, 2, 3, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**40, 2**63, 2**64 - 1)


@dataclasses.dataclass(frozen=True)
class Seed:
    """A valid bundle to mutate: its bytes, its parsed contents and its sections."""

    name: str
    blob: bytes
    file: BundleFile
    sections: dict[str, bytes]

    @classmethod
    def of(cls, name: str, blob: bytes) -> Seed:
        return cls(name, blob, BundleFile.from_bytes(blob), unpack_sections(blob, name))


def compile_seeds(root: str, levels=("-O0", "-O1", "-O2", "-O3")) -> list[Seed]:
    """SEED_MODELS compiled at each level; above -O0 with 32 uniform random calibration inputs."""
    from dlcc.api import compile as compile_model

    seeds = []
    for name, path in SEED_MODELS:
        model = os.path.join(root, path)
        base = compile_model(model)
        (_, buf), rng = base.inputs[0], np.random.default_rng(0)
        record = base.buffers[buf]
        shape = [32 if i == record.batch_axis else d for i, d in enumerate(record.shape)]
        calibration = {"": rng.random(shape, dtype=np.float32)}
        for level in levels:
            bundle = base if level == "-O0" else compile_model(model, None, level, calibration)
            seeds.append(Seed.of(f"{name}{level}", bundle.to_bytes()))
    return seeds


# -- mutations ----------------------------------------------------------------------------
@dataclasses.dataclass
class Mutant:
    """A working copy of a seed's contents; `blob`, once set by a BYTES kind, is final."""

    seed: Seed
    file: BundleFile
    overrides: dict[str, bytes] = dataclasses.field(default_factory=dict)  # raw sections
    notes: list[str] = dataclasses.field(default_factory=list)
    blob: bytes | None = None

    def note(self, text: str) -> None:
        self.notes.append(text)

    def to_bytes(self) -> bytes:
        if self.blob is None:
            self.blob = pack_sections({**self.file.sections(), **self.overrides})
        return self.blob


Mutation = Callable[[np.random.Generator, Mutant], None]
STRUCTURED: dict[str, Mutation] = {}
BYTES: dict[str, Mutation] = {}


def _kind(registry: dict[str, Mutation]):
    def register(fn: Mutation) -> Mutation:
        registry[fn.__name__] = fn
        return fn

    return register


def _choice(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _index(rng: np.random.Generator, seq) -> int | None:
    """A random index into `seq`, None when it is empty."""
    return int(rng.integers(len(seq))) if len(seq) else None


def _uint(rng: np.random.Generator, bits: int | None = None, near=()) -> int:
    """A boundary value (or a random one) of a `bits`-bit field; bits None: a VarInt."""
    top = 1 << (bits or 64)
    values = [*_VARINTS, *(n + d for n in near for d in (-1, 0, 1)), top - 1, top - 2]
    values = [v for v in values if 0 <= v < top]
    return int(rng.integers(top >> 1)) if rng.random() < 0.15 else _choice(rng, values)


def _int8(rng: np.random.Generator, near=()) -> int:
    values = [-128, -2, -1, 0, 1, 2, 3, 4, 127, *(n + d for n in near for d in (-1, 1))]
    return _choice(rng, [v for v in values if -128 <= v <= 127])


def _enum(rng: np.random.Generator, enum) -> str | int:
    """A valid name of the Construct Enum `enum` (Int8ul) half the time, else any raw byte."""
    return (
        _choice(rng, [str(k) for k in enum.encmapping])
        if rng.random() < 0.5
        else int(rng.integers(256))
    )


def _float(rng: np.random.Generator) -> float:
    values = (math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-45, 3e38, float(rng.normal()))
    return _choice(rng, values)


def _edit_list(rng: np.random.Generator, items: list, fresh: Callable[[], object]) -> str:
    """Drop, duplicate, swap or add an element of `items` in place; describe what was done."""
    k, op = _index(rng, items), int(rng.integers(4))
    if k is None or op == 3:
        items.insert(int(rng.integers(len(items) + 1)), fresh())
        return "added one"
    j = int(rng.integers(len(items)))
    if op == 0:
        del items[k]
        return f"dropped #{k}"
    if op == 1:
        items.insert(j, items[k])
        return f"copied #{k} to #{j}"
    items[k], items[j] = items[j], items[k]
    return f"swapped #{k} and #{j}"


def _shape(rng: np.random.Generator, shape: tuple) -> tuple:
    dims, op, k = list(shape), int(rng.integers(4)), _index(rng, shape)
    if k is not None and op == 0:
        dims[k] = _uint(rng, near=(dims[k],))
    elif k is not None and op == 1:
        del dims[k]
    elif op == 2:
        dims = [int(d) for d in rng.permutation(dims)] if rng.random() < 0.8 else [1] * 255
    else:
        dims.insert(int(rng.integers(len(dims) + 1)), _uint(rng))
    return tuple(dims)


@_kind(STRUCTURED)
def tensor_shape(rng, m: Mutant) -> None:
    """A weight's declared shape: a dim at a boundary value, dropped, added, or permuted."""
    if (k := _index(rng, m.file.tensors)) is not None:
        t = m.file.tensors[k]
        m.file.tensors[k] = t = dataclasses.replace(t, shape=_shape(rng, t.shape))
        m.note(f"tensor {k} shape -> {t.shape}")


@_kind(STRUCTURED)
def tensor_fields(rng, m: Mutant) -> None:
    """A weight's dtype / value / position coding (raw ints too), bit widths, axis, entries."""
    if (k := _index(rng, m.file.tensors)) is None:
        return
    t = m.file.tensors[k]
    fields = ("dtype", "values", "positions", "value_bits", "index_bits", "channel_axis")
    field = _choice(rng, (*fields, "entries"))
    enums = {"dtype": Dtype, "values": ValueCoding, "positions": PositionCoding}
    if field in enums:
        value = _enum(rng, enums[field])
    elif field == "channel_axis":
        value = _int8(rng, near=(len(t.shape),))
    elif field == "entries":
        value = _uint(rng, near=(t.entries, math.prod(t.shape)))
    else:
        value = _choice(rng, (0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 255))
    m.file.tensors[k] = dataclasses.replace(t, **{field: value})
    m.note(f"tensor {k} {field} {getattr(t, field)!r} -> {value!r}")


@_kind(STRUCTURED)
def tensor_blobs(rng, m: Mutant) -> None:
    """A payload range: offset, length, role or coding changed, or a blob dropped/copied/added."""
    if (k := _index(rng, m.file.tensors)) is None:
        return
    t, data = m.file.tensors[k], len(m.file.data)
    blobs = list(t.blobs)
    if (b := _index(rng, blobs)) is None or rng.random() < 0.3:
        other = _choice(rng, [x for u in m.file.tensors for x in u.blobs] or [("VALUES",) * 4])
        m.note(f"tensor {k} blobs: " + _edit_list(rng, blobs, lambda: other))
    else:
        blob, field = list(blobs[b]), int(rng.integers(4))
        blob[field] = (
            (_enum(rng, BlobRole), _enum(rng, StreamCoding))[field]
            if field < 2
            else (_uint(rng, near=(data, blob[2], blob[3], data - blob[2])))
        )
        blobs[b] = tuple(blob)
        m.note(f"tensor {k} blob {b} -> {blobs[b]}")
    m.file.tensors[k] = dataclasses.replace(t, blobs=tuple(blobs))


@_kind(STRUCTURED)
def tensor_table(rng, m: Mutant) -> None:
    """The tensor table: a record dropped, copied, swapped or renamed (ids shift)."""
    tensors = m.file.tensors
    if (k := _index(rng, tensors)) is not None and rng.random() < 0.3:
        name = _choice(rng, ("", "x" * 65535, "\u00e9\u6f22", tensors[0].name))
        tensors[k] = dataclasses.replace(tensors[k], name=name)
        m.note(f"tensor {k} renamed to {name[:20]!r}")
    elif tensors:
        m.note("tensors: " + _edit_list(rng, tensors, lambda: _choice(rng, tensors)))


@_kind(STRUCTURED)
def buffer_record(rng, m: Mutant) -> None:
    """An activation buffer: shape, dtype (raw ints too), batch axis, scale; or the table."""
    buffers = m.file.buffers
    if (k := _index(rng, buffers)) is None or rng.random() < 0.15:
        m.note("buffers: " + _edit_list(rng, buffers, lambda: _choice(rng, m.seed.file.buffers)))
        return
    b, field = buffers[k], _choice(rng, ("shape", "dtype", "batch_axis", "scale"))
    value = {
        "shape": lambda: _shape(rng, b.shape),
        "dtype": lambda: _enum(rng, Dtype),
        "batch_axis": lambda: _choice(rng, (None, _int8(rng, near=(len(b.shape),)))),
        "scale": lambda: _float(rng),
    }[field]()
    b = dataclasses.replace(b, **{field: value})
    if b.dtype == "int8" and not isinstance(b.scale, float):
        b = dataclasses.replace(b, scale=_float(rng))
    buffers[k] = b
    m.note(f"buffer {k} {field} -> {value!r}")


def _attr_value(rng: np.random.Generator):
    ints = (0, -1, 1, 2, -(2**31), 2**31, 2**63, -(2**63), 2**100, int(rng.integers(-9, 9)))
    return _choice(
        rng,
        (
            _choice(rng, ints),
            _float(rng),
            tuple(_choice(rng, ints) for _ in range(_choice(rng, (0, 1, 2, 4, 255)))),
            tuple(_float(rng) for _ in range(_choice(rng, (0, 1, 3)))),
            _choice(rng, ("", "x" * 255, "NOTSET", "SAME_UPPER", "\u00e9")),
        ),
    )


@_kind(STRUCTURED)
def attr_record(rng, m: Mutant) -> None:
    """An attribute record: a field (or one element) replaced by another kind or a boundary
    value, a field dropped or added, or the table edited (indices shift)."""
    attrs = m.file.attrs
    if (k := _index(rng, attrs)) is None or rng.random() < 0.15:
        m.note("attrs: " + _edit_list(rng, attrs, lambda: (_attr_value(rng),)))
        return
    fields = list(attrs[k])
    j = _index(rng, fields)
    if j is not None and isinstance(fields[j], tuple) and fields[j] and rng.random() < 0.5:
        items = list(fields[j])
        items[int(rng.integers(len(items)))] = _choice(rng, (0, -1, 2**31, 2**63, -(2**63)))
        fields[j] = tuple(items)
        what = f"field {j} element -> {fields[j]!r}"
    elif j is not None and rng.random() < 0.6:
        fields[j] = _attr_value(rng)
        what = f"field {j} -> {fields[j]!r}"
    else:
        what = "fields: " + _edit_list(rng, fields, lambda: _attr_value(rng))
    attrs[k] = tuple(fields)
    m.note(f"attrs {k} {what}"[:200])


_WIDE = {"input": 8, "output": 8}  # the other integer operand fields are 16 bits


@_kind(STRUCTURED)
def instruction_operand(rng, m: Mutant) -> None:
    """An instruction field: a buffer, tensor, attrs or IO index at a boundary value, a
    function (raw ints too), the accumulate flag, folds, or a VECTOR's operand lists."""
    f = m.file
    if (k := _index(rng, f.program)) is None or isinstance(f.program[k], isa.Halt):
        return
    instr = f.program[k]
    field = _choice(rng, [x.name for x in dataclasses.fields(instr)])
    old, near = getattr(instr, field), (len(f.buffers), len(f.tensors), len(f.attrs), 0xFFFF)
    if field == "function":
        new = _enum(rng, isa.Function)
    elif field == "accumulate":
        new = not old
    elif field == "inputs":
        operand = isa.Operand(_enum(rng, isa.Memory), _uint(rng, 16, near))
        new = list(old)
        if (j := _index(rng, new)) is not None and rng.random() < 0.6:
            new[j] = operand
        else:
            _edit_list(rng, new, lambda: operand)
        new = tuple(new)
    elif field == "outputs":
        new = list(old)
        _edit_list(rng, new, lambda: _uint(rng, 16, near))
        new = tuple(new) if rng.random() < 0.9 else tuple(range(255))
    else:
        new = _uint(rng, _WIDE.get(field, 16), (*near, len(f.inputs), len(f.outputs), old))
    f.program[k] = dataclasses.replace(instr, **{field: new})
    m.note(f"instruction {k} {instr.opcode} {field} {old!r} -> {new!r}"[:200])


def _recast(rng: np.random.Generator, instr, cls):
    """`instr` as an instruction of class `cls`, keeping the fields they share."""
    fields = {x.name: getattr(instr, x.name) for x in dataclasses.fields(instr)}
    if isinstance(instr, isa.Vector):
        fields["src"] = next((o.index for o in instr.inputs if o.memory == "UB"), 0)
        fields["dst"] = instr.outputs[0] if instr.outputs else 0
    if cls is isa.Vector:
        fields["inputs"] = (isa.Operand("UB", fields.get("src", 0)),)
        fields["outputs"] = (fields.get("dst", 0),)
    fields.setdefault("function", _choice(rng, isa.FUNCTIONS))
    kept = {}
    for x in dataclasses.fields(cls):
        value = fields.get(x.name, 0 if x.default is dataclasses.MISSING else x.default)
        kept[x.name] = value & 0xFF if x.name in _WIDE else value
    return cls(**kept)


@_kind(STRUCTURED)
def opcode_swap(rng, m: Mutant) -> None:
    """An instruction recast as another opcode (shared fields kept), or given a raw opcode."""
    program = m.file.program
    if (k := _index(rng, program)) is None:
        return
    if rng.random() < 0.25:
        opcode = _choice(rng, (0, 9, 10, 127, 255))
        body = [isa.to_container(i) for i in program]
        body[k] = {"opcode": opcode, "body": None}
        m.overrides["PROGRAM"] = _program_section(m.file, body)
        m.note(f"instruction {k} opcode -> raw {opcode}")
        return
    cls = _choice(rng, [c for c in isa.Instruction.__args__ if not isinstance(program[k], c)])
    program[k] = _recast(rng, program[k], cls)
    m.note(f"instruction {k} recast to {program[k]}")


def _program_section(f: BundleFile, instructions: list) -> bytes:
    return PROGRAM_SECTION.build(
        {
            "inputs": [{"name": n, "buffer": b} for n, b in f.inputs],
            "outputs": [{"name": n, "buffer": b} for n, b in f.outputs],
            "program": {"instructions": instructions},
        }
    )


@_kind(STRUCTURED)
def program_edit(rng, m: Mutant) -> None:
    """The instruction stream: an instruction dropped, copied, swapped or moved; HALT removed
    or inserted early; the stream truncated, reversed, emptied or repeated."""
    p, op = m.file.program, int(rng.integers(8))
    if op < 4 and p:
        m.note("program: " + _edit_list(rng, p, lambda: _choice(rng, p)))
    elif op == 4:
        p[:] = [i for i in p if not isinstance(i, isa.Halt)]
        m.note("program: HALT removed")
    elif op == 5:
        p.insert(int(rng.integers(len(p) + 1)), isa.Halt())
        m.note("program: HALT inserted")
    else:
        cut = int(rng.integers(len(p) + 1))
        p[:] = (p[:cut], p[::-1], (p[:-1] * 999)[:4000] + p[-1:])[op - 5]
        m.note(f"program: {('truncated', 'reversed', 'repeated')[op - 5]} to {len(p)}")


@_kind(STRUCTURED)
def io_binding(rng, m: Mutant) -> None:
    """A host input or output binding: its buffer, its name, or the binding list."""
    side = _choice(rng, ("inputs", "outputs"))
    binds = getattr(m.file, side)
    if (k := _index(rng, binds)) is None or rng.random() < 0.4:
        many = rng.random() < 0.1
        binds[:] = (binds * 255)[:255] if many else binds
        what = "x255" if many else _edit_list(rng, binds, lambda: ("extra", 0))
        m.note(f"{side}: {what}")
        return
    name, buf = binds[k]
    if rng.random() < 0.5:
        buf = _uint(rng, 16, near=(len(m.file.buffers), buf))
    else:
        name = _choice(rng, ("", binds[0][0], "\u00e9" * 999))
    binds[k] = (name, buf)
    m.note(f"{side} {k} -> ({name[:20]!r}, {buf})")


def _json_leaves(value, out: list) -> list:
    """Every (container, key) pair of a JSON value."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, v in items:
        out.append((value, key))
        if isinstance(v, dict | list):
            _json_leaves(v, out)
    return out


@_kind(STRUCTURED)
def meta_edit(rng, m: Mutant) -> None:
    """META: a value replaced by another JSON type, non-object JSON, deep nesting, a 64 MB zlib
    bomb, not JSON, not UTF-8, or not zlib."""
    op = int(rng.integers(8))
    if op < 3:
        container, key = _choice(rng, _json_leaves(m.file.meta, []) or [(m.file.meta, "log")])
        container[key] = _choice(rng, (None, 0, -1, 1e308, "x", [], {}, [[1, "a"]], {"a": {}}))
        m.note(f"meta {key!r} -> {container[key]!r}")
    elif op == 3:
        bomb = zlib.compressobj(9)
        spaces = [bomb.compress(b" " * (1 << 20)) for _ in range(64)]
        m.overrides["META"] = bomb.compress(b"{") + b"".join(spaces) + bomb.compress(b"}")
        m.overrides["META"] += bomb.flush()
        m.note("meta: zlib bomb of 64 MB")
    else:
        text = (b"[]", b"5", b"null", b"NaN", b"[" * 100_000 + b"]" * 100_000, b"{,", b"\xff")
        raw = _choice(rng, text)
        m.overrides["META"] = zlib.compress(raw) if rng.random() < 0.9 else raw
        m.note(f"meta: {raw[:20]!r}")


def _huffman_blobs(f: BundleFile) -> list[tuple[int, int]]:
    return [
        (k, b) for k, t in enumerate(f.tensors) for b, blob in enumerate(t.blobs)
        if blob[1] == "huffman"
    ]  # fmt: skip


@_kind(STRUCTURED)
def huffman_stream(rng, m: Mutant) -> None:
    """A Huffman stream's header field, table or payload; the stream is rewritten at the end
    of DATA (layout of formats/huffman.py, without its checks) and the blob pointed at it."""
    if not (found := _huffman_blobs(m.file)):
        return
    k, b = _choice(rng, found)
    t = m.file.tensors[k]
    role, coding, offset, length = t.blobs[b]
    try:
        s = dict(HUFFMAN_STREAM.parse(m.file.data[offset : offset + length]))
    except cs.ConstructError:  # an earlier mutation of a combo broke it already
        return
    field = _choice(rng, [name for name in s if not name.startswith("_")])
    if isinstance(s[field], bytes):
        size = len(s[field]) + _choice(rng, (0, 0, 1, -1, 64))
        s[field] = bytes(rng.integers(0, 256, max(size, 0), dtype=np.uint8))
    else:
        bits = {"count": 64, "alphabet_size": 32, "len_bits": 8, "gap_bits": 8, "offset_bits": 8}
        s[field] = _uint(rng, bits.get(field), (s[field],))  # the others are VarInts
    v, u = cs.VarInt.build, cs.Int8ul.build
    stream = b"".join(
        (
            cs.Int64ul.build(s["count"]), cs.Int32ul.build(s["alphabet_size"]),
            v(s["block"]), v(s["n_entries"]), u(s["len_bits"]), u(s["gap_bits"]),
            s["gaps"], s["lengths"], v(s["offset_base"]), u(s["offset_bits"]), s["offsets"],
            v(len(s["payload"])), s["payload"],
        )
    )  # fmt: skip
    start = -(-len(m.file.data) // 16) * 16
    m.file.data = m.file.data.ljust(start, b"\0") + stream
    blobs = list(t.blobs)
    blobs[b] = (role, coding, start, len(stream))
    m.file.tensors[k] = dataclasses.replace(t, blobs=tuple(blobs))
    m.note(f"tensor {k} Huffman stream {role} {field} -> {_short(s[field])}")


def _short(value) -> str:
    return f"{len(value)} bytes" if isinstance(value, bytes) else repr(value)


@_kind(STRUCTURED)
def combo(rng, m: Mutant) -> None:
    """Two to four of the other structured mutations in a row."""
    for _ in range(int(rng.integers(2, 5))):
        STRUCTURED[_choice(rng, sorted(set(STRUCTURED) - {"combo"}))](rng, m)


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


def campaign(family: str, count: int, seed: int = 0) -> Iterator[str]:
    """`count` case ids of the STRUCTURED ("structured") or BYTES ("bytes") kinds, in turn."""
    kinds = sorted({"structured": STRUCTURED, "bytes": BYTES}[family])
    return (f"{kinds[i % len(kinds)]}:{seed}:{i}" for i in range(count))


def mutant(case: str, seeds: list[Seed]) -> tuple[bytes, str]:
    """The bytes of case `KIND:SEED:INDEX` and a description of its mutation."""
    kind, seed, index = case.split(":")
    registry = STRUCTURED if kind in STRUCTURED else BYTES
    if kind not in registry:
        raise ValueError(f"unknown mutation kind {kind!r} in case {case!r}")
    rng = np.random.default_rng([int(seed), int(index), zlib.crc32(kind.encode())])
    usable = [s for s in seeds if kind != "huffman_stream" or _huffman_blobs(s.file)]
    base = _choice(rng, usable or seeds)
    f = base.file
    copies = {k: list(getattr(f, k)) for k in ("tensors", "buffers", "attrs", "program")}
    copies |= {"inputs": list(f.inputs), "outputs": list(f.outputs)}
    m = Mutant(base, dataclasses.replace(f, meta=copy.deepcopy(f.meta), **copies))
    registry[kind](rng, m)
    return m.to_bytes(), f"{base.name}: " + "; ".join(m.notes or ["no change"])


# -- execution ----------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """How one case went; `frame` is the innermost dlcc frame (file:line function)."""

    case: str
    outcome: str  # one of OUTCOMES
    note: str = ""  # the mutation
    stage: str = ""  # load, explain, run TARGET batch B FILL, ...
    error: str = ""  # exception type, signal or "Timeout"
    message: str = ""
    frame: str = ""
    trace: str = ""  # the traceback, or the stack faulthandler dumped (crash, hang)
    peak: int = 0  # tracemalloc peak of the case, bytes
    need: int = 0  # declared need: file + decoded weights + every buffer at batch 2, bytes

    @property
    def overallocated(self) -> bool:
        """Traced memory above twice the declared need (plus SLACK)."""
        return self.peak > 2 * self.need + SLACK

    @property
    def kind(self) -> str:
        return self.case.split(":")[0]


class _Oversize(Exception):
    """The loader accepted a bundle whose inputs are too large to build."""


def _inputs(loaded, batch: int, random: bool) -> dict[str, np.ndarray]:
    """float32 inputs by name, shaped by their buffer records at `batch` (dlcc casts them)."""
    arrays, rng = {}, np.random.default_rng(batch)
    for name, buf in loaded.file.inputs:
        record = loaded.file.buffers[buf] if buf < len(loaded.file.buffers) else None
        shape = list(record.shape) if record else [batch]
        if record and record.batch_axis is not None and 0 <= record.batch_axis < len(shape):
            shape[record.batch_axis] = batch
        if math.prod(shape) > MAX_INPUT:
            raise _Oversize(f"the loader accepted input {name!r} of shape {tuple(shape)}")
        arrays[name] = (rng.standard_normal if random else np.zeros)(shape, np.float32)
    return arrays


def _need(blob: bytes, loaded) -> int:
    need = len(blob)
    if loaded is not None:
        need += sum(w.nbytes for w in loaded.weights)
        for b in loaded.file.buffers:
            try:
                need += 2 * math.prod(b.shape) * np.dtype(b.dtype).itemsize
            except TypeError:
                need += 2 * math.prod(b.shape) * 8
    return need


def _where(filename: str, line: int, function: str) -> str | None:
    """`path:line (function)` of a frame inside dlcc (this module excluded), else None."""
    path = os.path.abspath(filename)
    if filename.startswith("<") or not path.startswith(_ROOT + os.sep) or path == __file__:
        return None
    return f"{os.path.relpath(path, _ROOT)}:{line} ({function})"


def execute(case: str, blob: bytes, stage: Callable[[str], None] = lambda s: None) -> Result:
    """Load `blob`, explain it and run it on TARGETS; see the module doc for the outcomes."""
    from dlcc.api import load_bytes
    from dlcc.errors import DlccError
    from dlcc.explain import describe, render

    result, loaded = Result(case, "ok"), None

    def step(name: str) -> None:
        result.stage = name
        stage(name)

    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    try:
        step("load")
        loaded = load_bytes(blob, case)
        step("explain")
        render(describe(loaded, len(blob), asm=True))
        for target in TARGETS:
            for batch in (1, 2):
                for random in (False, True):
                    step(f"run {target} batch {batch} {('zeros', 'random')[random]}")
                    loaded.run(_inputs(loaded, batch, random), target)
    except DlccError as e:
        result.outcome, result.error, result.message = "rejected", type(e).__name__, str(e)
    except Exception as e:  # any other exception is the finding
        memory = isinstance(e, MemoryError | _Oversize)
        result.outcome, result.error = "memory" if memory else "traceback", type(e).__name__
        result.message = str(e)
        frames = traceback.extract_tb(e.__traceback__)
        inside = [w for f in frames if (w := _where(f.filename, f.lineno, f.name))]
        result.frame = inside[-1] if inside else ""
        result.trace = "".join(traceback.format_exception(e))[-4000:]
    result.message = result.message[:300]
    if tracemalloc.is_tracing():
        result.peak, result.need = tracemalloc.get_traced_memory()[1] - base, _need(blob, loaded)
    return result


def run_case(case: str, seeds: list[Seed], stage: Callable[[str], None] = lambda s: None):
    """Build case `case` and execute it (an "invalid" Result if it cannot be written)."""
    stage("mutate")
    try:
        blob, note = mutant(case, seeds)
    except Exception as e:  # a fuzzer bug: reported, not fatal
        return Result(case, "invalid", stage="mutate", error=type(e).__name__, message=str(e))
    result = execute(case, blob, stage)
    result.note = note
    return result


def _worker(conn, seeds: list[Seed], limit: int, trace_memory: bool, dump_path: str) -> None:
    """A worker process: runs the case ids it receives until it receives None."""
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    with open(dump_path, "a") as dump:
        faulthandler.enable(dump)
        faulthandler.register(signal.SIGUSR1, dump, all_threads=False)  # sent at the timeout
        if trace_memory:
            tracemalloc.start()
        execute("warm-up", seeds[0].blob)  # the lazy imports, outside any case's time
        conn.send(("ready", None))
        while (case := conn.recv()) is not None:
            os.ftruncate(dump.fileno(), 0)
            result = run_case(case, seeds, lambda s: conn.send(("stage", s)))
            conn.send(("result", result))


class _Process:
    """A worker and the case it is running."""

    def __init__(self, ctx, seeds: list[Seed], options: tuple[int, bool]) -> None:
        fd, self.dump = tempfile.mkstemp(prefix="dlcc-fuzz-", suffix=".txt")
        os.close(fd)
        self.conn, child = ctx.Pipe()
        args = (child, seeds, *options, self.dump)
        self.proc = ctx.Process(target=_worker, args=args, daemon=True)
        self.proc.start()
        child.close()
        self.ready, self.case, self.stage, self.started = False, None, "", 0.0

    def send(self, case: str | None) -> None:
        self.case, self.stage, self.started = case, "sent", time.monotonic()
        self.conn.send(case)

    def receive(self) -> Result | None:
        """The result of the current case once it has arrived; raises EOFError on death."""
        while self.conn.poll():
            what, value = self.conn.recv()
            if what == "ready":
                self.ready = True
            elif what == "stage":
                self.stage = value
            else:
                self.case = None
                return value
        return None

    def lost(self, outcome: str, error: str, message: str, seeds: list[Seed]) -> Result:
        """The Result of a case whose worker died or was killed; its frames come from the
        stack faulthandler dumped (on a fatal signal, or on SIGUSR1 at the timeout)."""
        with open(self.dump, errors="replace") as f:
            dump = f.read()
        frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', dump)  # innermost first
        inside = [w for f in frames if (w := _where(f[0], int(f[1]), f[2]))]
        result = Result(self.case, outcome, mutant(self.case, seeds)[1], self.stage, error)
        result.message, result.frame, result.trace = message, (inside or [""])[0], dump
        return result

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()
        os.unlink(self.dump)


def run_cases(
    cases: Iterable[str],
    seeds: list[Seed],
    workers: int = 2,
    timeout: float = 5.0,
    address_space: int = 4 << 30,
    trace_memory: bool = False,
) -> Iterator[Result]:
    """Results of `cases` (in completion order), run in `workers` spawned processes limited to
    `address_space` bytes; a case running longer than `timeout` s is a "hang". With
    `trace_memory`, each Result has its tracemalloc peak (cases run about 1.6x slower)."""
    ctx = multiprocessing.get_context("spawn")
    options = (address_space, trace_memory)
    todo = iter(cases)
    pool = [_Process(ctx, seeds, options) for _ in range(workers)]
    try:
        while pool:
            for w in list(pool):
                if w.ready and w.case is None:
                    if (case := next(todo, None)) is None:
                        w.send(None)
                        pool.remove(w)
                        w.close()
                    else:
                        w.send(case)
            waits = [w.conn for w in pool] + [w.proc.sentinel for w in pool]
            wait(waits, timeout=0.5)
            for k, w in enumerate(pool):
                try:
                    result = w.receive()
                except (EOFError, OSError):
                    result = None
                if result is not None:
                    yield result
                    continue
                late = w.case is not None and time.monotonic() - w.started > timeout
                if w.proc.is_alive() and not late:
                    continue
                if w.case is None and not w.ready:
                    raise RuntimeError(f"a fuzz worker failed to start (exit {w.proc.exitcode})")
                if late:
                    os.kill(w.proc.pid, signal.SIGUSR1)  # dump the stack where it hangs
                    time.sleep(0.2)
                    w.proc.kill()
                    w.proc.join()
                    why = ("hang", "Timeout", f"no result in {timeout:g} s")
                else:
                    w.proc.join()
                    code = w.proc.exitcode or 0
                    name = signal.Signals(-code).name if code < 0 else f"exit {code}"
                    why = ("crash", name, f"the worker died ({name})")
                if w.case is not None:
                    yield w.lost(*why, seeds)
                w.close()
                pool[k] = _Process(ctx, seeds, options)
    finally:
        for w in pool:
            w.close()


# -- reporting ----------------------------------------------------------------------------
def failures(results: Iterable[Result]) -> list[tuple[int, Result]]:
    """Distinct failures, most frequent first: (count, first Result) per outcome, error type
    and innermost dlcc frame (stage when there is no frame)."""
    groups: dict[tuple, list] = {}
    for r in results:
        if r.outcome in FAILURES:
            key = (r.outcome, r.error.split(" ")[0], r.frame or r.stage)
            groups.setdefault(key, [0, r])[0] += 1
    return sorted(((n, r) for n, r in groups.values()), key=lambda g: -g[0])


def format_failures(groups: list[tuple[int, Result]], limit: int | None = None) -> str:
    """The distinct failures as text, each with its replay id and mutation."""
    lines = []
    for n, r in groups[:limit]:
        where = r.frame or "no dlcc frame"
        lines.append(f"{n:6d} x {r.outcome} {r.error} at {where}, during {r.stage}")
        if r.message:
            lines.append(f"         {r.message.splitlines()[-1][:160]}")
        lines.append(f"         replay {r.case}  ({r.note[:140]})")
    return "\n".join(lines)
