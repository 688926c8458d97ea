"""Export a bundle as a standard ONNX model: a view of the bundle, which stays the truth.

    float   weights decoded to float32 (pruning, sharing and int8 rounding kept in the values);
            an int8 activation is its real value on the int8 grid, q * s with
            q = clip(floor(x / s + 1/2), -127, 127) as float ops, so onnxruntime answers as
            `dlcc run` does on the integer path, within float rounding
    qdq     int8 weights behind DequantizeLinear at their per-channel scales, int8 activations
            through QuantizeLinear / DequantizeLinear at the bundle's scales: onnxruntime fuses
            them into its int8 kernels (QLinearConv, QGemm)

    READ_HOST, WRITE_HOST         graph inputs and outputs (names and symbolic dims kept)
    MATRIX_MULTIPLY + ACTIVATE    Gemm (2-D input) or MatMul + Add, with the Activate's bias
    CONVOLVE + ACTIVATE           Conv with the Activate's bias
    ACTIVATE requantize, table    round to the pre-activation's grid, the function, round to
                                  the output's grid (the table computes the function)
    VECTOR f                      the op record's ONNX op, its typed attributes as ONNX
                                  attributes, or as inputs where ONNX takes them so
    VECTOR Quantize, Dequantize   round to the grid, nothing (qdq: QuantizeLinear, nothing)
    VECTOR Lut                    Gather(table, q + 128): the table's function is not recorded

An integer layer's weight scales are not stored (its program needs only s_w s_x / s_y): they
are s_w = s_acc / s_x, s_acc from its Activate's requantization (float scales, or m / 2^k
times the pre-activation scale). That scale is the output's when no table follows; a table
fixes it only up to an interval (every scale in it builds the same table), whose geometric
middle is taken.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dlcc import __version__
from dlcc.errors import DlccError
from dlcc.formats import isa
from dlcc.runtime.kernels import kernel_at
from dlcc.runtime.kernels.quant import ScaleAttrs, build_lut, quantize
from dlcc.runtime.loader import LoadedBundle
from dlcc.runtime.verifier import function_name

OPSET = 20  # Gelu is an ONNX op from 20; Resize axes and Reduce* axes inputs from 18
FORMATS = ("float", "qdq")
F32 = np.float32
NO = isa.NO_TENSOR


def to_model(bundle: LoadedBundle, format: str = "float") -> onnx.ModelProto:  # noqa: A002
    """The ONNX model (opset 20) that is `bundle`'s view in `format` ("float" or "qdq")."""
    check_format(format)
    graph = _Exporter(bundle, format == "qdq").graph()
    opsets = [helper.make_opsetid("", OPSET)]
    ir_version = helper.find_min_ir_version_for(opsets)
    model = helper.make_model(graph, opset_imports=opsets, ir_version=ir_version)
    model.producer_name, model.producer_version = "dlcc", __version__
    meta = bundle.file.meta
    props = {"format": format, "source": meta.get("source"), "pipeline": meta.get("pipeline")}
    helper.set_model_props(model, {k: str(v) for k, v in props.items() if v is not None})
    if model.ByteSize() >= 2**31:
        raise DlccError(f"{bundle.path}: the export exceeds protobuf's 2 GiB limit")
    onnx.checker.check_model(model, full_check=True)  # a failure here is a bug of this module
    return model


def check_format(format: str) -> None:  # noqa: A002
    """DlccError unless `format` is an export format."""
    if format not in FORMATS:
        raise DlccError(f"export format {format!r}: expected one of {', '.join(FORMATS)}")


def io_dims(file, record) -> list[int | str | None]:
    """Per axis of a buffer of `file`: its size, the symbol's name where it varies with the
    inputs, or None where it is computed from them (an unnamed ONNX dim). The one place that
    reads how a BufferRecord spells its symbolic dimensions."""
    if hasattr(record, "labels"):
        labels = record.labels(getattr(file, "symbols", ["N"]))
    else:
        labels = ["N" if i == record.batch_axis else "" for i in range(len(record.shape))]
    return [None if label == "?" else label or d for d, label in zip(record.shape, labels)]


