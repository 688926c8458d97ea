"""Models exported at a fixed batch of 1 take data sample by sample (issue "Real models in").

Calibration, sensitivity and verify iterate the samples of an [N, ...] array for an input of
static shape [1, ...]; the bundle itself keeps the model's static shape.
"""

from __future__ import annotations

import onnx
import pytest
from conftest import sample_path

import dlcc
from dlcc.verify import verify


@pytest.fixture(scope="module")
def fixed_lenet5(tmp_path_factory) -> str:
    """samples/lenet5.onnx with its batch dimension pinned to 1, as many exporters write."""
    model = onnx.load(sample_path("lenet5.onnx"))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    path = str(tmp_path_factory.mktemp("fixed") / "lenet5_b1.onnx")
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("level", ["-O1", "-O3"])
def test_fixed_batch_model_compiles_with_calibration(fixed_lenet5, sample_images, level, tmp_path):
    images, labels = sample_images
    data = {"image": images[:64], "labels": labels[:64]}
    out = str(tmp_path / "b.bin")
    bundle = dlcc.compile(fixed_lenet5, out, passes=level, calibration=data, evaluation=data)
    assert bundle.buffers[bundle.inputs[0][1]].batch_axis is None  # still [1, 1, 28, 28]
    assert bundle.meta["report"]["fidelity"]["samples"] == 64
    report = verify(fixed_lenet5, out, data)
    assert report["samples"] == 64
    if level == "-O1":
        assert report["outputs"]["logits"]["agreement"] >= 0.98
