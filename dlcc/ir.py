"""The graph IR: values, nodes and the graph that orders them.

A `Graph` is an ordered list of `Node`s over `Value`s. A value knows its producer and its
uses; mutation goes through a few graph methods (`add`, `replace_all_uses`, `remove`) so the
links stay consistent. Ops are the canonical set of `dlcc.runtime.kernels`; each node carries
that op's frozen attribute dataclass, and output shapes come from the kernel's shape function.

Dimensions may be symbolic in any position: the batch `N` and the graph's other symbols
(`Graph.symbols`: an image's width, a sequence length), each with a reference value the
compile chose (the batch's is 1). `Value.shape` is the shape at that reference binding. Each
value also carries its shape at every probe binding (`Value.probes`: the same binding with one
symbol doubled), so no op needs a symbolic rule of its own: a dimension that moves with symbol
S and equals it is labelled S, one that moves otherwise (a strided conv's output width, the
batch folded into the time steps) is labelled "?" (derived), and `Value.batch_axis` is the
axis labelled N. The runtime binds the symbols from the actual inputs and infers every shape
again from the op records.

Each op's attribute domain and shape preconditions are its kernel's (the attribute dataclass
and the shape function raise ValueError); `Graph.add` reports them naming the node.
`Graph.verify` adds what holds for every value: no dimension below 1, at most `MAX_ELEMENTS`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import numpy as np

from dlcc.encoding import DENSE, Encoding
from dlcc.errors import DlccError
from dlcc.runtime.kernels import get_kernel

Shape = tuple[int, ...]
BATCH = "N"  # the batch symbol: probe 0 of every graph, reference value 1
DERIVED = "?"  # the label of a dimension computed from symbols

# The most elements a tensor may hold at batch 1: 2**31 - 1, 8 GiB of float32. Flat indices
# then fit int32 and any index times a stride (< 2**31, the kernels' MAX_GEOMETRY) fits int64;
# the largest tensor of VGG-19 (fc6's weight, 103M elements) is 20x smaller. It bounds every
# dimension too: a 2**40 dimension is an exporter's bug or a hostile file, not a model.
MAX_ELEMENTS = 2**31 - 1


@dataclasses.dataclass(eq=False)
class Value:
    """A tensor: a graph input, a node output, or a constant (weight) with `data`."""

    name: str
    shape: Shape
    batch_axis: int | None = None
    dtype: str = "float32"
    data: np.ndarray | None = None
    encoding: Encoding = DENSE
    scale: float | None = None  # int8 activation scale (real = q * scale), set by quantize
    probes: tuple[Shape, ...] = ()  # the shape at each probe binding; () when static
    labels: tuple[str, ...] = ()  # per axis: "" static, a symbol, DERIVED; () when static
    producer: Node | None = dataclasses.field(default=None, repr=False)
    uses: list[tuple[Node, int]] = dataclasses.field(default_factory=list, repr=False)

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def plain_dtype(self) -> str:
        """The dtype it computes in unquantized: float32 for a float of any width (a weight
        before encoding, a float64 test graph), else its own integer type."""
        return "float32" if self.dtype.startswith("float") else self.dtype

    def shape_at(self, probe: int | None) -> Shape:
        """The shape at probe binding `probe` (None: the reference binding)."""
        return self.shape if probe is None or not self.probes else self.probes[probe]

    @property
    def free_axes(self) -> tuple[int, ...]:
        """The axes whose dimension is symbolic (bound at run time)."""
        return tuple(i for i, label in enumerate(self.labels) if label)

    def dims(self) -> str:
        """Readable shape, symbolic dimensions by name: `N×3×48×W`, `N×32×12×?`."""
        labels = self.labels or ("",) * len(self.shape)
        shown = [label or str(d) for d, label in zip(self.shape, labels)]
        return "×".join(shown) or "scalar"


@dataclasses.dataclass(eq=False)
class Node:
    """One op application: `outputs = op[attrs](inputs)`; absent optional inputs are None."""

    op: str
    attrs: Any
    inputs: list[Value | None]
    outputs: list[Value]
    name: str

    def __str__(self) -> str:
        outs = ", ".join(f"%{v.name}: {v.dims()}" for v in self.outputs)
        ins = ", ".join("_" if v is None else f"%{v.name}" for v in self.inputs)
        fields = dataclasses.asdict(self.attrs) if dataclasses.is_dataclass(self.attrs) else {}
        attrs = "".join(f" {k}={v}" for k, v in fields.items())
        return f"{outs} = {self.op}({ins}){attrs}  # {self.name}"


class Graph:
    """An ordered, verified sequence of nodes with named inputs, outputs and constants."""

    def __init__(self, name: str = "graph") -> None:
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        self.symbols: list[tuple[str, int]] = [(BATCH, 1)]  # (name, reference): the probes
        self._names: dict[str, set[str]] = {"value": set(), "node": set()}

    # -- construction -------------------------------------------------------------------
    def unique(self, name: str, kind: str = "value") -> str:
        """A value (or node) name not used yet in this graph, derived from `name`."""
        taken = self._names[kind]
        candidate = name
        for i in itertools.count(1):
            if candidate not in taken:
                taken.add(candidate)
                return candidate
            candidate = f"{name}_{i}"
        raise AssertionError("unreachable")

    def rename(self, value: Value, name: str) -> None:
        """Give `value` the name `name` (made unique)."""
        self._names["value"].discard(value.name)
        value.name = self.unique(name)

    def add_input(
        self,
        name: str,
        shape: Shape,
        batch_axis: int | None,
        dtype: str = "float32",
        symbols: dict[int, str] | None = None,
    ) -> Value:
        """Declare a graph input (float32, or integer ids and indices). `symbols` names its
        other symbolic axes; their reference values are `shape`'s (inputs sharing a symbol
        agree on it). Inputs are declared before any node."""
        labels = [""] * len(shape)
        if batch_axis is not None:
            labels[batch_axis] = BATCH
        for axis, symbol in (symbols or {}).items():
            labels[axis] = symbol
        for axis, symbol in enumerate(labels):
            if symbol:
                self._symbol(symbol, shape[axis], name)
        value = Value(self.unique(name), tuple(shape), batch_axis, dtype)
        if any(labels):
            value.labels = tuple(labels)
        self.inputs.append(value)
        for v in self.inputs:  # a new symbol adds a probe to every input
            if v.labels:
                v.probes = tuple(
                    tuple(2 * d if label == symbol else d for d, label in zip(v.shape, v.labels))
                    for symbol, _ in self.symbols
                )
        return value

    def _symbol(self, symbol: str, reference: int, where: str) -> None:
        known = dict(self.symbols)
        if symbol == BATCH and reference != 1:
            raise DlccError(f"input {where!r}: the batch axis holds {reference} at batch 1")
        if known.get(symbol, reference) != reference:
            raise DlccError(
                f"input {where!r}: symbol {symbol!r} is {reference} here, {known[symbol]} elsewhere"
            )
        if symbol not in known:
            if self.nodes:
                raise DlccError(f"input {where!r}: symbols are declared before any node")
            self.symbols.append((symbol, reference))

    def constant(self, name: str, data: np.ndarray, encoding: Encoding = DENSE) -> Value:
        """A new constant (weight) value holding `data`, to be stored as `encoding`."""
        data = np.asarray(data)  # not ascontiguousarray: it would make a scalar 1-D
        if not data.flags.c_contiguous:
            data = data.copy(order="C")
        return Value(self.unique(name), data.shape, None, str(data.dtype), data, encoding)

    def add(
        self,
        op: str,
        inputs: list[Value | None],
        attrs: Any = None,
        name: str | None = None,
        index: int | None = None,
    ) -> Node:
        """Append (or insert at `index`) a node; its outputs' shapes are inferred."""
        kernel = get_kernel(op)
        attrs = kernel.attrs() if attrs is None else attrs
        node_name = self.unique(name or op.lower(), "node")
        shapes = infer_shapes(op, attrs, inputs, node_name, self.symbols)
        try:  # the op record's dtype rule, the one the verifier applies to the bundle
            dtype = kernel.dtype(attrs, *(None if v is None else v.plain_dtype for v in inputs))
        except ValueError as e:
            raise DlccError(f"node {node_name!r} ({op}): {e}") from None
        outputs = []
        for i, (shape, probes, labels, batch) in enumerate(shapes):
            value_name = self.unique(node_name if len(shapes) == 1 else f"{node_name}:{i}")
            outputs.append(Value(value_name, shape, batch, dtype, probes=probes, labels=labels))
        node = Node(op, attrs, list(inputs), outputs, node_name)
        for v in outputs:
            v.producer = node
        for i, v in enumerate(inputs):
            if v is not None:
                v.uses.append((node, i))
        self.nodes.insert(len(self.nodes) if index is None else index, node)
        return node

    # -- mutation -----------------------------------------------------------------------
    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every user of `old` (and the graph outputs) use `new` instead."""
        for node, i in old.uses:
            node.inputs[i] = new
            new.uses.append((node, i))
        old.uses = []
        self.outputs = [new if v is old else v for v in self.outputs]

    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        """Make input `index` of `node` be `value`, keeping both values' uses right."""
        old = node.inputs[index]
        if old is not None:
            old.uses = [(n, j) for n, j in old.uses if not (n is node and j == index)]
        node.inputs[index] = value
        if value is not None:
            value.uses.append((node, index))

    def replace_weight(self, node: Node, index: int, data: np.ndarray, encoding: Encoding) -> Value:
        """Give input `index` of `node` new constant data; it keeps the old name if unshared."""
        old = node.inputs[index]
        new = self.constant(old.name, data, encoding)
        self.set_input(node, index, new)
        if not old.uses:
            self._names["value"].discard(new.name)
            new.name = old.name
            self._names["value"].add(old.name)
        return new

    def reinfer(self) -> None:
        """Recompute every node's output shapes in order (after a pass changed a shape)."""
        for node in self.nodes:
            inferred = infer_shapes(node.op, node.attrs, node.inputs, node.name, self.symbols)
            for value, result in zip(node.outputs, inferred):
                value.shape, value.probes, value.labels, value.batch_axis = result

    def remove(self, node: Node) -> None:
        """Remove a node whose outputs are unused; refuses to drop a used value."""
        for v in node.outputs:
            if v.uses or v in self.outputs:
                raise DlccError(f"cannot remove node {node.name!r}: {v.name!r} is still used")
        for i, v in enumerate(node.inputs):
            if v is not None:
                v.uses = [(n, j) for n, j in v.uses if not (n is node and j == i)]
        self.nodes.remove(node)

    # -- queries ------------------------------------------------------------------------
    def constants(self) -> list[Value]:
        """Constant values used by nodes, in order of first use."""
        seen: dict[int, Value] = {}
        for node in self.nodes:
            for v in node.inputs:
                if v is not None and v.is_constant:
                    seen.setdefault(id(v), v)
        return list(seen.values())

    def verify(self) -> None:
        """Check links and order (inputs defined before use, uses recorded) and every shape."""
        for v in self.inputs:
            check_shape(v, f"input {v.name!r}")
        defined = {id(v) for v in self.inputs}
        for node in self.nodes:
            for i, v in enumerate(node.inputs):
                if v is None:
                    continue
                if v.is_constant:
                    check_shape(v, f"node {node.name!r} ({node.op}): weight {v.name!r}")
                elif id(v) not in defined:
                    raise DlccError(f"IR: node {node.name!r} uses {v.name!r} before definition")
                if not any(n is node and j == i for n, j in v.uses):
                    raise DlccError(f"IR: use of {v.name!r} by {node.name!r} is not recorded")
            for v in node.outputs:
                if v.producer is not node:
                    raise DlccError(f"IR: {v.name!r} does not know its producer {node.name!r}")
                check_shape(v, f"node {node.name!r} ({node.op}): output {v.name!r}")
                defined.add(id(v))
        for v in self.outputs:
            if id(v) not in defined:
                raise DlccError(f"IR: graph output {v.name!r} is not computed")

    def __str__(self) -> str:
        ins = ", ".join(f"%{v.name}: {v.dims()}" for v in self.inputs)
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        body = "\n".join(f"  {n}" for n in self.nodes)
        return f"graph {self.name}({ins}) -> ({outs}) {{\n{body}\n}}"


