"""The LSTM recurrent op, ONNX semantics (activations sigmoid / tanh / tanh).

Gate order in W, R and B is i, o, f, c; peepholes P are ordered i, o, f. The input
projection X @ W^T (+ both biases) runs as one matmul over all time steps; only the
recurrence loops, once per time step, vectorized over the batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.errors import ExecutionError
from dlcc.runtime.kernels import F32, INDEX_DTYPES, check, register_kernel
from dlcc.runtime.kernels.activation import sigmoid

DIRECTIONS = {"forward": [False], "reverse": [True], "bidirectional": [False, True]}


@dataclasses.dataclass(frozen=True)
class LSTMAttrs:
    """LSTM attributes; clip 0.0 means no cell clip, layout 1 means batch-first tensors."""

    hidden_size: int
    direction: str = "forward"
    clip: float = 0.0
    input_forget: int = 0
    layout: int = 0

    def __post_init__(self) -> None:
        check(self.hidden_size >= 1, f"hidden_size {self.hidden_size} < 1")
        check(self.direction in DIRECTIONS, f"direction {self.direction!r} unknown")
        check(0 <= self.clip < float("inf"), f"clip {self.clip} is not finite and >= 0")
        check(self.input_forget in (0, 1) and self.layout in (0, 1), "input_forget, layout: 0 or 1")


def sequence_lengths(sequence_lens, t_len: int, op: str) -> np.ndarray | None:
    """Per-sequence lengths, checked in 0..T; None when every sequence is full."""
    if sequence_lens is None or not np.any(sequence_lens != t_len):
        return None
    lens = np.asarray(sequence_lens, dtype=np.int64)
    if lens.min() < 0 or lens.max() > t_len:
        raise ExecutionError(f"{op}: a sequence length lies outside 0..{t_len}")
    return lens


def recur(xw: np.ndarray, state: tuple, cell, lens: np.ndarray | None, reverse: bool):
    """Run `cell(x_t, state) -> new state` (h first) over time; returns Y [T, B, H], zero
    past each sequence's length, and the last state. One step per time slice, vectorized
    over the batch; a reverse pass starts at each sequence's end."""
    t_len, batch, _ = xw.shape
    y = np.zeros((t_len, batch, state[0].shape[1]), dtype=xw.dtype)
    rows = np.arange(batch)
    for s in range(t_len):
        if lens is None:  # full sequences: step s reads / writes one time slice
            t = t_len - 1 - s if reverse else s
            state = cell(xw[t], state)
            y[t] = state[0]
            continue
        valid = s < lens
        t = np.where(valid, lens - 1 - s, s) if reverse else np.full(batch, s)
        new = cell(xw[t, rows], state)
        m = valid[:, None]
        state = tuple(np.where(m, a, b) for a, b in zip(new, state))
        y[t, rows] = np.where(m, new[0], 0)
    return y, state


def _lstm_cell(attrs: LSTMAttrs, r: np.ndarray, p: np.ndarray):
    """The LSTM step: (h, c) -> (h', c'); xw holds the input projection plus both biases."""
    hs = r.shape[1]
    p_i, p_o, p_f = p[:hs], p[hs : 2 * hs], p[2 * hs :]
    cl = attrs.clip

    def pre(v: np.ndarray) -> np.ndarray:  # cell clip, applied to every activation input
        return np.clip(v, -cl, cl) if cl > 0 else v

    def cell(x_t, state):
        h, c = state
        g_i, g_o, g_f, g_c = np.split(x_t + h @ r.T, 4, axis=-1)
        i = sigmoid(None, pre(g_i + p_i * c))
        f = 1 - i if attrs.input_forget else sigmoid(None, pre(g_f + p_f * c))
        c_new = f * c + i * np.tanh(pre(g_c))
        return sigmoid(None, pre(g_o + p_o * c_new)) * np.tanh(c_new), c_new

    return cell


def _lstm_shape(attrs: LSTMAttrs, x, w, r, b=None, lens=None, h0=None, c0=None, p=None):
    check(len(x) == 3, f"LSTM takes a 3-D X, got {x}")
    seq, batch = (x[1], x[0]) if attrs.layout else (x[0], x[1])
    d, hs = len(DIRECTIONS[attrs.direction]), attrs.hidden_size
    state = (batch, d, hs) if attrs.layout else (d, batch, hs)
    expected = [
        (w, (d, 4 * hs, x[2])), (r, (d, 4 * hs, hs)), (b, (d, 8 * hs)), (lens, (batch,)),
        (h0, state), (c0, state), (p, (d, 3 * hs)),
    ]  # fmt: skip
    for got, want in expected:
        check(got is None or tuple(got) == want, f"LSTM operand {got}, expected {want}")
    if attrs.layout:
        return (batch, seq, d, hs), (batch, d, hs), (batch, d, hs)
    return (seq, d, batch, hs), (d, batch, hs), (d, batch, hs)


def _lstm_dtype(attrs: LSTMAttrs, x, w, r, b=None, lens=None, *states):
    check(lens is None or lens in INDEX_DTYPES, f"sequence_lens must be integers, not {lens}")
    check({x, w, r, b, *states} - {None} == {F32}, "LSTM takes float32 tensors")
    return F32


@register_kernel("LSTM", LSTMAttrs, code=21, shape=_lstm_shape, dtype=_lstm_dtype)
def lstm(
    attrs: LSTMAttrs,
    x: np.ndarray,
    w: np.ndarray,
    r: np.ndarray,
    b: np.ndarray | None = None,
    sequence_lens: np.ndarray | None = None,
    initial_h: np.ndarray | None = None,
    initial_c: np.ndarray | None = None,
    p: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y, Y_h, Y_c): c = f*c + i*g(Wc x + Rc h + Pc..), h = o*h(c), per direction and step."""
    if attrs.layout:
        x = x.swapaxes(0, 1)
        initial_h = None if initial_h is None else initial_h.swapaxes(0, 1)
        initial_c = None if initial_c is None else initial_c.swapaxes(0, 1)
    t_len, batch, _ = x.shape
    hs = r.shape[-1]
    dt = x.dtype
    lens = sequence_lengths(sequence_lens, t_len, "LSTM")
    outs = []
    for d, rev in enumerate(DIRECTIONS[attrs.direction]):
        xw = x @ w[d].T.astype(dt)
        if b is not None:
            xw += (b[d, : 4 * hs] + b[d, 4 * hs :]).astype(dt)
        pd = np.zeros(3 * hs, dt) if p is None else p[d].astype(dt)
        h0 = np.zeros((batch, hs), dt) if initial_h is None else initial_h[d].astype(dt)
        c0 = np.zeros((batch, hs), dt) if initial_c is None else initial_c[d].astype(dt)
        y, (h, c) = recur(xw, (h0, c0), _lstm_cell(attrs, r[d].astype(dt), pd), lens, rev)
        outs.append((y, h, c))
    y = np.stack([o[0] for o in outs], axis=1)  # [T, D, B, H]
    y_h = np.stack([o[1] for o in outs])  # [D, B, H]
    y_c = np.stack([o[2] for o in outs])
    if attrs.layout:
        return y.transpose(2, 0, 1, 3).copy(), y_h.swapaxes(0, 1).copy(), y_c.swapaxes(0, 1).copy()
    return y, y_h, y_c
