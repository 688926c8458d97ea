"""Lower an ONNX graph into the IR, folding constants and shape arithmetic on the way.

One walk in topological order. A node whose inputs are all constant is evaluated with onnx's
own reference implementation and becomes a constant; so do `Shape` and `Size` of a value
whose shape is static. The batch dimension is the one unknown: `Shape` reports it as the
sentinel `BATCH`, and the converters of shape-taking ops (Reshape) turn that back into the
IR's batch axis. Every other node goes to its converter (`converters.py`); ops without one
are collected, so a model fails once with the complete list. The float constants a
converter's IR nodes read are its weights: a NaN or Inf among them is refused there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper
from onnx.reference import ReferenceEvaluator

from dlcc.errors import DlccError, FrontendError, UnsupportedOpError
from dlcc.frontend.loader import opset_of
from dlcc.ir import Graph, Node, Value
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.tensor import ReshapeAttrs

# Stands for the batch size in folded shape tensors: a prime no real dimension equals.
BATCH = 1_000_003
# Fills whose output size comes from a shape input: with BATCH in it they fold at batch 1,
# a tensor that broadcasts over the batch (exporters build zero LSTM states this way).
_FILLS = {"ConstantOfShape", "Expand"}
# The graph input types dlcc compiles: float data, and integer ids / indices (embeddings).
INPUT_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
}
# Other ops whose output size comes from input values: BATCH there cannot be folded.
_SIZE_FROM_VALUES = {"Range", "Tile", "Resize", "Upsample"}


@dataclasses.dataclass(frozen=True)
class Converter:
    """Lowers one ONNX op type; `params` are the input positions that must be constant."""

    fn: Callable
    params: tuple[int, ...]


CONVERTERS: dict[str, Converter] = {}


def converter(*op_types: str, params: tuple[int, ...] = ()):
    """Register `fn(b: Builder, node, *inputs) -> outputs` as the lowering of `op_types`."""

    def wrap(fn: Callable) -> Callable:
        for op in op_types:
            CONVERTERS[op] = Converter(fn, params)
        return fn

    return wrap


class Builder:
    """What a converter sees: the graph being built and helpers for the node at hand."""

    def __init__(self, graph: Graph, node: onnx.NodeProto) -> None:
        self.graph = graph
        self.node = node
        self.name = node.name or f"{node.op_type}:{node.output[0]}"
        self.attrs = {a.name: _attribute(a) for a in node.attribute}

    def emit(self, op: str, inputs: list[Value | None], **fields) -> list[Value]:
        """Add an IR node `op(inputs)` with attributes `fields`; returns its outputs.

        An attribute outside its domain (the kernel's dataclass raises ValueError) or inputs
        the kernel's shape function refuses fail naming this node.
        """
        try:
            attrs = get_kernel(op).attrs(**fields)
        except ValueError as e:
            raise self.fail(str(e)) from None
        try:
            return self.graph.add(op, inputs, attrs, name=self.name).outputs
        except DlccError as e:
            raise FrontendError(str(e)) from None  # names the IR node, named after this one

    def fail(self, why: str) -> FrontendError:
        """An error naming this node."""
        return FrontendError(f"node {self.name!r} ({self.node.op_type}): {why}")

    def ints(self, value: Value | np.ndarray) -> tuple[int, ...]:
        """A constant integer tensor as a tuple; refuses one that carries the batch size."""
        data = value.data if isinstance(value, Value) else value
        flat = np.asarray(data).reshape(-1).astype(np.int64)
        if (np.abs(flat) >= BATCH).any():
            raise self.fail("uses the batch size as a parameter; only Reshape may")
        return tuple(int(v) for v in flat)


def _attribute(a: onnx.AttributeProto):
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return tuple(v.decode() if isinstance(v, bytes) else v for v in value)
    return value


def lower_model(model: onnx.ModelProto) -> Graph:
    """The IR graph of a checked ONNX model."""
    from dlcc.frontend import converters  # noqa: F401  (registers the converters)

    onnx_graph = model.graph
    graph = Graph(onnx_graph.name or "model")
    lowering = _Lowering(graph, _Folder(opset_of(model)))
    lowering.constants(onnx_graph.initializer)
    for inp in onnx_graph.input:
        if inp.name not in lowering.env:
            lowering.env[inp.name] = _graph_input(graph, inp)
    for node in onnx_graph.node:
        lowering.lower(node)
    if lowering.unsupported:
        listed = ", ".join(
            f"{op} (first node {name!r})" for op, name in lowering.unsupported.items()
        )
        raise UnsupportedOpError(f"unsupported ONNX ops: {listed}")
    for out in onnx_graph.output:
        if out.name not in lowering.env:
            raise FrontendError(f"output {out.name!r} is not computed by any supported node")
        value = lowering.env[out.name]
        if value.is_constant:
            raise FrontendError(f"output {out.name!r} is a constant; nothing to compile")
        graph.outputs.append(_output_named(graph, value, out.name))
    return graph


class _Lowering:
    """One walk over the ONNX nodes: fold what is constant, convert the rest.

    After the first unsupported op nothing more is built, but the walk goes on to list every
    op that blocks the model. Values downstream of a blocker are "pending": a node reading only
    pending shapes (Shape, Size) or constants would fold once the blocker exists, so it is not
    listed; a node reading pending data is listed only when it has no converter either.
    """

    def __init__(self, graph: Graph, folder: _Folder) -> None:
        self.graph, self.folder = graph, folder
        self.env: dict[str, Value] = {}
        self.pending: dict[str, str] = {}  # name -> "data" | "constant": what it will be
        self.unsupported: dict[str, str] = {}

    def constants(self, initializers) -> None:
        """Define a graph's (or a branch's) initializers as constants."""
        for init in initializers:
            self.env[init.name] = self.graph.constant(init.name, onnx.numpy_helper.to_array(init))

    def lower(self, node: onnx.NodeProto) -> None:
        """Fold, convert or (once something is unsupported) classify one node."""
        label = node.name or node.output[0]
        if node.domain not in ("", "ai.onnx"):
            return self._block(node, f"{node.domain}.{node.op_type}", label)
        kinds = [self.pending.get(name) for name in node.input if name]
        if any(kinds):
            reads_data = "data" in kinds and node.op_type not in ("Shape", "Size")
            if reads_data and node.op_type not in CONVERTERS:
                self.unsupported.setdefault(node.op_type, label)
            for name in node.output:
                self.pending[name] = "data" if reads_data else "constant"
            return None
        ins = [self.env.get(name) if name else None for name in node.input]
        defined = all(not name or name in self.env for name in node.input)
        if node.op_type == "If" and defined and ins[0].is_constant:
            return self._inline_if(node, ins[0])
        if defined and _foldable(node, ins):
            for name, data in zip(node.output, self.folder.run(node, ins)):
                self.env[name] = self.graph.constant(name, data)
            return None
        conv = CONVERTERS.get(node.op_type)
        if conv is None:
            return self._block(node, node.op_type, label)
        if self.unsupported:  # keep scanning for the complete list, build nothing more
            for name in node.output:
                self.pending[name] = "data"
            return None
        if not defined:
            missing = next(name for name in node.input if name and name not in self.env)
            raise FrontendError(
                f"node {label!r} ({node.op_type}) reads {missing!r}, which no node computes"
            )
        self._convert(node, conv, ins)
        return None

    def _block(self, node: onnx.NodeProto, op: str, label: str) -> None:
        self.unsupported.setdefault(op, label)
        for name in node.output:
            self.pending[name] = "data"

    def _inline_if(self, node: onnx.NodeProto, cond: Value) -> None:
        """An If on a constant condition is its taken branch, lowered in place."""
        if cond.data.size != 1:
            raise Builder(self.graph, node).fail("the condition is not a single value")
        taken = "then_branch" if bool(cond.data.reshape(-1)[0]) else "else_branch"
        branch = next(helper.get_attribute_value(a) for a in node.attribute if a.name == taken)
        self.constants(branch.initializer)
        for inner in branch.node:
            self.lower(inner)
        for name, out in zip(node.output, branch.output):
            if out.name in self.pending:
                self.pending[name] = self.pending[out.name]
            elif out.name in self.env:
                self.env[name] = self.env[out.name]

    def _convert(self, node: onnx.NodeProto, conv: Converter, ins: list[Value | None]) -> None:
        graph = self.graph
        b = Builder(graph, node)
        for i in conv.params:
            if i < len(ins) and ins[i] is not None and not ins[i].is_constant:
                raise b.fail(f"input {i} ({node.input[i]!r}) must be a constant")
        first_new = len(graph.nodes)
        outs = conv.fn(b, node, *ins)
        _check_weights(b, graph.nodes[first_new:])
        created = {id(v) for n in graph.nodes[first_new:] for v in n.outputs}
        for name, value in zip(node.output, outs):
            if name:
                if id(value) in created:
                    graph.rename(value, name)
                self.env[name] = value


def _check_weights(b: Builder, nodes: list[Node]) -> None:
    """Refuse NaN or infinite values in the float constants `nodes` read: their weights.

    Only what reaches the IR is checked: constants folded into shapes, or into attributes
    (Clip's bounds may well be infinite), are not read by any node.
    """
    for node in nodes:
        for v in node.inputs:
            if v is None or not v.is_constant or v.data.dtype.kind != "f":
                continue
            finite = np.isfinite(v.data)
            if not finite.all():
                first = np.unravel_index(int(np.argmin(finite)), v.data.shape)
                raise b.fail(
                    f"weight {v.name!r} holds {finite.size - np.count_nonzero(finite)} "
                    f"NaN/Inf value(s), the first {v.data[first]} at index {tuple(map(int, first))}"
                )


def _output_named(graph: Graph, value: Value, name: str) -> Value:
    """`value` under the ONNX output name; an input or another output is copied first."""
    if value.name == name:
        return value
    if value.producer is None or value in graph.outputs:
        shape = tuple(-1 if i == value.batch_axis else d for i, d in enumerate(value.shape))
        value = graph.add("Reshape", [value], ReshapeAttrs(shape), name=name).outputs[0]
    graph.rename(value, name)
    return value


def _graph_input(graph: Graph, inp: onnx.ValueInfoProto) -> Value:
    """Declare a graph input; its first symbolic dimension is the batch dimension."""
    t = inp.type.tensor_type
    dtype = INPUT_DTYPES.get(t.elem_type)
    if dtype is None:
        kind = onnx.TensorProto.DataType.Name(t.elem_type)
        raise FrontendError(
            f"input {inp.name!r} is {kind}; dlcc compiles float32 inputs and int32/int64 ids"
        )
    dims = list(t.shape.dim)
    symbolic = [i for i, d in enumerate(dims) if not d.HasField("dim_value")]
    if len(symbolic) > 1:
        raise FrontendError(
            f"input {inp.name!r} has {len(symbolic)} symbolic dimensions; dlcc needs static "
            "shapes except one batch dimension"
        )
    batch = symbolic[0] if symbolic else None
    shape = tuple(1 if i == batch else d.dim_value for i, d in enumerate(dims))
    return graph.add_input(inp.name, shape, batch, dtype)


def _foldable(node: onnx.NodeProto, ins: list[Value | None]) -> bool:
    if node.op_type in ("Shape", "Size"):
        return ins[0] is not None
    return all(v is None or v.is_constant for v in ins)


class _Folder:
    """Evaluates constant nodes with onnx's reference implementation of each op."""

    def __init__(self, opset: int) -> None:
        self.opset = opset

    def run(self, node: onnx.NodeProto, ins: list[Value | None]) -> list[np.ndarray]:
        if node.op_type in ("Shape", "Size"):
            shape = np.array(ins[0].shape_at(BATCH), dtype=np.int64)
            if node.op_type == "Size":
                return [np.array(np.prod(shape), dtype=np.int64)]
            attrs = {a.name: a.i for a in node.attribute}
            return [shape[attrs.get("start", 0) : attrs.get("end", len(shape))]]
        feeds = {name: v.data for name, v in zip(node.input, ins) if name}
        if node.op_type in _FILLS:
            feeds = {
                k: np.where(a == BATCH, 1, a) if a.dtype.kind == "i" else a
                for k, a in feeds.items()
            }
        if node.op_type in _SIZE_FROM_VALUES | _FILLS and any(
            (np.abs(a) >= BATCH).any() for a in feeds.values() if a.dtype.kind == "i"
        ):
            raise FrontendError(
                f"node {node.name or node.output[0]!r} ({node.op_type}) builds a tensor whose "
                "size depends on the batch size; dlcc needs static shapes"
            )
        try:
            outs = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as e:
            raise FrontendError(
                f"node {node.name or node.output[0]!r} ({node.op_type}): constant folding "
                f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        return [np.asarray(o) for o in outs]
