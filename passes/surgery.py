"""Gradual magnitude pruning during retraining (Zhu & Gupta, 2017), per Dense/Conv layer.

    surgery(sparsity=0.95, epochs=10, ramp=0.5, lr=0.002, distill=0.5, weight_decay=0.1, ...)

One training run (passes/finetune.py's loop: Adam, cosine rate, optional distillation from
the graph as the pass receives it) that prunes as it trains. Every MASK_EVERY steps of the
first `ramp` of the run each layer keeps its largest weights by magnitude, the fraction
pruned rising on a cubic from the layer's sparsity s0 when the pass starts to its target s:

    s(t) = s + (s0 - s) * (1 - t / T)^3,   T = ramp * steps

so it cuts fast while the net has weights to spare and slowly near the end; the rest of the
run retrains the final mask. Pruned weights stay zero: their gradient is masked. (Splicing
them back as Dynamic Network Surgery does, Guo et al., NIPS 2016, i.e. training every weight
on the gradient of its masked value so that a cut weight can return, did worse with Adam on
LeNet-300-100: 2.5-3.2% test error against 1.7-2.0%, its masks churning at every update.)
The target is `sparsity`, per layer with `layers=`. The weights leave with a sparse
encoding, as prune's do; a graph already shared by kmeans, or int8, is refused with a note.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph
from dlcc.passes.finetune import Finetune, Slot, refusal, train, write_back
from dlcc.passes.manager import PassContext, option, register_pass, weight_layers
from dlcc.passes.prune import keep_largest

MASK_EVERY = 32  # optimizer steps between mask updates while the sparsity ramps up


@register_pass
class Surgery(Finetune):
    """Prune each layer to its target gradually while retraining on ctx.train."""

    name = "surgery"
    summary = "gradual magnitude pruning while retraining (cubic schedule, Adam, distillation)"
    main = "sparsity"

    @dataclasses.dataclass(frozen=True)
    class Options(Finetune.Options):
        sparsity: float = option(0.95, "each layer's final fraction of zero weights", 0.0, 0.999)
        ramp: float = option(0.5, "fraction of the run over which the sparsity rises", 0.0, 1.0)

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        nodes = weight_layers(graph)
        shared = [n.name for n in nodes if n.inputs[1].encoding.codebook is not None]
        why = refusal(graph, ctx) or (
            shared and f"surgery: layer {shared[0]!r} is shared already; run it before kmeans"
        )
        if why:
            ctx.notes.append(why)
            return {"skipped": why}
        slots = {}
        for node in nodes:
            w = node.inputs[1].data
            slots[(node.name, 1)] = Slot(node, 1, w.copy(), (w != 0).astype(w.dtype), None)
            bias = Slot.of(node, 2)
            if bias is not None:
                slots[(node.name, 2)] = bias
        start = {n.name: 1 - float(slots[(n.name, 1)].mask.mean()) for n in nodes}
        target = {n.name: self.for_layer(options, n, nodes) for n in nodes}

        def prune(step: int, total: int) -> None:
            ramp = min(round(options.ramp * total), total - 1)
            if step <= ramp and (step % MASK_EVERY == 0 or step == ramp):
                for node in nodes:
                    s = schedule(start[node.name], target[node.name], step / ramp if ramp else 1)
                    slot = slots[(node.name, 1)]
                    slot.mask = keep_largest(np.abs(slot.value), s).astype(slot.value.dtype)
                    slot.value *= slot.mask

        epochs = train(graph, ctx, options, slots, self.name, on_step=prune)
        rows = write_back(graph, slots)
        for row, node in zip(rows, nodes):
            row["sparsity"] = round(1 - float(np.mean(node.inputs[1].data != 0)), 4)
        return {"epochs": epochs, "layers": rows}


def schedule(start: float, target: float, t: float) -> float:
    """The sparsity at fraction `t` of the ramp: cubic from `start` (t = 0) to `target` (t >= 1)."""
    return target + (start - target) * (1 - min(t, 1.0)) ** 3
