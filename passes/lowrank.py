"""Low-rank factorization by truncated SVD, per Dense/Conv layer (other weights: a row saying so).

    W = U·S·Vt -> (U_r·√S_r)·(√S_r·Vt_r): one Dense/Conv layer becomes two with rank r between

A Dense layer x @ W (W: K×N) becomes Dense(x, A[K×r]) followed by Dense(h, B[r×N], bias). A
Conv layer (group 1) with W[M, C, kh, kw] is factored as the matrix W[M, C·kh·kw]: a conv of r
filters [r, C, kh, kw] with the original strides, pads and dilations, then a 1×1 conv
[M, r, 1, 1] with the original bias. Both halves run on the same output grid, so parameters
and MACs shrink by the same factor.

The rank r is the smallest that keeps `energy` of the sum of squared singular values
(singular values below the weight dtype's numerical-rank tolerance count as zero, so an
exactly low-rank W gets its true rank at energy=1), or, with `ratio`, floor(ratio·K·N/(K+N)):
about `ratio` of the original parameters. A layer is rewritten only when r·(K+N) < K·N;
otherwise, and for grouped convolutions, it is left alone and reported with `applied: false`
and a reason. Parameter counts are weights only (the bias is unchanged).

Run lowrank before prune, kmeans and quantize: the factors are new dense weights that those
passes then compress, and a weight they already encoded (sparse, codebook, int8) is skipped.
The -O presets do not include lowrank; it is opt-in: `--passes "lowrank(energy=0.95),prune"`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.encoding import DENSE
from dlcc.errors import PipelineError
from dlcc.ir import Graph, Node
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    matrix_layers,
    option,
    register_pass,
    skipped_rows,
    weight_layers,
)
from dlcc.runtime.kernels.matrix import ConvAttrs


@register_pass
class LowRank(Pass):
    name = "lowrank"
    summary = "SVD factorization: W -> U·V, one Dense/Conv becomes two of rank r"
    main = "energy"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        energy: float = option(
            0.9, "fraction (0, 1] of the squared singular values each layer keeps", 0.0, 1.0
        )
        ratio: float | None = option(
            None,
            "instead: rank floor(ratio*K*N/(K+N)), ~ratio of the parameters (layers= sets it)",
            0.0,
            1.0,
        )

        def __post_init__(self) -> None:
            values = [("energy", self.energy), ("ratio", self.ratio)]
            values += [(f"layers={key}", value) for key, value in self.layers.items]
            for what, value in values:
                _check_fraction(what, value)

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        """Factor every Dense/Conv layer where that saves parameters; a row per layer."""
        layers = []
        nodes = weight_layers(graph)
        for node in matrix_layers(graph):
            if options.ratio is None:
                energy, ratio = float(self.for_layer(options, node, nodes)), None
            else:
                override = options.layers.lookup(node, nodes)
                energy, ratio = None, options.ratio if override is None else float(override)
            layers.append(_factor_layer(graph, node, energy, ratio))
        return {"layers": layers + skipped_rows(graph, "not a Dense/Conv product to factor")}


def _check_fraction(what: str, value) -> None:
    """A PipelineError unless `value` (None allowed) is a number in (0, 1]."""
    if value is None:
        return
    try:
        number = float(value)
    except ValueError:
        raise PipelineError(f"pass 'lowrank': option {what}={value!r}: expected float") from None
    if not 0.0 < number <= 1.0:
        raise PipelineError(f"pass 'lowrank': option {what}={value!r}: out of range (0, 1]")


def thin_svd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD (U, S, Vt) in float64, singular values below numerical-rank tolerance set to 0.

    The tolerance is np.linalg.matrix_rank's, S.max()·max(shape)·eps, with the eps of the
    weight's own dtype: an exact rank-3 float32 product has 3 nonzero singular values.
    """
    u, s, vt = np.linalg.svd(matrix.astype(np.float64), full_matrices=False)
    eps = np.finfo(matrix.dtype).eps if np.issubdtype(matrix.dtype, np.floating) else 0.0
    tol = (s[0] if s.size else 0.0) * max(matrix.shape) * eps
    return u, np.where(s > tol, s, 0.0), vt


