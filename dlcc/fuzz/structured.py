"""STRUCTURED mutations: edit the parsed BundleFile and re-serialize it.

Tensor, buffer and attribute records, instructions, the program, the IO bindings, META and
the Huffman streams in DATA; every CRC stays right, so the mutation reaches the parsers, the
verifier and the kernels. Out-of-enum values are stored as raw ints in the dataclass fields,
which Construct writes as they are.
"""

from __future__ import annotations

import dataclasses
import math
import zlib

import numpy as np

from dlcc.formats import isa
from dlcc.formats.bundle import BundleFile
from dlcc.formats.schema import (
    PROGRAM_SECTION,
    BlobRole,
    Dtype,
    PositionCoding,
    StreamCoding,
    ValueCoding,
)
from dlcc.fuzz.mutant import (
    STRUCTURED,
    Mutant,
    _choice,
    _edit_list,
    _enum,
    _float,
    _huffman_blobs,
    _index,
    _int8,
    _kind,
    _shape,
    _uint,
)


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
    """An activation buffer: shape, dtype (raw ints too), dims, scale; or the table."""
    buffers = m.file.buffers
    if (k := _index(rng, buffers)) is None or rng.random() < 0.15:
        m.note("buffers: " + _edit_list(rng, buffers, lambda: _choice(rng, m.seed.file.buffers)))
        return
    b, field = buffers[k], _choice(rng, ("shape", "dtype", "dims", "scale"))
    value = {
        "shape": lambda: _shape(rng, b.shape),
        "dtype": lambda: _enum(rng, Dtype),
        "dims": lambda: tuple(_choice(rng, (0, 1, 2, 255, int(rng.integers(256)))) for _ in b.dims),
        "scale": lambda: _float(rng),
    }[field]()
    if field == "shape":  # one dim code per axis, as the format requires
        b = dataclasses.replace(b, dims=(b.dims + (0,) * len(value))[: len(value)])
    b = dataclasses.replace(b, **{field: value})
    if b.dtype == "int8" and not isinstance(b.scale, float):
        b = dataclasses.replace(b, scale=_float(rng))
    buffers[k] = b
    m.note(f"buffer {k} {field} -> {value!r}")


@_kind(STRUCTURED)
def symbol_table(rng, m: Mutant) -> None:
    """The symbol names (ids 1, 2, ...): one dropped, copied, swapped or added (a fresh name,
    a repeat, or none), and now and then an input's batch axis renamed to a new symbol."""
    fresh = lambda: _choice(rng, ("W", "N", "", "x" * 300, "seq"))  # noqa: E731
    m.note("symbols: " + _edit_list(rng, m.file.symbols, fresh))
    if m.file.inputs and rng.random() < 0.3:
        _, buf = _choice(rng, m.file.inputs)
        if buf < len(m.file.buffers):
            b = m.file.buffers[buf]
            code = len(m.file.symbols) + 1
            m.file.buffers[buf] = dataclasses.replace(
                b, dims=tuple(code if d == 1 else d for d in b.dims)
            )
            m.note(f"input buffer {buf}: batch -> symbol {code}")


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
    """An attribute record: a field's value (or one element) replaced by another kind or a
    boundary value, a field renamed, dropped or added, or the table edited (indices shift)."""
    attrs = m.file.attrs
    names = ("axis", "strides", "pads", "kernel", "group", "size", "shape", "perm", "x", "")

    def field():
        return (_choice(rng, names), _attr_value(rng))

    if (k := _index(rng, attrs)) is None or rng.random() < 0.15:
        m.note("attrs: " + _edit_list(rng, attrs, lambda: (field(),)))
        return
    fields = list(attrs[k])
    j = _index(rng, fields)
    name, value = fields[j] if j is not None else ("", None)
    if j is not None and isinstance(value, tuple) and value and rng.random() < 0.5:
        items = list(value)
        items[int(rng.integers(len(items)))] = _choice(rng, (0, -1, 2**31, 2**63, -(2**63)))
        fields[j] = (name, tuple(items))
        what = f"field {name} element -> {fields[j][1]!r}"
    elif j is not None and rng.random() < 0.6:
        fields[j] = (name, _attr_value(rng))
        what = f"field {name} -> {fields[j][1]!r}"
    elif j is not None and rng.random() < 0.3:
        fields[j] = (_choice(rng, names), value)
        what = f"field {name} renamed {fields[j][0]!r}"
    else:
        what = "fields: " + _edit_list(rng, fields, field)
    attrs[k] = tuple(fields)
    m.note(f"attrs {k} {what}"[:200])


_WIDE = {"input": 8, "output": 8}  # the other integer operand fields are 16 bits


def _function(rng: np.random.Generator) -> int:
    """A valid function code (an op record's, or NONE) half the time, else any byte."""
    from dlcc.runtime.kernels import load_all

    codes = sorted(k.code for k in load_all().values() if k.code is not None)
    return _choice(rng, [isa.NONE, *codes]) if rng.random() < 0.5 else int(rng.integers(256))


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
        new = _function(rng)
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
    fields.setdefault("function", _function(rng))
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
            "symbols": list(f.symbols),
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
        del binds[255:]  # the format counts them in a byte (a combo may add to x255)
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


@_kind(STRUCTURED)
def huffman_stream(rng, m: Mutant) -> None:
    """A Huffman stream (formats/huffman.py) rewritten at the end of DATA and its blob pointed
    at it: a block header's bits flipped, cut, bytes appended, LZ77 matches (a 64 MB bomb),
    a stored or fixed-code block, or random bytes."""
    if not (found := _huffman_blobs(m.file)):
        return
    k, b = _choice(rng, found)
    t = m.file.tensors[k]
    role, coding, offset, length = t.blobs[b]
    stream = bytearray(m.file.data[offset : offset + length])
    op = int(rng.integers(6))
    if op == 0 and stream:  # a bit of the first block's header (its code lengths) or payload
        at = int(rng.integers(min(len(stream), 64)))
        stream[at] ^= 1 << int(rng.integers(8))
    elif op == 1:
        del stream[int(rng.integers(len(stream) + 1)) :]
    elif op == 2:
        stream += bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    elif op == 3:
        stream = _raw_deflate(bytes(64 << 20), zlib.Z_DEFAULT_STRATEGY)
    elif op == 4:  # stored (level 0) or fixed-code (Z_FIXED) blocks of other symbols
        symbols = bytes(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8))
        stream = _raw_deflate(symbols, zlib.Z_FIXED, level=int(rng.integers(2)) * 9)
    else:
        stream = bytes(rng.integers(0, 256, max(len(stream), 1), dtype=np.uint8))
    start = -(-len(m.file.data) // 16) * 16
    m.file.data = bytes(m.file.data).ljust(start, b"\0") + bytes(stream)
    blobs = list(t.blobs)
    blobs[b] = (role, coding, start, len(stream))
    m.file.tensors[k] = dataclasses.replace(t, blobs=tuple(blobs))
    m.note(f"tensor {k} Huffman stream {role}: mutation {op}, {len(stream)} B")


def _raw_deflate(data: bytes, strategy: int, level: int = 9) -> bytes:
    coder = zlib.compressobj(level, zlib.DEFLATED, -15, 9, strategy)
    return coder.compress(data) + coder.flush()


@_kind(STRUCTURED)
def combo(rng, m: Mutant) -> None:
    """Two to four of the other structured mutations in a row."""
    for _ in range(int(rng.integers(2, 5))):
        STRUCTURED[_choice(rng, sorted(set(STRUCTURED) - {"combo"}))](rng, m)
