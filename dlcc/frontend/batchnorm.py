"""Fold inference BatchNormalization into the Conv or Dense that feeds it.

    W'[o] = W[o] * k[o],  b'[o] = (b[o] - mean[o]) * k[o] + beta[o],  k = gamma / sqrt(var + eps)

A BatchNormalization that follows anything else (DenseNet's pre-activation blocks) stays.
"""

from __future__ import annotations

import numpy as np

from dlcc.ir import Graph, Node
from dlcc.runtime.kernels.normalization import batchnorm_scale


def fold_batchnorm(graph: Graph) -> int:
    """Fold every foldable BatchNormalization; returns how many were folded."""
    folded = 0
    for bn in [n for n in graph.nodes if n.op == "BatchNormalization"]:
        x = bn.inputs[0]
        producer = x.producer
        if producer is None or producer.op not in ("Conv", "Dense"):
            continue
        if len(x.uses) != 1 or x in graph.outputs:
            continue
        if producer.op == "Dense" and len(x.shape) != 2:
            continue  # BatchNormalization's channel axis 1 is Dense's output axis only in 2-D
        _fold(graph, bn, producer)
        folded += 1
    return folded


def _fold(graph: Graph, bn: Node, producer: Node) -> None:
    gamma, beta, mean, var = (v.data.astype(np.float64) for v in bn.inputs[1:])
    k = batchnorm_scale(gamma, var, bn.attrs.epsilon)
    w, b = producer.inputs[1], producer.inputs[2]
    scale = k[:, None, None, None] if producer.op == "Conv" else k[None, :]
    # Multiplied in float64, rounded once into W's dtype: no float64 copy of a large W.
    weight = np.multiply(w.data, scale, out=np.empty_like(w.data), dtype=np.float64)
    bias = np.zeros_like(k) if b is None else b.data.astype(np.float64)
    bias = (bias - mean) * k + beta
    graph.set_input(producer, 1, graph.constant(w.name, weight))
    graph.set_input(producer, 2, graph.constant(f"{producer.name}.bias", bias.astype(w.data.dtype)))
    graph.replace_all_uses(bn.outputs[0], producer.outputs[0])
    graph.remove(bn)
