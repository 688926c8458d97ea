"""Deep Compression with retraining on LeNet-300-100 and LeNet-5, beside Han et al.'s Table 1.

    python benchmarks/retrain.py [--data ../shared/data/mnist.npz] [--epochs E] [--seed S]
                                 [--models lenet_300_100,lenet5] [--passes -O3] [--steps 3]

Each sample model is compiled with `with_retraining(<pipeline>, E)` (E: --epochs, or EPOCHS
per model): the -O3 prune becomes three prunes on a geometric schedule (57%, 81%, 92% of
the Dense layers; the convolutions alike), each followed by a finetune on the 60k MNIST
training images (E, E and 3E epochs, the last with weight decay), and kmeans by E/2 epochs
of centroid training; quantize and huffman then run as in -O3 (calibration: the first 1,000
training images, so the bundle runs int8 activations). `dlcc.compile(..., train=...)` does
it all, as `dlcc compile --finetune E --train train.npz` does.

The table shows the bundle file's size against the fp32 weights (the tensor bytes of the -O0
bundle), the top-1 test error (10k images) of the original (onnxruntime) and of the bundle
(dlcc interp), the paper's figures, and the wall time of the whole compile. Acceptance:
LeNet-300-100 >= 40x and LeNet-5 >= 39x, each with error <= original + 0.1 points, and the
LeNet-300-100 compile in <= 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
from _common import SAMPLES, add_data_option, mnist, table

import dlcc
from dlcc.passes.finetune import with_retraining

# Han et al., ICLR 2016, Table 1: (top-1 error before, after, compression rate).
PAPER = {"lenet_300_100": (1.64, 1.58, 40), "lenet5": (0.80, 0.74, 39)}
TARGET = {"lenet_300_100": 40, "lenet5": 39}
# Epochs per finetune step (with_retraining's E): the MLP's epoch takes ~1 s, LeNet-5's ~20 s.
EPOCHS = {"lenet_300_100": 10, "lenet5": 2}


def _progress():
    """Print each finetune epoch's summary once (the description carries the last epoch)."""
    shown = set()

    def show(description: str, done: int, total: int) -> None:
        if description.startswith("finetune (") and description not in shown:
            shown.add(description)
            print(f"    {description}", flush=True)

    return show


def error(predict, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 error in percent over `images`, in batches of 1,000."""
    hits = sum(
        int((predict(images[i : i + 1000]).argmax(1) == labels[i : i + 1000]).sum())
        for i in range(0, len(images), 1000)
    )
    return 100.0 * (1 - hits / len(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--epochs", type=int, help="with_retraining's E (default: EPOCHS)")
    parser.add_argument("--models", default="lenet_300_100,lenet5")
    parser.add_argument("--passes", default="-O3", help="the pipeline to add retraining to")
    parser.add_argument("--keep", help="a folder to keep the bundles in")
    parser.add_argument("--seed", type=int, default=0, help="finetune shuffling seed")
    parser.add_argument("--steps", type=int, default=3, help="prune -> retrain steps per prune")
    args = parser.parse_args()
    data = mnist(args.data)
    train_x, train_y = data["train_x"], data["train_y"]
    test_x, test_y = data["test_x"], data["test_y"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for name in args.models.split(","):
            err_paper, err_paper_after, rate_paper = PAPER[name]
            model = os.path.join(SAMPLES, f"{name}.onnx")
            weights = sum(
                t.nbytes for t in dlcc.compile(model, os.path.join(tmp, "O0.bin")).tensors
            )
            bundle = os.path.join(tmp, f"{name}.bin")
            epochs = args.epochs or EPOCHS[name]
            passes = with_retraining(args.passes, epochs, steps=args.steps, seed=args.seed)
            print(f"{name}: {passes}", flush=True)
            start = time.perf_counter()
            dlcc.compile(
                model,
                bundle,
                passes=passes,
                calibration={"image": data["calib"]},
                train={"image": train_x, "labels": train_y},
                progress=_progress(),
            )
            seconds = time.perf_counter() - start
            size = os.path.getsize(bundle)
            session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            before = error(lambda x, s=session: s.run(None, {"image": x})[0], test_x, test_y)
            loaded = dlcc.load(bundle)
            after = error(lambda x, b=loaded: b.run(x)["logits"], test_x, test_y)
            ok = weights / size >= TARGET[name] and after <= before + 0.1 + 1e-9
            rows.append(
                (
                    name,
                    f"{weights:,}",
                    f"{size:,}",
                    f"{weights / size:.1f}x",
                    f"{rate_paper}x",
                    f"{before:.2f}%",
                    f"{after:.2f}%",
                    f"{after - before:+.2f}",
                    f"{err_paper:.2f}% -> {err_paper_after:.2f}%",
                    f"{seconds:.0f}",
                    "yes" if ok else "NO",
                )
            )
    print(
        table(
            rows,
            (
                "model",
                "fp32 weights B",
                "bundle B",
                "ratio",
                "paper",
                "error fp32",
                "error dlcc",
                "change (pts)",
                "paper error",
                "compile s",
                "meets target",
            ),
        )
    )
    print(f"\n{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
