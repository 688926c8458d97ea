"""Every runtime kernel against ONNX's own reference implementation (onnx.reference).

Each case builds a one-node ONNX model with onnx.helper, runs it with ReferenceEvaluator on
seeded random inputs, and checks the kernel's outputs (values, dtype) and its shape function.
Where onnx.reference is known to be wrong or to ignore an attribute (noted at each case),
onnxruntime is the oracle instead.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnx
import onnxruntime  # noqa: TID251 - an oracle for the cases onnx.reference gets wrong
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from dlcc.runtime.kernels import NoAttrs, get_kernel, load_all, matrix, pooling
from dlcc.runtime.kernels.activation import ClipAttrs, LeakyReluAttrs, SoftmaxAttrs
from dlcc.runtime.kernels.gru import GRUAttrs
from dlcc.runtime.kernels.indexing import GatherAttrs, SliceAttrs
from dlcc.runtime.kernels.layout import (
    DepthToSpaceAttrs,
    ExpandAttrs,
    PadAttrs,
    RangeAttrs,
    SplitAttrs,
    TileAttrs,
)
from dlcc.runtime.kernels.logic import ArgAttrs, CastAttrs
from dlcc.runtime.kernels.lstm import LSTMAttrs
from dlcc.runtime.kernels.matrix import ConvAttrs, ConvTransposeAttrs, conv_weight_matrix, im2col
from dlcc.runtime.kernels.normalization import BatchNormAttrs, LayerNormAttrs, LRNAttrs
from dlcc.runtime.kernels.pointwise import EluAttrs, GeluAttrs, HardSigmoidAttrs, SeluAttrs
from dlcc.runtime.kernels.pooling import PoolAttrs
from dlcc.runtime.kernels.quant import ScaleAttrs
from dlcc.runtime.kernels.reduce import LogSoftmaxAttrs, ReduceAttrs
from dlcc.runtime.kernels.resize import ResizeAttrs
from dlcc.runtime.kernels.tensor import ConcatAttrs, FlattenAttrs, ReshapeAttrs, TransposeAttrs

OPSET = 19
BATCHES = [1, 3]

POOL_FIELDS = ("kernel", "strides", "pads", "dilations", "ceil_mode", "count_include_pad")
EXPECTED_OPS = {
    "Dense": (NoAttrs, ()),
    "Conv": (ConvAttrs, ("strides", "pads", "dilations", "group")),
    "Relu": (NoAttrs, ()),
    "Sigmoid": (NoAttrs, ()),
    "Tanh": (NoAttrs, ()),
    "LeakyRelu": (LeakyReluAttrs, ("alpha",)),
    "Clip": (ClipAttrs, ("min", "max")),
    "Softmax": (SoftmaxAttrs, ("axis",)),
    "MaxPool": (PoolAttrs, POOL_FIELDS),
    "AveragePool": (PoolAttrs, POOL_FIELDS),
    "GlobalAveragePool": (NoAttrs, ()),
    "GlobalMaxPool": (NoAttrs, ()),
    "Add": (NoAttrs, ()),
    "Sub": (NoAttrs, ()),
    "Mul": (NoAttrs, ()),
    "Div": (NoAttrs, ()),
    "Concat": (ConcatAttrs, ("axis",)),
    "Reshape": (ReshapeAttrs, ("shape",)),
    "Flatten": (FlattenAttrs, ("axis",)),
    "Transpose": (TransposeAttrs, ("perm",)),
    "LRN": (LRNAttrs, ("size", "alpha", "beta", "bias")),
    "BatchNormalization": (BatchNormAttrs, ("epsilon",)),
    "LSTM": (LSTMAttrs, ("hidden_size", "direction", "clip", "input_forget", "layout")),
    "Gather": (GatherAttrs, ("axis",)),
    "Slice": (SliceAttrs, ("starts", "ends", "axes", "steps", "ends_from")),
    "Quantize": (ScaleAttrs, ("scale",)),
    "Dequantize": (ScaleAttrs, ("scale",)),
    "Lut": (NoAttrs, ()),
    **{op: (NoAttrs, ()) for op in ("Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Floor")},
    **{op: (NoAttrs, ()) for op in ("Ceil", "Erf", "Sin", "Cos", "HardSwish", "Softplus")},
    **{op: (NoAttrs, ()) for op in ("Mish", "PRelu", "Pow", "Max", "Min", "MatMul")},
    "HardSigmoid": (HardSigmoidAttrs, ("alpha", "beta")),
    "Elu": (EluAttrs, ("alpha",)),
    "Selu": (SeluAttrs, ("alpha", "gamma")),
    "Gelu": (GeluAttrs, ("approximate",)),
    **{
        op: (ReduceAttrs, ("axes", "keepdims"))
        for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL2", "ReduceProd")
    },
    "LogSoftmax": (LogSoftmaxAttrs, ("axis",)),
    "LayerNormalization": (LayerNormAttrs, ("axis", "epsilon")),
    "InstanceNormalization": (BatchNormAttrs, ("epsilon",)),
    "Pad": (PadAttrs, ("pads", "mode", "value")),
    "Split": (SplitAttrs, ("axis", "sizes")),
    "Expand": (ExpandAttrs, ("shape", "shape_from")),
    "Range": (RangeAttrs, ("start", "delta", "axis", "dtype")),
    "Tile": (TileAttrs, ("repeats",)),
    "DepthToSpace": (DepthToSpaceAttrs, ("blocksize", "mode")),
    "ConvTranspose": (
        ConvTransposeAttrs,
        ("strides", "pads", "dilations", "group", "output_padding"),
    ),
    "Resize": (
        ResizeAttrs,
        ("sizes", "scales", "mode", "coordinate_transformation_mode", "nearest_mode"),
    ),
    "GRU": (GRUAttrs, ("hidden_size", "direction", "clip", "linear_before_reset", "layout")),
    **{op: (NoAttrs, ()) for op in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual")},
    **{op: (NoAttrs, ()) for op in ("Not", "And", "Or", "Xor", "Where")},
    **{op: (ArgAttrs, ("axis", "keepdims", "select_last_index")) for op in ("ArgMax", "ArgMin")},
    "Cast": (CastAttrs, ("to",)),
}


# --- harness ---------------------------------------------------------------------------


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    """Seeded float32 normal samples of `shape`, times `scale`."""
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def onnx_model(nodes, inputs: dict[str, np.ndarray], outputs: list[str]) -> onnx.ModelProto:
    """A model over `nodes` whose graph inputs are `inputs` (name -> example array)."""
    g_in = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in inputs.items()
    ]
    g_out = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
    graph = helper.make_graph(nodes, "kernel_test", g_in, g_out)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9  # what onnxruntime accepts
    return model


def run_onnx(op, inputs, n_out=1, oracle="reference", **attrs) -> list[np.ndarray]:
    """Run one ONNX node `op` on positional `inputs` (None = absent optional input)."""
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    while names and not names[-1]:
        names.pop()
    outs = [f"out{i}" for i in range(n_out)]
    feeds = {n: x for n, x in zip(names, inputs, strict=False) if n}
    attrs = {k: v for k, v in attrs.items() if v is not None}
    model = onnx_model([helper.make_node(op, names, outs, **attrs)], feeds, outs)
    return run_model(model, feeds, oracle)


def run_model(model, feeds, oracle="reference") -> list[np.ndarray]:
    """Outputs of `model` on `feeds` from onnx.reference (default) or onnxruntime."""
    if oracle == "reference":
        return list(ReferenceEvaluator(model).run(None, feeds))
    sess = onnxruntime.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return sess.run(None, feeds)


def check(op: str, attrs, inputs, expected) -> None:
    """Kernel `op` on `inputs` equals `expected` (values, dtype) and so does its shape fn."""
    kernel = get_kernel(op)
    got = kernel(attrs, *inputs)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        e = np.asarray(e)
        assert g.dtype == e.dtype, (g.dtype, e.dtype)
        assert g.shape == e.shape, (g.shape, e.shape)
        scale = max(1.0, float(np.abs(e).max(initial=0.0)))
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6 * scale)
    shapes = [None if x is None else tuple(x.shape) for x in inputs]
    assert kernel.shape(attrs, *shapes) == tuple(e.shape for e in expected)


# --- registry --------------------------------------------------------------------------


def test_load_all_registers_exactly_the_op_set():
    registry = load_all()
    assert set(registry) == set(EXPECTED_OPS)
    for op, (cls, fields) in EXPECTED_OPS.items():
        k = registry[op]
        assert k.op == op and k.attrs is cls
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
        assert tuple(f.name for f in dataclasses.fields(cls)) == fields


# --- matrix ----------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("lead,bias", [((), True), ((), False), ((4,), True), ((2, 5), False)])
def test_dense(batch, lead, bias):
    rng = np.random.default_rng(1)
    x, w = rand(rng, batch, *lead, 7), rand(rng, 7, 5)
    b = rand(rng, 5) if bias else None
    nodes = [helper.make_node("MatMul", ["x", "w"], ["xw" if bias else "y"])]
    feeds = {"x": x, "w": w}
    if bias:
        nodes.append(helper.make_node("Add", ["xw", "b"], ["y"]))
        feeds["b"] = b
    expected = run_model(onnx_model(nodes, feeds, ["y"]), feeds)
    check("Dense", NoAttrs(), [x, w, b], expected)


CONV_CASES = [
    # C, M, kernel, strides, pads, dilations, group, (H, W), bias
    (3, 4, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, (8, 8), True),
    (3, 5, (7, 7), (2, 2), (3, 3, 3, 3), (1, 1), 1, (15, 15), True),
    (4, 6, (3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 2, (9, 9), False),
    (6, 6, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 6, (7, 7), True),
    (6, 12, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 6, (8, 8), False),
    (6, 9, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 3, (5, 5), True),
    (4, 4, (3, 2), (2, 1), (1, 0, 2, 1), (2, 2), 1, (10, 9), True),
    (2, 3, (5, 5), (3, 2), (2, 2, 2, 2), (1, 2), 1, (11, 12), False),
    (8, 16, (1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1, (6, 6), True),
    (6, 4, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, (1, 1), True),  # a 1x1 map: the input
    (5, 7, (1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, (4, 6), True),  # pointwise: x is the columns
]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"C{c[0]}M{c[1]}k{c[2]}g{c[6]}")
def test_conv(batch, case):
    c, m, k, strides, pads, dil, group, (h, w), bias = case
    rng = np.random.default_rng(2)
    x, wt = rand(rng, batch, c, h, w), rand(rng, m, c // group, *k)
    b = rand(rng, m) if bias else None
    attrs = ConvAttrs(strides, pads, dil, group)
    expected = run_onnx(
        "Conv",
        [x, wt, b],
        kernel_shape=list(k),
        strides=list(strides),
        pads=list(pads),
        dilations=list(dil),
        group=group,
    )
    check("Conv", attrs, [x, wt, b], expected)


@pytest.mark.parametrize("per", [1, 2])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"C{c[0]}M{c[1]}k{c[2]}g{c[6]}")
def test_conv_in_batch_chunks(case, per, monkeypatch):
    """A batch of 5 in chunks of `per` images (the last one short): the float result is
    onnxruntime's, the int8 sums those of one product over the whole batch, bit for bit."""
    c, m, k, strides, pads, dil, group, (h, w), _ = case
    rng = np.random.default_rng(5)
    x, wt = rand(rng, 5, c, h, w), rand(rng, m, c // group, *k)
    xi = rng.integers(-128, 128, x.shape).astype(np.int8)
    wi = rng.integers(-127, 128, wt.shape).astype(np.int8)
    attrs = ConvAttrs(strides, pads, dil, group)
    whole = [matrix.conv(attrs, xi, wi), matrix.conv_accumulators(attrs, xi, wi)]
    oh, ow = matrix.conv_geometry(x.shape, wt.shape, attrs)
    monkeypatch.setattr(matrix, "PATCH_BYTES", 0)
    monkeypatch.setattr(matrix, "PATCH_ROWS", per * oh * ow)
    expected = run_onnx(
        "Conv", [x, wt], kernel_shape=list(k), strides=list(strides), pads=list(pads),
        dilations=list(dil), group=group,
    )  # fmt: skip
    check("Conv", attrs, [x, wt, None], expected)
    assert np.array_equal(matrix.conv(attrs, xi, wi), whole[0])
    assert np.array_equal(matrix.conv_accumulators(attrs, xi, wi), whole[1])


def test_im2col_layout_is_scale_sim_gemm():
    """patches[g] @ weights[g] is the conv of group g: M = N*OH*OW rows, K = kh*kw*C/G."""
    rng = np.random.default_rng(3)
    x, w = rand(rng, 2, 6, 7, 7), rand(rng, 9, 2, 3, 3)
    attrs = ConvAttrs((2, 2), (1, 1, 1, 1), (1, 1), 3)
    patches, weights = im2col(x, (3, 3), attrs), conv_weight_matrix(w, 3)
    assert patches.shape == (3, 2 * 4 * 4, 3 * 3 * 2) and weights.shape == (3, 18, 3)
    y = get_kernel("Conv")(attrs, x, w, None)[0]
    gemm = (patches @ weights).reshape(3, 2, 4, 4, 3).transpose(1, 0, 4, 2, 3).reshape(y.shape)
    np.testing.assert_allclose(gemm, y, rtol=1e-5, atol=1e-5)


# --- activation ------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh"])
def test_unary(batch, op):
    x = rand(np.random.default_rng(4), batch, 3, 4, 5, scale=6.0)
    check(op, NoAttrs(), [x], run_onnx(op, [x]))


@pytest.mark.parametrize("op", ["HardSwish", "HardSigmoid"])
def test_piecewise_linear_activations_are_onnxruntimes_bit_for_bit(op):
    """alpha * x + beta, clipped (times x): the spec's float32 operations, in its order."""
    x = rand(np.random.default_rng(9), 4, 2500, scale=4.0)
    attrs = HardSigmoidAttrs() if op == "HardSigmoid" else NoAttrs()
    (expected,) = run_onnx(op, [x], oracle="onnxruntime")
    assert np.array_equal(get_kernel(op).fn(attrs, x), expected)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("alpha", [0.01, 0.2, 1.5])
def test_leaky_relu(batch, alpha):
    x = rand(np.random.default_rng(5), batch, 3, 4, 5)
    check("LeakyRelu", LeakyReluAttrs(alpha), [x], run_onnx("LeakyRelu", [x], alpha=alpha))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("lo,hi", [(0.0, 6.0), (-0.5, math.inf), (-math.inf, 0.3), (-1.0, 1.0)])
def test_clip(batch, lo, hi):
    x = rand(np.random.default_rng(6), batch, 3, 4, 5, scale=3.0)
    bound = [None if math.isinf(v) else np.array(v, np.float32) for v in (lo, hi)]
    check("Clip", ClipAttrs(lo, hi), [x], run_onnx("Clip", [x, *bound]))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("shape,axis", [((10,), -1), ((10,), 1), ((3, 4, 5), 0), ((3, 4), -2)])
def test_softmax(batch, shape, axis):
    x = rand(np.random.default_rng(7), batch, *shape, scale=20.0)
    check("Softmax", SoftmaxAttrs(axis), [x], run_onnx("Softmax", [x], axis=axis))


# --- pooling ---------------------------------------------------------------------------

POOL_CASES = [
    # kernel, strides, pads, dilations, ceil_mode, count_include_pad, (H, W)
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0, 0, (8, 8)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0, 0, (9, 9)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0, 1, (7, 7)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 1, 0, (8, 8)),
    ((3, 3), (2, 2), (0, 0, 0, 0), (1, 1), 1, 1, (8, 8)),
    ((2, 2), (2, 2), (1, 1, 1, 1), (1, 1), 1, 1, (7, 7)),  # last window would start in pad
    ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 0, 1, (6, 6)),
    ((2, 3), (2, 1), (0, 1, 1, 0), (2, 1), 0, 0, (9, 8)),
    ((3, 3), (2, 2), (1, 1, 1, 1), (2, 2), 1, 0, (10, 10)),
    ((3, 2), (2, 3), (1, 0, 2, 1), (1, 2), 1, 1, (9, 11)),
]

