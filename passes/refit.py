"""Least-squares refit of compressed weights on calibration data (OBS / SparseGPT style).

    W -> argmin_W (W - W_orig)^T (H + λI) (W - W_orig),  H = XᵀX of the layer's inputs X,
         over W's surviving entries (pruned) or over its shared values (k-means codebook)

Layers are refitted in program order, each on the inputs produced by the graph as it is at
that point (earlier layers already refitted), so later layers also absorb earlier errors'
effect on their inputs; the calibration batches are carried from layer to layer (`Walk`),
so no node runs twice. H is accumulated batch by batch; Conv layers use their im2col
patches, one H per group, from at most ROWS_PER_INPUT rows per input feature (K) but one per
sample, drawn at random with a fixed seed: neighbouring patches of one image repeat each
other, and the solve needs H's shape, not every row. The target is the original layer's
output on the same inputs; λ = damp * mean(diag H) also pulls entries that the data does not
determine (dead inputs) towards their original values, so an all-ones mask reproduces W_orig
exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np

from dlcc.ir import Graph, Node
from dlcc.passes.calibrate import batches, sample_count
from dlcc.passes.evaluate import evaluate, run_nodes
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    matrix_layers,
    option,
    register_pass,
    skipped_rows,
)
from dlcc.runtime.kernels.matrix import conv_weight_from_matrix, conv_weight_matrix, im2col

ROWS_PER_INPUT = 32  # H of a layer with K inputs is estimated from at most 32·K rows
CARRIED_BYTES = 1 << 29  # live values carried between layers for all batches (see Walk)
CODEBOOK_FLOPS = 5e10  # centroid refits costlier than this (K² · N · k) are skipped
CHUNK = 1 << 22  # one-hot elements per column chunk of the centroid normal equations


class Walk:
    """The calibration batches carried through the graph in program order: at each layer,
    every batch's live values there, so that the layer's inputs come from the graph as it is
    now (earlier layers already rewritten) without running the nodes before it again. Once
    the live values of all batches would pass CARRIED_BYTES, each layer's inputs are computed
    from the start instead, batch by batch (memory independent of the sample count)."""

    def __init__(self, graph: Graph, data: dict, batch: int) -> None:
        self.graph, self.data, self.batch = graph, data, batch
        self.samples = sample_count(graph, data)
        cut = [(sample_count(graph, f), dict(f)) for f in batches(graph, data, batch)]
        self.states: list[tuple[int, dict]] | None = cut
        self.at = 0  # the states hold the live values before graph.nodes[at]

    def inputs(self, node: Node) -> Iterator[tuple[int, np.ndarray]]:
        """Per calibration batch, its sample count and `node`'s input rows as [G, rows, K]
        (Dense: G = 1)."""
        index = self.graph.nodes.index(node)
        if self.states is not None and index >= self.at:
            self._advance(index)
        if self.states is None or index != self.at:
            for feeds in batches(self.graph, self.data, self.batch):
                for value, array in evaluate(self.graph, feeds):
                    if value is node.inputs[0]:
                        yield sample_count(self.graph, feeds), input_rows(node, array)
                        break
            return
        for samples, live in self.states:
            yield samples, input_rows(node, live[node.inputs[0].name])

    def _advance(self, index: int) -> None:
        """Run every batch on to just before graph.nodes[index], keeping what is read there
        or after (dropping all when that would pass CARRIED_BYTES)."""
        nodes = self.graph.nodes[self.at : index]
        later = self.graph.nodes[index:]
        wanted = {v.name for n in later for v in n.inputs if v is not None and not v.is_constant}
        states, carried = [], 0
        for samples, live in self.states:
            kept = {name: a for name, a in live.items() if name in wanted}
            for done, _, outs in run_nodes(self.graph, live, nodes=nodes):
                kept |= {v.name: a for v, a in zip(done.outputs, outs) if v.name in wanted}
            carried += sum(a.nbytes for a in kept.values())
            if carried > CARRIED_BYTES:
                self.states = None
                return
            states.append((samples, kept))
        self.states, self.at = states, index


def input_rows(node: Node, array: np.ndarray) -> np.ndarray:
    """A Dense/Conv layer's input as the rows of its matmul, [G, rows, K] (Dense: G = 1)."""
    if node.op == "Conv":
        return im2col(array, node.inputs[1].data.shape[2:], node.attrs)
    return array.reshape(1, -1, array.shape[-1])


