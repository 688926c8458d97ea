"""Window pooling ops: MaxPool, AveragePool (ONNX semantics, 2-D) and the global pools."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from dlcc.errors import ExecutionError
from dlcc.runtime.kernels import NoAttrs, check, phases, register_kernel, unary_grad
from dlcc.runtime.kernels.matrix import check_window

MAX_TAPS = 1 << 16  # the kernels loop once per window tap: bound the loop
BLOCK = 1 << 16  # outputs per block of images padded in phases (phases.TapRuns)
RUNS_FROM = 1 << 14  # outputs from which a padded strided pool runs over phases (_pool)


@dataclasses.dataclass(frozen=True)
class PoolAttrs:
    """2-D pooling attributes; pads in ONNX order (top, left, bottom, right)."""

    kernel: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    ceil_mode: int = 0
    count_include_pad: int = 0

    def __post_init__(self) -> None:
        check_window(self.strides, self.pads, self.dilations)
        check(min(self.kernel) >= 1, f"kernel {self.kernel}: each must be >= 1")
        check(
            self.kernel[0] * self.kernel[1] <= MAX_TAPS, f"kernel {self.kernel}: > {MAX_TAPS} taps"
        )
        check(self.ceil_mode in (0, 1), f"ceil_mode {self.ceil_mode} not 0 or 1")
        check(self.count_include_pad in (0, 1), f"count_include_pad {self.count_include_pad}")


def _out_len(n: int, k: int, s: int, d: int, pad_b: int, pad_e: int, ceil_mode: int) -> int:
    span = n + pad_b + pad_e - d * (k - 1) - 1
    if not ceil_mode:
        return span // s + 1
    out = -(-span // s) + 1
    # ONNX: the last window must start inside the input or its leading padding.
    return out - 1 if (out - 1) * s >= n + pad_b else out


def pool_output_hw(h: int, w: int, attrs: PoolAttrs) -> tuple[int, int]:
    """(OH, OW) of a pooling window: floor (or ceil_mode ceil) of (in + pads - span) / s + 1."""
    top, left, bottom, right = attrs.pads
    (kh, kw), (sh, sw), (dh, dw) = attrs.kernel, attrs.strides, attrs.dilations
    return (
        _out_len(h, kh, sh, dh, top, bottom, attrs.ceil_mode),
        _out_len(w, kw, sw, dw, left, right, attrs.ceil_mode),
    )


def pool_geometry(x: tuple, attrs: PoolAttrs) -> tuple[int, int]:
    """(OH, OW); ValueError unless x is [N, C, H, W] with at least one output pixel."""
    return _pool_geometry(tuple(x), attrs)


@functools.lru_cache(maxsize=256)  # per layer and input size: a run formats no message
def _pool_geometry(x: tuple, attrs: PoolAttrs) -> tuple[int, int]:
    check(len(x) == 4, f"2-D pooling takes a 4-D input, got {x}")
    oh, ow = pool_output_hw(x[2], x[3], attrs)
    check(oh >= 1 and ow >= 1, f"pooling {x} with {attrs} has no output pixel")
    return oh, ow


def _tap_counts(n: int, k: int, s: int, d: int, pad_b: int, pad_e: int, n_out: int, pad: int):
    """Per output position along one axis, how many taps fall in the input (or its pads)."""
    lo, hi = (-pad_b, n + pad_e) if pad else (0, n)
    pos = np.arange(n_out)[:, None] * s - pad_b + np.arange(k)[None, :] * d
    return ((pos >= lo) & (pos < hi)).sum(axis=1)


def _pool_shape(attrs: PoolAttrs, x):
    return ((x[0], x[1], *pool_geometry(x, attrs)),)


def pool_taps(shape: tuple, attrs: PoolAttrs):
    """Padded (H, W), the input's place in the padded copy, and per tap the slices it reads."""
    return _pool_taps(tuple(shape[2:]), attrs)