# onnx.reference is wrong here (onnxruntime is the oracle): for strides >= 3 with ceil_mode it
# shifts AveragePool windows by half the ceil overhang; for MaxPool with strides = dilations
# = 1 it adds the pads twice in ceil_mode and reads pads as (top, bottom, left, right).
POOL_CASES_ORT = [
    ((3, 3), (3, 3), (0, 0, 0, 0), (1, 1), 1, 0, (7, 8)),
    ((3, 2), (3, 3), (1, 0, 0, 1), (2, 2), 1, 1, (8, 7)),
    ((2, 2), (1, 1), (1, 1, 1, 1), (1, 1), 1, 0, (7, 7)),
    ((3, 3), (1, 1), (0, 1, 2, 1), (1, 1), 0, 1, (7, 6)),
]


def _pool_check(op, batch, case, oracle):
    k, s, pads, dil, ceil, cip, (h, w) = case
    x = rand(np.random.default_rng(8), batch, 3, h, w)
    extra = {"count_include_pad": cip} if op == "AveragePool" else {}
    expected = run_onnx(
        op,
        [x],
        oracle=oracle,
        kernel_shape=list(k),
        strides=list(s),
        pads=list(pads),
        dilations=list(dil),
        ceil_mode=ceil,
        **extra,
    )
    check(op, PoolAttrs(k, s, pads, dil, ceil, cip), [x], expected)


