"""Closed-form compute cycles of one GEMM on an R x C systolic array (SCALE-Sim v2's model).

This module owns the timing formulas of the matrix unit; `regsim.py` steps the registers and
must count the same cycles (the tests prove it). An M x K by K x N GEMM (M = output pixels x
batch, K = the reduction, N = filters) is mapped as in SCALE-Sim v2's `systolic_compute_*`:
two of its dimensions are spatial (`Sr` on the array's rows, `Sc` on its columns), the third
is temporal (`T`, streamed through the array). Each dimension that does not fit is folded;
folds run one after the other and every fold pays the full array's fill and drain:

    dataflow  stationary      Sr  Sc  T   cycles per fold          folds
    ws        weights K x N   K   N   M   R (load) + R + C + M - 2  ceil(K/R) * ceil(N/C)
    os        outputs M x N   M   N   K   R + C + K - 2             ceil(M/R) * ceil(N/C)
    is        inputs K x M    K   M   N   R (load) + R + C + N - 2  ceil(K/R) * ceil(M/C)

ws: R cycles shift the weight tile in from the top; then input row t enters array row k at
cycle t + k (skewed), moves right one PE per cycle, and partial sums move down one PE per
cycle, so output (t, c) leaves the bottom of column c at cycle t + (R - 1) + c: the last one
after T + R + C - 2 cycles. is is ws with the operands' roles swapped (the input tile is
preloaded, filter columns stream). os: input row i and weight column j enter skewed by i and
j; PE (i, j) does its k-th MAC at cycle k + i + j, the last one after K + R + C - 2 cycles,
and the finished accumulators are read out while the next fold fills (as SCALE-Sim assumes).

Convention vs SCALE-Sim v2: these are the lengths of SCALE-Sim's per-fold demand matrices
(rows = cycles), summed. SCALE-Sim's reported "Total Cycles" of a stall-free layer is the
0-based index of the cycle of its last OFMAP write, i.e. exactly one less:

    scalesim_total_cycles = gemm_cycles(...)[0] - 1      (per SCALE-Sim layer / GEMM)
"""

from __future__ import annotations

from dlcc.errors import ExecutionError

SCALESIM_OFFSET = 1  # gemm_cycles - SCALE-Sim v2 "Total Cycles" for one stall-free GEMM


def spatial_temporal(dataflow: str, m: int, k: int, n: int) -> tuple[int, int, int]:
    """(Sr, Sc, T): the GEMM dimensions on the rows, on the columns, and streamed in time."""
    if dataflow == "ws":
        return k, n, m
    if dataflow == "os":
        return m, n, k
    if dataflow == "is":
        return k, m, n
    raise ExecutionError(f"dataflow {dataflow!r}: choose one of ws, os, is")


def fold_counts(dataflow: str, rows: int, cols: int, m: int, k: int, n: int) -> tuple[int, int]:
    """(row folds, column folds) of the GEMM's spatial dimensions on an R x C array."""
    sr, sc, _ = spatial_temporal(dataflow, m, k, n)
    return -(-sr // rows), -(-sc // cols)


def fold_cycles(dataflow: str, rows: int, cols: int, t: int) -> int:
    """Cycles of one fold whose temporal dimension is `t` (see the module docstring)."""
    load = 0 if dataflow == "os" else rows  # the stationary operand shifts in from the top
    return load + rows + cols + t - 2


def gemm_cycles(dataflow: str, rows: int, cols: int, m: int, k: int, n: int) -> tuple[int, int]:
    """(compute cycles, folds) of an M x K by K x N GEMM on an R x C array.

    compute cycles = folds * fold_cycles; SCALE-Sim v2 reports one cycle less per GEMM.
    """
    _, _, t = spatial_temporal(dataflow, m, k, n)
    if m * k * n == 0:
        return 0, 0  # an empty GEMM never occupies the array
    row_folds, col_folds = fold_counts(dataflow, rows, cols, m, k, n)
    folds = row_folds * col_folds
    return folds * fold_cycles(dataflow, rows, cols, t), folds


def mapping_efficiency(dataflow: str, rows: int, cols: int, m: int, k: int, n: int) -> float:
    """Mean over folds of the fraction of the R x C PEs that hold work (SCALE-Sim's metric).

    The mapped PEs summed over all folds are Sr * Sc, so the mean is Sr*Sc / (folds*R*C).
    """
    sr, sc, _ = spatial_temporal(dataflow, m, k, n)
    row_folds, col_folds = fold_counts(dataflow, rows, cols, m, k, n)
    if m * k * n == 0:
        return 0.0
    return sr * sc / (row_folds * col_folds * rows * cols)
