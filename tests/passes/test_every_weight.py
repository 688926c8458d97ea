"""Every weight compressible: LSTM, GRU, Gather tables, ConvTranspose, depthwise and 1-D
convolutions, MatMul weights go through prune, kmeans, quantize and huffman like Dense/Conv.

The compressed bundle must compute exactly what the float IR computes with the weights the
passes left (interpreter and systolic target alike: storage and decoding are lossless), stay
close to onnxruntime on the original model (int8 alone: within 3% of the output's range), and
be smaller than the uncompressed bundle.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import dlcc
from dlcc.frontend import import_onnx
from dlcc.passes.evaluate import evaluate
from dlcc.passes.manager import (
    PassContext,
    matrix_layers,
    parse_pipeline,
    run_pipeline,
    weights,
)
from dlcc.runtime.kernels import load_all

SHARED = "prune(sparsity=0.5),kmeans(bits=4),quantize,huffman"
KINDS = ["LSTM", "GRU", "Gather", "ConvTranspose", "depthwise", "conv1d", "MatMul"]


def _tensor(rng, name: str, shape: tuple[int, ...], scale: float = 0.3):
    return numpy_helper.from_array((scale * rng.standard_normal(shape)).astype(np.float32), name)


def _model(kind: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-op model of `kind` with seeded weights, and a batch of 3 inputs for it."""
    rng = np.random.default_rng(KINDS.index(kind))
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    if kind in ("LSTM", "GRU"):
        gates, hidden = (4, 8) if kind == "LSTM" else (3, 8)
        inits = [
            _tensor(rng, "W", (1, gates * hidden, 6)),
            _tensor(rng, "R", (1, gates * hidden, hidden)),
            _tensor(rng, "B", (1, 2 * gates * hidden), 0.1),
        ]
        node = helper.make_node(kind, ["x", "W", "R", "B"], ["y"], hidden_size=hidden)
        x, y = ("x", f32, [5, "N", 6]), ("y", f32, [5, 1, "N", hidden])
        feeds = {"x": rng.standard_normal((5, 3, 6)).astype(np.float32)}
    elif kind == "Gather":
        inits = [_tensor(rng, "table", (40, 16), 1.0)]
        node = helper.make_node("Gather", ["table", "ids"], ["y"], axis=0)
        x, y = ("ids", i64, ["N", 7]), ("y", f32, ["N", 7, 16])
        feeds = {"ids": rng.integers(0, 40, (3, 7)).astype(np.int64)}
    elif kind == "ConvTranspose":
        inits = [_tensor(rng, "W", (6, 4, 3, 3)), _tensor(rng, "b", (4,), 0.1)]
        node = helper.make_node("ConvTranspose", ["x", "W", "b"], ["y"], strides=[2, 2])
        x, y = ("x", f32, ["N", 6, 5, 5]), ("y", f32, ["N", 4, 11, 11])
        feeds = {"x": rng.standard_normal((3, 6, 5, 5)).astype(np.float32)}
    elif kind == "depthwise":
        inits = [_tensor(rng, "W", (8, 1, 3, 3)), _tensor(rng, "b", (8,), 0.1)]
        node = helper.make_node("Conv", ["x", "W", "b"], ["y"], group=8, pads=[1, 1, 1, 1])
        x, y = ("x", f32, ["N", 8, 6, 6]), ("y", f32, ["N", 8, 6, 6])
        feeds = {"x": rng.standard_normal((3, 8, 6, 6)).astype(np.float32)}
    elif kind == "conv1d":
        inits = [_tensor(rng, "W", (12, 4, 3)), _tensor(rng, "b", (12,), 0.1)]
        node = helper.make_node("Conv", ["x", "W", "b"], ["y"])
        x, y = ("x", f32, ["N", 4, 20]), ("y", f32, ["N", 12, 18])
        feeds = {"x": rng.standard_normal((3, 4, 20)).astype(np.float32)}
    else:  # MatMul: a transformer's projection of [N, T, d]
        inits = [_tensor(rng, "W", (16, 24))]
        node = helper.make_node("MatMul", ["x", "W"], ["y"])
        x, y = ("x", f32, ["N", 5, 16]), ("y", f32, ["N", 5, 24])
        feeds = {"x": rng.standard_normal((3, 5, 16)).astype(np.float32)}
    graph = helper.make_graph(
        [node],
        kind,
        [helper.make_tensor_value_info(*x)],
        [helper.make_tensor_value_info(*y)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return model, feeds


@pytest.fixture(params=KINDS)
def case(request, tmp_path):
    model, feeds = _model(request.param)
    path = str(tmp_path / f"{request.param}.onnx")
    onnx.save(model, path)
    return request.param, path, feeds


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_every_declared_weight_is_pruned_shared_and_int8(case):
    kind, path, _ = case
    graph = import_onnx(path)
    found = weights(graph)
    assert found, f"{kind}: no compressible weight found"
    originals = {w.label: w.value.data.copy() for w in found}
    run_pipeline(graph, parse_pipeline(SHARED), PassContext())
    for w in weights(graph):
        data, enc = w.value.data, w.value.encoding
        assert enc.sparse and enc.int8 and enc.huffman and enc.codebook is not None, w.label
        assert np.mean(data == 0) >= 0.5 - 1 / data.size
        assert len(np.unique(data[data != 0])) <= 15  # 2**4 - 1 centroids beside the zero
        kept = data != 0  # the survivors are the largest magnitudes of the original
        assert np.abs(originals[w.label][kept]).min() >= np.abs(originals[w.label][~kept]).max()


def test_bundle_computes_what_the_passes_left_on_both_targets(case):
    kind, path, feeds = case
    graph = import_onnx(path)
    run_pipeline(graph, parse_pipeline(SHARED), PassContext())
    reference = dict((v.name, a) for v, a in evaluate(graph, feeds) if v in graph.outputs)
    bundle = dlcc.load_bytes(dlcc.compile(path, passes=SHARED).to_bytes())
    for target in ("interp", "systolic"):
        (out,) = bundle.run(feeds, target=target).values()
        (want,) = reference.values()
        assert _relative(out, want) < 1e-5, (kind, target)


def test_int8_weights_stay_close_to_onnxruntime_and_shrink_the_bundle(case):
    kind, path, feeds = case
    (want,) = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
    plain, small = dlcc.compile(path), dlcc.compile(path, passes="quantize,huffman")
    (got,) = dlcc.load_bytes(small.to_bytes()).run(feeds).values()
    assert _relative(got, want) < 0.03, kind
    params = sum(w.value.data.size for w in weights(import_onnx(path)))
    saved = sum(t.nbytes for t in plain.tensors) - sum(t.nbytes for t in small.tensors)
    assert saved >= 2.5 * params, kind  # 4 bytes -> 1 per weight, less the scales


def test_calibrated_int8_keeps_the_targets_bit_exact(case):
    kind, path, feeds = case
    bundle = dlcc.load_bytes(dlcc.compile(path, passes=SHARED, calibration=feeds).to_bytes())
    (interp,) = bundle.run(feeds, target="interp").values()
    (systolic,) = bundle.run(feeds, target="systolic").values()
    np.testing.assert_array_equal(interp, systolic)


def test_a_layer_key_sets_all_its_weights_and_matrix_passes_say_why_they_skip(tmp_path):
    model, feeds = _model("LSTM")
    path = str(tmp_path / "lstm.onnx")
    onnx.save(model, path)
    graph = import_onnx(path)
    assert not matrix_layers(graph)
    pipeline = parse_pipeline("prune(sparsity=0.0,layers=LSTM:0.75),refit,lowrank,biascorrect")
    log = run_pipeline(graph, pipeline, PassContext(calibration=feeds))
    labels = [w.label for w in weights(graph)]
    assert [label.rsplit(".", 1)[1] for label in labels] == ["W", "R"]
    assert [float(np.mean(w.value.data == 0)) for w in weights(graph)] == [0.75, 0.75]
    for entry in log[1:]:  # refit, lowrank, biascorrect: a row per weight, and the reason
        assert entry["layers"]["layer"] == labels, entry
        assert all(reason.startswith("LSTM: ") for reason in entry["layers"]["reason"]), entry


def test_matrix_ops_declare_their_weight_at_input_1():
    """The integer lowering and the matrix-layer passes read a matrix op's weight there."""
    for op, kernel in load_all().items():
        if kernel.int8 == "matrix":
            assert [w.index for w in kernel.weights] == [1], op


def test_a_float_op_stores_its_biases_int8_too(tmp_path):
    model, feeds = _model("LSTM")
    path = str(tmp_path / "lstm.onnx")
    onnx.save(model, path)
    graph = import_onnx(path)
    run_pipeline(graph, parse_pipeline("quantize"), PassContext(calibration=feeds))
    (node,) = graph.nodes
    bias = node.inputs[3]
    assert bias.encoding.int8 and len(bias.encoding.scales) == 1
    step = bias.encoding.scales[0]
    original = numpy_helper.to_array(model.graph.initializer[2])
    assert np.abs(bias.data - original).max() <= step / 2 + 1e-7