@pytest.mark.parametrize("runs_from", [None, 0])  # 0: padded strided pools over phase runs
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool(batch, op, case, runs_from, monkeypatch):
    if runs_from is not None:
        monkeypatch.setattr(pooling, "RUNS_FROM", runs_from)
    _pool_check(op, batch, case, "reference")


@pytest.mark.parametrize("runs_from", [None, 0])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("case", POOL_CASES_ORT, ids=str)
def test_pool_vs_onnxruntime(batch, op, case, runs_from, monkeypatch):
    if runs_from is not None:
        monkeypatch.setattr(pooling, "RUNS_FROM", runs_from)
    _pool_check(op, batch, case, "onnxruntime")


@pytest.mark.parametrize("case", POOL_CASES + POOL_CASES_ORT, ids=str)
def test_pool_over_phase_runs_is_bit_identical(case, monkeypatch):
    """The same maxima (int8 and float) and float sums over phase runs as over strided views."""
    k, s, pads, dil, ceil, cip, (h, w) = case
    attrs = PoolAttrs(k, s, pads, dil, ceil, cip)
    rng = np.random.default_rng(11)
    xs = [rand(rng, 3, 4, h, w), rng.integers(-128, 128, (3, 4, h, w)).astype(np.int8)]
    ops = [("MaxPool", x) for x in xs] + [("AveragePool", xs[0])]
    views = [get_kernel(op).fn(attrs, x) for op, x in ops]
    monkeypatch.setattr(pooling, "RUNS_FROM", 0)
    for (op, x), expected in zip(ops, views):
        assert np.array_equal(get_kernel(op).fn(attrs, x), expected, equal_nan=True), op


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(batch, op):
    x = rand(np.random.default_rng(9), batch, 4, 5, 6)
    check(op, NoAttrs(), [x], run_onnx(op, [x]))


