"""Calibration: run the float IR on sample data and stream per-tensor activation ranges.

The graph is evaluated by `passes.evaluate` (the runtime's kernels), one batch at a time;
each value is freed after its last use, and only a running maximum
(and, for percentiles, a fixed-size histogram) is kept per tensor, so memory does not grow
with the number of samples.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from dlcc.errors import PassError
from dlcc.ir import Graph, sample_axis
from dlcc.passes.evaluate import evaluate

BINS = 2048


def sample_count(graph: Graph, data: dict[str, np.ndarray]) -> int:
    """How many samples `data` holds for `graph` (checked to agree across inputs)."""
    counts = set()
    for value in graph.inputs:
        if value.name not in data:
            raise PassError(f"calibration data has no array for input {value.name!r}")
        axis = sample_axis(value.shape, value.batch_axis)
        if axis is None:
            raise PassError(f"input {value.name!r} has no axis to take samples along")
        shape = data[value.name].shape
        expected = list(value.shape)
        for free in {axis, *value.free_axes}:  # the samples, and any symbolic dimension
            expected[free] = shape[free] if len(shape) > free else 0
        if tuple(shape) != tuple(expected):
            raise PassError(
                f"data for input {value.name!r} has shape {tuple(shape)}; the model "
                f"takes {value.dims()}"
            )
        counts.add(shape[axis])
    if len(counts) != 1:
        raise PassError(f"calibration inputs hold different sample counts: {sorted(counts)}")
    return counts.pop()


def batches(graph: Graph, data: dict[str, np.ndarray], size: int) -> Iterator[dict]:
    """`data` cut into batches of `size` along each input's sample axis (one sample at a
    time for a model with a fixed batch of 1)."""
    total = sample_count(graph, data)
    if any(v.batch_axis is None for v in graph.inputs):
        size = 1
    axes = {v.name: sample_axis(v.shape, v.batch_axis) for v in graph.inputs}
    for start in range(0, total, size):
        rows = np.arange(start, min(start + size, total))
        yield {
            v.name: np.take(data[v.name], rows, axis=axes[v.name]).astype(v.dtype)
            for v in graph.inputs
        }


def activation_ranges(
    graph: Graph,
    data: dict[str, np.ndarray],
    method: str = "minmax",
    percentile: float = 99.99,
    batch: int = 64,
    progress=None,
) -> dict[int, float]:
    """Per non-constant value (by id): the |x| bound that maps to int8's 127."""
    peak: dict[int, float] = {}
    steps = -(-sample_count(graph, data) // batch) * (2 if method == "percentile" else 1)
    done = 0
    for feeds in batches(graph, data, batch):
        for value, array in evaluate(graph, feeds):
            if array.dtype.kind != "f":  # ids, indices, masks: never int8, no range
                continue
            peak[id(value)] = max(peak.get(id(value), 0.0), float(np.abs(array).max(initial=0.0)))
        done += 1
        if progress:
            progress("calibrate", done, steps)
    if method == "minmax":
        return peak
    counts = {key: np.zeros(BINS, np.int64) for key in peak}
    for feeds in batches(graph, data, batch):
        for value, array in evaluate(graph, feeds):
            if id(value) not in counts:
                continue
            top = peak[id(value)] or 1.0
            counts[id(value)] += np.histogram(np.abs(array), BINS, (0.0, top))[0]
        done += 1
        if progress:
            progress("calibrate", done, steps)
    bounds = {}
    for key, hist in counts.items():
        cumulative = np.cumsum(hist)
        edge = np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0)
        bounds[key] = (edge + 1) / BINS * (peak[key] or 1.0)
    return bounds
