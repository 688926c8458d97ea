"""dlcc verify: metrics against onnxruntime, the layer ranking, and the --max-drop gate."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_path

import dlcc
from dlcc.cli import main
from dlcc.formats.bundle import BundleFile

DATA = sample_path("mnist_test_256.npz")


def break_layer(path: str, out: str, tensor_name: str, factor: float = 10.0) -> None:
    """Multiply one weight tensor's int8 scales by `factor` (a deliberately broken bundle)."""
    bundle = BundleFile.from_bytes(open(path, "rb").read())
    record = next(t for t in bundle.tensors if t.name == tensor_name)
    _, _, offset, length = next(b for b in record.blobs if b[0] == "SCALES")
    data = bytearray(bundle.data)
    scales = np.frombuffer(bytes(data[offset : offset + length]), "<f4") * np.float32(factor)
    data[offset : offset + length] = scales.astype("<f4").tobytes()
    open(out, "wb").write(dataclasses.replace(bundle, data=bytes(data)).to_bytes())


@pytest.fixture(scope="module")
def weight_int8(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("verify") / "lenet5-O1.bin")
    dlcc.compile(sample_path("lenet5.onnx"), path, passes="-O1")
    return path


@pytest.mark.parametrize("broken", ["fc1.weight.T", "conv2.weight"])
def test_broken_layer_is_ranked_first(tmp_path, weight_int8, broken):
    bad = str(tmp_path / "bad.bin")
    break_layer(weight_int8, bad, broken)
    result = CliRunner().invoke(
        main, ["verify", sample_path("lenet5.onnx"), bad, "--data", DATA, "--layers", "--json"]
    )
    report = json.loads(result.stdout)
    owner = {"fc1.weight.T": "/fc1/Gemm", "conv2.weight": "/conv2/Conv"}[broken]
    assert report["layers"][0]["layer"] == owner


def test_metrics_and_gate(weight_int8, sample_bundles):
    runner = CliRunner()
    good = runner.invoke(
        main,
        [
            "verify",
            sample_path("lenet5.onnx"),
            sample_bundles["lenet5"],
            "--data",
            DATA,
            "--json",
            "--max-drop",
            "0.5%",
        ],
    )
    assert good.exit_code == 0
    report = json.loads(good.stdout)
    assert report["accuracy"]["original"] == report["accuracy"]["bundle"] > 0.95
    assert report["outputs"]["logits"]["agreement"] == 1.0
    assert report["outputs"]["logits"]["sqnr_db"] > 80

    o3 = dlcc.compile(sample_path("lenet5.onnx"), passes="-O3").to_bytes()
    path = str(weight_int8) + ".o3"
    open(path, "wb").write(o3)
    bad = runner.invoke(
        main, ["verify", sample_path("lenet5.onnx"), path, "--data", DATA, "--max-drop", "0.5%"]
    )
    assert bad.exit_code == 1 and "FAILED: drop" in bad.stdout


def test_bad_max_drop_is_a_clean_error(sample_bundles):
    result = CliRunner().invoke(
        main,
        [
            "verify",
            sample_path("lenet5.onnx"),
            sample_bundles["lenet5"],
            "--data",
            DATA,
            "--max-drop",
            "lots",
        ],
    )
    assert result.exit_code == 2 and result.stderr.startswith("dlcc: error: --max-drop")
