"""Depthwise convolution (one input channel per filter group) as a sum over the kernel taps.

    y[n, m, oh, ow] = sum_{i,j} x[n, m//d, oh*sh + i*dh - top, ow*sw + j*dw - left] w[m, 0, i, j]

(d: filters per channel, the depth multiplier). im2col lowers such a conv to G products of
[P, kh*kw] x [kh*kw, d]: thousands of tiny matrices, which BLAS runs at a few percent of its
speed (MobileNetV3-small at batch 256: its depthwise layers took 90% of the run). Here each
tap (i, j) is one multiply-add over the whole tensor instead, on the rectangle of outputs
whose input pixel lies inside the image: padding is never materialized, and a tap that only
meets padding (a 5x5 kernel over a 2x2 map) costs nothing. Small channels-last convs (at most
WINDOWED products) run all taps at once instead (`_windowed`): there the two numpy calls per
tap cost more than their arithmetic.

The taps run in the layout whose innermost run is longer: channels last (NHWC) when there
are more channels than output columns (the deep, small maps), NCHW otherwise; in blocks of
images of about BLOCK outputs, each block's input copied (as float32, transposed where
channels go last) into a scratch that stays in cache across the taps with the accumulator. Integer
operands (int8) are summed in float32, exact: kh*kw products of at most 2^14 stay below 2^24
for kernels up to 32x32, which `exact_taps` checks; the sums are integers in any order.
"""

from __future__ import annotations

import functools

import numpy as np

from dlcc.runtime.kernels.strided import padded_nhwc, strided_view

BLOCK = 1 << 16  # outputs per block of images: the float32 accumulator and term fit in L2
WINDOWED = 1 << 17  # products (outputs x taps) up to which all taps run as one product


def is_depthwise(x_shape: tuple[int, ...], w_shape: tuple[int, ...], group: int) -> bool:
    """Whether Conv(x, w) with `group` groups has one input channel per group."""
    return group > 1 and w_shape[1] == 1 and x_shape[1] == group


def exact_taps(w_shape: tuple[int, ...]) -> bool:
    """Whether float32 sums of the kh*kw int8 products of one output are exact (< 2^24)."""
    return w_shape[2] * w_shape[3] * 128 * 128 <= 1 << 24


def depthwise_conv(attrs, x: np.ndarray, w: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Conv of x [N, C, H, W] (float32 or int8) by float32 w [C*d, 1, kh, kw] with C groups,
    no bias: a float32 [N, C*d, OH, OW] array, C-ordered or a channels-last one's view."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    if m != c:  # depth multiplier d: channel c feeds filters c*d .. c*d + d - 1
        x = np.repeat(x, m // c, axis=1)
    last = m > ow
    if last and n * oh * ow * kh * kw * m <= WINDOWED:
        return _windowed(attrs, x, w, oh, ow)
    out = np.zeros((n, oh, ow, m) if last else (n, m, oh, ow), np.float32)
    taps = _taps(attrs, (kh, kw), (h, wd), (oh, ow))
    per = max(1, BLOCK // (m * oh * ow))
    term = np.empty((min(per, n), *out.shape[1:]), np.float32)
    block = np.empty((min(per, n), h, wd, m) if last else (min(per, n), m, h, wd), np.float32)
    for lo in range(0, n, per):
        hi = min(lo + per, n)
        xs = block[: hi - lo]  # these images as float32, channels last where `last`
        np.copyto(xs, x[lo:hi].transpose(0, 2, 3, 1) if last else x[lo:hi])
        for (i, j), rows, cols, in_rows, in_cols in taps:
            if last:
                acc, t = out[lo:hi, rows, cols], term[: hi - lo, rows, cols]
                src, tap = xs[:, in_rows, in_cols], w[:, 0, i, j]
            else:
                acc, t = out[lo:hi, :, rows, cols], term[: hi - lo, :, rows, cols]
                src, tap = xs[:, :, in_rows, in_cols], w[:, 0, i, j, None, None]
            np.multiply(src, tap, out=t)
            np.add(acc, t, out=acc)
    return out.transpose(0, 3, 1, 2) if last else out


def _windowed(attrs, x: np.ndarray, w: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """A small channels-last depthwise conv (the deep end of a network at small batch): every
    tap in one product of a strided view of the zero-padded NHWC input, [N, OH, OW, kh, kw,
    M], by the taps' weights [kh, kw, M], summed over the taps in one reduction. Two numpy
    calls instead of two per tap, each of which costs more than its arithmetic here (a 5x5
    kernel over 240 channels of 4x4: 138 -> 57 us)."""
    n, m = x.shape[:2]
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    xp = padded_nhwc(x, attrs.pads, np.float32)
    s_n, s_h, s_w, s_c = xp.strides
    windows = strided_view(
        xp, (n, oh, ow, kh, kw, m), (s_n, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c)
    )
    products = windows * np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
    return products.sum(axis=(3, 4)).transpose(0, 3, 1, 2)


@functools.lru_cache(maxsize=256)  # per layer and input size
def _taps(attrs, kernel_hw, in_hw, out_hw) -> tuple[tuple, ...]:
    """Per tap that meets the image: ((i, j), output rows, output columns, input rows, input
    columns), the four as slices."""
    (kh, kw), (sh, sw), (dh, dw) = kernel_hw, attrs.strides, attrs.dilations
    top, left = attrs.pads[0], attrs.pads[1]
    taps = []
    for i in range(kh):
        rows, in_rows = _span(i * dh - top, sh, in_hw[0], out_hw[0])
        if rows is None:
            continue
        for j in range(kw):
            cols, in_cols = _span(j * dw - left, sw, in_hw[1], out_hw[1])
            if cols is not None:
                taps.append(((i, j), rows, cols, in_rows, in_cols))
    return tuple(taps)


def _span(offset: int, stride: int, size: int, out: int) -> tuple[slice | None, slice | None]:
    """The outputs o in [0, out) whose input o*stride + offset lies in [0, size), and those
    inputs, as slices; (None, None) when there are none."""
    lo = max(0, -(offset // stride)) if offset < 0 else 0
    hi = min(out, (size - 1 - offset) // stride + 1) if size - 1 - offset >= 0 else 0
    if hi <= lo:
        return None, None
    start = lo * stride + offset
    return slice(lo, hi), slice(start, start + (hi - lo - 1) * stride + 1, stride)
