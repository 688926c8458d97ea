"""Binary arithmetic with numpy (ONNX multidirectional) broadcasting: Add, Sub, Mul, Div."""

from __future__ import annotations

import numpy as np

from dlcc.runtime.kernels import NoAttrs, register_kernel


def broadcast_shape(attrs, a, b):
    """Shape function of a broadcasting binary op: np.broadcast_shapes(a, b)."""
    return (tuple(np.broadcast_shapes(tuple(a), tuple(b))),)


@register_kernel("Add", NoAttrs, shape=broadcast_shape, broadcasting=True)
def add(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a + b"""
    return np.add(a, b)


@register_kernel("Sub", NoAttrs, shape=broadcast_shape, broadcasting=True)
def sub(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a - b"""
    return np.subtract(a, b)


@register_kernel("Mul", NoAttrs, shape=broadcast_shape, broadcasting=True)
def mul(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a * b"""
    return np.multiply(a, b)


@register_kernel("Div", NoAttrs, shape=broadcast_shape, broadcasting=True)
def div(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a / b (truncating toward zero for integer tensors, as ONNX)"""
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(np.true_divide(a, b)).astype(a.dtype)
    return np.divide(a, b)
