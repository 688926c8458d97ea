"""Accept what onnxruntime accepts: lenient shape inference, constant If, honest op lists.

Each model is built with onnx.helper, run by onnxruntime as the reference, and compiled by
dlcc (or refused with the list of ops that really block it).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlcc
from dlcc.api import load_bytes
from dlcc.errors import UnsupportedOpError


def tensor(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def save(tmp_path, nodes, outputs, initializers=()) -> str:
    graph = helper.make_graph(nodes, "m", [tensor("x", ["N", 4])], outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    return path


def matches_onnxruntime(path: str) -> None:
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    (expected,) = ort.InferenceSession(path).run(None, {"x": x})
    (got,) = load_bytes(dlcc.compile(path).to_bytes()).run(x).values()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_a_wrong_declared_output_shape_compiles_with_a_note(tmp_path):
    """Strict shape inference refuses a declared rank-3 output of a rank-2 Relu; ort runs it."""
    path = save(tmp_path, [helper.make_node("Relu", ["x"], ["y"])], [tensor("y", ["N", 4, 7])])
    matches_onnxruntime(path)
    notes = dlcc.compile(path).meta["notes"]
    assert any("strict shape inference failed" in note for note in notes)


@pytest.mark.parametrize("condition", [True, False])
def test_if_on_a_constant_condition_is_its_branch(tmp_path, condition):
    """The condition is folded from the input's static width (Shape -> Gather -> Equal)."""
    then = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["t"])], "then", [], [tensor("t", None)]
    )
    other = helper.make_graph(
        [helper.make_node("Sigmoid", ["x"], ["e"])], "else", [], [tensor("e", None)]
    )
    width = numpy_helper.from_array(np.array(4 if condition else 5, np.int64), "width")
    one = numpy_helper.from_array(np.array(1, np.int64), "one")
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "one"], ["w"]),
        helper.make_node("Equal", ["w", "width"], ["cond"]),
        helper.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other),
    ]
    matches_onnxruntime(save(tmp_path, nodes, [tensor("y", ["N", 4])], [width, one]))


def test_unsupported_ops_list_only_the_real_blockers(tmp_path):
    """Shape/ConstantOfShape behind the blocker would fold once it existed: not listed. An op
    reading the blocker's data with no converter of its own is listed."""
    nodes = [
        helper.make_node("Hardmax", ["x"], ["h"]),
        helper.make_node("Shape", ["h"], ["s"]),
        helper.make_node("ConstantOfShape", ["s"], ["zeros"]),
        helper.make_node("Add", ["h", "zeros"], ["a"]),
        helper.make_node("Round", ["a"], ["y"]),
    ]
    path = save(tmp_path, nodes, [tensor("y", ["N", 4])])
    with pytest.raises(UnsupportedOpError) as info:
        dlcc.compile(path)
    message = str(info.value)
    assert "Hardmax" in message and "Round" in message
    assert "Shape" not in message and "ConstantOfShape" not in message


