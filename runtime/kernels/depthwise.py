"""Depthwise convolution (one input channel per filter group) as a sum over the kernel taps.

    y[n, m, oh, ow] = sum_{i,j} x[n, m//d, oh*sh + i*dh - top, ow*sw + j*dw - left] w[m, 0, i, j]

(d: filters per channel, the depth multiplier). im2col lowers such a conv to G products of
[P, kh*kw] x [kh*kw, d]: thousands of tiny matrices, which BLAS runs at a few percent of its
speed (MobileNetV3-small at batch 256: its depthwise layers took 90% of the run). Instead,
by the layout whose innermost run is longer (`_lowering`):

- channels last (more channels than output pixels, or than CHANNELS_LAST), every tap at
  once: one np.einsum of a strided view of the zero-padded NHWC input, [N, OH, OW, kh, kw,
  M], with the taps' weights [kh, kw, M]. numpy's sum-of-products loop runs along the
  channels and never writes the products out: 1.5-3.3x the speed of a multiply and an add
  per tap, over MobileNetV3-small's layers at batch 1 to 256 (in blocks of images of about
  BLOCK outputs, whose padded copy stays in cache: 10-40% more at batch 256);
- NCHW otherwise (few channels), tap by tap, one multiply and one add each over one
  contiguous run of a block of images (about BLOCK outputs) padded and split into the
  stride's phases (runtime/kernels/phases.py): 0.36-0.68x the time of one rectangle per
  tap. (An einsum here runs along a kernel row, a few elements: 1.3-4x slower.)

Integer operands (int8) are summed in float32, exact: kh*kw products of at most 2^14 stay
below 2^24 for kernels up to 32x32, which `exact_taps` checks; the sums are integers in any
order.
"""

from __future__ import annotations

import numpy as np

from dlcc.runtime.kernels.phases import TapRuns
from dlcc.runtime.kernels.strided import padded_nhwc, strided_view

CHANNELS_LAST = 32  # channels from which the einsum's loop over them outruns the taps'
# (measured: 16-32 channels ran 1.4-2.3x faster tap by tap, 40-1000 1.3-2.2x slower)
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
    return _lowering(m, oh * ow)(attrs, x, w, oh, ow)


def _lowering(channels: int, pixels: int):
    """The lowering whose inner loop is longer (see the module): channels last where there
    are more channels than output pixels, or more than CHANNELS_LAST."""
    return _windowed if channels > min(pixels, CHANNELS_LAST) else _tap_by_tap


def _tap_by_tap(attrs, x: np.ndarray, w: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """The NCHW depthwise conv, one multiply and one add per tap over its run of a block of
    images (phases.TapRuns)."""
    m = x.shape[1]
    grid = TapRuns(x.shape, w.shape[2:], attrs, (oh, ow), BLOCK, 0, np.float32)
    term = np.empty((grid.per, m, oh * grid.cols), np.float32)
    taps = w[:, 0].reshape(m, -1, 1).transpose(1, 0, 2)  # [kh*kw, M, 1], in tap order

    def step(acc: np.ndarray, k: int, run: np.ndarray) -> None:
        if k:
            t = term[: len(acc)]
            np.multiply(run, taps[k], out=t)
            np.add(acc, t, out=acc)
        else:
            np.multiply(run, taps[0], out=acc)

    return grid.fold(x, step)


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
