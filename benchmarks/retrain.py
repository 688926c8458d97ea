"""Deep Compression with retraining on LeNet-300-100 and LeNet-5, beside Han et al.'s Table 1.

    python benchmarks/retrain.py [--data ../shared/data/mnist.npz] [--epochs E] [--seeds 0,1,2]
                                 [--models lenet_300_100,lenet5] [--passes P] [--steps 3]

Each sample model is compiled with `with_retraining(PASSES[model], E)` (E: --epochs, or EPOCHS
per model). PASSES prunes every layer at the paper's own rate (Han et al., ICLR 2016,
Tables 2-3: LeNet-300-100 keeps 8% / 9% / 26% of its three layers' weights, LeNet-5 66% /
12% / 8% / 19%), then kmeans, quantize, huffman as -O3 does. with_retraining makes each
prune three prunes on a geometric schedule, each followed by a finetune on the 60k MNIST
training images (E, E and 3E epochs, the last at a higher rate with weight decay), and
kmeans entropy-constrained (rate=0.5) followed by E/2 epochs of centroid training;
calibration is the first 1,000 training images, so the bundle runs int8 activations.
`dlcc.compile(..., train=...)` does it all, as `dlcc compile --finetune E --train T.npz` does.

Every model runs once per seed (the mini-batch order), because one run is not a figure:
across seeds the test error of the same schedule moves by ~0.1 points, as much as the
acceptance margin. The table shows the bundle file's size against the fp32 weights (the
tensor bytes of the -O0 bundle), the top-1 test error (10k images) of the original
(onnxruntime) and of the bundle (dlcc interp), the paper's figures and the compile time,
then the mean over seeds. Acceptance: LeNet-300-100 >= 40x and LeNet-5 >= 39x, each with
error <= original + 0.1 points, and the LeNet-300-100 compile in <= 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort
from _common import HAN_TABLE1, SAMPLES, add_data_option, error, mnist, table

import dlcc
from dlcc.passes.finetune import with_retraining

TARGET = {"lenet_300_100": 40, "lenet5": 39}
# The paper's per-layer pruning (sparsity = 1 - kept): Dense#N / Conv#N is the N-th such layer.
PRUNE = {
    "lenet_300_100": "sparsity=0.92,layers=Dense#1:0.91;Dense#2:0.74",
    "lenet5": "sparsity=0.92,layers=Conv#0:0.34;Conv#1:0.88;Dense#1:0.81",
}
PASSES = {name: f"prune({rates}),kmeans,quantize,huffman" for name, rates in PRUNE.items()}
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--epochs", type=int, help="with_retraining's E (default: EPOCHS)")
    parser.add_argument("--models", default="lenet_300_100,lenet5")
    parser.add_argument("--passes", help="the pipeline to add retraining to (default: PASSES)")
    parser.add_argument("--keep", help="a folder to keep the bundles in")
    parser.add_argument("--seeds", default="0,1,2", help="finetune shuffling seeds, one run each")
    parser.add_argument("--steps", type=int, default=3, help="prune -> retrain steps per prune")
    args = parser.parse_args()
    data = mnist(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        for name in args.models.split(","):
            model = os.path.join(SAMPLES, f"{name}.onnx")
            weights = sum(
                t.nbytes for t in dlcc.compile(model, os.path.join(tmp, "O0.bin")).tensors
            )
            session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
            test = data["test_x"], data["test_y"]
            before = error(lambda x, s=session: s.run(None, {"image": x})[0], *test)
            runs = [
                compile_run(name, model, os.path.join(tmp, f"{name}-{seed}.bin"), seed, args, data)
                for seed in map(int, args.seeds.split(","))
            ]
            rows += [_row(name, f"seed {r[0]}", weights, before, *r[1:]) for r in runs]
            if len(runs) > 1:
                mean = [float(np.mean([r[i] for r in runs])) for i in (1, 2, 3)]
                rows.append(_row(name, "mean", weights, before, *mean))
    print(table(rows, HEADER))
    print(f"\n{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end")


HEADER = (
    "model",
    "run",
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
)


def compile_run(name: str, model: str, bundle: str, seed: int, args, data: dict) -> tuple:
    """Compile `model` with retraining (shuffling `seed`): (seed, bytes, error %, seconds)."""
    passes = with_retraining(
        args.passes or PASSES[name], args.epochs or EPOCHS[name], steps=args.steps, seed=seed
    )
    print(f"{name}, seed {seed}: {passes}", flush=True)
    start = time.perf_counter()
    dlcc.compile(
        model,
        bundle,
        passes=passes,
        calibration={"image": data["calib"]},
        train={"image": data["train_x"], "labels": data["train_y"]},
        progress=_progress(),
    )
    seconds = time.perf_counter() - start
    loaded = dlcc.load(bundle)
    after = error(lambda x: loaded.run(x)["logits"], data["test_x"], data["test_y"])
    return seed, os.path.getsize(bundle), after, seconds


def _row(name, run, weights, before, size, after, seconds) -> tuple:
    err_paper, err_paper_after, rate_paper = HAN_TABLE1[name]
    ok = weights / size >= TARGET[name] and after <= before + 0.1 + 1e-9
    return (
        name,
        run,
        f"{weights:,}",
        f"{size:,.0f}",
        f"{weights / size:.1f}x",
        f"{rate_paper}x",
        f"{before:.2f}%",
        f"{after:.2f}%",
        f"{after - before:+.2f}",
        f"{err_paper:.2f}% -> {err_paper_after:.2f}%",
        f"{seconds:.0f}",
        "yes" if ok else "NO",
    )


if __name__ == "__main__":
    main()
