"""The budget search's trials, run on an executor's workers (dlcc/executor.py): sensitivity
table entries (one layer compressed alone, float outputs on the table's samples) and bundles
compiled from per-layer settings and scored on the search data (each pipeline text once).
A trial is a pure function of its arguments, so a search gives the same result on 1 worker,
N workers or a cluster.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from dlcc.errors import DlccError
from dlcc.ir import Graph
from dlcc.passes.fidelity import Fidelity, graph_outputs

BATCH = 256


def pipeline_text(chosen: dict, calibrated: bool, int8: bool) -> str:
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


PRELOAD = ("dlcc.budget_trials", "dlcc.api", "dlcc.frontend", "dlcc.passes.manager")


class Trials:
    """The search's trials on an executor's workers: bundles compiled from per-layer settings
    and scored on the fidelity's data (each pipeline once), and sensitivity table entries."""

    def __init__(self, executor, model, graph, fidelity, calibration, table_inputs) -> None:
        self.executor, self.graph, self.fidelity = executor, graph, fidelity
        self.model = os.path.abspath(model)  # the workers' directory may differ
        self.calibrated = calibration is not None
        self.workers = executor.workers
        self.shared = executor.share(
            {"calibration": calibration, "inputs": fidelity.inputs, "table": table_inputs}
        )
        self.done: dict[str, tuple[float, dict]] = {}  # by pipeline text

    def text(self, chosen: dict, int8: bool) -> str:
        return pipeline_text(chosen, self.calibrated, int8)

    def table(self, fidelity: Fidelity, settings: dict, progress=None) -> dict:
        """The sensitivity table of `settings`, scored by `fidelity` (passes/sensitivity.py)."""
        from dlcc.passes.sensitivity import ranked, table_jobs

        jobs = table_jobs(self.graph, settings)
        deltas = {}
        work = [(i, (self.model, job, self.shared)) for i, job in enumerate(jobs)]
        for i, outputs in self._run(_layer_trial, work):
            deltas[i] = fidelity.score(outputs) - 1.0  # the original scores 1
            if progress:
                progress("sensitivity", len(deltas), len(jobs))
        deltas = [deltas[i] for i in range(len(jobs))]
        return ranked(jobs, deltas, 1.0, fidelity.samples, sigma=1.0)  # safe: uses <= 1

    def prefetch(self, candidates: list[dict], int8: bool) -> None:
        """Compile and score `candidates` at once (those not done yet)."""
        texts = list(dict.fromkeys(self.text(c, int8) for c in candidates))
        work = [(t, (self.model, t, self.shared)) for t in texts if t not in self.done]
        for text, outputs in self._run(_bundle_trial, work):
            self.done[text] = (self.fidelity.score(outputs), outputs)

    def score(self, chosen: dict, int8: bool) -> tuple[float, dict]:
        """(score, outputs) of the bundle of `chosen`."""
        self.prefetch([chosen], int8)
        return self.done[self.text(chosen, int8)]

    def first_passing(self, candidates: list[dict], mildest: dict, int8: bool, progress=None):
        """The first of `candidates` that keeps the target, else `mildest` if it does, else
        None. Scored `workers` at a time, the mildest after the first two candidates, so that
        an unreachable target shows early."""
        order = [*candidates[:2], mildest, *candidates[2:]]
        for start in range(0, len(order), self.workers):
            if progress:
                progress("budget: compiling and scoring", start, len(order))
            self.prefetch(order[start : start + self.workers], int8)
            for chosen in order[: start + self.workers]:
                if chosen is mildest and self.score(mildest, int8)[0] < 0:
                    return None
                if chosen is not mildest and self.score(chosen, int8)[0] >= 0:
                    return chosen
        return mildest

    def _run(self, trial, work: list):
        """(key, value) of each (key, args) of `trial` as it finishes; a failure raises."""
        for key, value, error in self.executor.map(trial, work):
            if error is not None:
                raise DlccError(f"a budget trial failed: {error}")
            yield key, value


@functools.lru_cache(maxsize=1)
def _imported(model: str) -> Graph:
    """The model's graph, imported once per process (the trials restore what they change)."""
    from dlcc.frontend import import_onnx

    return import_onnx(model)


def _layer_trial(model: str, job: tuple, shared: dict) -> dict:
    """A trial: the float outputs on the table's samples with one layer compressed alone."""
    from dlcc.passes.sensitivity import layer_compressed

    graph = _imported(model)
    with layer_compressed(graph, *job):
        return graph_outputs(graph, shared["table"], BATCH)


def _bundle_trial(model: str, text: str, shared: dict) -> dict:
    """A trial: the outputs of the bundle that `text` compiles (int8 activations and all) on
    the search data."""
    import dlcc
    from dlcc.passes.calibrate import batches
    from dlcc.runtime.loader import bind_bundle

    bundle = bind_bundle(dlcc.compile(model, passes=text, calibration=shared["calibration"]))
    graph = _imported(model)
    parts = [bundle.run(feeds) for feeds in batches(graph, shared["inputs"], BATCH)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
