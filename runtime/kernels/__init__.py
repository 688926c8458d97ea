"""Op semantics, written once: every target, every pass and the verifier call these records.

A kernel is registered for one canonical IR op name with a frozen dataclass of typed
attributes, a shape function and a dtype rule:

    @register_kernel("LeakyRelu", LeakyReluAttrs, code=4, pointwise=True, int8="table")
    def leaky_relu(attrs: LeakyReluAttrs, x: np.ndarray) -> np.ndarray: ...

- `fn(attrs, *inputs)` takes numpy arrays (None for an absent optional input) and returns
  one array, or a tuple of arrays for a multi-output op (LSTM). Kernels are vectorized over
  every axis, the batch included; no Python loop runs per element.
- `shape(attrs, *input_shapes)` returns the tuple of output shapes, from input shapes
  (tuples of ints, None for an absent optional input), without touching data. It raises
  ValueError on any input the kernel cannot run correctly: the verifier relies on it, so
  every precondition of `fn` on shapes and attributes is checked here.
- `dtype(attrs, *input_dtypes)` returns the dtype of every output (ValueError otherwise).
- `grad(attrs, inputs, y, dy, want)` is the gradient beside the forward: per input, dL/dinput
  (None where `want` is False or the input is not differentiable), given the inputs, the
  (first) output y and dL/dy; None for an op retraining cannot pass through.
- `workspace(attrs, *input_shapes)` bounds the elements of the kernel's temporaries beyond
  its inputs and outputs (padded copies, im2col patches), for the verifier's memory limit.
- Attribute dataclasses check their own domain in `__post_init__` (strides >= 1, ...).
- `code`: the op's stable function code in the instruction stream (VECTOR / ACTIVATE); 0 is
  NONE, the identity. Codes are never reused, so old bundles keep their meaning.
- Traits the passes and codegen ask instead of keeping op-name lists of their own:
  `pointwise` (a unary elementwise function: any layout; the Activate unit can apply it after
  a matrix op), `broadcasting` (a binary elementwise op, multidirectional broadcasting),
  `per_channel` (each output channel from the same input channel alone, e.g. pooling),
  `homogeneous` (f(a x) = a f(x) for a > 0), and `int8`: "same" (runs on int8 values, the
  output keeping the input's scale; the default dtype rule then admits int8), "table"
  (computed from int8 to int8 through a 256-entry lookup table) or "matrix" (an int8 x int8
  -> int32 product on the systolic array, its weight int8 too: dlcc/lowering_int8.py).
- `weights`: the inputs that hold a learned weight when constant (`WeightInput`: which
  input, the axis of its output channels), what the weight passes compress. An op without an
  int8 kernel for them stores them compressed all the same and computes in float32.

Modules in this package register on import; `load_all()` imports them once.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import typing
from collections.abc import Callable
from typing import Any

import numpy as np

from dlcc.errors import ExecutionError

Shape = tuple[int, ...]
F32, I8, I32 = "float32", "int8", "int32"
INDEX_DTYPES = ("int32", "int64")
VALUE_DTYPES = (F32, I8, *INDEX_DTYPES, "bool")


@dataclasses.dataclass(frozen=True)
class NoAttrs:
    """Attributes of an op that has none."""


def float_only(attrs: Any, *dtypes: str | None) -> str:
    """Dtype rule of float ops: every present input float32, and so the output."""
    if any(d not in (None, F32) for d in dtypes):
        raise ValueError(f"takes float32 inputs, got {', '.join(map(str, dtypes))}")
    return F32


def float_or_int8(attrs: Any, x: str, *rest: str | None) -> str:
    """Dtype rule of ops that run on int8 values unchanged (data movement, max, Relu)."""
    if x not in (F32, I8) or any(d is not None for d in rest):
        raise ValueError(f"takes one float32 or int8 input, got {', '.join(map(str, (x, *rest)))}")
    return x


def any_dtype(attrs: Any, x: str, *rest: str | None) -> str:
    """Dtype rule of pure data movement (reshape, slice, concat, ...): one input of any
    dtype a buffer holds (masks and ids move too), kept; further inputs the same or absent."""
    if x not in VALUE_DTYPES or any(d not in (None, x) for d in rest):
        raise ValueError(f"moves one dtype, got {', '.join(map(str, (x, *rest)))}")
    return x


def unary_grad(dx: Callable) -> Callable:
    """The gradient rule of a one-input op from dx(attrs, x, y, dy) -> dL/dx."""
    return lambda attrs, args, y, dy, want: [dx(attrs, args[0], y, dy)]


def same_shape(attrs: Any, x: Shape, *rest: Shape | None) -> tuple[Shape, ...]:
    """Shape function of ops whose single output has the shape of their first input."""
    if rest:
        raise ValueError(f"takes one input, got {1 + len(rest)}")
    return (tuple(x),)


def no_workspace(attrs: Any, *shapes: Shape | None) -> int:
    """Workspace of kernels that allocate nothing beyond their outputs' size."""
    return 0


def axis_in(axis: int, rank: int, what: str = "axis") -> int:
    """`axis` (negative counts from the end) as 0..rank-1; ValueError when out of range."""
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} outside a rank-{rank} tensor")
    return axis % rank


