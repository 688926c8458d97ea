"""One converter per ONNX op type: ONNX node (attributes parsed once) -> IR nodes.

Converters receive IR values (constants carry `.data`) and return the values of the node's
outputs in order. ONNX attributes are parsed here and nowhere else, into the fields of the
kernel's typed dataclass, which `Builder.emit` builds (the dataclass checks its own domain).
The ops whose output shape is an input's value (Reshape, Slice, Expand, ...) are in
`shape_converters.py`; importing this module registers them too.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from dlcc.frontend import shape_converters  # noqa: F401  (registers the shape-op converters)
from dlcc.frontend.lowering import Builder, converter
from dlcc.ir import Value


# -- matrix engine ------------------------------------------------------------------------
@converter("Conv", params=(1, 2))
def conv(b: Builder, node, x, w, bias=None):
    if w.data.ndim not in (3, 4):
        raise b.fail(f"only 1-D and 2-D convolution are supported (weight rank {w.data.ndim})")
    geometry = _window(b, x, w.data.shape[2:])
    if w.data.ndim == 3:  # 1-D: the same conv on [N, C, 1, L] with a [M, C/G, 1, k] kernel
        w = b.graph.constant(w.name, w.data[:, :, None, :])
    (y,) = b.emit("Conv", [_lift(b, x), w, bias], **geometry, group=int(b.attrs.get("group", 1)))
    return _drop(b, y, len(x.shape))


@converter("ConvTranspose", params=(1, 2))
def conv_transpose(b: Builder, node, x, w, bias=None):
    if w.data.ndim not in (3, 4):
        raise b.fail(f"only 1-D and 2-D ConvTranspose is supported (weight rank {w.data.ndim})")
    one_d = w.data.ndim == 3
    kernel = w.data.shape[2:]
    ones = (1,) * len(kernel)
    strides = tuple(b.attrs.get("strides", ones))
    dilations = tuple(b.attrs.get("dilations", ones))
    extra = tuple(b.attrs.get("output_padding", (0,) * len(kernel)))
    pads = tuple(b.attrs.get("pads", (0,) * (2 * len(kernel))))
    shape = b.attrs.get("output_shape")
    auto = b.attrs.get("auto_pad", "NOTSET")
    if shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        # ONNX: the total padding that gives the wanted size; a negative one is output padding.
        sizes = zip(x.shape[2:], kernel, strides, dilations, extra)
        full = [s * (n - 1) + p + d * (k - 1) + 1 for n, k, s, d, p in sizes]
        wanted = (
            shape[-len(kernel) :]
            if shape is not None
            else [n * s for n, s in zip(x.shape[2:], strides)]
        )
        total = [max(f - o, 0) for f, o in zip(full, wanted)]
        extra = tuple(p + max(o - f, 0) for p, f, o in zip(extra, full, wanted))
        first = [t // 2 if auto == "SAME_UPPER" else t - t // 2 for t in total]
        pads = (*first, *(t - f for t, f in zip(total, first)))
    if one_d:
        w = b.graph.constant(w.name, w.data[:, :, None, :])
        strides, dilations, extra, pads = (
            (1, *strides),
            (1, *dilations),
            (0, *extra),
            (0, pads[0], 0, pads[1]),
        )
    (y,) = b.emit(
        "ConvTranspose",
        [_lift(b, x), w, bias],
        strides=strides,
        pads=pads,
        dilations=dilations,
        group=int(b.attrs.get("group", 1)),
        output_padding=extra,
    )
    return _drop(b, y, len(x.shape))


@converter("Gemm", params=(1, 2))
def gemm(b: Builder, node, a, w, c=None):
    if b.attrs.get("transA", 0):
        (a,) = b.emit("Transpose", [a], perm=(1, 0))
    weight = _transposed(w.data) if b.attrs.get("transB", 0) else w.data
    alpha, beta = b.attrs.get("alpha", 1.0), b.attrs.get("beta", 1.0)
    if alpha != 1.0 or b.attrs.get("transB", 0):
        suffix = ".T" if b.attrs.get("transB", 0) else ".scaled"
        if alpha != 1.0:
            weight = (alpha * weight).astype(w.data.dtype)
        w = b.graph.constant(w.name + suffix, weight)
    bias = None
    if c is not None:
        n = weight.shape[1]
        if c.data.size not in (1, n) or (c.data.ndim == 2 and c.data.shape[0] != 1):
            raise b.fail(f"bias C of shape {c.data.shape} is not broadcast over rows")
        data = np.broadcast_to(beta * c.data.reshape(-1), (n,)).astype(c.data.dtype)
        bias = c if beta == 1.0 and c.data.shape == (n,) else b.graph.constant(c.name, data)
    return b.emit("Dense", [a, w, bias])


def _transposed(a: np.ndarray, tile: int = 512) -> np.ndarray:
    """`a.T` (2-D) as a new C-ordered array, copied tile by tile: numpy's strided copy of a
    large transpose misses the cache (VGG-19's 400 MB fc6 took 2.0 s in a compile, tiled
    1.4 s, most of it the first touch of the new pages)."""
    out = np.empty(a.shape[::-1], a.dtype)
    for i in range(0, a.shape[1], tile):
        for j in range(0, a.shape[0], tile):
            out[i : i + tile, j : j + tile] = a[j : j + tile, i : i + tile].T
    return out


@converter("MatMul")
def matmul(b: Builder, node, a, w):
    """A 2-D constant right operand is a weight (Dense, on the matrix unit); anything else,
    two activations above all (attention), is a batched MatMul on the vector unit."""
    if w.is_constant and w.data.ndim == 2 and len(a.shape) >= 2:
        return b.emit("Dense", [a, w, None])
    return b.emit("MatMul", [a, w])


# -- vector unit ----------------------------------------------------------------------------
@converter(
    "Relu", "Sigmoid", "Tanh", "GlobalAveragePool", "GlobalMaxPool", "Sqrt", "Exp", "Log",
    "Neg", "Abs", "Reciprocal", "Floor", "Ceil", "Erf", "Sin", "Cos", "HardSwish", "Softplus",
    "Mish",
)  # fmt: skip
def unary(b: Builder, node, x):
    return b.emit(node.op_type, [x])


@converter("Add", "Sub", "Mul", "Div", "Pow", "PRelu")
def binary(b: Builder, node, x, y):
    return b.emit(node.op_type, [x, y])


@converter("Sum", "Max", "Min")
def variadic(b: Builder, node, *xs):
    """Sum, Max, Min of any number of inputs: a chain of the binary op."""
    op = {"Sum": "Add"}.get(node.op_type, node.op_type)
    acc = xs[0]
    for x in xs[1:]:
        (acc,) = b.emit(op, [acc, x])
    return [acc]


@converter(
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceProd", params=(1,)
)
def reduce(b: Builder, node, x, axes=None):
    """Axes from the attribute (opset < 18) or the constant second input (opset 18)."""
    listed = b.ints(axes) if axes is not None else tuple(b.attrs.get("axes", ()))
    if not listed and b.attrs.get("noop_with_empty_axes", 0):
        return [x]
    return b.emit(node.op_type, [x], axes=listed, keepdims=int(b.attrs.get("keepdims", 1)))


@converter("Pad", params=(1, 2, 3))
def pad(b: Builder, node, x, pads, value=None, axes=None):
    rank = len(x.shape)
    given = b.ints(pads)
    listed = b.ints(axes) if axes is not None else tuple(range(rank))
    if len(given) != 2 * len(listed):
        raise b.fail(f"{len(given)} pads for {len(listed)} axes")
    full = [0] * (2 * rank)
    for k, axis in enumerate(listed):
        if not -rank <= axis < rank:
            raise b.fail(f"axis {axis} outside rank {rank}")
        full[axis % rank], full[rank + axis % rank] = given[k], given[len(listed) + k]
    fill = 0.0 if value is None or value.data.size == 0 else float(value.data.reshape(-1)[0])
    mode = b.attrs.get("mode", "constant")
    return b.emit("Pad", [x], pads=tuple(full), mode=mode, value=fill)


@converter("Split", params=(1,))
def split(b: Builder, node, x, sizes=None):
    axis = int(b.attrs.get("axis", 0))
    if not -len(x.shape) <= axis < len(x.shape):
        raise b.fail(f"axis {axis} outside rank {len(x.shape)}")
    extent = x.shape[axis]
    if sizes is not None:
        pieces = b.ints(sizes)
    else:  # num_outputs (opset 18) or one per output: equal pieces, the last one smaller
        count = int(b.attrs.get("num_outputs", len(node.output)))
        step = -(-extent // count)
        pieces = tuple(min(step, extent - k * step) for k in range(count))
    return b.emit("Split", [x], axis=axis, sizes=pieces)


@converter("Tile", params=(1,))
def tile(b: Builder, node, x, repeats):
    return b.emit("Tile", [x], repeats=b.ints(repeats))


@converter("DepthToSpace")
def depth_to_space(b: Builder, node, x):
    blocksize, mode = int(b.attrs["blocksize"]), b.attrs.get("mode", "DCR")
    return b.emit("DepthToSpace", [x], blocksize=blocksize, mode=mode)


@converter("Resize", params=(1, 2, 3))
def resize(b: Builder, node, x, roi=None, scales=None, sizes=None):
    """Scales or sizes (constant; over `axes` when given) become the output shape."""
    for name, unsupported in (("antialias", 0), ("keep_aspect_ratio_policy", "stretch")):
        if b.attrs.get(name, unsupported) != unsupported:
            raise b.fail(f"{name}={b.attrs[name]!r} is not supported")
    rank = len(x.shape)
    axes = [a % rank for a in b.attrs.get("axes", range(rank))]
    full_scales, full_sizes = [1.0] * rank, [0] * rank  # an untouched axis: scale 1
    if sizes is not None and sizes.data.size:
        moved = b.at_probes(sizes)
        for k, axis in enumerate(axes):
            if moved is None:  # a fixed size: its scale is size / input at run time
                full_sizes[axis], full_scales[axis] = int(sizes.data.reshape(-1)[k]), 0.0
                continue
            # Sizes computed from symbolic dims (another tensor's H, W): one ratio to the input.
            pairs = [(sizes.data, x.shape)] + [(m, x.shape_at(p)) for p, m in enumerate(moved)]
            ratios = {float(out.reshape(-1)[k]) / shape[axis] for out, shape in pairs}
            if len(ratios) != 1:
                raise b.fail(f"output size of axis {axis} is no fixed multiple of the input's")
            full_scales[axis] = ratios.pop()
    elif scales is not None and scales.data.size:
        for axis, s in zip(axes, b.static(scales).data.reshape(-1).astype(float)):
            full_scales[axis] = float(s)
    else:
        raise b.fail("neither scales nor sizes is given")
    return b.emit(
        "Resize",
        [x],
        sizes=tuple(full_sizes),
        scales=tuple(full_scales),
        mode=b.attrs.get("mode", "nearest"),
        coordinate_transformation_mode=b.attrs.get("coordinate_transformation_mode", "half_pixel"),
        nearest_mode=b.attrs.get("nearest_mode", "round_prefer_floor"),
    )


@converter("LayerNormalization")
def layer_normalization(b: Builder, node, x, scale, bias=None):
    axis, epsilon = int(b.attrs.get("axis", -1)), float(b.attrs.get("epsilon", 1e-5))
    return b.emit("LayerNormalization", [x, scale, bias], axis=axis, epsilon=epsilon)


@converter("InstanceNormalization")
def instance_normalization(b: Builder, node, x, scale, bias):
    epsilon = float(b.attrs.get("epsilon", 1e-5))
    return b.emit("InstanceNormalization", [x, scale, bias], epsilon=epsilon)


@converter("LogSoftmax")
def log_softmax(b: Builder, node, x):
    return b.emit("LogSoftmax", [x], axis=int(b.attrs.get("axis", -1)))


@converter("HardSigmoid")
def hard_sigmoid(b: Builder, node, x):
    alpha, beta = float(b.attrs.get("alpha", 0.2)), float(b.attrs.get("beta", 0.5))
    return b.emit("HardSigmoid", [x], alpha=alpha, beta=beta)


@converter("Elu", "Selu", "Gelu")
def parametric(b: Builder, node, x):
    """Activations whose ONNX attributes are their dataclass fields, defaults included."""
    fields = {k: v for k, v in b.attrs.items() if k in ("alpha", "gamma", "approximate")}
    return b.emit(node.op_type, [x], **fields)


@converter("LeakyRelu")
def leaky_relu(b: Builder, node, x):
    return b.emit("LeakyRelu", [x], alpha=float(b.attrs.get("alpha", 0.01)))


@converter("Clip", params=(1, 2))
def clip(b: Builder, node, x, lo=None, hi=None):
    low = -math.inf if lo is None else float(lo.data)
    high = math.inf if hi is None else float(hi.data)
    return b.emit("Clip", [x], min=low, max=high)


@converter("Softmax")
def softmax(b: Builder, node, x):
    return b.emit("Softmax", [x], axis=int(b.attrs.get("axis", -1)))


@converter("MaxPool", "AveragePool")
def pool(b: Builder, node, x):
    kernel = tuple(b.attrs["kernel_shape"])
    if len(kernel) not in (1, 2):
        raise b.fail(f"only 1-D and 2-D pooling are supported (kernel {kernel})")
    (y,) = b.emit(
        node.op_type,
        [_lift(b, x)],
        kernel=(1, *kernel) if len(kernel) == 1 else kernel,
        **_window(b, x, kernel),
        ceil_mode=int(b.attrs.get("ceil_mode", 0)),
        count_include_pad=int(b.attrs.get("count_include_pad", 0)),
    )
    return _drop(b, y, len(x.shape))


def _window(b: Builder, x: Value, kernel: tuple[int, ...]) -> dict:
    """strides, pads, dilations of a 1-D or 2-D window op, as the 2-D kernels take them
    (a 1-D op runs on [N, C, 1, L]: height 1, no stride, no padding)."""
    ones = (1,) * len(kernel)
    strides = tuple(b.attrs.get("strides", ones))
    dilations = tuple(b.attrs.get("dilations", ones))
    pads = _pads(b, x.shape[2:], kernel, strides, dilations)
    if len(kernel) == 1:
        return {
            "strides": (1, *strides),
            "pads": (0, pads[0], 0, pads[1]),
            "dilations": (1, *dilations),
        }
    return {"strides": strides, "pads": pads, "dilations": dilations}


def _pads(b: Builder, spatial, kernel, strides, dilations) -> tuple[int, ...]:
    """Explicit pads (all begins, then all ends), resolving ONNX's auto_pad."""
    auto = b.attrs.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        return tuple(b.attrs.get("pads", (0,) * (2 * len(kernel))))
    if auto == "VALID":
        return (0,) * (2 * len(kernel))
    begins, ends = [], []
    for n, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        begin = total // 2 if auto == "SAME_UPPER" else total - total // 2
        begins.append(begin)
        ends.append(total - begin)
    return (*begins, *ends)


