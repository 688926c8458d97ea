"""Split an ONNX file into its graph and its weights, reading each weight's bytes once.

onnx's checker, version converter and shape inference each copy the whole model (VGG-19's
550 MB several times over), yet none of them needs a weight's values: its type and shape do.
So the file is scanned at the protobuf wire level (memory-mapped; only tags and lengths are
read, payloads are jumped over): every initializer of the main graph of at least
`STRIP_BYTES` (and every one stored as external data) is left out of the parsed model, which
declares it as a graph input of the same type and shape instead. Its values are read later,
straight from the file into their numpy array (raw little-endian data), or by onnx's
`numpy_helper` one tensor at a time (typed fields, external data, exotic types).

Small initializers stay in the graph: shapes, axes and scales are what shape inference reads.
A file the scan cannot follow is parsed by onnx as a whole, which names what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dlcc.errors import FrontendError

STRIP_BYTES = 4096  # initializers this large leave the model the checks see
# Protobuf field numbers (onnx.proto).
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
# Element types whose raw_data is a plain little-endian numpy array.
_PLAIN = {
    t: np.dtype(helper.tensor_dtype_to_np_dtype(t)).newbyteorder("<")
    for t in (
        TensorProto.FLOAT,
        TensorProto.DOUBLE,
        TensorProto.FLOAT16,
        TensorProto.INT8,
        TensorProto.INT16,
        TensorProto.INT32,
        TensorProto.INT64,
        TensorProto.UINT8,
        TensorProto.UINT16,
        TensorProto.UINT32,
        TensorProto.UINT64,
        TensorProto.BOOL,
    )
}


class _Malformed(Exception):
    """The bytes are not the protobuf the scan expects."""


@dataclasses.dataclass(frozen=True)
class Stripped:
    """An initializer left out of the model: its fields but raw_data, and where that lies."""

    tensor: TensorProto
    raw: tuple[int, int] | None  # (offset, length) of raw_data in the file

    @property
    def name(self) -> str:
        return self.tensor.name


def split_model(path: str) -> tuple[onnx.ModelProto, list[Stripped]] | None:
    """The model at `path` without its large initializers, and those initializers; None when
    the file is not a protobuf the scan can follow (onnx.load then says why)."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return None
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            try:
                skeleton, stripped = _scan_model(buf)
            except _Malformed:
                return None
    try:
        model = onnx.ModelProto.FromString(skeleton)
    except Exception:  # protobuf's DecodeError: let onnx.load say it
        return None
    return model, stripped


def declare(model: onnx.ModelProto, stripped: list[Stripped]) -> list[str]:
    """Declare each stripped initializer as a graph input of its type and shape (for the
    checks); returns the names declared, which `undeclare` removes again."""
    listed = {inp.name for inp in model.graph.input}
    added = [s for s in stripped if s.name not in listed]
    model.graph.input.extend(
        helper.make_tensor_value_info(s.name, s.tensor.data_type, list(s.tensor.dims))
        for s in added
    )
    return [s.name for s in added]


def undeclare(model: onnx.ModelProto, names: list[str]) -> None:
    """Remove the inputs `declare` added: the graph's inputs are its own again."""
    gone, inputs = set(names), model.graph.input
    for i in reversed(range(len(inputs))):
        if inputs[i].name in gone:
            del inputs[i]


def read_payloads(path: str, stripped: list[Stripped]) -> dict[str, np.ndarray]:
    """The values of the stripped initializers by name, each read once from `path`."""
    weights = {}
    base_dir = os.path.dirname(path)
    with open(path, "rb") as f:
        for s in stripped:
            try:
                weights[s.name] = _values(f, s, base_dir)
            except FrontendError:
                raise
            except Exception as e:  # onnx's errors on external data, bad typed fields
                raise FrontendError(f"initializer {s.name!r}: {first_line(e)}") from None
    return weights


def _values(f, s: Stripped, base_dir: str) -> np.ndarray:
    t, dtype = s.tensor, _PLAIN.get(s.tensor.data_type)
    if s.raw is None:
        return numpy_helper.to_array(t, base_dir)
    offset, length = s.raw
    if dtype is None:  # an exotic type: onnx decodes it
        full = TensorProto()
        full.CopyFrom(t)
        full.raw_data = os.pread(f.fileno(), length, offset)
        return numpy_helper.to_array(full)
    count = math.prod(t.dims)
    if count * dtype.itemsize != length:
        raise FrontendError(
            f"initializer {t.name!r}: {length:,} bytes of data for shape "
            f"{tuple(t.dims)} of {TensorProto.DataType.Name(t.data_type)}"
        )
    out = np.empty(count, dtype)
    f.seek(offset)
    if f.readinto(memoryview(out).cast("B")) != length:
        raise FrontendError(f"initializer {t.name!r}: the file ends inside its data")
    return out.astype(dtype.newbyteorder("="), copy=False).reshape(tuple(t.dims))


# -- protobuf wire format -------------------------------------------------------------
def _scan_model(buf) -> tuple[bytes, list[Stripped]]:
    """ModelProto bytes with the graph's large initializers left out, and those."""
    pieces, stripped = [], []
    for number, wire, start, value, end in _fields(buf, 0, len(buf)):
        if number == _MODEL_GRAPH and wire == _BYTES:
            graph = _scan_graph(buf, value, end, stripped)
            pieces.append(_tag(_MODEL_GRAPH, _BYTES) + _varint_bytes(len(graph)) + graph)
        else:
            pieces.append(buf[start:end])
    return b"".join(pieces), stripped


def _scan_graph(buf, begin: int, stop: int, stripped: list[Stripped]) -> bytes:
    pieces = []
    for number, wire, start, value, end in _fields(buf, begin, stop):
        if number == _GRAPH_INITIALIZER and wire == _BYTES:
            tensor = _scan_tensor(buf, value, end)
            if tensor is not None:
                stripped.append(tensor)
                continue
        pieces.append(buf[start:end])
    return b"".join(pieces)


def _scan_tensor(buf, begin: int, stop: int) -> Stripped | None:
    """A large (or external) initializer without its raw_data; None for a small one."""
    pieces, raw = [], None
    for number, wire, start, value, end in _fields(buf, begin, stop):
        if number == _TENSOR_RAW_DATA and wire == _BYTES:
            raw = (value, end - value)
        else:
            pieces.append(buf[start:end])
    try:
        tensor = TensorProto.FromString(b"".join(pieces))
    except Exception:
        raise _Malformed from None
    external = tensor.data_location == TensorProto.EXTERNAL
    if not external and stop - begin < STRIP_BYTES:
        return None
    return Stripped(tensor, raw)


def _fields(buf, begin: int, stop: int):
    """(number, wire type, start, value start, end) of each field in buf[begin:stop]."""
    pos = begin
    while pos < stop:
        start = pos
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == _VARINT:
            value = pos
            _, pos = _varint(buf, pos)
        elif wire in (_FIXED64, _FIXED32):
            value = pos
            pos += 8 if wire == _FIXED64 else 4
        elif wire == _BYTES:
            length, value = _varint(buf, pos)
            pos = value + length
        else:  # groups (deprecated) or garbage
            raise _Malformed
        if number == 0 or pos > stop:
            raise _Malformed
        yield number, wire, start, value, pos


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _varint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint_bytes(number << 3 | wire)


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (or its type's name), at most 300 chars."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
