"""Codegen: IR graph -> BundleFile (tensor table, buffers, attribute records, program).

    Dense(x, W, b) -> Act      READ_WEIGHTS W; MATRIX_MULTIPLY acc <- ub[x] @ fifo;
                               ACTIVATE ub[y] <- Act(acc + b)
    Conv(x, W, b) -> Act       READ_WEIGHTS W; CONVOLVE acc <- ub[x] * fifo;
                               ACTIVATE ub[y] <- Act(acc + b)          (b stored as M x 1 x 1)
    any other op               VECTOR ub[ys] <- op(ub[xs] | w[...])    (its weights stored as
                               the passes encoded them, decoded to float32 at load)

An activation is fused into the Activate of the matrix op that feeds it when it is that
value's only use, as the TPU's Activate unit does.

Each value lives in a domain: float32, or int8 when the quantize pass gave it a scale and
its producer can compute in int8 (see `lowering_int8`). A VECTOR Quantize or Dequantize is
inserted where a consumer needs the other domain, once per value and domain.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc import __version__
from dlcc.encoding import DENSE, Encoding
from dlcc.errors import DlccError
from dlcc.formats import isa
from dlcc.formats.bundle import DERIVED as DERIVED_DIM
from dlcc.formats.bundle import STATIC, BufferRecord, BundleFile
from dlcc.formats.encodings import encode
from dlcc.formats.schema import ALIGN
from dlcc.ir import BATCH, DERIVED, Graph, Node, Value
from dlcc.runtime.kernels import code_of, get_kernel
from dlcc.runtime.kernels.quant import ScaleAttrs

TPU_ARRAY = (256, 256)
F32, I8 = "float32", "int8"


class Emitter:
    """Accumulates buffers, tensors, attribute records and instructions for one graph."""

    def __init__(self, array: tuple[int, int] = TPU_ARRAY, symbols: list[str] = (BATCH,)) -> None:
        self.array = array  # the R x C systolic array the matrix instructions are tiled for
        self.dim_codes = {"": STATIC, DERIVED: DERIVED_DIM} | {
            name: i + 1 for i, name in enumerate(symbols)
        }
        self.buffers: list[BufferRecord] = []
        self.where: dict[tuple[int, str], int] = {}  # (value, domain) -> buffer
        self.tensor_of: dict[tuple, int] = {}
        self.tensors: list[tuple[str, np.ndarray, Encoding, bool]] = []
        self.attrs: list[tuple] = [()]
        self.program: list[isa.Instruction] = []

    # -- buffers ------------------------------------------------------------------------
    def new_buffer(self, value: Value, dtype: str) -> int:
        scale = value.scale if dtype == I8 else None
        labels = value.labels or ("",) * len(value.shape)
        dims = tuple(self.dim_codes[label] for label in labels)
        self.buffers.append(BufferRecord(dtype, value.shape, dims, scale))
        return len(self.buffers) - 1

    def write(self, value: Value, domain: str) -> int:
        """A fresh buffer holding `value` in `domain`."""
        self.where[(id(value), domain)] = self.new_buffer(value, domain)
        return self.where[(id(value), domain)]

    def has(self, value: Value, domain: str) -> bool:
        return (id(value), domain) in self.where

    def read(self, value: Value, domain: str = F32) -> int:
        """The buffer holding `value` in `domain`, converting it once if needed (a float
        between float32 and int8; an integer value has only its own dtype)."""
        domain = domain if value.plain_dtype == F32 else value.plain_dtype
        if not self.has(value, domain):
            source = self.where[(id(value), I8 if domain == F32 else F32)]
            function = "Dequantize" if domain == F32 else "Quantize"
            dst = self.write(value, domain)
            attrs = self.attr(ScaleAttrs(value.scale))
            operand = (isa.Operand("UB", source),)
            self.program.append(isa.Vector(code_of(function), operand, (dst,), attrs))
        return self.where[(id(value), domain)]

    # -- tensors and attributes -----------------------------------------------------------
    def tensor(self, value: Value, data: np.ndarray | None = None, integer: bool = False) -> int:
        """The id of constant `value` (optionally reshaped `data`; `integer`: its int8 q)."""
        key = (id(value), integer, None if data is None else data.shape)
        if key not in self.tensor_of:
            array = value.data if data is None else data
            self.tensors.append((value.name, array, value.encoding, integer))
            self.tensor_of[key] = len(self.tensors) - 1
        return self.tensor_of[key]

    def derived(self, name: str, array: np.ndarray) -> int:
        """The id of a tensor computed by codegen (int32 biases, requantization, tables)."""
        self.tensors.append((name, array, DENSE, False))
        return len(self.tensors) - 1

    def operand(self, value: Value | None, domain: str = F32) -> isa.Operand:
        if value is None:
            return isa.Operand("NONE")
        if value.is_constant:
            return isa.Operand("WEIGHTS", self.tensor(value))
        return isa.Operand("UB", self.read(value, domain))

    def attr(self, attrs) -> int:
        fields = dataclasses.fields(attrs) if dataclasses.is_dataclass(attrs) else ()
        record = tuple((f.name, getattr(attrs, f.name)) for f in fields)
        if not record:
            return 0
        if record not in self.attrs:
            self.attrs.append(record)
        return self.attrs.index(record)


def generate(
    graph: Graph, meta: dict | None = None, array: tuple[int, int] = TPU_ARRAY
) -> BundleFile:
    """The bundle of a verified graph, its matrix instructions tiled for an R x C `array`;
    its DATA is a list of chunks, some of them views of the graph's arrays.

    Deterministic: same graph, same bytes.
    """
    from dlcc import lowering_int8

    symbols = [name for name, _ in graph.symbols]
    e = Emitter(array, symbols)
    for i, value in enumerate(graph.inputs):
        e.program.append(isa.ReadHost(i, e.write(value, value.plain_dtype)))
    fused: set[int] = set()
    for node in graph.nodes:
        if id(node) in fused:
            continue
        matrix = get_kernel(node.op).int8 == "matrix"
        act = fusable_activation(graph, node) if matrix else None
        if act is not None:
            fused.add(id(act))
        if lowering_int8.emit(e, node, act):
            continue
        if matrix:
            _matrix(e, node, act)
        else:
            ins = tuple(e.operand(v) for v in node.inputs)
            outs = tuple(e.write(v, v.plain_dtype) for v in node.outputs)
            e.program.append(isa.Vector(code_of(node.op), ins, outs, e.attr(node.attrs)))
    for i, value in enumerate(graph.outputs):
        e.program.append(isa.WriteHost(e.read(value, F32), i))
    e.program.append(isa.Halt())
    header = {
        "producer": f"dlcc {__version__}",
        "model": graph.name,
        "array": list(array),
        **(meta or {}),
    }
    _check_capacity(graph, e)
    records, data = _layout(e.tensors)
    return BundleFile(
        meta=header,
        tensors=records,
        data=data,
        buffers=e.buffers,
        attrs=e.attrs,
        inputs=[(v.name, e.where[(id(v), v.plain_dtype)]) for v in graph.inputs],
        outputs=[(v.name, e.read(v, F32)) for v in graph.outputs],
        program=e.program,
        symbols=symbols,
    )


# What the instruction stream's fields can address (formats/isa.py, formats/schema.py).
CAPACITY = {
    "inputs": 255,
    "outputs": 255,
    "buffers": 0xFFFF,
    "tensors": isa.NO_TENSOR,
    "attrs": 0xFFFF,
}


def _check_capacity(graph: Graph, e: Emitter) -> None:
    """Refuse a graph whose bundle the format cannot address (clean, naming the count)."""
    counts = {
        "inputs": len(graph.inputs),
        "outputs": len(graph.outputs),
        "buffers": len(e.buffers),
        "tensors": len(e.tensors),
        "attrs": len(e.attrs),
    }
    for what, count in counts.items():
        if count > CAPACITY[what]:
            raise DlccError(
                f"graph {graph.name!r}: {count} {what}; a bundle holds at most {CAPACITY[what]}"
            )


def fusable_activation(graph: Graph, node: Node) -> Node | None:
    """The activation consuming `node`'s output, when it is that value's only use."""
    out = node.outputs[0]
    if len(out.uses) != 1 or out in graph.outputs:
        return None
    user, _ = out.uses[0]
    return user if get_kernel(user.op).pointwise else None


def channel_view(node: Node, array: np.ndarray) -> np.ndarray:
    """A per-output-channel array shaped to broadcast against the accumulator."""
    return array.reshape(*array.shape[:-1], -1, 1, 1) if node.op == "Conv" else array


def _matrix(e: Emitter, node: Node, act: Node | None) -> None:
    x, w, b = (node.inputs + [None])[:3]
    result = (act or node).outputs[0]
    acc = e.new_buffer(node.outputs[0], F32)
    e.program.append(isa.ReadWeights(e.tensor(w)))
    e.program.append(matrix_instruction(e, node, e.read(x, F32), acc))
    bias = isa.NO_TENSOR if b is None else e.tensor(b, channel_view(node, b.data))
    function = code_of(act.op) if act is not None else isa.NONE
    attrs = e.attr(act.attrs) if act is not None else 0
    e.program.append(isa.Activate(acc, e.write(result, F32), bias, function, attrs))


def matrix_instruction(e: Emitter, node: Node, src: int, acc: int) -> isa.Instruction:
    """MATRIX_MULTIPLY or CONVOLVE of `node`, with its weight tiles' folds on `e.array`.

    The weight matrix is K x N per group (a Conv's K = kh * kw * C_in / group): it takes
    ceil(K / R) x ceil(N / C) array tiles; one instruction stands for all of them.
    """
    w = node.inputs[1].data
    if node.op == "Dense":
        k, n = w.shape
    else:
        k, n = int(np.prod(w.shape[1:])), w.shape[0] // node.attrs.group
    rows, cols = e.array
    folds = {"folds_k": -(-k // rows), "folds_n": -(-n // cols)}
    if node.op == "Dense":
        return isa.MatrixMultiply(src, acc, **folds)
    return isa.Convolve(src, acc, e.attr(node.attrs), **folds)


def _layout(tensors: list) -> tuple[list, list]:
    """Encode every tensor and lay the blobs out in the DATA section: its chunks, in order
    (a raw blob may view the graph's array; nothing is joined here, see `BundleFile.pieces`)."""
    records, chunks, size = [], [], 0
    for name, array, encoding, integer in tensors:
        record, blobs = encode(name, array, encoding, integer)
        spans = []
        for role, coding, blob in blobs:
            if coding == "raw" and record.value_bits == 32 and role == "VALUES":
                chunks.append(bytes(-size % ALIGN))  # plain numbers: keep them view-aligned
                size += len(chunks[-1])
            spans.append((role, coding, size, len(blob)))
            chunks.append(blob)
            size += len(blob)
        records.append(dataclasses.replace(record, blobs=tuple(spans)))
    return records, chunks
