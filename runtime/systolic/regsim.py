"""Register-level simulation of the systolic array: steps the PE registers cycle by cycle.

This module owns the cycle-by-cycle model that proves `cycles.py` (timing) and the fast
engine (values) right, for small arrays. Each cycle is one vectorized update of the R x C
register planes; there is no loop over elements. Tokens carry a tag register (the index of
the streamed row, or -1 for an empty slot), and a fold ends when the data says so (all
outputs have left the array, or all MACs are done), not after a precomputed count.

    ws  `_stationary(a, b)`: b's K x N tile shifts in from the top (R cycles, last row first);
        row t of a enters array row k at cycle t + k and moves right one PE per cycle; each
        PE adds w * x to the partial sum from the PE above and passes it down; partial sums
        leave the bottom edge, tagged with their t. The fold ends when the last has left.
    is  the same machine with the roles swapped: a^T's K x M tile is preloaded and the
        columns of b stream, computing (b^T a^T)^T.
    os  `_output_stationary`: row i of a's M-tile enters from the left skewed by i, column j
        of b's N-tile from the top skewed by j; both move one PE per cycle and PE (i, j)
        accumulates their product in place. The fold ends when every PE has done its K MACs;
        the accumulators are then read out (overlapped with the next fold's fill).

Folds are independent (each starts on an empty array) and share one schedule, so they are
stepped side by side along leading batch axes, and so are the GEMMs of a grouped conv; the
sequential time is (GEMMs x folds) x the cycles one fold took. Integers accumulate in int64
(exact), floats in float64.
"""

from __future__ import annotations

import numpy as np

from dlcc.errors import ExecutionError


def simulate(dataflow: str, rows: int, cols: int, a: np.ndarray, b: np.ndarray):
    """(a @ b, cycles) of M x K by K x N GEMMs stepped on an R x C array's registers.

    a: [..., M, K] and b: [..., K, N] with the same leading shape (e.g. a conv's groups): the
    GEMMs run one after the other and `cycles` is their total.
    """
    if a.ndim < 2 or a.shape[:-2] != b.shape[:-2] or a.shape[-1] != b.shape[-2]:
        raise ExecutionError(f"regsim: cannot multiply {a.shape} by {b.shape}")
    acc = np.int64 if a.dtype.kind in "iub" and b.dtype.kind in "iub" else np.float64
    a, b = a.astype(acc), b.astype(acc)
    if a.size == 0 or b.size == 0:  # an empty GEMM never occupies the array
        return np.zeros((*a.shape[:-1], b.shape[-1]), acc), 0
    if dataflow == "ws":
        return _stationary(rows, cols, a, b)
    if dataflow == "is":
        y, cycles = _stationary(rows, cols, b.swapaxes(-1, -2), a.swapaxes(-1, -2))
        return y.swapaxes(-1, -2), cycles
    if dataflow == "os":
        return _output_stationary(rows, cols, a, b)
    raise ExecutionError(f"dataflow {dataflow!r}: choose one of ws, os, is")