@functools.lru_cache(maxsize=256)  # per layer and image size: a run computes nothing here
def _pool_taps(hw: tuple[int, int], attrs: PoolAttrs):
    h, w = hw
    oh, ow = pool_output_hw(h, w, attrs)
    top, left, _, _ = attrs.pads
    (kh, kw), (sh, sw), (dh, dw) = attrs.kernel, attrs.strides, attrs.dilations
    rows = [slice(i * dh, i * dh + (oh - 1) * sh + 1, sh) for i in range(kh)]
    cols = [slice(j * dw, j * dw + (ow - 1) * sw + 1, sw) for j in range(kw)]
    inside = (..., slice(top, top + h), slice(left, left + w))
    return _padded_hw(h, w, oh, ow, attrs), inside, [(..., r, c) for r in rows for c in cols]


def _padded_hw(h: int, w: int, oh: int, ow: int, attrs: PoolAttrs) -> tuple[int, int]:
    """Height and width of the padded input, covering the ceil_mode overhang too."""
    top, left, bottom, right = attrs.pads
    (kh, kw), (sh, sw), (dh, dw) = attrs.kernel, attrs.strides, attrs.dilations
    hp = max(h + top + bottom, (oh - 1) * sh + (kh - 1) * dh + 1)
    wp = max(w + left + right, (ow - 1) * sw + (kw - 1) * dw + 1)
    return hp, wp


def _pool_workspace(attrs: PoolAttrs, x) -> int:
    """The images in the stride's phases and a run's result (phases.TapRuns), at most."""
    return phases.workspace(x, attrs.kernel, attrs, pool_output_hw(x[2], x[3], attrs))


def _max_pool_grad(attrs: PoolAttrs, args, y, dy, want):
    x = args[0]
    (hp, wp), inside, taps = pool_taps(x.shape, attrs)
    xp = np.full((*x.shape[:2], hp, wp), -np.inf, x.dtype)
    xp[inside] = x
    dxp, free = np.zeros_like(xp), np.ones(y.shape, bool)
    for tap in taps:  # the first tap holding the maximum takes the gradient
        hit = free & (xp[tap] == y)
        dxp[tap] += np.where(hit, dy, 0)
        free &= ~hit
    return [dxp[inside]]


def _average_pool_grad(attrs: PoolAttrs, args, y, dy, want):
    x = args[0]
    (hp, wp), inside, taps = pool_taps(x.shape, attrs)
    top, left, bottom, right = attrs.pads
    counted = np.zeros((hp, wp), x.dtype)  # the positions a window's divisor counts
    if attrs.count_include_pad:
        counted[: x.shape[2] + top + bottom, : x.shape[3] + left + right] = 1
    else:
        counted[inside[1:]] = 1
    share = dy / sum(counted[tap[1:]] for tap in taps)
    dxp = np.zeros((*x.shape[:2], hp, wp), dy.dtype)
    for tap in taps:
        dxp[tap] += share
    return [dxp[inside]]


def _spatial_max_grad(attrs, x, y, dy):
    hit = x == y  # ties share the gradient
    return hit * (dy / hit.sum(axis=tuple(range(2, x.ndim)), keepdims=True))


@register_kernel(
    "MaxPool",
    PoolAttrs,
    code=7,
    shape=_pool_shape,
    workspace=_pool_workspace,
    grad=_max_pool_grad,
    per_channel=True,
    homogeneous=True,
    int8="same",
)
def max_pool(attrs: PoolAttrs, x: np.ndarray) -> np.ndarray:
    """y[n, c, oh, ow] = max over the window taps that fall inside x"""
    fill = -np.inf if x.dtype.kind == "f" else _lowest(x.dtype)
    return _pool(x, attrs, fill, np.maximum)


@functools.cache
def _lowest(dtype: np.dtype) -> int:
    """The smallest value of an integer dtype, once (np.iinfo costs microseconds a call)."""
    return int(np.iinfo(dtype).min)


@register_kernel(
    "AveragePool",
    PoolAttrs,
    code=8,
    shape=_pool_shape,
    workspace=_pool_workspace,
    grad=_average_pool_grad,
    per_channel=True,
    homogeneous=True,
)
def average_pool(attrs: PoolAttrs, x: np.ndarray) -> np.ndarray:
    """y = sum(window taps in x) / count, count including pad taps iff count_include_pad"""
    y = _pool(x, attrs, 0, np.add)
    y /= _divisors(x.shape[2:], attrs, np.dtype(x.dtype))
    return y