@dataclasses.dataclass(frozen=True)
class _Layer:
    """The scales of an integer matrix layer: one per output channel, or one."""

    acc: np.ndarray  # real value of one accumulator unit, s_w * s_x (shaped as the bias)
    weight: np.ndarray  # s_w, 1-D
    pre: float | None  # the requantized pre-activation's scale (None: float out)


class _Exporter:
    """Walks the program once, keeping per buffer the ONNX tensor of its real value (and, in
    qdq, of its int8 value) and emitting the nodes that compute them."""

    def __init__(self, bundle: LoadedBundle, qdq: bool) -> None:
        self.bundle, self.file, self.qdq = bundle, bundle.file, qdq
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.consts: dict[tuple, str] = {}
        self.used = {name for name, _ in self.file.inputs + self.file.outputs}
        self.host_out = {buf: name for name, buf in reversed(self.file.outputs)}
        self.real: dict[int, str] = {}  # buffer -> tensor of its real (float) value
        self.int8: dict[int, str] = {}  # qdq: int8 buffer -> tensor of its int8 value
        self.biased: set[int] = set()  # accumulators whose matrix node added the bias
        self.layers = _integer_layers(bundle)
        self.readers: dict[int, list[int]] = {}
        for k, instr in enumerate(self.file.program):
            for b in isa.reads(instr):
                self.readers.setdefault(b, []).append(k)

    def graph(self) -> onnx.GraphProto:
        fifo: deque[int] = deque()
        for k, instr in enumerate(self.file.program):
            self.k = k
            if isinstance(instr, isa.ReadHost):
                self.real[instr.dst] = self.file.inputs[instr.input][0]
            elif isinstance(instr, isa.ReadWeights):
                fifo.append(instr.tensor)
            elif isinstance(instr, isa.MatrixMultiply | isa.Convolve):
                if instr.accumulate:
                    self.unmapped("ONNX has no accumulating matrix product")
                self.matrix(instr, fifo.popleft())
            elif isinstance(instr, isa.Activate):
                self.activate(instr)
            elif isinstance(instr, isa.Vector):
                self.vector(instr)
            elif isinstance(instr, isa.WriteHost):
                name, value = self.file.outputs[instr.output][0], self.value(instr.src)
                if value != name:
                    self.node("Identity", [value], name)
        inputs = [self.info(name, buf) for name, buf in self.file.inputs]
        outputs = [self.info(name, buf) for name, buf in self.file.outputs]
        name = self.file.meta.get("model") or "dlcc"
        return helper.make_graph(self.nodes, name, inputs, outputs, self.inits)

    def info(self, name: str, buf: int) -> onnx.ValueInfoProto:
        record = self.file.buffers[buf]
        dtype = helper.np_dtype_to_tensor_dtype(np.dtype(record.dtype))
        return helper.make_tensor_value_info(name, dtype, io_dims(self.file, record))

    # -- instructions ------------------------------------------------------------------------
    def matrix(self, instr, tensor: int) -> None:
        """Conv / Gemm / MatMul; the bias of the one Activate reading the result is folded in."""
        layer = self.layers.get(instr.dst)
        inputs = [self.value(instr.src), self.matrix_weight(tensor, layer)]
        readers = self.readers.get(instr.dst, [])
        act = self.file.program[readers[0]] if len(readers) == 1 else None
        act = act if isinstance(act, isa.Activate) else None
        if act is not None and act.bias != NO:
            inputs.append(self.bias(act.bias, layer, flat=True))
            self.biased.add(instr.dst)
        plain = act is not None and act.function == isa.NONE and act.lut == NO
        if plain and self.file.buffers[act.dst].dtype == "float32":
            acc = self.out_name(act.dst)  # the Activate only passes the result on
        else:
            acc = self.fresh(f"acc{instr.dst}")
        if isinstance(instr, isa.Convolve):
            kernel_shape = list(self.file.tensors[tensor].shape[2:])
            fields = _fields(self.bundle.attrs[self.k])  # strides, pads, dilations, group
            self.real[instr.dst] = self.node(
                "Conv", inputs, acc, kernel_shape=kernel_shape, **fields
            )
        elif len(self.file.buffers[instr.src].shape) == 2:
            self.real[instr.dst] = self.node("Gemm", inputs, acc)
        elif len(inputs) == 3:
            product = self.node("MatMul", inputs[:2], self.fresh(f"mm{instr.dst}"))
            self.real[instr.dst] = self.node("Add", [product, inputs[2]], acc)
        else:
            self.real[instr.dst] = self.node("MatMul", inputs, acc)

    def activate(self, instr: isa.Activate) -> None:
        """bias, requantization (rounding to the pre-activation's int8 grid), function."""
        x, layer = self.value(instr.src), self.layers.get(instr.src)
        if instr.bias != NO and instr.src not in self.biased:
            x = self.node("Add", [x, self.bias(instr.bias, layer, flat=False)], self.fresh("b"))
        kernel = kernel_at(instr.function)
        if instr.lut != NO and (kernel is None or layer is None):
            self.unmapped("a lookup table whose function or scales are unknown")
        if kernel is None:
            self.define(instr.dst, x)
            return
        if layer is not None and layer.pre is not None and (self.qdq or instr.lut != NO):
            # The table reads the int8 pre-activation; in qdq, Q(Gemm) also fuses to QGemm.
            x = self.rounded(x, layer.pre)
        out = self.out_name(instr.dst)
        self.op(kernel, self.bundle.attrs[self.k], [x], [out])
        self.define(instr.dst, out)

    def vector(self, instr: isa.Vector) -> None:
        kernel, attrs = kernel_at(instr.function), self.bundle.attrs[self.k]
        dst = instr.outputs[0]
        src = instr.inputs[0].index if instr.inputs[0].memory == "UB" else None
        if kernel.op == "Quantize":
            self.define(dst, self.value(src))
        elif kernel.op == "Dequantize":
            self.real[dst] = self.value(src)
        elif kernel.op == "Lut":
            self.lookup(src, instr.inputs[1].index, dst)
        else:
            inputs = [self.operand(o, kernel.op, i) for i, o in enumerate(instr.inputs)]
            outs = [self.out_name(b) for b in instr.outputs]
            self.op(kernel, attrs, inputs, outs)
            # An int8 op keeping its input's scale (max, data movement) stays on the grid.
            scale = self.int8_scale(src) if kernel.int8 == "same" and src is not None else None
            for b, name in zip(instr.outputs, outs):
                self.define(b, name, on_grid=scale is not None and self.int8_scale(b) == scale)

    def lookup(self, src: int, table: int, dst: int) -> None:
        """y_q = table[q + 128]; the table's function is not recorded, so it is looked up."""
        t = self.bundle.weights[table]
        q = self.quantized(src) if self.qdq else self.grid(self.value(src), self.int8_scale(src))
        q = self.node("Cast", [q], self.fresh("q"), to=TensorProto.INT64)
        index = self.node("Add", [q, self.const(np.int64(128), "offset")], self.fresh("i"))
        if self.qdq:
            self.int8[dst] = self.node("Gather", [self.const(t, "lut"), index], self.fresh("y"))
        else:
            real = self.const((t.astype(np.float64) * self.int8_scale(dst)).astype(F32), "lut")
            self.real[dst] = self.node("Gather", [real, index], self.out_name(dst))

    # -- values ------------------------------------------------------------------------------
    def value(self, b: int) -> str:
        """The tensor holding buffer `b`'s real value (dequantized once, in qdq)."""
        if b not in self.real:
            self.real[b] = self.dequantize(self.int8[b], self.int8_scale(b))
        return self.real[b]

    def quantized(self, b: int) -> str:
        """qdq: the tensor holding int8 buffer `b`'s int8 value."""
        if b not in self.int8:
            self.int8[b] = self.quantize(self.real[b], self.int8_scale(b))
        return self.int8[b]

    def define(self, b: int, real: str, on_grid: bool = False) -> None:
        """Buffer `b` now holds the real value `real`; an int8 buffer's is rounded to its grid
        (qdq: QuantizeLinear), unless `real` is on it already."""
        scale = self.int8_scale(b)
        if scale is not None and self.qdq:
            self.int8[b] = self.quantize(real, scale)
        else:
            self.real[b] = real if scale is None or on_grid else self.rounded(real, scale)

    def int8_scale(self, b: int) -> float | None:
        record = self.file.buffers[b]
        return record.scale if record.dtype == "int8" else None

    def rounded(self, x: str, scale: float) -> str:
        """x on the int8 grid of `scale`, as a real value: q * scale."""
        if self.qdq:
            return self.dequantize(self.quantize(x, scale), scale)
        return self.node("Mul", [self.grid(x, scale), self.const(F32(scale), "s")], self.fresh("x"))

    def grid(self, x: str, scale: float) -> str:
        """q = clip(floor(x / scale + 1/2), -127, 127), in float: the int8 path's rounding."""
        x = self.node("Div", [x, self.const(F32(scale), "s")], self.fresh("x"))
        x = self.node("Add", [x, self.const(F32(0.5), "half")], self.fresh("x"))
        x = self.node("Floor", [x], self.fresh("x"))
        bounds = [self.const(F32(-127), "qmin"), self.const(F32(127), "qmax")]
        return self.node("Clip", [x, *bounds], self.fresh("q"))

    def quantize(self, x: str, scale: float) -> str:
        inputs = [x, self.const(F32(scale), "s"), self.const(np.int8(0), "zero")]
        return self.node("QuantizeLinear", inputs, self.fresh("q"))

    def dequantize(self, q: str, scale, axis: int = 0, dtype=np.int8) -> str:
        """x = q * scale, per tensor or (several scales) along `axis`; the zero points are
        explicit, as onnxruntime's QDQ fusions want them."""
        scale = np.asarray(scale, F32)
        scale = scale.reshape(()) if scale.size == 1 else scale
        inputs = [q, self.const(scale, "s"), self.const(np.zeros(scale.shape, dtype), "zero")]
        attrs = {"axis": axis} if scale.ndim else {}
        return self.node("DequantizeLinear", inputs, self.fresh("dq"), **attrs)

    def operand(self, o: isa.Operand, op: str, position: int) -> str:
        if o.memory == "UB":
            return self.value(o.index)
        if o.memory == "NONE":
            return ""
        data = self.bundle.weights[o.index]
        if op in ("LSTM", "GRU") and position == 4:
            data = data.astype(np.int32)  # sequence_lens: ONNX takes int32 only
        return self.const(data, self.file.tensors[o.index].name)

    def matrix_weight(self, t: int, layer: _Layer | None) -> str:
        """The weight's real value: float32, or (qdq) its int8 values behind DequantizeLinear."""
        record, w = self.file.tensors[t], self.bundle.weights[t]
        q, scales = w, None
        if w.dtype == np.int8:  # integer execution: the scales are the layer's
            if layer is None:
                self.unmapped(f"int8 weights {record.name!r} without a requantization")
            scales = layer.weight
        elif self.qdq and record.values in ("int8", "codebook"):  # weights-only int8
            scales = _stored_scales(record, self.file.data)
            if scales is not None:
                view = _channel_view(scales, record.channel_axis, w.ndim)
                q = np.clip(np.rint(w / view), -127, 127).astype(np.int8)
        if scales is None:
            return self.const(w, record.name)
        if self.qdq:
            return self.dequantize(self.const(q, record.name), scales, record.channel_axis)
        view = _channel_view(scales, record.channel_axis, w.ndim)
        return self.const((q * view).astype(F32), record.name)

    def bias(self, t: int, layer: _Layer | None, flat: bool) -> str:
        """A matrix layer's bias as a real vector (`flat`: 1-D, as Conv and Gemm take it;
        else as stored, broadcasting against the accumulators). An int32 bias counts
        accumulator units: in qdq it stays int32 behind a DequantizeLinear."""
        record, b = self.file.tensors[t], self.bundle.weights[t]
        b = b.reshape(-1) if flat else b
        if b.dtype.kind == "f":
            return self.const(b.astype(F32), record.name)
        if layer is None:
            self.unmapped(f"integer bias {record.name!r} without a requantization")
        scale = layer.acc.reshape(-1) if flat else layer.acc
        if self.qdq and flat:
            return self.dequantize(self.const(b, record.name), scale, 0, np.int32)
        return self.const((b * scale).astype(F32), record.name)

    # -- nodes -------------------------------------------------------------------------------
    def op(self, kernel, attrs, inputs: list[str], outputs: list[str]) -> None:
        """One op record's ONNX node (_ONNX_FORMS: the ops ONNX spells differently)."""
        form = _ONNX_FORMS.get(kernel.op, _same)
        if form is None or not onnx.defs.has(kernel.op):
            self.unmapped(f"{kernel.op} has no ONNX mapping")
        op, inputs, fields = form(self, kernel.op, attrs, inputs)
        unknown = sorted(set(fields) - set(onnx.defs.get_schema(op, OPSET).attributes))
        if unknown:
            self.unmapped(f"{kernel.op} attribute(s) {', '.join(unknown)} have no ONNX form")
        while inputs and inputs[-1] == "":
            inputs.pop()
        self.node(op, inputs, outputs, **fields)

    def node(self, op: str, inputs: list[str], outputs: str | list[str], **attrs) -> str:
        """Append a node (named after its op and instruction); its (first) output."""
        outputs = [outputs] if isinstance(outputs, str) else outputs
        name = self.fresh(f"{op}_{self.k}")
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
        return outputs[0]

    def const(self, array, base: str) -> str:
        """An initializer holding `array` (one per distinct value)."""
        array = np.asarray(array)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self.consts:
            self.consts[key] = self.fresh(base)
            self.inits.append(numpy_helper.from_array(array, self.consts[key]))
        return self.consts[key]

    def out_name(self, b: int) -> str:
        """The name of the tensor a buffer's producer writes: the output's, for a host output."""
        name = self.host_out.pop(b, None)
        return name if name is not None else self.fresh(f"ub{b}")

    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self.used:
            name, i = f"{base}_{i}", i + 1
        self.used.add(name)
        return name

    def unmapped(self, what: str):
        text = isa.disassemble(self.file.program[self.k], function_name).split()
        raise DlccError(
            f"{self.bundle.path}: instruction #{self.k} ({' '.join(text)}) cannot be exported: "
            f"{what}"
        )