@dataclasses.dataclass(frozen=True)
class WeightInput:
    """An input holding a learned weight when constant: `index` among the op's inputs, `role`
    its ONNX name, and the axis of its output channels (per-channel int8 scales run along it)."""

    index: int
    role: str
    channel_axis: int


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One op: its name, attribute type, implementation, shape and dtype rules, traits."""

    op: str
    attrs: type
    fn: Callable[..., Any]
    shape: Callable[..., tuple[Shape, ...]]
    dtype: Callable[..., str]
    workspace: Callable[..., int]
    grad: Callable[..., list] | None = None
    code: int | None = None
    pointwise: bool = False
    broadcasting: bool = False
    per_channel: bool = False
    homogeneous: bool = False
    int8: str | None = None  # "same" | "table" | "matrix" | None
    weights: tuple[WeightInput, ...] = ()

    def __call__(self, attrs: Any, *inputs: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Run the kernel; always returns a tuple of outputs."""
        out = self.fn(attrs, *inputs)
        return out if isinstance(out, tuple) else (out,)

    def typed_attrs(self, record: tuple[tuple[str, Any], ...]) -> Any:
        """The attributes from a record's (name, value) pairs, type- and domain-checked.

        A field the record leaves out takes its default; raises ValueError naming the field
        at fault (unknown, repeated, mistyped, out of domain, or required and missing).
        """
        names = [name for name, _ in record]
        hints = _hints(self.attrs)
        unknown = sorted(set(names) - set(hints)) or sorted(
            {n for n in names if names.count(n) > 1}
        )
        if unknown:
            raise ValueError(f"{self.op}: unknown or repeated attribute(s) {', '.join(unknown)}")
        args = {name: _coerce(name, hints[name], value) for name, value in record}
        fields = dataclasses.fields(self.attrs)
        missing = [
            f.name for f in fields if f.name not in args and f.default is dataclasses.MISSING
        ]
        if missing:
            raise ValueError(f"{self.op}: missing attribute(s) {', '.join(missing)}")
        return self.attrs(**args)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """`value` as the annotated type `hint` (int, float, str, tuples of them) or ValueError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, tuple):
            raise ValueError(f"attribute {name}: expected a tuple, got {value!r}")
        if args[-1] is not Ellipsis and len(args) != len(value):
            raise ValueError(f"attribute {name}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(name, args[0], v) for v in value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is int and type(value) is int and -(1 << 63) <= value < 1 << 63:
        return value
    if hint is str and type(value) is str:
        return value
    raise ValueError(f"attribute {name}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def check(condition: bool, message: str) -> None:
    """Raise ValueError(message) unless `condition`: attribute-domain checks read as rules."""
    if not condition:
        raise ValueError(message)


_REGISTRY: dict[str, Kernel] = {}

# One module per op family; imported lazily so that registration never runs at import time
# of the package itself.
_MODULES = (
    "matrix", "activation", "pooling", "elementwise", "tensor", "normalization", "lstm", "indexing",
    "quant", "pointwise", "reduce", "layout", "resize", "gru", "logic",
)  # fmt: skip


def register_kernel(
    op: str,
    attrs: type = NoAttrs,
    shape: Callable = same_shape,
    dtype: Callable | None = None,
    workspace: Callable = no_workspace,
    grad: Callable | None = None,
    code: int | None = None,
    **traits,
):
    """Decorator registering `fn` as the kernel of IR op `op` (traits: see the module doc)."""

    def wrap(fn: Callable) -> Callable:
        if op in _REGISTRY or any(code is not None and k.code == code for k in _REGISTRY.values()):
            raise ValueError(f"kernel {op!r} or code {code} registered twice")
        if code is not None and not 1 <= code <= 255:
            raise ValueError(f"kernel {op!r}: function code {code} outside 1..255")
        rule = dtype or (float_or_int8 if traits.get("int8") == "same" else float_only)
        _REGISTRY[op] = Kernel(op, attrs, fn, shape, rule, workspace, grad, code, **traits)
        return fn

    return wrap


@functools.cache
def load_all() -> dict[str, Kernel]:
    """Import every kernel module (once) and return the registry, keyed by op name."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return _REGISTRY


NONE = 0  # the function code of the identity (an ACTIVATE that only adds the bias)


@functools.cache
def _by_code() -> dict[int, Kernel]:
    return {k.code: k for k in load_all().values() if k.code is not None}


def kernel_at(code: int) -> Kernel | None:
    """The kernel whose function code is `code` (None for NONE or an unknown code)."""
    return _by_code().get(code)


def code_of(op: str) -> int:
    """The function code of `op` (ExecutionError for an unknown op or one without a code)."""
    code = get_kernel(op).code
    if code is None:
        raise ExecutionError(f"op {op!r} has no function code: the matrix unit runs it")
    return code


@functools.cache  # a hit never changes (an op registers once); a miss raises, uncached
def get_kernel(op: str) -> Kernel:
    """The kernel of `op`; an ExecutionError lists the known ops on a miss."""
    registry = load_all()
    if op not in registry:
        raise ExecutionError(f"no kernel for op {op!r}; known: {', '.join(sorted(registry))}")
    return registry[op]
