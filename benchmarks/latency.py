"""`dlcc run` (interp target) latency divided by onnxruntime's, same model, batch and machine.

    python benchmarks/latency.py [--quick]

Times the bundle's `run()` (what `dlcc run` does after loading) and onnxruntime's
`InferenceSession.run()` on the same inputs, best of a few runs after a warm-up, and prints
the ratio: machines here are shared and noisy, the ratio is the figure. Models: the two MNIST
samples and ResNet-50 from onnx's light zoo (seeded random weights), batch 1 and 256.
`--quick` skips ResNet-50 at batch 256.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import onnxruntime as ort
from _common import SAMPLES, best_time, table
from light_models import data_input, light_model

import dlcc


def measure(model: str, input_name: str, x: np.ndarray, repeat: int) -> tuple[float, float]:
    """(dlcc seconds, onnxruntime seconds) for one batch."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle = os.path.join(tmp, "m.bin")
        dlcc.compile(model, bundle)
        loaded = dlcc.load(bundle)
        ours = best_time(lambda: loaded.run({input_name: x}), repeat)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    theirs = best_time(lambda: session.run(None, {input_name: x}), repeat)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip ResNet-50 at batch 256")
    args = parser.parse_args()

    with np.load(os.path.join(SAMPLES, "mnist_test_256.npz")) as data:
        images = data["image"]
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        resnet = light_model("resnet50", tmp)
        cases = [
            (os.path.join(SAMPLES, f"{name}.onnx"), name, "image", images[:batch], 20)
            for name in ("lenet_300_100", "lenet5")
            for batch in (1, 256)
        ]
        for batch in (1,) if args.quick else (1, 256):
            x = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
            cases.append((resnet, "resnet50", data_input(resnet)[0], x, 3 if batch == 1 else 1))
        for model, name, input_name, x, repeat in cases:
            ours, theirs = measure(model, input_name, x, repeat)
            ratio = f"{ours / theirs:.2f}x"
            rows.append((name, len(x), f"{ours * 1e3:.2f}", f"{theirs * 1e3:.2f}", ratio))
            print(f"  measured {name} batch {len(x)}: {ratio}", flush=True)
    print(table(rows, ("model", "batch", "dlcc interp ms", "onnxruntime ms", "dlcc / ort")))


if __name__ == "__main__":
    main()
