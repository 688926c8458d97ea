"""int8 weight quantization, symmetric, per the numerics contract of DESIGN.md.

    W[c] -> round(W[c] / s[c]) * s[c],  s[c] = max|W[c]| / 127   per output channel c
    codebook -> round(C / s) * s,       s = max|C| / 127          per layer (k-means shared)
    b -> round(b / s) * s,              s = max|b| / 127          per layer (biases)

The encoding records the int8 values and scales, so the bundle stores 8 bits per weight (or
per centroid). Activations stay float32 in this pass: it says so in the compile notes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph, Node
from dlcc.passes.manager import (
    LayerOverrides,
    Pass,
    PassContext,
    option,
    register_pass,
    weight_layers,
)

QMAX = 127


@register_pass
class Quantize(Pass):
    name = "quantize"
    summary = "int8 weights, symmetric: per output channel, or per layer for a codebook"

    @dataclasses.dataclass(frozen=True)
    class Options:
        layers: LayerOverrides = option(LayerOverrides(), "per-layer values (unused)")

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        ctx.notes.append(
            "quantize: weights are int8; activations stay float32 (integer activation "
            "quantization from --calib data is not implemented yet)"
        )
        layers = []
        for node in weight_layers(graph):
            w = node.inputs[1]
            if w.encoding.codebook is not None:
                data, encoding = _quantize_codebook(w.data, w.encoding)
            else:
                data, encoding = _quantize_channels(w.data, w.encoding, _channel_axis(node))
            graph.replace_weight(node, 1, data, encoding)
            bias = node.inputs[2] if len(node.inputs) > 2 else None
            if bias is not None and bias.is_constant and not bias.encoding.int8:
                graph.replace_weight(node, 2, *_quantize_tensor(bias.data, bias.encoding))
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
        return {"layers": layers}


def _channel_axis(node: Node) -> int:
    """Output channels: axis 0 of a Conv weight [M, C, kh, kw], axis 1 of a Dense one [K, N]."""
    return 0 if node.op == "Conv" else 1


def _scale(max_abs: np.ndarray) -> np.ndarray:
    return np.where(max_abs > 0, max_abs / QMAX, 1.0).astype(np.float32)


def _quantize_channels(w: np.ndarray, encoding, axis: int):
    reduce = tuple(i for i in range(w.ndim) if i != axis)
    scales = _scale(np.abs(w).max(axis=reduce))
    view = [1] * w.ndim
    view[axis] = -1
    s = scales.reshape(view)
    data = (np.clip(np.round(w / s), -QMAX, QMAX) * s).astype(w.dtype)
    enc = dataclasses.replace(encoding, int8=True, scales=tuple(scales.tolist()), channel_axis=axis)
    return data, enc


def _quantize_tensor(x: np.ndarray, encoding):
    """Per-tensor symmetric int8 (the biases of the weight-only path)."""
    scale = _scale(np.abs(x).max(initial=0.0))
    data = (np.clip(np.round(x / scale), -QMAX, QMAX) * scale).astype(x.dtype)
    return data, dataclasses.replace(encoding, int8=True, scales=(float(scale),))


def _quantize_codebook(w: np.ndarray, encoding):
    book = np.asarray(encoding.codebook, dtype=w.dtype)
    scale = _scale(np.abs(book).max(initial=0.0))
    quantized = (np.clip(np.round(book / scale), -QMAX, QMAX) * scale).astype(w.dtype)
    data = quantized[np.searchsorted(book, w)]
    new_book = tuple(np.unique(quantized).tolist())
    return data, dataclasses.replace(encoding, codebook=new_book, int8=True, scales=(float(scale),))
