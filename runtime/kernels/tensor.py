"""Data-movement ops: Concat, Reshape, Flatten, Transpose (ONNX semantics, negative axes)."""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from dlcc.runtime.kernels import I8, any_dtype, axis_in, check, register_kernel, unary_grad


@dataclasses.dataclass(frozen=True)
class ConcatAttrs:
    """Axis the inputs are joined along."""

    axis: int


@dataclasses.dataclass(frozen=True)
class ReshapeAttrs:
    """Target shape: 0 copies the input dim at that position, -1 is inferred (allowzero=0),
    -2 - i copies dimension i of the optional second input (`like`, read for its shape only:
    how a symbolic dimension computed elsewhere reaches a Reshape)."""

    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class FlattenAttrs:
    """Input axes [0, axis) become the rows of the 2-D output, [axis, rank) the columns."""

    axis: int = 1


@dataclasses.dataclass(frozen=True)
class TransposeAttrs:
    """Output axis i is input axis perm[i]; an empty perm reverses the axes."""

    perm: tuple[int, ...] = ()


@functools.lru_cache(maxsize=1024)  # per layer and input shape: the checks format their messages
def reshape_target(
    in_shape: tuple[int, ...], shape: tuple[int, ...], like: tuple[int, ...] | None = None
) -> tuple[int, ...]:
    """Resolve a Reshape `shape` against `in_shape`: 0 -> in_shape[i], -2 - i -> like[i],
    -1 -> the rest."""
    check(
        all(d >= -1 or (like is not None and -2 - d < len(like)) for d in shape),
        f"Reshape {shape}: a dimension below -1 without a `like` input of that rank",
    )
    check(
        all(i < len(in_shape) for i, d in enumerate(shape) if d == 0),
        f"Reshape {shape}: 0 past the input's rank",
    )
    out = [in_shape[i] if d == 0 else like[-2 - d] if d < -1 else d for i, d in enumerate(shape)]
    if out.count(-1) > 1:
        raise ValueError(f"Reshape {shape}: more than one -1")
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        out[out.index(-1)] = math.prod(in_shape) // known if known else 0
    if math.prod(out) != math.prod(in_shape):
        raise ValueError(f"Reshape {tuple(in_shape)} -> {shape}: element counts differ")
    return tuple(out)


@functools.lru_cache(maxsize=1024)  # per layer and input shape: the checks format their messages
def flatten_shape_2d(in_shape: tuple[int, ...], axis: int) -> tuple[int, int]:
    """ONNX Flatten output: (prod(in_shape[:axis]), prod(in_shape[axis:])); axis in [-r, r]."""
    check(
        -len(in_shape) <= axis <= len(in_shape), f"Flatten axis {axis} outside rank {len(in_shape)}"
    )
    axis = axis + len(in_shape) if axis < 0 else axis
    return math.prod(in_shape[:axis]), math.prod(in_shape[axis:])


@functools.lru_cache(maxsize=1024)  # per layer and input shape: the checks format their messages
def _perm(attrs: TransposeAttrs, rank: int) -> tuple[int, ...]:
    if not attrs.perm:
        return tuple(range(rank))[::-1]
    perm = tuple(axis_in(p, rank, "perm axis") for p in attrs.perm)
    check(
        sorted(perm) == list(range(rank)), f"perm {attrs.perm} is not a permutation of {rank} axes"
    )
    return perm


def _concat_shape(attrs: ConcatAttrs, *shapes):
    shapes = [s for s in shapes if s is not None]
    check(len(shapes) >= 1, "Concat of no input")
    axis = axis_in(attrs.axis, len(shapes[0]))
    rest = [s[:axis] + s[axis + 1 :] for s in shapes]
    check(
        all(len(s) == len(shapes[0]) and r == rest[0] for s, r in zip(shapes, rest)),
        f"Concat of {shapes} along {axis}",
    )
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return (tuple(out),)


def _concat_dtype(attrs: ConcatAttrs, *dtypes):
    check(I8 not in dtypes, f"Concat takes no int8 inputs (their scales may differ): {dtypes}")
    return any_dtype(attrs, *dtypes)


def _concat_grad(attrs: ConcatAttrs, args, y, dy, want):
    present = [a for a in args if a is not None]
    parts = iter(np.split(dy, np.cumsum([a.shape[attrs.axis] for a in present])[:-1], attrs.axis))
    return [None if a is None else next(parts) for a in args]


_reshape_grad = unary_grad(lambda a, x, y, d: d.reshape(x.shape))


def _reshape_dtype(attrs: ReshapeAttrs, x: str, like: str | None = None) -> str:
    return any_dtype(attrs, x)  # `like` is read for its shape: any dtype


@register_kernel(
    "Concat", ConcatAttrs, code=15, shape=_concat_shape, dtype=_concat_dtype, grad=_concat_grad
)
def concat(attrs: ConcatAttrs, *xs: np.ndarray) -> np.ndarray:
    """y = the inputs joined along `axis`"""
    return np.concatenate([x for x in xs if x is not None], axis=attrs.axis)


@register_kernel(
    "Reshape",
    ReshapeAttrs,
    code=16,
    shape=lambda attrs, x, like=None: (reshape_target(tuple(x), attrs.shape, like),),
    dtype=_reshape_dtype,
    grad=lambda attrs, args, y, dy, want: [dy.reshape(args[0].shape), None][: len(args)],
    int8="same",
)
def reshape(attrs: ReshapeAttrs, x: np.ndarray, like: np.ndarray | None = None) -> np.ndarray:
    """y = x with shape reshape_target(x.shape, shape, like.shape), row-major order kept"""
    return x.reshape(reshape_target(x.shape, attrs.shape, None if like is None else like.shape))


@register_kernel(
    "Flatten",
    FlattenAttrs,
    dtype=any_dtype,
    code=17,
    shape=lambda attrs, x: (flatten_shape_2d(tuple(x), attrs.axis),),
    grad=_reshape_grad,
    int8="same",
)
def flatten(attrs: FlattenAttrs, x: np.ndarray) -> np.ndarray:
    """y[2-D] = x reshaped to (prod(shape[:axis]), prod(shape[axis:]))"""
    return x.reshape(flatten_shape_2d(x.shape, attrs.axis))


@register_kernel(
    "Transpose",
    TransposeAttrs,
    dtype=any_dtype,
    code=18,
    shape=lambda attrs, x: (tuple(x[p] for p in _perm(attrs, len(x))),),
    grad=unary_grad(lambda a, x, y, d: d.transpose(np.argsort(_perm(a, x.ndim)))),
    int8="same",
)
def transpose(attrs: TransposeAttrs, x: np.ndarray) -> np.ndarray:
    """y = x with axes permuted: y.shape[i] = x.shape[perm[i]]"""
    return np.ascontiguousarray(x.transpose(_perm(attrs, x.ndim)))
