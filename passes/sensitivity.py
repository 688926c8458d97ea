"""Per-layer sensitivity: how much each layer alone can be pruned, shared or quantized.

    for each layer L and setting s:  delta(L, s) = score(model with only L compressed by s) - score

The score is top-1 accuracy with labels, or top-1 agreement with the uncompressed model
without. A change is **safe** when it stays within the evaluation noise band: the binomial
standard error of the score on the data (or a `noise_sigma` the user measured from repeated
trainings — the "iso-training noise" idea), **unsafe** otherwise. The pass changes nothing;
it records the table, which `dlcc explain` shows ranked, and which the automatic budget uses.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np

from dlcc.errors import PassError
from dlcc.ir import Graph
from dlcc.passes.calibrate import batches
from dlcc.passes.cluster1d import kmeans_1d
from dlcc.passes.evaluate import evaluate
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    Weight,
    node_weights,
    option,
    register_pass,
    weight_layers,
)
from dlcc.passes.prune import keep_largest
from dlcc.passes.quantize import _quantize_channels

PRUNE = (0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95)
BITS = (8, 6, 5, 4, 3)


def targets(graph: Graph, data: dict, batch: int = 256) -> np.ndarray:
    """What top-1 is scored against: the labels, or without them the graph's own top-1 now."""
    if "labels" in data:
        return np.asarray(data["labels"]).reshape(-1)
    return predictions(graph, data, batch)


def scorer(graph: Graph, data: dict, truth: np.ndarray, batch: int = 256):
    """A function giving the top-1 score of `graph` (as it is when called) against `truth`."""
    inputs = {k: v for k, v in data.items() if k != "labels"}

    def score() -> float:
        return float((predictions(graph, inputs, batch) == truth).mean())

    return score


def predictions(graph: Graph, data: dict, batch: int) -> np.ndarray:
    """Top-1 class of the graph's first output for every sample, streamed in batches."""
    out = graph.outputs[0]
    if not is_classifier(out.shape):
        raise PassError(f"output {out.name!r} is not [batch, classes]: no top-1 to score")
    tops = []
    for feeds in batches(graph, data, batch):
        for value, array in evaluate(graph, feeds):
            if value is out:
                tops.append(array.reshape(len(array), -1).argmax(1))
    return np.concatenate(tops)


def is_classifier(shape: tuple[int, ...]) -> bool:
    """Whether an output of `shape` holds class scores: [batch, classes] (trailing 1s too)."""
    return len(shape) >= 2 and shape[1] > 1 and all(d == 1 for d in shape[2:])


def noise_band(score: float, samples: int, sigma: float | None = None) -> float:
    """The evaluation noise: `sigma` if given, else the binomial standard error of `score`."""
    return sigma if sigma is not None else float(np.sqrt(score * (1 - score) / max(samples, 1)))


def compressed(weight: Weight, kind: str, setting: float) -> np.ndarray:
    """The weight as one pass at one setting would leave it."""
    w = weight.value.data
    if kind == "prune":
        return np.where(keep_largest(np.abs(w), setting), w, 0).astype(w.dtype)
    if kind == "kmeans":
        keep = w != 0
        centroids, labels = kmeans_1d(w[keep], 2 ** int(setting))
        shared = np.zeros_like(w)
        shared[keep] = centroids[labels]
        return shared
    data, _ = _quantize_channels(w, weight.value.encoding, weight.channel_axis)
    return data


@contextlib.contextmanager
def layer_compressed(graph: Graph, layer: str, kind: str, setting: float):
    """Within the block, every weight of node `layer` as one pass at one setting would leave
    it; the originals back after."""
    (node,) = [n for n in weight_layers(graph) if n.name == layer]
    originals = []
    for weight in node_weights(node):
        originals.append(weight.value.data)
        weight.value.data = compressed(weight, kind, setting)
    try:
        yield
    finally:
        for weight, original in zip(node_weights(node), originals):
            weight.value.data = original


def table_jobs(graph: Graph, settings: dict) -> list[tuple[str, str, float]]:
    """(layer, pass, setting) of every table entry, in the order of the graph."""
    layers = [n.name for n in weight_layers(graph)]
    return [(n, kind, s) for n in layers for kind, values in settings.items() for s in values]


def layer_table(
    graph: Graph,
    data: dict,
    settings: dict,
    sigma: float | None = None,
    progress=None,
) -> dict:
    """delta(L, s) of the top-1 score (`targets`) for every weight layer and setting, with
    the noise band and safe marks."""
    score = scorer(graph, data, targets(graph, data))
    base = score()
    jobs = table_jobs(graph, settings)
    deltas = []
    for done, job in enumerate(jobs):
        with layer_compressed(graph, *job):
            deltas.append(score() - base)
        if progress:
            progress("sensitivity", done + 1, len(jobs))
    samples = len(next(iter(v for k, v in data.items() if k != "labels")))
    return ranked(jobs, deltas, base, samples, sigma)


def ranked(
    jobs: list[tuple], deltas: list[float], base: float, samples: int, sigma: float | None = None
) -> dict:
    """The table of `jobs`' score changes `deltas` from `base`, worst first, with the noise
    band of `base` on `samples` and each entry's safe mark."""
    band = noise_band(base, samples, sigma)
    rows = [
        {
            "layer": layer,
            "pass": kind,
            "setting": setting,
            "delta": round(delta, 6),
            "safe": bool(-delta <= band),
        }
        for (layer, kind, setting), delta in zip(jobs, deltas)
    ]
    rows.sort(key=lambda r: r["delta"])
    return {"baseline": base, "noise_band": band, "samples": samples, "layers": rows}


@register_pass
class Sensitivity(Pass):
    name = "sensitivity"
    summary = "measure each layer's accuracy change when pruned/shared/quantized alone"

    @dataclasses.dataclass(frozen=True)
    class Options(PassOptions):
        noise_sigma: float | None = option(
            None, "the noise band (default: binomial standard error of the score)", 0.0, 1.0
        )
        quantize: bool = option(True, "also measure int8 quantization per layer")

    def run(self, graph: Graph, options: Options, ctx: PassContext) -> dict:
        data = ctx.evaluation or ctx.calibration
        if data is None:
            ctx.notes.append("sensitivity: no --data (or --calib) given; nothing measured")
            return {}
        settings = {"prune": PRUNE, "kmeans": BITS}
        if options.quantize:
            settings["quantize"] = (8,)
        table = ctx.sensitivity or layer_table(
            graph, data, settings, options.noise_sigma, ctx.progress
        )
        metric = table.get("metric") or ("accuracy" if "labels" in data else "agreement")
        unsafe = sum(not r["safe"] for r in table["layers"])
        ctx.notes.append(
            f"sensitivity: {metric} {table['baseline']:.4f} +- "
            f"{table['noise_band']:.4f}; {unsafe} of {len(table['layers'])} "
            "layer settings are unsafe"
        )
        return {"metric": metric, **table}
