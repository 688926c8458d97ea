"""What window ops (Conv's im2col, the windowed depthwise conv) read: the input as a
zero-padded NHWC copy, and strided views of it proven to stay inside their buffer."""

from __future__ import annotations

import numpy as np

from dlcc.errors import ExecutionError


def strided_view(base: np.ndarray, shape: tuple, strides: tuple) -> np.ndarray:
    """A read-only as_strided view of contiguous `base`, proven to stay inside its buffer.

    Every element of the view lies at byte offset sum(i_k * stride_k) with 0 <= i_k < shape_k;
    with non-negative strides, multiples of the item size, the largest is
    sum((shape_k - 1) * stride_k), which must leave room for one item. Any violation is an
    ExecutionError, never a read outside `base`.
    """
    aligned = all(s % base.itemsize == 0 for s in strides)
    if not (base.flags.c_contiguous and aligned) or min(shape) < 1 or min(strides) < 0:
        raise ExecutionError(f"strided view {shape} / {strides} of {base.shape} is not safe")
    last = sum((n - 1) * s for n, s in zip(shape, strides))
    if last + base.itemsize > base.nbytes:
        raise ExecutionError(f"strided view {shape} / {strides} reads past its {base.nbytes} B")
    view = np.ndarray(shape, base.dtype, base, 0, strides)  # as_strided costs 4x the call
    view.flags.writeable = False
    return view


def padded_nhwc(x: np.ndarray, pads, dtype=None) -> np.ndarray:
    """x [N, C, H, W] as a zero-padded NHWC copy (pads: top, left, bottom, right), of `dtype`
    (default x's): each window then gathers contiguous channel runs."""
    n, c, h, w = x.shape
    top, left, bottom, right = pads
    xp = np.zeros((n, h + top + bottom, w + left + right, c), dtype=dtype or x.dtype)
    xp[:, top : top + h, left : left + w] = x.transpose(0, 2, 3, 1)
    return xp