# --- elementwise -----------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize(
    "sa,sb", [((3, 4), (3, 4)), ((3, 4, 5), (5,)), ((3, 1, 5), (4, 1)), ((1, 1), (2, 3)), ((), ())]
)
def test_binary(batch, op, sa, sb):
    rng = np.random.default_rng(10)
    a = rand(rng, batch, *sa)
    b = rand(rng, *sb)
    if op == "Div":
        b = np.where(np.abs(b) < 0.1, np.float32(0.5), b)
    check(op, NoAttrs(), [a, b], run_onnx(op, [a, b]))
    check(op, NoAttrs(), [b, a], run_onnx(op, [b, a]))


# --- tensor ----------------------------------------------------------------------------


N = -1  # stands for the batch size in a shape


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "shapes,axis",
    [
        ([(N, 2, 3), (N, 4, 3)], 1),
        ([(N, 2, 3), (N, 2, 1), (N, 2, 5)], -1),
        ([(2, N, 3), (4, N, 3)], 0),
        ([(N, 3), (N, 3)], -2),
        ([(N, 2, 2)], 1),
    ],
)
def test_concat(batch, shapes, axis):
    rng = np.random.default_rng(11)
    xs = [rand(rng, *(batch if d == N else d for d in s)) for s in shapes]
    check("Concat", ConcatAttrs(axis), xs, run_onnx("Concat", xs, axis=axis))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "shape,target",
    [((2, 3, 4), (0, -1)), ((2, 3, 4), (0, 4, 6)), ((6, 2), (-1,)), ((2, 3, 4), (0, 3, 2, -1))],
)
def test_reshape(batch, shape, target):
    x = rand(np.random.default_rng(12), batch, *shape)
    expected = run_onnx("Reshape", [x, np.array(target, np.int64)])
    check("Reshape", ReshapeAttrs(target), [x], expected)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("axis", [0, 1, 2, 4, -1, -3])
