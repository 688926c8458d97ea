"""Symbolic dimensions beyond the batch (issue "Real models in"): a model compiled once runs
at any value of its symbols and matches onnxruntime there; what cannot bind is one clear error.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlcc
from dlcc.errors import DlccError, ExecutionError

RNG = np.random.default_rng(0)


def _save(tmp_path, nodes, inputs, outputs, inits, name="m") -> str:
    graph = helper.make_graph(
        nodes, name, inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / f"{name}.onnx")
    onnx.save(model, path)
    return path


def _ints(name, values):
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64))
    )


def _check(path, feeds, targets=("interp",), rtol=1e-4):
    """The bundle of `path` agrees with onnxruntime on `feeds` on each target."""
    bundle = dlcc.load_bytes(dlcc.compile(path).to_bytes())
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    for target in targets:
        got = bundle.run(feeds, target=target)
        for w, g in zip(want, got.values()):
            assert g.shape == w.shape
            assert np.abs(g - w).max() <= rtol * max(np.abs(w).max(), 1e-6)
    return bundle


@pytest.fixture(scope="module")
def crnn(tmp_path_factory) -> str:
    """A CRNN-style recognizer on [N, 1, 8, W]: a strided conv, the batch folded into the
    time steps (T*N, C*H) for a projection, then unfolded to (T, N, K) with dims taken from
    Shape() of an earlier tensor, as the CRNN code writes `view(T * b, h)`, `view(T, b, -1)`."""
    w = RNG.standard_normal((4, 1, 3, 3)).astype(np.float32)
    p = RNG.standard_normal((32, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], strides=[1, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[3, 0, 1, 2]),  # T, N, C, H
        helper.make_node("Shape", ["t"], ["s"]),
        _ints("i0", [0]),
        _ints("i1", [1]),
        _ints("m1", [-1]),
        _ints("ch", [32]),
        helper.make_node("Gather", ["s", "i0"], ["T"], axis=0),
        helper.make_node("Gather", ["s", "i1"], ["B"], axis=0),
        helper.make_node("Concat", ["m1", "ch"], ["flat_shape"], axis=0),
        helper.make_node("Reshape", ["t", "flat_shape"], ["flat"]),  # (T*N, C*H)
        helper.make_node("MatMul", ["flat", "p"], ["proj"]),
        helper.make_node("Concat", ["T", "B", "m1"], ["out_shape"], axis=0),
        helper.make_node("Reshape", ["proj", "out_shape"], ["y"]),  # (T, N, 5)
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", "N", 5])
    return _save(tmp_path_factory.mktemp("sym"), nodes, [x], [y], {"w": w, "p": p}, "crnn")


def test_a_model_compiled_once_runs_at_every_width_and_batch(crnn):
    for n, width in [(1, 20), (3, 37), (2, 64)]:
        x = RNG.standard_normal((n, 1, 8, width)).astype(np.float32)
        bundle = _check(crnn, {"x": x}, targets=("interp", "systolic"))
    shapes = {name: bundle.file.buffers[buf] for name, buf in bundle.file.inputs}
    assert shapes["x"].labels(bundle.file.symbols) == ("N", "", "", "W")


def test_the_ir_names_symbols_and_derived_dims(crnn):
    from dlcc.frontend import import_onnx

    graph = import_onnx(crnn)
    assert graph.symbols == [("N", 1), ("W", 64)]
    assert graph.inputs[0].dims() == "N×1×8×W"
    assert graph.outputs[0].dims() == "?×N×5"  # T = ceil(W / 2): derived from W


def test_shape_pins_dimensions(crnn, tmp_path):
    bundle = dlcc.load_bytes(dlcc.compile(crnn, shapes={"x": (1, 1, 8, 16)}).to_bytes())
    assert bundle.file.buffers[bundle.file.inputs[0][1]].dims == (0, 0, 0, 0)
    with pytest.raises(ExecutionError, match="expected shape 1×1×8×16"):
        bundle.run(np.zeros((1, 1, 8, 17), np.float32))
    with pytest.raises(
        DlccError, match="4 dimensions for an input of rank|dimensions for an input"
    ):
        dlcc.compile(crnn, shapes={"x": (1, 8, 16)})
    with pytest.raises(DlccError, match="names no input"):
        dlcc.compile(crnn, shapes={"image": (1, 1, 8, 16)})


def test_inputs_that_disagree_on_a_symbol_are_one_error_naming_both(tmp_path):
    nodes = [helper.make_node("Add", ["a", "b"], ["y"])]
    ins = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", "T"]) for n in "ab"]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T"])
    path = _save(tmp_path, nodes, ins, [y], {})
    a = RNG.standard_normal((2, 9)).astype(np.float32)
    bundle = _check(path, {"a": a, "b": a + 1})
    with pytest.raises(ExecutionError, match="input 'b': T is 7 here but 9 in input 'a'"):
        bundle.run({"a": a, "b": np.zeros((2, 7), np.float32)})


def test_a_slice_over_the_whole_symbolic_axis_and_a_resize_to_another_tensor(tmp_path):
    """tf2onnx slices the batch axis whole; U-Nets resize to a skip tensor's H, W."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        _ints("zero", [0]),
        _ints("one", [1]),
        helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
        helper.make_node("Slice", ["x", "zero", "n", "zero"], ["whole"]),
        helper.make_node("MaxPool", ["whole"], ["half"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["x"], ["full"]),
        helper.make_node("Resize", ["half", "", "", "full"], ["up"], mode="nearest"),
        helper.make_node("Add", ["up", "x"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, "H", "W"])
    path = _save(tmp_path, nodes, [x], [y], {})
    for shape in [(1, 2, 8, 12), (3, 2, 16, 6)]:
        _check(path, {"x": RNG.standard_normal(shape).astype(np.float32)})


def test_a_constant_computed_from_a_symbol_feeding_data_is_refused(tmp_path):
    nodes = [
        helper.make_node("Shape", ["x"], ["s"], start=1),
        helper.make_node("Cast", ["s"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x", "f"], ["y"]),  # x * W
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "W"])
    path = _save(tmp_path, nodes, [x], [y], {})
    with pytest.raises(DlccError, match="computed from symbolic dimensions .* --shape"):
        dlcc.compile(path)
    dlcc.compile(path, shapes={"x": (1, 5)})  # pinned, it folds


@pytest.mark.parametrize("level", ["-O1", "-O3"])
def test_calibrated_levels_run_at_every_binding(crnn, level):
    x = RNG.standard_normal((16, 1, 8, 40)).astype(np.float32)
    bundle = dlcc.load_bytes(dlcc.compile(crnn, passes=level, calibration={"x": x}).to_bytes())
    session = ort.InferenceSession(crnn, providers=["CPUExecutionProvider"])
    for n, width in [(1, 24), (3, 40)]:
        feeds = {"x": x[:n, :, :, :width]}
        got, (want,) = bundle.run(feeds, target="interp")["y"], session.run(None, feeds)
        assert got.shape == want.shape
        assert np.allclose(bundle.run(feeds, target="systolic")["y"], got)  # bit-exact int8
        cosine = (got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)
        assert cosine > (0.99 if level == "-O1" else 0.5)  # -O3's fixed rates: issue 11


def test_position_ids_sliced_to_the_sequence_length(tmp_path):
    """HF BERT: position_ids[:, :seq] with seq from Shape(input_ids) feeds an embedding."""
    table = RNG.standard_normal((32, 6)).astype(np.float32)
    words = RNG.standard_normal((50, 6)).astype(np.float32)
    nodes = [
        helper.make_node("Shape", ["ids"], ["s"]),
        _ints("one", [1]),
        _ints("zero", [0]),
        helper.make_node("Gather", ["s", "one"], ["seq"], axis=0),
        helper.make_node("Slice", ["positions", "zero", "seq", "one"], ["pos"]),
        helper.make_node("Gather", ["words", "ids"], ["w"]),
        helper.make_node("Gather", ["table", "pos"], ["p"]),
        helper.make_node("Add", ["w", "p"], ["y"]),
    ]
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", 6])
    inits = {"table": table, "words": words, "positions": np.arange(32, dtype=np.int64)[None]}
    path = _save(tmp_path, nodes, [ids], [y], inits)
    for shape in [(1, 5), (3, 17)]:
        _check(path, {"ids": RNG.integers(0, 50, shape).astype(np.int64)})
