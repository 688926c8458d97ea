"""Comparisons, logic, Where, ArgMax/ArgMin and Cast (runtime/kernels/logic.py).

The kernels against numpy; their shape and dtype rules refusing what they could not run
(int8 operands of a comparison above all); the bool dtype through the frontend, the bundle
and the verifier; and the int8 path, which must keep these ops on float values.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlcc
from dlcc.errors import BundleFormatError, DlccError, ExecutionError, FrontendError
from dlcc.formats import isa
from dlcc.formats.bundle import BundleFile
from dlcc.frontend import import_onnx
from dlcc.runtime.kernels import NoAttrs, code_of, get_kernel
from dlcc.runtime.kernels.logic import ArgAttrs, CastAttrs
from dlcc.runtime.loader import bind_bundle

RNG = np.random.default_rng(7)
NONE = NoAttrs()
COMPARISONS = {
    "Equal": np.equal,
    "Greater": np.greater,
    "Less": np.less,
    "GreaterOrEqual": np.greater_equal,
    "LessOrEqual": np.less_equal,
}
LOGIC = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}
BROADCASTS = [((3, 4, 5), (3, 4, 5)), ((3, 4, 5), (5,)), ((1, 4, 1), (3, 1, 5)), ((2, 3), ())]


def ints(shape, dtype) -> np.ndarray:
    """Small integers, so that ties (equal elements) are frequent."""
    return RNG.integers(-3, 4, shape).astype(dtype)


def run(op: str, attrs, *inputs):
    """Kernel `op` on `inputs`, its result checked against its own shape and dtype rules."""
    kernel = get_kernel(op)
    (y,) = kernel(attrs, *inputs)
    assert kernel.shape(attrs, *(x.shape for x in inputs)) == (y.shape,)
    assert kernel.dtype(attrs, *(str(x.dtype) for x in inputs)) == str(y.dtype)
    return y


# -- kernels against numpy --------------------------------------------------------------------
@pytest.mark.parametrize("op", COMPARISONS)
@pytest.mark.parametrize("dtype", ["float32", "int32", "int64"])
@pytest.mark.parametrize("a_shape,b_shape", BROADCASTS)
def test_comparisons(op, dtype, a_shape, b_shape):
    a, b = ints(a_shape, dtype), ints(b_shape, dtype)
    y = run(op, NONE, a, b)
    assert y.dtype == np.bool_
    np.testing.assert_array_equal(y, COMPARISONS[op](a, b))


def test_equal_takes_bools_too():
    a, b = RNG.random((4, 5)) > 0.5, RNG.random(5) > 0.5
    np.testing.assert_array_equal(run("Equal", NONE, a, b), a == b)


@pytest.mark.parametrize("op", LOGIC)
@pytest.mark.parametrize("a_shape,b_shape", BROADCASTS)
def test_logic(op, a_shape, b_shape):
    a, b = RNG.random(a_shape) > 0.5, RNG.random(b_shape) > 0.5
    np.testing.assert_array_equal(run(op, NONE, a, b), LOGIC[op](a, b))


def test_not():
    x = RNG.random((3, 4)) > 0.5
    np.testing.assert_array_equal(run("Not", NONE, x), ~x)


@pytest.mark.parametrize("dtype", ["float32", "int8", "int32", "int64", "bool"])
def test_where_broadcasts_all_three(dtype):
    cond = RNG.random((1, 4, 1)) > 0.5
    x, y = ints((3, 1, 5), dtype), ints((5,), dtype)
    got = run("Where", NONE, cond, x, y)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.where(cond, x, y))


@pytest.mark.parametrize("op,fn", [("ArgMax", np.argmax), ("ArgMin", np.argmin)])
@pytest.mark.parametrize("dtype", ["float32", "int8", "int32", "int64"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_reductions(op, fn, dtype, axis, keepdims, last):
    x = ints((3, 4, 5), dtype)  # values in -3..3: many ties
    y = run(op, ArgAttrs(axis, keepdims, last), x)
    assert y.dtype == np.int64
    n = x.shape[axis]
    want = n - 1 - fn(np.flip(x, axis), axis=axis) if last else fn(x, axis=axis)
    np.testing.assert_array_equal(y, np.expand_dims(want, axis) if keepdims else want)


@pytest.mark.parametrize("source", ["float32", "int32", "int64", "bool"])
@pytest.mark.parametrize("to", ["float32", "int32", "int64", "bool"])
def test_cast(source, to):
    x = (RNG.standard_normal((4, 5)) * 3).astype(source)
    y = run("Cast", CastAttrs(to), x)
    assert y.dtype == np.dtype(to)
    np.testing.assert_array_equal(y, x.astype(to))


def test_cast_truncates_toward_zero_and_keeps_quiet_on_nan():
    x = np.array([-2.7, -0.5, 0.5, 2.7, np.nan, np.inf], np.float32)
    with np.errstate(all="raise"):
        y = run("Cast", CastAttrs("int64"), x)
        b = run("Cast", CastAttrs("bool"), x)
    np.testing.assert_array_equal(y[:4], [-2, 0, 0, 2])
    np.testing.assert_array_equal(b, [True, True, True, True, True, True])


# -- what the rules refuse --------------------------------------------------------------------
@pytest.mark.parametrize("op", [*COMPARISONS, *LOGIC])
def test_binary_shapes_must_broadcast(op):
    with pytest.raises(ValueError):
        get_kernel(op).shape(NONE, (3, 4), (3,))


def test_where_shapes_must_broadcast():
    with pytest.raises(ValueError):
        get_kernel("Where").shape(NONE, (3, 4), (3, 4), (2, 1, 3))


@pytest.mark.parametrize(
    "attrs,shape",
    [(ArgAttrs(axis=3), (2, 3, 4)), (ArgAttrs(axis=-4), (2, 3, 4)), (ArgAttrs(), ())],
)
def test_arg_axis_outside_the_rank(attrs, shape):
    with pytest.raises(ValueError, match="axis"):
        get_kernel("ArgMax").shape(attrs, shape)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ArgAttrs(keepdims=2),
        lambda: ArgAttrs(select_last_index=-1),
        lambda: CastAttrs("float16"),
        lambda: CastAttrs("int8"),
    ],
)
def test_attributes_out_of_domain(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("op", COMPARISONS)
@pytest.mark.parametrize(
    "a,b",
    [
        ("int8", "int8"),  # q vs q of two scales: meaningless, refused
        ("float32", "int8"),
        ("float32", "int64"),
        ("int32", "int64"),
        ("uint8", "uint8"),
    ],
)
def test_comparisons_refuse_int8_and_mixed_dtypes(op, a, b):
    with pytest.raises(ValueError, match="one dtype"):
        get_kernel(op).dtype(NONE, a, b)


@pytest.mark.parametrize("op", ["Greater", "Less", "GreaterOrEqual", "LessOrEqual"])
def test_orderings_refuse_bools(op):
    with pytest.raises(ValueError):
        get_kernel(op).dtype(NONE, "bool", "bool")


@pytest.mark.parametrize(
    "op,dtypes",
    [
        ("Not", ("float32",)),
        ("And", ("bool", "float32")),
        ("Or", ("int8", "int8")),
        ("Xor", ("int64", "bool")),
        ("Where", ("float32", "float32", "float32")),  # the condition must be bool
        ("Where", ("bool", "float32", "int64")),
        ("Where", ("bool", "uint8", "uint8")),
        ("ArgMax", ("bool",)),
        ("ArgMin", ("uint8",)),
        ("Cast", ("int8",)),  # an int8 activation needs its scale: Dequantize, not Cast
        ("Cast", ("uint8",)),
    ],
)
def test_dtype_rules_refuse(op, dtypes):
    attrs = CastAttrs("float32") if op == "Cast" else get_kernel(op).attrs()
    with pytest.raises(ValueError):
        get_kernel(op).dtype(attrs, *dtypes)


@pytest.mark.parametrize(
    "op,dtypes",
    [
        ("Relu", ("bool",)),
        ("Sigmoid", ("bool",)),
        ("Add", ("bool", "bool")),
        ("Softmax", ("bool",)),
        ("Quantize", ("bool",)),
        ("Concat", ("bool", "float32")),
    ],
)
def test_float_ops_refuse_bools(op, dtypes):
    with pytest.raises(ValueError, match="bool"):
        get_kernel(op).dtype(None, *dtypes)


@pytest.mark.parametrize("op", ["Reshape", "Transpose", "Slice", "Expand", "Concat", "Split"])
def test_data_movement_moves_masks_and_ids(op):
    for dtype in ("bool", "int64", "int32", "float32"):
        assert get_kernel(op).dtype(None, dtype) == dtype


def test_where_gradient_splits_dy_by_the_condition():
    cond = np.array([[True, False, True]])
    x, y = np.ones((2, 3), np.float32), np.ones((1, 3), np.float32)
    dy = np.arange(6, dtype=np.float32).reshape(2, 3)
    dc, dx, dyy = get_kernel("Where").grad(NONE, [cond, x, y], None, dy, [True, True, True])
    assert dc is None
    np.testing.assert_array_equal(dx, [[0, 0, 2], [3, 0, 5]])
    np.testing.assert_array_equal(dyy, [[0, 5, 0]])


@pytest.mark.parametrize("op", [*COMPARISONS, *LOGIC, "Not", "ArgMax", "ArgMin", "Cast"])
def test_not_differentiable(op):
    assert get_kernel(op).grad is None and get_kernel(op).int8 is None


def test_function_codes_are_new_and_stable():
    codes = {op: code_of(op) for op in [*COMPARISONS, "Not", *LOGIC, "Where"]}
    codes |= {op: code_of(op) for op in ("ArgMax", "ArgMin", "Cast")}
    assert list(codes.values()) == list(range(67, 80))


# -- through the frontend, the bundle and the verifier ----------------------------------------
def save(tmp_path, nodes, inputs, outputs, initializers=(), name="m.onnx") -> str:
    graph = helper.make_graph(nodes, "logic", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / name)
    onnx.save(model, path)
    return path


def value(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


@pytest.fixture
def mask_model(tmp_path) -> str:
    """y = Where(x > t, x, 0); hits = And(x > t, ids == 3); best = ArgMax(x, axis 1)."""
    nodes = [
        helper.make_node("Greater", ["x", "t"], ["m"]),
        helper.make_node("Where", ["m", "x", "zero"], ["y"]),
        helper.make_node("Equal", ["ids", "three"], ["e"]),
        helper.make_node("And", ["m", "e"], ["hits"]),
        helper.make_node("ArgMax", ["x"], ["best"], axis=1, keepdims=0),
        helper.make_node("Cast", ["hits"], ["count_f"], to=TensorProto.FLOAT),
    ]
    inits = [
        numpy_helper.from_array(np.array(0.25, np.float32), "t"),
        numpy_helper.from_array(np.zeros((1, 6), np.float32), "zero"),
        numpy_helper.from_array(np.array([3], np.int64), "three"),
    ]
    inputs = [value("x", TensorProto.FLOAT, ["N", 6]), value("ids", TensorProto.INT64, ["N", 6])]
    outputs = [
        value("y", TensorProto.FLOAT, ["N", 6]),
        value("hits", TensorProto.BOOL, ["N", 6]),
        value("best", TensorProto.INT64, ["N"]),
        value("count_f", TensorProto.FLOAT, ["N", 6]),
    ]
    return save(tmp_path, nodes, inputs, outputs, inits)


def mask_reference(x, ids):
    m = x > 0.25
    hits = m & (ids == 3)
    return {
        "y": np.where(m, x, 0),
        "hits": hits,
        "best": x.argmax(1),
        "count_f": hits.astype(np.float32),
    }


def test_a_masking_model_compiles_and_runs(mask_model):
    x = RNG.standard_normal((5, 6)).astype(np.float32)
    ids = RNG.integers(0, 5, (5, 6))
    loaded = dlcc.load_bytes(dlcc.compile(mask_model).to_bytes(), "m.bin")
    got = loaded.run({"x": x, "ids": ids})
    for name, want in mask_reference(x, ids).items():
        assert got[name].dtype == np.asarray(want).dtype
        np.testing.assert_array_equal(got[name], want)


def test_the_verifier_refuses_a_bool_buffer_fed_to_a_float_op(mask_model):
    """Cast(hits) -> count_f rewritten as Relu(hits) -> count_f: a bool operand of a float op."""
    file = dlcc.compile(mask_model)
    program = list(file.program)
    k = next(
        k
        for k, i in enumerate(program)
        if isinstance(i, isa.Vector) and i.function == code_of("Cast")
    )
    (hits,) = program[k].inputs
    assert file.buffers[hits.index].dtype == "bool"
    program[k] = isa.Vector(code_of("Relu"), (hits,), program[k].outputs, 0)
    bad = dataclasses.replace(file, program=program)
    with pytest.raises(BundleFormatError, match=r"VECTOR Relu\): .*got bool"):
        bind_bundle(BundleFile.from_bytes(bad.to_bytes(), "m.bin"), "m.bin")


def test_a_bool_buffer_declared_float_is_refused(mask_model):
    file = dlcc.compile(mask_model)
    buffers = [
        dataclasses.replace(b, dtype="float32") if b.dtype == "bool" else b for b in file.buffers
    ]
    bad = dataclasses.replace(file, buffers=buffers)
    with pytest.raises(BundleFormatError, match="gets bool"):
        bind_bundle(BundleFile.from_bytes(bad.to_bytes(), "m.bin"), "m.bin")


def test_bool_inputs_and_constants(tmp_path):
    """A bool graph input and a bool constant travel through the bundle (raw bytes)."""
    keep = np.array([[True, False, True, True]])
    nodes = [
        helper.make_node("And", ["mask", "keep"], ["both"]),
        helper.make_node("Not", ["both"], ["out"]),
    ]
    path = save(
        tmp_path,
        nodes,
        [value("mask", TensorProto.BOOL, ["N", 4])],
        [value("out", TensorProto.BOOL, ["N", 4])],
        [numpy_helper.from_array(keep, "keep")],
    )
    file = dlcc.compile(path)
    assert [t.dtype for t in file.tensors] == ["bool"]
    loaded = dlcc.load_bytes(file.to_bytes(), "m.bin")
    mask = RNG.random((3, 4)) > 0.5
    np.testing.assert_array_equal(loaded.run({"mask": mask})["out"], ~(mask & keep))
    with pytest.raises(ExecutionError, match="bool"):
        loaded.run({"mask": mask.astype(np.float32)})
    # a stored bool is a byte 0 or 1: anything else is refused at load
    record = file.tensors[0]
    (role, coding, offset, length) = record.blobs[0]
    data = bytearray(file.data)
    data[offset] = 2
    with pytest.raises(BundleFormatError, match="bool"):
        dlcc.load_bytes(dataclasses.replace(file, data=bytes(data)).to_bytes(), "m.bin")


def test_comparisons_on_constants_fold(tmp_path):
    """Shape arithmetic through Equal / Where / Cast folds away: no node of them is left."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Equal", ["s", "minus1"], ["is_free"]),
        helper.make_node("Where", ["is_free", "ones", "s"], ["target"]),
        helper.make_node("Cast", ["target"], ["target64"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["x", "target64"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([-1, -1], np.int64), "minus1"),
        numpy_helper.from_array(np.array([1, 1], np.int64), "ones"),
    ]
    path = save(
        tmp_path,
        nodes,
        [value("x", TensorProto.FLOAT, ["N", 6])],
        [value("y", TensorProto.FLOAT, ["N", 6])],
        inits,
    )
    graph = import_onnx(path)
    assert [n.op for n in graph.nodes] == ["Reshape"]


def test_cast_to_a_type_dlcc_does_not_hold_names_the_node(tmp_path):
    node = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE, name="to_double")
    path = save(
        tmp_path,
        [node],
        [value("x", TensorProto.FLOAT, ["N", 3])],
        [value("y", TensorProto.DOUBLE, ["N", 3])],
    )
    with pytest.raises(FrontendError, match="'to_double' \\(Cast\\): Cast to DOUBLE"):
        import_onnx(path)


