"""Models exported by both PyTorch exporters compile at -O0 and match onnxruntime via `dlcc run`."""

from __future__ import annotations

import glob
import os

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from dlcc.cli import main

TORCH = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "torch")
MODELS = sorted(glob.glob(os.path.join(TORCH, "*.onnx")))


def max_rel_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected|."""
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def test_fixtures_cover_both_exporters_and_all_kinds():
    names = {os.path.basename(p)[: -len(".onnx")] for p in MODELS}
    kinds = ("mlp", "cnn", "lstm", "lstm_bi")
    assert {f"{k}_{e}" for k in kinds for e in ("legacy", "dynamo")} <= names


@pytest.mark.parametrize("model", MODELS, ids=os.path.basename)
@pytest.mark.parametrize("batch", [1, 8])
def test_parity_with_onnxruntime(tmp_path, model, batch):
    runner = CliRunner()
    bundle, x_path, y_path = (str(tmp_path / n) for n in ("m.bin", "x.npz", "y.npz"))
    assert runner.invoke(main, ["compile", model, "-o", bundle, "-O0"]).exit_code == 0

    session = ort.InferenceSession(model)
    spec = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else batch for d in spec.shape]
    x = np.random.default_rng(batch).standard_normal(shape).astype(np.float32)
    np.savez(x_path, **{spec.name: x})
    result = runner.invoke(main, ["run", bundle, "--input", x_path, "--output", y_path])
    assert result.exit_code == 0, result.output

    got = np.load(y_path)
    for out, expected in zip(session.get_outputs(), session.run(None, {spec.name: x})):
        assert max_rel_error(got[out.name], expected) <= 1e-4
