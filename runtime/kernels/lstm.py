"""The LSTM recurrent op, ONNX semantics (activations sigmoid / tanh / tanh).

Gate order in W, R and B is i, o, f, c; peepholes P are ordered i, o, f. The input
projection X @ W^T (+ both biases) runs as one matmul over all time steps and directions;
only the recurrence loops, once per time step, vectorized over the batch (and over both
directions of a bidirectional layer), feature-major so each gate is one contiguous block.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.errors import ExecutionError
from dlcc.runtime.kernels import F32, INDEX_DTYPES, WeightInput, check, register_kernel
from dlcc.runtime.kernels.activation import sigmoid_into

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


def input_projection(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, flip: tuple[bool, ...] = ()
) -> np.ndarray:
    """W X^T + bias for every time step and direction in one product (one GEMM):
    x [T, B, I], w [D, G, I] (G = gates x hidden), bias [D, G] -> [D, T, G, B], the time
    axis reversed for each direction d with flip[d] (a reverse pass reads it in order).

    Feature-major, as the recurrence runs: each gate's rows are contiguous over the batch,
    so the per-step gate math works on whole contiguous blocks, not strided columns.
    """
    t_len, batch, size = x.shape
    d, g = w.shape[:2]
    xw = np.matmul(w.reshape(d * g, size).astype(x.dtype, copy=False), x.reshape(-1, size).T)
    xw = xw.reshape(d, g, t_len, batch)
    if bias is not None:
        xw += bias.astype(x.dtype, copy=False)[:, :, None, None]
    out = np.empty((d, t_len, g, batch), xw.dtype)
    for k in range(d):  # the one copy to the recurrence's layout (and order)
        flipped = k < len(flip) and flip[k]
        out[k] = (xw[k, :, ::-1] if flipped else xw[k]).transpose(1, 0, 2)
    return out


def recur(xw: np.ndarray, state: tuple, cell, lens: np.ndarray | None, reverse: bool):
    """Run `cell(x_t, state) -> new state` (h first) over time, feature-major: xw [T, G, B],
    states [H, B]; returns Y [T, H, B], zero past each sequence's length, and the last
    state. One step per time slice, vectorized over the batch; a reverse pass starts at
    each sequence's end."""
    t_len, _, batch = xw.shape
    y = np.zeros((t_len, state[0].shape[0], batch), dtype=xw.dtype)
    cols = np.arange(batch)
    for s in range(t_len):
        if lens is None:  # full sequences: step s reads / writes one time slice
            t = t_len - 1 - s if reverse else s
            state = cell(xw[t], state)
            y[t] = state[0]
            continue
        valid = s < lens
        t = np.where(valid, lens - 1 - s, s) if reverse else np.full(batch, s)
        new = cell(xw[t, :, cols].T, state)
        m = valid[None, :]
        state = tuple(np.where(m, a, b) for a, b in zip(new, state))
        y[t, :, cols] = np.where(m, new[0], 0).T
    return y, state


def run_directions(attrs, x, w, bias, states: tuple, make_cell, lens) -> tuple:
    """Y [T, D, B, H] and the last states [D, B, H] of every direction, from x [T, B, I],
    w [D, G, I], bias [D, G] and initial states [D, H, B]; make_cell(d) is direction d's
    cell, make_cell(None) both directions' stacked. Full sequences run every direction in
    one loop over steps (a reverse direction's inputs stored in step order); ragged ones
    run each direction alone, as `recur` does."""
    reverse = tuple(DIRECTIONS[attrs.direction])
    if lens is None:
        xw = input_projection(x, w, bias, flip=reverse)  # [D, T, G, B], in step order
        one = xw.shape[0] == 1
        cell = make_cell(0 if one else None)
        state = tuple(s[0] for s in states) if one else states
        y = np.empty((xw.shape[1], *states[0].shape), xw.dtype)  # [T, D, H, B], by step
        for t in range(xw.shape[1]):
            state = cell(xw[0, t] if one else xw[:, t], state)
            y[t] = state[0]
        last = tuple(s[None] for s in state) if one else state
        for k, rev in enumerate(reverse):
            if rev:  # back in time order
                y[:, k] = y[::-1, k].copy()
    else:
        xw = input_projection(x, w, bias)
        runs = [
            recur(xw[k], tuple(s[k] for s in states), make_cell(k), lens, rev)
            for k, rev in enumerate(reverse)
        ]
        y = np.stack([run[0] for run in runs], axis=1)  # [T, D, H, B]
        last = tuple(np.stack([run[1][i] for run in runs]) for i in range(len(states)))
    y = np.ascontiguousarray(y.transpose(0, 1, 3, 2))
    return y, tuple(np.ascontiguousarray(s.transpose(0, 2, 1)) for s in last)


