"""Backpropagation through the IR's feed-forward ops, for retraining (passes/finetune.py).

    logits, tape = forward(graph, feeds, params)     # values by the runtime kernels
    loss, dlogits, correct = softmax_cross_entropy(logits, labels)
    grads = backward(tape, dlogits, params)          # {(node name, input index): dL/dparam}

`forward` evaluates the graph with the one IR evaluator (`passes.evaluate.run_nodes`), so
training sees exactly the inference semantics, and records every node's inputs and outputs on
a tape. `backward` walks the tape in reverse with each op's gradient rule, kept beside its
forward in the kernel record (`Kernel.grad`): Dense, Conv (any group, through im2col /
col2im), the pools, the activations, broadcasting Add/Sub/Mul/Div (the gradient is summed
over broadcast axes), Concat, Reshape, Flatten, Transpose, inference-form
BatchNormalization (its parameters frozen), Softmax and Where (in x and y; bool and integer
values carry no gradient, so masks, comparisons and ArgMax need no rule). Parameters are
the weights (input 1) and biases (input 2) of the Dense/Conv layers, keyed by (node name,
input index); every other constant stays as it is. When the graph ends in Softmax, the loss
is taken on the logits before it. Rules are vectorized; Conv's col2im and the pools loop over
kernel taps only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph, Node, Value
from dlcc.passes.evaluate import Params, run_nodes
from dlcc.passes.manager import weight_layers
from dlcc.runtime.kernels import get_kernel, load_all

TEMPERATURE = 4.0  # of distillation's soft targets (Hinton et al. used 2-20)


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
    """The ops whose kernel record has a gradient rule."""
    return frozenset(op for op, kernel in load_all().items() if kernel.grad is not None)


def untrainable(graph: Graph) -> list[tuple[str, str]]:
    """(op, first node name) of every op on the way to the logits that cannot be trained.

    Bool and integer values carry no gradient: an op that only makes them (a comparison,
    ArgMax) or only reads them (Cast of a mask) needs no rule, unless it makes the logits.
    """
    found: dict[str, str] = {}
    logits = logits_value(graph)
    for node in program(graph):
        if not (_carries_gradient(node) or logits in node.outputs):
            continue
        if get_kernel(node.op).grad is None or len(node.outputs) != 1:
            found.setdefault(node.op, node.name)
    return list(found.items())


def _differentiable(value: Value | None) -> bool:
    return value is not None and value.plain_dtype == "float32"


def _carries_gradient(node: Node) -> bool:
    """Whether a gradient could pass through `node`: a float output from a float input."""
    return any(map(_differentiable, node.outputs)) and any(
        _differentiable(v) and not v.is_constant for v in node.inputs
    )


def forward(graph: Graph, feeds: dict[str, np.ndarray], params: Params) -> tuple[np.ndarray, Tape]:
    """The logits for `feeds` with `params` in place of the graph's weights, and the tape."""
    entries = list(run_nodes(graph, feeds, params, program(graph)))
    logits = logits_value(graph)
    if logits.producer is None:
        return feeds[logits.name], Tape(entries, list(graph.inputs), logits)
    node, _, outs = next(e for e in entries if e[0] is logits.producer)
    return outs[node.outputs.index(logits)], Tape(entries, list(graph.inputs), logits)


def backward(tape: Tape, dlogits: np.ndarray, params: Params, wrt_inputs: bool = False) -> dict:
    """dL/dparam for every parameter (and dL/dinput by input name when `wrt_inputs`)."""
    needs = {id(v) for v in tape.inputs if _differentiable(v)} if wrt_inputs else set()
    for node, _, _ in tape.entries:
        if any((node.name, i) in params for i in range(len(node.inputs))) or any(
            v is not None and id(v) in needs for v in node.inputs
        ):
            needs.update(id(v) for v in node.outputs if _differentiable(v))
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
        for i, dx in enumerate(get_kernel(node.op).grad(node.attrs, args, outs[0], dy, want)):
            if dx is None or not want[i]:
                continue
            key = (node.name, i) if (node.name, i) in params else id(node.inputs[i])
            store = result if isinstance(key, tuple) else grads
            store[key] = store[key] + dx if key in store else dx
    if wrt_inputs:
        result.update({v.name: grads.get(id(v)) for v in tape.inputs})
    return result


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, soft: tuple[np.ndarray, float] | None = None
) -> tuple[float, np.ndarray, int]:
    """Mean cross-entropy of softmax(logits [N, classes]), its gradient, and the top-1 hits.

    `soft=(teacher_logits, weight)` distills (Hinton et al., 2015): the loss becomes
    (1 - weight) * CE(labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(logits / T)),
    T = TEMPERATURE.
    """
    rows = np.arange(len(labels))
    logp = _log_softmax(logits)
    d = np.exp(logp)
    d[rows, labels] -= 1
    loss = float(-logp[rows, labels].mean())
    if soft is not None:
        teacher, weight = soft
        logt, logq = _log_softmax(teacher / TEMPERATURE), _log_softmax(logits / TEMPERATURE)
        target = np.exp(logt)
        hinted = (target * (logt - logq)).sum(axis=1).mean() * TEMPERATURE**2
        loss = (1 - weight) * loss + weight * float(hinted)
        d = (1 - weight) * d + (weight * TEMPERATURE) * (np.exp(logq) - target)
    d /= len(labels)
    correct = int(np.count_nonzero(logits.argmax(axis=1) == labels))
    return loss, d.astype(logits.dtype, copy=False), correct


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))
