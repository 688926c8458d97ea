"""The integer path end to end: calibrated int8 bundles agree with onnxruntime's fp32 model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import sample_path

import dlcc
from dlcc.formats import isa
from dlcc.runtime.kernels import code_of


@pytest.fixture(scope="module")
def int8_bundles(tmp_path_factory, sample_images):
    images, _ = sample_images
    out = tmp_path_factory.mktemp("int8")
    paths = {}
    for name in ("lenet_300_100", "lenet5"):
        paths[name] = str(out / f"{name}.bin")
        dlcc.compile(
            sample_path(f"{name}.onnx"), paths[name], passes="-O1", calibration={"image": images}
        )
    return paths


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5"])
def test_int8_bundle_agrees_with_fp32_onnxruntime(int8_bundles, sample_images, name):
    images, _ = sample_images
    expected = ort.InferenceSession(sample_path(f"{name}.onnx")).run(None, {"image": images})[0]
    got = dlcc.load(int8_bundles[name]).run(images)["logits"]
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.99


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5"])
def test_int8_program_uses_integer_matrix_ops(int8_bundles, name):
    bundle = dlcc.load(int8_bundles[name])
    activates = [i for i in bundle.file.program if isinstance(i, isa.Activate)]
    assert activates and all(i.requant != isa.NO_TENSOR for i in activates)
    buffers = bundle.file.buffers
    assert all(buffers[i.src].dtype == "int32" for i in activates)
    # Hidden layers requantize to int8; the last one dequantizes its accumulators (logits).
    assert [buffers[i.dst].dtype for i in activates] == ["int8"] * (len(activates) - 1) + [
        "float32"
    ]
    matrix = [i for i in bundle.file.program if isinstance(i, isa.MatrixMultiply | isa.Convolve)]
    assert all(buffers[i.src].dtype == "int8" for i in matrix)
    functions = [i.function for i in bundle.file.program if isinstance(i, isa.Vector)]
    assert functions.count(code_of("Quantize")) == 1
    assert functions.count(code_of("Dequantize")) == 0


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5"])
def test_int8_logits_are_not_rounded_to_int8(int8_bundles, sample_images, name):
    """Logits on an int8 grid would tie (argmax picks the first): they stay float32."""
    logits = dlcc.load(int8_bundles[name]).run(sample_images[0])["logits"]
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert np.unique(logits).size > 256 and (top2[:, 0] < top2[:, 1]).all()


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5"])
def test_int8_bundle_is_3_9x_smaller_than_fp32(int8_bundles, sample_bundles, name):
    import os

    assert os.path.getsize(sample_bundles[name]) / os.path.getsize(int8_bundles[name]) >= 3.9


def test_table_activation_matches_float_within_a_step(tmp_path):
    """Sigmoid after a Dense goes through a 256-entry table; its error stays below 2 steps."""
    model = "tests/data/torch/mlp_legacy.onnx"
    x = np.random.default_rng(0).standard_normal((64, 4, 5)).astype(np.float32)
    path = str(tmp_path / "m.bin")
    dlcc.compile(model, path, passes="quantize", calibration={"x": x})
    bundle = dlcc.load(path)
    assert any(i.lut != isa.NO_TENSOR for i in bundle.file.program if isinstance(i, isa.Activate))
    got = bundle.run(x)["y"]
    expected = ort.InferenceSession(model).run(None, {"x": x})[0]
    assert np.abs(got - expected).max() <= 0.05 * np.abs(expected).max()


def test_a_bias_behind_an_input_calibration_left_at_zero_still_fits_int32(tmp_path):
    """Relu(x @ W1) (W1 pruned to zeros) is 0 on every calibration sample, so its scale
    would be ~1e-10 and the
    next layer's bias (1.5 in accumulator units of s_w * s_x) would overflow int32: the
    quantize pass raises that input's scale instead, with a note."""
    from onnx import TensorProto, helper, numpy_helper

    w1 = np.zeros((4, 3), np.float32)
    w2, b2 = np.full((3, 2), 0.5, np.float32), np.array([1.5, -0.25], np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, n) for n, a in (("w1", w1), ("w2", w2), ("b2", b2))]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        inits,
    )
    path = str(tmp_path / "m.onnx")
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    calib = {"x": np.abs(np.random.default_rng(0).standard_normal((8, 4))).astype(np.float32)}
    with np.errstate(all="raise"):
        bundle = dlcc.compile(path, passes="-O1", calibration=calib)
    assert any("was raised so that the int32 bias fits" in n for n in bundle.meta["notes"])
    out = dlcc.load_bytes(bundle.to_bytes()).run(calib["x"][:2])["y"]
    np.testing.assert_allclose(out, np.broadcast_to(b2, (2, 2)), atol=1e-6)
