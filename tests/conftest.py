"""Shared fixtures: the sample models, compiled once per session."""

from __future__ import annotations

import os

import numpy as np
import pytest

import dlcc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
SAMPLE_MODELS = ("lenet_300_100", "lenet5")


def invoke(*args: str):
    """Run the real `dlcc` CLI in-process; exceptions other than its own exit propagate."""
    from click.testing import CliRunner

    from dlcc.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def assert_clean_error(result, *fragments: str) -> None:
    """Exit code 2 and exactly one stderr line `dlcc: error: ...` naming what is wrong."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dlcc: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def sample_path(name: str) -> str:
    """Path of a file in samples/."""
    return os.path.join(SAMPLES, name)


@pytest.fixture(scope="session")
def sample_images() -> tuple[np.ndarray, np.ndarray]:
    """The 256 MNIST test images shipped in samples/ and their labels."""
    with np.load(sample_path("mnist_test_256.npz")) as data:
        return data["image"], data["labels"]


@pytest.fixture(scope="session")
def sample_bundles(tmp_path_factory) -> dict[str, str]:
    """Each sample model compiled at -O0, by name."""
    out = tmp_path_factory.mktemp("bundles")
    paths = {}
    for name in SAMPLE_MODELS:
        paths[name] = str(out / f"{name}.bin")
        dlcc.compile(sample_path(f"{name}.onnx"), paths[name])
    return paths
