"""The integer arithmetic of the int8 path (DESIGN.md's numerics contract), written once.

    quantize     q = clamp(floor(x / s + 1/2), -127, 127)            float -> int8
    dequantize   x = q * s                                            int8 -> float
    requantize   q = clamp((acc * m + 2^(k-1)) >> k, -127, 127)      int32 -> int8, m/2^k ~ real
    lut          y = table[q + 128]                                   int8 -> int8 (Activate unit)

One rounding rule everywhere: round half up (floor(x + 1/2)); the integer form above is the
same rule, so requantize(acc, quantize_multiplier(r)) equals quantize(acc * r) up to the
multiplier's 31-bit precision. Symmetric int8: -128 is never produced. The emulator computes
requantize's integers in float64 where that is provably exact (`Requantizer`), so its results
are the formula's, bit for bit; lut is one bytes.translate.
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
    """int32 accumulators -> int8: clamp((acc * m + 2^(k-1)) >> k); m, k broadcast.

    Exact for every int32 `acc`, 0 <= m < 2^31 and 1 <= k <= 62, without int64 temporaries:
    see `Requantizer`, which this runs once.
    """
    return Requantizer.of(np.asarray(mult), np.asarray(shift))(np.asarray(acc, np.int32))


FAST_MAX_SHIFT = 44  # the plain float64 product is exact up to this shift (Requantizer)
_SPLIT = 16  # the multiplier's low half: m = mh * 2^16 + ml


@dataclasses.dataclass(frozen=True, eq=False)
class Requantizer:
    """requantize's constants, prepared once per (multipliers, shifts) tensor; then a few
    float64 passes per call, no int64 temporaries (the Activate unit, runtime/activate.py,
    runs them over cache-sized blocks of the accumulators).

    The spec is the integer formula q = clamp(floor((s*m + 2^(k-1)) / 2^k), lo, 127) with
    s an int32 accumulator, m < 2^31, 1 <= k <= 62, lo = -127 (or 0: a fused Relu, since
    max(clamp(q, -127, 127), 0) = clamp(q, 0, 127)). Let r = s*m / 2^k, so q = floor(r + 1/2).

    "float" (every k <= 44): q = floor(fl(fl(s * c) + 1/2)), c = m * 2^-k. c is exact (a
    31-bit integer times a power of two), so s*c carries one rounding: |fl(s c) - r| <=
    2^-53 |r| < 2^-46 while |r| < 128; adding 1/2 to a value below 256 in magnitude rounds
    by at most 2^-46 more. Total error < 2^-45. Where r + 1/2 is an integer N, r = N - 1/2
    is representable, so both operations are exact and floor gives N. Elsewhere r + 1/2 is
    a multiple of 2^-k at distance >= 2^-k >= 2^-44 > 2^-45 from every integer: the error
    cannot carry it across one, so the floor is exact. Where |r| >= 128 the sign and
    magnitude survive the rounding and the clamp saturates as the integers do.

    Large arrays take the same rule offset by 128: u = trunc(clamp(fl(fl(s*c) + 128.5),
    lo + 128, 255)) = q + 128, as uint8, and q's byte is u xor 0x80; the truncating cast is
    cheaper than a floor and a float -> int8 cast. Exact for the same reasons: below 512 in
    magnitude the addition rounds by at most 2^-45, a total error below 2^-46 + 2^-45 < 2^-44
    <= 2^-k; at the integers r + 1/2 = N both steps are exact; every value clamped is >= 1,
    where truncation is the floor.

    "split" (every k >= 17): m = mh*2^16 + ml with mh < 2^15, ml < 2^16; every product
    below is an integer below 2^53 times a power of two, so exact:
        L = floor(s * (ml 2^-16))                    (|s ml| < 2^47)
        t = s * (mh g) + L * g,  g = 2^(16-k)        (= (s mh + L) g, |s mh + L| < 2^47)
        q = floor(t + 1/2)                           (= (s mh + L + 2^(k-17)) g, < 2^48 g)
    and q is the spec: s*m + 2^(k-1) = (s mh + L) 2^16 + rho + 2^(k-1), 0 <= rho < 2^16, and
    rho / 2^16 < 1 cannot change floor((s mh + L + 2^(k-17)) / 2^(k-16)) of an integer.

    "int64" (a tensor with shifts on both sides of that gap, k <= 16 and k >= 45, which no
    multiplier from `quantize_multiplier` within a 2^28 range produces): the formula itself.
    """

    method: str
    constants: tuple[np.ndarray, ...]  # float: (c,); split: (c, low, g); int64: (m, k)

    @classmethod
    def of(cls, mult: np.ndarray, shift: np.ndarray) -> Requantizer:
        m, k = np.asarray(mult, np.int64), np.asarray(shift, np.int64)
        if m.size and (m.min() < 0 or m.max() >= 2**31 or k.min() < 1 or k.max() > 62):
            raise ValueError("requantization constants outside m in [0, 2^31), k in 1..62")
        if not k.size or k.max() <= FAST_MAX_SHIFT:
            return cls("float", (np.ldexp(m.astype(np.float64), -k),))
        if k.min() > _SPLIT:
            g = np.ldexp(1.0, _SPLIT - k)
            high = (m >> _SPLIT).astype(np.float64) * g
            low = np.ldexp((m & 0xFFFF).astype(np.float64), -_SPLIT)
            return cls("split", np.broadcast_arrays(high, low, g))
        return cls("int64", np.broadcast_arrays(m, k))

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape the constants broadcast with (one entry per channel, or one)."""
        return self.constants[0].shape

    def __call__(self, s: np.ndarray, lo: int = -QMAX) -> np.ndarray:
        """The int8 result for int32 accumulators `s` (lo = 0 fuses a Relu)."""
        out = np.empty(np.broadcast_shapes(s.shape, self.shape), np.int8)
        self.into(s, out, self.constants, lo)
        return out

    def into(self, s, out, constants, lo: int = -QMAX, scratch=None) -> None:
        """out[...] = the result for `s` (int32, or float holding the same integers), given
        this tensor's constants (or a block's); `scratch`: two float64 arrays of out's shape
        to compute in (None, or either one None: allocated), the first may be `s` itself
        (then overwritten)."""
        if self.method == "int64":  # only hand-made constants come here: the formula itself
            m, k = constants
            prod = s.astype(np.int64) * m + np.left_shift(np.int64(1), k - 1)
            out[...] = np.clip(np.right_shift(prod, k), lo, QMAX)
            return
        # Large arrays: same-dtype, in-place passes (numpy's mixed-dtype loops, int32 * float64
        # or a float64 -> int8 output, run through casting buffers at a fraction of the
        # speed). Small ones: the fewest Python-level calls, since each costs more than its
        # arithmetic (np.maximum and np.minimum cost less than the clip method's wrapper).
        small = out.size <= SMALL

        def times(c, slot: int) -> np.ndarray:  # s * c in float64, in place where it can
            t = None if scratch is None else scratch[slot]
            if t is None and small:
                return np.multiply(s, c)
            if t is None:
                t = np.empty(out.shape)
            if t is not s:
                np.copyto(t, s)
            t *= c
            return t

        if self.method == "split":  # its s * low first: the other product may overwrite s
            part = times(constants[1], 1)
            np.floor(part, out=part)
            part *= constants[2]
        t = times(constants[0], 0)
        if self.method == "split":
            t += part
        if not small and self.method == "float":  # q + 128 by a truncating cast (the class doc)
            t += 128.5
            t.clip(_BOUNDS[lo] + 128, 255.0, out=t)
            u = out.view(np.uint8)
            np.copyto(u, t, casting="unsafe")
            np.bitwise_xor(u, 0x80, out=u)  # the bytes of u - 128 as int8
            return
        t += 0.5
        if small:  # before the floor: the bounds are integers
            np.maximum(t, _BOUNDS[lo], out=t)
            np.minimum(t, _BOUNDS[QMAX], out=t)
        else:
            t.clip(_BOUNDS[lo], _BOUNDS[QMAX], out=t)
        np.floor(t, out=out, casting="unsafe")


