"""Normalization ops: LRN (across channels), BatchNormalization (inference mode),
LayerNormalization (over the trailing axes) and InstanceNormalization (per sample and channel)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dlcc.runtime.kernels import axis_in, check, register_kernel

BLOCK = 1 << 14  # elements per block of rows normalized together: float64 scratch in L2
MAX_LRN_SIZE = 1 << 12  # the kernel adds one shifted slice per tap of the channel window


@dataclasses.dataclass(frozen=True)
class LRNAttrs:
    """ONNX LRN: a channel window of `size`, scaled by alpha / size, raised to -beta."""

    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    bias: float = 1.0

    def __post_init__(self) -> None:
        check(1 <= self.size <= MAX_LRN_SIZE, f"LRN size {self.size} outside 1..{MAX_LRN_SIZE}")
        finite = all(math.isfinite(v) for v in (self.alpha, self.beta, self.bias))
        check(finite, "LRN alpha, beta and bias must be finite")


@dataclasses.dataclass(frozen=True)
class BatchNormAttrs:
    """Variance epsilon of BatchNormalization."""

    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        check(0 <= self.epsilon < math.inf, f"epsilon {self.epsilon} is not finite and >= 0")


def _lrn_shape(attrs: LRNAttrs, x):
    check(len(x) >= 2, f"LRN takes [N, C, ...], got {x}")
    return (tuple(x),)


def _lrn_workspace(attrs: LRNAttrs, x) -> int:
    return 2 * math.prod(x) // x[1] * (x[1] + attrs.size)


@register_kernel("LRN", LRNAttrs, code=19, shape=_lrn_shape, workspace=_lrn_workspace)
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


def _batchnorm_shape(attrs: BatchNormAttrs, x, *params):
    check(len(x) >= 2 and len(params) == 4, "BatchNormalization takes x [N, C, ...] and 4 params")
    check(
        all(p is not None and math.prod(p) == x[1] for p in params),
        f"params {params} for {x[1]} channels",
    )
    return (tuple(x),)


def batchnorm_scale(scale: np.ndarray, var: np.ndarray, epsilon: float) -> np.ndarray:
    """k = scale / sqrt(var + epsilon): BatchNormalization's per-channel multiplier."""
    return scale / np.sqrt(var + var.dtype.type(epsilon))


def _batchnorm_grad(attrs: BatchNormAttrs, args, y, dy, want):
    """Inference form: the statistics and parameters are frozen, x gets dy * k."""
    x, scale, _, _, var = args
    k = batchnorm_scale(scale, var, attrs.epsilon).astype(dy.dtype)
    return [dy * k.reshape((1, -1) + (1,) * (x.ndim - 2))]


@register_kernel(
    "BatchNormalization", BatchNormAttrs, code=20, shape=_batchnorm_shape, grad=_batchnorm_grad
)
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
    k = batchnorm_scale(scale, var, attrs.epsilon).astype(x.dtype)
    y = x - mean.astype(x.dtype).reshape(bshape)
    y *= k.reshape(bshape)
    y += bias.astype(x.dtype).reshape(bshape)
    return y


@dataclasses.dataclass(frozen=True)
class LayerNormAttrs:
    """Normalize over axes [axis, rank); epsilon added to the variance."""

    axis: int = -1
    epsilon: float = 1e-5

    def __post_init__(self) -> None:
        check(0 <= self.epsilon < math.inf, f"epsilon {self.epsilon} is not finite and >= 0")


def _layer_norm_shape(attrs: LayerNormAttrs, x, scale, bias=None):
    axis = axis_in(attrs.axis, len(x))
    for name, p in (("scale", scale), ("bias", bias)):
        check(p is None or np.broadcast_shapes(tuple(p), x[axis:]) == x[axis:], f"{name} {p}")
    stats = tuple(x[:axis]) + (1,) * (len(x) - axis)
    return tuple(x), stats, stats


def _normalize(x2: np.ndarray, epsilon: float, scale: np.ndarray, bias: np.ndarray | None):
    """Each row of x2 [R, D] normalized, in float64: ((x - mean) * inv_std * scale + bias as
    x2's dtype, mean, inv_std), inv_std = 1 / sqrt(var + epsilon), the statistics [R, 1];
    scale and bias broadcast against [R, D]. In blocks of rows of about BLOCK elements, so
    the float64 passes run in cache, not over whole-tensor temporaries."""
    rows, d = x2.shape
    y = np.empty_like(x2)
    mean, inv_std = np.empty((rows, 1)), np.empty((rows, 1))
    per = max(1, BLOCK // max(d, 1))
    scratch = np.empty((min(per, rows), d))
    for lo in range(0, rows, per):
        hi = min(lo + per, rows)
        t, m, inv = scratch[: hi - lo], mean[lo:hi], inv_std[lo:hi]
        np.copyto(t, x2[lo:hi])
        np.add.reduce(t, axis=1, keepdims=True, out=m)  # np.mean's own sum and division,
        m /= d  # without its Python wrapper (~6 us a call)
        t -= m
        np.add.reduce(np.square(t), axis=1, keepdims=True, out=inv)
        inv /= d
        inv += epsilon
        np.sqrt(inv, out=inv)
        np.divide(1, inv, out=inv)
        t *= inv
        t *= scale if scale.shape[0] == 1 else scale[lo:hi]
        if bias is not None:
            t += bias if bias.shape[0] == 1 else bias[lo:hi]
        np.copyto(y[lo:hi], t, casting="same_kind")
    return y, mean, inv_std


@register_kernel("LayerNormalization", LayerNormAttrs, code=56, shape=_layer_norm_shape)
def layer_normalization(attrs: LayerNormAttrs, x, scale, bias=None):
    """(y, mean, inv_std): y = (x - mean) * inv_std * scale + bias over axes [axis, rank)"""
    axis = attrs.axis % x.ndim
    trailing = x.shape[axis:]
    rows, d = math.prod(x.shape[:axis]), math.prod(trailing)

    def flat(p):  # scale or bias over the trailing axes, as one row
        if p is None:
            return None
        return (p if p.shape == trailing else np.broadcast_to(p, trailing)).reshape(1, d)

    y, mean, inv_std = _normalize(x.reshape(rows, d), attrs.epsilon, flat(scale), flat(bias))
    stats = x.shape[:axis] + (1,) * (x.ndim - axis)
    return (
        y.reshape(x.shape),
        mean.astype(x.dtype).reshape(stats),
        inv_std.astype(x.dtype).reshape(stats),
    )


def _instance_norm_shape(attrs: BatchNormAttrs, x, scale, bias):
    check(len(x) >= 3, f"InstanceNormalization takes [N, C, spatial...], got {x}")
    check(tuple(scale) == tuple(bias) == (x[1],), f"scale {scale}, bias {bias} for {x[1]}")
    return (tuple(x),)


@register_kernel("InstanceNormalization", BatchNormAttrs, code=57, shape=_instance_norm_shape)
def instance_normalization(attrs: BatchNormAttrs, x, scale, bias) -> np.ndarray:
    """y = (x - mean) / sqrt(var + epsilon) * scale[c] + bias[c], per sample and channel"""
    n, c = x.shape[:2]
    rows = np.tile(scale, n).reshape(n * c, 1), np.tile(bias, n).reshape(n * c, 1)
    return _normalize(x.reshape(n * c, -1), attrs.epsilon, *rows)[0].reshape(x.shape)
