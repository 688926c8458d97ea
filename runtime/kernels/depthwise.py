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
- NCHW otherwise (few channels), tap by tap, one multiply and one add each over
  long contiguous runs: each block of images (about BLOCK outputs) is copied zero-padded
  and split into the stride's phases, phase (p, q) holding the padded pixels (p + a*sh,
  q + b*sw), so that for output (r, c) tap (i, j) reads pixel (r + i*dh // sh, c + j*dw //
  sw) of phase (i*dh % sh, j*dw % sw). Flattened, a tap is then one run of OH x (phase
  width) pixels, shifted by its offset: the products are computed over whole phase rows
  (the columns past OW are dropped at the end) with an inner loop of hundreds of elements,
  where one rectangle per tap ran numpy's loop over OW at a time (0.3-0.7x the time).
  (An einsum here runs along a kernel row, a few elements: 1.3-4x slower.)

Integer operands (int8) are summed in float32, exact: kh*kw products of at most 2^14 stay
below 2^24 for kernels up to 32x32, which `exact_taps` checks; the sums are integers in any
order.
"""

from __future__ import annotations

import numpy as np

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
    """The NCHW depthwise conv, one multiply and one add per tap over long runs (see the
    module), per block of images."""
    n, m, h, wd = x.shape
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    top, left, bottom, right = attrs.pads
    cols = -(-max(wd + left + right, (ow - 1) * sw + (kw - 1) * dw + 1) // sw)
    rows = -(-max(h + top + bottom, (oh - 1) * sh + (kh - 1) * dh + 1) // sh)
    rows += 1  # a spare row of padding: a run that starts c_j columns in ends c_j past a row
    per = max(1, BLOCK // (m * oh * cols))
    phases = np.zeros((min(per, n), m, sh, sw, rows, cols), np.float32)  # pads stay zero
    acc = np.empty((min(per, n), m, oh * cols), np.float32)
    term = np.empty_like(acc)
    out = np.empty((n, m, oh, ow), np.float32)
    for lo in range(0, n, per):
        hi = min(lo + per, n)
        xs, a, t = phases[: hi - lo], acc[: hi - lo], term[: hi - lo]
        for p in range(sh):  # input row k is padded row k + top: phase row (k + top) // sh
            k0 = (p - top) % sh
            for q in range(sw):
                l0 = (q - left) % sw
                part = x[lo:hi, :, k0::sh, l0::sw]
                r0, c0 = (k0 + top) // sh, (l0 + left) // sw
                xs[:, :, p, q, r0 : r0 + part.shape[2], c0 : c0 + part.shape[3]] = part
        flat = xs.reshape(hi - lo, m, sh, sw, rows * cols)
        for i in range(kh):
            for j in range(kw):
                (a_i, p), (c_j, q) = divmod(i * dh, sh), divmod(j * dw, sw)
                run = flat[:, :, p, q, a_i * cols + c_j : (a_i + oh) * cols + c_j]
                np.multiply(run, w[:, 0, i, j, None], out=t if i or j else a)
                if i or j:
                    np.add(a, t, out=a)
        out[lo:hi] = a.reshape(hi - lo, m, oh, cols)[..., :ow]
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
