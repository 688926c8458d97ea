"""Reductions over axes: ReduceMean/Max/Min/Sum/L2/Prod, and LogSoftmax (ONNX semantics).

`axes` empty means every axis; `keepdims` keeps each reduced axis with size 1. The noop of
ONNX's `noop_with_empty_axes` is the frontend's (no node is emitted).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.runtime.kernels import axis_in, check, register_kernel


@dataclasses.dataclass(frozen=True)
class ReduceAttrs:
    """The axes reduced (empty: all), and whether they stay with size 1."""

    axes: tuple[int, ...] = ()
    keepdims: int = 1

    def __post_init__(self) -> None:
        check(self.keepdims in (0, 1), f"keepdims {self.keepdims} not 0 or 1")


def reduced_axes(attrs: ReduceAttrs, rank: int) -> tuple[int, ...]:
    """The reduced axes as 0..rank-1, checked in range and unique."""
    axes = tuple(axis_in(a, rank) for a in attrs.axes) if attrs.axes else tuple(range(rank))
    check(len(set(axes)) == len(axes), f"axes {attrs.axes} repeat")
    return axes


def _reduce_shape(attrs: ReduceAttrs, x):
    axes = reduced_axes(attrs, len(x))
    if attrs.keepdims:
        return (tuple(1 if i in axes else d for i, d in enumerate(x)),)
    return (tuple(d for i, d in enumerate(x) if i not in axes),)


_REDUCTIONS = {  # name: (code, fn(x, axes, keepdims))
    "ReduceMean": (49, lambda x, a, k: np.mean(x, axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceMax": (50, lambda x, a, k: np.max(x, axis=a, keepdims=k)),
    "ReduceMin": (51, lambda x, a, k: np.min(x, axis=a, keepdims=k)),
    "ReduceSum": (52, lambda x, a, k: np.sum(x, axis=a, keepdims=k, dtype=x.dtype)),
    "ReduceL2": (53, lambda x, a, k: np.sqrt(np.sum(x * x, axis=a, keepdims=k, dtype=x.dtype))),
    "ReduceProd": (54, lambda x, a, k: np.prod(x, axis=a, keepdims=k, dtype=x.dtype)),
}


def _register(op: str, code: int, fn) -> None:
    def kernel(attrs: ReduceAttrs, x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(x, reduced_axes(attrs, x.ndim), bool(attrs.keepdims)))

    kernel.__doc__ = f"y = {op}(x) over `axes`"
    register_kernel(op, ReduceAttrs, code=code, shape=_reduce_shape)(kernel)


for _op, (_code, _fn) in _REDUCTIONS.items():
    _register(_op, _code, _fn)


@dataclasses.dataclass(frozen=True)
class LogSoftmaxAttrs:
    """Axis LogSoftmax normalizes along (negative counts from the end)."""

    axis: int = -1


def _log_softmax_shape(attrs: LogSoftmaxAttrs, x):
    axis_in(attrs.axis, len(x))
    return (tuple(x),)


@register_kernel("LogSoftmax", LogSoftmaxAttrs, code=55, shape=_log_softmax_shape)
def log_softmax(attrs: LogSoftmaxAttrs, x: np.ndarray) -> np.ndarray:
    """y = x - max(x) - log(sum(exp(x - max(x)))) along `axis`"""
    z = x - x.max(axis=attrs.axis, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=attrs.axis, keepdims=True))
