"""int8 quantization per the numerics contract of DESIGN.md.

    W[c] -> round(W[c] / s[c]) * s[c],  s[c] = max|W[c]| / 127   per output channel c
                                        (along the axis the op record declares; every weight)
    codebook -> round(C / s) * s,       s = max|C| / 127          per layer (k-means shared)
    activation x -> scale s_x = bound(|x|) / 127 from calibration data (minmax or percentile),
                    for the values an int8 op reads (int8_reader); the others, the graph's
                    outputs among them, stay float32: a matrix layer dequantizes its int32
                    accumulators into them (int8 logits would tie: 41 of 10k MNIST test
                    images on the retrained LeNet-300-100, +0.11 points of error)

With calibration data the activations get per-tensor scales and codegen emits the integer
program (int8 x int8 -> int32 accumulators, int32 bias, requantization, lookup-table
activations). Without it, only the weights are quantized (and the biases, per tensor) and
the compile says so. A weight of an op without an int8 kernel (LSTM, GRU, ConvTranspose, a
Gather's table) is stored int8 all the same and decoded to float32 at load: its bytes shrink,
its op computes in float.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph, Node
from dlcc.passes.calibrate import activation_ranges
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    matrix_layers,
    node_weights,
    option,
    register_pass,
    weight_layers,
    weights,
)
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.quant import QMAX, round_half_up


def int8_reader(op: str) -> bool:
    """Whether `op` reads int8 values on the integer path (dlcc/lowering_int8.py)."""
    return get_kernel(op).int8 is not None


@register_pass
class Quantize(Pass):
    name = "quantize"
    summary = "int8: weights per output channel (codebooks per layer), activations per tensor"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        method: str = option(
            "minmax", "activation range from calibration data", choices=("minmax", "percentile")
        )
        percentile: float = option(
            99.99, "with method=percentile: the |x| percentile kept", 50.0, 100.0
        )
        batch: int = option(64, "calibration batch size", 1, 4096)

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        layers = []
        for weight in weights(graph):
            w = weight.value
            if w.encoding.codebook is not None:
                data, encoding = _quantize_codebook(w.data, w.encoding)
            else:
                data, encoding = _quantize_channels(w.data, w.encoding, weight.channel_axis)
            graph.replace_weight(weight.node, weight.index, data, encoding)
            error = _max_difference(data, w.data)
            layers.append(
                {
                    "layer": weight.label,
                    "params": int(w.data.size),
                    "bits": 8,
                    "scales": len(encoding.scales),
                    "max_abs_error": error,
                }
            )
        float_ops = [n for n in weight_layers(graph) if get_kernel(n.op).int8 != "matrix"]
        _quantize_biases(graph, float_ops)  # they compute in float32 with or without data
        if ctx.calibration is None:
            _quantize_biases(graph, matrix_layers(graph))
            ctx.notes.append(
                "quantize: no calibration data (--calib): weights and biases are "
                "int8, activations stay float32"
            )
            return {"layers": layers, "activations": 0}
        bounds = activation_ranges(
            graph, ctx.calibration, options.method, options.percentile, options.batch, ctx.progress
        )
        for value in graph.inputs + [v for n in graph.nodes for v in n.outputs]:
            if value.plain_dtype == "float32":  # integer ids keep their values
                value.scale = max(bounds.get(id(value), 0.0), 1e-8) / QMAX
        for node in graph.nodes:
            if get_kernel(node.op).int8 == "same":
                node.outputs[0].scale = node.inputs[0].scale
        bumped = _fit_biases(graph)
        if bumped:
            ctx.notes.append(
                f"quantize: the input scale of {', '.join(bumped)} was raised so that the "
                "int32 bias fits (the calibration data left the input near zero)"
            )
        for node in graph.nodes:
            for value in node.outputs:
                if value in graph.outputs or not any(int8_reader(u.op) for u, _ in value.uses):
                    value.scale = None
        ctx.notes.append(
            f"quantize: int8 activations, per-tensor {options.method} scales "
            "from the calibration data"
        )
        return {"layers": layers, "activations": len(bounds)}


def _fit_biases(graph: Graph) -> list[str]:
    """Raise a matrix layer's input scale where its bias in accumulator units (s_w * s_x)
    would overflow int32 (an input the calibration data left at ~0 gets a tiny scale); the
    layers changed, by name."""
    bumped = []
    for node in matrix_layers(graph):
        x, b = node.inputs[0], node.inputs[2] if len(node.inputs) > 2 else None
        if x.scale is None or b is None or not b.is_constant:
            continue
        s_w = np.asarray(node.inputs[1].encoding.scales, np.float64)
        units = np.abs(b.data).astype(np.float64).reshape(-1) / (s_w * x.scale)
        if units.max(initial=0.0) > INT32_HEADROOM:
            x.scale = float((np.abs(b.data).reshape(-1) / s_w).max() / INT32_HEADROOM)
            bumped.append(node.name)
    return bumped


INT32_HEADROOM = 2.0**30  # a bias in accumulator units stays below this (products add to it)


def symmetric_int8(x: np.ndarray, max_abs) -> tuple[np.ndarray, np.ndarray]:
    """(x rounded to int8 steps, in x's dtype; the scales s = max_abs / 127, 1 where 0).

    x -> clamp(round_half_up(x / s), -127, 127) * s; `max_abs` broadcasts against x
    (a scalar per tensor, or keepdims maxima per channel).
    """
    s = np.where(max_abs > 0, np.asarray(max_abs) / QMAX, 1.0).astype(np.float32)
    return (np.clip(round_half_up(x / s), -QMAX, QMAX) * s).astype(x.dtype), s


def _quantize_channels(w: np.ndarray, encoding, axis: int):
    # A vector's channels would be its elements, a 4-byte scale each: one scale instead.
    reduce = tuple(i for i in range(w.ndim) if i != axis) if w.ndim > 1 else None
    data, scales = symmetric_int8(w, np.abs(w).max(axis=reduce, keepdims=True))
    scales = tuple(scales.reshape(-1).tolist())
    return data, dataclasses.replace(encoding, int8=True, scales=scales, channel_axis=axis)


def _quantize_biases(graph: Graph, nodes: list[Node]) -> None:
    """Per-tensor int8 biases of `nodes` (every constant float input but their weights: an
    LSTM's B too): the weight-only path's; the integer path uses int32 ones."""
    for node in nodes:
        weight_inputs = {w.index for w in node_weights(node)}
        for index, bias in enumerate(node.inputs):
            if index in weight_inputs or bias is None or not bias.is_constant:
                continue
            if bias.data.dtype.kind == "f" and not bias.encoding.int8:
                data, scale = symmetric_int8(bias.data, np.abs(bias.data).max(initial=0.0))
                encoding = dataclasses.replace(bias.encoding, int8=True, scales=(float(scale),))
                graph.replace_weight(node, index, data, encoding)


def _max_difference(a: np.ndarray, b: np.ndarray, chunk: int = 1 << 22) -> float:
    """max |a - b| (0 when empty), a chunk at a time: no temporary of a large layer's size."""
    a, b = a.reshape(-1), b.reshape(-1)
    parts = (np.abs(a[i : i + chunk] - b[i : i + chunk]).max() for i in range(0, a.size, chunk))
    return float(max(parts, default=0.0))


def _quantize_codebook(w: np.ndarray, encoding):
    book = np.asarray(encoding.codebook, dtype=w.dtype)
    quantized, scale = symmetric_int8(book, np.abs(book).max(initial=0.0))
    # Zeros (most of a pruned layer) stay 0 (0 quantizes to 0): only the rest is looked up.
    flat, data = w.reshape(-1), np.zeros_like(w)
    where = np.flatnonzero(flat)
    data.reshape(-1)[where] = quantized[np.searchsorted(book, flat[where])]
    new_book = tuple(np.unique(quantized).tolist())
    return data, dataclasses.replace(encoding, codebook=new_book, int8=True, scales=(float(scale),))