SMALL = 2048  # elements up to which the fewest calls beat same-dtype passes over scratch
_BOUNDS = {b: np.float64(b) for b in (-QMAX, 0, QMAX)}


def _dtype_rule(source: str, result: str):
    def rule(attrs, x: str) -> str:
        check(x == source, f"takes {source}, got {x}")
        return result

    return rule


@register_kernel("Quantize", ScaleAttrs, code=24, dtype=_dtype_rule(F32, I8))
def quantize(attrs: ScaleAttrs, x: np.ndarray) -> np.ndarray:
    """q = clamp(floor(x / s + 1/2), -127, 127)"""
    x = np.asarray(x, order="C")  # (keeps 0-d inputs 0-d)
    q = np.empty(x.shape, np.int8)
    if 0 < x.ndim and x.size <= SMALL:  # the fewest calls (see Requantizer.into)
        t = x.astype(np.float64)  # then same-dtype division: ~2x a mixed-dtype np.divide
        t /= np.float64(attrs.scale)
        t += 0.5
        np.maximum(t, _BOUNDS[-QMAX], out=t)
        np.minimum(t, _BOUNDS[QMAX], out=t)
        np.floor(t, out=q, casting="unsafe")
        return q
    flat_x, flat_q = x.reshape(-1), q.reshape(-1)
    scale = np.float64(attrs.scale)
    t = np.empty(min(flat_x.size, _FLAT_BLOCK))
    for start in range(0, flat_x.size, _FLAT_BLOCK):  # round_half_up in cache-sized blocks
        part = slice(start, start + _FLAT_BLOCK)
        block = t[: flat_q[part].size]
        np.copyto(block, flat_x[part])
        block /= scale
        block += 0.5
        block.clip(_BOUNDS[-QMAX], _BOUNDS[QMAX], out=block)  # before the floor: integer bounds
        np.floor(block, out=flat_q[part], casting="unsafe")
    return q


