"""Selection ops: Gather (constant indices) and Slice (constant bounds), ONNX semantics."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from dlcc.errors import ExecutionError
from dlcc.runtime.kernels import (
    INDEX_DTYPES,
    WeightInput,
    any_dtype,
    axis_in,
    check,
    register_kernel,
)
from dlcc.runtime.kernels.constants import derived


@dataclasses.dataclass(frozen=True)
class GatherAttrs:
    """Axis the indices select along (negative counts from the end)."""

    axis: int = 0


@dataclasses.dataclass(frozen=True)
class SliceAttrs:
    """Per listed axis: x[starts:ends:steps] with ONNX's clamping of out-of-range bounds.

    `ends_from` (optional, one per listed axis): -1 keeps `ends`, i >= 0 takes the end from
    dimension i of a second input, `like` (read for its shape only): a prefix as long as a
    symbolic dimension, e.g. position ids sliced to the sequence length."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    axes: tuple[int, ...]
    steps: tuple[int, ...]
    ends_from: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        lengths = {len(self.starts), len(self.ends), len(self.axes), len(self.steps)}
        check(len(lengths) == 1, "Slice starts, ends, axes and steps differ in length")
        check(0 not in self.steps, "a Slice step is 0")
        check(
            len(self.ends_from) in (0, len(self.ends)) and min(self.ends_from, default=0) >= -1,
            f"Slice ends_from {self.ends_from}",
        )


def _gather_shape(attrs: GatherAttrs, x, indices):
    axis = axis_in(attrs.axis, len(x))
    return (tuple(x[:axis]) + tuple(indices) + tuple(x[axis + 1 :]),)


def _gather_dtype(attrs: GatherAttrs, x, indices):
    check(indices in INDEX_DTYPES, f"Gather indices must be int32 or int64, not {indices}")
    return any_dtype(attrs, x)


@register_kernel(
    "Gather",
    GatherAttrs,
    code=22,
    shape=_gather_shape,
    dtype=_gather_dtype,
    int8="same",
    weights=(WeightInput(0, "data", channel_axis=0),),  # a constant table: one scale per row
)
def gather(attrs: GatherAttrs, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """y = take(x, indices, axis)   (negative indices count from the end)"""
    n = x.shape[attrs.axis]
    if indices.size:
        lo, hi = derived(indices, "bounds", _bounds)  # 16 B, once per constant index tensor
        if not -n <= lo <= hi < n:
            raise ExecutionError(f"Gather: an index lies outside -{n}..{n - 1}")
    return np.take(x, indices.astype(np.int64, copy=False), axis=attrs.axis)


def _bounds(indices: np.ndarray) -> np.ndarray:
    return np.array([indices.min(), indices.max()], np.int64)


@functools.lru_cache(maxsize=1024)  # per layer and input shapes: ~3 us of checks and slices
def _slices(attrs: SliceAttrs, shape, like=None) -> tuple[slice, ...]:
    index = [slice(None)] * len(shape)
    axes = [axis_in(a, len(shape)) for a in attrs.axes]
    check(len(set(axes)) == len(axes), f"Slice axes {attrs.axes} repeat")
    ends = list(attrs.ends)
    for k, source in enumerate(attrs.ends_from):
        if source >= 0:
            check(like is not None and source < len(like), f"Slice end from dim {source} of {like}")
            ends[k] = like[source]
    for start, end, axis, step in zip(attrs.starts, ends, axes, attrs.steps):
        first, stop, step = slice(start, end, step).indices(shape[axis])
        # indices() gives stop -1 for "before index 0"; as a slice bound -1 means the last.
        index[axis] = slice(first, None if stop < 0 else stop, step)
    return tuple(index)


def _slice_shape(attrs: SliceAttrs, x, like=None):
    return (tuple(len(range(*s.indices(d))) for s, d in zip(_slices(attrs, x, like), x)),)


def _slice_dtype(attrs: SliceAttrs, x: str, like: str | None = None) -> str:
    return any_dtype(attrs, x)  # `like` is read for its shape: any dtype


@register_kernel("Slice", SliceAttrs, code=23, shape=_slice_shape, dtype=_slice_dtype, int8="same")
def slice_(attrs: SliceAttrs, x: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """y = x[starts:ends:steps] along `axes` (an end may be a dimension of `like`)"""
    return x[_slices(attrs, x.shape, None if like is None else like.shape)]