def test_1d_convolution_and_pooling_run_as_2d(tmp_path):
    """Conv/MaxPool/AveragePool over [N, C, L] (audio models): lifted to [N, C, 1, L]."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.standard_normal((6, 2, 5)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "bias")
    nodes = [
        helper.make_node(
            "Conv",
            ["x", "w", "bias"],
            ["c"],
            strides=[2],
            dilations=[2],
            group=2,
            pads=[4, 3],
        ),
        helper.make_node("MaxPool", ["c"], ["m"], kernel_shape=[3], auto_pad="SAME_UPPER"),
        helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[2], strides=[2]),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 40])
    graph = helper.make_graph(nodes, "audio", [x_info], [tensor("y", ["N", 6, 10])], [w, bias])
    path = str(tmp_path / "audio.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = rng.standard_normal((3, 4, 40)).astype(np.float32)
    (expected,) = ort.InferenceSession(path).run(None, {"x": x})
    bundle = load_bytes(dlcc.compile(path).to_bytes())
    for target in ("interp", "systolic"):
        (got,) = bundle.run(x, target=target).values()
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_attention_matmuls_of_two_activations(tmp_path):
    """softmax(Q K^T / sqrt d) V with LayerNormalization and Gelu: a transformer block's ops."""
    rng = np.random.default_rng(2)
    d = 8
    weights = {n: rng.standard_normal((d, d)).astype(np.float32) / 3 for n in ("wq", "wk", "wv")}
    inits = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    inits += [
        numpy_helper.from_array(np.array(1 / np.sqrt(d), np.float32), "scale"),
        numpy_helper.from_array(np.ones(d, np.float32), "gamma"),
    ]
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma"], ["n"]),
        *(helper.make_node("MatMul", ["n", w], [w[1]]) for w in ("wq", "wk", "wv")),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["ss"]),
        helper.make_node("Softmax", ["ss"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
        helper.make_node("Gelu", ["o"], ["y"]),
    ]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5, d])
    graph = helper.make_graph(nodes, "attn", [x_info], [tensor("y", ["N", 5, d])], inits)
    path = str(tmp_path / "attn.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), path)
    x = rng.standard_normal((3, 5, d)).astype(np.float32)
    (expected,) = ort.InferenceSession(path).run(None, {"x": x})
    (got,) = load_bytes(dlcc.compile(path).to_bytes()).run(x).values()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_bidirectional_gru_matches_onnxruntime(tmp_path, linear_before_reset):
    rng = np.random.default_rng(3)
    hidden, size, steps = 5, 4, 6
    weights = {
        "W": rng.standard_normal((2, 3 * hidden, size)),
        "R": rng.standard_normal((2, 3 * hidden, hidden)),
        "B": rng.standard_normal((2, 6 * hidden)),
    }
    inits = [numpy_helper.from_array(v.astype(np.float32) / 2, k) for k, v in weights.items()]
    node = helper.make_node(
        "GRU",
        ["x", "W", "R", "B"],
        ["y", "y_h"],
        hidden_size=hidden,
        direction="bidirectional",
        linear_before_reset=linear_before_reset,
    )
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, "N", size])
    outs = [tensor("y", [steps, 2, "N", hidden]), tensor("y_h", [2, "N", hidden])]
    graph = helper.make_graph([node], "gru", [x_info], outs, inits)
    path = str(tmp_path / "gru.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = rng.standard_normal((steps, 3, size)).astype(np.float32)
    expected = ort.InferenceSession(path).run(None, {"x": x})
    got = load_bytes(dlcc.compile(path).to_bytes()).run(x)
    for name, want in zip(("y", "y_h"), expected):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-5)


def test_integer_ids_feed_an_embedding(tmp_path):
    """int64 token ids -> Gather from an embedding table -> ReduceMean -> Gemm, and the ids
    given as floats are refused with one clear error."""
    from dlcc.errors import DlccError

    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array(rng.standard_normal((50, 8)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"]),
        helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
        helper.make_node("Gemm", ["m", "w"], ["y"]),
    ]
    ids_info = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 7])
    graph = helper.make_graph(nodes, "bag", [ids_info], [tensor("y", ["N", 3])], inits)
    path = str(tmp_path / "bag.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    ids = rng.integers(0, 50, (4, 7))
    (expected,) = ort.InferenceSession(path).run(None, {"ids": ids})
    for level in ("-O0", "-O1"):
        bundle = load_bytes(dlcc.compile(path, passes=level, calibration={"ids": ids}).to_bytes())
        (got,) = bundle.run(ids).values()
        np.testing.assert_allclose(got, expected, rtol=0.05 if level == "-O1" else 1e-5, atol=0.05)
    with pytest.raises(DlccError, match="integers"):
        bundle.run(ids.astype(np.float32))
    with pytest.raises(DlccError, match="integers"):
        dlcc.compile(path, passes="-O1", calibration={"ids": ids.astype(np.float32)})