def _tiles(x: np.ndarray, tile_rows: int, tile_cols: int) -> np.ndarray:
    """x zero-padded to whole tiles: [..., P, Q] -> [..., ceil(P/r), ceil(Q/c), r, c]."""
    *lead, p, q = x.shape
    pf, qf = -(-p // tile_rows), -(-q // tile_cols)
    padded = np.zeros((*lead, pf * tile_rows, qf * tile_cols), x.dtype)
    padded[..., :p, :q] = x
    return np.moveaxis(padded.reshape(*lead, pf, tile_rows, qf, tile_cols), -3, -2)


def _stationary(rows: int, cols: int, x: np.ndarray, w: np.ndarray):
    """(x @ w, cycles) with w stationary (K on rows, N on columns) and x's rows streamed."""
    t_len = x.shape[-2]
    stat = _tiles(w, rows, cols)  # [..., kf, nf, R, C]
    lead, (kf, nf) = stat.shape[:-4], stat.shape[-4:-2]
    stream = _tiles(x, t_len, rows)[..., 0, :, None, :, :]  # [..., kf, 1, T, R]: K-slices
    r_idx = np.arange(rows)

    # Load: one row per cycle shifts in from the top, last row first.
    w_reg = np.zeros_like(stat)
    load_cycles = 0
    for row in range(rows - 1, -1, -1):
        w_reg[..., 1:, :] = w_reg[..., :-1, :]
        w_reg[..., 0, :] = stat[..., row, :]
        load_cycles += 1

    # Stream: inputs move right, partial sums move down, outputs leave the bottom edge.
    x_reg = np.zeros((*lead, kf, 1, rows, cols), x.dtype)
    x_tag = np.full((rows, cols), -1)
    p_reg = np.zeros_like(stat)
    p_tag = np.full((rows, cols), -1)
    out = np.zeros((*lead, kf, nf, t_len, cols), x.dtype)
    left = t_len * cols  # outputs still to leave the array (per fold)
    cycle = 0
    while left:
        t_in = cycle - r_idx  # the row of x that array row k receives this cycle
        live = (t_in >= 0) & (t_in < t_len)
        x_reg[..., :, 1:] = x_reg[..., :, :-1]
        x_reg[..., :, 0] = np.where(live, stream[..., np.clip(t_in, 0, t_len - 1), r_idx], 0)
        x_tag[:, 1:] = x_tag[:, :-1]
        x_tag[:, 0] = np.where(live, t_in, -1)
        psum = w_reg * x_reg
        psum[..., 1:, :] += p_reg[..., :-1, :]
        p_reg = psum
        p_tag[1:] = np.where(p_tag[:-1] == x_tag[1:], x_tag[1:], -1)
        p_tag[0] = x_tag[0]
        done = np.flatnonzero(p_tag[-1] >= 0)  # columns whose partial sum is complete
        out[..., p_tag[-1, done], done] = p_reg[..., -1, done]
        left -= done.size
        cycle += 1
    y = np.moveaxis(out.sum(axis=-4), -3, -2).reshape(*lead, t_len, nf * cols)
    return y[..., : w.shape[-1]], int(np.prod(lead)) * kf * nf * (load_cycles + cycle)


def _output_stationary(rows: int, cols: int, a: np.ndarray, b: np.ndarray):
    """(a @ b, cycles) with the M x N outputs stationary and a's rows, b's columns streamed."""
    k_len = a.shape[-1]
    a_tiles = _tiles(a, rows, k_len)  # [..., mf, 1, R, K]
    b_tiles = _tiles(b, k_len, cols)  # [..., 1, nf, K, C]
    lead, mf, nf = a.shape[:-2], a_tiles.shape[-4], b_tiles.shape[-3]
    r_idx, c_idx = np.arange(rows), np.arange(cols)

    a_reg = np.zeros((*lead, mf, 1, rows, cols), a.dtype)
    a_tag = np.full((rows, cols), -1)
    b_reg = np.zeros((*lead, 1, nf, rows, cols), a.dtype)
    b_tag = np.full((rows, cols), -1)
    acc = np.zeros((*lead, mf, nf, rows, cols), a.dtype)
    left = rows * cols * k_len  # MACs still to do (per fold, padded PEs included)
    cycle = 0
    while left:
        ka, kb = cycle - r_idx, cycle - c_idx  # the k that enters each row / column
        live_a, live_b = (ka >= 0) & (ka < k_len), (kb >= 0) & (kb < k_len)
        a_reg[..., :, 1:] = a_reg[..., :, :-1]
        a_reg[..., :, 0] = np.where(live_a, a_tiles[..., r_idx, np.clip(ka, 0, k_len - 1)], 0)
        a_tag[:, 1:] = a_tag[:, :-1]
        a_tag[:, 0] = np.where(live_a, ka, -1)
        b_reg[..., 1:, :] = b_reg[..., :-1, :]
        b_reg[..., 0, :] = np.where(live_b, b_tiles[..., np.clip(kb, 0, k_len - 1), c_idx], 0)
        b_tag[1:] = b_tag[:-1]
        b_tag[0] = np.where(live_b, kb, -1)
        meet = (a_tag >= 0) & (a_tag == b_tag)  # the skew aligns a[i, k] with b[k, j]
        acc += np.where(meet, a_reg * b_reg, 0)
        left -= int(meet.sum())
        cycle += 1
    y = np.moveaxis(acc, -3, -2).reshape(*lead, mf * rows, nf * cols)
    return y[..., : a.shape[-2], : b.shape[-1]], int(np.prod(lead)) * mf * nf * cycle
