"""The GRU recurrent op, ONNX semantics (activations sigmoid / tanh), beside the LSTM.

Gate order in W, R and B is z, r, h. The input projection X @ W^T (+ the input biases) runs
as one matmul over all time steps and directions; only the recurrence loops, once per time
step, vectorized over the batch (feature-major, as the LSTM's):

    z = sigmoid(xw_z + h R_z^T + Rb_z)        r = sigmoid(xw_r + h R_r^T + Rb_r)
    n = tanh(xw_h + (r * h) R_h^T + Rb_h)     (linear_before_reset: r * (h R_h^T + Rb_h))
    h' = (1 - z) * n + z * h                  (held past each sequence's length)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.runtime.kernels import F32, INDEX_DTYPES, check, register_kernel
from dlcc.runtime.kernels.lstm import (
    DIRECTIONS,
    RECURRENT_WEIGHTS,
    initial_state,
    run_directions,
    sequence_lengths,
)


@dataclasses.dataclass(frozen=True)
class GRUAttrs:
    """GRU attributes; clip 0.0 means no clip, layout 1 means batch-first tensors."""

    hidden_size: int
    direction: str = "forward"
    clip: float = 0.0
    linear_before_reset: int = 0
    layout: int = 0

    def __post_init__(self) -> None:
        check(self.hidden_size >= 1, f"hidden_size {self.hidden_size} < 1")
        check(self.direction in DIRECTIONS, f"direction {self.direction!r} unknown")
        check(0 <= self.clip < float("inf"), f"clip {self.clip} is not finite and >= 0")
        check(self.linear_before_reset in (0, 1) and self.layout in (0, 1), "0 or 1 flags")


def _gru_shape(attrs: GRUAttrs, x, w, r, b=None, lens=None, h0=None):
    check(len(x) == 3, f"GRU takes a 3-D X, got {x}")
    seq, batch = (x[1], x[0]) if attrs.layout else (x[0], x[1])
    d, hs = len(DIRECTIONS[attrs.direction]), attrs.hidden_size
    state = (batch, d, hs) if attrs.layout else (d, batch, hs)
    expected = [(w, (d, 3 * hs, x[2])), (r, (d, 3 * hs, hs)), (b, (d, 6 * hs)), (lens, (batch,))]
    for got, want in [*expected, (h0, state)]:
        check(got is None or tuple(got) == want, f"GRU operand {got}, expected {want}")
    if attrs.layout:
        return (batch, seq, d, hs), state
    return (seq, d, batch, hs), state


def _gru_dtype(attrs: GRUAttrs, x, w, r, b=None, lens=None, h0=None):
    check(lens is None or lens in INDEX_DTYPES, f"sequence_lens must be integers, not {lens}")
    check({x, w, r, b, h0} - {None} == {F32}, "GRU takes float32 tensors")
    return F32


def _gru_cell(attrs: GRUAttrs, r: np.ndarray, rb: np.ndarray):
    """The GRU step, feature-major: (h,) [(D,) H, B] -> (h',); x_t [(D,) 3H, B] holds the
    input projection plus the input biases.

    z and r come from one product and one sigmoid over a contiguous [2H, B] block; with
    linear_before_reset the candidate's R_h h joins that product (one GEMM per step).
    """
    hs = r.shape[-1]
    cl = attrs.clip
    lbr = attrs.linear_before_reset
    r_zr, r_h = r[..., : 2 * hs, :], np.ascontiguousarray(r[..., 2 * hs :, :])
    rb = rb[..., None]  # [(D,) 3H, 1]: broadcasts over the batch
    rb_zr, rb_h = rb[..., : 2 * hs, :], rb[..., 2 * hs :, :]

    def cell(x_t, state):
        (h,) = state
        if lbr:  # r * (R_h h + Rb_h): all three products at once
            hr = np.matmul(r, h)
            g, hn = hr[..., : 2 * hs, :], hr[..., 2 * hs :, :]
        else:
            g = np.matmul(r_zr, h)
        g += x_t[..., : 2 * hs, :]
        g += rb_zr
        if cl:
            np.clip(g, -cl, cl, out=g)
        g *= 0.5  # sigmoid(v) = (1 + tanh(v / 2)) / 2, as the LSTM's gates: 4 calls, not 7
        np.tanh(g, out=g)
        g *= 0.5
        g += 0.5
        z, reset = g[..., :hs, :], g[..., hs:, :]
        if lbr:
            hn += rb_h
            hn *= reset
            inner = hn
        else:
            inner = np.matmul(r_h, reset * h)
        inner += x_t[..., 2 * hs :, :]  # (x_h + inner, the same sum)
        if not lbr:
            inner += rb_h
        if cl:
            np.clip(inner, -cl, cl, out=inner)
        n = np.tanh(inner, out=inner)
        h_new = 1 - z
        h_new *= n
        h_new += z * h
        return (h_new,)

    return cell


@register_kernel(
    "GRU", GRUAttrs, code=66, shape=_gru_shape, dtype=_gru_dtype, weights=RECURRENT_WEIGHTS
)
def gru(attrs: GRUAttrs, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """(Y, Y_h) of a GRU over X, per direction (see the module doc for the gate math)"""
    if attrs.layout:
        x = x.swapaxes(0, 1)
        initial_h = None if initial_h is None else initial_h.swapaxes(0, 1)
    t_len, batch, _ = x.shape
    hs, dt = r.shape[-1], x.dtype
    lens = sequence_lengths(sequence_lens, t_len, "GRU")
    n_dir = w.shape[0]
    rb = np.zeros((n_dir, 3 * hs), dt) if b is None else b[:, 3 * hs :].astype(dt, copy=False)
    states = (initial_state(initial_h, n_dir, batch, hs, dt),)
    r = r.astype(dt, copy=False)

    def make_cell(d: int | None):
        return _gru_cell(attrs, r if d is None else r[d], rb if d is None else rb[d])

    bias = None if b is None else b[:, : 3 * hs]
    y, (y_h,) = run_directions(attrs, x, w, bias, states, make_cell, lens)
    if attrs.layout:
        return y.transpose(2, 0, 1, 3).copy(), y_h.swapaxes(0, 1).copy()
    return y, y_h
