"""The frontend checks a model without its large initializers' payloads and reads each once.

Models built with onnx.helper: the weights dlcc lowers must equal onnx's own reading of them
(numpy_helper.to_array), whatever their storage (raw data of several types, typed fields,
external data, an old IR that lists initializers as inputs, an old opset that the version
converter upgrades), and onnx's checks must never see a large payload.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlcc
from dlcc.api import load_bytes
from dlcc.errors import FrontendError
from dlcc.formats.bundle import BundleFile
from dlcc.frontend import import_onnx
from dlcc.frontend import loader as loader_module
from dlcc.frontend.converters import _transposed
from dlcc.frontend.payloads import STRIP_BYTES, read_payloads, split_model

RNG = np.random.default_rng(7)


def mlp(tmp_path, opset: int = 17, ir_version: int | None = None, listed: bool = False) -> str:
    """x (N, 64) -> Gemm(W1 64x128, transB) -> Relu -> MatMul(W2 128x10) + b2 -> y."""
    inits = [
        numpy_helper.from_array(RNG.standard_normal((128, 64)).astype(np.float32), "w1"),
        numpy_helper.from_array(RNG.standard_normal(128).astype(np.float32), "b1"),
        numpy_helper.from_array(RNG.standard_normal((128, 10)).astype(np.float32), "w2"),
        numpy_helper.from_array(RNG.standard_normal(10).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["m"]),
        helper.make_node("Add", ["m", "b2"], ["y"]),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])]
    if listed:  # IR < 4: every initializer is a graph input too
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in inits]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])]
    graph = helper.make_graph(nodes, "mlp", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    if ir_version is not None:
        model.ir_version = ir_version
    path = str(tmp_path / "mlp.onnx")
    onnx.save(model, path)
    return path


def matches_onnxruntime(path: str) -> None:
    x = RNG.standard_normal((3, 64)).astype(np.float32)
    (expected,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    (got,) = load_bytes(dlcc.compile(path).to_bytes()).run(x).values()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_large_initializers_leave_the_model_and_come_back_exactly(tmp_path):
    path = mlp(tmp_path)
    model, stripped = split_model(path)
    assert sorted(s.name for s in stripped) == ["w1", "w2"]  # b1, b2 are under STRIP_BYTES
    assert [t.name for t in model.graph.initializer] == ["b1", "b2"]
    assert model.ByteSize() < STRIP_BYTES
    original = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    for name, values in read_payloads(path, stripped).items():
        assert values.dtype == original[name].dtype and values.flags.writeable
        np.testing.assert_array_equal(values, original[name])
    matches_onnxruntime(path)


@pytest.mark.parametrize("shape", [(3, 5), (1100, 700)])
def test_a_transposed_gemm_weight_is_copied_exactly(shape):
    weight = RNG.standard_normal(shape).astype(np.float32)
    copied = _transposed(weight)  # tile by tile, the edge tiles partial
    assert copied.flags.c_contiguous and np.array_equal(copied, weight.T)


def test_the_checks_never_see_a_payload(tmp_path, monkeypatch):
    path = mlp(tmp_path)
    seen = []
    real = loader_module.checker.check_model

    def check(model, *args, **kwargs):
        seen.append(model.ByteSize())
        return real(model, *args, **kwargs)

    monkeypatch.setattr(loader_module.checker, "check_model", check)
    graph = import_onnx(path)
    assert seen and max(seen) < STRIP_BYTES
    assert [v.name for v in graph.inputs] == ["x"]  # weights declared for the checks only


@pytest.mark.parametrize(
    "dtype, kind",
    [
        (np.float16, TensorProto.FLOAT16),
        (np.float64, TensorProto.DOUBLE),
        (np.int64, TensorProto.INT64),
        (np.int8, TensorProto.INT8),
        (np.bool_, TensorProto.BOOL),
    ],
)
def test_raw_payloads_of_every_plain_type(tmp_path, dtype, kind):
    values = (RNG.standard_normal((100, 64)) * 50).astype(dtype)  # >= STRIP_BYTES
    tensor = numpy_helper.from_array(values, "t")
    assert tensor.data_type == kind
    model = helper.make_model(helper.make_graph([], "g", [], [], [tensor]))
    path = str(tmp_path / "t.onnx")
    onnx.save(model, path)
    _, stripped = split_model(path)
    np.testing.assert_array_equal(read_payloads(path, stripped)["t"], values)


def test_typed_fields_and_exotic_types_are_read_by_onnx(tmp_path):
    floats = RNG.standard_normal(2000).astype(np.float32)
    typed = helper.make_tensor("typed", TensorProto.FLOAT, [2000], floats.tolist())
    brain = helper.make_tensor("bf16", TensorProto.BFLOAT16, [2000], floats.tolist())
    model = helper.make_model(helper.make_graph([], "g", [], [], [typed, brain]))
    path = str(tmp_path / "t.onnx")
    onnx.save(model, path)
    _, stripped = split_model(path)
    read = read_payloads(path, stripped)
    for tensor in (typed, brain):
        np.testing.assert_array_equal(read[tensor.name], numpy_helper.to_array(tensor))


def test_external_data(tmp_path):
    model = onnx.load(mlp(tmp_path))
    path = str(tmp_path / "external.onnx")
    onnx.save(model, path, save_as_external_data=True, location="weights.bin", size_threshold=0)
    _, stripped = split_model(path)
    assert {s.name for s in stripped} == {"w1", "b1", "w2", "b2"}  # external: always stripped
    matches_onnxruntime(path)
    inline = dlcc.compile(str(tmp_path / "mlp.onnx")).to_bytes()
    assert dlcc.compile(path).data == BundleFile.from_bytes(inline).data


def test_an_old_ir_listing_initializers_as_inputs(tmp_path):
    path = mlp(tmp_path, ir_version=3, listed=True)
    assert [v.name for v in import_onnx(path).inputs] == ["x"]
    matches_onnxruntime(path)


def test_an_old_opset_is_upgraded_without_its_payloads(tmp_path):
    matches_onnxruntime(mlp(tmp_path, opset=11))


def test_a_payload_shorter_than_its_shape_names_the_initializer(tmp_path):
    model = onnx.load(mlp(tmp_path))
    w1 = next(t for t in model.graph.initializer if t.name == "w1")
    w1.raw_data = w1.raw_data[:-4]
    path = str(tmp_path / "short.onnx")
    onnx.save(model, path)
    with pytest.raises(FrontendError, match=r"short\.onnx: initializer 'w1': 32,764 bytes"):
        dlcc.compile(path)


@pytest.mark.parametrize("garbage", [b"\xff" * 64, b"\x08", b"\x3a\x80\x80\x80\x80\x10"])
def test_garbage_is_not_a_readable_model(tmp_path, garbage):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(garbage)
    with pytest.raises(FrontendError, match="garbage.onnx: not"):
        dlcc.compile(str(path))