def _pool(x: np.ndarray, attrs: PoolAttrs, fill, combine) -> np.ndarray:
    """The window taps of x (positions outside it read `fill`) combined in tap order by the
    ufunc `combine`, over strided views of x (or of a padded copy); a padded strided pool of
    at least RUNS_FROM outputs over each tap's contiguous run of the images in the stride's
    phases instead (phases.TapRuns: 0.2-0.8x the time on ResNet stems' 3x3 stride-2 pools,
    the same values; below, or at stride 1, its setup costs more than it saves)."""
    try:
        oh, ow = pool_geometry(x.shape, attrs)
    except ValueError as e:
        raise ExecutionError(str(e)) from None
    (hp, wp), inside, taps = pool_taps(x.shape, attrs)
    padded = (hp, wp) != x.shape[2:]
    if padded and max(attrs.strides) > 1 and x.shape[0] * x.shape[1] * oh * ow >= RUNS_FROM:
        return _pool_runs(x, attrs, (oh, ow), fill, combine)
    if padded:
        xp = np.full((*x.shape[:2], hp, wp), fill, dtype=x.dtype)
        xp[inside] = x
    else:  # no pads, no overhang: the taps read x itself
        xp = x
    y = xp[taps[0]].copy()
    for tap in taps[1:]:
        combine(y, xp[tap], out=y)
    return y


def _pool_runs(x: np.ndarray, attrs: PoolAttrs, out_hw, fill, combine) -> np.ndarray:
    """`_pool` over each tap's run of blocks of images in phases (phases.TapRuns)."""

    def step(acc: np.ndarray, k: int, run: np.ndarray) -> None:
        if k:
            combine(acc, run, out=acc)
        else:
            np.copyto(acc, run)

    grid = phases.TapRuns(x.shape, attrs.kernel, attrs, out_hw, BLOCK, fill, x.dtype)
    return grid.fold(x, step)


@functools.lru_cache(maxsize=256)
def _divisors(hw: tuple[int, int], attrs: PoolAttrs, dtype: np.dtype) -> np.ndarray:
    """The number of taps each AveragePool window counts, [OH, OW] (read-only, cached)."""
    h, w = hw
    oh, ow = pool_output_hw(h, w, attrs)
    top, left, bottom, right = attrs.pads
    (kh, kw), (sh, sw), (dh, dw) = attrs.kernel, attrs.strides, attrs.dilations
    inc = attrs.count_include_pad
    count_h = _tap_counts(h, kh, sh, dh, top, bottom, oh, inc)
    count_w = _tap_counts(w, kw, sw, dw, left, right, ow, inc)
    divisors = np.outer(count_h, count_w).astype(dtype)
    divisors.flags.writeable = False
    return divisors


def _global_shape(attrs, x):
    check(len(x) >= 3, f"global pooling takes [N, C, spatial...], got {x}")
    return ((x[0], x[1], *([1] * (len(x) - 2))),)


@register_kernel(
    "GlobalAveragePool",
    NoAttrs,
    code=9,
    shape=_global_shape,
    grad=unary_grad(lambda a, x, y, d: np.broadcast_to(d * (y.size / x.size), x.shape)),
    per_channel=True,
    homogeneous=True,
)
def global_average_pool(attrs, x: np.ndarray) -> np.ndarray:
    """y[n, c, 1, 1] = mean(x[n, c])

    The sums as one matrix-vector product, [N*C, H*W] times ones: numpy's reduction over a
    few trailing elements per output runs 5-10x slower (MobileNetV3's 4x4 and 2x2 maps)."""
    hw = math.prod(x.shape[2:])
    if hw <= 1 or x.dtype.kind != "f":
        return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype)
    sums = np.reshape(x, (-1, hw)) @ np.ones(hw, x.dtype)
    return (sums / hw).astype(x.dtype, copy=False).reshape(x.shape[:2] + (1,) * (x.ndim - 2))


@register_kernel(
    "GlobalMaxPool",
    NoAttrs,
    code=10,
    shape=_global_shape,
    grad=unary_grad(_spatial_max_grad),
    per_channel=True,
    homogeneous=True,
    int8="same",
)
def global_max_pool(attrs, x: np.ndarray) -> np.ndarray:
    """y[n, c, 1, 1] = max(x[n, c])"""
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)
