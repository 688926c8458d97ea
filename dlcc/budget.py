"""The automatic budget: the smallest bundle that keeps a fidelity target.

    --max-drop D        accuracy (with labels) >= the original's - D
    --min-agreement A   top-1 agreement with the original >= A
    --min-sqnr S        output SQNR >= S dB (--min-cosine C: cosine >= C)
    -O2 / -O3 with data the default target: agreement >= 99% for classifier outputs,
                        SQNR >= 25 dB for the others (passes/fidelity.py)

From the per-layer sensitivity table (passes/sensitivity.py, on at most TABLE_SAMPLES
samples, ranked by output SQNR: see RANKING), each layer gets the most aggressive pruning
rate and k-means width whose loss, measured alone, stays within an allowance (2, 1, 1/2, ...
of the table's unit, then 0); each distinct pipeline is compiled and scored for real (int8
activations and all), the first that holds is kept. The mildest pipeline (no pruning, 8-bit
codebooks) is scored after the first two: if it misses with int8 activations, the search
starts over with float activations (Deep Compression's own pipeline: shared weights, float
compute); if it misses even then, the target cannot be met: the error names the layers that
lose the most at their mildest setting, and nothing is written. Then the largest layers are
pushed one setting further at a time while the real score holds (the table measures each
layer alone and without the recovery passes, so it is conservative).

Every compile and every table entry is a trial on the executor's worker processes
(dlcc/executor.py): the table's entries all at once, the pipelines `workers` at a time (the
next pushes compiled ahead, guessing that each does as the last one did). The search decides
as if it went one trial at a time, and each trial is a pure function of its pipeline, so the
result is the same on one worker or many.

Which data is which: the search scores on the calibration data, or on --data when the
target needs labels the calibration data lacks; the report is measured on data the search
did not see: the other set, or the last HELD_OUT of the one set searched. When the search
scores calibration data, the first FIT of it calibrates and fits the recovery steps and the
search scores only the rest: a least-squares refit on a few hundred samples fits them far
better than unseen ones (openWakeWord's "alexa" on 128 inputs: 24.8 dB on its own samples,
19.9 dB on others), and a search scored there would ship models that miss their target.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from dlcc.budget_trials import BATCH, PRELOAD, Trials
from dlcc.errors import DlccError
from dlcc.ir import Graph
from dlcc.passes.fidelity import DEFAULT, Fidelity, Target, graph_outputs

ROUNDS = 7  # allowances tried: 2, 1, 1/2, ... 1/32 of the target, then 0
PUSHES = 8  # tries at pushing single layers past the table's choice
PRESET_PASSES = {"O2": ("prune",), "O3": ("prune", "kmeans")}
HELD_OUT = 0.25  # of a single data set: kept from the search, for the report
FIT = 2 / 3  # of the calibration data searched on: what recovery fits; the search scores the rest
MARGIN = 1.5  # standard errors of its estimate each measure must clear its bound by
TABLE_SAMPLES = 1000  # the sensitivity table ranks settings: a subset is enough
# The table's measure, whatever the target: it only ranks settings (compiles decide), and
# output noise powers are continuous and add up over layers, where top-1 flips on a few
# hundred samples are too few to rank by. A setting that uses 1 alone leaves 10 dB.
RANKING = Target(sqnr_db=10.0)
SEARCH_SECONDS = 300.0  # a preset's search estimated longer falls back to fixed rates


def search(
    model: str,
    calibration: dict | None,
    data: dict | None,
    level: str | None = None,
    target: Target | None = None,
    progress=None,
    workers: int | None = None,
) -> tuple[str, dict, dict, dict]:
    """(pipeline, report, calibration, held-out data) for the smallest bundle of `level`'s
    passes (-O2: prune; else prune and kmeans) that keeps `target` (default: DEFAULT) by
    MARGIN standard errors of each measure on the data searched, so that it holds on unseen
    data; trials run on `workers` local processes (default: the physical cores).

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
        seconds = _search_seconds(graph, model, searched, calibration, level, workers)
        if seconds > SEARCH_SECONDS:
            raise FixedRates(
                f"-{level}: searching per-layer rates would take about {seconds / 60:.0f} min "
                f"(limit {SEARCH_SECONDS / 60:.0f} min): the fixed rates are used; "
                "--min-agreement or --min-sqnr searches anyway"
            )
    if not labels:
        searched = {k: v for k, v in searched.items() if k != "labels"}
    passes = PRESET_PASSES.get(level or "", ("prune", "kmeans"))
    text, report = choose(model, searched, calibration, target, progress, passes, graph, workers)
    return text, report, calibration, held


class FixedRates(DlccError):
    """A preset's search is estimated to take longer than SEARCH_SECONDS: the level's fixed
    rates are used; the message says why."""


def _search_seconds(graph, model, search, calibration, level, workers) -> float:
    """An estimate of the search's time: one float evaluation of the table's samples per
    sensitivity job, and one compile with refit and one evaluation of the search data per
    try (allowances and pushes; timing one of each), shared by the workers."""
    import time

    import dlcc
    from dlcc.passes.calibrate import sample_count
    from dlcc.passes.manager import PRESETS, weight_layers
    from dlcc.passes.sensitivity import BITS, PRUNE
    from dlcc.runtime.threads import physical_cores

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
    tries = ROUNDS // 2 + 1 + PUSHES
    return (jobs * evaluate * share + tries * (compile_ + evaluate)) / (workers or physical_cores())


