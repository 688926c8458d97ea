"""k-means weight sharing (Han et al., ICLR 2016, section 3), per weight.

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

from dlcc.ir import Graph
from dlcc.passes.cluster1d import index_bits, kmeans_1d
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    option,
    register_pass,
    weight_layers,
    weights,
)


def default_bits(w: np.ndarray) -> int:
    """Han et al.'s index widths: 8 bits for a convolution's kernel (rank 4), 5 for the
    rest (fully connected and recurrent matrices, embedding tables)."""
    return 8 if w.ndim == 4 else 5


# A layer with more surviving weights than this (VGG-19's fc6 has 8M) is fitted on an evenly
# strided sample of about this many: Lloyd's sort of all of them dominated a large compile.
FIT_SAMPLE = 1 << 20


@register_pass
class KMeans(Pass):
    name = "kmeans"
    summary = "weight sharing: W[i] -> codebook[index[i]], 1-D k-means per layer"
    main = "bits"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        bits: int | None = option(
            None, "index bits per layer (default: 8 for conv kernels, 5 for matrices)", 1, 8
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
        nodes, todo = weight_layers(graph), weights(graph)
        for position, weight in enumerate(todo):
            if ctx.progress:
                ctx.progress("kmeans", position, len(todo))
            node, w = weight.node, weight.value
            bits = self.for_layer(options, node, nodes) or default_bits(w.data)
            keep = w.data != 0 if w.encoding.sparse else np.ones(w.data.shape, dtype=bool)
            k = 2**bits - 1 if w.encoding.sparse else 2**bits
            values = w.data[keep]
            step = 6 * float(values.std()) / k if values.size else 0.0
            centroids, labels = _cluster(values, k, options, options.rate * step * step)
            survivors = centroids.astype(w.data.dtype)[labels]
            shared = np.zeros_like(w.data)
            shared[keep] = survivors
            # Every centroid has a member: the codebook is the centroids (and the pruned 0).
            book = np.unique(
                np.concatenate([centroids.astype(w.data.dtype), [0.0] if w.encoding.sparse else []])
            )
            encoding = dataclasses.replace(
                w.encoding, codebook=tuple(book.astype(w.data.dtype).tolist())
            )
            graph.replace_weight(node, weight.index, shared, encoding)
            sse = float(np.square(survivors - values).sum())  # pruned positions add nothing
            layers.append(
                {
                    "layer": weight.label,
                    "params": int(w.data.size),
                    "bits": bits,
                    "clusters": int(len(centroids)),
                    "index_bits": round(index_bits(labels), 3),
                    "sse": sse,
                }
            )
        if ctx.progress:
            ctx.progress("kmeans", len(todo), len(todo))
        return {"layers": layers}


def _cluster(values: np.ndarray, k: int, options, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """kmeans_1d(values, k): (centroids ascending, labels). Above FIT_SAMPLE values (without
    the entropy constraint) the centroids are fitted on a strided sample; then every value
    takes its nearest centroid (a chunk at a time) and each centroid the mean of its values."""
    fit = dict(init=options.init, max_iter=options.iters, seed=options.seed, rate=rate)
    if values.size <= FIT_SAMPLE or rate > 0:
        return kmeans_1d(values, k, **fit)
    fitted, _ = kmeans_1d(values[:: -(-values.size // FIT_SAMPLE)], k, **fit)
    midpoints = (fitted[1:] + fitted[:-1]) / 2  # a value at a midpoint takes the lower one
    labels = np.empty(values.size, np.min_scalar_type(fitted.size))
    for start in range(0, values.size, 1 << 22):
        part = values[start : start + (1 << 22)]
        labels[start : start + part.size] = np.searchsorted(midpoints, part)
    counts = np.bincount(labels, minlength=fitted.size)
    sums = np.bincount(labels, weights=values, minlength=fitted.size)
    used = counts > 0  # a centroid the sample kept may attract no value of the whole
    if not used.all():
        labels = (np.cumsum(used) - 1).astype(labels.dtype)[labels]
    return sums[used] / counts[used], labels
