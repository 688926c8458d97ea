"""The int8 arithmetic against brute force in Python integers and exact rationals."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcc.runtime.kernels.matrix import (
    EXACT_K,
    ConvAttrs,
    conv,
    conv_accumulators,
    dense,
    dense_accumulators,
)
from dlcc.runtime.kernels.quant import (
    SMALL,
    Requantizer,
    ScaleAttrs,
    build_lut,
    dequantize,
    lut,
    quantize,
    quantize_multiplier,
    requantize,
    round_half_up,
)


@settings(max_examples=300, deadline=None)
@given(real=st.floats(1e-9, 1e3), acc=st.integers(-(2**31), 2**31 - 1))
def test_requantize_is_round_half_up_of_the_fixed_point_product(real, acc):
    mult, shift = quantize_multiplier(real)
    assert 2**30 <= mult[0] < 2**31
    assert abs(Fraction(int(mult[0]), 2 ** int(shift[0])) / Fraction(real) - 1) < 2**-30
    got = requantize(np.array([acc], np.int32), mult, shift)[0]
    exact = Fraction(acc * int(mult[0]), 2 ** int(shift[0]))
    expected = max(-127, min(127, int(np.floor(exact + Fraction(1, 2)))))
    assert got == expected


def test_round_half_up_is_the_one_rule():
    np.testing.assert_array_equal(round_half_up([-1.5, -0.5, 0.5, 1.5, 2.5]), [-1, 0, 1, 2, 3])
    q = quantize(ScaleAttrs(0.5), np.array([-0.25, 0.25, 0.75, 1000.0, -1000.0], np.float32))
    np.testing.assert_array_equal(q, [0, 1, 2, 127, -127])
    assert q.dtype == np.int8


def test_dequantize_inverts_quantize_within_half_a_step():
    x = np.random.default_rng(0).uniform(-1, 1, 1000).astype(np.float32)
    s = 1 / 127
    y = dequantize(ScaleAttrs(s), quantize(ScaleAttrs(s), x))
    assert y.dtype == np.float32 and np.abs(y - x).max() <= s / 2 + 1e-7


def test_lut_applies_the_function_between_scales():
    table = build_lut(np.tanh, 0.05, 1 / 127)
    q = np.arange(-127, 128, dtype=np.int8)
    expected = quantize(ScaleAttrs(1 / 127), np.tanh(q * np.float32(0.05)))
    np.testing.assert_array_equal(lut(None, q, table), expected)


@pytest.mark.parametrize("k", [7, 4608])
def test_integer_matmul_is_exact(k):
    rng = np.random.default_rng(k)
    x = rng.integers(-127, 128, (5, k)).astype(np.int8)
    w = rng.integers(-127, 128, (k, 3)).astype(np.int8)
    got = dense(None, x, w)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, x.astype(np.int64) @ w.astype(np.int64))
    acc = dense_accumulators(x, w)  # float32 while every sum is exact in it, else int32
    assert acc.dtype == (np.float32 if k <= EXACT_K else np.int32)
    np.testing.assert_array_equal(acc, got)


def test_integer_conv_is_exact():
    rng = np.random.default_rng(1)
    x = rng.integers(-127, 128, (2, 6, 7, 7)).astype(np.int8)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    attrs = ConvAttrs((2, 1), (1, 0, 1, 2), (1, 2), 2)
    got = conv(attrs, x, w)
    expected = conv(attrs, x.astype(np.float64), w.astype(np.float64))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected.astype(np.int64))


# --- requantize without int64: the float64 schemes of Requantizer against the int64 formula --


def requantize_int64(acc, mult, shift, lo=-127):
    """The spec, in the int64 arithmetic the runtime avoids: clamp((acc*m + 2^(k-1)) >> k)."""
    prod = np.asarray(acc, np.int64) * mult + np.left_shift(np.int64(1), np.asarray(shift) - 1)
    return np.clip(np.right_shift(prod, shift), lo, 127).astype(np.int8)


INT32_EDGES = np.array(
    [-(2**31), -(2**31) + 1, -(2**24) - 1, -(2**24), -1, 0, 1, 2**24, 2**30, 2**31 - 1], np.int32
)


@pytest.mark.parametrize("k", range(1, 63))
def test_requantize_is_exact_at_every_shift(k):
    """Random and extreme accumulators (the int32 limits), multipliers from 0 to 2^31 - 1."""
    rng = np.random.default_rng(k)
    acc = np.concatenate([rng.integers(-(2**31), 2**31, 20_000).astype(np.int32), INT32_EDGES])
    mults = [0, 1, 2**16 - 1, 2**16, 2**30, 2**31 - 1, *map(int, rng.integers(2**30, 2**31, 3))]
    for m in mults:
        mult, shift = np.array([m]), np.array([k])
        # around each rounding boundary of the result: s*m + 2^(k-1) near a multiple of 2^k
        tie = [((2 * j + 1) << (k - 1)) // max(m, 1) for j in range(-129, 129)]
        near = np.array([min(max(t + d, -(2**31)), 2**31 - 1) for t in tie for d in (-1, 0, 1)])
        near = near.astype(np.int32)
        # both ways of computing it: few elements (floor) and many (the uint8 cast)
        for a in (acc, near, np.tile(near, SMALL // near.size + 1)):
            expected = requantize_int64(a, mult, shift)
            np.testing.assert_array_equal(requantize(a, mult, shift), expected)
            relu = Requantizer.of(mult, shift)(a, 0)
            np.testing.assert_array_equal(relu, requantize_int64(a, mult, shift, 0))


# (s, m, k) whose s*m lies a few units from (2n+1) 2^(k-1): r + 1/2 a hair below or above an
# integer. One float64 product rounds these across it; the split scheme must not.
NEAR_TIES = [
    (268435457, 2147483640, 60),
    (268435458, 2147483632, 60),
    (268435459, 2147483624, 60),
    (1073741825, 2147483646, 62),
    (1073741828, 2147483640, 62),
]


@pytest.mark.parametrize("s,m,k", NEAR_TIES)
def test_requantize_is_exact_where_one_float64_product_is_not(s, m, k):
    acc, mult, shift = np.array([s, -s], np.int32), np.array([m]), np.array([k])
    plain = Requantizer("float", (np.ldexp(np.array([float(m)]), -k),))(acc)
    expected = requantize_int64(acc, mult, shift)
    assert not np.array_equal(plain, expected)  # the hazard is real at this shift
    assert Requantizer.of(mult, shift).method == "split"
    np.testing.assert_array_equal(requantize(acc, mult, shift), expected)


@pytest.mark.parametrize(
    "shifts,method",
    [
        ((30, 44, 38), "float"),
        ((45, 62, 17), "split"),
        ((44, 45, 50), "split"),
        ((3, 50, 60), "int64"),
    ],
)
def test_requantize_per_channel_picks_an_exact_scheme(shifts, method):
    rng = np.random.default_rng(sum(shifts))
    mult = rng.integers(2**30, 2**31, (3, 1, 1))
    shift = np.array(shifts).reshape(3, 1, 1)
    acc = rng.integers(-(2**31), 2**31, (4, 3, 5, 5)).astype(np.int32)
    acc[0, :, 0, 0] = INT32_EDGES[:3]
    acc[1] = rng.integers(-(2**18), 2**18, (3, 5, 5))  # small sums: results inside the range
    rq = Requantizer.of(mult, shift)
    assert rq.method == method
    for lo in (-127, 0):  # 0: a Relu folded into the clamp
        np.testing.assert_array_equal(rq(acc, lo), requantize_int64(acc, mult, shift, lo))


def test_requantize_refuses_constants_outside_the_contract():
    with pytest.raises(ValueError, match="outside"):
        Requantizer.of(np.array([2**31]), np.array([10]))
    with pytest.raises(ValueError, match="outside"):
        Requantizer.of(np.array([2**30]), np.array([63]))


@settings(max_examples=200, deadline=None)
@given(
    acc=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=8),
    m=st.integers(0, 2**31 - 1),
    k=st.integers(1, 62),
)
def test_requantize_matches_int64_anywhere(acc, m, k):
    a, mult, shift = np.array(acc, np.int32), np.array([m]), np.array([k])
    np.testing.assert_array_equal(requantize(a, mult, shift), requantize_int64(a, mult, shift))


def test_quantize_and_lut_keep_their_results():
    """The in-place quantize and the bytes.translate table against their plain formulas."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal(200_000) * 60, [0.5, -0.5, 126.5, 127.5, np.inf]])
    x = x.astype(np.float32)
    for s in (0.37, 1.0, 1e-6):
        expected = np.clip(round_half_up(x / np.float64(s)), -127, 127).astype(np.int8)
        np.testing.assert_array_equal(quantize(ScaleAttrs(s), x), expected)
        np.testing.assert_array_equal(quantize(ScaleAttrs(s), x[::7]), expected[::7])
        np.testing.assert_array_equal(quantize(ScaleAttrs(s), x[-999:]), expected[-999:])
    assert quantize(ScaleAttrs(1.0), np.float32(2.5)).shape == ()
    table = rng.integers(-128, 128, 256).astype(np.int8)
    q = rng.integers(-128, 128, (3, 4, 5)).astype(np.int8)
    got = lut(None, q, table)
    np.testing.assert_array_equal(got, table[q.astype(np.int16) + 128])
    assert got.flags.writeable


