"""The Activate unit (accumulators -> unified buffer), prepared once per instruction.

    float            y = f(acc + b)
    int8             q = lut[requantize(acc + b, m, k)]      (a table, or f on int8 values)
    int8 -> float    y = f(float32((acc + b) * s))            (s: float64 scale per channel)

`ActivateUnit(instr, attrs, weights)` resolves the function, casts the constants and builds
the tables once; calling it runs one fused pass over the accumulators in blocks of about
BLOCK elements, so its float64 temporaries stay in cache instead of costing full-size
arrays: bias add, requantize (`quant.Requantizer`), clamp, table. A pointwise function
applied to int8 values without a table is itself a 256-entry map of q; when that map is
max(q, 0) (Relu) it is folded into the clamp, otherwise applied as a table. The results are
those of the unfused ops, bit for bit (int32 adds wrap as the accumulators do).

The accumulators may also come as float32 holding the exact int32 sums (the SGEMM result
itself, `kernels.matrix.dense_accumulators`), of magnitude at most `bound`, where
`takes_float` says the result cannot differ: every |acc + b| stays below 2^31, so no int32
sum would have wrapped, and the bias is added exactly, in float32 where every sum stays
within 2^24, in float64 otherwise. Strided accumulators (a Conv product as its matmul laid
it out, `conv_accumulators`) are read in their memory order, the result transposed after:
every step is per element (the function pointwise), so the order of the axes is free, and
moving int8 results costs a quarter of moving the accumulators.

Per-channel constants of a block above SMALL elements are written out to the block's shape
once (at most BLOCK float64 each, per unit and batch size): numpy runs a product with a
broadcast operand at about half the speed of one with two contiguous operands.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator

import numpy as np

from dlcc.formats import isa
from dlcc.runtime.kernels import kernel_at
from dlcc.runtime.kernels.quant import QMAX, SMALL, Requantizer, lut_bytes, translate

BLOCK = 1 << 16  # elements per block: its float64 scratch (512 KB) stays in L2
SPREAD_RATIO = 64  # a float bias written out over an image grows at most this much (8x8 maps)
IN_PLACE_ORDER = 1 << 14  # elements from which strided accumulators are read as they lie
# (below, one copy to C order costs less than the transposed result: LeNet-5 at batch 1, a
# 3,200-element Conv, ran 10% slower end to end in place than int32; with the copy, 14% faster)
_Q = np.arange(-128, 128, dtype=np.int8)
_RELU = np.maximum(_Q, 0)


class ActivateUnit:
    """One ACTIVATE instruction, ready to run: `unit(acc, owned)` -> its result.

    `owned`: the caller gives up `acc` (no other buffer aliases it, no one reads it after),
    so the bias may be added in place. `bound`: the largest |acc| of float32 accumulators
    (K * 2^14 for sums of K int8 products), None if they never come as float32.
    """

    def __init__(self, instr: isa.Activate, attrs, weights: list[np.ndarray], bound=None) -> None:
        self.kernel = kernel_at(instr.function)
        self.attrs = attrs
        self.bias = None if instr.bias == isa.NO_TENSOR else weights[instr.bias]
        self.scales = self.requant = self.table = None
        self.lo = -QMAX
        self._plans: dict[tuple[int, ...], tuple] = {}  # by shape: int32 accumulators
        self._wide_plans: dict[tuple[int, ...], tuple] = {}  # float32 ones
        self.takes_float, self.wide_bias = False, None
        self._spread: tuple | None = None  # float: (an image's shape, the bias to add to it)
        self._twins: dict[tuple[int, ...], ActivateUnit] = {}
        pointwise = self.kernel is None or self.kernel.pointwise
        self.in_any_layout = pointwise  # every step is per element: any order of axes will do
        if instr.requant == isa.NO_TENSOR:
            self.mode = "float"
            return
        if (
            bound is not None
            and bound <= 2**24
            and (self.bias is None or self.bias.dtype == np.int32)
        ):
            top = 0 if self.bias is None else int(np.abs(self.bias, dtype=np.int64).max(initial=0))
            self.takes_float = bound + top < 2**31
            if self.bias is not None:
                exact32 = bound + top <= 2**24
                self.wide_bias = self.bias.astype(np.float32 if exact32 else np.float64)
        requant = weights[instr.requant]
        if requant.dtype.kind == "f":  # per-channel scales of one accumulator unit
            self.mode = "dequantize"
            self.scales = requant.astype(np.float64)
            return
        self.mode = "int8"
        self.requant = Requantizer.of(requant[0], requant[1])
        if instr.lut != isa.NO_TENSOR:
            table = weights[instr.lut]
        elif self.kernel is not None:  # pointwise on int8 values: a map of the 256 values
            table = np.asarray(self.kernel.fn(attrs, _Q), np.int8)
        else:
            table = None
        reachable = slice(128 - QMAX, None)  # requantize never gives -128
        if table is not None and np.array_equal(table[reachable], _Q[reachable]):
            table = None
        elif table is not None and np.array_equal(table[reachable], _RELU[reachable]):
            self.lo, table = 0, None  # max(q, 0) is the clamp at 0
        self.table = None if table is None else lut_bytes(table)
        self.kernel = None

    def __call__(self, acc: np.ndarray, owned: bool = False) -> np.ndarray:
        if self.mode == "float":
            y = acc
            if self.bias is not None:
                if self._spread is None or self._spread[0] != acc.shape[1:]:
                    self._spread = acc.shape[1:], spread_bias(self.bias, acc.shape)
                y = np.add(acc, self._spread[1], out=acc if owned else None)
            return self.kernel.fn(self.attrs, y) if self.kernel else y
        if not acc.flags.c_contiguous:  # a product's own layout (or any strided view)
            if acc.size > IN_PLACE_ORDER and self.in_any_layout:
                return self._in_memory_order(acc, owned)
            acc, owned = np.ascontiguousarray(acc), True
        wide = acc.dtype == np.float32  # exact integer sums (only where takes_float)
        plan = (self._wide_plans if wide else self._plans).get(acc.shape)
        shape, view, blocks, size = plan or self._plan(acc.shape, wide)
        result = np.empty(shape, np.int8 if self.mode == "int8" else np.float32)
        if len(blocks) == 1 and size <= SMALL and acc.shape == view:  # no views, no scratch
            _, _, _, bias, constants = blocks[0]
            s = acc if bias is None else _biased(acc, bias, owned, None)
            if self.mode == "dequantize":
                np.multiply(s, constants, out=result, casting="unsafe")
                return self.kernel.fn(self.attrs, result) if self.kernel else result
            self.requant.into(s, result, constants, self.lo)
            return result if self.table is None else translate(result, self.table)
        out = result.reshape(view)
        if acc.shape != view:  # 0-d, or constants wider than the accumulators (hand-made)
            acc, owned = np.broadcast_to(acc, shape).reshape(view), False
        split = self.requant is not None and self.requant.method == "split"
        buf = np.empty((1 + split) * size) if size > SMALL else None  # the float64 scratch
        for index, n, block, bias, constants in blocks:
            a, o = (acc, out) if index is None else (acc[index], out[index])
            scratch = None
            if buf is not None:
                second = buf[size : size + n].reshape(block) if split else None
                scratch = (buf[:n].reshape(block), second)
            s = a if bias is None else _biased(a, bias, owned, scratch)
            if self.mode == "dequantize":  # float64 product, rounded to float32 once
                np.multiply(s, constants, out=o, casting="unsafe")
                continue
            self.requant.into(s, o, constants, self.lo, scratch)
            if self.table is not None:
                o[...] = translate(o, self.table)
        if self.mode == "dequantize" and self.kernel is not None:
            return self.kernel.fn(self.attrs, result)
        return result

    def _in_memory_order(self, acc: np.ndarray, owned: bool) -> np.ndarray:
        """The result for strided accumulators (a product's own layout, `kernels.matrix.
        conv_accumulators`): computed by a twin unit with its constants' axes in the memory
        order of `acc`, then laid out as a C-ordered array (one pass over the result)."""
        params = (self.bias, self.wide_bias, self.scales, *getattr(self.requant, "constants", ()))
        if any(p is not None and p.ndim > acc.ndim for p in params):  # (hand-made constants)
            return self(np.ascontiguousarray(acc), True)
        order = tuple(sorted(range(acc.ndim), key=lambda axis: -abs(acc.strides[axis])))
        twin = self._twins.get(order) or self._twin(order, acc.ndim)
        inner = acc.transpose(order)
        if not inner.flags.c_contiguous:  # not a transposed C array: copy, as a matmul would
            inner, owned = np.ascontiguousarray(inner), True
        y = twin(inner, owned)
        return np.ascontiguousarray(y.transpose(np.argsort(order)))

    def _twin(self, order: tuple[int, ...], ndim: int) -> ActivateUnit:
        """This unit with its constants' axes in `order` (of `ndim`-d accumulators)."""

        def moved(param: np.ndarray | None) -> np.ndarray | None:
            if param is None:
                return None
            padded = param.reshape((1,) * (ndim - param.ndim) + param.shape)
            return np.ascontiguousarray(padded.transpose(order))

        twin = copy.copy(self)
        twin.bias, twin.wide_bias, twin.scales = map(
            moved, (self.bias, self.wide_bias, self.scales)
        )
        if self.requant is not None:
            constants = tuple(map(moved, self.requant.constants))
            twin.requant = Requantizer(self.requant.method, constants)
        twin._plans, twin._wide_plans, twin._twins = {}, {}, {}
        self._twins[order] = twin
        return twin

    def _plan(self, acc_shape: tuple[int, ...], wide: bool) -> tuple:
        """(result shape, its >= 1-d view, blocks, largest block) for accumulators of
        `acc_shape` (`wide`: float32 ones); a block: (index or None, size, shape, its bias,
        its constants)."""
        bias = self.wide_bias if wide else self.bias
        params = [p for p in (self.bias, self.scales) if p is not None]
        params += self.requant.constants if self.requant is not None else []
        shape = np.broadcast_shapes(acc_shape, *(p.shape for p in params))
        view = shape or (1,)
        blocks = []
        written: dict[int, np.ndarray] = {}  # id of a constant -> written out to a block
        for index in _blocks(view, BLOCK):
            block = tuple(len(range(*i.indices(n))) for i, n in zip(index, view))
            block += view[len(index) :]

            def part(param: np.ndarray, index=index, block=block) -> np.ndarray:
                return _block_constant(param, index, view, block, written)

            if self.scales is not None:
                constants = part(self.scales)
            else:
                constants = tuple(part(c) for c in self.requant.constants)
            whole = block == view
            b = None if bias is None else part(bias)
            blocks.append((None if whole else index, math.prod(block), block, b, constants))
        plans = self._wide_plans if wide else self._plans
        if len(plans) >= 16:  # bindings seen: a few batch sizes
            plans.clear()
        plans[acc_shape] = plan = (shape, view, blocks, max(b[1] for b in blocks))
        return plan


def spread_bias(bias: np.ndarray, acc_shape: tuple[int, ...]) -> np.ndarray:
    """A float bias for accumulators of `acc_shape`, written out over all but their first
    axis where it broadcasts over them (a per-channel bias over an image's pixels) by at most
    SPREAD_RATIO times its size: numpy adds it 2x (4x4 maps) to 5x (2x2 maps) faster than the
    broadcast one, whose inner loop runs over one channel's few pixels. Otherwise `bias`."""
    try:
        spread = np.broadcast_shapes(bias.shape, (1, *acc_shape[1:]))
    except ValueError:  # (numpy's add says why)
        return bias
    if bias.size < math.prod(spread) <= SPREAD_RATIO * bias.size:
        return np.ascontiguousarray(np.broadcast_to(bias, spread))
    return bias


def _biased(a: np.ndarray, bias: np.ndarray, owned: bool, scratch) -> np.ndarray:
    """a + bias: in place where `a` is owned and of the sum's dtype (int32, wrapping as the
    accumulators do; float32, exact), else in the float64 scratch (or a new array)."""
    if a.dtype == bias.dtype:
        return np.add(a, bias, out=a if owned else None)
    if scratch is None:
        return np.add(a, bias)
    np.copyto(scratch[0], a)  # then same-dtype: ~3x numpy's mixed float32 + float64 loop
    return np.add(scratch[0], bias, out=scratch[0])


def _blocks(shape: tuple[int, ...], target: int) -> Iterator[tuple[slice, ...]]:
    """Index tuples that cover an array of `shape` (C order) in contiguous blocks of about
    `target` elements: runs of whole rows of axis 0, or runs along axis 1 within one row."""
    if not shape:
        yield ()
        return
    row = math.prod(shape[1:])
    if row <= target or len(shape) == 1:
        step = max(1, target // max(row, 1))
        for i in range(0, shape[0], step):
            yield (slice(i, i + step),)
        return
    step = max(1, target // max(math.prod(shape[2:]), 1))
    for i in range(shape[0]):
        for j in range(0, shape[1], step):
            yield (slice(i, i + 1), slice(j, j + step))


def _block_constant(param, index, view, block, written: dict[int, np.ndarray]) -> np.ndarray:
    """The part of a constant for the block `index` (of shape `block`) of an array shaped
    `view`: written out to the block's shape once (in `written`, by the constant's id) where
    the blocks are runs of rows of a per-channel constant; a view of it otherwise."""
    size = math.prod(block)
    per_row = param.ndim < len(view) or param.shape[0] == 1
    if size <= SMALL or len(index) > 1 or param.size in (1, size) or not per_row:
        return _part(param, index, view)
    if id(param) not in written:
        written[id(param)] = np.ascontiguousarray(np.broadcast_to(param, block))
    return written[id(param)][: block[0]]


def _part(param: np.ndarray, index: tuple[slice, ...], shape: tuple[int, ...]) -> np.ndarray:
    """The block `index` of a constant that broadcasts against `shape`."""
    pad = len(shape) - param.ndim
    if pad < 0 or not index:
        return param
    parts = tuple(
        slice(None) if axis < pad or param.shape[axis - pad] == 1 else s
        for axis, s in enumerate(index)
    )
    return param[parts[pad:]] if len(parts) > pad else param
