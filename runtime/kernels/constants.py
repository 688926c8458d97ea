"""Values derived once from a bundle's constant tensors, kept as long as the tensor lives.

A matrix kernel rearranges or widens its weight on every call (Conv's filter matrix, the
float32 copy of an int8 weight for BLAS); for a bundle's weights, which never change, that
work is done once. The loader marks its decoded tensors with `mark_constant`; `derived`
caches only for marked tensors (by identity, released with the tensor), and for any other
array computes afresh, so kernels called by the passes on changing arrays are unaffected.
The cost is memory: an int8 weight keeps a float32 copy (4x its bytes) while it is in use;
the verifier counts the most these forms take against `Limits.tensor_bytes`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import numpy as np

_CONSTANT: dict[int, weakref.ref] = {}  # id -> the marked array
_DERIVED: dict[tuple[int, str], np.ndarray] = {}  # (id of a constant, kind) -> value


def _forget(key: int) -> None:
    _CONSTANT.pop(key, None)
    for k in [k for k in _DERIVED if k[0] == key]:
        del _DERIVED[k]


def mark_constant(array: np.ndarray) -> np.ndarray:
    """Declare `array` constant: read-only from now on, so derived values may be cached."""
    array.flags.writeable = False
    key = id(array)
    _CONSTANT[key] = weakref.ref(array, lambda _, key=key: _forget(key))
    return array


def is_constant(array: np.ndarray) -> bool:
    """Whether `array` itself was marked constant."""
    ref = _CONSTANT.get(id(array))
    return ref is not None and ref() is array


def derived(array: np.ndarray, kind: str, make: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """make(array), cached per constant `array` and `kind` (the result is itself constant);
    computed on every call for any other array."""
    if not is_constant(array):
        return make(array)
    key = (id(array), kind)
    value = _DERIVED.get(key)
    if value is None:
        value = _DERIVED[key] = mark_constant(np.asarray(make(array)))
    return value