def test_flatten(batch, axis):
    x = rand(np.random.default_rng(13), batch, 2, 3, 4)
    check("Flatten", FlattenAttrs(axis), [x], run_onnx("Flatten", [x], axis=axis))


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (3, 2, 1, 0), (1, 0, 2, 3), ()])
def test_transpose(batch, perm):
    x = rand(np.random.default_rng(14), batch, 2, 3, 4)
    expected = run_onnx("Transpose", [x], perm=list(perm) or None)
    check("Transpose", TransposeAttrs(perm), [x], expected)


# --- normalization ---------------------------------------------------------------------


def _lrn_reference(x, **attrs):
    """onnx.reference's LRN loops `for c in range(N)` (the batch) where it means channels, so
    it is right only when N == C: feed it the batch in chunks of exactly C images."""
    n, c = x.shape[:2]
    padded = np.concatenate([x, np.zeros((-n % c, *x.shape[1:]), x.dtype)])
    chunks = [run_onnx("LRN", [padded[i : i + c]], **attrs)[0] for i in range(0, len(padded), c)]
    return [np.concatenate(chunks)[:n]]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "c,size,alpha,beta,bias",
    [
        (5, 3, 1e-4, 0.75, 1.0),
        (6, 5, 2e-2, 0.75, 2.0),
        (4, 2, 0.5, 0.5, 1.0),
        (3, 1, 1.0, 1.0, 0.5),
    ],
)
def test_lrn(batch, c, size, alpha, beta, bias):
    x = rand(np.random.default_rng(15), batch, c, 4, 5, scale=3.0)
    expected = _lrn_reference(x, size=size, alpha=alpha, beta=beta, bias=bias)
    check("LRN", LRNAttrs(size, alpha, beta, bias), [x], expected)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("spatial", [(), (5,), (4, 5), (2, 3, 4)])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_batch_normalization(batch, spatial, eps):
    rng = np.random.default_rng(16)
    x = rand(rng, batch, 4, *spatial)
    scale, bias, mean = rand(rng, 4), rand(rng, 4), rand(rng, 4)
    var = np.abs(rand(rng, 4)) + np.float32(0.1)
    inputs = [x, scale, bias, mean, var]
    expected = run_onnx("BatchNormalization", inputs, epsilon=eps)
    check("BatchNormalization", BatchNormAttrs(eps), inputs, expected)