def choose(
    model: str,
    data: dict,
    calibration: dict | None,
    target: Target,
    progress=None,
    passes: tuple[str, ...] = ("prune", "kmeans"),
    graph: Graph | None = None,
    workers: int | None = None,
) -> tuple[str, dict]:
    """(pipeline text, report) for the smallest bundle that keeps `target` on `data`, using
    `passes` (`graph`: the model already imported, when the caller has it); trials run on
    `workers` local processes (default: the physical cores), the result the same for any."""
    from dlcc.data import for_graph
    from dlcc.executor import make_executor
    from dlcc.frontend import import_onnx
    from dlcc.passes.sensitivity import BITS, PRUNE

    graph = graph or import_onnx(model)
    data = for_graph(data, graph, "evaluation data")  # labels become class ids here
    if target.max_drop is not None and "labels" not in data:
        raise DlccError("--max-drop needs labels in --data; use --min-agreement without them")
    fidelity = Fidelity(graph, data, target, BATCH)
    table_fidelity = Fidelity(graph, _head(graph, data, TABLE_SAMPLES), RANKING, BATCH)
    settings = {"prune": (0.0, *PRUNE), "kmeans": BITS}
    settings = {kind: values for kind, values in settings.items() if kind in passes}
    with make_executor(workers, preload=PRELOAD) as executor:
        trials = Trials(executor, model, graph, fidelity, calibration, table_fidelity.inputs)
        table = trials.table(table_fidelity, settings, progress)
        table["metric"] = f"score at output SQNR >= {RANKING.sqnr_db:g} dB"  # 1: the original
        rows = table["layers"]
        allowances = [2.0 ** (1 - k) for k in range(ROUNDS)] + [0.0]
        mildest = _settings(graph, rows, -1.0, settings)
        candidates = []
        for allowance in allowances:
            chosen = _settings(graph, rows, allowance, settings)
            if chosen not in candidates and chosen != mildest:
                candidates.append(chosen)
        int8 = True
        found = trials.first_passing(candidates, mildest, int8, progress)
        if found is None:  # int8 activations alone may miss it: keep them float
            int8 = False
            found = trials.first_passing(candidates, mildest, int8, progress)
        if found is None:
            outputs = trials.score(mildest, int8)[1]
            raise _unreachable(target, table, fidelity.describe(outputs))
        chosen, got, outputs = _push(graph, found, settings, trials, int8, progress)
    text = trials.text(chosen, int8)
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
        f"{r['layer']} ({r['pass']} {r['setting']} alone: output SQNR "
        f"{RANKING.sqnr_db - 10 * np.log10(-r['delta']):.1f} dB)"
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


def _push(graph, chosen, settings, trials, int8, progress):
    """(settings, score, outputs): the largest layers stepped one setting further, one at a
    time, while the real score holds: a push that holds goes to the back of the queue, one
    that fails leaves it; until the queue is empty or PUSHES tries are spent. Idle workers
    compile the next tries ahead, guessing that each will do as the last one did."""
    from dlcc.passes.manager import node_weights, weight_layers

    sizes = {_key(n): sum(w.value.data.size for w in node_weights(n)) for n in weight_layers(graph)}
    order = sorted(sizes, key=sizes.get, reverse=True)
    queue = collections.deque((layer, kind) for layer in order for kind in settings)
    got, outputs = trials.score(chosen, int8)
    tries, held = 0, True
    while queue and tries < PUSHES:
        count = min(trials.workers, PUSHES - tries)
        trials.prefetch(_ahead(chosen, queue, settings, count, held), int8)
        push = queue.popleft()
        trial = _stepped(chosen, push, settings)
        if trial is None:  # at the end of its ladder
            continue
        tries += 1
        trial_got, trial_outputs = trials.score(trial, int8)
        if progress:
            progress("budget: pushing layers", tries, PUSHES)
        held = trial_got >= 0
        if held:
            chosen, got, outputs = trial, trial_got, trial_outputs
            queue.append(push)
    return chosen, got, outputs


def _stepped(chosen: dict, push: tuple[str, str], settings: dict) -> dict | None:
    """`chosen` with layer `push[0]` one setting of pass `push[1]` further (None: no further)."""
    layer, kind = push
    ladder = sorted(settings[kind], reverse=kind != "prune")  # mild -> aggressive
    step = ladder.index(chosen[layer][kind]) + 1
    return {**chosen, layer: {**chosen[layer], kind: ladder[step]}} if step < len(ladder) else None


def _ahead(chosen: dict, queue, settings: dict, count: int, held: bool) -> list[dict]:
    """The next `count` tries of `_push` if each of them holds (`held`) or each fails."""
    queue, ahead = collections.deque(queue), []
    while queue and len(ahead) < count:
        push = queue.popleft()
        trial = _stepped(chosen, push, settings)
        if trial is not None:
            ahead.append(trial)
            if held:
                chosen = trial
                queue.append(push)
    return ahead


def _key(node) -> str:
    """A layers= key for `node`: its name, or its weight's when the name holds , ; : ( )."""
    from dlcc.passes.manager import node_weights

    unsafe = any(c in node.name for c in ",;:()")
    return node_weights(node)[0].value.name if unsafe else node.name
