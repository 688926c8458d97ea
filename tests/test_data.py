"""dlcc.data: every command checks its data files in one place, before any work or output."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from conftest import assert_clean_error, invoke, sample_path
from onnx import TensorProto, helper

import dlcc
from dlcc.errors import DlccError

MODEL = sample_path("lenet_300_100.onnx")
N = 32


@pytest.fixture(scope="module")
def good(sample_images):
    images, labels = sample_images
    return images[:N].copy(), labels[:N].copy()


def with_value(images: np.ndarray, value: float) -> np.ndarray:
    bad = images.copy()
    bad[3, 0, 5, 5] = value
    return bad


# name -> (arrays from (images, labels), what the one error line says)
BAD = {
    "strings": (lambda x, y: {"image": np.full(x.shape, "a")}, ["dtype <U1 is not numeric"]),
    "complex": (lambda x, y: {"image": x.astype(np.complex64)}, ["complex64 is not numeric"]),
    "structured": (
        lambda x, y: {"image": np.zeros(x.shape, [("a", "f4")])},
        ["is not numeric"],
    ),
    "nan": (lambda x, y: {"image": with_value(x, np.nan)}, ["input 'image': NaN values"]),
    "inf": (lambda x, y: {"image": with_value(x, -np.inf)}, ["infinite values"]),
    "huge": (lambda x, y: {"image": with_value(x, 3e38)}, ["value 3e+38", "within +-1e+12"]),
    "no samples": (lambda x, y: {"image": x[:0]}, ["input 'image': no samples"]),
    "shape": (
        lambda x, y: {"image": x[:, :, :14]},
        ["input 'image': shape 32×1×14×28", "takes N×1×28×28"],
    ),
    "missing input": (
        lambda x, y: {"pixels": x, "other": x},
        ["no array for input(s) 'image'", "'pixels', 'other'"],
    ),
    "label count": (lambda x, y: {"image": x, "labels": y[:-1]}, ["31 labels for 32 samples"]),
    "label range": (
        lambda x, y: {"image": x, "labels": np.full(N, 10)},
        ["class ids must be in [0, 10)", "found 10"],
    ),
    "negative label": (lambda x, y: {"image": x, "labels": y - 1}, ["must not be negative"]),
    "fractional label": (lambda x, y: {"image": x, "labels": y + 0.5}, ["whole numbers"]),
    "one-hot width": (
        lambda x, y: {"image": x, "labels": np.eye(11)[y]},
        ["labels: 11 columns; the model has 10 classes"],
    ),
    "label rank": (lambda x, y: {"image": x, "labels": y.reshape(N, 1, 1)}, ["expected class ids"]),
    "nan probabilities": (
        lambda x, y: {"image": x, "labels": np.full((N, 10), np.nan)},
        ["labels: NaN values"],
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_run_refuses_bad_input_and_writes_nothing(tmp_path, sample_bundles, good, case):
    make, fragments = BAD[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **make(*good))
    out = tmp_path / "y.npy"
    result = invoke(
        "run", sample_bundles["lenet_300_100"], "--input", str(path), "--output", str(out)
    )
    assert_clean_error(result, "bad.npz", *fragments)
    assert not out.exists()


@pytest.mark.parametrize("case", ["nan", "one-hot width"])
def test_every_command_refuses_the_same_file(tmp_path, sample_bundles, good, case):
    make, fragments = BAD[case]
    path = str(tmp_path / "bad.npz")
    np.savez(path, **make(*good))
    out = tmp_path / "out.bin"
    bundle = sample_bundles["lenet_300_100"]
    for args in (
        ["compile", MODEL, "-o", str(out), "--calib", path],
        ["compile", MODEL, "-o", str(out), "--data", path],
        ["compile", MODEL, "-o", str(out), "--train", path],
        ["compile", MODEL, "-o", str(out), "--data", path, "--min-agreement", "99%"],
        ["verify", MODEL, bundle, "--data", path],
        ["profile", bundle, "--input", path, "--array", "8x8"],
    ):
        assert_clean_error(invoke(*args), "bad.npz", *fragments)
        assert not out.exists(), args


def test_calibration_data_of_zeros_is_refused(tmp_path, good):
    path = tmp_path / "zeros.npz"
    np.savez(path, image=np.zeros_like(good[0]))
    out = tmp_path / "out.bin"
    result = invoke("compile", MODEL, "-o", str(out), "-O1", "--calib", str(path))
    assert_clean_error(result, "zeros.npz: input 'image': all zeros")
    assert not out.exists()


def test_the_api_names_the_data_it_was_given(good):
    with pytest.raises(DlccError, match="calibration data: input 'image': NaN values"):
        dlcc.compile(MODEL, calibration={"image": with_value(good[0], np.nan)})


# -- one-hot and probability labels are class ids by their argmax ---------------------------
@pytest.fixture
def label_files(tmp_path, good):
    images, labels = good
    probabilities = np.eye(10)[labels] * 0.7 + 0.03
    paths = {}
    for name, y in {"ids": labels, "onehot": np.eye(10, dtype=np.float32)[labels]}.items():
        paths[name] = str(tmp_path / f"{name}.npz")
        np.savez(paths[name], image=images, labels=y)
    paths["probabilities"] = str(tmp_path / "probabilities.npz")
    np.savez(paths["probabilities"], image=images, labels=probabilities)
    paths["column"] = str(tmp_path / "column.npz")
    np.savez(paths["column"], image=images, labels=labels.reshape(-1, 1).astype(np.float64))
    return paths


def test_run_and_verify_take_one_hot_labels(sample_bundles, label_files):
    bundle = sample_bundles["lenet_300_100"]
    runs = {
        name: json.loads(invoke("run", bundle, "--input", path, "--json").stdout)["accuracy"]
        for name, path in label_files.items()
    }
    assert len(set(runs.values())) == 1 and runs["ids"] > 0.8
    reports = {
        name: json.loads(invoke("verify", MODEL, bundle, "--data", path, "--json").stdout)
        for name, path in label_files.items()
    }
    assert {r["accuracy"]["bundle"] for r in reports.values()} == {runs["ids"]}


def test_sensitivity_takes_one_hot_labels(tmp_path, label_files):
    bundles = {}
    for name in ("ids", "onehot"):
        bundles[name] = str(tmp_path / f"{name}.bin")
        args = ["compile", MODEL, "-o", bundles[name], "--data", label_files[name], "--passes"]
        assert invoke(*args, "prune(sparsity=0.5)").exit_code == 0
    metas = [dlcc.load(path).file.meta for path in bundles.values()]
    tables = [next(e for e in m["log"] if e["pass"].startswith("sensitivity")) for m in metas]
    assert tables[0] == tables[1] and "accuracy" in json.dumps(tables[0])


# -- a model with two inputs -----------------------------------------------------------------
@pytest.fixture(scope="module")
def two_inputs(tmp_path_factory):
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "xy")
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g", [x, y], [z])
    folder = tmp_path_factory.mktemp("two")
    onnx.save(helper.make_model(graph), folder / "add.onnx")
    dlcc.compile(str(folder / "add.onnx"), str(folder / "add.bin"))
    return str(folder / "add.bin")


def test_inputs_with_different_sample_counts(tmp_path, two_inputs):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((3, 4), np.float32), y=np.ones((2, 4), np.float32))
    result = invoke("run", two_inputs, "--input", str(path))
    assert_clean_error(result, "d.npz: the inputs hold different sample counts [2, 3]")
    np.save(tmp_path / "one.npy", np.ones((3, 4), np.float32))
    result = invoke("run", two_inputs, "--input", str(tmp_path / "one.npy"))
    assert_clean_error(result, "no array for input(s) 'x', 'y'", "one unnamed array")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".dlcc-")]
