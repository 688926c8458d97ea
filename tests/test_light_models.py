"""Parity with onnxruntime on the onnx package's nine light ImageNet models.

Each model is rewritten by `light_models.light_model` (random weights, symbolic batch, logits
instead of the final Softmax), compiled once with `dlcc compile -O0` and run with `dlcc run`
(in-process CLI) at batch 1 and 8, comparing with onnxruntime on the same file. The -O0
bundle must also stay within 1% + 4 KiB of the model's float32 weight bytes. Every model is
marked slow except SqueezeNet (about 2 s), which also runs without `-m slow`; all nine take
about 1.5 min on 2 cores, VGG-19 half of it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner, Result
from light_models import LIGHT_MODELS, data_input, light_model, weight_bytes

from dlcc.cli import main

FAST = {"squeezenet"}
MODELS = [pytest.param(n, marks=() if n in FAST else pytest.mark.slow) for n in LIGHT_MODELS]
MAX_REL_ERR = 1e-4
SIZE_SLACK = (0.01, 4096)  # a -O0 bundle is at most 1% + 4 KiB over its float32 weights


@dataclasses.dataclass
class Compiled:
    """A rewritten light model, the CLI's result compiling it, and onnxruntime on it."""

    name: str
    model: str
    bundle: str
    compiled: Result
    input_name: str
    sample_shape: tuple[int, ...]
    session: ort.InferenceSession

    def check_compiled(self) -> None:
        result = self.compiled
        assert result.exit_code == 0, result.output or repr(result.exception)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module", params=MODELS)
def light(request, tmp_path_factory):
    """A rewritten light model, its -O0 bundle (compiled through the CLI) and an ORT session."""
    name = request.param
    work = tmp_path_factory.mktemp(name)
    model = light_model(name, str(work))
    bundle = str(work / f"{name}.bin")
    compiled = invoke("compile", model, "-o", bundle, "-O0")
    input_name, sample_shape = data_input(model)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    yield Compiled(name, model, bundle, compiled, input_name, sample_shape, session)
    shutil.rmtree(work, ignore_errors=True)  # the big models take 0.5 GB each


@pytest.mark.parametrize("batch", [1, 8])
def test_parity_with_onnxruntime(light: Compiled, batch: int, tmp_path):
    light.check_compiled()
    x = np.random.default_rng(batch).standard_normal((batch, *light.sample_shape), np.float32)
    np.save(tmp_path / "x.npy", x)
    y_path = str(tmp_path / "y.npy")
    result = invoke("run", light.bundle, "--input", str(tmp_path / "x.npy"), "--output", y_path)
    assert result.exit_code == 0, result.output or repr(result.exception)

    got = np.load(y_path)
    (expected,) = light.session.run(None, {light.input_name: x})
    assert got.shape == expected.shape and got.dtype == np.float32
    # Max relative error against the largest logit: max|dlcc - ort| / max|ort|.
    rel_err = float(np.abs(got - expected).max() / np.abs(expected).max())
    print(f"{light.name} batch {batch}: max rel error {rel_err:.2e}")
    assert rel_err <= MAX_REL_ERR, f"{light.name} batch {batch}: max rel error {rel_err:.3g}"


def test_bundle_size_tracks_weights(light: Compiled):
    light.check_compiled()
    weights = weight_bytes(light.model)
    limit = weights * (1 + SIZE_SLACK[0]) + SIZE_SLACK[1]
    size = os.path.getsize(light.bundle)
    assert size <= limit, f"{light.name}: bundle {size:,} B, weights {weights:,} B"
