"""Resize (and Upsample, which the frontend brings up to it): nearest and linear, ONNX semantics.

Each resized axis is independent: an output coordinate maps back to a source coordinate by
the coordinate transformation, then reads the nearest source element (per `nearest_mode`) or
interpolates linearly between its two neighbours (source coordinates clamped to the data).
Axes are resized one after the other; each step is one gather, vectorized.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dlcc.runtime.kernels import check, register_kernel

TRANSFORMS = (
    "half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
)  # fmt: skip
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@dataclasses.dataclass(frozen=True)
class ResizeAttrs:
    """Per axis the output size or the scale (output / input), mode and ONNX's rounding
    options. A size of 0 is floor(input * scale) and a scale of 0 is size / input, both
    taken at run time: how a resize of symbolic dimensions keeps its meaning."""

    sizes: tuple[int, ...]
    scales: tuple[float, ...]
    mode: str = "nearest"
    coordinate_transformation_mode: str = "half_pixel"
    nearest_mode: str = "round_prefer_floor"

    def __post_init__(self) -> None:
        check(self.mode in ("nearest", "linear"), f"mode {self.mode!r}: nearest or linear")
        mode = self.coordinate_transformation_mode
        check(mode in TRANSFORMS, f"coordinate_transformation_mode {mode!r} is not supported")
        check(self.nearest_mode in NEAREST_MODES, f"nearest_mode {self.nearest_mode!r}")
        check(len(self.sizes) == len(self.scales), "one scale per output axis")
        check(min(self.sizes, default=0) >= 0, f"sizes {self.sizes}")
        check(all(0 <= s < math.inf for s in self.scales), f"scales {self.scales}")
        check(all(n or s for n, s in zip(self.sizes, self.scales)), "a size or a scale per axis")


def geometry(attrs: ResizeAttrs, axis: int, n_in: int) -> tuple[int, float]:
    """The output size and scale of `axis` for an input of `n_in`."""
    scale = attrs.scales[axis]
    n_out = attrs.sizes[axis] or math.floor(n_in * scale)
    return n_out, scale or n_out / n_in


def _resize_shape(attrs: ResizeAttrs, x):
    check(len(attrs.sizes) == len(x), f"sizes {attrs.sizes} for rank {len(x)}")
    out = tuple(geometry(attrs, axis, n)[0] for axis, n in enumerate(x))
    check(min(out, default=1) >= 1, f"resizing {tuple(x)} gives {out}")
    return (out,)


def source_coordinates(attrs: ResizeAttrs, axis: int, n_in: int) -> np.ndarray:
    """Where each output position along `axis` samples the input (float64, unclamped)."""
    n_out, scale = geometry(attrs, axis, n_in)
    length = n_in * scale  # ONNX's resized length: fractional when scales are given
    x = np.arange(n_out, dtype=np.float64)
    mode = attrs.coordinate_transformation_mode
    if mode == "align_corners":
        return x * (n_in - 1) / (length - 1) if length > 1 else np.zeros(n_out)
    if mode == "asymmetric":
        return x / scale
    if mode == "pytorch_half_pixel" and length <= 1:
        return np.zeros(n_out)
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / (scale * n_in))
        return offset + (x + 0.5) / scale - 0.5
    return (x + 0.5) / scale - 0.5


def _nearest(attrs: ResizeAttrs, coords: np.ndarray) -> np.ndarray:
    rounding = {
        "round_prefer_floor": lambda c: np.ceil(c - 0.5),
        "round_prefer_ceil": lambda c: np.floor(c + 0.5),
        "floor": np.floor,
        "ceil": np.ceil,
    }[attrs.nearest_mode]
    return rounding(coords).astype(np.int64)


@register_kernel("Resize", ResizeAttrs, code=65, shape=_resize_shape)
def resize(attrs: ResizeAttrs, x: np.ndarray) -> np.ndarray:
    """y[..., i, ...] = x at source_coordinates(i): nearest, or linear between neighbours"""
    y = x
    for axis, n_in in enumerate(x.shape):
        n_out, scale = geometry(attrs, axis, n_in)
        if n_in == n_out and scale == 1:
            continue
        coords = source_coordinates(attrs, axis, n_in)
        if attrs.mode == "nearest":
            y = np.take(y, np.clip(_nearest(attrs, coords), 0, n_in - 1), axis=axis)
            continue
        coords = np.clip(coords, 0, n_in - 1)
        low = np.floor(coords).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        view = [1] * y.ndim
        view[axis] = n_out
        frac = (coords - low).reshape(view).astype(y.dtype)
        y = np.take(y, low, axis=axis) * (1 - frac) + np.take(y, high, axis=axis) * frac
    return y
