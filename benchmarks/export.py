"""`dlcc export` on the samples: the QDQ export beside onnxruntime's own quantize_static.

    python benchmarks/export.py [--data ../shared/data/mnist.npz] [--levels -O1,-O3]

Each sample is compiled with 1,000 MNIST training images as calibration data, exported as
float and as QDQ, and run on onnxruntime over the 10k test images. The first table compares
the QDQ file with quantize_static's (QDQ, int8, per channel, the same calibration images) on
the original model: bytes, their ratio (the bar is 1.1), the top-1 agreement of each with
its reference (the export with `dlcc run`, quantize_static with the fp32 model) and both
accuracies; and which int8 kernels onnxruntime fused. The second shows, per -O level, the
agreement of both exports with `dlcc run` and the largest error relative to its largest logit.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from _common import SAMPLES, add_data_option, mnist, quiet_root_logger, table
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

import dlcc
from dlcc.api import to_onnx

INT8_KERNELS = ("QLinearConv", "QGemm", "QLinearMatMul")


class Images(CalibrationDataReader):
    """Calibration batches of 100 images for quantize_static."""

    def __init__(self, images: np.ndarray) -> None:
        self.batches = iter([{"image": images[i : i + 100]} for i in range(0, len(images), 100)])

    def get_next(self):
        return next(self.batches, None)


def run(path: str, images: np.ndarray, optimized: str | None = None) -> np.ndarray:
    """Logits of the ONNX file at `path` on onnxruntime, in batches of 1,000."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized:
        options.optimized_model_filepath = optimized
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return np.concatenate(
        [session.run(None, {"image": images[i : i + 1000]})[0] for i in range(0, len(images), 1000)]
    )


def agree(a: np.ndarray, b: np.ndarray) -> str:
    """Top-1 agreement of two logit arrays (or logits and labels), in percent."""
    return f"{100 * np.mean(a.argmax(1) == (b if b.ndim == 1 else b.argmax(1))):.2f}%"


def int8_kernels(optimized: str) -> set[str]:
    """The int8 kernels onnxruntime fused into the optimized model at `optimized`."""
    return {n.op_type for n in onnx.load(optimized).graph.node} & set(INT8_KERNELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--levels", default="-O0,-O1,-O2,-O3", help="levels of the 2nd table")
    args = parser.parse_args()
    data = mnist(args.data)
    test_x, test_y, calib = data["test_x"], data["test_y"], data["calib"]

    sizes, levels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("lenet5", "lenet_300_100"):
            model = os.path.join(SAMPLES, f"{name}.onnx")
            fp32 = run(model, test_x)
            for level in args.levels.split(","):
                bundle = os.path.join(tmp, f"{name}{level}.bin")
                calibration = None if level == "-O0" else {"image": calib}
                dlcc.compile(model, bundle, passes=level, calibration=calibration)
                expected = np.concatenate(
                    [
                        dlcc.load(bundle).run(test_x[i : i + 1000])["logits"]
                        for i in range(0, len(test_x), 1000)
                    ]
                )
                row = [name, level]
                for fmt in ("float", "qdq"):
                    out = os.path.join(tmp, f"{name}{level}.{fmt}.onnx")
                    to_onnx(bundle, out, format=fmt)
                    got = run(out, test_x, os.path.join(tmp, "opt.onnx"))
                    err = np.abs(got - expected).max() / np.abs(expected).max()
                    row += [agree(got, expected), f"{err:.1e}"]
                    if level == "-O1" and fmt == "qdq":
                        export = (out, got, int8_kernels(os.path.join(tmp, "opt.onnx")))
                levels.append(tuple(row))
                if level != "-O1":
                    continue
                static = os.path.join(tmp, f"{name}.static.onnx")
                with quiet_root_logger():
                    quantize_static(
                        model, static, Images(calib), quant_format=QuantFormat.QDQ, per_channel=True
                    )
                reference = run(static, test_x, os.path.join(tmp, "opt.onnx"))
                static_kernels = int8_kernels(os.path.join(tmp, "opt.onnx"))
                ours, theirs = os.path.getsize(export[0]), os.path.getsize(static)
                sizes.append(
                    (
                        name,
                        f"{ours:,}",
                        f"{theirs:,}",
                        f"{ours / theirs:.3f}",
                        agree(export[1], expected),
                        agree(reference, fp32),
                        agree(export[1], test_y),
                        agree(reference, test_y),
                        f"{'+'.join(sorted(export[2]))} / {'+'.join(sorted(static_kernels))}",
                    )
                )
    print("QDQ export of the calibrated -O1 bundle vs quantize_static (QDQ, int8, per channel)")
    print(
        table(
            sizes,
            (
                "model", "export B", "quantize_static B", "ratio (<= 1.1)",
                "export vs dlcc run", "static vs fp32", "export acc", "static acc",
                "int8 kernels (export / static)",
            ),
        )
    )  # fmt: skip
    print(f"\nonnxruntime on the exports vs `dlcc run`, top-1 agreement on {len(test_x):,} images")
    print(
        table(
            levels,
            ("model", "level", "float agree", "float max err", "qdq agree", "qdq max err"),
        )
    )


if __name__ == "__main__":
    main()