_FLAT_BLOCK = 1 << 16


@register_kernel("Dequantize", ScaleAttrs, code=25, dtype=_dtype_rule(I8, F32))
def dequantize(attrs: ScaleAttrs, q: np.ndarray) -> np.ndarray:
    """x = q * s   (float32)"""
    x = np.empty(np.shape(q), np.float32)
    np.multiply(q, np.float64(attrs.scale), out=x, dtype=np.float64, casting="unsafe")
    return x


def _lut_shape(attrs, q, table):
    check(tuple(table) == (256,), f"a lookup table has 256 entries, not {table}")
    return (tuple(q),)


def _lut_dtype(attrs, q, table):
    check((q, table) == (I8, I8), f"Lut maps int8 through an int8 table, got {q}, {table}")
    return I8


@register_kernel("Lut", code=26, shape=_lut_shape, dtype=_lut_dtype)
def lut(attrs, q: np.ndarray, table: np.ndarray) -> np.ndarray:
    """y = table[q + 128]: a 256-entry lookup, the TPU's Activate unit."""
    return translate(q, lut_bytes(table))


def lut_bytes(table: np.ndarray) -> bytes:
    """A 256-entry int8 table as bytes.translate wants it: entry u for the byte u = q mod 256."""
    return np.roll(np.asarray(table, np.int8), 128).tobytes()


def translate(q: np.ndarray, table: bytes) -> np.ndarray:
    """table applied to every int8 of q by bytes.translate (a byte loop, ~2x np.take)."""
    out = bytearray(np.ascontiguousarray(q, np.int8)).translate(table)
    return np.frombuffer(out, np.int8).reshape(np.shape(q))


def build_lut(fn: Callable[[np.ndarray], np.ndarray], s_in: float, s_out: float) -> np.ndarray:
    """The int8 -> int8 table of `fn` from input scale s_in to output scale s_out."""
    x = (np.arange(-128, 128, dtype=np.float64) * s_in).astype(np.float32)
    return quantize(ScaleAttrs(s_out), fn(x))
