"""Binary arithmetic with numpy (ONNX multidirectional) broadcasting: Add, Sub, Mul, Div."""

from __future__ import annotations

import numpy as np

from dlcc.runtime.kernels import F32, INDEX_DTYPES, NoAttrs, register_kernel


def unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum `g` over the axes numpy broadcast an operand of `shape` along."""
    if g.ndim > len(shape):
        g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _binary_grad(da, db):
    """A broadcasting binary op's rule from its two partial derivatives (a, b, dy) -> grad."""

    def rule(attrs, args, y, dy, want):
        a, b = args
        return [
            unbroadcast(da(a, b, dy), np.shape(a)) if want[0] else None,
            unbroadcast(db(a, b, dy), np.shape(b)) if want[1] else None,
        ]

    return rule


def arithmetic(attrs, a: str, b: str) -> str:
    """Dtype rule of binary arithmetic: float32, or one integer dtype (index arithmetic)."""
    if a != b or a not in (F32, *INDEX_DTYPES):
        raise ValueError(f"takes two float32 or two int32/int64 inputs, got {a}, {b}")
    return a


def broadcast_shape(attrs, a, b):
    """Shape function of a broadcasting binary op: np.broadcast_shapes(a, b)."""
    return (tuple(np.broadcast_shapes(tuple(a), tuple(b))),)


@register_kernel(
    "Add",
    NoAttrs,
    code=11,
    shape=broadcast_shape,
    grad=_binary_grad(lambda a, b, d: d, lambda a, b, d: d),
    dtype=arithmetic,
    broadcasting=True,
)
def add(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a + b"""
    return np.add(a, b)


@register_kernel(
    "Sub",
    NoAttrs,
    code=12,
    shape=broadcast_shape,
    grad=_binary_grad(lambda a, b, d: d, lambda a, b, d: -d),
    dtype=arithmetic,
    broadcasting=True,
)
def sub(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a - b"""
    return np.subtract(a, b)


@register_kernel(
    "Mul",
    NoAttrs,
    code=13,
    shape=broadcast_shape,
    grad=_binary_grad(lambda a, b, d: d * b, lambda a, b, d: d * a),
    dtype=arithmetic,
    broadcasting=True,
)
def mul(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a * b"""
    return np.multiply(a, b)


@register_kernel(
    "Div",
    NoAttrs,
    code=14,
    shape=broadcast_shape,
    grad=_binary_grad(lambda a, b, d: d / b, lambda a, b, d: -d * a / (b * b)),
    dtype=arithmetic,
    broadcasting=True,
)
def div(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = a / b (truncating toward zero for integer tensors, as ONNX)"""
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(np.true_divide(a, b)).astype(a.dtype)
    return np.divide(a, b)
