"""The runtime is deployable alone: it loads and runs a bundle without onnx, onnxruntime, click."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import dlcc

BLOCKED = ("onnx", "onnxruntime", "click", "threadpoolctl")  # (threadpoolctl: optional)

SCRIPT = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None  # importing it now raises ImportError, as if not installed
import numpy as np
import dlcc.runtime
from dlcc.runtime.loader import load_bundle
out = load_bundle({path!r}).run(np.load({x!r}))
np.save({y!r}, out["logits"])
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {blocked!r} and sys.modules[m])
assert not loaded, loaded
"""


def test_runtime_runs_without_onnx_onnxruntime_click(tmp_path, sample_bundles, sample_images):
    x, y = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(x, sample_images[0][:4])
    script = SCRIPT.format(blocked=BLOCKED, path=sample_bundles["lenet5"], x=str(x), y=str(y))
    subprocess.run([sys.executable, "-c", script], check=True)
    expected = dlcc.load(sample_bundles["lenet5"]).run(sample_images[0][:4])["logits"]
    # Float sums: without threadpoolctl its BLAS runs every product on its own thread count,
    # this process small ones on one (runtime/threads.py), and SGEMM rounds by the split.
    np.testing.assert_allclose(np.load(y), expected, rtol=1e-5, atol=1e-5)


def test_importing_the_runtime_pulls_in_none_of_them():
    code = (
        "import sys, dlcc.runtime, dlcc.runtime.loader, dlcc.runtime.interpreter;"
        f"print(sorted(m for m in {BLOCKED!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert result.stdout.strip() == "[]"