def _lift(b: Builder, x: Value) -> Value:
    """[N, C, L] -> [N, C, 1, L]; 4-D values pass."""
    return x if len(x.shape) != 3 else b.emit("Reshape", [x], shape=(0, 0, 1, -1))[0]


def _drop(b: Builder, y: Value, rank: int) -> list[Value]:
    """Back from [N, C, 1, L] to [N, C, L] when the op was 1-D."""
    return [y] if rank != 3 else b.emit("Reshape", [y], shape=(0, 0, -1))


@converter("LRN")
def lrn(b: Builder, node, x):
    a = b.attrs
    return b.emit(
        "LRN",
        [x],
        size=int(a["size"]),
        alpha=a.get("alpha", 1e-4),
        beta=a.get("beta", 0.75),
        bias=a.get("bias", 1.0),
    )


@converter("BatchNormalization", params=(1, 2, 3, 4))
def batchnorm(b: Builder, node, x, scale, bias, mean, var):
    if b.attrs.get("training_mode", 0):
        raise b.fail("training-mode BatchNormalization is not supported")
    epsilon = float(b.attrs.get("epsilon", 1e-5))
    low = int(np.count_nonzero(var.data + epsilon <= 0))
    if low:  # the kernel (and the Conv it may fold into) would divide by sqrt(<= 0)
        raise b.fail(f"variance {var.name!r} + epsilon is <= 0 in {low} channel(s)")
    return b.emit("BatchNormalization", [x, scale, bias, mean, var], epsilon=epsilon)[:1]