def conv_int64(x, w, attrs: ConvAttrs) -> np.ndarray:
    """Brute-force grouped, strided, dilated, padded convolution in int64 (tap by tap)."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    g, (sh, sw), (dh, dw) = attrs.group, attrs.strides, attrs.dilations
    top, left, bottom, right = attrs.pads
    xp = np.zeros((n, c, h + top + bottom, wd + left + right), np.int64)
    xp[:, :, top : top + h, left : left + wd] = x
    oh = (h + top + bottom - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + left + right - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((n, m, oh, ow), np.int64)
    for gi in range(g):
        xs, ms = slice(gi * cg, (gi + 1) * cg), slice(gi * m // g, (gi + 1) * m // g)
        for i in range(kh):
            for j in range(kw):
                tap = xp[:, xs, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw :][
                    ..., : (ow - 1) * sw + 1 : sw
                ]
                y[:, ms] += np.einsum("nchw,mc->nmhw", tap, w[ms, :, i, j].astype(np.int64))
    return y


@pytest.mark.parametrize(
    "x_shape,w_shape,attrs",
    [
        ((2, 3, 16, 16), (8, 3, 3, 3), ConvAttrs(pads=(1, 1, 1, 1))),  # channel-major columns
        ((2, 8, 8, 8), (16, 8, 3, 3), ConvAttrs(strides=(2, 2))),  # NHWC patches
        ((1, 4, 9, 20), (6, 2, 2, 3), ConvAttrs((1, 2), (0, 1, 2, 0), (2, 1), 2)),  # grouped
        ((3, 6, 11, 11), (6, 1, 3, 3), ConvAttrs(pads=(1, 1, 1, 1), group=6)),  # depthwise
        ((2, 8, 6, 6), (8, 4, 3, 3), ConvAttrs(group=2)),  # grouped NHWC patches
        ((1, 130, 6, 6), (3, 130, 3, 3), ConvAttrs()),  # K = 1170 > EXACT_K: blocks over K
    ],
)
def test_integer_conv_is_exact_on_both_layouts(x_shape, w_shape, attrs):
    rng = np.random.default_rng(sum(x_shape))
    x = rng.choice(np.array([-128, 127, -127, 0, 5], np.int8), size=x_shape)
    w = rng.choice(np.array([-128, 127, -127, 3], np.int8), size=w_shape)
    got = conv(attrs, x, w)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, conv_int64(x, w, attrs))
    acc = conv_accumulators(attrs, x, w)  # the same sums, maybe float32, maybe strided
    assert acc.dtype == (np.float32 if math.prod(w_shape[1:]) <= EXACT_K else np.int32)
    np.testing.assert_array_equal(acc, got)
    xf, wf = x.astype(np.float32) / 64, w.astype(np.float32) / 64
    np.testing.assert_allclose(
        conv(attrs, xf, wf), conv_int64(x, w, attrs) / 4096, rtol=1e-5, atol=1e-3
    )
