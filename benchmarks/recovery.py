"""Recovery without labels or retraining: the gain of each calibration-only step on MNIST.

    python benchmarks/recovery.py [--data ../shared/data/mnist.npz] [--models lenet5,...]

Each sample model is compiled with a sequence of pipelines that adds the recovery steps one
at a time (equalize, refit after pruning, refit after k-means, bias correction) around the
same pruning rates S, with the first 1,000 training images as calibration data (no labels),
and measured on the 10k test images: bundle bytes, ratio to the fp32 weights, top-1 error of
the bundle (dlcc interp) against the original (onnxruntime), and the change each step makes.
The rates S are per model: each model's last layer (few weights, large effect on the
logits) is pruned mildly. A second table applies the whole recovery at the -O3 rates.
Acceptance (ISSUE part 4): LeNet-300-100 >= 20x with error <= original + 0.5 points.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import onnxruntime as ort
from _common import SAMPLES, add_data_option, error, mnist, table

import dlcc

RATES = {
    "lenet_300_100": "prune(sparsity=0.85,layers=fc2:0.6;fc3:0.3)",
    "lenet5": "prune(sparsity=0.9,layers=Conv#0:0.35;Conv:0.7;fc2:0.5)",
}
O3_RATES = "prune(sparsity=0.92,layers=Conv#0:0.35;Conv:0.85)"
STEPS = (
    ("S,kmeans,quantize,huffman", "no recovery"),
    ("equalize,S,kmeans,quantize,huffman", "+ equalize"),
    ("equalize,S,refit,kmeans,quantize,huffman", "+ refit after prune"),
    ("equalize,S,refit,kmeans,refit,quantize,huffman", "+ refit after kmeans"),
    ("equalize,S,refit,kmeans,refit,quantize,biascorrect,huffman", "+ biascorrect"),
)
HEADER = ("model / pipeline", "bundle B", "ratio", "top-1 error", "vs original", "step gain")


def measure(model: str, steps, rates: str, data, tmp: str) -> tuple[list[tuple], list[dict]]:
    """One table block for `model`: the original, then each pipeline of `steps`."""
    test_x, test_y, calib = data
    weights = sum(t.nbytes for t in dlcc.compile(model).tensors)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    original = error(lambda x: session.run(None, {"image": x})[0], test_x, test_y)
    name = os.path.basename(model).removesuffix(".onnx")
    rows = [(f"{name}: original (onnxruntime)", f"{weights:,}", "1.0x", f"{original:.2f}%", "")]
    rows[0] += ("",)
    results, previous = [], None
    for pipeline, label in steps:
        passes = pipeline.replace("S", rates)
        bundle = os.path.join(tmp, f"{name}.bin")
        dlcc.compile(model, bundle, passes=passes, calibration={"image": calib})
        size = os.path.getsize(bundle)
        loaded = dlcc.load(bundle)
        err = error(lambda x, b=loaded: b.run(x)["logits"], test_x, test_y)
        gain = "" if previous is None else f"{previous - err:+.2f}"
        rows.append(
            (
                f"  {label}",
                f"{size:,}",
                f"{weights / size:.1f}x",
                f"{err:.2f}%",
                f"{err - original:+.2f}",
                gain,
            )
        )
        results.append({"ratio": weights / size, "error": err, "original": original})
        previous = err
    return rows, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--models", default=",".join(RATES))
    args = parser.parse_args()
    data = mnist(args.data)
    test_x = data["test_x"]
    test_y = data["test_y"]
    calib = data["calib"]
    data = (test_x, test_y, calib)
    chosen, at_o3, verdicts = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            model = os.path.join(SAMPLES, f"{name}.onnx")
            rows, results = measure(model, STEPS, RATES[name], data, tmp)
            chosen += rows
            final = results[-1]
            ok = final["ratio"] >= 20 and final["error"] <= final["original"] + 0.5
            verdicts.append(
                f"{name}: {final['ratio']:.1f}x (>= 20x), error {final['error']:.2f}% "
                f"(<= {final['original']:.2f} + 0.5): {'PASS' if ok else 'FAIL'}"
            )
            steps = (STEPS[0], (STEPS[-1][0], "+ all recovery steps"))
            rows, _ = measure(model, steps, O3_RATES, data, tmp)
            at_o3 += rows
    print("calibration: the first 1,000 training images, no labels; test: the 10k test images")
    for name in args.models.split(","):
        print(f"S for {name}: {RATES[name]}")
    print("pipelines (S = the rates above):")
    for pipeline, label in STEPS:
        print(f"  {label:22s} {pipeline}")
    print()
    print(table(chosen, HEADER))
    print()
    print("\n".join(verdicts))
    print()
    print(f"at the -O3 rates, S = {O3_RATES}:")
    print(table(at_o3, HEADER))


if __name__ == "__main__":
    main()
