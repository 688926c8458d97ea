"""Retraining with labels: Deep Compression's prune -> retrain and share -> retrain steps.

    finetune(epochs=2, lr=0.001, batch=128, seed=0, weight_decay=0, optimizer=adam, distill=0)

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
same weights, bit for bit. `distill=w` takes w of the loss from the logits of the graph as
the pass receives it, as soft targets (Hinton et al., 2015; backprop.softmax_cross_entropy),
which holds a net being pruned (passes/surgery.py, which trains with this loop) near the
original. The progress description shows each epoch's training loss and
accuracy; the log (stored in the bundle) keeps at most LOGGED_EPOCHS of them, evenly spaced.

Without training data, or when the graph has an op with no gradient rule (LSTM, Gather...),
the pass changes nothing and adds a note naming the op and its first node; the caller falls
back to calibration-only recovery. `with_retraining(pipeline_text, epochs, seed=0)` turns a
pipeline into one that prunes while it retrains (surgery) and trains the k-means centroids,
for `dlcc compile --finetune EPOCHS --train train.npz --seed S`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dlcc.errors import PassError
from dlcc.ir import Graph
from dlcc.passes.backprop import backward, forward, logits_value, softmax_cross_entropy, untrainable
from dlcc.passes.manager import (
    PRESETS,
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
# with_retraining's options, measured on the MNIST LeNets (benchmarks/retrain.py): surgery at
# Adam 2e-3 (at 1e-3 the pruned MLP ended at 98.3% training accuracy and 2.1% test error), half
# its loss from the original's logits (1.62-1.72% over two seeds against 1.74-1.96% without),
# weight decay 0.1 (with it, 20 epochs: 1.64%; the old three prune -> finetune steps to the
# same rates, 50 epochs: 1.98%); centroid training after kmeans at 2e-4.
RETRAIN = {"prune": "lr=0.002,distill=0.5,weight_decay=0.1", "kmeans": "lr=0.0002"}
# The rates -O2 / -O3 prune to when retraining follows, past Han et al.'s: the first Conv keeps
# 50%, later ones 7%, the first Dense 5%, a second Dense before the output 4%, a third 2%, the
# output 20% (LeNet-300-100 keeps 5% / 4% / 20%, Han et al. 8% / 9% / 26%; LeNet-5 50% / 7% /
# 2% / 20%, Han et al. 66% / 12% / 8% / 19%; Dynamic Network Surgery 1.8% / 1.8% / 5.5% and
# 14% / 3.1% / 0.7% / 4.3%). Measured (seed 0): LeNet-5's third layer at 2.5%: 98.3x, 0.66%
# test error; at 4%: 73x, 0.67%; at 2%: 109x, 0.65-0.70% over three seeds. LeNet-300-100 at
# 4% / 2% / 20%: 80-81x but 1.62-1.77% (the bar: 1.66%); at 4.5% / 4% / 20%: 72x, 1.56-1.68%;
# at 5% / 4% / 20%: 67.7-68.3x, 1.56-1.62% over three seeds.
# Keeping 14 sqrt(n) of a layer's n weights (2.9% of LeNet-300-100's first layer, 2.2% of
# LeNet-5's third) cost 1.2-1.3 points on both.
RETRAINED_RATES = (
    ("sparsity", "0.95"),
    ("layers", "Conv#0:0.5;#-1:0.8;Dense#1:0.96;Dense#-2:0.98;Conv:0.93"),
)
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
        distill: float = option(
            0.0, "weight of the graph's logits before the pass as soft targets", 0.0, 1.0
        )

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        why = refusal(graph, ctx)
        if why:
            ctx.notes.append(why)
            return {"skipped": why}
        slots = [Slot.of(node, i) for node in weight_layers(graph) for i in (1, 2)]
        slots = {(s.node.name, s.index): s for s in slots if s is not None}
        epochs = train(graph, ctx, options, slots, self.name)
        return {"epochs": epochs, "layers": write_back(graph, slots)}


def train(graph: Graph, ctx: PassContext, options, slots: dict, name: str, on_step=None) -> list:
    """Run `options.epochs` of mini-batch training of `slots` on ctx.train; the logged epochs.

    `options` has the fields of Finetune.Options; `on_step(step, total)` runs before every
    optimizer step (surgery moves its masks there). Progress is reported under `name`.
    """
    data, labels = _dataset(graph, ctx.train)
    params = {key: s.weights() for key, s in slots.items()}
    teacher = _logits(graph, data, params, options.batch) if options.distill else None
    rng = np.random.default_rng(options.seed)
    per_epoch = -(-len(labels) // options.batch)
    total, history, description = options.epochs * per_epoch, [], name
    for epoch in range(options.epochs):
        order = rng.permutation(len(labels))
        loss_sum, hits = 0.0, 0
        for b in range(per_epoch):
            rows = order[b * options.batch : (b + 1) * options.batch]
            step = epoch * per_epoch + b
            if on_step:
                on_step(step, total)
                params = {key: s.weights() for key, s in slots.items()}
            logits, tape = forward(graph, _feeds(graph, data, rows), params)
            soft = None if teacher is None else (teacher[rows], options.distill)
            loss, dlogits, correct = softmax_cross_entropy(logits, labels[rows], soft)
            lr = options.lr * 0.5 * (1 + math.cos(math.pi * step / total))
            for key, grad in backward(tape, dlogits, params).items():
                params[key] = slots[key].update(grad, lr, step + 1, options)
            loss_sum, hits = loss_sum + loss * len(rows), hits + correct
            if ctx.progress and b + 1 < per_epoch:
                ctx.progress(description, step + 1, total)
        history.append((epoch + 1, loss_sum / len(labels), hits / len(labels)))
        description = (
            f"{name} (epoch {epoch + 1}: loss {history[-1][1]:.4f}, "
            f"accuracy {100 * history[-1][2]:.2f}%)"
        )
        if ctx.progress:  # the epoch's last step, shown with its summary
            ctx.progress(description, (epoch + 1) * per_epoch, total)
    shown = np.unique(np.linspace(0, len(history) - 1, LOGGED_EPOCHS).round().astype(int))
    return [
        {"epoch": e, "loss": float(f"{loss:.4g}"), "accuracy": round(acc, 5)}
        for e, loss, acc in (history[i] for i in shown)
    ]


def _feeds(graph: Graph, data: dict, rows: np.ndarray) -> dict:
    """The mini-batch `rows` of every graph input."""
    return {
        v.name: np.take(data[v.name], rows, axis=v.batch_axis).astype(v.dtype) for v in graph.inputs
    }


def _logits(graph: Graph, data: dict, params: dict, batch: int) -> np.ndarray:
    """The logits of the graph as it stands (the distillation teacher) for every sample."""
    count = len(data["labels"])
    parts = [
        forward(graph, _feeds(graph, data, np.arange(i, min(i + batch, count))), params)[0]
        for i in range(0, count, batch)
    ]
    return np.concatenate(parts)


@dataclasses.dataclass
class Slot:
    """One trained tensor: the array the optimizer updates, and how it maps onto the layer."""

    node: object
    index: int
    value: np.ndarray  # the weights or bias, or a codebook layer's centroids
    mask: np.ndarray | None  # 1 where `value` may change (sparse weights, free centroids)
    labels: np.ndarray | None  # codebook: the cluster of every weight (flat)
    m: np.ndarray = None
    v: np.ndarray = None

    @classmethod
    def of(cls, node, index: int) -> Slot | None:
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


def refusal(graph: Graph, ctx: PassContext) -> str | None:
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


def write_back(graph: Graph, slots: dict) -> list[dict]:
    """Put the trained arrays into the graph (codebooks updated); one stats row per layer."""
    rows = []
    for (name, index), slot in slots.items():
        value = slot.node.inputs[index]
        data = slot.weights().astype(value.data.dtype)
        encoding = value.encoding
        if slot.mask is not None and slot.labels is None:  # surgery's new masks
            encoding = dataclasses.replace(encoding, sparse=True)
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


def with_retraining(pipeline_text: str, epochs: int, seed: int = 0) -> str:
    """`pipeline_text` (text or -O level) with retraining, for `dlcc compile --finetune EPOCHS`.

    Every fixed-rate `prune` becomes a `surgery` (passes/surgery.py) of `epochs` epochs that
    prunes gradually to the same rates while retraining; a named level (-O2, -O3) prunes
    past Han et al.'s rates, to RETRAINED_RATES. A threshold prune (quality=) is followed by
    a finetune of `epochs`. `kmeans` gets rate=RETRAIN_RATE (unless it sets one) and is
    followed by ceil(epochs / 2) epochs of centroid training. Options come from RETRAIN, plus
    `seed` when nonzero; a step the pipeline already follows with a finetune gets no second
    one. with_retraining("-O3", 10) gives (one line):
        surgery(sparsity=0.95,layers=Conv#0:0.5;#-1:0.8;Dense#1:0.96;Dense#-2:0.98;Conv:0.93,
        epochs=10,lr=0.002,distill=0.5,weight_decay=0.1),kmeans(layers=#-1:8,rate=0.5),
        finetune(epochs=5,lr=0.0002),quantize,huffman
    """
    seeded = (("seed", str(seed)),) if seed else ()

    def tuned(name: str, kind: str, epochs: int, *options) -> Step:
        items = tuple(tuple(item.split("=")) for item in RETRAIN[kind].split(","))
        return Step(name, (*options, ("epochs", str(epochs)), *items, *seeded))

    named = pipeline_text.strip().lstrip("-") in PRESETS
    steps_in = parse_pipeline(pipeline_text).steps
    out = []
    for i, step in enumerate(steps_in):
        follows = i + 1 < len(steps_in) and steps_in[i + 1].name == "finetune"
        if step.name == "prune" and step.typed().quality is None:
            rates = [(k, v) for k, v in step.options if k in ("sparsity", "layers")]
            out.append(tuned("surgery", "prune", epochs, *(RETRAINED_RATES if named else rates)))
            continue
        if step.name == "kmeans" and "rate" not in dict(step.options):
            step = Step("kmeans", (*step.options, ("rate", str(RETRAIN_RATE))))
        out.append(step)
        if step.name in RETRAIN and not follows:
            out.append(
                tuned("finetune", step.name, -(-epochs // 2) if step.name == "kmeans" else epochs)
            )
    return str(Pipeline(tuple(out)))
