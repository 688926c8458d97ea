"""Lower an ONNX graph into the IR, folding constants and shape arithmetic on the way.

One walk in topological order. A node whose inputs are all constant is evaluated with onnx's
own reference implementation and becomes a constant; so do `Shape` and `Size`. Symbolic
dimensions (the batch, an image's width, a sequence length) make such constants vary: each
is folded at the reference binding and at every probe of the graph (`dlcc.ir`), and the
converters of shape-taking ops (Reshape, Squeeze, Expand) turn the varying entries back into
symbolic dimensions of the IR. A varying constant anywhere else is refused, naming the node.
Every other node goes to its converter (`converters.py`, `shape_converters.py`); ops without
one are collected, so a model fails once with the complete list. The float constants a
converter's IR nodes read are its weights: a NaN or Inf among them is refused there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from dlcc.errors import DlccError, FrontendError, UnsupportedOpError
from dlcc.frontend.loader import opset_of
from dlcc.ir import BATCH as BATCH_SYMBOL
from dlcc.ir import Graph, Node, Value
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.tensor import ReshapeAttrs

# The graph input types dlcc compiles: float data, integer ids / indices (embeddings) and
# boolean masks.
INPUT_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.BOOL: "bool",
}
# Ops whose output size comes from input values: with symbolic sizes their converters decide.
_SIZE_FROM_VALUES = {"Range", "Tile", "Resize", "Upsample"}
# Reference values tried for a symbolic dimension other than the batch, in order: the first
# at which (and at twice which) every shape of the model is valid is kept.
REFERENCES = (64, 32, 48, 256, 1024, 16)


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

    def __init__(self, graph: Graph, node: onnx.NodeProto, variants: dict) -> None:
        self.graph = graph
        self.node = node
        self.name = node.name or f"{node.op_type}:{node.output[0]}"
        self.attrs = {a.name: _attribute(a) for a in node.attribute}
        self.variants = variants

    def at_probes(self, value: Value) -> list[np.ndarray] | None:
        """A constant computed from symbolic dimensions: its data at each probe; else None."""
        return self.variants.get(id(value))

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

    def ints(self, value: Value) -> tuple[int, ...]:
        """A constant integer tensor as a tuple; refuses one computed from symbolic dims."""
        self.static(value)
        return tuple(int(v) for v in value.data.reshape(-1).astype(np.int64))

    def static(self, value: Value) -> Value:
        """`value`, refused when it is a constant computed from symbolic dimensions."""
        if id(value) in self.variants:
            names = ", ".join(name for name, _ in self.graph.symbols)
            raise self.fail(
                f"{value.name!r} is computed from symbolic dimensions ({names}) where dlcc "
                "needs a constant; pin them with --shape NAME=DIMS"
            )
        return value


def _attribute(a: onnx.AttributeProto):
    value = helper.get_attribute_value(a)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list):
        return tuple(v.decode() if isinstance(v, bytes) else v for v in value)
    return value


def lower_model(
    model: onnx.ModelProto,
    shapes: dict[str, tuple] | None = None,
    notes: list[str] | None = None,
    weights: dict[str, np.ndarray] | None = None,
) -> Graph:
    """The IR graph of a checked ONNX model. `shapes` pins input dimensions by input name:
    an int fixes one, a name keeps it symbolic (renamed), None leaves it as declared.
    `weights` are initializers read apart from the model (`read_model`), by name; the graph
    holds these very arrays, not copies.

    A symbolic dimension other than the batch gets the first of `REFERENCES` at which the
    model lowers. A model that lowers only with its batch fixed at 1 (a recurrent state or a
    Squeeze made for one sample) gets it so, with a note. If nothing lowers, the error of the
    attempt that got furthest through the graph is raised.
    """
    from dlcc.frontend import converters  # noqa: F401  (registers the converters)

    shapes = shapes or {}
    furthest: tuple[int, FrontendError] | None = None
    for fixed_batch in (False, True):
        for reference in REFERENCES if _has_free_symbols(model, shapes) else REFERENCES[:1]:
            try:
                graph = _lower(model, shapes, reference, fixed_batch, weights or {})
            except UnsupportedOpError:
                raise
            except FrontendError as e:
                progress = getattr(e, "progress", len(model.graph.node))
                if furthest is None or progress > furthest[0]:
                    furthest = (progress, e)
                continue
            if fixed_batch and notes is not None:
                notes.append(f"the model's batch is fixed at 1: at batch 2, {furthest[1]}")
            return graph
        if not any(_dims(inp, shapes.get(inp.name))[1] is not None for inp in model.graph.input):
            break
    raise furthest[1]


def _lower(
    model: onnx.ModelProto,
    shapes: dict[str, tuple],
    reference: int,
    fixed_batch: bool,
    weights: dict[str, np.ndarray],
) -> Graph:
    onnx_graph = model.graph
    graph = Graph(onnx_graph.name or "model")
    lowering = _Lowering(graph, _Folder(opset_of(model)))
    lowering.constants(onnx_graph.initializer)
    for name, data in weights.items():
        lowering.env[name] = graph.constant(name, data)
    try:
        for inp in onnx_graph.input:
            if inp.name not in lowering.env:
                pins = shapes.get(inp.name)
                value = _graph_input(graph, inp, pins, reference, fixed_batch)
                lowering.env[inp.name] = value
        unknown = set(shapes) - {inp.name for inp in onnx_graph.input}
        if unknown:
            names = ", ".join(sorted(unknown))
            raise FrontendError(f"--shape names no input of the model: {names}")
    except FrontendError as e:
        e.progress = -1
        raise
    for index, node in enumerate(onnx_graph.node):
        try:
            lowering.lower(node)
        except FrontendError as e:
            e.progress = index  # how far through the graph this attempt got
            raise
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
        self.variants: dict[int, list[np.ndarray]] = {}  # id(constant) -> its data per probe

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
            return self._fold(node, ins)
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

    def _fold(self, node: onnx.NodeProto, ins: list[Value | None]) -> None:
        """Evaluate a constant node at the reference binding and, when its inputs vary with
        the symbols, at every probe; outputs that vary remember their data per probe, and
        a node whose output size varies is converted instead."""
        probes = range(len(self.graph.symbols))
        varies = any(v is not None and (id(v) in self.variants or v.probes) for v in ins)
        feeds = [self._feeds(node, ins, p) for p in (None, *(probes if varies else ()))]
        label = node.name or node.output[0]
        if varies and node.op_type in _SIZE_FROM_VALUES:  # its converter decides
            if node.op_type in CONVERTERS and not self.unsupported:
                return self._convert(node, CONVERTERS[node.op_type], ins)
            raise FrontendError(
                f"node {label!r} ({node.op_type}) builds a tensor whose size depends on "
                "symbolic dimensions; pin them with --shape NAME=DIMS"
            )
        results = [self.folder.run(node, f) for f in feeds]
        sized = any(r[k].shape != results[0][k].shape for r in results[1:] for k in range(len(r)))
        if sized and node.op_type in CONVERTERS and not self.unsupported:
            # A tensor whose size follows the symbols (position ids sliced to the sequence
            # length) is data, not shape arithmetic: it is computed at run time.
            return self._convert(node, CONVERTERS[node.op_type], ins)
        for k, name in enumerate(node.output):
            value = self.env[name] = self.graph.constant(name, results[0][k])
            moved = [r[k] for r in results[1:]]
            if any(m.shape != value.data.shape or (m != value.data).any() for m in moved):
                self.variants[id(value)] = moved

    def _feeds(self, node: onnx.NodeProto, ins: list[Value | None], probe: int | None) -> dict:
        """The node's input arrays at `probe` (None: the reference binding)."""
        if node.op_type in ("Shape", "Size"):
            return {node.input[0]: ins[0].shape_at(probe)}
        return {
            name: v.data
            if probe is None or id(v) not in self.variants
            else self.variants[id(v)][probe]
            for name, v in zip(node.input, ins)
            if name
        }

    def _block(self, node: onnx.NodeProto, op: str, label: str) -> None:
        self.unsupported.setdefault(op, label)
        for name in node.output:
            self.pending[name] = "data"

    def _inline_if(self, node: onnx.NodeProto, cond: Value) -> None:
        """An If on a constant condition is its taken branch, lowered in place."""
        if cond.data.size != 1:
            raise Builder(self.graph, node, self.variants).fail(
                "the condition is not a single value"
            )
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
        b = Builder(graph, node, self.variants)
        for i in conv.params:
            if i < len(ins) and ins[i] is not None and not ins[i].is_constant:
                raise b.fail(f"input {i} ({node.input[i]!r}) must be a constant")
        first_new = len(graph.nodes)
        outs = conv.fn(b, node, *ins)
        for new in graph.nodes[first_new:]:
            for v in new.inputs:
                if v is not None and v.is_constant:
                    b.static(v)
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
    (Clip's bounds may well be infinite), are not read by any node; and a one-element fill
    may be infinite (a mask's -inf in Where(mask, scores, -inf)).
    """
    for node in nodes:
        for v in node.inputs:
            if v is None or not v.is_constant or v.data.dtype.kind != "f":
                continue
            finite = ~np.isnan(v.data) if v.data.size == 1 else np.isfinite(v.data)
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
        copy = ReshapeAttrs((0,) * len(value.shape))  # every dimension as it is
        value = graph.add("Reshape", [value], copy, name=name).outputs[0]
    graph.rename(value, name)
    return value


def _graph_input(
    graph: Graph, inp: onnx.ValueInfoProto, pins, reference: int, fixed_batch: bool = False
) -> Value:
    """Declare a graph input: its batch axis (see `_dims`) at 1, fixed there when
    `fixed_batch`; every other symbolic dimension a symbol of the graph (shared by name
    across inputs) at `reference`."""
    t = inp.type.tensor_type
    dtype = INPUT_DTYPES.get(t.elem_type)
    if dtype is None:
        kind = onnx.TensorProto.DataType.Name(t.elem_type)
        raise FrontendError(
            f"input {inp.name!r} is {kind}; dlcc compiles float32 inputs, int32/int64 ids "
            "and bool masks"
        )
    dims, batch = _dims(inp, pins)
    symbols = {
        i: d if d != BATCH_SYMBOL else f"{BATCH_SYMBOL}_"
        for i, d in enumerate(dims)
        if isinstance(d, str) and i != batch
    }
    shape = tuple(1 if i == batch else reference if i in symbols else d for i, d in enumerate(dims))
    try:
        return graph.add_input(inp.name, shape, None if fixed_batch else batch, dtype, symbols)
    except DlccError as e:
        raise FrontendError(str(e)) from None


def _dims(inp: onnx.ValueInfoProto, pins) -> tuple[list[int | str], int | None]:
    """An input's dimensions (a name for each symbolic one: its dim_param, or input_axis
    where that is empty or no name, like "?"; a negative size, as some exporters write,
    is symbolic too) after `pins`, and its batch axis: the symbolic
    dimension named like a batch (batch, N, B), else axis 0 when it is symbolic."""
    dims: list[int | str] = [
        d.dim_value
        if d.HasField("dim_value") and d.dim_value >= 0
        else d.dim_param
        if d.dim_param.isidentifier()
        else f"{inp.name}_{i}"
        for i, d in enumerate(inp.type.tensor_type.shape.dim)
    ]
    if pins is not None:
        if len(pins) != len(dims):
            raise FrontendError(
                f"--shape {inp.name}: {len(pins)} dimensions for an input of rank {len(dims)}"
            )
        dims = [d if p is None else p for d, p in zip(dims, pins)]
    symbolic = [i for i, d in enumerate(dims) if isinstance(d, str)]
    named = [i for i in symbolic if dims[i].lower() in ("n", "b") or "batch" in dims[i].lower()]
    batch = (named or [i for i in symbolic if i == 0] or [None])[0]
    return dims, batch


def _has_free_symbols(model: onnx.ModelProto, shapes: dict) -> bool:
    """Whether some input has a symbolic dimension besides its batch that `shapes` leaves
    symbolic: another reference value could then help."""
    for inp in model.graph.input:
        dims, batch = _dims(inp, shapes.get(inp.name))
        if any(isinstance(d, str) and i != batch for i, d in enumerate(dims)):
            return True
    return False


def _foldable(node: onnx.NodeProto, ins: list[Value | None]) -> bool:
    if node.op_type in ("Shape", "Size"):
        return ins[0] is not None
    return all(v is None or v.is_constant for v in ins)


class _Folder:
    """Evaluates constant nodes with onnx's reference implementation of each op."""

    def __init__(self, opset: int) -> None:
        self.opset = opset

    def run(self, node: onnx.NodeProto, feeds: dict) -> list[np.ndarray]:
        """The node's outputs given its input arrays by name (a shape for Shape and Size)."""
        if node.op_type in ("Shape", "Size"):
            shape = np.array(feeds[node.input[0]], dtype=np.int64)
            if node.op_type == "Size":
                return [np.array(np.prod(shape), dtype=np.int64)]
            attrs = {a.name: a.i for a in node.attribute}
            return [shape[attrs.get("start", 0) : attrs.get("end", len(shape))]]
        # Imported here: onnx.reference is ~12 MB resident that a model without constant
        # nodes (beyond Shape and Size) never needs.
        from onnx.reference import ReferenceEvaluator

        try:
            outs = ReferenceEvaluator(node, opsets={"": self.opset}).run(None, feeds)
        except Exception as e:
            raise FrontendError(
                f"node {node.name or node.output[0]!r} ({node.op_type}): constant folding "
                f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        return [np.asarray(o) for o in outs]
