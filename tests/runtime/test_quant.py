"""The int8 arithmetic against brute force in Python integers and exact rationals."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcc.runtime.kernels.matrix import ConvAttrs, conv, dense
from dlcc.runtime.kernels.quant import (
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


def test_integer_conv_is_exact():
    rng = np.random.default_rng(1)
    x = rng.integers(-127, 128, (2, 6, 7, 7)).astype(np.int8)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    attrs = ConvAttrs((2, 1), (1, 0, 1, 2), (1, 2), 2)
    got = conv(attrs, x, w)
    expected = conv(attrs, x.astype(np.float64), w.astype(np.float64))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected.astype(np.int64))
