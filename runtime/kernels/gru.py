"""The GRU recurrent op, ONNX semantics (activations sigmoid / tanh), beside the LSTM.

Gate order in W, R and B is z, r, h. The input projection X @ W^T (+ the input biases) runs
as one matmul over all time steps; only the recurrence loops, once per time step,
vectorized over the batch:

    z = sigmoid(xw_z + h R_z^T + Rb_z)        r = sigmoid(xw_r + h R_r^T + Rb_r)
    n = tanh(xw_h + (r * h) R_h^T + Rb_h)     (linear_before_reset: r * (h R_h^T + Rb_h))
    h' = (1 - z) * n + z * h                  (held past each sequence's length)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.runtime.kernels import F32, INDEX_DTYPES, check, register_kernel
from dlcc.runtime.kernels.activation import sigmoid
from dlcc.runtime.kernels.lstm import DIRECTIONS, recur, sequence_lengths


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
    """The GRU step: (h,) -> (h',); xw holds the input projection plus the input biases."""
    hs = r.shape[1]
    r_zr, r_h = r[: 2 * hs], r[2 * hs :]
    rb_zr, rb_h = np.split(rb, [2 * hs])
    cl = attrs.clip

    def cell(x_t, state):
        (h,) = state
        x_zr, x_h = np.split(x_t, [2 * hs], axis=-1)
        g = x_zr + h @ r_zr.T + rb_zr
        z, reset = np.split(sigmoid(None, np.clip(g, -cl, cl) if cl else g), 2, axis=-1)
        if attrs.linear_before_reset:
            inner = x_h + reset * (h @ r_h.T + rb_h)
        else:
            inner = x_h + (reset * h) @ r_h.T + rb_h
        n = np.tanh(np.clip(inner, -cl, cl) if cl else inner)
        return ((1 - z) * n + z * h,)

    return cell


@register_kernel("GRU", GRUAttrs, code=66, shape=_gru_shape, dtype=_gru_dtype)
def gru(attrs: GRUAttrs, x, w, r, b=None, sequence_lens=None, initial_h=None):
    """(Y, Y_h) of a GRU over X, per direction (see the module doc for the gate math)"""
    if attrs.layout:
        x = x.swapaxes(0, 1)
        initial_h = None if initial_h is None else initial_h.swapaxes(0, 1)
    t_len, batch, _ = x.shape
    hs, dt = r.shape[-1], x.dtype
    lens = sequence_lengths(sequence_lens, t_len, "GRU")
    outs = []
    for d, rev in enumerate(DIRECTIONS[attrs.direction]):
        xw = x @ w[d].T.astype(dt)
        rb = np.zeros(3 * hs, dt)
        if b is not None:
            xw += b[d, : 3 * hs].astype(dt)
            rb = b[d, 3 * hs :].astype(dt)
        h0 = np.zeros((batch, hs), dt) if initial_h is None else initial_h[d].astype(dt)
        y, (h,) = recur(xw, (h0,), _gru_cell(attrs, r[d].astype(dt), rb), lens, rev)
        outs.append((y, h))
    y = np.stack([o[0] for o in outs], axis=1)  # [T, D, B, H]
    y_h = np.stack([o[1] for o in outs])  # [D, B, H]
    if attrs.layout:
        return y.transpose(2, 0, 1, 3).copy(), y_h.swapaxes(0, 1).copy()
    return y, y_h
