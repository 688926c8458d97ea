"""Models dlcc cannot run correctly are refused at compile time, naming the file and the culprit.

Each case is a tiny ONNX model built with onnx.helper: non-finite weights, zero-size or absurd
dimensions, attributes out of their domain. Where onnx's own checker or shape inference
already refuses the model, the error must still be a clean FrontendError naming the node.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import dlcc
from dlcc.cli import main
from dlcc.errors import DlccError, FrontendError
from dlcc.ir import MAX_ELEMENTS


def tensor(name: str, shape) -> onnx.ValueInfoProto:
    """A float tensor; an int `shape` is that rank with symbolic dims (outputs)."""
    if isinstance(shape, int):
        shape = [f"d{i}" for i in range(shape)]
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def save(tmp_path, nodes, inputs, outputs, initializers=()) -> str:
    graph = helper.make_graph(nodes, "bad", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "bad.onnx")
    onnx.save(model, path)
    return path


def conv_model(tmp_path, x_shape=("N", 3, 8, 8), weight=None, **attrs) -> str:
    """x -> Conv 'conv' (weight initializer 'conv.weight') -> y."""
    weight = np.ones((4, 3, 3, 3), np.float32) if weight is None else weight
    node = helper.make_node("Conv", ["x", "conv.weight"], ["y"], name="conv", **attrs)
    init = numpy_helper.from_array(weight, "conv.weight")
    return save(tmp_path, [node], [tensor("x", list(x_shape))], [tensor("y", 4)], [init])


def refused(path: str, *fragments: str) -> str:
    """Compile `path`, expecting a FrontendError naming the file and every fragment."""
    with pytest.raises(FrontendError) as info:
        dlcc.compile(path)
    message = str(info.value)
    for fragment in (path, *fragments):
        assert fragment in message, message
    return message


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_weight(tmp_path, bad):
    weight = np.ones((4, 3, 3, 3), np.float32)
    weight[1, 2, 0, 1] = bad
    message = refused(conv_model(tmp_path, weight=weight), "'conv'", "'conv.weight'")
    assert "(1, 2, 0, 1)" in message


def test_batchnorm_variance_that_would_fold_into_nan(tmp_path):
    params = {"scale": 1.0, "shift": 0.0, "mean": 0.0, "var": -1.0}
    inits = [numpy_helper.from_array(np.full(4, v, np.float32), k) for k, v in params.items()]
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", *params], ["y"], name="bn"),
    ]
    inits.append(numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "conv.weight"))
    path = save(tmp_path, nodes, [tensor("x", ["N", 3, 8, 8])], [tensor("y", 4)], inits)
    refused(path, "'bn'", "'var'")


def test_non_finite_constants_outside_the_weights_are_fine(tmp_path):
    """Clip's infinite bounds become attributes; a NaN tensor read only for its shape folds."""
    nan_buffer = numpy_helper.from_array(np.full((2, 3), np.nan, np.float32), "nan_buffer")
    inits = [
        numpy_helper.from_array(np.array(-np.inf, np.float32), "low"),
        numpy_helper.from_array(np.array(np.inf, np.float32), "high"),
        numpy_helper.from_array(np.array([0], np.int64), "keep_batch"),
        nan_buffer,
    ]
    nodes = [
        helper.make_node("Clip", ["x", "low", "high"], ["c"], name="clip"),
        helper.make_node("Shape", ["nan_buffer"], ["dims"], name="dims"),
        helper.make_node("Concat", ["keep_batch", "dims"], ["shape"], name="shape", axis=0),
        helper.make_node("Reshape", ["c", "shape"], ["y"], name="reshape"),
    ]
    path = save(tmp_path, nodes, [tensor("x", ["N", 6])], [tensor("y", 3)], inits)
    x = np.array([[-np.inf, -1, 0, 1, 2, np.inf]], np.float32)
    y = dlcc.load_bytes(dlcc.compile(path).to_bytes()).run({"x": x})["y"]
    np.testing.assert_array_equal(y, x.reshape(1, 2, 3))


def test_nan_clip_bound(tmp_path):
    inits = [numpy_helper.from_array(np.array(np.nan, np.float32), "low")]
    node = helper.make_node("Clip", ["x", "low"], ["y"], name="clip")
    refused(save(tmp_path, [node], [tensor("x", ["N", 6])], [tensor("y", 2)], inits), "'clip'")


