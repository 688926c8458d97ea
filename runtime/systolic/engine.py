"""SystolicEngine and SystolicTarget: the interpreter with its matrix engine on the array.

This module owns the `systolic` target's execution: MATRIX_MULTIPLY and CONVOLVE run as GEMMs
on the R x C array (Conv through the shared im2col lowering, as in SCALE-Sim), each appending
a LayerRecord; every other instruction runs the interpreter's kernels.

- fast mode: values through the very kernels the interpreter calls (int8 operands accumulate
  exactly in int32; tiling an integer sum over folds cannot change it), cycles closed-form;
  the im2col patches feed the layer's record (MACs on zero operands), not the values;
- exact timing (`exact_timing=True`, arrays up to 64 x 64): integer GEMMs are stepped on the
  registers by `regsim`, which gives both the values and the cycles. Float GEMMs (an -O0
  bundle) take their cycles from `regsim` and their values from the kernels, since a float
  sum's rounding depends on its order and the array is an int8 machine.
"""

from __future__ import annotations

import numpy as np

from dlcc.errors import ExecutionError
from dlcc.runtime.interpreter import Interpreter
from dlcc.runtime.kernels import NoAttrs, get_kernel
from dlcc.runtime.kernels.matrix import (
    conv_from_matmul,
    conv_output_hw,
    conv_weight_matrix,
    im2col,
)
from dlcc.runtime.systolic import regsim
from dlcc.runtime.systolic.config import SystolicConfig
from dlcc.runtime.systolic.cycles import gemm_cycles, mapping_efficiency
from dlcc.runtime.systolic.records import LayerRecord

MAX_EXACT_SIDE = 64  # the register-level mode refuses larger arrays (too slow to step)


class SystolicEngine:
    """A MatrixEngine that runs each matrix instruction on the array and records it."""

    def __init__(self, config: SystolicConfig, bundle, exact_timing: bool = False) -> None:
        if exact_timing and max(config.rows, config.cols) > MAX_EXACT_SIDE:
            raise ExecutionError(
                f"exact timing steps every register: arrays up to {MAX_EXACT_SIDE}x"
                f"{MAX_EXACT_SIDE} only, not {config.rows}x{config.cols}"
            )
        self.config = config
        self.bundle = bundle
        self.exact_timing = exact_timing
        self.records: list[LayerRecord] = []

    def matmul(self, x: np.ndarray, w: np.ndarray, tensor: int) -> np.ndarray:
        """Dense: x[..., K] @ w[K, N] as one GEMM with M = the product of x's leading dims."""
        a = x.reshape(-1, x.shape[-1])
        y, cycles = self._simulate(a[None], w[None]) if self.exact_timing else (None, None)
        if y is None:
            y = get_kernel("Dense").fn(NoAttrs(), x, w, None)
        else:
            y = y[0].reshape(*x.shape[:-1], w.shape[1])
        self._record("Dense", tensor, a[None], w[None], cycles)
        return y

    def convolve(self, x: np.ndarray, w: np.ndarray, attrs, tensor: int) -> np.ndarray:
        """Conv: `group` GEMMs of im2col patches [M, K] by filter matrices [K, N]."""
        kernel_hw = (w.shape[2], w.shape[3])
        oh, ow = conv_output_hw(x.shape[2], x.shape[3], kernel_hw, attrs)
        patches = im2col(x, kernel_hw, attrs)
        wmat = conv_weight_matrix(w, attrs.group)
        y, cycles = self._simulate(patches, wmat) if self.exact_timing else (None, None)
        self._record("Conv", tensor, patches, wmat, cycles)
        if y is None:  # the values of the interpreter's own kernel (float sums: its order)
            return get_kernel("Conv").fn(attrs, x, w, None)
        return conv_from_matmul(y, x.shape[0], oh, ow)

    def _simulate(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray | None, int]:
        """The groups' GEMMs stepped on the registers: (int32 values, or None if float; cycles)."""
        cfg = self.config
        y, cycles = regsim.simulate(cfg.dataflow, cfg.rows, cfg.cols, a, b)
        return (y.astype(np.int32) if _integer(a, b) else None), cycles

    def _record(self, op: str, tensor: int, a: np.ndarray, b: np.ndarray, cycles) -> None:
        """Append the LayerRecord of `groups` GEMMs a[g] @ b[g] (a: [G, M, K], b: [G, K, N])."""
        cfg = self.config
        groups, m, k = a.shape
        n = b.shape[2]
        per_group, folds = gemm_cycles(cfg.dataflow, cfg.rows, cfg.cols, m, k, n)
        macs = groups * m * k * n
        # Products with both operands nonzero, without the M x K x N product:
        # sum_{m,n} sum_k [a_mk != 0][b_kn != 0] = sum_k (nonzeros of a's column k) * (of b's row k)
        nonzero = int(np.einsum("gk,gk->", _count_nonzero(a, 1), _count_nonzero(b, 2)))
        record = self.bundle.file.tensors[tensor]
        self.records.append(
            LayerRecord(
                name=record.name,
                op=op,
                m=m,
                k=k,
                n=n,
                groups=groups,
                folds=groups * folds,
                compute_cycles=groups * per_group if cycles is None else cycles,
                macs=macs,
                zero_macs=macs - nonzero,
                mapping_efficiency=mapping_efficiency(cfg.dataflow, cfg.rows, cfg.cols, m, k, n),
                weight_bytes=record.nbytes,
                input_bytes=a.size * a.itemsize,
                output_bytes=groups * m * n * 4,
                integer=_integer(a, b),
            )
        )


class SystolicTarget:
    """The `systolic` target: the interpreter on a SystolicEngine; keeps the last records."""

    name = "systolic"

    def __init__(self, config: SystolicConfig | None = None, exact_timing: bool = False) -> None:
        self.config = config or SystolicConfig()
        self.exact_timing = exact_timing
        self.records: list[LayerRecord] = []

    def run(self, bundle, inputs) -> dict[str, np.ndarray]:
        """Outputs by name; `self.records` then holds one LayerRecord per matrix instruction."""
        engine = SystolicEngine(self.config, bundle, self.exact_timing)
        outputs = Interpreter(engine).run(bundle, inputs)
        self.records = engine.records
        return outputs

    def tiling(self, bundle) -> dict:
        """The array the bundle was tiled for and the one it ran on; folds follow the latter."""
        tiled = bundle.file.meta.get("array")
        run = [self.config.rows, self.config.cols]
        return {"bundle": tiled, "run": run, "retiled": tiled is not None and tiled != run}


def _integer(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether both operands are integers (the int8 path) rather than floats."""
    return a.dtype.kind in "iu" and b.dtype.kind in "iu"


def _count_nonzero(x: np.ndarray, axis: int) -> np.ndarray:
    """Nonzero counts along `axis` as int64 (np.count_nonzero with an axis, made explicit)."""
    return np.count_nonzero(x, axis=axis).astype(np.int64)