def weight_matrix(node: Node, w: np.ndarray) -> np.ndarray:
    """A layer's weight as [G, K, columns]: the right-hand operand of its matmul."""
    w = np.asarray(w, dtype=np.float64)
    return conv_weight_matrix(w, node.attrs.group) if node.op == "Conv" else w[None]


def weight_from_matrix(node: Node, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of `weight_matrix`: [G, K, columns] back to the weight's own shape."""
    return conv_weight_from_matrix(m, shape) if node.op == "Conv" else m[0].reshape(shape)


def gram(walk: Walk, node: Node) -> tuple[np.ndarray, int]:
    """H = XᵀX per group ([G, K, K], float64) of `node`'s calibration inputs (products in
    float32, sums in float64), from at most ROWS_PER_INPUT · K of them (or one per sample);
    and the rows used."""
    h, rows, keep = 0.0, 0, 1.0
    rng = np.random.default_rng(0)
    for samples, x in walk.inputs(node):
        if not rows:  # the share of rows kept, from the first batch's rows per sample
            kept = max(ROWS_PER_INPUT * x.shape[2], walk.samples)  # at least a row per sample
            keep = min(1.0, kept * samples / (x.shape[1] * walk.samples))
        if keep < 1.0:
            chosen = rng.choice(x.shape[1], max(1, round(keep * x.shape[1])), replace=False)
            x = x[:, np.sort(chosen)]
        x = x.astype(np.float32)
        h = h + np.matmul(x.transpose(0, 2, 1), x).astype(np.float64)  # per group: XᵀX
        rows += x.shape[1]
    return np.asarray(h), rows


def relative_error(h: np.ndarray, w: np.ndarray, w_orig: np.ndarray) -> float:
    """||X (W - W_orig)|| / ||X W_orig|| from H = XᵀX (all groups and columns)."""
    d = w - w_orig
    num = np.einsum("gkn,gkn->", d, h @ d)
    den = np.einsum("gkn,gkn->", w_orig, h @ w_orig)
    return float(np.sqrt(max(num, 0.0) / den)) if den > 0 else 0.0


def damped(h: np.ndarray, damp: float) -> np.ndarray:
    """H + λI per group, λ = damp * mean(diag H) (at least a tiny multiple, for rank)."""
    diag = np.einsum("gkk->gk", h).mean(axis=1)
    lam = np.maximum(damp, 1e-10) * np.where(diag > 0, diag, 1.0)
    return h + lam[:, None, None] * np.eye(h.shape[1])


def refit_support(hd: np.ndarray, w: np.ndarray, w_orig: np.ndarray) -> np.ndarray:
    """Per column n with support S: solve Hd_SS w_S = Hd_S: w_orig,n; zeros off S (a full
    column's solution is w_orig,n itself)."""
    out = np.zeros_like(w)
    for g in range(w.shape[0]):
        mask = w[g] != 0
        rhs = hd[g] @ w_orig[g]
        sizes = mask.sum(axis=0)
        full = sizes == w.shape[1]
        out[g][:, full] = w_orig[g][:, full]
        for s in np.unique(sizes[(sizes > 0) & ~full]):
            same = np.flatnonzero(sizes == s)
            step = max(1, int(CHUNK // (s * s)))
            for start in range(0, len(same), step):  # columns sharing a support size
                cols = same[start : start + step]
                idx = np.nonzero(mask[:, cols].T)[1].reshape(len(cols), s)
                a = hd[g][idx[:, :, None], idx[:, None, :]]
                b = rhs[idx, cols[:, None]]
                out[g][idx, cols[:, None]] = np.linalg.solve(a, b[..., None])[..., 0]
    return out


def refit_codebook(
    hd: np.ndarray, w: np.ndarray, w_orig: np.ndarray, book: np.ndarray, fixed_zero: bool
) -> np.ndarray:
    """New centroid values c minimizing Σ_n (W(c) - W_orig)ᵀ Hd (W(c) - W_orig), W(c) = c[labels].

    Normal equations G c = r, G_ij = Σ_n A_i[:,n]ᵀ Hd A_j[:,n], r_i = Σ_n A_i[:,n]ᵀ Hd w_orig,n
    (A_j: indicator of cluster j), built from one-hot labels in column chunks. With
    `fixed_zero` the 0.0 centroid stays 0 (pruned positions).
    """
    k = len(book)
    labels = np.searchsorted(book, w).clip(0, k - 1)
    g_mat, r = np.zeros((k, k)), np.zeros(k)
    eye = np.eye(k)
    for g in range(w.shape[0]):
        kk, n = labels[g].shape
        r += np.bincount(labels[g].ravel(), (hd[g] @ w_orig[g]).ravel(), minlength=k)
        step = max(1, int(CHUNK // (kk * k)))
        for start in range(0, n, step):  # output columns, in chunks
            onehot = eye[labels[g][:, start : start + step]]  # [K, nc, k]
            t = (hd[g] @ onehot.reshape(kk, -1)).reshape(onehot.shape)
            g_mat += onehot.reshape(-1, k).T @ t.reshape(-1, k)
    free = np.ones(k, dtype=bool)
    if fixed_zero and 0.0 in book:
        free[np.searchsorted(book, 0.0)] = False
    used = free & (np.diag(g_mat) > 0)
    c = book.astype(np.float64).copy()
    c[used] = np.linalg.solve(g_mat[np.ix_(used, used)], r[used])
    return c[labels]


@register_pass
class Refit(Pass):
    """Least-squares refit of pruned weights and shared centroids (see the module docstring)."""

    name = "refit"
    summary = "least-squares refit of pruned weights / shared centroids on calibration data"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        damp: float = option(0.01, "dampening: λ = damp * mean(diag XᵀX)", 0.0, 10.0)
        batch: int = option(256, "calibration batch size", 1, 65536)

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        if ctx.calibration is None:
            ctx.notes.append("refit: no calibration data (--calib): weights left as they are")
            return {"layers": []}
        layers = []
        nodes = matrix_layers(graph)
        walk = Walk(graph, ctx.calibration, options.batch)
        for position, node in enumerate(nodes):
            if ctx.progress:
                ctx.progress("refit", position, len(nodes))
            layers.append(self._layer(graph, walk, node, options, ctx))
        if ctx.progress:
            ctx.progress("refit", len(nodes), len(nodes))
        return {"layers": layers + skipped_rows(graph, "not a Dense/Conv product to refit")}

    def _layer(self, graph: Graph, walk: Walk, node: Node, options: Options, ctx) -> dict:
        """Refit one layer in place; its stats row."""
        w = node.inputs[1]
        enc = w.encoding
        row = {"layer": node.name, "rows": 0, "error_before": None, "error_after": None}
        row |= {"applied": False, "reason": ""}
        orig = ctx.original_weights.get(node.name)
        if orig is None or np.shape(orig) != w.data.shape:
            return row | {"reason": "no original weight of this shape"}
        if enc.int8:
            return row | {"reason": "refit before quantize"}
        if not enc.sparse and enc.codebook is None:
            return row | {"reason": "dense weight: nothing to refit"}
        cur, target = weight_matrix(node, w.data), weight_matrix(node, orig)
        g, kk, n = cur.shape
        if enc.codebook is not None and g * kk * kk * n * len(enc.codebook) > CODEBOOK_FLOPS:
            return row | {"reason": "codebook refit too expensive for this layer"}
        h, rows = gram(walk, node)
        hd = damped(h, options.damp)
        if enc.codebook is not None:
            book = np.asarray(enc.codebook, dtype=np.float64)
            new = refit_codebook(hd, cur, target, book, enc.sparse)
        else:
            new = refit_support(hd, cur, target)
        before, after = relative_error(h, cur, target), relative_error(h, new, target)
        row |= {"rows": rows, "error_before": before, "error_after": before}
        if not after < before:
            return row | {"reason": "no gain"}
        data = weight_from_matrix(node, new, w.data.shape).astype(w.data.dtype)
        if enc.codebook is not None:
            zero = [0.0] if enc.sparse and 0.0 in enc.codebook else []
            book = np.unique(np.concatenate([data.ravel(), np.asarray(zero, w.data.dtype)]))
            enc = dataclasses.replace(enc, codebook=tuple(book.tolist()))
        graph.replace_weight(node, 1, data, enc)
        return row | {"error_after": after, "applied": True}
