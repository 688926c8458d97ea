"""Op semantics, written once: every target and every pass calls these kernels.

A kernel is registered for one canonical IR op name with a frozen dataclass of typed
attributes and a shape function:

    @register_kernel("LeakyRelu", LeakyReluAttrs, shape=same_shape)
    def leaky_relu(attrs: LeakyReluAttrs, x: np.ndarray) -> np.ndarray: ...

- `fn(attrs, *inputs)` takes numpy arrays (None for an absent optional input) and returns
  one array, or a tuple of arrays for a multi-output op (LSTM). Kernels are vectorized over
  every axis, the batch included; no Python loop runs per element.
- `shape(attrs, *input_shapes)` returns the tuple of output shapes, from input shapes
  (tuples of ints, None for an absent optional input), without touching data.

Modules in this package register on import; `load_all()` imports them once.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from dlcc.errors import ExecutionError

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class NoAttrs:
    """Attributes of an op that has none."""


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One op: its name, attribute type, implementation and shape function."""

    op: str
    attrs: type
    fn: Callable[..., Any]
    shape: Callable[..., tuple[Shape, ...]]

    def __call__(self, attrs: Any, *inputs: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Run the kernel; always returns a tuple of outputs."""
        out = self.fn(attrs, *inputs)
        return out if isinstance(out, tuple) else (out,)


_REGISTRY: dict[str, Kernel] = {}

# One module per op family; imported lazily so that registration never runs at import time
# of the package itself.
_MODULES = (
    "matrix", "activation", "pooling", "elementwise", "tensor", "normalization", "lstm", "indexing",
    "quant",
)  # fmt: skip


def same_shape(attrs: Any, x: Shape, *rest: Shape | None) -> tuple[Shape, ...]:
    """Shape function of ops whose single output has the shape of their first input."""
    return (tuple(x),)


def register_kernel(op: str, attrs: type = NoAttrs, shape: Callable = same_shape):
    """Decorator registering `fn` as the kernel of IR op `op`."""

    def wrap(fn: Callable) -> Callable:
        if op in _REGISTRY:
            raise ValueError(f"kernel {op!r} registered twice")
        _REGISTRY[op] = Kernel(op, attrs, fn, shape)
        return fn

    return wrap


def load_all() -> dict[str, Kernel]:
    """Import every kernel module (once) and return the registry, keyed by op name."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return _REGISTRY


def get_kernel(op: str) -> Kernel:
    """The kernel of `op`; an ExecutionError lists the known ops on a miss."""
    registry = load_all()
    if op not in registry:
        raise ExecutionError(f"no kernel for op {op!r}; known: {', '.join(sorted(registry))}")
    return registry[op]
