"""Sparse execution of int8 Dense products: only the weight rows that meet a nonzero input.

    y[m, n] = sum_k x[m, k] w[k, n] = sum_{k in A} x[m, k] w[k, n]
    A = {k : row k of w has a nonzero (pruning) and x[:, k] has one (zero activations)}

EIE's two halves (Han et al., ISCA 2016): pruned weights and zero activations (ReLU outputs,
an image's blank background) are both skipped. The product over A runs through BLAS on the
gathered rows of the weight's float32 copy; it is exact, as the dense product is: int8 x
int8 products summed in float32 stay integers below 2^24 while |A| <= EXACT_K (blocked
beyond, kernels.matrix.exact_matmul), so the result is the dense one bit for bit whatever
order BLAS adds in. The float path never runs sparse: its sums would round in another order.

Where it pays (benchmarks/sparse_speed.py prints the crossover; 1 thread, batch 1, sparse /
dense time). BLAS reads a dense weight faster than numpy walks any compressed form: a CSR
walk (gather, multiply, np.bincount) lost to the dense SGEMV at every density down to 3%
(3.5x slower at 20%), so the weight's own density buys nothing by itself. Fewer rows do:

    inputs on            10%    20%    30%    45%
    784x300 (fc1)        0.63   0.80   1.04   1.40     LeNet-300-100 -O3, pruned to 80%
    800x500              0.46   0.63   0.97   1.54     LeNet-5 -O3, pruned to 80%
    512x256              0.69   1.03   1.13   1.58     random, 20% dense
    256x256              1.00   1.18   1.23   1.37
    300x100, 100x10      > 1 at every fraction: the scan and gathers (~5 us) outweigh them

On real digits (LeNet-300-100 fc1, 40 training images, 6-36% of pixels on) the crossover is 20%
active rows: 0.76 at 9%, 0.85 at 18%, 1.0 at 21%, 1.1 at 28%. Hence the rule

    rows of x <= MAX_ROWS  and  K*N >= MIN_WEIGHT  and  |A| <= DENSITY * K

checked in that order, the first two for free; the active count costs one scan of x. The
union of active inputs grows with the batch (MNIST: 19% of pixels on in one digit, 29% in
two, 46% in eight), so on images this is a batch-1 path; inputs sparser still (one-hot
features, deep ReLU layers) pay up to MAX_ROWS. Large batches and the float path run dense.
"""

from __future__ import annotations

import numpy as np

from dlcc.runtime.kernels.constants import derived
from dlcc.runtime.kernels.matrix import EXACT_K, as_float32, exact_matmul

MAX_ROWS = 8  # rows of x (batch) up to which the active inputs are counted at all
MIN_WEIGHT = 1 << 17  # entries of the smallest weight whose product the gathers pay for
DENSITY = 0.2  # the largest fraction of weight rows active where the sparse product pays


def sparse_product(x: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """x [M, K] @ w [K, N] for int8 operands, as int32, over the active rows only; None where
    that does not pay (the rule above): the caller runs the dense product then."""
    if not 0 < x.shape[0] <= MAX_ROWS or w.size < MIN_WEIGHT:
        return None
    rows, xa = active_rows(x, w)
    if len(rows) > DENSITY * w.shape[0]:
        return None
    return rows_product(xa, w, rows)


def active_rows(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(A, x[:, A]): the rows of w with a nonzero entry that meet a nonzero column of x."""
    live = derived(w, "live-rows", _live_rows)  # 0-d True: every row has a nonzero
    on = x[0] if x.shape[0] == 1 else x.any(axis=0)
    active = (on if live.ndim == 0 else np.logical_and(on, live)).nonzero()[0]
    return active, x[:, active]


def rows_product(xa: np.ndarray, w: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """xa @ w[rows] as int32, exact (int8 operands)."""
    if len(rows) > EXACT_K:  # sums that may pass 2^24: the blocked exact product
        return exact_matmul(xa, w.take(rows, axis=0))
    return np.matmul(xa.astype(np.float32), as_float32(w).take(rows, axis=0)).astype(np.int32)


def _live_rows(w: np.ndarray) -> np.ndarray:
    """Which rows of w [K, N] hold a nonzero (a 0-d True when all do); once per constant."""
    live = w.any(axis=1)
    return np.asarray(True) if live.all() else live
