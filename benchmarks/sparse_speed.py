"""Sparse execution: a -O3 bundle against its -O0 at batch 1 and 256, and where sparse pays.

    python benchmarks/sparse_speed.py [--data ../shared/data/mnist.npz] [--bundles DIR]
                                      [--threads 1,default] [--repeat R]

1. The crossover (runtime/sparse.py's rule): each int8 Dense weight of the -O3 bundles (and
   two random ones), one input row with a given fraction of nonzero inputs, the dense int8
   product against the sparse one over the active rows; ratio < 1: sparse pays.
2. LeNet-300-100 and LeNet-5 compiled as a user would (`dlcc compile M -O0` and `-O3 --calib`
   with the first 1,000 MNIST training images), run through `dlcc.load(...).run` on the
   interp target at batch 1 and 256 (test images), with the -O3 bundle also run with sparse
   execution off, and onnxruntime fp32 on the original model; interleaved rounds, medians.
   Prints -O0 / -O3 beside the issue's 2x target, and whether sparse and dense execution of
   the -O3 bundle give the same outputs bit for bit.

`--bundles DIR` keeps the four bundles there (compiled when missing: -O3 searches ~1 min).
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from _common import SAMPLES, add_data_option, mnist, table
from int8_speed import interleaved

import dlcc
from dlcc.runtime.interpreter import Interpreter, NumpyEngine
from dlcc.runtime.kernels import NoAttrs, get_kernel
from dlcc.runtime.kernels.constants import mark_constant
from dlcc.runtime.loader import LoadedBundle
from dlcc.runtime.sparse import DENSITY, MIN_WEIGHT, active_rows, rows_product
from dlcc.runtime.threads import blas_threads

MODELS = ("lenet_300_100", "lenet5")
FRACTIONS = (0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0)


def compile_bundles(directory: str, calib: np.ndarray) -> dict[tuple[str, str], str]:
    """(model, level) -> bundle path, compiled through the CLI when not there yet."""
    calib_path = os.path.join(directory, "calib.npz")
    paths = {}
    for name in MODELS:
        for level in ("O0", "O3"):
            path = paths[name, level] = os.path.join(directory, f"{name}.{level}.bin")
            if os.path.exists(path):
                continue
            if not os.path.exists(calib_path):
                np.savez(calib_path, image=calib)
            command = ["dlcc", "compile", os.path.join(SAMPLES, f"{name}.onnx"), "-o", path]
            command += [f"-{level}"] + (["--calib", calib_path] if level == "O3" else [])
            print("  " + " ".join(command), file=sys.stderr, flush=True)
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return paths


def crossover(weights: list[tuple[str, np.ndarray]], rounds: int) -> str:
    """The table of sparse / dense time per int8 Dense weight and active fraction."""
    dense = get_kernel("Dense").fn
    rng = np.random.default_rng(0)
    rows = []
    for name, w in weights:
        k = w.shape[0]
        cells = []
        for fraction in FRACTIONS:
            x = np.zeros((1, k), np.int8)
            on = rng.choice(k, max(1, round(fraction * k)), replace=False)
            x[0, on] = rng.integers(1, 128, len(on))
            assert np.array_equal(_sparse(x, w), dense(NoAttrs(), x, w))
            med = interleaved(
                {
                    "dense": lambda x=x, w=w: dense(NoAttrs(), x, w),
                    "sparse": lambda x=x, w=w: _sparse(x, w),
                },
                rounds,
            )
            cells.append(f"{med['sparse'] / med['dense']:.2f}")
        rows.append((name, f"{w.shape[0]}x{w.shape[1]}", f"{(w != 0).mean():.0%}", *cells))
    header = ("weight of", "shape", "density", *(f"{f:.0%} on" for f in FRACTIONS))
    return table(rows, header)


def int8_weights(bundles: dict[str, LoadedBundle]) -> list[tuple[str, np.ndarray]]:
    """The int8 Dense weights of the bundles, and two random ones (20% dense) in between."""
    weights = [(name, w) for name, b in bundles.items() for w in b.weights if w.dtype == np.int8]
    weights = [(name, w) for name, w in weights if w.ndim == 2]
    rng = np.random.default_rng(1)
    for k, n in ((256, 256), (512, 256)):
        w = rng.integers(-127, 128, (k, n)).astype(np.int8)
        w[rng.random((k, n)) > 0.2] = 0
        weights.append(("random", mark_constant(w)))
    return weights


def _sparse(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The sparse product, forced (whatever the rule says)."""
    active, xa = active_rows(x, w)
    return rows_product(xa, w, active)


