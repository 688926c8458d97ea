"""The integer arithmetic of the int8 path (DESIGN.md's numerics contract), written once.

    quantize     q = clamp(floor(x / s + 1/2), -127, 127)            float -> int8
    dequantize   x = q * s                                            int8 -> float
    requantize   q = clamp((acc * m + 2^(k-1)) >> k, -127, 127)      int32 -> int8, m/2^k ~ real
    lut          y = table[q + 128]                                   int8 -> int8 (Activate unit)

One rounding rule everywhere: round half up (floor(x + 1/2)); the integer form above is the
same rule, so requantize(acc, quantize_multiplier(r)) equals quantize(acc * r) up to the
multiplier's 31-bit precision. Symmetric int8: -128 is never produced.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from dlcc.runtime.kernels import F32, I8, check, register_kernel

QMAX = 127


@dataclasses.dataclass(frozen=True)
class ScaleAttrs:
    """The scale of an int8 tensor: real value = q * scale."""

    scale: float

    def __post_init__(self) -> None:
        check(0 < self.scale < math.inf, f"scale {self.scale} is not finite and positive")


def round_half_up(x: np.ndarray) -> np.ndarray:
    """The one rounding rule of the int8 path: floor(x + 1/2)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def quantize_multiplier(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, k) with m in [2^30, 2^31) and m / 2^k = real (rounded): a fixed-point multiplier."""
    real = np.atleast_1d(np.asarray(real, dtype=np.float64))
    exponent = np.floor(np.log2(np.where(real > 0, real, 1.0)))
    shift = (30 - exponent).astype(np.int64)
    mult = round_half_up(real * np.exp2(shift)).astype(np.int64)
    carry = mult >= 2**31  # rounding reached 2^31: halve the multiplier, one shift less
    mult, shift = np.where(carry, mult // 2, mult), np.where(carry, shift - 1, shift)
    mult = np.where(real > 0, mult, 0)
    if (shift < 1).any() or (shift > 62).any():
        raise ValueError(f"requantization scale out of range: {real}")
    return mult, np.where(real > 0, shift, 1)


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """int32 accumulators -> int8: clamp((acc * m + 2^(k-1)) >> k); m, k broadcast."""
    prod = acc.astype(np.int64) * mult + np.left_shift(np.int64(1), shift - 1)
    return np.clip(np.right_shift(prod, shift), -QMAX, QMAX).astype(np.int8)


def _dtype_rule(source: str, result: str):
    def rule(attrs, x: str) -> str:
        check(x == source, f"takes {source}, got {x}")
        return result

    return rule


@register_kernel("Quantize", ScaleAttrs, code=24, dtype=_dtype_rule(F32, I8))
def quantize(attrs: ScaleAttrs, x: np.ndarray) -> np.ndarray:
    """q = clamp(floor(x / s + 1/2), -127, 127)"""
    return np.clip(round_half_up(x / np.float64(attrs.scale)), -QMAX, QMAX).astype(np.int8)


@register_kernel("Dequantize", ScaleAttrs, code=25, dtype=_dtype_rule(I8, F32))
def dequantize(attrs: ScaleAttrs, q: np.ndarray) -> np.ndarray:
    """x = q * s   (float32)"""
    return (q.astype(np.float64) * attrs.scale).astype(np.float32)


def _lut_shape(attrs, q, table):
    check(tuple(table) == (256,), f"a lookup table has 256 entries, not {table}")
    return (tuple(q),)


def _lut_dtype(attrs, q, table):
    check((q, table) == (I8, I8), f"Lut maps int8 through an int8 table, got {q}, {table}")
    return I8


@register_kernel("Lut", code=26, shape=_lut_shape, dtype=_lut_dtype)
def lut(attrs, q: np.ndarray, table: np.ndarray) -> np.ndarray:
    """y = table[q + 128]: a 256-entry lookup, the TPU's Activate unit."""
    return table[q.astype(np.int16) + 128]


def build_lut(fn: Callable[[np.ndarray], np.ndarray], s_in: float, s_out: float) -> np.ndarray:
    """The int8 -> int8 table of `fn` from input scale s_in to output scale s_out."""
    x = (np.arange(-128, 128, dtype=np.float64) * s_in).astype(np.float32)
    return quantize(ScaleAttrs(s_out), fn(x))
