"""Comparisons, boolean logic, selection, arg-reductions and casts (ONNX semantics).

    compare   Equal Greater Less GreaterOrEqual LessOrEqual   a, b -> bool   (broadcasting)
    logic     Not (unary); And Or Xor (broadcasting)          bool -> bool
    select    Where(cond, x, y)                               cond ? x : y   (all three broadcast)
    reduce    ArgMax ArgMin                                   -> int64 indices along `axis`
    cast      Cast                                            float32 | int32 | int64 | bool

Gradients: Where passes dL/dy to x where cond holds and to y elsewhere. The others have no
rule: bool and integer values carry no gradient (passes/backprop.py), so they need none unless
one makes the logits; a Cast from float32 to float32 is never emitted (the frontend drops it).

int8: the comparisons refuse int8 operands. Two int8 buffers hold real values q * s with
scales of their own, so comparing q with q would be wrong whenever the scales differ, and a
dtype rule cannot see scales. The quantize pass never gives them int8 operands (they have no
`int8` trait, so codegen dequantizes what they read); a bundle that tries is refused by the
verifier. ArgMax/ArgMin take int8: the order of q equals the order of q * s for s > 0.
Where takes int8 x and y (a select moves values; exact when x, y and the output share one
scale, which codegen never emits on its own: Where has no `int8` trait either).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dlcc.runtime.kernels import (
    F32,
    I8,
    INDEX_DTYPES,
    axis_in,
    check,
    register_kernel,
)
from dlcc.runtime.kernels.elementwise import broadcast_shape, unbroadcast

BOOL, I64 = "bool", "int64"
COMPARABLE = (F32, *INDEX_DTYPES)  # what the comparisons order: float32 and int32/int64
SELECTABLE = (F32, I8, *INDEX_DTYPES, BOOL)  # what Where selects between
CASTABLE = (F32, *INDEX_DTYPES, BOOL)  # the dtypes dlcc holds outside the int8 path


# -- comparisons ------------------------------------------------------------------------------
def _compare_dtype(kinds: tuple[str, ...]):
    def rule(attrs, a: str | None, b: str | None) -> str:
        if a != b or a not in kinds:
            raise ValueError(
                f"compares two inputs of one dtype among {', '.join(kinds)}, got {a}, {b}"
            )
        return BOOL

    return rule


_COMPARISONS = {  # name: (code, numpy function, dtypes compared)
    "Equal": (67, np.equal, (*COMPARABLE, BOOL)),
    "Greater": (68, np.greater, COMPARABLE),
    "Less": (69, np.less, COMPARABLE),
    "GreaterOrEqual": (70, np.greater_equal, COMPARABLE),
    "LessOrEqual": (71, np.less_equal, COMPARABLE),
}


def _register_comparison(op: str, code: int, fn, kinds: tuple[str, ...]) -> None:
    def kernel(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return fn(a, b)

    kernel.__doc__ = f"y = {fn.__name__}(a, b)   (bool)"
    register_kernel(
        op, code=code, shape=broadcast_shape, dtype=_compare_dtype(kinds), broadcasting=True
    )(kernel)


for _op, (_code, _fn, _kinds) in _COMPARISONS.items():
    _register_comparison(_op, _code, _fn, _kinds)


# -- boolean logic ----------------------------------------------------------------------------
def bool_only(attrs, *dtypes: str | None) -> str:
    """Dtype rule of the logic ops: every input bool, and so the output."""
    if not dtypes or any(d != BOOL for d in dtypes):
        raise ValueError(f"takes bool inputs, got {', '.join(map(str, dtypes))}")
    return BOOL


@register_kernel("Not", code=72, dtype=bool_only)
def not_(attrs, x: np.ndarray) -> np.ndarray:
    """y = not x"""
    return np.logical_not(x)


_LOGIC = {"And": (73, np.logical_and), "Or": (74, np.logical_or), "Xor": (75, np.logical_xor)}


def _register_logic(op: str, code: int, fn) -> None:
    def kernel(attrs, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return fn(a, b)

    kernel.__doc__ = f"y = {fn.__name__}(a, b)"
    register_kernel(op, code=code, shape=broadcast_shape, dtype=bool_only, broadcasting=True)(
        kernel
    )


for _op, (_code, _fn) in _LOGIC.items():
    _register_logic(_op, _code, _fn)


# -- selection --------------------------------------------------------------------------------
def _where_shape(attrs, cond, x, y):
    return (tuple(np.broadcast_shapes(tuple(cond), tuple(x), tuple(y))),)


def _where_dtype(attrs, cond: str | None, x: str | None, y: str | None) -> str:
    check(cond == BOOL, f"Where's condition must be bool, not {cond}")
    if x != y or x not in SELECTABLE:
        raise ValueError(
            f"Where selects between two inputs of one dtype among {', '.join(SELECTABLE)}, "
            f"got {x}, {y}"
        )
    return x


def _where_grad(attrs, args, y, dy, want):
    """dL/dx = dy where cond, dL/dy = dy elsewhere (each summed over its broadcast axes)."""
    cond, a, b = args
    zero = np.zeros((), dy.dtype)
    return [
        None,
        unbroadcast(np.where(cond, dy, zero), np.shape(a)) if want[1] else None,
        unbroadcast(np.where(cond, zero, dy), np.shape(b)) if want[2] else None,
    ]


@register_kernel("Where", code=76, shape=_where_shape, dtype=_where_dtype, grad=_where_grad)
def where(attrs, cond: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """y = x where cond else y"""
    return np.where(cond, x, y)


# -- arg-reductions ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ArgAttrs:
    """The axis reduced, whether it stays with size 1, and which of tied extrema counts."""

    axis: int = 0
    keepdims: int = 1
    select_last_index: int = 0

    def __post_init__(self) -> None:
        check(self.keepdims in (0, 1), f"keepdims {self.keepdims} not 0 or 1")
        check(self.select_last_index in (0, 1), f"select_last_index {self.select_last_index}")


def _arg_shape(attrs: ArgAttrs, x):
    axis = axis_in(attrs.axis, len(x))
    if attrs.keepdims:
        return (tuple(1 if i == axis else d for i, d in enumerate(x)),)
    return (tuple(d for i, d in enumerate(x) if i != axis),)


def _arg_dtype(attrs: ArgAttrs, x: str | None, *rest: str | None) -> str:
    if x not in (F32, I8, *INDEX_DTYPES) or rest:
        raise ValueError(f"takes one float32, int8, int32 or int64 input, got {x}")
    return I64


def _arg_workspace(attrs: ArgAttrs, x) -> int:
    # numpy moves the reduced axis last in a contiguous copy of x
    return math.prod(x)


def _register_arg(op: str, code: int, fn) -> None:
    def kernel(attrs: ArgAttrs, x: np.ndarray) -> np.ndarray:
        axis, keep = attrs.axis % x.ndim, bool(attrs.keepdims)
        if not attrs.select_last_index:
            return fn(x, axis=axis, keepdims=keep).astype(np.int64)
        last = fn(np.flip(x, axis), axis=axis, keepdims=keep)
        return (x.shape[axis] - 1 - last).astype(np.int64)

    kernel.__doc__ = f"y = {fn.__name__}(x, axis) (int64; the last of ties with select_last_index)"
    register_kernel(
        op, ArgAttrs, code=code, shape=_arg_shape, dtype=_arg_dtype, workspace=_arg_workspace
    )(kernel)


_register_arg("ArgMax", 77, np.argmax)
_register_arg("ArgMin", 78, np.argmin)


# -- cast -------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CastAttrs:
    """The dtype cast to: float32, int32, int64 or bool."""

    to: str

    def __post_init__(self) -> None:
        check(self.to in CASTABLE, f"Cast to {self.to!r}; dlcc holds {', '.join(CASTABLE)}")


def _cast_dtype(attrs: CastAttrs, x: str | None, *rest: str | None) -> str:
    if x not in CASTABLE or rest:
        raise ValueError(f"casts one input among {', '.join(CASTABLE)}, got {x}")
    return attrs.to


@register_kernel("Cast", CastAttrs, code=79, dtype=_cast_dtype)
def cast(attrs: CastAttrs, x: np.ndarray) -> np.ndarray:
    """y = x as `to`: floats to integers truncate toward zero; to bool: x != 0"""
    with np.errstate(invalid="ignore", over="ignore"):  # NaN or out of range: undefined (ONNX)
        return x.astype(attrs.to)
