"""Normalization ops: LRN (across channels) and BatchNormalization (inference mode)."""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.runtime.kernels import register_kernel, same_shape


@dataclasses.dataclass(frozen=True)
class LRNAttrs:
    """ONNX LRN: a channel window of `size`, scaled by alpha / size, raised to -beta."""

    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    bias: float = 1.0


@dataclasses.dataclass(frozen=True)
class BatchNormAttrs:
    """Variance epsilon of BatchNormalization."""

    epsilon: float = 1e-5


@register_kernel("LRN", LRNAttrs, shape=same_shape)
def lrn(attrs: LRNAttrs, x: np.ndarray) -> np.ndarray:
    """y = x / (bias + alpha / size * sum_{c' in [c - (size-1)//2, c + size//2]} x[c']^2) ** beta"""
    before, after = (attrs.size - 1) // 2, attrs.size // 2
    c = x.shape[1]
    sq = np.zeros((x.shape[0], c + before + after, *x.shape[2:]), dtype=x.dtype)
    sq[:, before : before + c] = np.square(x)
    square_sum = sq[:, :c].copy()
    for k in range(1, attrs.size):  # one shifted slice per channel-window tap
        square_sum += sq[:, k : k + c]
    t = x.dtype.type
    return x / (t(attrs.bias) + t(attrs.alpha / attrs.size) * square_sum) ** t(attrs.beta)


@register_kernel("BatchNormalization", BatchNormAttrs, shape=same_shape)
def batch_normalization(
    attrs: BatchNormAttrs,
    x: np.ndarray,
    scale: np.ndarray,
    bias: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
) -> np.ndarray:
    """y = (x - mean) / sqrt(var + epsilon) * scale + bias, per channel (axis 1)"""
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    k = (scale / np.sqrt(var + var.dtype.type(attrs.epsilon))).astype(x.dtype)
    y = x - mean.astype(x.dtype).reshape(bshape)
    y *= k.reshape(bshape)
    y += bias.astype(x.dtype).reshape(bshape)
    return y
