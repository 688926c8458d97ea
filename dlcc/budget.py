"""The automatic budget: the smallest bundle whose score stays within a budget.

    --max-drop D        accuracy on --data (with labels) >= baseline - D
    --min-agreement A   top-1 agreement with the uncompressed model on --data >= A

From the per-layer sensitivity table (passes/sensitivity.py), each layer gets the most
aggressive pruning rate and k-means width whose drop, measured alone, stays within an
allowance; the whole pipeline is then compiled and scored for real (int8 activations and
all). While it misses the budget, the allowance halves; at zero allowance every layer gets
its mildest setting, and if even that misses, the budget cannot be met: the error names the
layers that lose the most at their mildest setting, and nothing is written. Once a pipeline
meets the budget, the largest layers are pushed one setting further at a time while the
real score holds (the table measures each layer alone and without the recovery passes,
so it is conservative).

`faithful` is the same search for a named -O level: its passes only (-O2 prunes, -O3 also
shares weights) and a default fidelity target, so a preset keeps the model's meaning.
"""

from __future__ import annotations

import numpy as np

from dlcc.errors import DlccError
from dlcc.ir import Graph

ROUNDS = 6
PUSHES = 8  # compiles spent pushing single layers past the table's choice
DEFAULT_AGREEMENT = 0.99  # the -O levels' fidelity target for a classifier's top-1
PRESET_PASSES = {"O2": ("prune",), "O3": ("prune", "kmeans")}
HELD_OUT = 0.25  # of a single data set: kept from the search, for the report
MARGIN = 1.5  # standard errors the search's agreement must clear the target by
SEARCH_SECONDS = 300.0  # a faithful -O search estimated longer falls back to fixed rates


def faithful(
    model: str, calibration: dict | None, data: dict | None, level: str, progress=None
) -> tuple[str, dict, dict, dict]:
    """-O2 / -O3 with data: (pipeline, report, calibration, held-out data).

    The smallest bundle of that level's passes whose top-1 agreement with the original is
    at least DEFAULT_AGREEMENT on the data the search sees: the calibration data (which also
    calibrates), or the first HELD_OUT part of the one set given; the report is measured
    on data the search did not see: --data, or the rest of that set.
    """
    from dlcc.data import split
    from dlcc.frontend import import_onnx
    from dlcc.passes.calibrate import sample_count
    from dlcc.passes.sensitivity import is_classifier

    graph = import_onnx(model)
    if not is_classifier(graph.outputs[0].shape):
        raise FixedRates(
            f"-{level}: the model's first output is not [batch, classes], so per-layer rates "
            "are not searched: the fixed rates are used"
        )
    if calibration is None or data is None:
        calibration, data = split(calibration if data is None else data, graph, 1 - HELD_OUT)
    search = {k: v for k, v in calibration.items() if k != "labels"}
    samples = sample_count(graph, search)
    # The search must clear the target by MARGIN binomial standard errors at the target, so
    # that what it keeps on the samples it sees holds on samples it does not.
    margin = MARGIN * float(np.sqrt(DEFAULT_AGREEMENT * (1 - DEFAULT_AGREEMENT) / samples))
    seconds = _search_seconds(graph, model, search, calibration, level)
    if seconds > SEARCH_SECONDS:
        raise FixedRates(
            f"-{level}: searching per-layer rates would take about {seconds / 60:.0f} min "
            f"(limit {SEARCH_SECONDS / 60:.0f} min): the fixed rates are used; "
            "--min-agreement 99% searches anyway"
        )
    text, report = choose(
        model,
        search,
        calibration,
        min_agreement=min(DEFAULT_AGREEMENT + margin, 1.0),
        progress=progress,
        passes=PRESET_PASSES[level],
        graph=graph,
    )
    return text, report, calibration, data


class FixedRates(DlccError):
    """`faithful` cannot search this model (not a classifier, or estimated to take longer
    than SEARCH_SECONDS): the level's fixed rates are used; the message says why."""