def test_concat_axis_out_of_range(tmp_path):
    node = helper.make_node("Concat", ["x", "x"], ["y"], name="cat", axis=2**40)
    path = save(tmp_path, [node], [tensor("x", ["N", 2, 3])], [tensor("y", 3)])
    refused(path, "'cat'", str(2**40))


def test_conv_with_zero_input_channels(tmp_path):
    path = conv_model(tmp_path, ("N", 0, 8, 8), np.ones((4, 0, 3, 3), np.float32))
    refused(path, "input 'x'", "zero-size dimension")


def test_zero_dimension(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    path = save(tmp_path, [node], [tensor("x", ["N", 0])], [tensor("y", 2)])
    refused(path, "input 'x'", "zero-size dimension")


def test_dimension_of_2_40(tmp_path):
    node = helper.make_node("Relu", ["x"], ["y"], name="relu")
    path = save(tmp_path, [node], [tensor("x", ["N", 2**40])], [tensor("y", 2)])
    refused(path, "input 'x'", str(2**40), str(MAX_ELEMENTS))


@pytest.mark.parametrize(
    "attrs",
    [{"strides": [0, 1]}, {"pads": [0, -1, 0, 0]}, {"dilations": [1, 0]}],
    ids=["stride-0", "negative-pad", "dilation-0"],
)
def test_conv_geometry_out_of_domain(tmp_path, attrs):
    refused(conv_model(tmp_path, **attrs), "conv")


def test_conv_without_an_output_pixel(tmp_path):
    refused(conv_model(tmp_path, x_shape=("N", 3, 2, 2)), "'conv'", "no output pixel")


@pytest.mark.parametrize(
    "x_channels, weight_shape, group",
    [(4, (4, 2, 3, 3), 3), (4, (4, 3, 3, 3), 1)],
    ids=["group-not-dividing", "in-channels-differ"],
)
def test_conv_channels_do_not_match(tmp_path, x_channels, weight_shape, group):
    weight = np.ones(weight_shape, np.float32)
    path = conv_model(tmp_path, ("N", x_channels, 8, 8), weight, group=group)
    refused(path, "'conv'", f"x has {x_channels} channels")


def test_cli_refuses_with_one_line_and_no_output(tmp_path):
    weight = np.ones((4, 3, 3, 3), np.float32)
    weight[0, 0, 0, 0] = np.nan
    path, out = conv_model(tmp_path, weight=weight), str(tmp_path / "m.bin")
    result = CliRunner().invoke(main, ["compile", path, "-o", out], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlcc: error: "), result.stderr
    assert "'conv.weight'" in lines[0] and "'conv'" in lines[0]
    assert not os.path.exists(out)


def test_a_one_element_infinite_fill_is_a_mask_value_not_a_bad_weight(tmp_path):
    """Where(mask, scores, -inf) is how attention masks are written; a NaN fill still fails."""
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["mask"], name="mask"),
        helper.make_node("Where", ["mask", "x", "fill"], ["y"], name="where"),
    ]
    for fill, ok in [(-np.inf, True), (np.nan, False)]:
        inits = [
            numpy_helper.from_array(np.array(0, np.float32), "zero"),
            numpy_helper.from_array(np.array(fill, np.float32), "fill"),
        ]
        path = save(tmp_path, nodes, [tensor("x", ["N", 4])], [tensor("y", ["N", 4])], inits)
        if ok:
            out = dlcc.load_bytes(dlcc.compile(path).to_bytes()).run(
                np.array([[-1, 2, 0, 3]], np.float32)
            )
            assert np.array_equal(out["y"], [[-np.inf, 2, -np.inf, 3]])
        else:
            refused(path, "'where'", "'fill'")


def test_more_outputs_than_a_bundle_addresses_is_a_clean_error(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], [f"y{i}"], name=f"relu{i}") for i in range(300)]
    outs = [tensor(f"y{i}", ["N", 4]) for i in range(300)]
    path = save(tmp_path, nodes, [tensor("x", ["N", 4])], outs, [])
    with pytest.raises(DlccError, match="300 outputs; a bundle holds at most 255"):
        dlcc.compile(path)
