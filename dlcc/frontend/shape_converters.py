"""Converters of the ops whose output shape is an input's value: Reshape, Squeeze, Unsqueeze,
Expand, ConstantOfShape, Slice, Range.

Their shape inputs are constants, but ones folded from symbolic dimensions vary between the
bindings (`dlcc.frontend.bindings`): a varying entry becomes a dimension the IR op copies from
its input or takes at run time from a value that holds it.
"""

from __future__ import annotations

import numpy as np
import onnx

from dlcc.frontend.bindings import bindings, columns, constant_columns, held, is_static
from dlcc.frontend.lowering import Builder, converter
from dlcc.ir import Value
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.tensor import ReshapeAttrs


@converter("Reshape", params=(1,))
def reshape(b: Builder, node, x, shape):
    if b.attrs.get("allowzero", 0) and 0 in shape.data:
        raise b.fail("Reshape with allowzero=1 and a zero dimension is not supported")
    targets = [shape.data, *(b.at_probes(shape) or [shape.data] * len(b.graph.symbols))]
    kernel = get_kernel("Reshape")

    def out_shape(probe: int | None, in_shape):
        target = targets[0 if probe is None else probe + 1].reshape(-1)
        return kernel.shape(ReshapeAttrs(tuple(int(d) for d in target)), in_shape)[0]

    return _reshape_to(b, x, out_shape)


@converter("Squeeze", "Unsqueeze", params=(1,))
def squeeze(b: Builder, node, x, axes=None):
    axes = b.ints(axes) if axes is not None else b.attrs.get("axes")
    if node.op_type == "Unsqueeze":
        return _reshape_to(b, x, lambda _, s: np.expand_dims(_view(s), axes).shape)
    return _reshape_to(b, x, lambda _, s: np.squeeze(_view(s), axes).shape)


def _view(shape) -> np.ndarray:
    """A zero-cost array of `shape`, for numpy's shape rules."""
    return np.broadcast_to(np.float32(0), shape)


def _reshape_to(b: Builder, x: Value, out_shape) -> list[Value]:
    """IR Reshape to `out_shape(probe, input_shape)` at every binding.

    A dimension that is the same at every binding is a constant; one equal to the input's at
    the same position copies it (0); a single other one is inferred (-1); more are copied
    from a value that holds them (-2 - axis of a `like` input: the Reshape's own input, or
    the latest value computed before it that does).
    """
    probes = bindings(b.graph) if x.probes else [None]
    try:
        outs = [tuple(out_shape(p, x.shape_at(p))) for p in probes]
    except ValueError as e:
        raise b.fail(f"cannot reshape {x.dims()}: {e}") from None
    wanted = list(zip(*outs))  # per output axis: its size at each binding
    own = columns(x, probes)
    target: list[int] = []
    free = []
    for axis, column in enumerate(wanted):
        if is_static(column):
            target.append(column[0])
        elif axis < len(own) and own[axis] == column:
            target.append(0)
        else:
            target.append(-1)
            free.append(axis)
    like, at = held(b, x, [c if a in free[1:] else None for a, c in enumerate(wanted)], probes)
    target = [t if a < 0 else -2 - a for t, a in zip(target, at)]
    return b.emit("Reshape", [x] if like is None else [x, like], shape=tuple(target))


@converter("Expand", params=(1,))
def expand(b: Builder, node, x, shape):
    """A constant target; entries that follow the symbols keep x's own dimension (1) or are
    taken at run time from a value that holds them (`shape_from`)."""
    moved = b.at_probes(shape)
    if moved is None:
        target = shape.data.reshape(-1).astype(np.int64)
        return b.emit("Expand", [x], shape=tuple(int(d) for d in target))
    probes = bindings(b.graph)
    wanted = constant_columns(shape.data, moved)
    rank = max(len(wanted), len(x.shape))
    own = [(1,) * len(probes)] * (rank - len(x.shape)) + columns(x, probes)
    offset = rank - len(wanted)
    free = [not is_static(c) and own[offset + k] != c for k, c in enumerate(wanted)]
    like, shape_from = held(b, x, [c if f else None for c, f in zip(wanted, free)], probes)
    fixed = tuple(c[0] if is_static(c) else 1 for c in wanted)
    return b.emit("Expand", [x] if like is None else [x, like], shape=fixed, shape_from=shape_from)


@converter("ConstantOfShape", params=(0,))
def constant_of_shape(b: Builder, node, shape):
    """A fill whose shape follows the symbols (static ones fold): its value expanded."""
    value = b.attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else onnx.numpy_helper.to_array(value)
    x = b.graph.constant(f"{b.name}.value", fill.reshape((1,) * shape.data.size))
    return expand(b, node, x, shape)


@converter("Slice", params=(1, 2, 3, 4))
def slice_(b: Builder, node, x, starts, ends, axes=None, steps=None):
    """Constant bounds; an end computed from a symbolic dimension is the whole axis, or that
    dimension taken at run time from a value that holds it (`ends_from`)."""
    starts = b.ints(starts)
    axes = b.ints(axes) if axes is not None else tuple(range(len(starts)))
    steps = b.ints(steps) if steps is not None else (1,) * len(starts)
    moved = b.at_probes(ends)
    if moved is None:
        return b.emit("Slice", [x], starts=starts, ends=_clamped(ends), axes=axes, steps=steps)
    probes = bindings(b.graph)
    wanted = constant_columns(ends.data, moved)[: len(axes)]
    sizes = columns(x, probes)
    whole = [all(e >= s for e, s in zip(c, sizes[a])) for c, a in zip(wanted, axes)]
    free = [not (w or is_static(c)) for c, w in zip(wanted, whole)]
    like, ends_from = held(b, x, [c if f else None for c, f in zip(wanted, free)], probes)
    final = tuple(np.iinfo(np.int64).max if w else c[0] for c, w in zip(wanted, whole))
    inputs = [x] if like is None else [x, like]
    return b.emit(
        "Slice", inputs, starts=starts, ends=final, axes=axes, steps=steps, ends_from=ends_from
    )


def _clamped(ends: Value) -> tuple[int, ...]:
    """Slice ends as ints; exporters write INT64_MAX for 'to the end', which Python clamps."""
    return tuple(int(v) for v in ends.data.reshape(-1))


@converter("Range", params=(0, 1, 2))
def range_(b: Builder, node, start, limit, delta):
    """A Range whose limit is a symbolic dimension (static ones fold): computed at run time
    from a value that holds that dimension."""
    first, step = float(b.static(start).data), float(b.static(delta).data)
    moved = b.at_probes(limit)
    if moved is None or limit.data.size != 1:
        raise b.fail("a Range's limit must be a scalar symbolic dimension here")
    probes = bindings(b.graph)
    like, (axis,) = held(b, b.graph.inputs[0], constant_columns(limit.data, moved), probes)
    dtype = str(start.data.dtype) if str(start.data.dtype) in ("int32", "int64") else "float32"
    return b.emit("Range", [like], start=first, delta=step, axis=axis, dtype=dtype)
