"""Codegen: IR graph -> BundleFile (tensor table, buffers, attribute records, program).

    Dense(x, W, b) -> Act      READ_WEIGHTS W; MATRIX_MULTIPLY acc <- ub[x] @ fifo;
                               ACTIVATE ub[y] <- Act(acc + b)
    Conv(x, W, b) -> Act       READ_WEIGHTS W; CONVOLVE acc <- ub[x] * fifo;
                               ACTIVATE ub[y] <- Act(acc + b)          (b stored as M x 1 x 1)
    any other op               VECTOR ub[ys] <- op(ub[xs] | w[...])

An activation is fused into the Activate of the matrix op that feeds it when it is that
value's only use, as the TPU's Activate unit does.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc import __version__
from dlcc.formats import isa
from dlcc.formats.bundle import BufferRecord, BundleFile
from dlcc.formats.encodings import encode
from dlcc.formats.schema import ALIGN
from dlcc.ir import Graph, Node, Value

FUSABLE = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip")


class _Emitter:
    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.buffers: list[BufferRecord] = []
        self.buffer_of: dict[int, int] = {}
        self.tensor_of: dict[int, int] = {}
        self.tensors: list[tuple[str, np.ndarray, str]] = []
        self.attrs: list[tuple] = [()]
        self.program: list[isa.Instruction] = []

    def buffer(self, value: Value) -> int:
        if id(value) not in self.buffer_of:
            self.buffer_of[id(value)] = self.new_buffer(value)
        return self.buffer_of[id(value)]

    def new_buffer(self, value: Value) -> int:
        self.buffers.append(BufferRecord(value.dtype, value.shape, value.batch_axis))
        return len(self.buffers) - 1

    def tensor(self, value: Value, data: np.ndarray | None = None) -> int:
        if id(value) not in self.tensor_of:
            self.tensors.append((value.name, value.data if data is None else data, value.encoding))
            self.tensor_of[id(value)] = len(self.tensors) - 1
        return self.tensor_of[id(value)]

    def operand(self, value: Value | None) -> isa.Operand:
        if value is None:
            return isa.Operand("NONE")
        if value.is_constant:
            return isa.Operand("WEIGHTS", self.tensor(value))
        return isa.Operand("UB", self.buffer(value))

    def attr(self, attrs) -> int:
        record = dataclasses.astuple(attrs) if dataclasses.is_dataclass(attrs) else ()
        if not record:
            return 0
        if record not in self.attrs:
            self.attrs.append(record)
        return self.attrs.index(record)


def generate(graph: Graph, meta: dict | None = None) -> BundleFile:
    """The bundle of a verified graph (deterministic: same graph, same bytes)."""
    e = _Emitter(graph)
    for i, value in enumerate(graph.inputs):
        e.program.append(isa.ReadHost(i, e.buffer(value)))
    fused: set[int] = set()
    for node in graph.nodes:
        if id(node) in fused:
            continue
        if node.op in ("Dense", "Conv"):
            act = _fusable_activation(graph, node)
            if act is not None:
                fused.add(id(act))
            _matrix(e, node, act)
        else:
            ins = tuple(e.operand(v) for v in node.inputs)
            outs = tuple(e.buffer(v) for v in node.outputs)
            e.program.append(isa.Vector(node.op, ins, outs, e.attr(node.attrs)))
    for i, value in enumerate(graph.outputs):
        e.program.append(isa.WriteHost(e.buffer(value), i))
    e.program.append(isa.Halt())

    records, data = [], bytearray()
    for name, array, encoding in e.tensors:
        record, blobs = encode(name, array, encoding)
        spans = []
        for role, coding, blob in blobs:
            if coding == "raw" and record.value_bits == 32 and role == "VALUES":
                data += bytes(-len(data) % ALIGN)  # plain numbers: keep them view-aligned
            spans.append((role, coding, len(data), len(blob)))
            data += blob
        records.append(dataclasses.replace(record, blobs=tuple(spans)))
    header = {"producer": f"dlcc {__version__}", "model": graph.name, **(meta or {})}
    return BundleFile(
        meta=header,
        tensors=records,
        data=bytes(data),
        buffers=e.buffers,
        attrs=e.attrs,
        inputs=[(v.name, e.buffer(v)) for v in graph.inputs],
        outputs=[(v.name, e.buffer(v)) for v in graph.outputs],
        program=e.program,
    )


def _fusable_activation(graph: Graph, node: Node) -> Node | None:
    out = node.outputs[0]
    if len(out.uses) != 1 or out in graph.outputs:
        return None
    user, _ = out.uses[0]
    return user if user.op in FUSABLE else None


def _matrix(e: _Emitter, node: Node, act: Node | None) -> None:
    x, w, b = (node.inputs + [None])[:3]
    result = (act or node).outputs[0]
    acc = e.new_buffer(node.outputs[0])
    e.program.append(isa.ReadWeights(e.tensor(w)))
    if node.op == "Dense":
        e.program.append(isa.MatrixMultiply(e.buffer(x), acc))
    else:
        e.program.append(isa.Convolve(e.buffer(x), acc, e.attr(node.attrs)))
    bias = isa.NO_TENSOR
    if b is not None:
        # Stored in the shape that broadcasts against the accumulator (channels first for Conv).
        data = b.data.reshape(-1, 1, 1) if node.op == "Conv" else b.data
        bias = e.tensor(b, data)
    function = act.op if act is not None else "NONE"
    attrs = e.attr(act.attrs) if act is not None else 0
    e.program.append(isa.Activate(acc, e.buffer(result), bias, function, attrs))