@converter("LSTM", params=(1, 2, 3, 4))
def lstm(b: Builder, node, x, w, r, bias=None, seq_lens=None, h0=None, c0=None, p=None):
    acts = b.attrs.get("activations")
    if acts and tuple(a.lower() for a in acts) not in (
        ("sigmoid", "tanh", "tanh"),
        ("sigmoid", "tanh", "tanh") * 2,
    ):
        raise b.fail(f"only the default activations are supported, not {acts}")
    h0, c0 = (_zero_state(b, v) for v in (h0, c0))
    return b.emit(
        "LSTM",
        [x, w, r, bias, seq_lens, h0, c0, p],
        hidden_size=int(b.attrs.get("hidden_size", r.data.shape[-1])),
        direction=b.attrs.get("direction", "forward"),
        clip=float(b.attrs.get("clip", 0.0)),
        input_forget=int(b.attrs.get("input_forget", 0)),
        layout=int(b.attrs.get("layout", 0)),
    )


@converter("GRU", params=(1, 2, 3, 4))
def gru(b: Builder, node, x, w, r, bias=None, seq_lens=None, h0=None):
    acts = b.attrs.get("activations")
    if acts and tuple(a.lower() for a in acts) not in (
        ("sigmoid", "tanh"),
        ("sigmoid", "tanh") * 2,
    ):
        raise b.fail(f"only the default activations are supported, not {acts}")
    return b.emit(
        "GRU",
        [x, w, r, bias, seq_lens, _zero_state(b, h0)],
        hidden_size=int(b.attrs.get("hidden_size", r.data.shape[-1])),
        direction=b.attrs.get("direction", "forward"),
        clip=float(b.attrs.get("clip", 0.0)),
        linear_before_reset=int(b.attrs.get("linear_before_reset", 0)),
        layout=int(b.attrs.get("layout", 0)),
    )


