"""The automatic budget: the smallest bundle that keeps a fidelity target.

    --max-drop D        accuracy (with labels) >= the original's - D
    --min-agreement A   top-1 agreement with the original >= A
    --min-sqnr S        output SQNR >= S dB (--min-cosine C: cosine >= C)
    -O2 / -O3 with data the default target: agreement >= 99% for classifier outputs,
                        SQNR >= 25 dB for the others (passes/fidelity.py)

From the per-layer sensitivity table (passes/sensitivity.py, on at most TABLE_SAMPLES
samples), each layer gets the most aggressive pruning rate and k-means width whose loss,
measured alone, stays within an allowance; the whole pipeline is then compiled and scored
for real (int8 activations and all). After the first miss, the mildest pipeline (no pruning,
8-bit codebooks) is scored: if it misses with int8 activations, the search goes on with
float activations (Deep Compression's own pipeline: shared weights, float compute); if it
misses even then, the target cannot be met: the error names the layers that lose the most at
their mildest setting, and nothing is written. Otherwise the allowance halves until the
target holds (or the mildest pipeline is kept). Then the largest layers are pushed one
setting further at a time while the real score holds (the table measures each layer alone
and without the recovery passes, so it is conservative).

Which data is which: the search scores on the calibration data, or on --data when the
target needs labels the calibration data lacks; the report is measured on data the search
did not see: the other set, or the last HELD_OUT of the one set searched. When the search
scores calibration data, the first FIT of it calibrates and fits the recovery steps and the
search scores only the rest: a least-squares refit on a few hundred samples fits them far
better than unseen ones (openWakeWord's "alexa" on 128 inputs: 24.8 dB on its own samples,
19.9 dB on others), and a search scored there would ship models that miss their target.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.errors import DlccError
from dlcc.ir import Graph
from dlcc.passes.fidelity import DEFAULT, Fidelity, Target, graph_outputs

ROUNDS = 6
PUSHES = 8  # compiles spent pushing single layers past the table's choice
PRESET_PASSES = {"O2": ("prune",), "O3": ("prune", "kmeans")}
HELD_OUT = 0.25  # of a single data set: kept from the search, for the report
FIT = 2 / 3  # of the calibration data searched on: what recovery fits; the search scores the rest
MARGIN = 1.5  # standard errors of its estimate each measure must clear its bound by
TABLE_SAMPLES = 1000  # the sensitivity table ranks settings: a subset is enough
SEARCH_SECONDS = 300.0  # a preset's search estimated longer falls back to fixed rates
BATCH = 256


def search(
    model: str,
    calibration: dict | None,
    data: dict | None,
    level: str | None = None,
    target: Target | None = None,
    progress=None,
) -> tuple[str, dict, dict, dict]:
    """(pipeline, report, calibration, held-out data) for the smallest bundle of `level`'s
    passes (-O2: prune; else prune and kmeans) that keeps `target` (default: DEFAULT) by
    MARGIN standard errors of each measure on the data searched, so that it holds on unseen
    data.

    Without an explicit target, a search estimated longer than SEARCH_SECONDS raises
    FixedRates: the level's fixed rates are then the caller's choice.
    """
    from dlcc.data import split
    from dlcc.frontend import import_onnx

    if calibration is None and data is None:
        raise DlccError(f"a fidelity target ({target}) needs data to score on: --calib or --data")
    graph = import_onnx(model)
    preset = target is None
    target = target or DEFAULT
    labels = target.max_drop is not None
    if calibration is not None and data is not None and (not labels or "labels" in calibration):
        searched, held = calibration, data
    elif calibration is not None and data is not None:  # the labels are in --data only
        searched, held = split(data, graph, 1 - HELD_OUT)
    else:
        searched, held = split(data if data is not None else calibration, graph, 1 - HELD_OUT)
        calibration = searched
    if searched is calibration:  # recovery fits the calibration data: score on other samples
        calibration, searched = split(searched, graph, FIT)
    target = dataclasses.replace(target, z=MARGIN)
    if preset:
        seconds = _search_seconds(graph, model, searched, calibration, level)
        if seconds > SEARCH_SECONDS:
            raise FixedRates(
                f"-{level}: searching per-layer rates would take about {seconds / 60:.0f} min "
                f"(limit {SEARCH_SECONDS / 60:.0f} min): the fixed rates are used; "
                "--min-agreement or --min-sqnr searches anyway"
            )
    if not labels:
        searched = {k: v for k, v in searched.items() if k != "labels"}
    passes = PRESET_PASSES.get(level or "", ("prune", "kmeans"))
    text, report = choose(model, searched, calibration, target, progress, passes, graph)
    return text, report, calibration, held


class FixedRates(DlccError):
    """A preset's search is estimated to take longer than SEARCH_SECONDS: the level's fixed
    rates are used; the message says why."""


def _search_seconds(graph, model, search, calibration, level) -> float:
    """An estimate of the search's time: one float evaluation of the table's samples per
    sensitivity job, and one compile with refit and one evaluation of the search data per
    round and push (timing one of each)."""
    import time

    import dlcc
    from dlcc.passes.calibrate import sample_count
    from dlcc.passes.manager import PRESETS, weight_layers
    from dlcc.passes.sensitivity import BITS, PRUNE

    inputs = {k: v for k, v in search.items() if k != "labels"}
    start = time.perf_counter()
    graph_outputs(graph, inputs, BATCH)
    evaluate = time.perf_counter() - start
    share = min(TABLE_SAMPLES / max(sample_count(graph, inputs), 1), 1.0)
    jobs = len(weight_layers(graph)) * (1 + len(PRUNE) + (len(BITS) if level == "O3" else 0))
    start = time.perf_counter()
    dlcc.compile(
        model,
        passes=PRESETS[level].replace(",quantize", ",refit,quantize"),
        calibration=calibration,
    )
    compile_ = time.perf_counter() - start
    return jobs * evaluate * share + (ROUNDS // 2 + 1 + PUSHES) * (compile_ + evaluate)


def choose(
    model: str,
    data: dict,
    calibration: dict | None,
    target: Target,
    progress=None,
    passes: tuple[str, ...] = ("prune", "kmeans"),
    graph: Graph | None = None,
) -> tuple[str, dict]:
    """(pipeline text, report) for the smallest bundle that keeps `target` on `data`, using
    `passes` (`graph`: the model already imported, when the caller has it)."""
    from dlcc.data import for_graph
    from dlcc.frontend import import_onnx
    from dlcc.passes.sensitivity import BITS, PRUNE, layer_table

    graph = graph or import_onnx(model)
    data = for_graph(data, graph, "evaluation data")  # labels become class ids here
    if target.max_drop is not None and "labels" not in data:
        raise DlccError("--max-drop needs labels in --data; use --min-agreement without them")
    fidelity = Fidelity(graph, data, target, BATCH)
    table_data = _head(graph, data, TABLE_SAMPLES)
    table_fidelity = Fidelity(graph, table_data, target, BATCH)
    settings = {"prune": (0.0, *PRUNE), "kmeans": BITS}
    settings = {kind: values for kind, values in settings.items() if kind in passes}
    table = layer_table(
        graph,
        table_data,
        settings,
        progress=progress,
        score=lambda: table_fidelity.score(graph_outputs(graph, table_fidelity.inputs, BATCH)),
    )
    table["metric"] = "fidelity score"  # 1: the original; 0: on the target (passes/fidelity.py)
    scorer = _scorer(graph, model, fidelity, calibration)
    int8 = True

    def score(chosen: dict) -> tuple[float, dict]:
        return scorer(_pipeline(chosen, calibration is not None, int8))

    allowance, mildest = table["baseline"], None  # the score's floor is 0
    for round_ in range(ROUNDS):
        if progress:
            progress("budget: compiling and scoring", round_, ROUNDS)
        chosen = _settings(graph, table["layers"], allowance, settings)
        got, outputs = score(chosen)
        if got >= 0:
            break
        if mildest is None:  # after the first miss: can the target be met at all?
            mildest = _settings(graph, table["layers"], -1.0, settings)
            got, outputs = score(mildest)
            if got < 0 and int8:  # int8 activations alone may miss it: keep them float
                int8 = False
                got, outputs = score(mildest)
            if got < 0:
                raise _unreachable(target, table, fidelity.describe(outputs))
            mildest = (mildest, got, outputs)
        allowance /= 2  # recovery absorbs less of the sum than hoped: tighten
    else:
        chosen, got, outputs = mildest
    if progress:
        progress("budget: compiling and scoring", ROUNDS, ROUNDS)
    chosen, got, outputs = _push(graph, chosen, got, outputs, settings, score, progress)
    text = _pipeline(chosen, calibration is not None, int8)
    return text, {
        "target": str(target),
        "score": got,
        "fidelity": fidelity.describe(outputs),
        "samples": fidelity.samples,
        "pipeline": text,
        "int8_activations": int8,
        "sensitivity": table,
    }


def _unreachable(target: Target, table: dict, measured: str) -> DlccError:
    """The error of a target missed at every layer's mildest setting, naming the layers
    that lose the most there."""
    blame = sorted(
        (r for r in table["layers"] if r["setting"] in (0.0, 8) and r["delta"] < 0),
        key=lambda r: r["delta"],
    )[:3]
    names = ", ".join(
        f"{r['layer']} ({r['pass']} {r['setting']} alone uses {-r['delta']:.2f} of it)"
        for r in blame
    )
    return DlccError(
        f"the target ({target}) cannot be met even at the mildest setting (no pruning, "
        f"8-bit codebooks, float activations): {measured}; most sensitive: {names}"
    )


def _head(graph: Graph, data: dict, count: int) -> dict:
    """The first `count` samples of `data` (all of it when it has no more)."""
    from dlcc.data import split
    from dlcc.passes.calibrate import sample_count

    samples = sample_count(graph, {k: v for k, v in data.items() if k != "labels"})
    return data if samples <= count else split(data, graph, count / samples)[0]


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


def _push(graph, chosen, score, outputs, settings, scorer, progress):
    """Step the largest layers one setting further, one at a time, while the real score
    holds: rounds over the layers until one changes nothing or PUSHES compiles are spent."""
    from dlcc.passes.manager import node_weights, weight_layers

    sizes = {_key(n): sum(w.value.data.size for w in node_weights(n)) for n in weight_layers(graph)}
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
            got, trial_outputs = scorer(trial)
            compiles += 1
            if progress:
                progress("budget: pushing layers", compiles, PUSHES)
            if got >= 0:
                chosen, score, outputs, progressed = trial, got, trial_outputs, True
            else:  # this layer has reached its limit for this pass
                tries = [t for t in tries if t != (layer, kind)]
    return chosen, score, outputs


def _pipeline(chosen: dict, calibrated: bool, int8: bool) -> str:
    """The pipeline text of per-layer settings {layer key: {pass: setting}}: int8 weights and
    activations, or (int8 False) shared float weights and float activations, as Deep
    Compression's own pipeline."""
    # With calibration data the recovery steps run too (they need it, and they only help).
    refit = ",refit" if calibrated else ""
    steps = []
    prune = ";".join(f"{k}:{v['prune']}" for k, v in chosen.items() if "prune" in v)
    if prune:
        steps.append(f"prune(sparsity=0.0,layers={prune}){refit}")
    bits = ";".join(f"{k}:{int(v['kmeans'])}" for k, v in chosen.items() if "kmeans" in v)
    if bits:
        steps.append(f"kmeans(layers={bits}){refit}")
    if int8:
        steps.append(f"quantize{',biascorrect' if calibrated else ''}")
    return ",".join([*steps, "huffman"])


def _key(node) -> str:
    """A layers= key for `node`: its name, or its weight's when the name holds , ; : ( )."""
    from dlcc.passes.manager import node_weights

    unsafe = any(c in node.name for c in ",;:()")
    return node_weights(node)[0].value.name if unsafe else node.name


def _scorer(graph: Graph, model: str, fidelity: Fidelity, calibration):
    """A function of a pipeline: (score, outputs) of its compiled bundle (the real one: int8
    activations and all) on the fidelity's data."""
    import dlcc
    from dlcc.passes.calibrate import batches
    from dlcc.runtime.loader import bind_bundle

    def score(text: str) -> tuple[float, dict]:
        bundle = bind_bundle(dlcc.compile(model, passes=text, calibration=calibration))
        parts = [bundle.run(feeds) for feeds in batches(graph, fidelity.inputs, BATCH)]
        outputs = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        return fidelity.score(outputs), outputs

    return score
