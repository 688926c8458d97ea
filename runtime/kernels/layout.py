"""Data movement that changes extents: Pad, Split, Expand, Tile, DepthToSpace (ONNX semantics).

Every parameter that sizes the output (pads, split sizes, target shape, repeats) is an
attribute, folded from constant inputs by the frontend, so shapes stay known ahead of time.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from dlcc.runtime.kernels import any_dtype, axis_in, check, register_kernel
from dlcc.runtime.kernels.elementwise import unbroadcast

MAX_RANGE = 1 << 31  # elements of a Range: what a dimension may hold

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
    """The shape x is broadcast against (numpy rules; 1 keeps x's dimension). `shape_from`
    (optional, one per entry): -1 keeps `shape`, i >= 0 takes dimension i of a second input,
    `like` (read for its shape only): a broadcast to a symbolic dimension x does not hold."""

    shape: tuple[int, ...]
    shape_from: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check(min(self.shape, default=1) >= 1, f"Expand shape {self.shape}")
        check(
            len(self.shape_from) in (0, len(self.shape)) and min(self.shape_from, default=0) >= -1,
            f"Expand shape_from {self.shape_from}",
        )


@functools.lru_cache(maxsize=1024)  # per layer and input shapes (broadcast_shapes: ~3 us)
def _expand_shape(attrs: ExpandAttrs, x, like=None):
    target = list(attrs.shape)
    for k, source in enumerate(attrs.shape_from):
        if source >= 0:
            check(like is not None and source < len(like), f"Expand dim {source} of {like}")
            target[k] = like[source]
    return (tuple(np.broadcast_shapes(tuple(x), tuple(target))),)


def _expand_dtype(attrs: ExpandAttrs, x: str, like: str | None = None) -> str:
    return any_dtype(attrs, x)  # `like` is read for its shape: any dtype


def _expand_grad(attrs: ExpandAttrs, args, y, dy, want):
    return [unbroadcast(dy, args[0].shape) if want[0] else None, None][: len(args)]


@register_kernel(
    "Expand",
    ExpandAttrs,
    code=60,
    shape=_expand_shape,
    dtype=_expand_dtype,
    grad=_expand_grad,
    int8="same",
)
def expand(attrs: ExpandAttrs, x: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """y = x broadcast to broadcast_shapes(x.shape, shape), entries of `shape` from `like`"""
    y = np.empty(_expand_shape(attrs, x.shape, None if like is None else like.shape)[0], x.dtype)
    y[...] = x  # (an assignment broadcasts as np.broadcast_to does, at a third of its cost)
    return y


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


@dataclasses.dataclass(frozen=True)
class RangeAttrs:
    """y = start + delta * arange(n), n = ceil((limit - start) / delta), where the limit is
    dimension `axis` of the input `like` (read for its shape only): a grid as long as a
    symbolic dimension (a detector's anchor offsets). `dtype`: float32, int32 or int64."""

    start: float
    delta: float
    axis: int
    dtype: str = "float32"

    def __post_init__(self) -> None:
        check(self.delta != 0 and math.isfinite(self.delta + self.start), "Range delta 0 or NaN")
        check(self.dtype in ("float32", "int32", "int64"), f"Range dtype {self.dtype!r}")
        check(self.axis >= 0, f"Range axis {self.axis}")


def _range_length(attrs: RangeAttrs, like) -> int:
    check(attrs.axis < len(like), f"Range limit from dim {attrs.axis} of {tuple(like)}")
    n = math.ceil((like[attrs.axis] - attrs.start) / attrs.delta)
    check(1 <= n <= MAX_RANGE, f"Range of {n} elements")
    return n


@register_kernel(
    "Range",
    RangeAttrs,
    code=80,
    shape=lambda attrs, like: ((_range_length(attrs, like),),),
    dtype=lambda attrs, like: attrs.dtype,
)
def range_(attrs: RangeAttrs, like: np.ndarray) -> np.ndarray:
    """y = start + delta * arange(ceil((like.shape[axis] - start) / delta))"""
    n = _range_length(attrs, like.shape)
    return (attrs.start + attrs.delta * np.arange(n, dtype=np.float64)).astype(attrs.dtype)
