"""Deep Compression on LeNet-300-100 and LeNet-5: dlcc -O3 beside Han et al.'s Table 1.

    python benchmarks/deep_compression.py [--data ../shared/data/mnist.npz] [--passes -O3]

The models are the samples (samples/train_mnist.py trained them with PyTorch, Adam, 12 and 6
epochs on the 60k MNIST training images; see samples/README.md). Each is compiled with the
given pipeline and 1,000 training images as calibration data, and the table shows the whole
bundle file's size against the fp32 weights, the top-1 accuracy on the 10k test images of
the original (onnxruntime) and of the bundle (dlcc interp), and the paper's figures, which
were reached *with retraining* (dlcc's -O3 does not retrain). A second table checks that
every Huffman-coded stream is within 3% of its Shannon bound plus its code tables (the
encoder's model of them, `huffman.table_bytes`: ~8 B + half a byte per symbol a block), and a
third the int8 -O1 bundles (calibrated: integer activations) against -O0: size ratio and
top-1 agreement with onnxruntime's fp32 output on the 10k test images.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
import onnxruntime as ort
from _common import HAN_TABLE1, SAMPLES, add_data_option, mnist, table, top1

import dlcc
from dlcc.explain import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--passes", default="-O3")
    args = parser.parse_args()
    data = mnist(args.data)
    test_x = data["test_x"]
    test_y = data["test_y"]
    calib = data["calib"]

    sizes, streams, int8 = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (err_before, err_after, paper_rate) in HAN_TABLE1.items():
            model = os.path.join(SAMPLES, f"{name}.onnx")
            fp32 = os.path.join(tmp, f"{name}-O0.bin")
            bundle = os.path.join(tmp, f"{name}.bin")
            weights = sum(t.nbytes for t in dlcc.compile(model, fp32).tensors)
            dlcc.compile(model, bundle, passes=args.passes, calibration={"image": calib})
            size = os.path.getsize(bundle)
            session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            loaded = dlcc.load(bundle)
            before = (
                top1(lambda x, s=session: s.run(None, {"image": x})[0], test_x) == test_y
            ).mean()
            after = (top1(lambda x, b=loaded: b.run(x)["logits"], test_x) == test_y).mean()
            sizes.append(
                (
                    name,
                    f"{weights:,}",
                    f"{size:,}",
                    f"{weights / size:.1f}x",
                    f"{paper_rate}x",
                    f"{100 * before:.2f}%",
                    f"{100 * after:.2f}%",
                    f"{100 * (after - before):+.2f}",
                    f"{err_before - err_after:+.2f} (retrained)",
                )
            )
            o1 = os.path.join(tmp, f"{name}-O1.bin")
            dlcc.compile(model, o1, passes="-O1", calibration={"image": calib})
            ort_top1 = np.concatenate(
                [
                    session.run(None, {"image": test_x[i : i + 1000]})[0].argmax(1)
                    for i in range(0, len(test_x), 1000)
                ]
            )
            ours = dlcc.load(o1).run(test_x)["logits"].argmax(1)
            ratio = os.path.getsize(fp32) / os.path.getsize(o1)
            int8.append(
                (
                    name,
                    f"{os.path.getsize(fp32):,}",
                    f"{os.path.getsize(o1):,}",
                    f"{ratio:.2f}x",
                    f"{100 * (ours == ort_top1).mean():.2f}%",
                )
            )
            report = describe(loaded, size)
            for t in report["tensors"]:
                for role, s in t["streams"].items():
                    if s["coding"] == "huffman":
                        bound = s["entropy_bytes"] + s["table_bytes"]
                        streams.append(
                            (
                                f"{name} {t['name']} {role}",
                                s["symbols"],
                                f"{s['entropy_bytes']:,.0f}",
                                s["table_bytes"],
                                f"{s['bytes']:,}",
                                f"{s['bytes'] / bound:.4f}",
                            )
                        )
    print(f"pipeline: {args.passes} (resolved in the bundle's META), calibration: 1,000 images")
    print(
        table(
            sizes,
            (
                "model",
                "fp32 weights B",
                "bundle B",
                "ratio",
                "paper",
                "acc fp32",
                "acc dlcc",
                "change (pts)",
                "paper change",
            ),
        )
    )
    print()
    print(
        table(
            streams,
            (
                "Huffman stream",
                "symbols",
                "entropy B",
                "table B",
                "coded B",
                "coded / (entropy+table)",
            ),
        )
    )
    worst = max(float(r[-1]) for r in streams)
    print(f"\nworst stream: {worst:.4f} of its bound (acceptance: <= 1.03)")
    print()
    print(
        table(
            int8,
            (
                "int8 -O1 (calibrated)",
                "-O0 B",
                "-O1 B",
                "-O0 / -O1 (>= 3.9x)",
                "top-1 agreement with ort (>= 99%)",
            ),
        )
    )


if __name__ == "__main__":
    main()
