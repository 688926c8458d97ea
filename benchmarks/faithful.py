"""Faithful -O levels: `dlcc compile -O2/-O3 --calib` keeps the model's meaning on held-out data.

    python benchmarks/faithful.py [--data ../shared/data/mnist.npz] [--levels O3]

For LeNet-300-100 and LeNet-5, the CLI's path for -O2/-O3 with data (dlcc.budget.search):
1,000 unlabelled MNIST training images, of which the search sees the first 750 (recovery
fitted on 500, every trial scored on the other 250) and the report the last 250; then the
10,000 test images, which nothing saw. Trials run on the physical cores. Prints, per model and
level, the ratio (whole bundle file vs fp32 weights) beside the issue's target, and the
top-1 agreement with the original on the test images beside 99%, and the seconds taken.
Reference: Han et al. (Deep Compression) say about 2x pruning comes free without retraining.
"""

from __future__ import annotations

import argparse
import os
import time

import onnxruntime as ort
from _common import SAMPLES, add_data_option, mnist, table, top1

import dlcc
from dlcc.budget import search
from dlcc.data import Data

TARGETS = {"lenet_300_100": 20.0, "lenet5": 25.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--levels", default="O2,O3")
    args = parser.parse_args()
    data = mnist(args.data)
    x = data["test_x"]
    rows = []
    for name in TARGETS:
        model = os.path.join(SAMPLES, f"{name}.onnx")
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        original = top1(lambda b, s=session: s.run(None, {"image": b})[0], x)
        fp32 = sum(t.nbytes for t in dlcc.compile(model).tensors)
        for level in args.levels.split(","):
            start = time.perf_counter()
            calib = Data({"image": data["calib"]}, "1,000 training images")
            text, chosen, calibration, held = search(model, calib, None, level)
            bundle = dlcc.compile(model, passes=text, calibration=calibration, evaluation=held)
            seconds = time.perf_counter() - start
            loaded = dlcc.load_bytes(bundle.to_bytes())
            agree = (top1(lambda b, m=loaded: m.run(b)["logits"], x) == original).mean()
            ratio = fp32 / len(bundle.to_bytes())
            target = TARGETS[name] if level == "O3" else None
            rows.append(
                (
                    name,
                    f"-{level}",
                    f"{ratio:.1f}x" + (f" (>= {target:.0f}x)" if target else ""),
                    chosen["fidelity"].split(": ", 1)[1],
                    f"{100 * agree:.2f}% (>= 99%)",
                    "met" if agree >= 0.99 and (not target or ratio >= target) else "MISSED",
                    f"{seconds:.0f}",
                )
            )
            print(f"  {name} -{level}: {text}", flush=True)
    print()
    header = ("model", "level", "ratio", "on the search data", "test agreement", "", "seconds")
    print(table(rows, header))


if __name__ == "__main__":
    main()
