"""Backpropagation through the IR's feed-forward ops, for retraining (passes/finetune.py).

    logits, tape = forward(graph, feeds, params)     # values by the runtime kernels
    loss, dlogits, correct = softmax_cross_entropy(logits, labels)
    grads = backward(tape, dlogits, params)          # {(node name, input index): dL/dparam}

`forward` evaluates the graph with `get_kernel(op)(attrs, *inputs)`, so training sees exactly
the inference semantics, and records every node's inputs and outputs on a tape. `backward`
walks the tape in reverse with one gradient rule per op (`_RULES`): Dense, Conv (any group,
through im2col / col2im), the pools, the activations, broadcasting Add/Sub/Mul/Div (the
gradient is summed over broadcast axes), Concat, Reshape, Flatten, Transpose, inference-form
BatchNormalization (gradient through it, its parameters frozen) and Softmax. Parameters are
the weights (input 1) and biases (input 2) of the Dense/Conv layers, keyed by (node name,
input index); every other constant stays as it is. When the graph ends in Softmax, the loss
is taken on the logits before it. Rules are vectorized; Conv's col2im and the pools loop over
kernel taps only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph, Node, Value
from dlcc.passes.manager import weight_layers
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.matrix import conv_output_hw, conv_weight_matrix, im2col
from dlcc.runtime.kernels.pooling import pool_output_hw

Params = dict[tuple[str, int], np.ndarray]


@dataclasses.dataclass
class Tape:
    """What `forward` recorded: (node, input arrays, output arrays) in program order."""

    entries: list[tuple[Node, list, tuple]]
    inputs: list[Value]
    logits: Value


def parameters(graph: Graph) -> Params:
    """Copies of the trainable arrays: each Dense/Conv layer's weight and bias, by (node, index)."""
    params = {}
    for node in weight_layers(graph):
        for i in (1, 2):
            if i < len(node.inputs) and node.inputs[i] is not None and node.inputs[i].is_constant:
                params[(node.name, i)] = node.inputs[i].data.copy()
    return params


def logits_value(graph: Graph) -> Value:
    """The value the loss is taken on: the first output, or the input of a final Softmax."""
    out = graph.outputs[0]
    if out.producer is not None and out.producer.op == "Softmax":
        return out.producer.inputs[0]
    return out


def program(graph: Graph) -> list[Node]:
    """The nodes the logits depend on, in graph order."""
    need, keep = {id(logits_value(graph))}, []
    for node in reversed(graph.nodes):
        if any(id(v) in need for v in node.outputs):
            keep.append(node)
            need.update(id(v) for v in node.inputs if v is not None)
    return keep[::-1]


def trainable_ops() -> frozenset[str]:
    """The ops `backward` has a gradient rule for."""
    return frozenset(_RULES)


def untrainable(graph: Graph) -> list[tuple[str, str]]:
    """(op, first node name) of every op on the way to the logits that cannot be trained."""
    found: dict[str, str] = {}
    for node in program(graph):
        if node.op not in _RULES or len(node.outputs) != 1:
            found.setdefault(node.op, node.name)
    return list(found.items())


def forward(graph: Graph, feeds: dict[str, np.ndarray], params: Params) -> tuple[np.ndarray, Tape]:
    """The logits for `feeds` with `params` in place of the graph's weights, and the tape."""
    env = {id(v): feeds[v.name] for v in graph.inputs}
    entries = []
    for node in program(graph):
        args = [v if v is None else env[id(v)] if id(v) in env else v.data for v in node.inputs]
        args = [params.get((node.name, i), a) for i, a in enumerate(args)]
        outs = get_kernel(node.op)(node.attrs, *args)
        entries.append((node, args, outs))
        env.update(zip(map(id, node.outputs), outs))
    logits = logits_value(graph)
    return env[id(logits)], Tape(entries, list(graph.inputs), logits)


