"""`dlcc export` / `dlcc.api.to_onnx`: the bundle as standard ONNX, float and QDQ, checked by
onnxruntime against `dlcc run` on the samples at every -O level and on graphs of more op kinds."""

from __future__ import annotations

import functools
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import assert_clean_error, invoke, sample_path
from light_models import data_input, light_model
from onnx import TensorProto, helper, numpy_helper

import dlcc
from dlcc.api import to_onnx
from dlcc.export import table_input_scale
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.quant import build_lut

LEVELS = ("-O0", "-O1", "-O2", "-O3")
TORCH = os.path.join(os.path.dirname(__file__), "data", "torch")


def session(model: onnx.ModelProto, path: str | None = None) -> ort.InferenceSession:
    """onnxruntime on `model`, its optimized graph saved to `path` when given."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if path:
        options.optimized_model_filepath = path
    return ort.InferenceSession(model.SerializeToString(), options)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(axis=1) == b.argmax(axis=1)).mean())


def dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, sample_images) -> dict[tuple[str, str], str]:
    """Both samples at -O0..-O3 (int8 activations calibrated on the 256 sample images)."""
    images, _ = sample_images
    out = tmp_path_factory.mktemp("export")
    paths = {}
    for name in ("lenet5", "lenet_300_100"):
        for level in LEVELS:
            paths[name, level] = str(out / f"{name}{level}.bin")
            calibration = None if level == "-O0" else {"image": images}
            dlcc.compile(sample_path(f"{name}.onnx"), paths[name, level], level, calibration)
    return paths


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", ["lenet5", "lenet_300_100"])
def test_float_export_answers_as_dlcc_run(bundles, sample_images, tmp_path, name, level):
    images, _ = sample_images
    path = str(tmp_path / "m.onnx")
    to_onnx(bundles[name, level], path)
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version >= 17
    assert [dims(v) for v in model.graph.input] == [["N", 1, 28, 28]]
    assert [(v.name, dims(v)) for v in model.graph.output] == [("logits", ["N", 10])]
    expected = dlcc.load(bundles[name, level]).run(images)["logits"]
    got = session(model).run(None, {"image": images})[0]
    if level == "-O0":
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    else:
        assert agreement(got, expected) >= 0.999
    for batch in (1, 3):  # the batch stays symbolic
        assert session(model).run(None, {"image": images[:batch]})[0].shape == (batch, 10)


@pytest.mark.parametrize("name", ["lenet5", "lenet_300_100"])
def test_qdq_export_runs_int8_kernels_and_is_as_small_as_quantize_static(
    bundles, sample_images, tmp_path, name
):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    images, _ = sample_images
    path, reference = str(tmp_path / "q.onnx"), str(tmp_path / "static.onnx")
    model = to_onnx(dlcc.load(bundles[name, "-O1"]), path, format="qdq")
    onnx.checker.check_model(onnx.load(path), full_check=True)
    expected = dlcc.load(bundles[name, "-O1"]).run(images)["logits"]
    got = session(model, str(tmp_path / "opt.onnx")).run(None, {"image": images})[0]
    assert agreement(got, expected) >= 0.999
    fused = {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
    assert "QGemm" in fused and ("QLinearConv" in fused) == (name == "lenet5"), fused

    class Images(CalibrationDataReader):
        batches = iter([{"image": images[i : i + 64]} for i in range(0, len(images), 64)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        sample_path(f"{name}.onnx"), reference, Images(), quant_format=QuantFormat.QDQ,
        per_channel=True,
    )  # fmt: skip
    assert os.path.getsize(path) <= 1.1 * os.path.getsize(reference)


def test_weight_only_int8_exports_int8_weights(sample_images, tmp_path):
    """Without calibration the weights are int8 and the activations float: qdq keeps the
    weights' int8 values and scales, float their decoded values."""
    images, _ = sample_images
    bundle = str(tmp_path / "w.bin")
    dlcc.compile(sample_path("lenet_300_100.onnx"), bundle, passes="-O1")
    expected = dlcc.load(bundle).run(images)["logits"]
    fp = to_onnx(bundle, format="float")
    got = session(fp).run(None, {"image": images})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    qdq = to_onnx(bundle, format="qdq")
    int8 = [t for t in qdq.graph.initializer if t.data_type == TensorProto.INT8]
    assert sum(np.prod(t.dims) for t in int8) > 0.99 * sum(
        np.prod(t.dims) for t in fp.graph.initializer
    )
    assert agreement(session(qdq).run(None, {"image": images})[0], expected) >= 0.99


