"""The Activate unit (accumulators -> unified buffer), prepared once per instruction.

    float            y = f(acc + b)
    int8             q = lut[requantize(acc + b, m, k)]      (a table, or f on int8 values)
    int8 -> float    y = f(float32((acc + b) * s))            (s: float64 scale per channel)

`ActivateUnit(instr, attrs, weights)` resolves the function, casts the constants and builds
the tables once; calling it runs one fused pass over the accumulators in blocks of about
BLOCK elements, so its float64 temporaries stay in cache instead of costing full-size
arrays: int32 bias add, requantize (`quant.Requantizer`), clamp, table. A pointwise function
applied to int8 values without a table is itself a 256-entry map of q; when that map is
max(q, 0) (Relu) it is folded into the clamp, otherwise applied as a table. The results are
those of the unfused ops, bit for bit (int32 adds wrap as the accumulators do).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from dlcc.formats import isa
from dlcc.runtime.kernels import kernel_at
from dlcc.runtime.kernels.quant import QMAX, Requantizer, lut_bytes, translate

BLOCK = 1 << 16  # elements per block: its float64 scratch (512 KB) stays in L2
_Q = np.arange(-128, 128, dtype=np.int8)
_RELU = np.maximum(_Q, 0)


class ActivateUnit:
    """One ACTIVATE instruction, ready to run: `unit(acc, owned)` -> its result.

    `owned`: the caller gives up `acc` (no other buffer aliases it, no one reads it after),
    so the float path may add the bias in place.
    """

    def __init__(self, instr: isa.Activate, attrs, weights: list[np.ndarray]) -> None:
        self.kernel = kernel_at(instr.function)
        self.attrs = attrs
        self.bias = None if instr.bias == isa.NO_TENSOR else weights[instr.bias]
        self.scales = self.requant = self.table = None
        self.lo = -QMAX
        self._plans: dict[tuple[int, ...], tuple] = {}
        if instr.requant == isa.NO_TENSOR:
            self.mode = "float"
            return
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
                y = np.add(acc, self.bias, out=acc if owned else None)
            return self.kernel.fn(self.attrs, y) if self.kernel else y
        plan = self._plans.get(acc.shape) or self._plan(acc.shape)
        shape, view, blocks, size = plan
        result = np.empty(shape, np.int8 if self.mode == "int8" else np.float32)
        if len(blocks) == 1 and acc.shape == view:  # one block: no views, no scratch
            _, _, _, bias, constants = blocks[0]
            s = acc if bias is None else np.add(acc, bias)
            if self.mode == "dequantize":
                np.multiply(s, constants, out=result, casting="unsafe")
                return self.kernel.fn(self.attrs, result) if self.kernel else result
            self.requant.into(s, result, constants, self.lo)
            return result if self.table is None else translate(result, self.table)
        out = result.reshape(view)
        if acc.shape != view:  # 0-d, or constants wider than the accumulators (hand-made)
            acc = np.broadcast_to(acc, shape).reshape(view)
        s_buf = None if self.bias is None else np.empty(size, np.int32)
        f_buf = None
        if self.requant is not None and self.requant.method != "int64":
            f_buf = np.empty(2 * size)
        for index, n, block, bias, constants in blocks:
            a, o = (acc, out) if index is None else (acc[index], out[index])
            s = a if bias is None else np.add(a, bias, out=s_buf[:n].reshape(block))
            if self.mode == "dequantize":  # float64 product, rounded to float32 once
                np.multiply(s, constants, out=o, casting="unsafe")
                continue
            scratch = None
            if f_buf is not None:
                scratch = (f_buf[:n].reshape(block), f_buf[size : size + n].reshape(block))
            self.requant.into(s, o, constants, self.lo, scratch)
            if self.table is not None:
                o[...] = translate(o, self.table)
        if self.mode == "dequantize" and self.kernel is not None:
            return self.kernel.fn(self.attrs, result)
        return result

    def _plan(self, acc_shape: tuple[int, ...]) -> tuple:
        """(result shape, its >= 1-d view, blocks, largest block) for accumulators of
        `acc_shape`; a block: (index or None, size, shape, its bias, its constants)."""
        params = [p for p in (self.bias, self.scales) if p is not None]
        params += self.requant.constants if self.requant is not None else []
        shape = np.broadcast_shapes(acc_shape, *(p.shape for p in params))
        view = shape or (1,)
        blocks = []
        for index in _blocks(view, BLOCK):
            block = tuple(len(range(*i.indices(n))) for i, n in zip(index, view))
            block += view[len(index) :]
            bias = None if self.bias is None else _part(self.bias, index, view)
            if self.scales is not None:
                constants = _part(self.scales, index, view)
            else:
                constants = tuple(_part(c, index, view) for c in self.requant.constants)
            whole = block == view
            blocks.append((None if whole else index, math.prod(block), block, bias, constants))
        if len(self._plans) >= 16:  # bindings seen: a few batch sizes
            self._plans.clear()
        self._plans[acc_shape] = plan = (shape, view, blocks, max(b[1] for b in blocks))
        return plan


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
