"""A window op's taps as contiguous runs: images padded and split into the stride's phases.

Output (r, c) of a window op with strides (sh, sw) and dilations (dh, dw) reads, at kernel
tap (i, j), padded pixel (r*sh + i*dh, c*sw + j*dw). Split the padded image into the
stride's phases, phase (p, q) holding the padded pixels (p + a*sh, q + b*sw): the tap reads
pixel (r + i*dh // sh, c + j*dw // sw) of phase (i*dh % sh, j*dw % sw). Flattened, a tap
over the whole output map is one contiguous run of OH x (phase width) elements, shifted by
its offset; the columns past OW are dropped at the end. numpy runs an elementwise op over it
with an inner loop of hundreds of elements, where a rectangle per tap (or a strided view of
a padded copy) ran it over one output row at a time: 0.36-0.68x the time for depthwise
convs (runtime/kernels/depthwise.py), 0.23-0.8x for large padded stride-2 pools (pooling.py).
"""

from __future__ import annotations

import numpy as np


class TapRuns:
    """Blocks of up to `per` images [C, H, W], padded with `fill` and held in phases, for a
    window of `kernel` taps with `attrs`' strides, dilations and pads (top, left, bottom,
    right) and an output map of `out_hw`; `per` fills about `block` outputs of the runs."""

    def __init__(self, x_shape, kernel, attrs, out_hw, block: int, fill, dtype) -> None:
        n, c = x_shape[:2]
        (kh, kw), (sh, sw), (dh, dw) = kernel, attrs.strides, attrs.dilations
        self.top, self.left = attrs.pads[:2]
        self.oh, self.ow = out_hw
        rows, self.cols = _grid(x_shape, kernel, attrs, out_hw)
        self.per = min(n, max(1, block // (c * self.oh * self.cols)))
        self.taps = [(divmod(i * dh, sh), divmod(j * dw, sw)) for i in range(kh) for j in range(kw)]
        shape = (self.per, c, sh, sw, rows, self.cols)  # its pads keep `fill`: loads skip them
        self.phases = np.zeros(shape, dtype) if fill == 0 else np.full(shape, fill, dtype)
        self.flat = self.phases.reshape(self.per, c, sh, sw, rows * self.cols)

    def fold(self, x: np.ndarray, step) -> np.ndarray:
        """The output map [N, C, OH, OW] of x [N, C, H, W] (the phases' dtype): per block of
        images, `step(acc, k, run)` for each tap k in order over its run, into one result
        [B, C, OH * cols] that k = 0 writes first and the later taps update in place."""
        n, c = x.shape[:2]
        acc = np.empty((self.per, c, self.oh * self.cols), self.phases.dtype)
        out = np.empty((n, c, self.oh, self.ow), self.phases.dtype)
        for lo in range(0, n, self.per):
            block = x[lo : lo + self.per]
            self._load(block)
            a = acc[: len(block)]
            for k, run in enumerate(self._runs(len(block))):
                step(a, k, run)
            out[lo : lo + len(block)] = a.reshape(len(block), c, self.oh, self.cols)[..., : self.ow]
        return out

    def _load(self, x: np.ndarray) -> None:
        """Images x [B <= per, C, H, W] into the phases (cast to their dtype)."""
        sh, sw = self.phases.shape[2:4]
        for p in range(sh):  # input row k is padded row k + top: phase row (k + top) // sh
            k0 = (p - self.top) % sh
            for q in range(sw):
                l0 = (q - self.left) % sw
                part = x[:, :, k0::sh, l0::sw]
                r0, c0 = (k0 + self.top) // sh, (l0 + self.left) // sw
                rows, cols = slice(r0, r0 + part.shape[2]), slice(c0, c0 + part.shape[3])
                self.phases[: len(x), :, p, q, rows, cols] = part

    def _runs(self, count: int):
        """Each tap's run over the output maps of the first `count` images loaded, [B, C,
        OH * cols], in tap order (row-major over the kernel)."""
        for (a, p), (b, q) in self.taps:
            start = a * self.cols + b
            yield self.flat[:count, :, p, q, start : start + self.oh * self.cols]


def workspace(x_shape, kernel, attrs, out_hw) -> int:
    """The most elements a TapRuns over the whole batch holds: its phases and one result."""
    rows, cols = _grid(x_shape, kernel, attrs, out_hw)
    sh, sw = attrs.strides
    return x_shape[0] * x_shape[1] * cols * (rows * sh * sw + out_hw[0])


def _grid(x_shape, kernel, attrs, out_hw) -> tuple[int, int]:
    """(rows, columns) of each phase: the padded image, and the window's reach past it
    (ceil_mode), in whole strides."""
    h, w = x_shape[2:]
    (kh, kw), (sh, sw), (dh, dw) = kernel, attrs.strides, attrs.dilations
    top, left, bottom, right = attrs.pads
    cols = -(-max(w + left + right, (out_hw[1] - 1) * sw + (kw - 1) * dw + 1) // sw)
    rows = -(-max(h + top + bottom, (out_hw[0] - 1) * sh + (kh - 1) * dh + 1) // sh)
    return rows + 1, cols  # a spare row of padding: a run that starts b columns in ends b past
