"""k-means weight sharing (Han et al., ICLR 2016, section 3), per Dense/Conv layer.

    W[i] -> c[label[i]],  c = 1-D k-means of the layer's surviving weights, k = 2**bits

A pruned layer keeps 0 as an extra codebook entry (its pruned positions and CSR fillers),
and clusters its nonzero weights into 2**bits - 1 centroids, so indices still fit `bits`.
Initialization is linear by default: evenly spaced between min and max, which keeps the
large, rare weights represented (the paper's finding).

`rate=beta` makes the clustering entropy-constrained (passes/cluster1d.py): it minimizes
squared error + lambda * Huffman code length, lambda = beta * step^2, step = 6 sigma / k (the
spacing of k levels over +-3 standard deviations of the weights: unlike max - min, not
stretched by a few outliers), so beta is the squared error one bit of index code is worth,
in squared steps. Plain k-means spreads centroids where the weights are dense, which evens
out the cluster sizes and lengthens the code; after retraining (finetune trains the
centroids back) beta = 0.5 cut the retrained LeNet-5 from 46.4 to 39.9 KB at 0.66-0.67% error.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.formats.huffman import shannon_bits
from dlcc.ir import Graph
from dlcc.passes.cluster1d import kmeans_1d
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    option,
    register_pass,
    weight_layers,
)

DEFAULT_BITS = {"Conv": 8, "Dense": 5}


@register_pass
class KMeans(Pass):
    name = "kmeans"
    summary = "weight sharing: W[i] -> codebook[index[i]], 1-D k-means per layer"
    main = "bits"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        bits: int | None = option(
            None, "index bits per layer (default: 8 for Conv, 5 for Dense)", 1, 8
        )
        init: str = option(
            "linear", "centroid initialization", choices=("linear", "density", "kmeans++")
        )
        iters: int = option(100, "maximum Lloyd iterations", 1, 10_000)
        seed: int = option(0, "random seed (kmeans++ init)", 0, 2**31 - 1)
        rate: float = option(
            0.0,
            "entropy constraint: squared steps (6 std / k) of error per bit saved (0: off)",
            0.0,
            100,
        )

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        layers = []
        nodes = weight_layers(graph)
        for position, node in enumerate(nodes):
            if ctx.progress:
                ctx.progress("kmeans", position, len(nodes))
            w = node.inputs[1]
            bits = self.for_layer(options, node, nodes) or DEFAULT_BITS[node.op]
            keep = w.data != 0 if w.encoding.sparse else np.ones(w.data.shape, dtype=bool)
            k = 2**bits - 1 if w.encoding.sparse else 2**bits
            values = w.data[keep]
            step = 6 * float(values.std()) / k if values.size else 0.0
            centroids, labels = kmeans_1d(
                values,
                k,
                init=options.init,
                max_iter=options.iters,
                seed=options.seed,
                rate=options.rate * step * step,
            )
            shared = np.zeros_like(w.data)
            shared[keep] = centroids[labels].astype(w.data.dtype)
            book = np.unique(np.concatenate([shared[keep], [0.0] if w.encoding.sparse else []]))
            encoding = dataclasses.replace(
                w.encoding, codebook=tuple(book.astype(w.data.dtype).tolist())
            )
            graph.replace_weight(node, 1, shared, encoding)
            sse = float(((shared - w.data) ** 2).sum())
            layers.append(
                {
                    "layer": node.name,
                    "params": int(w.data.size),
                    "bits": bits,
                    "clusters": int(len(centroids)),
                    "index_bits": round(shannon_bits(np.bincount(labels)) / max(labels.size, 1), 3),
                    "sse": sse,
                }
            )
        if ctx.progress:
            ctx.progress("kmeans", len(nodes), len(nodes))
        return {"layers": layers}