def backward(tape: Tape, dlogits: np.ndarray, params: Params, wrt_inputs: bool = False) -> dict:
    """dL/dparam for every parameter (and dL/dinput by input name when `wrt_inputs`)."""
    needs = {id(v) for v in tape.inputs} if wrt_inputs else set()
    for node, _, _ in tape.entries:
        if any((node.name, i) in params for i in range(len(node.inputs))) or any(
            v is not None and id(v) in needs for v in node.inputs
        ):
            needs.update(id(v) for v in node.outputs)
    grads = {id(tape.logits): dlogits}
    result = {}
    for node, args, outs in reversed(tape.entries):
        dy = grads.pop(id(node.outputs[0]), None)
        want = [
            v is not None and ((node.name, i) in params or (not v.is_constant and id(v) in needs))
            for i, v in enumerate(node.inputs)
        ]
        if dy is None or not any(want):
            continue
        for i, dx in enumerate(_RULES[node.op](node.attrs, args, outs[0], dy, want)):
            if dx is None or not want[i]:
                continue
            key = (node.name, i) if (node.name, i) in params else id(node.inputs[i])
            store = result if isinstance(key, tuple) else grads
            store[key] = store[key] + dx if key in store else dx
    if wrt_inputs:
        result.update({v.name: grads.get(id(v)) for v in tape.inputs})
    return result


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, int]:
    """Mean cross-entropy of softmax(logits [N, classes]), its gradient, and the top-1 hits."""
    rows = np.arange(len(labels))
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    d = np.exp(logp)
    d[rows, labels] -= 1
    d /= len(labels)
    correct = int(np.count_nonzero(logits.argmax(axis=1) == labels))
    return float(-logp[rows, labels].mean()), d.astype(logits.dtype, copy=False), correct