def _ort_run(session: ort.InferenceSession, x: np.ndarray):
    return session.run(None, {"image": x})


def end_to_end(paths, images: np.ndarray, threads: int | None, rounds: int) -> list[tuple]:
    """One row per model and batch: medians of -O0, -O3, -O3 dense, onnxruntime (ms)."""
    rows = []
    dense_target = Interpreter(NumpyEngine(sparse=False))
    for name in MODELS:
        o0, o3 = dlcc.load(paths[name, "O0"]), dlcc.load(paths[name, "O3"])
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads or 0, 1
        session = ort.InferenceSession(
            os.path.join(SAMPLES, f"{name}.onnx"), options, providers=["CPUExecutionProvider"]
        )
        for batch in (1, 256):
            x = np.ascontiguousarray(images[:batch])
            same = np.array_equal(
                o3.run(x, threads=threads)["logits"],
                o3.run(x, target=dense_target, threads=threads)["logits"],
            )
            runs = {
                "O0": functools.partial(o0.run, threads=threads),
                "O3": functools.partial(o3.run, threads=threads),
                "O3 dense": functools.partial(o3.run, target=dense_target, threads=threads),
                "ort": functools.partial(_ort_run, session),
            }
            med = interleaved({k: functools.partial(f, x) for k, f in runs.items()}, rounds)
            rows.append(
                (
                    name,
                    batch,
                    threads or "default",
                    *(f"{med[k] * 1e3:.3f}" for k in ("O0", "O3", "O3 dense", "ort")),
                    f"{med['O0'] / med['O3']:.2f}x" + (" (>= 2x)" if batch == 1 else ""),
                    f"{med['O3 dense'] / med['O3']:.2f}x",
                    f"{med['O0'] / med['ort']:.2f}x",
                    "yes" if same else "NO",
                )
            )
            print("  " + "  ".join(map(str, rows[-1])), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--bundles", help="directory to keep the compiled bundles in")
    parser.add_argument("--threads", default="1,default", help="comma-separated: N or default")
    parser.add_argument("--repeat", type=int, default=15, help="interleaved rounds per case")
    args = parser.parse_args()
    data = mnist(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.bundles or tmp
        os.makedirs(directory, exist_ok=True)
        paths = compile_bundles(directory, data["calib"])
        with blas_threads(1):
            sparse = {name: dlcc.load(paths[name, "O3"]) for name in MODELS}
            print(f"crossover (sparse / dense time, 1 thread, batch 1; medians of {args.repeat}):")
            print(crossover(int8_weights(sparse), args.repeat))
        print(
            f"rule: sparse when batch <= 8, weight >= {MIN_WEIGHT:,} entries and "
            f"active rows <= {DENSITY:.0%} (runtime/sparse.py)\n"
        )
        rows = []
        for threads in args.threads.split(","):
            count = None if threads == "default" else int(threads)
            rows += end_to_end(paths, data["test_x"], count, args.repeat)
    header = (
        "model", "batch", "threads", "-O0 ms", "-O3 ms", "-O3 dense ms", "ort ms",
        "-O0/-O3", "dense/sparse", "-O0/ort", "bit-identical",
    )  # fmt: skip
    print(f"interp target, dlcc.load(...).run; medians of {args.repeat} interleaved rounds")
    print(table(rows, header))


if __name__ == "__main__":
    main()