def sample_axis(shape: Shape, batch_axis: int | None) -> int | None:
    """The axis data samples stack along: the batch axis, or axis 0 of a static shape that
    holds one sample there (a model exported at batch 1, fed one sample at a time)."""
    if batch_axis is not None:
        return batch_axis
    return 0 if shape and shape[0] == 1 else None


def check_shape(value: Value, what: str) -> None:
    """Refuse a zero-size (or negative) dimension, or more than MAX_ELEMENTS elements."""
    if any(d < 1 for d in value.shape):
        kind = "zero-size" if 0 in value.shape else "negative"
        raise DlccError(f"{what} has a {kind} dimension ({value.dims()})")
    count = math.prod(value.shape)
    if count > MAX_ELEMENTS:
        raise DlccError(
            f"{what} has {count} elements ({value.dims()}); dlcc allows {MAX_ELEMENTS} per tensor"
        )


def infer_shapes(
    op: str, attrs: Any, inputs: list[Value | None], where: str, symbols: list[tuple[str, int]]
) -> list[tuple[Shape, tuple[Shape, ...], tuple[str, ...], int | None]]:
    """Per output of `op`: (shape, probes, labels, batch axis), by the op record's shape
    function at the reference binding and, for symbolic inputs, at every probe."""
    kernel = get_kernel(op)

    def at(probe: int | None) -> tuple[Shape, ...]:
        shapes = [None if v is None else v.shape_at(probe) for v in inputs]
        try:
            return tuple(tuple(int(d) for d in s) for s in kernel.shape(attrs, *shapes))
        except (ValueError, IndexError, ZeroDivisionError) as e:
            binding = "" if probe is None else f" (at {symbols[probe][0]}={2 * symbols[probe][1]})"
            raise DlccError(
                f"node {where!r} ({op}): bad input shapes {shapes}{binding}: {e}"
            ) from None

    reference = at(None)
    if not any(v is not None and v.probes for v in inputs):
        return [(shape, (), (), None) for shape in reference]
    probes = list(zip(*(at(i) for i in range(len(symbols)))))
    result = []
    for shape, moved in zip(reference, probes):
        if any(len(s) != len(shape) for s in moved):
            raise DlccError(f"node {where!r} ({op}): the output rank depends on the symbols")
        if all(s == shape for s in moved):
            result.append((shape, (), (), None))
            continue
        labels = tuple(_label(axis, shape, moved, symbols) for axis in range(len(shape)))
        batch = labels.index(BATCH) if labels.count(BATCH) == 1 else None
        result.append((shape, tuple(moved), labels, batch))
    return result


def _label(axis: int, shape: Shape, moved: tuple[Shape, ...], symbols) -> str:
    """ "" if the dimension stays at every probe, the symbol it equals, else DERIVED."""
    changed = [i for i, s in enumerate(moved) if s[axis] != shape[axis]]
    if not changed:
        return ""
    (name, reference), i = symbols[changed[0]], changed[0]
    exact = len(changed) == 1 and (shape[axis], moved[i][axis]) == (reference, 2 * reference)
    return name if exact else DERIVED
