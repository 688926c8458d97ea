"""Integer lowering: the ops that run on int8 values, per DESIGN.md's numerics contract.

    Dense/Conv   acc = x_q @ W_q (int32);  y_q = lut[requantize(acc + b_q, m, k)]
                 b_q = round(b / (s_w s_x)) (int32),  m / 2^k = s_w s_x / s_y  per channel
                 (per layer for a codebook); a Relu that keeps the scale needs no table.
                 An output the quantize pass left float (a graph output, or one only float
                 ops read): y = act((acc + b_q) * s_w s_x), no int8 rounding of it
    MaxPool, GlobalMaxPool, Reshape, Flatten, Transpose, Relu, Slice, Gather
                 the same kernel on int8 values (the output keeps the input's scale)
    Sigmoid, Tanh, LeakyRelu, Clip
                 y_q = lut[x_q], a 256-entry table from the input to the output scale

A node runs here when its operands have int8 scales (set by the quantize pass with
calibration data) and, for matrix ops, its weight is int8; everything else stays float32.
"""

from __future__ import annotations

import numpy as np

from dlcc.codegen import F32, I8, Emitter, channel_view, matrix_instruction
from dlcc.formats import isa
from dlcc.ir import Node
from dlcc.runtime.kernels import code_of, get_kernel
from dlcc.runtime.kernels.quant import build_lut, quantize_multiplier, round_half_up


def emit(e: Emitter, node: Node, act: Node | None) -> bool:
    """Emit `node` (with its fused activation `act`) on the integer path if it can run there."""
    kernel = get_kernel(node.op)
    if kernel.int8 == "matrix":
        x, w = node.inputs[:2]
        if w.encoding.int8 and x.scale is not None:
            _matrix(e, node, act)
            return True
        return False
    x = node.inputs[0]
    if x is None or x.is_constant or not e.has(x, I8):
        return False
    y = node.outputs[0]
    if kernel.int8 == "same" and y.scale == x.scale:
        ins = (isa.Operand("UB", e.read(x, I8)),) + tuple(e.operand(v) for v in node.inputs[1:])
        e.program.append(isa.Vector(code_of(node.op), ins, (e.write(y, I8),), e.attr(node.attrs)))
        return True
    if kernel.int8 == "table" and y.scale is not None:
        table = e.derived(f"{node.name}.lut", _table(node, x.scale, y.scale))
        ins = (isa.Operand("UB", e.read(x, I8)), isa.Operand("WEIGHTS", table))
        e.program.append(isa.Vector(code_of("Lut"), ins, (e.write(y, I8),)))
        return True
    return False


def _matrix(e: Emitter, node: Node, act: Node | None) -> None:
    x, w, b = (node.inputs + [None])[:3]
    out = (act or node).outputs[0]
    s_w = np.asarray(w.encoding.scales, np.float64)  # per channel, or one (a codebook)
    s_acc = s_w * x.scale  # the real value of one accumulator unit
    s_pre = node.outputs[0].scale
    acc = e.new_buffer(node.outputs[0], "int32")
    e.program.append(isa.ReadWeights(e.tensor(w, integer=True)))
    e.program.append(matrix_instruction(e, node, e.read(x, I8), acc))
    bias = isa.NO_TENSOR
    if b is not None:
        b_q = round_half_up(b.data.astype(np.float64) / s_acc).astype(np.int32)
        bias = e.derived(f"{b.name}.int32", channel_view(node, b_q))
    function = code_of(act.op) if act is not None else isa.NONE
    if out.scale is None or s_pre is None:  # float out: dequantize the accumulators
        scales = e.derived(f"{node.name}.dequant", channel_view(node, s_acc.astype(np.float32)))
        attrs = e.attr(act.attrs) if act is not None else 0
        e.program.append(isa.Activate(acc, e.write(out, F32), bias, function, attrs, scales))
        return
    mult, shift = quantize_multiplier(s_acc / s_pre)
    requant = e.derived(f"{node.name}.requant", channel_view(node, np.stack([mult, shift])))
    table = isa.NO_TENSOR
    if act is not None and not (act.op == "Relu" and out.scale == s_pre):
        table = e.derived(f"{act.name}.lut", _table(act, s_pre, out.scale))
    e.program.append(isa.Activate(acc, e.write(out, I8), bias, function, 0, requant, table))


def _table(node: Node, s_in: float, s_out: float) -> np.ndarray:
    """The 256-entry int8 table of `node`'s activation between two scales."""
    kernel = get_kernel(node.op)
    return build_lut(lambda x: kernel.fn(node.attrs, x), s_in, s_out)
