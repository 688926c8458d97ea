"""int8 quantization per the numerics contract of DESIGN.md.

    W[c] -> round(W[c] / s[c]) * s[c],  s[c] = max|W[c]| / 127   per output channel c
    codebook -> round(C / s) * s,       s = max|C| / 127          per layer (k-means shared)
    activation x -> scale s_x = bound(|x|) / 127 from calibration data (minmax or percentile),
                    for the values an int8 op reads (int8_reader); the others, the graph's
                    outputs among them, stay float32: a matrix layer dequantizes its int32
                    accumulators into them (int8 logits would tie: 41 of 10k MNIST test
                    images on the retrained LeNet-300-100, +0.11 points of error)

With calibration data the activations get per-tensor scales and codegen emits the integer
program (int8 x int8 -> int32 accumulators, int32 bias, requantization, lookup-table
activations). Without it, only the weights are quantized (and the biases, per tensor) and
the compile says so.
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
    option,
    register_pass,
    weight_layers,
)
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.quant import QMAX, round_half_up


def int8_reader(op: str) -> bool:
    """Whether `op` reads int8 values on the integer path (dlcc/lowering_int8.py)."""
    return op in ("Dense", "Conv") or get_kernel(op).int8 is not None


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
        for node in weight_layers(graph):
            w = node.inputs[1]
            if w.encoding.codebook is not None:
                data, encoding = _quantize_codebook(w.data, w.encoding)
            else:
                data, encoding = _quantize_channels(w.data, w.encoding, _channel_axis(node))
            graph.replace_weight(node, 1, data, encoding)
            error = float(np.abs(data - w.data).max(initial=0.0))
            layers.append(
                {
                    "layer": node.name,
                    "params": int(w.data.size),
                    "bits": 8,
                    "scales": len(encoding.scales),
                    "max_abs_error": error,
                }
            )
        if ctx.calibration is None:
            _quantize_biases(graph)
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
    for node in weight_layers(graph):
        x, b = node.inputs[0], node.inputs[2] if len(node.inputs) > 2 else None
        if x.scale is None or b is None or not b.is_constant:
            continue
        s_w = np.asarray(node.inputs[1].encoding.scales, np.float64)
        units = np.abs(b.data).astype(np.float64).reshape(-1) / (s_w * x.scale)
        if units.max(initial=0.0) > INT32_HEADROOM:
            x.scale = float((np.abs(b.data).reshape(-1) / s_w).max() / INT32_HEADROOM)
            bumped.append(node.name)
    return bumped


def _channel_axis(node: Node) -> int:
    """Output channels: axis 0 of a Conv weight [M, C, kh, kw], axis 1 of a Dense one [K, N]."""
    return 0 if node.op == "Conv" else 1


INT32_HEADROOM = 2.0**30  # a bias in accumulator units stays below this (products add to it)


def symmetric_int8(x: np.ndarray, max_abs) -> tuple[np.ndarray, np.ndarray]:
    """(x rounded to int8 steps, in x's dtype; the scales s = max_abs / 127, 1 where 0).

    x -> clamp(round_half_up(x / s), -127, 127) * s; `max_abs` broadcasts against x
    (a scalar per tensor, or keepdims maxima per channel).
    """
    s = np.where(max_abs > 0, np.asarray(max_abs) / QMAX, 1.0).astype(np.float32)
    return (np.clip(round_half_up(x / s), -QMAX, QMAX) * s).astype(x.dtype), s


def _quantize_channels(w: np.ndarray, encoding, axis: int):
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    data, scales = symmetric_int8(w, np.abs(w).max(axis=reduce, keepdims=True))
    scales = tuple(scales.reshape(-1).tolist())
    return data, dataclasses.replace(encoding, int8=True, scales=scales, channel_axis=axis)


def _quantize_biases(graph: Graph) -> None:
    """Per-tensor int8 biases: the weight-only path's (the integer path uses int32 ones)."""
    for node in weight_layers(graph):
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if bias is not None and bias.is_constant and not bias.encoding.int8:
            data, scale = symmetric_int8(bias.data, np.abs(bias.data).max(initial=0.0))
            encoding = dataclasses.replace(bias.encoding, int8=True, scales=(float(scale),))
            graph.replace_weight(node, 2, data, encoding)


def _quantize_codebook(w: np.ndarray, encoding):
    book = np.asarray(encoding.codebook, dtype=w.dtype)
    quantized, scale = symmetric_int8(book, np.abs(book).max(initial=0.0))
    data = quantized[np.searchsorted(book, w)]
    new_book = tuple(np.unique(quantized).tolist())
    return data, dataclasses.replace(encoding, codebook=new_book, int8=True, scales=(float(scale),))
