"""Depthwise convolution (one input channel per filter group) as a sum over the kernel taps.

    y[n, m, oh, ow] = sum_{i,j} x[n, m//d, oh*sh + i*dh - top, ow*sw + j*dw - left] w[m, 0, i, j]

(d: filters per channel, the depth multiplier). im2col lowers such a conv to G products of
[P, kh*kw] x [kh*kw, d]: thousands of tiny matrices, which BLAS runs at a few percent of its
speed (MobileNetV3-small at batch 256: its depthwise layers took 90% of the run). Instead,
by the layout whose innermost run is longer:

- channels last (more channels than output columns: the deep, small maps), every tap at
  once: one np.einsum of a strided view of the zero-padded NHWC input, [N, OH, OW, kh, kw,
  M], with the taps' weights [kh, kw, M]. numpy's sum-of-products loop runs along the
  channels and never writes the products out: 1.5-3.3x the speed of a multiply and an add
  per tap, over MobileNetV3-small's layers at batch 1 to 256 (in blocks of images of about
  BLOCK outputs, whose padded copy stays in cache: 10-40% more at batch 256);
- NCHW otherwise (few channels, wide maps), tap by tap: each tap (i, j) one multiply and
  one add over the rectangle of outputs whose input pixel lies inside the image (padding is
  never materialized; a tap that only meets padding costs nothing), in blocks of images of
  about BLOCK outputs whose float32 input copy stays in cache with the accumulator. (An
  einsum here runs along a kernel row, a few elements: 1.3-4x slower.)

Integer operands (int8) are summed in float32, exact: kh*kw products of at most 2^14 stay
below 2^24 for kernels up to 32x32, which `exact_taps` checks; the sums are integers in any
order.
"""

from __future__ import annotations

import functools

import numpy as np

from dlcc.runtime.kernels.strided import padded_nhwc, strided_view

BLOCK = 1 << 16  # outputs per block of images: its float32 input and results stay in L2


def is_depthwise(x_shape: tuple[int, ...], w_shape: tuple[int, ...], group: int) -> bool:
    """Whether Conv(x, w) with `group` groups has one input channel per group."""
    return group > 1 and w_shape[1] == 1 and x_shape[1] == group


def exact_taps(w_shape: tuple[int, ...]) -> bool:
    """Whether float32 sums of the kh*kw int8 products of one output are exact (< 2^24)."""
    return w_shape[2] * w_shape[3] * 128 * 128 <= 1 << 24


def depthwise_conv(attrs, x: np.ndarray, w: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Conv of x [N, C, H, W] (float32 or int8) by float32 w [C*d, 1, kh, kw] with C groups,
    no bias: a float32 [N, C*d, OH, OW] array, C-ordered or a channels-last one's view."""
    c, m = x.shape[1], w.shape[0]
    if m != c:  # depth multiplier d: channel c feeds filters c*d .. c*d + d - 1
        x = np.repeat(x, m // c, axis=1)
    return _lowering(m, ow)(attrs, x, w, oh, ow)


def _lowering(channels: int, ow: int):
    """Channels last where there are more channels than output columns (see the module)."""
    return _windowed if channels > ow else _tap_by_tap


def _tap_by_tap(attrs, x: np.ndarray, w: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """The NCHW depthwise conv, one multiply and one add per tap (see the module)."""
    n, m, h, wd = x.shape
    kh, kw = w.shape[2:]
    out = np.zeros((n, m, oh, ow), np.float32)
    taps = _taps(attrs, (kh, kw), (h, wd), (oh, ow))
    per = max(1, BLOCK // (m * oh * ow))
    term = np.empty((min(per, n), *out.shape[1:]), np.float32)
    block = np.empty((min(per, n), m, h, wd), np.float32)
    for lo in range(0, n, per):
        hi = min(lo + per, n)
        xs = block[: hi - lo]  # these images as float32
        np.copyto(xs, x[lo:hi])
        for (i, j), rows, cols, in_rows, in_cols in taps:
            acc, t = out[lo:hi, :, rows, cols], term[: hi - lo, :, rows, cols]
            np.multiply(xs[:, :, in_rows, in_cols], w[:, 0, i, j, None, None], out=t)
            np.add(acc, t, out=acc)
    return out


def _windowed(attrs, x: np.ndarray, w: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """The channels-last depthwise conv, every tap in one einsum per block of images (see the
    module): a view of a channels-last [N, OH, OW, M] result."""
    n, m = x.shape[:2]
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    taps = np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))
    out = np.empty((n, oh, ow, m), np.float32)
    per = max(1, BLOCK // (m * oh * ow))
    for lo in range(0, n, per):
        xp = padded_nhwc(x[lo : lo + per], attrs.pads, np.float32)
        s_n, s_h, s_w, s_c = xp.strides
        windows = strided_view(
            xp,
            (len(xp), oh, ow, kh, kw, m),
            (s_n, sh * s_h, sw * s_w, dh * s_h, dw * s_w, s_c),
        )
        np.einsum("nhwijm,ijm->nhwm", windows, taps, out=out[lo : lo + per])
    return out.transpose(0, 3, 1, 2)


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
