"""The automatic budget: the smallest bundle whose score stays within a budget.

    --max-drop D        accuracy on --data (with labels) >= baseline - D
    --min-agreement A   top-1 agreement with the uncompressed model on --data >= A

From the per-layer sensitivity table (passes/sensitivity.py), each layer gets the most
aggressive pruning rate and k-means width whose drop, measured alone, stays within an
allowance; the whole pipeline is then compiled and scored for real (int8 activations and
all). While it misses the budget, the allowance halves; at zero allowance every layer gets
its mildest setting, and if even that misses, the budget cannot be met: the error names the
layers that lose the most at their mildest setting, and nothing is written.
"""

from __future__ import annotations

import numpy as np

from dlcc.errors import DlccError
from dlcc.ir import Graph

ROUNDS = 6


def choose(
    model: str,
    data: dict,
    calibration: dict | None,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    progress=None,
) -> tuple[str, dict]:
    """(pipeline text, report) for the smallest bundle within the budget."""
    from dlcc.data import for_graph
    from dlcc.frontend import import_onnx
    from dlcc.passes.sensitivity import BITS, PRUNE, layer_table, targets

    if (max_drop is None) == (min_agreement is None):
        raise DlccError("give one budget: --max-drop (with labels) or --min-agreement")
    graph = import_onnx(model)
    data = for_graph(data, graph, "evaluation data")  # labels become class ids here
    if max_drop is not None and "labels" not in data:
        raise DlccError("--max-drop needs labels in --data; use --min-agreement without them")
    if min_agreement is not None:
        data = {k: v for k, v in data.items() if k != "labels"}
    truth = targets(graph, data)  # labels, or the uncompressed model's top-1: computed once
    settings = {"prune": (0.0, *PRUNE), "kmeans": BITS}
    table = layer_table(graph, data, settings, progress=progress, truth=truth)
    floor = table["baseline"] - max_drop if max_drop is not None else min_agreement
    allowance = table["baseline"] - floor  # recovery steps absorb much of the combination
    for _ in range(ROUNDS + 1):
        text = _pipeline(graph, table["layers"], allowance, calibration is not None)
        score = _score(graph, model, text, data, calibration, truth)
        if score >= floor:
            return text, {
                "baseline": table["baseline"],
                "floor": floor,
                "score": score,
                "pipeline": text,
                "sensitivity": table,
            }
        allowance = allowance / 2 if allowance > 1e-6 else -1.0  # last round: mildest
        if allowance < 0:
            break
    blame = sorted(
        (r for r in table["layers"] if r["setting"] in (0.0, 8)), key=lambda r: r["delta"]
    )[:3]
    names = ", ".join(
        f"{r['layer']} ({r['pass']} {r['setting']}: {r['delta']:+.4f})" for r in blame
    )
    raise DlccError(
        f"the budget (score >= {floor:.4f}) cannot be met even at the mildest "
        f"setting (no pruning, 8-bit codebooks): {score:.4f}; most sensitive: {names}"
    )


def _pipeline(graph: Graph, rows: list[dict], allowance: float, calibrated: bool) -> str:
    """Per layer, the most aggressive setting whose own drop is within `allowance`."""
    from dlcc.passes.manager import weight_layers

    sparsity, bits = [], []
    for node in weight_layers(graph):
        mine = [r for r in rows if r["layer"] == node.name]
        ok = [r for r in mine if -r["delta"] <= allowance] if allowance >= 0 else []
        prunes = [r["setting"] for r in ok if r["pass"] == "prune"] or [0.0]
        widths = [r["setting"] for r in ok if r["pass"] == "kmeans"] or [8]
        sparsity.append(f"{_key(node)}:{max(prunes)}")
        bits.append(f"{_key(node)}:{int(min(widths))}")
    # With calibration data the recovery steps run too (they need it, and they only help).
    refit, correct = (",refit", ",biascorrect") if calibrated else ("", "")
    return (
        f"prune(sparsity=0.0,layers={';'.join(sparsity)}){refit},"
        f"kmeans(layers={';'.join(bits)}){refit},quantize{correct},huffman"
    )


def _key(node) -> str:
    """A layers= key for `node`: its name, or its weight's when the name holds , ; : ( )."""
    return node.inputs[1].name if any(c in node.name for c in ",;:()") else node.name


def _score(graph: Graph, model: str, text: str, data: dict, calibration, truth) -> float:
    """Top-1 score of the compiled bundle (the real one: int8 activations and all)."""
    import dlcc
    from dlcc.passes.calibrate import batches
    from dlcc.runtime.loader import bind_bundle

    bundle = bind_bundle(dlcc.compile(model, passes=text, calibration=calibration))
    inputs = {k: v for k, v in data.items() if k != "labels"}
    first = bundle.output_names[0]
    top = np.concatenate(
        [bundle.run(feeds)[first].argmax(1) for feeds in batches(graph, inputs, 512)]
    )
    return float((top == truth).mean())
