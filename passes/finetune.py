"""Retraining with labels: Deep Compression's prune -> retrain and share -> retrain steps.

    finetune(epochs=2, lr=0.001, batch=128, seed=0, weight_decay=0, optimizer=adam)

Minimizes the softmax cross-entropy of the graph's logits (the input of a final Softmax, if
any) on `ctx.train` (input name -> samples, plus "labels": class ids) by numpy backprop
(passes/backprop.py). What trains depends on each Dense/Conv weight's encoding:

- dense: weights and biases train freely (biases always do);
- sparse (pruned): zeros stay zero: the gradient is masked, and the weights after each step;
- codebook (k-means shared): the centroids train; a centroid's gradient is the sum of the
  gradients of the weights in its cluster (Han et al., ICLR 2016, section 3.3), a pruned
  layer's 0.0 entry stays 0, and the weights are written back as codebook[index] with the
  updated, sorted codebook in the encoding (never more values than before);
- int8 (quantized): refused with a note: run finetune before quantize.

Optimizer: Adam (0.9, 0.999, eps 1e-8), or SGD with momentum 0.9 (`optimizer=sgd`), the rate
on a cosine decay from `lr` to 0 over the pass, decoupled weight decay (w -= lr * wd * w per
step, centroids too). Adam is the default: it reached the MNIST targets in the fewest epochs,
while SGD needed a rate per stage (summed centroid gradients dwarf weight gradients) and ended
no better. Mini-batches follow np.random.default_rng(seed) permutations: same seed and data,
same weights, bit for bit. The progress description shows each epoch's training loss and
accuracy; the log (stored in the bundle) keeps at most LOGGED_EPOCHS of them, evenly spaced.

Without training data, or when the graph has an op with no gradient rule (LSTM, Gather...),
the pass changes nothing and adds a note naming the op and its first node; the caller falls
back to calibration-only recovery. `with_retraining(pipeline_text, epochs, steps=3, seed=0)`
turns a pipeline into an iterative prune -> retrain schedule, for `dlcc compile --finetune
EPOCHS --train train.npz`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dlcc.errors import PassError
from dlcc.ir import Graph
from dlcc.passes.backprop import backward, forward, logits_value, softmax_cross_entropy, untrainable
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    Pipeline,
    Step,
    option,
    parse_pipeline,
    register_pass,
    weight_layers,
)

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
LOGGED_EPOCHS = 4
# with_retraining's finetune options, tuned on the MNIST LeNets (benchmarks/retrain.py): Adam at
# 5e-4 after the intermediate prunes, which keeps the net near the original (LeNet-300-100 over
# four seeds: 1.63% mean test error, against ~1.75% at 2e-3); after the last prune 2e-3 (the
# samples' training rate; 5e-4 left 1.8%) with weight decay 0.1, to regularize the smallest
# net (on earlier steps it made worse masks and larger bundles); after kmeans 2e-4.
RETRAIN = {
    "prune": "lr=0.0005",
    "last prune": "lr=0.002,weight_decay=0.1",
    "kmeans": "lr=0.0002",
}
# The entropy constraint kmeans gets when centroid training follows (passes/kmeans.py): on the
# retrained LeNet-5 it cut the bundle 14% (46.4 -> 39.9 KB) at 0.66-0.67% error.
RETRAIN_RATE = 0.5


@register_pass
class Finetune(Pass):
    """Retrain the Dense/Conv weights and biases on ctx.train, keeping masks and codebooks."""

    name = "finetune"
    summary = "retrain on labelled data (numpy backprop, Adam); keeps pruning masks and codebooks"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        epochs: int = option(2, "passes over the training data", 1, 10_000)
        lr: float = option(1e-3, "learning rate (cosine decay to 0 over the pass)", 0.0, 1.0)
        batch: int = option(128, "mini-batch size", 1, 65_536)
        seed: int = option(0, "seed of the mini-batch shuffling", 0, 2**31 - 1)
        weight_decay: float = option(0.0, "decoupled (AdamW) weight decay", 0.0, 1.0)
        optimizer: str = option("adam", "update rule", choices=("adam", "sgd"))

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        refusal = _refusal(graph, ctx)
        if refusal:
            ctx.notes.append(refusal)
            return {"skipped": refusal}
        data, labels = _dataset(graph, ctx.train)
        slots = [_Slot.of(node, i) for node in weight_layers(graph) for i in (1, 2)]
        slots = {(s.node.name, s.index): s for s in slots if s is not None}
        params = {key: s.weights() for key, s in slots.items()}
        rng = np.random.default_rng(options.seed)
        per_epoch = -(-len(labels) // options.batch)
        total, history, description = options.epochs * per_epoch, [], "finetune"
        for epoch in range(options.epochs):
            order = rng.permutation(len(labels))
            loss_sum, hits = 0.0, 0
            for b in range(per_epoch):
                rows = order[b * options.batch : (b + 1) * options.batch]
                feeds = {
                    v.name: np.take(data[v.name], rows, axis=v.batch_axis).astype(v.dtype)
                    for v in graph.inputs
                }
                logits, tape = forward(graph, feeds, params)
                loss, dlogits, correct = softmax_cross_entropy(logits, labels[rows])
                step = epoch * per_epoch + b
                lr = options.lr * 0.5 * (1 + math.cos(math.pi * step / total))
                for key, grad in backward(tape, dlogits, params).items():
                    params[key] = slots[key].update(grad, lr, step + 1, options)
                loss_sum, hits = loss_sum + loss * len(rows), hits + correct
                if ctx.progress and b + 1 < per_epoch:
                    ctx.progress(description, step + 1, total)
            history.append((epoch + 1, loss_sum / len(labels), hits / len(labels)))
            description = (
                f"finetune (epoch {epoch + 1}: loss {history[-1][1]:.4f}, "
                f"accuracy {100 * history[-1][2]:.2f}%)"
            )
            if ctx.progress:  # the epoch's last step, shown with its summary
                ctx.progress(description, (epoch + 1) * per_epoch, total)
        shown = np.unique(np.linspace(0, len(history) - 1, LOGGED_EPOCHS).round().astype(int))
        epochs = [
            {"epoch": e, "loss": float(f"{loss:.4g}"), "accuracy": round(acc, 5)}
            for e, loss, acc in (history[i] for i in shown)
        ]
        return {"epochs": epochs, "layers": _write_back(graph, slots, params)}


@dataclasses.dataclass
class _Slot:
    """One trained tensor: the array the optimizer updates, and how it maps onto the layer."""

    node: object
    index: int
    value: np.ndarray  # the weights or bias, or a codebook layer's centroids
    mask: np.ndarray | None  # 1 where `value` may change (sparse weights, free centroids)
    labels: np.ndarray | None  # codebook: the cluster of every weight (flat)
    m: np.ndarray = None
    v: np.ndarray = None

    @classmethod
    def of(cls, node, index: int) -> _Slot | None:
        """The slot of input `index` of weight layer `node`, or None when it has none."""
        value = node.inputs[index] if index < len(node.inputs) else None
        if value is None or not value.is_constant:
            return None
        data, enc = value.data, value.encoding
        if index == 1 and enc.codebook is not None:
            book = np.asarray(enc.codebook, data.dtype)
            labels = np.searchsorted(book, data.reshape(-1))
            if not np.array_equal(book[np.minimum(labels, len(book) - 1)], data.reshape(-1)):
                raise PassError(f"layer {node.name!r}: weights are not codebook entries")
            free = (book != 0) if enc.sparse else np.ones(len(book), bool)
            return cls(node, index, book.copy(), free.astype(data.dtype), labels)
        mask = (data != 0).astype(data.dtype) if index == 1 and enc.sparse else None
        return cls(node, index, data.copy(), mask, None)

    def weights(self) -> np.ndarray:
        """The layer input these values stand for (codebook[labels] for shared weights)."""
        if self.labels is None:
            return self.value
        return self.value[self.labels].reshape(self.node.inputs[self.index].data.shape)

    def update(self, grad: np.ndarray, lr: float, t: int, options) -> np.ndarray:
        """One optimizer step (number `t`) from dL/d(layer input); returns the new input."""
        if self.labels is not None:  # per centroid: the sum over its cluster
            grad = np.bincount(self.labels, grad.reshape(-1), len(self.value))
        grad = grad.astype(self.value.dtype, copy=False)
        if self.mask is not None:
            grad = grad * self.mask
        if self.m is None:
            self.m, self.v = np.zeros_like(self.value), np.zeros_like(self.value)
        if options.weight_decay:
            self.value -= (lr * options.weight_decay) * self.value
        self.m *= BETA1
        if options.optimizer == "sgd":
            self.m += grad
            self.value -= lr * self.m
        else:
            self.m += (1 - BETA1) * grad
            self.v *= BETA2
            self.v += (1 - BETA2) * grad * grad
            rate = lr * math.sqrt(1 - BETA2**t) / (1 - BETA1**t)
            self.value -= rate * self.m / (np.sqrt(self.v) + EPS)
        if self.mask is not None and self.labels is None:
            self.value *= self.mask
        return self.weights()


def _refusal(graph: Graph, ctx: PassContext) -> str | None:
    """Why the graph cannot be retrained now (the note to show), or None."""
    if ctx.train is None:
        return "finetune: no --train data; skipped"
    bad = untrainable(graph)
    if bad:
        ops = ", ".join(f"{op} (node {name!r})" for op, name in bad)
        return (
            f"finetune: cannot backpropagate through {ops}; skipped, weights unchanged "
            "(falling back to calibration-only recovery)"
        )
    logits = logits_value(graph)
    if len(logits.shape) != 2 or logits.batch_axis != 0:
        return f"finetune: output {logits.name!r} is {logits.dims()}, not N×classes logits; skipped"
    for node in weight_layers(graph):
        if node.inputs[1].encoding.int8:
            return f"finetune: layer {node.name!r} is int8 already; finetune before quantize"
    return None


def _dataset(graph: Graph, train: dict) -> tuple[dict, np.ndarray]:
    """The training arrays by input name and the int64 labels, checked against the graph."""
    if "labels" not in train:
        raise PassError("training data has no 'labels' array (class ids)")
    labels = np.asarray(train["labels"]).reshape(-1).astype(np.int64)
    classes = logits_value(graph).shape[1]
    if not labels.size or labels.min() < 0 or labels.max() >= classes:
        raise PassError(f"training labels must be one or more class ids in [0, {classes})")
    for v in graph.inputs:
        if v.name not in train or v.batch_axis is None:
            raise PassError(f"training data has no batched array for input {v.name!r}")
        if np.shape(train[v.name])[v.batch_axis] != len(labels):
            raise PassError(f"training input {v.name!r} and 'labels' hold different counts")
    return train, labels


def _write_back(graph: Graph, slots: dict, params: dict) -> list[dict]:
    """Put the trained arrays into the graph (codebooks updated); one stats row per layer."""
    rows = []
    for (name, index), slot in slots.items():
        value = slot.node.inputs[index]
        data = params[(name, index)].astype(value.data.dtype)
        encoding = value.encoding
        if slot.labels is not None:
            book = np.unique(data)
            if encoding.sparse:
                book = np.union1d(book, np.zeros(1, data.dtype))
            encoding = dataclasses.replace(encoding, codebook=tuple(book.tolist()))
        before = value.data
        graph.replace_weight(slot.node, index, data, encoding)
        if index == 1:
            change = np.linalg.norm(data - before) / max(np.linalg.norm(before), 1e-30)
            kind = (
                "weights" if slot.mask is None else "sparse" if slot.labels is None else "centroids"
            )
            trained = int(slot.value.size if slot.mask is None else slot.mask.sum())
            row = {"layer": name, "trains": kind, "values": trained}
            rows.append({**row, "change": float(f"{change:.3g}")})
    return rows


def with_retraining(pipeline_text: str, epochs: int, steps: int = 3, seed: int = 0) -> str:
    """`pipeline_text` (text or -O level) with Deep Compression's iterative retraining.

    Every `prune(sparsity=s)` becomes `steps` prunes, each followed by a finetune: step k of
    n keeps (1 - s) ** (k / n) of the weights, a geometric schedule in which every step
    removes the same fraction of the survivors (s = 0.92, n = 3: sparsity 0.569, 0.814,
    0.92; per-layer `layers=` values alike; a linear s/3, 2s/3, s would leave most of the
    cut, 39% -> 8% kept, to the last step). Magnitude pruning drops the zeros first, so each
    step keeps the previous mask. Intermediate steps retrain `epochs`, the last one (the
    smallest net) 3 * `epochs` with weight decay; a threshold prune (quality=) stays one
    step. `kmeans` gets rate=RETRAIN_RATE (unless it sets one) and is followed by
    ceil(epochs / 2) epochs of centroid training. Options come from `RETRAIN`, plus `seed`
    when nonzero; a step the pipeline already follows with a finetune gets no second one.
    with_retraining("-O2", 10) gives (one line):
        prune(sparsity=0.569113,layers=Conv#0:0.133761;#-1:0.206299;Conv:0.468671),
        finetune(epochs=10,lr=0.0005),
        prune(sparsity=0.814336,layers=Conv#0:0.24963;#-1:0.370039;Conv:0.717689),
        finetune(epochs=10,lr=0.0005),
        prune(sparsity=0.92,layers=Conv#0:0.35;#-1:0.5;Conv:0.85),
        finetune(epochs=30,lr=0.002,weight_decay=0.1),quantize,huffman
    """

    def tune(after: str, epochs: int) -> Step:
        seeded = (("seed", str(seed)),) if seed else ()
        tuned = tuple(tuple(item.split("=")) for item in RETRAIN[after].split(","))
        return Step("finetune", (("epochs", str(epochs)), *tuned, *seeded))

    steps_in = parse_pipeline(pipeline_text).steps
    out = []
    for i, step in enumerate(steps_in):
        kind, last = step.name, epochs
        if step.name == "prune" and step.typed().quality is None and steps > 1:
            for k in range(1, steps):
                out += [_scaled_prune(step, k / steps), tune("prune", epochs)]
            kind, last = "last prune", 3 * epochs
        elif step.name == "kmeans":
            last = -(-epochs // 2)
            if "rate" not in dict(step.options):
                step = Step("kmeans", (*step.options, ("rate", str(RETRAIN_RATE))))
        out.append(step)
        follows = i + 1 < len(steps_in) and steps_in[i + 1].name == "finetune"
        if kind in RETRAIN and not follows:
            out.append(tune(kind, last))
    return str(Pipeline(tuple(out)))


def _scaled_prune(step: Step, power: float) -> Step:
    """A prune step keeping (1 - sparsity) ** power of the weights, per layer alike."""
    opts = step.typed()

    def sparsity(s: float) -> str:
        return f"{1 - (1 - s) ** power:.6g}"

    layers = ";".join(f"{k}:{sparsity(float(v))}" for k, v in opts.layers.items)
    options = [(k, v) for k, v in step.options if k not in ("sparsity", "layers")]
    options.append(("sparsity", sparsity(opts.sparsity)))
    return Step("prune", tuple(options + ([("layers", layers)] if layers else [])))
