"""Structured filter pruning for Conv (Li et al., ICLR 2017): filters go, and so do their channels.

    Conv filter o -> removed if ||W[o]||_1 is among the `fraction` smallest of the layer;
                     the input channels it feeds in the next weight layers are removed too

Unlike `prune`, nothing is zeroed: tensors get physically smaller. A Conv (group 1) is pruned
only when its output reaches the next weight layers through channel-wise ops alone:

    Relu, LeakyRelu, Sigmoid, Tanh, Clip, MaxPool, AveragePool, GlobalAveragePool,
    GlobalMaxPool, BatchNormalization (its 4 constants are sliced), Add/Sub/Mul/Div with a
    constant per-channel (or broadcast) operand (sliced), then Flatten or a Reshape to
    [N, C*H*W] (its target is rewritten) followed by Dense, and unary activations after it.

The path ends at a Conv (group 1: W[:, keep]) or a Dense (rows c*H*W .. c*H*W + H*W - 1 of
each kept channel c). Anything else skips the layer with a reason: a residual Add of two
activations, Concat, LRN (it mixes neighbouring channels), other ops, a graph output on the
path. Norms are taken on the weight as it stands when the layer is reached (after earlier
layers removed its input channels); ties remove the lower filter index first; at least one
filter is always kept. Encodings are kept; per-channel int8 scales are sliced with the data.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dlcc.encoding import Encoding
from dlcc.ir import Graph, Node, Value
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    option,
    register_pass,
    weight_layers,
)
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.tensor import ReshapeAttrs

# An edit slices input `index` of `node` along `axis`; each kept channel c stands for the
# `block` entries c*block .. c*block + block - 1 (a Flatten of [C, H, W] has block H*W).
Edit = tuple[Node, int, int, int]


class _Skip(Exception):
    """The layer cannot be pruned structurally; the message says why."""


@register_pass
class Filters(Pass):
    name = "filters"
    summary = "structured pruning: remove the smallest-L1 Conv filters and the channels they feed"
    main = "fraction"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        fraction: float = option(
            0.25, "fraction of each Conv's filters removed (smallest L1 norm)", 0.0, 0.95
        )

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        layers = []
        nodes = weight_layers(graph)
        for node in (n for n in nodes if n.op == "Conv"):
            count = node.inputs[1].data.shape[0]
            row = {
                "layer": node.name,
                "filters_before": count,
                "filters_after": count,
                "params_removed": 0,
                "applied": False,
                "reason": "",
            }
            try:
                edits, reshapes = _trace(graph, node)
                keep = keep_filters(node.inputs[1].data, self.for_layer(options, node, nodes))
                if keep.size == count:
                    raise _Skip("the fraction removes no filter")
            except _Skip as e:
                row["reason"] = str(e)
            else:
                removed = _apply(graph, edits, reshapes, keep)
                row.update(filters_after=int(keep.size), params_removed=removed, applied=True)
            layers.append(row)
        graph.reinfer()
        return {"layers": layers}


def keep_filters(w: np.ndarray, fraction: float) -> np.ndarray:
    """Sorted indices of the filters kept: all but the round(fraction * M) smallest L1 norms.

    Ties remove the lower index first; at least one filter is kept.
    """
    count = w.shape[0]
    norms = np.abs(w.reshape(count, -1)).sum(axis=1, dtype=np.float64)
    drop = min(int(round(fraction * count)), count - 1)
    removed = np.argsort(norms, kind="stable")[:drop]
    return np.setdiff1d(np.arange(count), removed)


def _trace(graph: Graph, conv: Node) -> tuple[list[Edit], list[tuple[Node, int]]]:
    """Every slice that removing filters of `conv` needs, and the Reshapes to retarget."""
    if conv.attrs.group != 1:
        raise _Skip(f"grouped convolution (group={conv.attrs.group})")
    edits: list[Edit] = [(conv, i, 0, 1) for i in (1, 2) if _const(conv, i)]
    reshapes: list[tuple[Node, int]] = []
    channels = conv.inputs[1].data.shape[0]
    todo: list[tuple[Value, int | None]] = [(conv.outputs[0], None)]  # block None: NCHW
    seen: set[int] = set()
    while todo:
        value, block = todo.pop()
        if value in graph.outputs:
            raise _Skip(f"its channels reach the graph output %{value.name}")
        for user, index in value.uses:
            if id(user) not in seen:
                seen.add(id(user))
                follow = _step(user, index, block, channels, edits, reshapes)
                if follow is not None:
                    todo.append(follow)
    return edits, reshapes


def _step(
    user: Node,
    index: int,
    block: int | None,
    channels: int,
    edits: list[Edit],
    reshapes: list[tuple[Node, int]],
) -> tuple[Value, int | None] | None:
    """Record the edits `user` needs; the (value, block) to follow on, None at a weight layer."""
    op, out, where = user.op, user.outputs[0], f"{user.op} {user.name!r}"
    kernel = get_kernel(op)
    if kernel.pointwise:
        return out, block
    if op in ("Conv", "Dense"):
        if index != 0 or not _const(user, 1):
            raise _Skip(f"{where} does not take the channels as its data input")
        if op == "Conv" and (block is not None or user.attrs.group != 1):
            raise _Skip(f"{where} is grouped or follows a Flatten/Reshape")
        if op == "Dense" and block is None:
            raise _Skip(f"{where} contracts the last (spatial) axis, not the channels")
        edits.append((user, 1, 1, 1) if op == "Conv" else (user, 1, 0, block))
        return None
    if block is not None:
        raise _Skip(f"{where} after a Flatten/Reshape is not supported")
    if kernel.per_channel:
        return out, None
    if op == "BatchNormalization":
        if index != 0 or not all(_const(user, i) for i in range(1, 5)):
            raise _Skip(f"{where} has non-constant statistics")
        edits.extend((user, i, 0, 1) for i in range(1, 5))
        return out, None
    if kernel.broadcasting:
        if not _const(user, 1 - index):
            raise _Skip(f"{where} of two activations (a residual connection)")
        axis = _channel_axis(user.inputs[1 - index].shape, len(user.inputs[index].shape), channels)
        if axis is not None:
            edits.append((user, 1 - index, axis, 1))
        return out, None
    if op in ("Flatten", "Reshape"):
        x = user.inputs[0]
        if (x.batch_axis, out.batch_axis, len(out.shape)) != (0, 0, 2):
            raise _Skip(f"{where} does not flatten [N, C, H, W] to [N, C*H*W]")
        if op == "Reshape":
            reshapes.append((user, math.prod(x.shape[2:])))
        return out, math.prod(x.shape[2:])
    if op == "Concat":
        raise _Skip(f"{where} joins the channels with other tensors")
    if op == "LRN":
        raise _Skip(f"{where} mixes neighbouring channels")
    raise _Skip(f"{where} is not a channel-wise op")


def _const(node: Node, index: int) -> bool:
    return (
        len(node.inputs) > index
        and node.inputs[index] is not None
        and (node.inputs[index].is_constant)
    )


def _channel_axis(shape: tuple[int, ...], rank: int, channels: int) -> int | None:
    """The axis of a constant operand lined up with channel axis 1 (None: it broadcasts)."""
    axis = 1 - (rank - len(shape))
    if len(shape) > rank or (axis == 1 and shape[0] != 1):
        raise _Skip(f"a constant operand of shape {shape} broadcasts over the batch")
    if axis < 0 or shape[axis] == 1:
        return None
    if shape[axis] != channels:
        raise _Skip(f"a constant operand of shape {shape} is not per-channel")
    return axis


def _apply(
    graph: Graph, edits: list[Edit], reshapes: list[tuple[Node, int]], keep: np.ndarray
) -> int:
    """Slice every edited constant to the kept channels; the number of parameters removed."""
    removed = 0
    for node, index, axis, block in edits:
        old = node.inputs[index]
        rows = (keep[:, None] * block + np.arange(block)).reshape(-1)
        data = np.take(old.data, rows, axis=axis)
        graph.replace_weight(node, index, data, _sliced(old.encoding, axis, rows))
        removed += old.data.size - data.size
    for node, block in reshapes:  # targets are [-1 or 0, C*H*W]: rewrite the positive size
        shape = tuple(d if d <= 0 else keep.size * block for d in node.attrs.shape)
        node.attrs = ReshapeAttrs(shape)
    return int(removed)


def _sliced(encoding: Encoding, axis: int, rows: np.ndarray) -> Encoding:
    """The encoding of a tensor sliced along `axis`: per-channel scales there follow the rows."""
    if len(encoding.scales) > 1 and encoding.channel_axis == axis:
        scales = tuple(np.asarray(encoding.scales)[rows].tolist())
        return dataclasses.replace(encoding, scales=scales)
    return encoding