def _zero_state(b: Builder, state: Value | None) -> Value | None:
    """An all-zero constant initial state is the default one; other constants are refused."""
    if state is None or not state.is_constant:
        return state
    if not state.data.any():
        return None
    raise b.fail("a constant non-zero initial state is not supported")


# -- data movement ------------------------------------------------------------------------
@converter("Concat")
def concat(b: Builder, node, *xs):
    return b.emit("Concat", list(xs), axis=int(b.attrs["axis"]))


@converter("Transpose")
def transpose(b: Builder, node, x):
    perm = tuple(b.attrs.get("perm", range(len(x.shape) - 1, -1, -1)))
    return b.emit("Transpose", [x], perm=perm)


@converter("Flatten")
def flatten(b: Builder, node, x):
    return b.emit("Flatten", [x], axis=int(b.attrs.get("axis", 1)))


@converter("Gather")
def gather(b: Builder, node, x, indices):
    """Constant indices select (checked: none computed from symbolic dims); runtime ids
    (an integer input) look up an embedding table."""
    if indices.is_constant:
        b.ints(indices)
    return b.emit("Gather", [x, indices], axis=int(b.attrs.get("axis", 0)))


@converter("Identity", "Dropout", params=(1, 2))
def identity(b: Builder, node, x, ratio=None, training=None):
    """Inference: the identity. A Dropout in training mode (a bool input since opset 12)
    that drops anything is refused."""
    dropping = ratio is None or bool(ratio.data.any())  # ONNX's default ratio is 0.5
    if training is not None and training.data.any() and dropping:
        raise b.fail("training-mode Dropout is not supported")
    return [x]  # a Dropout mask or MaxPool Indices output stays undefined: readers are refused