# --- lstm ------------------------------------------------------------------------------


def _lstm_inputs(rng, batch, seq, d_in, hs, n_dir, layout, bias, peep, init, lens=None):
    x = rand(rng, *((batch, seq) if layout else (seq, batch)), d_in)
    w, r = rand(rng, n_dir, 4 * hs, d_in, scale=0.5), rand(rng, n_dir, 4 * hs, hs, scale=0.5)
    b = rand(rng, n_dir, 8 * hs, scale=0.5) if bias else None
    state_shape = (batch, n_dir, hs) if layout else (n_dir, batch, hs)
    h0 = rand(rng, *state_shape) if init else None
    c0 = rand(rng, *state_shape) if init else None
    p = rand(rng, n_dir, 3 * hs, scale=0.5) if peep else None
    return [x, w, r, b, lens, h0, c0, p]


def _lstm_check(attrs: LSTMAttrs, inputs, oracle):
    expected = run_onnx(
        "LSTM",
        inputs,
        n_out=3,
        oracle=oracle,
        hidden_size=attrs.hidden_size,
        direction=attrs.direction,
        layout=attrs.layout,
        clip=attrs.clip or None,
        input_forget=attrs.input_forget,
    )
    check("LSTM", attrs, inputs, expected)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(
    "layout,bias,peep,init",
    [
        (0, True, True, True),
        (0, False, False, False),
        (1, True, True, True),
        (1, True, False, False),
    ],
)
def test_lstm(batch, direction, layout, bias, peep, init):
    n_dir = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(17)
    inputs = _lstm_inputs(rng, batch, 5, 3, 4, n_dir, layout, bias, peep, init)
    _lstm_check(LSTMAttrs(4, direction, 0.0, 0, layout), inputs, "reference")