def test_cast_to_the_same_type_is_no_node(tmp_path):
    nodes = [
        helper.make_node("Cast", ["x"], ["c"], to=TensorProto.FLOAT),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    path = save(
        tmp_path, nodes, [value("x", TensorProto.FLOAT, ["N", 3])], [value("y", 1, ["N", 3])]
    )
    assert [n.op for n in import_onnx(path).nodes] == ["Relu"]


def test_a_comparison_of_mixed_dtypes_names_the_node(tmp_path):
    node = helper.make_node("Greater", ["x", "ids"], ["y"], name="gt")
    inputs = [value("x", TensorProto.FLOAT, ["N", 3]), value("ids", TensorProto.INT64, ["N", 3])]
    path = save(tmp_path, [node], inputs, [value("y", TensorProto.BOOL, ["N", 3])])
    with pytest.raises(DlccError, match="gt"):
        import_onnx(path)


# -- the int8 path keeps them on float values -------------------------------------------------
def test_int8_graph_dequantizes_what_a_comparison_reads(tmp_path):
    """Dense -> Relu feeds both a Dense (an int8 reader) and Greater / Where: the compare and
    the select read float32 (a Dequantize), never the int8 codes."""
    rng = np.random.default_rng(11)  # its own: the data must not depend on the tests run before
    w1 = rng.standard_normal((8, 16)).astype(np.float32)
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Relu", ["h0"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["logits"]),
        helper.make_node("Greater", ["h", "t"], ["m"]),
        helper.make_node("Where", ["m", "h", "zero"], ["kept"]),
        helper.make_node("ArgMax", ["logits"], ["cls"], axis=1, keepdims=0),
    ]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(np.array(0.5, np.float32), "t"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
    ]
    path = save(
        tmp_path,
        nodes,
        [value("x", TensorProto.FLOAT, ["N", 8])],
        [
            value("kept", 1, ["N", 16]),
            value("cls", TensorProto.INT64, ["N"]),
            value("logits", 1, ["N", 4]),
        ],
        inits,
    )
    x = rng.standard_normal((64, 8)).astype(np.float32)
    file = dlcc.compile(path, passes="quantize", calibration={"x": x})
    for instr in file.program:
        if isinstance(instr, isa.Vector) and instr.function in (
            code_of("Greater"),
            code_of("Where"),
        ):
            operands = [o for o in instr.inputs if o.memory == "UB"]
            assert operands and all(file.buffers[o.index].dtype != "int8" for o in operands)
    assert any(b.dtype == "int8" for b in file.buffers)  # the int8 path is taken at all
    got = dlcc.load_bytes(file.to_bytes(), "m.bin").run({"x": x[:8]})
    h = np.maximum(x[:8] @ w1, 0)
    assert got["kept"].dtype == np.float32 and got["cls"].dtype == np.int64
    clear = np.abs(h - 0.5) > 0.15  # values int8 rounding may carry across the threshold aside
    np.testing.assert_allclose(got["kept"][clear], np.where(h > 0.5, h, 0)[clear], atol=0.15)