# -- gradient rules: rule(attrs, input arrays, output, dL/doutput, wanted) -> per-input grads -----
def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `g` over the axes numpy broadcast an operand of `shape` along."""
    if g.ndim > len(shape):
        g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _dense(attrs, args, y, dy, want):
    x, w = args[0], args[1]
    dx = dy @ np.swapaxes(w, -1, -2) if want[0] else None
    dw = _unbroadcast(np.swapaxes(x, -1, -2) @ dy, w.shape) if want[1] else None
    db = _unbroadcast(dy, args[2].shape) if len(args) > 2 and want[2] else None
    return [dx, dw, db]


def _conv(attrs, args, y, dy, want):
    x, w = args[0], args[1]
    m, cg, kh, kw = w.shape
    g, (n, _, oh, ow) = attrs.group, dy.shape
    # dL/d(patches @ weights), in the [G, N*OH*OW, M/G] layout of the forward matmul.
    dmat = dy.reshape(n, g, m // g, oh, ow).transpose(1, 0, 3, 4, 2).reshape(g, -1, m // g)
    grads = [None] * len(args)
    if want[1]:
        dwm = im2col(x, (kh, kw), attrs).transpose(0, 2, 1) @ dmat  # [G, kh*kw*C/G, M/G]
        grads[1] = dwm.reshape(g, kh, kw, cg, m // g).transpose(0, 4, 3, 1, 2).reshape(w.shape)
    if want[0]:
        grads[0] = _col2im(dmat @ conv_weight_matrix(w, g).transpose(0, 2, 1), x.shape, attrs, w)
    if len(args) > 2 and want[2]:
        grads[2] = dy.sum(axis=(0, 2, 3))
    return grads


def _col2im(dpatches: np.ndarray, shape, attrs, w: np.ndarray) -> np.ndarray:
    """The adjoint of im2col: patch gradients [G, N*OH*OW, K] summed back onto x[N, C, H, W]."""
    n, c, h, wd = shape
    g, (kh, kw) = attrs.group, w.shape[2:]
    oh, ow = conv_output_hw(h, wd, (kh, kw), attrs)
    top, left, bottom, right = attrs.pads
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    d = dpatches.reshape(g, n, oh, ow, kh, kw, c // g).transpose(1, 2, 3, 4, 5, 0, 6)
    d = d.reshape(n, oh, ow, kh, kw, c)
    dxp = np.zeros((n, h + top + bottom, wd + left + right, c), dpatches.dtype)
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            dxp[:, rows, slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)] += d[:, :, :, i, j]
    return np.ascontiguousarray(dxp[:, top : top + h, left : left + wd].transpose(0, 3, 1, 2))


def _pool_taps(shape, attrs):
    """Padded (H, W), the input's place in it, and per tap the slices it reads (as pooling.py)."""
    h, w = shape[2:]
    oh, ow = pool_output_hw(h, w, attrs)
    top, left, bottom, right = attrs.pads
    (kh, kw), (sh, sw), (dh, dw) = attrs.kernel, attrs.strides, attrs.dilations
    hp = max(h + top + bottom, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(w + left + right, (ow - 1) * sw + (kw - 1) * dw + 1)
    rows = [slice(i * dh, i * dh + (oh - 1) * sh + 1, sh) for i in range(kh)]
    cols = [slice(j * dw, j * dw + (ow - 1) * sw + 1, sw) for j in range(kw)]
    inside = (..., slice(top, top + h), slice(left, left + w))
    return (hp, wp), inside, [(..., r, c) for r in rows for c in cols]


def _max_pool(attrs, args, y, dy, want):
    x = args[0]
    (hp, wp), inside, taps = _pool_taps(x.shape, attrs)
    xp = np.full((*x.shape[:2], hp, wp), -np.inf, x.dtype)
    xp[inside] = x
    dxp, free = np.zeros_like(xp), np.ones(y.shape, bool)
    for tap in taps:  # the first tap holding the maximum takes the gradient
        hit = free & (xp[tap] == y)
        dxp[tap] += np.where(hit, dy, 0)
        free &= ~hit
    return [dxp[inside]]


def _average_pool(attrs, args, y, dy, want):
    x = args[0]
    (hp, wp), inside, taps = _pool_taps(x.shape, attrs)
    top, left, bottom, right = attrs.pads
    counted = np.zeros((hp, wp), x.dtype)  # the positions a window's divisor counts
    if attrs.count_include_pad:
        counted[: x.shape[2] + top + bottom, : x.shape[3] + left + right] = 1
    else:
        counted[inside[1:]] = 1
    share = dy / sum(counted[tap[1:]] for tap in taps)
    dxp = np.zeros((*x.shape[:2], hp, wp), dy.dtype)
    for tap in taps:
        dxp[tap] += share
    return [dxp[inside]]


def _batch_norm(attrs, args, y, dy, want):
    x, scale, _, _, var = args
    k = (scale / np.sqrt(var + var.dtype.type(attrs.epsilon))).astype(dy.dtype)
    return [dy * k.reshape((1, -1) + (1,) * (x.ndim - 2))]


def _concat(attrs, args, y, dy, want):
    present = [a for a in args if a is not None]
    parts = iter(np.split(dy, np.cumsum([a.shape[attrs.axis] for a in present])[:-1], attrs.axis))
    return [None if a is None else next(parts) for a in args]


def _binary(da, db):
    """A broadcasting binary op's rule from its two partial derivatives (a, b, dy) -> grad."""

    def rule(attrs, args, y, dy, want):
        a, b = args
        return [
            _unbroadcast(da(a, b, dy), np.shape(a)) if want[0] else None,
            _unbroadcast(db(a, b, dy), np.shape(b)) if want[1] else None,
        ]

    return rule


def _unary(fn):
    """A one-input op's rule from fn(attrs, x, y, dy) -> dL/dx."""
    return lambda attrs, args, y, dy, want: [fn(attrs, args[0], y, dy)]


def _transposed(attrs, x, y, dy):
    perm = [p % x.ndim for p in attrs.perm] if attrs.perm else list(range(x.ndim))[::-1]
    return dy.transpose(np.argsort(perm))


def _spatial_max(attrs, x, y, dy):
    hit = x == y  # ties share the gradient
    return hit * (dy / hit.sum(axis=tuple(range(2, x.ndim)), keepdims=True))


_RULES = {
    "Dense": _dense,
    "Conv": _conv,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _unary(lambda a, x, y, d: np.broadcast_to(d * (y.size / x.size), x.shape)),
    "GlobalMaxPool": _unary(_spatial_max),
    "Relu": _unary(lambda a, x, y, d: d * (x > 0)),
    "Sigmoid": _unary(lambda a, x, y, d: d * y * (1 - y)),
    "Tanh": _unary(lambda a, x, y, d: d * (1 - y * y)),
    "LeakyRelu": _unary(lambda a, x, y, d: np.where(x >= 0, d, d * d.dtype.type(a.alpha))),
    "Clip": _unary(lambda a, x, y, d: d * ((x >= a.min) & (x <= a.max))),
    "Softmax": _unary(lambda a, x, y, d: y * (d - (d * y).sum(axis=a.axis, keepdims=True))),
    "BatchNormalization": _batch_norm,
    "Add": _binary(lambda a, b, d: d, lambda a, b, d: d),
    "Sub": _binary(lambda a, b, d: d, lambda a, b, d: -d),
    "Mul": _binary(lambda a, b, d: d * b, lambda a, b, d: d * a),
    "Div": _binary(lambda a, b, d: d / b, lambda a, b, d: -d * a / (b * b)),
    "Concat": _concat,
    "Reshape": _unary(lambda a, x, y, d: d.reshape(x.shape)),
    "Flatten": _unary(lambda a, x, y, d: d.reshape(x.shape)),
    "Transpose": _unary(_transposed),
}