def energy_rank(s: np.ndarray, energy: float) -> int:
    """Smallest r whose first r squared singular values reach `energy` of their total."""
    cumulative = np.cumsum(s**2)
    total = cumulative[-1]
    if total == 0:
        return 1
    return int(min(np.searchsorted(cumulative, energy * total, side="left") + 1, s.size))


def ratio_rank(k: int, n: int, ratio: float) -> int:
    """floor(ratio·K·N/(K+N)) clamped to [1, min(K, N)]: r·(K+N) ≈ ratio·K·N parameters."""
    return int(min(max(np.floor(ratio * k * n / (k + n)), 1), min(k, n)))


def _factor_layer(graph: Graph, node: Node, energy: float | None, ratio: float | None) -> dict:
    """Factor one Dense/Conv node in place when that saves parameters; its stats row.

    The rank comes from `ratio` when given, else from `energy`.
    """
    w = node.inputs[1]
    # Matmul orientation: Dense W is [K, N]; Conv W[M, C, kh, kw] is factored as [M, C*kh*kw].
    matrix = w.data if node.op == "Dense" else w.data.reshape(w.shape[0], -1)
    k, n = matrix.shape
    out = node.outputs[0]
    pixels = int(np.prod(out.shape)) // out.shape[-1 if node.op == "Dense" else 1]
    row = {
        "layer": node.name,
        "params_before": int(w.data.size),
        "params_after": int(w.data.size),
        "macs_before": pixels * k * n,
        "macs_after": pixels * k * n,
        "rank": None,
        "full_rank": min(k, n),
        "energy_kept": None,
        "applied": False,
        "reason": None,
    }
    if w.encoding.sparse:
        return {**row, "reason": "run lowrank before prune"}
    if w.encoding != DENSE:
        return {**row, "reason": f"run lowrank before the {w.encoding} encoding passes"}
    if node.op == "Conv" and node.attrs.group != 1:
        return {**row, "reason": f"grouped convolution (group={node.attrs.group})"}
    u, s, vt = thin_svd(matrix)
    r = ratio_rank(k, n, ratio) if ratio is not None else energy_rank(s, energy)
    total = float((s**2).sum())
    row.update(rank=r, energy_kept=float((s[:r] ** 2).sum() / total) if total else 1.0)
    after = r * (k + n)
    if after >= k * n:
        return {**row, "reason": f"rank {r} saves nothing: {after} >= {k * n} params"}
    root = np.sqrt(s[:r])
    left = (u[:, :r] * root).astype(w.data.dtype)  # [k, r]
    right = (root[:, None] * vt[:r]).astype(w.data.dtype)  # [r, n]
    _rewrite(graph, node, left, right)
    return {**row, "params_after": after, "macs_after": pixels * after, "applied": True}


def _rewrite(graph: Graph, node: Node, left: np.ndarray, right: np.ndarray) -> None:
    """Replace `node` by its two factors, inserted where it was; its output keeps its name."""
    x, w, b = (node.inputs + [None])[:3]
    out = node.outputs[0]
    name = out.name
    graph.rename(out, f"{name}/unfactored")  # frees the name for the new output
    index = graph.nodes.index(node)
    if node.op == "Dense":
        first = graph.constant(f"{w.name}/u", left)
        second = graph.constant(f"{w.name}/v", right)
        h = graph.add("Dense", [x, first, None], name=f"{node.name}/u", index=index)
        y = graph.add("Dense", [h.outputs[0], second, b], name=f"{node.name}/v", index=index + 1)
    else:
        m, c, kh, kw = w.shape
        r = left.shape[1]
        first = graph.constant(f"{w.name}/u", right.reshape(r, c, kh, kw))
        second = graph.constant(f"{w.name}/v", left.reshape(m, r, 1, 1))
        h = graph.add("Conv", [x, first, None], node.attrs, name=f"{node.name}/u", index=index)
        y = graph.add(
            "Conv", [h.outputs[0], second, b], ConvAttrs(), name=f"{node.name}/v", index=index + 1
        )
    new = y.outputs[0]
    graph.rename(new, name)
    graph.replace_all_uses(out, new)
    graph.remove(node)