def _search_seconds(graph, model, search, calibration, level) -> float:
    """An estimate of the search's time: one float evaluation of the search data per
    sensitivity job, and one compile with refit per round and push (timing one of each)."""
    import time

    import dlcc
    from dlcc.passes.manager import PRESETS, weight_layers
    from dlcc.passes.sensitivity import BITS, PRUNE, predictions

    start = time.perf_counter()
    predictions(graph, search, 256)
    evaluate = time.perf_counter() - start
    jobs = len(weight_layers(graph)) * (1 + len(PRUNE) + (len(BITS) if level == "O3" else 0))
    start = time.perf_counter()
    dlcc.compile(
        model,
        passes=PRESETS[level].replace(",quantize", ",refit,quantize"),
        calibration=calibration,
    )
    compile_ = time.perf_counter() - start
    return jobs * evaluate + (ROUNDS // 2 + 1 + PUSHES) * (compile_ + evaluate)


def choose(
    model: str,
    data: dict,
    calibration: dict | None,
    max_drop: float | None = None,
    min_agreement: float | None = None,
    progress=None,
    passes: tuple[str, ...] = ("prune", "kmeans"),
    graph: Graph | None = None,
) -> tuple[str, dict]:
    """(pipeline text, report) for the smallest bundle within the budget, using `passes`
    (`graph`: the model already imported, when the caller has it)."""
    from dlcc.data import for_graph
    from dlcc.frontend import import_onnx
    from dlcc.passes.sensitivity import BITS, PRUNE, layer_table, targets

    if (max_drop is None) == (min_agreement is None):
        raise DlccError("give one budget: --max-drop (with labels) or --min-agreement")
    graph = graph or import_onnx(model)
    data = for_graph(data, graph, "evaluation data")  # labels become class ids here
    if max_drop is not None and "labels" not in data:
        raise DlccError("--max-drop needs labels in --data; use --min-agreement without them")
    if min_agreement is not None:
        data = {k: v for k, v in data.items() if k != "labels"}
    truth = targets(graph, data)  # labels, or the uncompressed model's top-1: computed once
    settings = {"prune": (0.0, *PRUNE), "kmeans": BITS}
    settings = {kind: values for kind, values in settings.items() if kind in passes}
    table = layer_table(graph, data, settings, progress=progress, truth=truth)
    floor = table["baseline"] - max_drop if max_drop is not None else min_agreement
    allowance = table["baseline"] - floor  # recovery steps absorb much of the combination
    calibrated = calibration is not None
    for round_ in range(ROUNDS + 1):
        if progress:
            progress("budget: compiling and scoring", round_, ROUNDS + 1)
        chosen = _settings(graph, table["layers"], allowance, settings)
        score = _score(graph, model, _pipeline(chosen, calibrated), data, calibration, truth)
        if score >= floor:
            if progress:
                progress("budget: compiling and scoring", ROUNDS + 1, ROUNDS + 1)
            chosen, score = _push(
                graph, model, chosen, score, floor, settings, data, calibration, truth, progress
            )
            text = _pipeline(chosen, calibrated)
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


def _settings(graph: Graph, rows: list[dict], allowance: float, settings: dict) -> dict:
    """Per layer key and pass, the most aggressive setting whose own drop is within
    `allowance` (the mildest when none is, or when the allowance is negative)."""
    from dlcc.passes.manager import weight_layers

    chosen = {}
    for node in weight_layers(graph):
        mine = [r for r in rows if r["layer"] == node.name]
        ok = [r for r in mine if -r["delta"] <= allowance] if allowance >= 0 else []
        chosen[_key(node)] = {
            kind: _most_aggressive(
                kind, [r["setting"] for r in ok if r["pass"] == kind] or [values[0]]
            )
            for kind, values in settings.items()
        }
    return chosen


def _most_aggressive(kind: str, values: list[float]) -> float:
    return max(values) if kind == "prune" else min(values)


def _push(graph, model, chosen, score, floor, settings, data, calibration, truth, progress):
    """Step the largest layers one setting further, one at a time, while the real score
    holds: rounds over the layers until one changes nothing or PUSHES compiles are spent."""
    from dlcc.passes.manager import weight_layers

    sizes = {_key(n): n.inputs[1].data.size for n in weight_layers(graph)}
    tries = [
        (layer, kind) for layer in sorted(sizes, key=sizes.get, reverse=True) for kind in settings
    ]
    compiles, progressed = 0, True
    while progressed and compiles < PUSHES:
        progressed = False
        for layer, kind in tries:
            ladder = sorted(settings[kind], reverse=kind != "prune")  # mild -> aggressive
            step = ladder.index(chosen[layer][kind]) + 1
            if step >= len(ladder) or compiles >= PUSHES:
                continue
            trial = {**chosen, layer: {**chosen[layer], kind: ladder[step]}}
            text = _pipeline(trial, calibration is not None)
            got = _score(graph, model, text, data, calibration, truth)
            compiles += 1
            if progress:
                progress("budget: pushing layers", compiles, PUSHES)
            if got >= floor:
                chosen, score, progressed = trial, got, True
            else:  # this layer has reached its limit for this pass
                tries = [t for t in tries if t != (layer, kind)]
    return chosen, score


def _pipeline(chosen: dict, calibrated: bool) -> str:
    """The pipeline text of per-layer settings {layer key: {pass: setting}}."""
    # With calibration data the recovery steps run too (they need it, and they only help).
    refit, correct = (",refit", ",biascorrect") if calibrated else ("", "")
    steps = []
    prune = ";".join(f"{k}:{v['prune']}" for k, v in chosen.items() if "prune" in v)
    if prune:
        steps.append(f"prune(sparsity=0.0,layers={prune}){refit}")
    bits = ";".join(f"{k}:{int(v['kmeans'])}" for k, v in chosen.items() if "kmeans" in v)
    if bits:
        steps.append(f"kmeans(layers={bits}){refit}")
    return ",".join([*steps, f"quantize{correct}", "huffman"])


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
