"""Unstructured magnitude pruning (Han et al., NIPS 2015), per weight (ESE for LSTMs).

    W[i] -> 0  if |W[i]| is among the `sparsity` smallest of the layer
               (or, with quality=q, if |W[i]| < q * std(W): Han et al.'s threshold rule)

The surviving weights keep their values; the weight's encoding becomes sparse, so the
bundle stores only their positions and values.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    option,
    register_pass,
    weight_layers,
    weights,
)


@register_pass
class Prune(Pass):
    name = "prune"
    summary = "magnitude pruning: W[i] -> 0 for the smallest |W[i]| of each layer"
    main = "sparsity"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        sparsity: float = option(0.9, "fraction of each layer's weights set to zero", 0.0, 0.999)
        quality: float | None = option(
            None,
            "Han et al.'s rule instead: prune |w| < quality * std(W) (layers= sets it)",
            0.0,
            10.0,
        )

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        layers = []
        nodes = weight_layers(graph)
        for weight in weights(graph):
            node, w = weight.node, weight.value
            override = options.layers.lookup(node, nodes)
            if options.quality is not None:
                quality = options.quality if override is None else float(override)
                keep = np.abs(w.data) >= quality * w.data.std()
            else:
                keep = keep_largest(np.abs(w.data), self.for_layer(options, node, nodes))
            pruned = np.where(keep, w.data, 0).astype(w.data.dtype, copy=False)
            encoding = dataclasses.replace(w.encoding, sparse=True)
            graph.replace_weight(node, weight.index, pruned, encoding)
            layers.append(
                {
                    "layer": weight.label,
                    "params": int(w.data.size),
                    "nonzero_before": int(np.count_nonzero(w.data)),
                    "nonzero_after": int(np.count_nonzero(pruned)),
                    "sparsity": round(1 - np.count_nonzero(pruned) / max(w.data.size, 1), 4),
                }
            )
        return {"layers": layers}


def keep_largest(magnitude: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask of the (1 - sparsity) largest magnitudes; ties broken by position (deterministic)."""
    flat = magnitude.reshape(-1)
    drop = int(round(sparsity * flat.size))
    if not drop:
        return np.ones(magnitude.shape, dtype=bool)
    threshold = _kth_smallest(flat, drop - 1)  # the drop-th smallest: linear time
    keep = flat > threshold
    ties = np.flatnonzero(flat == threshold)  # drop the first of them until `drop` are gone
    keep[ties[drop - int(np.count_nonzero(flat < threshold)) :]] = True
    return keep.reshape(magnitude.shape)


def _kth_smallest(flat: np.ndarray, k: int):
    """np.partition(flat, k)[k] without a copy of a large `flat` (Floyd & Rivest): a strided
    sample brackets the answer, then only the values inside the bracket are partitioned."""
    stride = flat.size // 65536
    if stride < 16:
        return np.partition(flat, k)[k]
    sample = np.sort(flat[::stride])
    middle, margin = k * sample.size // flat.size, 4 * int(np.sqrt(sample.size))
    low = sample[max(middle - margin, 0)]
    high = sample[min(middle + margin, sample.size - 1)]
    below = int(np.count_nonzero(flat < low))
    inside = flat >= low
    inside &= flat <= high
    inside = flat[inside]
    if below <= k < below + inside.size:
        return np.partition(inside, k - below)[k - below]
    return np.partition(flat, k)[k]  # the sample missed (it cannot miss by much): exactly