def initial_state(value: np.ndarray | None, n_dir: int, batch: int, hs: int, dt) -> np.ndarray:
    """An initial state [D, B, H] (zeros when absent) as the recurrence holds it: [D, H, B]."""
    if value is None:
        return np.zeros((n_dir, hs, batch), dt)
    return np.ascontiguousarray(value.astype(dt, copy=False).transpose(0, 2, 1))


def _lstm_cell(attrs: LSTMAttrs, r: np.ndarray, p: np.ndarray | None):
    """The LSTM step, feature-major: (h, c) [(D,) H, B] -> (h', c'); x_t [(D,) 4H, B] holds
    the input projection plus both biases.

    The four gates come from one product R h into one [4H, B] buffer; their order i, o, f, c
    puts the three sigmoid gates in one contiguous block, so without peepholes one tanh call
    covers all four, sigmoid(v) being (1 + tanh(v/2)) / 2 (halving is exact; tanh never
    overflows): four numpy calls where a sigmoid and a tanh took eight. With peepholes o
    waits for c' and runs alone.
    """
    hs = r.shape[-1]
    if p is not None:
        p = p[..., None]  # [(D,) 3H, 1]: broadcasts over the batch
    cl = attrs.clip
    gates: list[np.ndarray] = []  # the step's scratch, sized by the first step's batch

    def pre(v: np.ndarray) -> np.ndarray:  # cell clip, applied to every activation input
        return np.clip(v, -cl, cl, out=v) if cl > 0 else v

    def cell(x_t, state):
        h, c = state
        shape = (*r.shape[:-1], h.shape[-1])
        if not gates or gates[0].shape != shape:
            gates[:] = [np.empty(shape, h.dtype)]
        g = np.matmul(r, h, out=gates[0])
        g += x_t
        g_i, g_o, g_f = g[..., :hs, :], g[..., hs : 2 * hs, :], g[..., 2 * hs : 3 * hs, :]
        g_c = g[..., 3 * hs :, :]
        if p is None:  # sigmoid(v) = (1 + tanh(v / 2)) / 2: one tanh over all four gates
            pre(g)
            iof = g[..., : 3 * hs, :]
            iof *= 0.5
            np.tanh(g, out=g)
            iof *= 0.5
            iof += 0.5
        else:
            g_i += p[..., :hs, :] * c
            g_f += p[..., 2 * hs :, :] * c
            sigmoid_into(pre(g_i), g_i)
            sigmoid_into(pre(g_f), g_f)
            np.tanh(pre(g_c), out=g_c)
        f = 1 - g_i if attrs.input_forget else g_f
        c_new = f * c
        c_new += g_i * g_c
        if p is not None:
            g_o += p[..., hs : 2 * hs, :] * c_new
            sigmoid_into(pre(g_o), g_o)
        h_new = np.tanh(c_new)
        h_new *= g_o
        return h_new, c_new

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


# W [D, 4H, I] and R [D, 4H, H]: compressed in the bundle, computed in float32 (ESE's
# pruned LSTM weights, without its int8 recurrence).
RECURRENT_WEIGHTS = (WeightInput(1, "W", channel_axis=1), WeightInput(2, "R", channel_axis=1))


@register_kernel(
    "LSTM", LSTMAttrs, code=21, shape=_lstm_shape, dtype=_lstm_dtype, weights=RECURRENT_WEIGHTS
)
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
    bias = None if b is None else b[:, : 4 * hs] + b[:, 4 * hs :]
    n_dir = w.shape[0]
    states = tuple(initial_state(v, n_dir, batch, hs, dt) for v in (initial_h, initial_c))
    r, p = r.astype(dt, copy=False), None if p is None else p.astype(dt, copy=False)

    def make_cell(d: int | None):
        return _lstm_cell(attrs, r if d is None else r[d], p if p is None or d is None else p[d])

    y, (y_h, y_c) = run_directions(attrs, x, w, bias, states, make_cell, lens)
    if attrs.layout:
        return y.transpose(2, 0, 1, 3).copy(), y_h.swapaxes(0, 1).copy(), y_c.swapaxes(0, 1).copy()
    return y, y_h, y_c
