"""Depthwise Conv, tap by tap (NCHW) and all taps in one einsum (channels last) (runtime/
kernels/depthwise.py), against a float64 brute force."""

import itertools

import numpy as np
import pytest

from dlcc.runtime.kernels import depthwise
from dlcc.runtime.kernels.depthwise import is_depthwise
from dlcc.runtime.kernels.matrix import ConvAttrs, conv, conv_accumulators, conv_geometry


def brute_force(attrs: ConvAttrs, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Every output as an explicit sum over its window of the zero-padded input, in float64."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    oh, ow = conv_geometry(x.shape, w.shape, attrs)
    top, left, bottom, right = attrs.pads
    xp = np.zeros((n, c, h + top + bottom, wd + left + right))
    xp[:, :, top : top + h, left : left + wd] = x
    (sh, sw), (dh, dw) = attrs.strides, attrs.dilations
    y = np.zeros((n, m, oh, ow))
    for f, p, q, i, j in itertools.product(range(m), range(oh), range(ow), range(kh), range(kw)):
        y[:, f, p, q] += xp[:, f // (m // c), p * sh + i * dh, q * sw + j * dw] * w[f, 0, i, j]
    return y


CASES = [  # (x shape, filters per channel, kernel, strides, dilations, pads)
    ((2, 3, 7, 6), 1, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((1, 5, 9, 9), 1, (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),
    ((3, 40, 2, 2), 1, (5, 5), (1, 1), (1, 1), (2, 2, 2, 2)),  # more channels than columns
    ((2, 4, 8, 5), 2, (2, 3), (1, 3), (2, 1), (2, 0, 1, 3)),  # depth multiplier 2, uneven
    ((1, 6, 3, 3), 1, (3, 3), (1, 1), (1, 1), (4, 4, 4, 4)),  # taps that meet only padding
    ((2, 2, 5, 4), 3, (1, 1), (2, 1), (1, 1), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("lowering", ["_tap_by_tap", "_windowed"])  # every case both ways
@pytest.mark.parametrize("shape, mult, kernel, strides, dilations, pads", CASES)
def test_depthwise_matches_brute_force(
    shape, mult, kernel, strides, dilations, pads, lowering, monkeypatch
):
    monkeypatch.setattr(depthwise, "_lowering", lambda m, pixels: getattr(depthwise, lowering))
    rng = np.random.default_rng(0)
    attrs = ConvAttrs(strides=strides, pads=pads, dilations=dilations, group=shape[1])
    w_shape = (shape[1] * mult, 1, *kernel)
    assert is_depthwise(shape, w_shape, attrs.group)
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    y = conv(attrs, x, w)
    assert y.dtype == np.float32 and y.flags.c_contiguous
    np.testing.assert_allclose(y, brute_force(attrs, x, w), rtol=1e-5, atol=1e-5)
    xi = rng.integers(-128, 128, shape, dtype=np.int8)
    wi = rng.integers(-127, 128, w_shape, dtype=np.int8)
    exact = brute_force(attrs, xi.astype(np.float64), wi.astype(np.float64))
    yi = conv(attrs, xi, wi)
    assert yi.dtype == np.int32 and np.array_equal(yi, exact)
    assert np.array_equal(conv_accumulators(attrs, xi, wi), exact)  # float32 sums, exact