# -- comparisons, logic, selection, arg-reductions, casts (kernels/logic.py) ---------------
@converter(
    "Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Not"
)  # fmt: skip
def logic(b: Builder, node, *xs):
    return b.emit(node.op_type, list(xs))


@converter("Where")
def where(b: Builder, node, cond, x, y):
    return b.emit("Where", [cond, x, y])


@converter("ArgMax", "ArgMin")
def arg_reduce(b: Builder, node, x):
    return b.emit(
        node.op_type,
        [x],
        axis=int(b.attrs.get("axis", 0)),
        keepdims=int(b.attrs.get("keepdims", 1)),
        select_last_index=int(b.attrs.get("select_last_index", 0)),
    )


# The ONNX element types dlcc holds, as the kernels name them.
_CAST_TARGETS = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


@converter("Cast")
def cast(b: Builder, node, x):
    to = b.attrs.get("to")
    if to not in _CAST_TARGETS:
        known = to in onnx.TensorProto.DataType.values()
        name = onnx.TensorProto.DataType.Name(to) if known else f"type {to}"
        raise b.fail(f"Cast to {name} is not supported; dlcc holds float32, int32, int64, bool")
    if _CAST_TARGETS[to] == x.plain_dtype:
        return [x]
    return b.emit("Cast", [x], to=_CAST_TARGETS[to])
