"""Cross-layer equalization (Nagel et al., ICCV 2019, "Data-Free Quantization", section 4.1).

    W1[c] -> W1[c] / s_c,  b1[c] -> b1[c] / s_c,  W2[:, c] -> W2[:, c] * s_c,
    s_c = sqrt(r1_c / r2_c),  r1_c = max|W1 output channel c|,  r2_c = max|W2 input channel c|

for two weight layers joined only through positively homogeneous per-channel ops (Relu,
LeakyRelu, max/average pooling, and a Flatten from a Conv into a Dense): f(x / s) = f(x) / s
for s > 0, so the rewrite is exact in real arithmetic, and afterwards both layers have the
same range r_c = sqrt(r1_c r2_c) per channel, which suits per-tensor or per-layer quantizers
and magnitude pruning alike. Run it before prune / kmeans / quantize. The pipeline's record
of the original weights is rescaled alike, so later passes compare like with like.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph, Node
from dlcc.passes.manager import Pass, PassContext, PassOptions, matrix_layers, option, register_pass
from dlcc.runtime.kernels import get_kernel


def equalizable_pairs(graph: Graph) -> list[tuple[Node, Node, tuple[str, ...]]]:
    """(layer1, layer2, ops between) for every pair the rewrite is exact for."""
    pairs = []
    layers = matrix_layers(graph)
    for first in layers:
        if first.op == "Conv" and first.attrs.group != 1:
            continue
        value, path = first.outputs[0], []
        while value not in graph.outputs and len(value.uses) == 1 and value.uses[0][1] == 0:
            user = value.uses[0][0]
            if user in layers:
                if _compatible(first, user, path, value):
                    pairs.append((first, user, tuple(path)))
                break
            if not (user.op == "Flatten" or get_kernel(user.op).homogeneous) or "Flatten" in path:
                break
            if user.op == "Flatten" and (user.attrs.axis != 1 or first.op != "Conv"):
                break
            path.append(user.op)
            value = user.outputs[0]
    return pairs


def _compatible(first: Node, second: Node, path: list[str], value) -> bool:
    """Whether `second` reads `first`'s channels as whole input channels (or channel blocks)."""
    channels = _out_rows(first, first.inputs[1].data).shape[0]
    if second.op == "Conv":
        return second.attrs.group == 1 and first.op == "Conv" and "Flatten" not in path
    if first.op == "Conv":  # into a Dense: only through a Flatten of the [N, C, ...] map
        return "Flatten" in path and value.batch_axis == 0
    k = second.inputs[1].data.shape[0]
    return set(path) <= {"Relu", "LeakyRelu"} and k == channels


def _out_rows(node: Node, w: np.ndarray) -> np.ndarray:
    """Layer 1's weight as [output channel, rest]."""
    return w.reshape(w.shape[0], -1) if node.op == "Conv" else w.T


def _in_rows(node: Node, w: np.ndarray, channels: int) -> np.ndarray:
    """Layer 2's weight as [input channel, rest] (a Dense's rows in channel blocks)."""
    if node.op == "Conv":
        return w.transpose(1, 0, 2, 3).reshape(channels, -1)
    return w.reshape(channels, -1)


def _scaled(node: Node, w: np.ndarray, s: np.ndarray, output: bool) -> np.ndarray:
    """w with output channel c divided by s_c (layer 1) or input channel c times s_c (layer 2)."""
    w64 = w.astype(np.float64)
    if output:
        out = w64 / (s[:, None, None, None] if node.op == "Conv" else s[None, :])
    elif node.op == "Conv":
        out = w64 * s[None, :, None, None]
    else:
        out = (w64.reshape(len(s), -1, w.shape[1]) * s[:, None, None]).reshape(w.shape)
    return out.astype(w.dtype)


def _spread(first: Node, second: Node) -> float:
    """Mean over channels of |log2(r1_c / r2_c)| (0 when the ranges are equal)."""
    r1, r2 = _ranges(first, second)
    ok = (r1 > 0) & (r2 > 0)
    return float(np.abs(np.log2(r1[ok] / r2[ok])).mean()) if ok.any() else 0.0


def _ranges(first: Node, second: Node) -> tuple[np.ndarray, np.ndarray]:
    r1 = np.abs(_out_rows(first, first.inputs[1].data)).max(axis=1).astype(np.float64)
    r2 = np.abs(_in_rows(second, second.inputs[1].data, len(r1))).max(axis=1)
    return r1, r2.astype(np.float64)


@register_pass
class Equalize(Pass):
    """Cross-layer equalization of Relu/pooling-connected pairs (see the module docstring)."""

    name = "equalize"
    summary = "cross-layer equalization: W1[c] /= s_c, W2[:, c] *= s_c over Relu/pooling"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        iterations: int = option(1, "sweeps over all pairs (chains converge over sweeps)", 1, 100)

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        pairs = equalizable_pairs(graph)
        rows = {}
        for first, second, path in pairs:
            reason = _refusal(first, second)
            rows[first.name] = {"layer": first.name, "next": second.name, "via": "+".join(path)}
            rows[first.name] |= {"channels": len(_ranges(first, second)[0])}
            rows[first.name] |= {"spread_before": _spread(first, second), "spread_after": None}
            rows[first.name] |= {"applied": not reason, "reason": reason}
        for _ in range(options.iterations):
            for first, second, _path in pairs:
                if rows[first.name]["applied"]:
                    self._equalize(graph, first, second, ctx)
        for first, second, _path in pairs:
            rows[first.name]["spread_after"] = _spread(first, second)
        return {"layers": list(rows.values()), "pairs": sum(r["applied"] for r in rows.values())}

    @staticmethod
    def _equalize(graph: Graph, first: Node, second: Node, ctx: PassContext) -> None:
        """Rescale one pair in place (and the recorded original weights alike)."""
        r1, r2 = _ranges(first, second)
        s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
        for node, output in ((first, True), (second, False)):
            w = node.inputs[1]
            graph.replace_weight(node, 1, _scaled(node, w.data, s, output), w.encoding)
            orig = ctx.original_weights.get(node.name)
            if orig is not None and np.shape(orig) == w.data.shape:
                ctx.original_weights[node.name] = _scaled(node, np.asarray(orig), s, output)
        bias = first.inputs[2] if len(first.inputs) > 2 else None
        if bias is not None:
            data = (bias.data.astype(np.float64) / s).astype(bias.data.dtype)
            graph.replace_weight(first, 2, data, bias.encoding)


def _refusal(first: Node, second: Node) -> str:
    """Why a pair cannot be rescaled ('' when it can)."""
    for node in (first, second):
        enc = node.inputs[1].encoding
        if enc.codebook is not None or enc.int8:
            return f"{node.name}: equalize before kmeans/quantize"
    bias = first.inputs[2] if len(first.inputs) > 2 else None
    if bias is not None and (not bias.is_constant or bias.encoding.int8):
        return f"{first.name}: bias is computed or int8"
    return ""
