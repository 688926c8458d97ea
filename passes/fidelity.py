"""How far a compressed model's outputs moved from the original's, in one unit.

Each output gets its criteria from a `Target` (the -O levels' default in brackets):

    class scores [batch, classes]   top-1 agreement with the original >= A            [99%]
                                    (the first output, with labels: accuracy >= base - D)
    any other output                SQNR >= S dB                                       [25]
                                    and/or cosine similarity >= C

(Class scores: a [batch, classes] output that is the model's only output or a softmax's.)
A class-score output takes --min-agreement / --max-drop when given, else --min-sqnr /
--min-cosine when given, else the default; any other output takes --min-sqnr / --min-cosine,
else the default. A criterion's *use* is its loss over its allowance:

    agreement  (1 - agreement) / (1 - A)        accuracy  (base - accuracy) / D
    SQNR       NSR / 10^(-S/10)                 cosine    (1 - cosine) / (1 - C)

(NSR: noise power over signal power, summed over all samples.) With `Target.z`, each loss is
taken z standard errors of its estimate higher, so a target met on the samples searched holds
on others: binomial at the bound for agreement, of the paired per-sample difference for
accuracy, of the per-sample noise powers for SQNR. A model's score is 1 minus its largest
use: 1 for the original itself, >= 0 when every target holds. Noise powers of independent
per-layer errors add, so an SQNR target is spent across layers the way an agreement target
is: the budget search (dlcc/budget.py) treats every target alike.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.ir import Graph
from dlcc.passes.calibrate import batches
from dlcc.passes.comparison import Comparison
from dlcc.passes.evaluate import evaluate
from dlcc.passes.sensitivity import is_classifier

TINY = 1e-12  # an allowance of 0 (agreement 100%) makes any loss use "everything":
MOST = 999.0  # a use is capped here, so messages stay readable


@dataclasses.dataclass(frozen=True)
class Target:
    """The fidelity a compressed model must keep; None leaves a criterion unset."""

    agreement: float | None = None
    max_drop: float | None = None
    sqnr_db: float | None = None
    cosine: float | None = None
    z: float = 0.0  # standard errors of its own estimate each loss must clear the bound by

    def __str__(self) -> str:
        parts = []
        if self.agreement is not None:
            parts.append(f"top-1 agreement >= {100 * self.agreement:.2f}%")
        if self.max_drop is not None:
            parts.append(f"accuracy drop <= {100 * self.max_drop:.2f} points")
        if self.sqnr_db is not None:
            parts.append(f"SQNR >= {self.sqnr_db:g} dB")
        if self.cosine is not None:
            parts.append(f"cosine >= {self.cosine:g}")
        return ", ".join(parts)


DEFAULT = Target(agreement=0.99, sqnr_db=25.0)  # the -O levels' target


def is_class_output(graph: Graph, value) -> bool:
    """Whether output `value` holds class scores: [batch, classes] and either the model's only
    output or a softmax's (a detector's [batch, 4] boxes beside its scores are not classes)."""
    producer = value.producer.op if value.producer is not None else None
    single = len(graph.outputs) == 1
    return is_classifier(value.shape) and (single or producer in ("Softmax", "LogSoftmax"))


def criteria(target: Target, classes: bool, first: bool, labelled: bool) -> dict:
    """{criterion: its bound} for one output, of class scores or not (see the docstring)."""
    if classes:
        top1 = {"agreement": target.agreement}
        if first and labelled and target.max_drop is not None:
            top1 = {"accuracy": target.max_drop}
        for chosen in (top1, _signal(target)):
            chosen = {k: v for k, v in chosen.items() if v is not None}
            if chosen:
                return chosen
        return {"agreement": DEFAULT.agreement}
    chosen = {k: v for k, v in _signal(target).items() if v is not None}
    return chosen or {"sqnr_db": DEFAULT.sqnr_db}


def _signal(target: Target) -> dict:
    return {"sqnr_db": target.sqnr_db, "cosine": target.cosine}


class Fidelity:
    """The original's outputs on `data` (computed once), and the score of any other outputs
    against them under `target`."""

    def __init__(self, graph: Graph, data: dict, target: Target, batch: int = 256) -> None:
        self.target = target
        self.labels = data.get("labels")
        self.inputs = {k: v for k, v in data.items() if k != "labels"}
        self.reference = graph_outputs(graph, self.inputs, batch)
        self.criteria = {
            v.name: criteria(target, is_class_output(graph, v), i == 0, self.labels is not None)
            for i, v in enumerate(graph.outputs)
        }
        self.samples = len(next(iter(self.inputs.values())))
        first = graph.outputs[0].name
        self.base_accuracy = (
            _accuracy(self.reference[first], self.labels) if self.labels is not None else None
        )

    def losses(self, outputs: dict[str, np.ndarray]) -> dict[str, dict[str, tuple]]:
        """{output: {criterion: (value, loss, standard error of the loss)}} of `outputs`."""
        n = self.samples
        table = {}
        for name, wanted in self.criteria.items():
            ref, got = self.reference[name], outputs[name]
            row = {}
            comparison = Comparison.of(ref, got)
            for criterion, bound in wanted.items():
                if criterion == "agreement":
                    value = comparison.agreement
                    row[criterion] = (value, 1 - value, np.sqrt(bound * (1 - bound) / n))
                elif criterion == "accuracy":
                    value = _accuracy(got, self.labels)
                    flips = _correct(got, self.labels) - _correct(ref, self.labels)
                    se = np.sqrt(max(float(flips.var()), bound) / n)  # paired, >= at-target
                    row[criterion] = (value, self.base_accuracy - value, se)
                elif criterion == "sqnr_db":
                    row[criterion] = (comparison.sqnr_db, comparison.nsr, comparison.nsr_error)
                else:
                    value = comparison.cosine
                    row[criterion] = (value, 1 - value, 0.0)
            table[name] = row
        return table

    def measure(self, outputs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
        """{output: {criterion: value}} of `outputs` against the original's."""
        return {
            name: {k: v[0] for k, v in row.items()} for name, row in self.losses(outputs).items()
        }

    def uses(self, outputs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
        """Each criterion's share of its allowance used, its loss taken `target.z` standard
        errors higher (<= 1: within the target); a measure that did not move uses nothing."""
        uses = {}
        for name, row in self.losses(outputs).items():
            uses[name] = {}
            for criterion, (_, loss, se) in row.items():
                allowance = _allowance(criterion, self.criteria[name][criterion])
                high = (loss + self.target.z * se) / allowance
                uses[name][criterion] = 0.0 if loss <= 0 else min(high, MOST)
        return uses

    def score(self, outputs: dict[str, np.ndarray]) -> float:
        """1 - the largest use: 1 for the original, >= 0 when every target holds."""
        return 1.0 - max(u for row in self.uses(outputs).values() for u in row.values())

    def describe(self, outputs: dict[str, np.ndarray]) -> str:
        """The measured criteria beside their bounds, for people."""
        parts = []
        for name, values in self.measure(outputs).items():
            for criterion, value in values.items():
                bound = self.criteria[name][criterion]
                parts.append(f"{name}: {_format(criterion, value, bound, self.base_accuracy)}")
        margin = f" (each by {self.target.z:g} standard errors)" if self.target.z else ""
        return "; ".join(parts) + margin


def _allowance(criterion: str, bound: float) -> float:
    """The loss a criterion allows at its bound (never 0: see TINY)."""
    if criterion == "sqnr_db":
        return 10 ** (-bound / 10)
    return max(bound if criterion == "accuracy" else 1 - bound, TINY)


def _format(criterion: str, value: float, bound: float, base: float | None) -> str:
    if criterion == "agreement":
        return f"top-1 agreement {100 * value:.2f}% (>= {100 * bound:.2f}%)"
    if criterion == "accuracy":
        return f"accuracy {100 * value:.2f}% (>= {100 * (base - bound):.2f}%)"
    if criterion == "sqnr_db":
        return f"SQNR {value:.1f} dB (>= {bound:g} dB)"
    return f"cosine {value:.5f} (>= {bound:g})"


def graph_outputs(graph: Graph, inputs: dict, batch: int) -> dict[str, np.ndarray]:
    """The graph's outputs for every sample of `inputs`, streamed in batches, by name."""
    wanted = {id(v): v.name for v in graph.outputs}
    parts: dict[str, list] = {name: [] for name in wanted.values()}
    for feeds in batches(graph, inputs, batch):
        for value, array in evaluate(graph, feeds):
            if id(value) in wanted:
                parts[wanted[id(value)]].append(array)
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def _top1(x: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1).argmax(1)


def _correct(got: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (_top1(got) == np.asarray(labels).reshape(-1)).astype(np.float64)


def _accuracy(got: np.ndarray, labels: np.ndarray) -> float:
    return float(_correct(got, labels).mean())