# -- more op kinds ------------------------------------------------------------------------------
def _op_zoo(path: str) -> str:
    """A small graph of many op kinds: PRelu, reflect Pad, AveragePool, Split, Concat, LRN,
    InstanceNormalization, Slice, Clip, Resize, ConvTranspose, Softmax, Pow, Erf..."""
    rng = np.random.default_rng(0)
    consts = {
        "W": rng.standard_normal((8, 3, 3, 3)) * 0.3,
        "Wt": rng.standard_normal((3, 8, 2, 2)) * 0.3,
        "slope": rng.random((8, 1, 1)) * 0.2,
        "pads": np.array([0, 0, 1, 1, 0, 0, 1, 1]),
        "split": np.array([4, 4]),
        "starts": np.array([1]),
        "ends": np.array([7]),
        "axis3": np.array([3]),
        "lo": np.array(-1.0),
        "hi": np.array(1.5),
        "scales": np.array([1.0, 1.0, 2.0, 2.0]),
        "ones": np.ones(8),
        "zeros": np.zeros(8),
        "two": np.array(2.0),
    }
    inits = [
        numpy_helper.from_array(v.astype(np.int64 if v.dtype.kind == "i" else np.float32), k)
        for k, v in consts.items()
    ]
    node = helper.make_node
    nodes = [
        node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]),
        node("PRelu", ["c", "slope"], ["p"]),
        node("Pad", ["p", "pads"], ["pd"], mode="reflect"),
        node("AveragePool", ["pd"], ["ap"], kernel_shape=[3, 3]),
        node("Split", ["ap", "split"], ["s1", "s2"], axis=1),
        node("Tanh", ["s1"], ["t1"]),
        node("HardSwish", ["s2"], ["t2"]),
        node("Concat", ["t1", "t2"], ["cat"], axis=1),
        node("LRN", ["cat"], ["lrn"], size=3),
        node("InstanceNormalization", ["lrn", "ones", "zeros"], ["inn"]),
        node("Slice", ["inn", "starts", "ends", "axis3"], ["sl"]),
        node("Clip", ["sl", "lo", "hi"], ["cl"]),
        node("Resize", ["cl", "", "scales"], ["rs"], mode="nearest"),
        node("ReduceMean", ["rs"], ["rm"], axes=[2, 3]),
        node("ConvTranspose", ["x", "Wt"], ["ct"], strides=[2, 2]),
        node("GlobalMaxPool", ["ct"], ["gm"]),
        node("Mul", ["rm", "gm"], ["mm"]),
        node("Transpose", ["mm"], ["tr"], perm=[0, 2, 3, 1]),
        node("Softmax", ["tr"], ["sm"], axis=-1),
        node("Pow", ["sm", "two"], ["pw"]),
        node("Sqrt", ["pw"], ["sq"]),
        node("Flatten", ["sq"], ["y"]),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])
    graph = helper.make_graph(nodes, "zoo", [x], [y], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _graphs(tmp: str) -> dict[str, tuple[str, dict]]:
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    squeezenet = light_model("squeezenet", tmp)
    name, shape = data_input(squeezenet)
    return {
        "mlp (Sigmoid table)": (os.path.join(TORCH, "mlp_legacy.onnx"), {"x": normal(16, 4, 5)}),
        "cnn (LeakyRelu table, pooling)": (
            os.path.join(TORCH, "cnn_legacy.onnx"),
            {"x": normal(16, 3, 16, 16)},
        ),
        "bidirectional LSTM": (os.path.join(TORCH, "lstm_bi_dynamo.onnx"), {"x": normal(5, 8, 8)}),
        "squeezenet (Concat, pooling)": (squeezenet, {name: normal(2, *shape)}),
        "op zoo": (_op_zoo(os.path.join(tmp, "zoo.onnx")), {"x": normal(4, 3, 8, 8)}),
    }


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, tuple[str, dict]]:
    return _graphs(str(tmp_path_factory.mktemp("graphs")))


@pytest.mark.parametrize("fmt", ["float", "qdq"])
@pytest.mark.parametrize("level", ["-O0", "-O1"])
@pytest.mark.parametrize(
    "graph",
    [
        "mlp (Sigmoid table)",
        "cnn (LeakyRelu table, pooling)",
        "bidirectional LSTM",
        "squeezenet (Concat, pooling)",
        "op zoo",
    ],
)
def test_more_op_kinds_export(graphs, tmp_path, graph, level, fmt):
    model_path, data = graphs[graph]
    bundle = str(tmp_path / "b.bin")
    dlcc.compile(model_path, bundle, passes=level, calibration=data if level == "-O1" else None)
    expected = dlcc.load(bundle).run(data)
    model = to_onnx(bundle, format=fmt)
    got = dict(zip([o.name for o in model.graph.output], session(model).run(None, data)))
    assert got.keys() == expected.keys()
    for name, y in expected.items():
        # float32 rounding; an int8 rounding step flipped deep in SqueezeNet moves it further
        tol = (1e-5 if level == "-O0" else 1e-2) * np.abs(y).max()
        np.testing.assert_allclose(got[name], y, rtol=1e-4, atol=tol)


def test_table_scale_is_recovered_to_the_table():
    """A fused table's input scale is not stored: the one recovered rebuilds the table."""
    fn = functools.partial(get_kernel("Sigmoid").fn, None)
    s_in, s_out = 0.0371, 1 / 127
    table = build_lut(fn, s_in, s_out)
    found = table_input_scale(fn, table, s_out)
    assert np.array_equal(build_lut(fn, found, s_out), table)
    assert abs(found / s_in - 1) < 0.02


# -- the command line ---------------------------------------------------------------------------
def test_cli_export(bundles, tmp_path):
    out = str(tmp_path / "m.onnx")
    result = invoke("export", bundles["lenet5", "-O1"], "-o", out, "--format", "qdq", "--json")
    assert result.exit_code == 0, result.output
    assert '"format": "qdq"' in result.stdout and os.path.getsize(out) > 0
    assert "Example:" in invoke("export", "--help").output


def test_cli_export_bad_input(bundles, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    bundle = bundles["lenet5", "-O0"]
    assert_clean_error(invoke("export", bundle, "-o", bundle), "is the input")
    assert_clean_error(invoke("export", bundle, "-o", str(out), "--format", "int4"), "int4")
    assert_clean_error(invoke("export", str(tmp_path / "none.bin"), "-o", str(out)), "none.bin")
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(open(bundle, "rb").read()[:-100])
    assert_clean_error(invoke("export", str(corrupt), "-o", str(out)), "corrupt.bin")
    import dlcc.export

    monkeypatch.setitem(dlcc.export._ONNX_FORMS, "Flatten", None)
    assert_clean_error(invoke("export", bundle, "-o", str(out)), "instruction #", "Flatten")
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".dlcc-")]
