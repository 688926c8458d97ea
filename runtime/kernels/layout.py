"""Data movement that changes extents: Pad, Split, Expand, Tile, DepthToSpace (ONNX semantics).

Every parameter that sizes the output (pads, split sizes, target shape, repeats) is an
attribute, folded from constant inputs by the frontend, so shapes stay known ahead of time.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dlcc.runtime.kernels import any_dtype, axis_in, check, register_kernel

PAD_MODES = ("constant", "reflect", "edge", "wrap")


@dataclasses.dataclass(frozen=True)
class PadAttrs:
    """pads = all begins then all ends, one per axis (negative: crop); value for constant."""

    pads: tuple[int, ...]
    mode: str = "constant"
    value: float = 0.0

    def __post_init__(self) -> None:
        check(self.mode in PAD_MODES, f"mode {self.mode!r} not one of {', '.join(PAD_MODES)}")
        check(not math.isnan(self.value) or self.mode != "constant", "a NaN pad value")


def _pad_widths(attrs: PadAttrs, shape) -> tuple[tuple[slice, ...], list[tuple[int, int]]]:
    """The crop (negative pads) and the widths added (positive pads) per axis."""
    rank = len(shape)
    check(len(attrs.pads) == 2 * rank, f"{len(attrs.pads)} pads for rank {rank}")
    begins, ends = attrs.pads[:rank], attrs.pads[rank:]
    crop = tuple(slice(max(-b, 0), d - max(-e, 0)) for d, b, e in zip(shape, begins, ends))
    return crop, [(max(b, 0), max(e, 0)) for b, e in zip(begins, ends)]


def _pad_shape(attrs: PadAttrs, x):
    crop, widths = _pad_widths(attrs, x)
    kept = [len(range(*s.indices(d))) for s, d in zip(crop, x)]
    out = tuple(k + b + e for k, (b, e) in zip(kept, widths))
    check(min(out, default=1) >= 1, f"Pad {attrs.pads} of {tuple(x)} leaves nothing")
    if attrs.mode != "constant":  # reflect / edge / wrap read the kept data, which must exist
        check(min(kept, default=1) >= 1, f"{attrs.mode} padding of an empty axis")
    if attrs.mode in ("reflect", "wrap"):
        fits = all(b < k and e < k or b == e == 0 for k, (b, e) in zip(kept, widths))
        check(fits, f"{attrs.mode} pads {attrs.pads} reach past the data {tuple(kept)}")
    return (out,)


@register_kernel("Pad", PadAttrs, code=58, shape=_pad_shape)
def pad(attrs: PadAttrs, x: np.ndarray) -> np.ndarray:
    """y = x cropped by the negative pads, then padded by the positive ones in `mode`"""
    crop, widths = _pad_widths(attrs, x.shape)
    x = x[crop]
    if attrs.mode == "constant":
        return np.pad(x, widths, constant_values=x.dtype.type(attrs.value))
    return np.pad(x, widths, mode=attrs.mode)


@dataclasses.dataclass(frozen=True)
class SplitAttrs:
    """The axis and the size of each piece along it."""

    axis: int
    sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        check(len(self.sizes) >= 1 and min(self.sizes) >= 1, f"split sizes {self.sizes}")


def _split_shape(attrs: SplitAttrs, x):
    axis = axis_in(attrs.axis, len(x))
    check(sum(attrs.sizes) == x[axis], f"sizes {attrs.sizes} do not add up to {x[axis]}")
    return tuple(tuple(s if i == axis else d for i, d in enumerate(x)) for s in attrs.sizes)


@register_kernel("Split", SplitAttrs, code=59, shape=_split_shape, dtype=any_dtype)
def split(attrs: SplitAttrs, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """(y_0, y_1, ...) = consecutive pieces of x of `sizes` along `axis`"""
    cuts = np.cumsum(attrs.sizes)[:-1]
    return tuple(np.ascontiguousarray(p) for p in np.split(x, cuts, axis=attrs.axis))


@dataclasses.dataclass(frozen=True)
class ExpandAttrs:
    """The shape x is broadcast against (numpy rules; 1 keeps x's dimension)."""

    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        check(min(self.shape, default=1) >= 1, f"Expand shape {self.shape}")


def _expand_shape(attrs: ExpandAttrs, x):
    return (tuple(np.broadcast_shapes(tuple(x), attrs.shape)),)


@register_kernel("Expand", ExpandAttrs, code=60, shape=_expand_shape, dtype=any_dtype, int8="same")
def expand(attrs: ExpandAttrs, x: np.ndarray) -> np.ndarray:
    """y = x broadcast to broadcast_shapes(x.shape, shape)"""
    return np.ascontiguousarray(np.broadcast_to(x, _expand_shape(attrs, x.shape)[0]))


@dataclasses.dataclass(frozen=True)
class TileAttrs:
    """How many copies along each axis."""

    repeats: tuple[int, ...]

    def __post_init__(self) -> None:
        check(min(self.repeats, default=1) >= 1, f"repeats {self.repeats}")


def _tile_shape(attrs: TileAttrs, x):
    check(len(attrs.repeats) == len(x), f"{len(attrs.repeats)} repeats for rank {len(x)}")
    return (tuple(d * r for d, r in zip(x, attrs.repeats)),)


@register_kernel("Tile", TileAttrs, code=61, shape=_tile_shape, dtype=any_dtype, int8="same")
def tile(attrs: TileAttrs, x: np.ndarray) -> np.ndarray:
    """y = x repeated `repeats[i]` times along axis i"""
    return np.tile(x, attrs.repeats)


@dataclasses.dataclass(frozen=True)
class DepthToSpaceAttrs:
    """Block size, and the channel order: DCR (depth, column, row) or CRD."""

    blocksize: int
    mode: str = "DCR"

    def __post_init__(self) -> None:
        check(self.blocksize >= 1 and self.mode in ("DCR", "CRD"), f"{self}")


def _depth_to_space_shape(attrs: DepthToSpaceAttrs, x):
    b = attrs.blocksize
    check(len(x) == 4 and x[1] % (b * b) == 0, f"DepthToSpace of {x} by {b}")
    return ((x[0], x[1] // (b * b), x[2] * b, x[3] * b),)


@register_kernel(
    "DepthToSpace", DepthToSpaceAttrs, code=62, shape=_depth_to_space_shape, int8="same"
)
def depth_to_space(attrs: DepthToSpaceAttrs, x: np.ndarray) -> np.ndarray:
    """Channel blocks of b*b become b x b spatial blocks (DCR or CRD order)."""
    n, c, h, w = x.shape
    b = attrs.blocksize
    if attrs.mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return np.ascontiguousarray(y).reshape(n, c // (b * b), h * b, w * b)