# onnx.reference ignores clip, input_forget and sequence_lens: onnxruntime is the oracle.
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize(
    "clip,input_forget,ragged", [(0.5, 0, False), (0.0, 1, False), (0.0, 0, True), (0.7, 1, True)]
)
def test_lstm_vs_onnxruntime(batch, direction, clip, input_forget, ragged):
    n_dir = 2 if direction == "bidirectional" else 1
    rng = np.random.default_rng(18)
    lens = np.array([5, 2, 4][:batch] if ragged else [5] * batch, np.int32)
    inputs = _lstm_inputs(rng, batch, 5, 3, 4, n_dir, 0, True, True, True, lens)
    _lstm_check(LSTMAttrs(4, direction, clip, input_forget, 0), inputs, "onnxruntime")


# --- indexing --------------------------------------------------------------------------


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "axis,indices", [(0, np.array(-1)), (1, np.array([2, 0])), (-1, np.array([[0, 1], [3, 3]]))]
)
def test_gather(batch, axis, indices):
    x = rand(np.random.default_rng(21), batch, 3, 4)
    expected = run_onnx("Gather", [x, indices.astype(np.int64)], axis=axis)
    check("Gather", GatherAttrs(axis), [x, indices], expected)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize(
    "starts,ends,axes,steps",
    [
        ((0,), (2,), (1,), (1,)),
        ((-1,), (-(2**63),), (2,), (-1,)),
        ((1, 0), (2**63 - 1, 3), (1, -1), (2, 1)),
        ((5,), (9,), (2,), (1,)),
    ],
)
def test_slice(batch, starts, ends, axes, steps):
    x = rand(np.random.default_rng(22), batch, 5, 4)
    params = [np.array(v, np.int64) for v in (starts, ends, axes, steps)]
    expected = run_onnx("Slice", [x, *params])
    check("Slice", SliceAttrs(starts, ends, axes, steps), [x], expected)


@pytest.mark.parametrize("k", [1, 1000, 1024, 1025, 3000])
def test_integer_matmul_is_exact_through_float32(k):
    """Worst-case int8 operands (all -128 or 127): float32 blocks of EXACT_K stay exact."""
    from dlcc.runtime.kernels.matrix import exact_matmul

    rng = np.random.default_rng(k)
    a = rng.choice(np.array([-128, 127, -127], np.int8), size=(3, k))
    b = rng.choice(np.array([-128, 127], np.int8), size=(k, 5))
    expected = a.astype(np.int64) @ b.astype(np.int64)
    got = exact_matmul(a, b)
    assert got.dtype == np.int32 and np.array_equal(got, expected)
    a[:] = b[:] = -128  # every product 2^14: the largest partial sums
    assert np.array_equal(exact_matmul(a, b), a.astype(np.int64) @ b.astype(np.int64))


def test_erf_matches_the_standard_library():
    import math

    from dlcc.runtime.kernels.pointwise import erf

    x = np.linspace(-6, 6, 2001).astype(np.float32)
    expected = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert np.abs(erf(x) - expected).max() < 3e-7


@pytest.mark.parametrize("act", ["HardSwish", "Gelu", "Mish", "Elu", "HardSigmoid", "Softplus"])
def test_new_activations_fuse_and_run_on_the_integer_path(tmp_path, act):
    """Dense -> activation -> Dense: fused into ACTIVATE (float), a 256-entry table (int8)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    import dlcc
    from dlcc.api import load_bytes
    from dlcc.formats import isa
    from dlcc.runtime.kernels import code_of

    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal(s).astype(np.float32) / 3 for s in ((8, 16), (16, 4)))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node(act, ["h"], ["a"]),
        helper.make_node("MatMul", ["a", "w2"], ["y"]),
    ]
    io = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", d])
        for n, d in (("x", 8), ("y", 4))
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        io[:1],
        io[1:],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    x = rng.standard_normal((256, 8)).astype(np.float32)
    (expected,) = ort.InferenceSession(path).run(None, {"x": x})
    float_bundle = dlcc.compile(path)
    assert any(
        isinstance(i, isa.Activate) and i.function == code_of(act) for i in float_bundle.program
    )
    (got,) = load_bytes(float_bundle.to_bytes()).run(x).values()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    int8 = load_bytes(dlcc.compile(path, passes="-O1", calibration={"x": x}).to_bytes())
    (q,) = int8.run(x).values()
    assert np.corrcoef(q.ravel(), expected.ravel())[0, 1] > 0.99
