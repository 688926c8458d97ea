"""Empirical bias correction (Nagel et al., ICCV 2019, "Data-Free Quantization", section 4.2).

    b -> b + E[x] (W_orig - W),  E[x] = the layer's mean calibration input (im2col rows for Conv)

Any weight change (pruning, sharing, int8) shifts a layer's mean output by E[x] (W - W_orig);
folding the opposite into the bias removes that expected error. Layers are corrected in
program order, each with the mean of the inputs the corrected graph so far produces (the
batches carried from layer to layer: passes/refit.py's Walk). A layer without a bias gets
a new dense float32 one. Biases stay float32 as they are (the calibrated int8 path turns
them into int32 at s_w * s_x in codegen); a bias that an earlier weight-only quantize stored
int8 is re-quantized per tensor with a fresh scale, so its encoding still describes its
values exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph, Node
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    matrix_layers,
    option,
    register_pass,
    skipped_rows,
)
from dlcc.passes.quantize import symmetric_int8
from dlcc.passes.refit import Walk, weight_matrix


@register_pass
class BiasCorrect(Pass):
    """Empirical bias correction of every weight layer (see the module docstring)."""

    name = "biascorrect"
    summary = "bias correction: b += E[x] (W_orig - W), the weight change's mean output error"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        batch: int = option(256, "calibration batch size", 1, 65536)

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        if ctx.calibration is None:
            ctx.notes.append("biascorrect: no calibration data (--calib): biases left as they are")
            return {"layers": []}
        layers = []
        nodes = matrix_layers(graph)
        walk = Walk(graph, ctx.calibration, options.batch)
        for position, node in enumerate(nodes):
            if ctx.progress:
                ctx.progress("biascorrect", position, len(nodes))
            row = {"layer": node.name, "rows": 0, "mean_abs_correction": 0.0, "bias": ""}
            row["reason"] = ""
            orig = ctx.original_weights.get(node.name)
            w = node.inputs[1].data
            if orig is None or np.shape(orig) != w.shape:
                layers.append(row | {"reason": "no original weight of this shape"})
                continue
            delta = weight_matrix(node, orig) - weight_matrix(node, w)  # [G, K, M/G]
            if not delta.any():
                layers.append(row | {"reason": "weight unchanged"})
                continue
            total, rows = 0.0, 0
            for _, x in walk.inputs(node):
                total = total + x.astype(np.float64).sum(axis=1)  # [G, K]
                rows += x.shape[1]
            correction = np.einsum("gk,gkm->gm", total / max(rows, 1), delta).reshape(-1)
            row |= {"rows": rows, "mean_abs_correction": float(np.abs(correction).mean())}
            row["bias"] = _add_correction(graph, node, correction)
            layers.append(row)
        if ctx.progress:
            ctx.progress("biascorrect", len(nodes), len(nodes))
        return {"layers": layers + skipped_rows(graph, "no Dense/Conv bias to correct")}


def _add_correction(graph: Graph, node: Node, correction: np.ndarray) -> str:
    """bias += correction (a new bias when there is none); what happened to the bias."""
    dtype = node.inputs[1].data.dtype
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is not None and not bias.is_constant:
        return "computed: left alone"
    if bias is None:
        value = graph.constant(f"{node.inputs[1].name}.bias", correction.astype(dtype))
        node.inputs.extend([None] * (3 - len(node.inputs)))
        graph.set_input(node, 2, value)
        return "added"
    data = (bias.data.astype(np.float64) + correction).astype(bias.data.dtype)
    encoding = bias.encoding
    if encoding.int8:
        data, scale = symmetric_int8(data, np.abs(data).max(initial=0.0))
        encoding = dataclasses.replace(encoding, scales=(float(scale),))
    graph.replace_weight(node, 2, data, encoding)
    return "corrected"
