"""Selection ops: Gather (constant indices) and Slice (constant bounds), ONNX semantics."""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.runtime.kernels import register_kernel


@dataclasses.dataclass(frozen=True)
class GatherAttrs:
    """Axis the indices select along (negative counts from the end)."""

    axis: int = 0


@dataclasses.dataclass(frozen=True)
class SliceAttrs:
    """Per listed axis: x[starts:ends:steps] with ONNX's clamping of out-of-range bounds."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]
    axes: tuple[int, ...]
    steps: tuple[int, ...]


def _gather_shape(attrs: GatherAttrs, x, indices):
    axis = attrs.axis % len(x)
    return (tuple(x[:axis]) + tuple(indices) + tuple(x[axis + 1 :]),)


@register_kernel("Gather", GatherAttrs, shape=_gather_shape)
def gather(attrs: GatherAttrs, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """y = take(x, indices, axis)   (negative indices count from the end)"""
    return np.take(x, indices.astype(np.int64), axis=attrs.axis)


def _slices(attrs: SliceAttrs, shape) -> tuple[slice, ...]:
    index = [slice(None)] * len(shape)
    for start, end, axis, step in zip(attrs.starts, attrs.ends, attrs.axes, attrs.steps):
        first, stop, step = slice(start, end, step).indices(shape[axis])
        # indices() gives stop -1 for "before index 0"; as a slice bound -1 means the last.
        index[axis % len(shape)] = slice(first, None if stop < 0 else stop, step)
    return tuple(index)


def _slice_shape(attrs: SliceAttrs, x):
    return (tuple(len(range(*s.indices(d))) for s, d in zip(_slices(attrs, x), x)),)


@register_kernel("Slice", SliceAttrs, shape=_slice_shape)
def slice_(attrs: SliceAttrs, x: np.ndarray) -> np.ndarray:
    """y = x[starts:ends:steps] along `axes`"""
    return x[_slices(attrs, x.shape)]