def _channel_view(scales: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """Per-channel scales shaped to broadcast along `axis` of a rank-`rank` tensor."""
    scales = np.asarray(scales, np.float64).reshape(-1)
    if scales.size == 1 or rank == 0:
        return scales.reshape(())
    view = [1] * rank
    view[axis] = scales.size
    return scales.reshape(view)


def _stored_scales(record, data: bytes) -> np.ndarray | None:
    """The SCALES table of an int8 or int8-codebook tensor that decodes to floats."""
    for role, _, offset, length in record.blobs:
        if role == "SCALES":
            return np.frombuffer(data[offset : offset + length], "<f4").astype(F32)
    return None


# -- scales of the integer layers -----------------------------------------------------------
def _integer_layers(bundle: LoadedBundle) -> dict[int, _Layer]:
    """Per accumulator buffer of an integer matrix layer, its scales (see the module doc)."""
    file, weights = bundle.file, bundle.weights
    layers: dict[int, _Layer] = {}
    sources: dict[int, int] = {}  # accumulator -> the matrix instruction's source buffer
    for k, instr in enumerate(file.program):
        if isinstance(instr, isa.MatrixMultiply | isa.Convolve):
            sources[instr.dst] = instr.src
        if not (isinstance(instr, isa.Activate) and instr.requant != NO):
            continue
        s_x = file.buffers[sources[instr.src]].scale if instr.src in sources else None
        if s_x is None:
            continue
        requant = weights[instr.requant]
        if requant.dtype.kind == "f":
            acc, pre = requant.astype(np.float64), None
        else:
            pre = file.buffers[instr.dst].scale
            if instr.lut != NO:
                kernel = kernel_at(instr.function)
                if kernel is None:
                    continue
                fn = functools.partial(kernel.fn, bundle.attrs[k])
                pre = table_input_scale(fn, weights[instr.lut], pre)
            acc = requant[0].astype(np.float64) / np.exp2(requant[1].astype(np.float64)) * pre
        layers[instr.src] = _Layer(acc, acc.reshape(-1) / s_x, pre)  # acc: shaped as stored
    return layers


def table_input_scale(fn, table: np.ndarray, s_out: float) -> float:
    """A scale s_in with build_lut(fn, s_in, s_out) == table: the geometric middle of the
    interval of scales that build the table (or that come closest), found on a log grid and
    refined by bisection at both ends."""
    grid = np.geomspace(1e-10, 1e6, 4000)
    x = (np.arange(-128, 128, dtype=np.float64)[None, :] * grid[:, None]).astype(F32)
    misses = (quantize(ScaleAttrs(s_out), fn(x)) != table[None, :]).sum(axis=1)
    best = int(np.argmin(misses))

    def fits(s: float) -> bool:
        return np.count_nonzero(build_lut(fn, s, s_out) != table) <= misses[best]

    lo, hi = best, best
    while lo > 0 and misses[lo - 1] <= misses[best]:
        lo -= 1
    while hi < len(grid) - 1 and misses[hi + 1] <= misses[best]:
        hi += 1
    low = _boundary(fits, grid[lo - 1], grid[lo]) if lo > 0 else grid[0]
    high = _boundary(fits, grid[hi + 1], grid[hi]) if hi < len(grid) - 1 else grid[-1]
    return float(np.sqrt(low * high))


def _boundary(fits, outside: float, inside: float, steps: int = 40) -> float:
    """The last scale between `outside` (does not fit) and `inside` (fits) that fits."""
    for _ in range(steps):
        mid = np.sqrt(outside * inside)
        outside, inside = (outside, mid) if fits(mid) else (mid, inside)
    return inside


# -- op records -> ONNX nodes ---------------------------------------------------------------
# A form maps (exporter, op, typed attributes, input tensors) to (ONNX op, inputs, attributes).
# By default an op record is the ONNX op of its name with its fields as attributes; the forms
# below are the ops ONNX spells differently. None: an op with no ONNX form of its own.
def _fields(attrs, rename: dict | None = None, drop=()) -> dict:
    """The typed attributes' fields by (ONNX) name, tuples as lists; `drop`: those left out."""
    values = {f.name: getattr(attrs, f.name) for f in dataclasses.fields(attrs)}
    return {
        (rename or {}).get(k, k): list(v) if isinstance(v, tuple) else v
        for k, v in values.items()
        if k not in drop
    }


def _same(ex, op, attrs, inputs):
    return op, inputs, _fields(attrs)


def _renamed(rename: dict, drop=()):
    return lambda ex, op, attrs, inputs: (op, inputs, _fields(attrs, rename, drop))


def _as_inputs(*names: str, optional: bool = False):
    """A form whose integer fields `names` are ONNX inputs (int64), after the data inputs;
    `optional`: an empty field is an absent input (Reduce* axes: all of them)."""

    def form(ex, op, attrs, inputs):
        values = {n: getattr(attrs, n) for n in names}
        extra = [
            "" if optional and not v else ex.const(np.asarray(v, np.int64), n)
            for n, v in values.items()
        ]
        return op, inputs + extra, _fields(attrs, drop=names)

    return form


def _from_like(ex, values, sources, like: str | None, base: str) -> str:
    """An int64 vector input: values[k], or dimension sources[k] of the tensor `like` where
    sources[k] >= 0 (a size that follows a symbolic dimension): Where(from, Gather(Shape))."""
    values = np.asarray(values, np.int64)
    if like is None or all(s < 0 for s in sources):
        return ex.const(values, base)
    shape = ex.node("Shape", [like], ex.fresh(f"{base}_shape"))
    picks = ex.const(np.asarray([max(s, 0) for s in sources], np.int64), f"{base}_dims")
    dims = ex.node("Gather", [shape, picks], ex.fresh(f"{base}_like"), axis=0)
    taken = ex.const(np.asarray([s >= 0 for s in sources]), f"{base}_from")
    return ex.node("Where", [taken, dims, ex.const(values, base)], ex.fresh(base))


def _reshape(ex, op, attrs, inputs):
    """Target entries -2 - i copy dimension i of the `like` input."""
    codes = attrs.shape
    values = [d if d >= -1 else 0 for d in codes]
    sources = [-2 - d if d < -1 else -1 for d in codes]
    like = inputs[1] if len(inputs) > 1 else None
    return op, [inputs[0], _from_like(ex, values, sources, like, "shape")], {}


def _expand(ex, op, attrs, inputs):
    like = inputs[1] if len(inputs) > 1 else None
    shape = _from_like(ex, attrs.shape, attrs.shape_from or [-1] * len(attrs.shape), like, "shape")
    return op, [inputs[0], shape], {}


def _slice(ex, op, attrs, inputs):
    like = inputs[1] if len(inputs) > 1 else None
    sources = attrs.ends_from or [-1] * len(attrs.ends)
    extra = [
        ex.const(np.asarray(attrs.starts, np.int64), "starts"),
        _from_like(ex, attrs.ends, sources, like, "ends"),
        ex.const(np.asarray(attrs.axes, np.int64), "axes"),
        ex.const(np.asarray(attrs.steps, np.int64), "steps"),
    ]
    return op, [inputs[0], *extra], {}


def _range(ex, op, attrs, inputs):
    """limit = dimension `axis` of the like input, in the Range's dtype."""
    dtype = np.dtype(attrs.dtype)
    shape = ex.node("Shape", [inputs[0]], ex.fresh("range_shape"))
    axis = ex.const(np.asarray(attrs.axis, np.int64), "range_axis")
    limit = ex.node("Gather", [shape, axis], ex.fresh("range_limit"), axis=0)
    to = helper.np_dtype_to_tensor_dtype(dtype)
    limit = ex.node("Cast", [limit], ex.fresh("range_limit_cast"), to=to)
    start, delta = (
        ex.const(np.asarray(v, dtype), n)
        for v, n in ((attrs.start, "start"), (attrs.delta, "delta"))
    )
    return op, [start, limit, delta], {}


def _recurrent(ex, op, attrs, inputs):
    return op, inputs, _fields(attrs, drop=("clip",) if attrs.clip == 0 else ())


def _clip(ex, op, attrs, inputs):
    bounds = [ex.const(F32(v), "bound") if np.isfinite(v) else "" for v in (attrs.min, attrs.max)]
    return op, inputs + bounds, {}


def _pad(ex, op, attrs, inputs):
    extra = [ex.const(np.asarray(attrs.pads, np.int64), "pads")]
    if attrs.mode == "constant":
        extra.append(ex.const(F32(attrs.value), "value"))
    return op, inputs + extra, {"mode": attrs.mode}


def _resize(ex, op, attrs, inputs):
    """By the scales when every axis has one (and any size agrees with it), else by the sizes
    of the axes that change (ONNX's `axes`: the others, the batch among them, keep theirs)."""
    shape = ex.file.buffers[ex.file.program[ex.k].inputs[0].index].shape
    sizes, scales = attrs.sizes, attrs.scales
    fields = _fields(attrs, drop=("sizes", "scales"))
    if all(scales) and all(not n or F32(s) * d // 1 == n for s, d, n in zip(scales, shape, sizes)):
        return op, inputs + ["", ex.const(np.asarray(scales, F32), "scales")], fields
    axes = [i for i, d in enumerate(shape) if not (scales[i] in (0, 1) and sizes[i] in (0, d))]
    if not all(sizes[i] for i in axes):
        ex.unmapped("Resize mixing sizes and scales, which ONNX cannot")
    sizes = ex.const(np.asarray([sizes[i] for i in axes], np.int64), "sizes")
    return op, inputs + ["", "", sizes], {**fields, "axes": axes}


_ONNX_FORMS = {
    **dict.fromkeys(("Dense", "Lut", "Quantize", "Dequantize")),  # not vector functions here
    "MaxPool": _renamed({"kernel": "kernel_shape"}, drop=("count_include_pad",)),
    "AveragePool": _renamed({"kernel": "kernel_shape"}),
    "Transpose": lambda ex, op, a, i: (op, i, _fields(a, drop=() if a.perm else ("perm",))),
    "Reshape": _reshape,
    "Expand": _expand,
    "Tile": _as_inputs("repeats"),
    "Slice": _slice,
    "Range": _range,
    "Split": _as_inputs("sizes"),
    "Clip": _clip,
    "Pad": _pad,
    "Resize": _resize,
    "LSTM": _recurrent,
    "GRU": _recurrent,
    **{
        f"Reduce{op}": _as_inputs("axes", optional=True)
        for op in ("Mean", "Max", "Min", "Sum", "L2", "Prod")
    },
}
