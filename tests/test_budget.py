"""Sensitivity analysis and the automatic budget, on the MLP sample."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import sample_path

from dlcc.budget import choose
from dlcc.cli import main
from dlcc.frontend import import_onnx
from dlcc.passes.sensitivity import layer_table, noise_band

MODEL = sample_path("lenet_300_100.onnx")


@pytest.fixture(scope="module")
def data(sample_images):
    images, labels = sample_images
    return {"image": images, "labels": labels}


def test_sensitivity_table_is_ranked_and_marked(data):
    table = layer_table(import_onnx(MODEL), data, {"prune": (0.5, 0.95), "kmeans": (2,)})
    assert len(table["layers"]) == 3 * 3
    deltas = [r["delta"] for r in table["layers"]]
    assert deltas == sorted(deltas)
    assert table["noise_band"] == pytest.approx(noise_band(table["baseline"], 256))
    for row in table["layers"]:
        assert row["safe"] == (-row["delta"] <= table["noise_band"])
    worst = table["layers"][0]
    assert worst["setting"] in (0.95, 2) and not worst["safe"]


def test_budget_meets_its_floor_and_feeds_back(tmp_path, data, sample_images):
    images, _ = sample_images
    text, report = choose(MODEL, data, {"image": images}, max_drop=0.02)
    assert report["score"] >= report["floor"] == pytest.approx(report["baseline"] - 0.02)
    out = str(tmp_path / "b.bin")
    result = CliRunner().invoke(main, ["compile", MODEL, "-o", out, "--passes", text])
    assert result.exit_code == 0 and "prune(sparsity=0.0,layers=" in text


def test_unreachable_budget_names_layers_and_writes_nothing(tmp_path):
    images = np.load(sample_path("mnist_test_256.npz"))["image"]
    np.savez(tmp_path / "d.npz", image=images)
    out = tmp_path / "never.bin"
    result = CliRunner().invoke(
        main,
        [
            "compile",
            MODEL,
            "-o",
            str(out),
            "--calib",
            str(tmp_path / "d.npz"),
            "--data",
            str(tmp_path / "d.npz"),
            "--min-agreement",
            "100.1%",
        ],
    )
    assert result.exit_code == 2 and "cannot be met" in result.stderr and "/fc" in result.stderr
    assert not out.exists()
