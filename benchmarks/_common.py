"""Helpers shared by the benchmark scripts: timing, tables, the models they measure."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, "samples")
sys.path.insert(0, os.path.join(ROOT, "tests"))  # light_models: the onnx light zoo, runnable


# Han et al., ICLR 2016, Table 1: (top-1 error before, after, compression rate).
HAN_TABLE1 = {"lenet_300_100": (1.64, 1.58, 40), "lenet5": (0.80, 0.74, 39)}


@contextlib.contextmanager
def quiet_root_logger() -> Iterator[None]:
    """The root logger at ERROR inside: onnxruntime's quantize_static advises pre-processing
    there for every model (two or more WARNING lines each between a benchmark's rows)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def top1(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
    """The top-1 class `predict` gives each image, in batches of 1,000."""
    return np.concatenate(
        [predict(images[i : i + 1000]).argmax(1) for i in range(0, len(images), 1000)]
    )


def error(predict: Callable[[np.ndarray], np.ndarray], images, labels) -> float:
    """Top-1 error of `predict` in percent."""
    return 100.0 * float(np.mean(top1(predict, images) != labels))


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of `repeat` calls after one warm-up call (seconds)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def table(rows: list[tuple], header: tuple) -> str:
    """Rows as an aligned text table, numbers right-aligned."""
    cells = [tuple(map(str, header))] + [tuple(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = []
    for r in cells:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist.npz")


def add_data_option(parser) -> None:
    """--data: the MNIST archive (default ../shared/data/mnist.npz)."""
    parser.add_argument("--data", default=MNIST, help="MNIST .npz (see shared/data/README.md)")


def mnist(path: str = MNIST) -> dict:
    """MNIST as the samples take it: float32 [N, 1, 28, 28] in [0, 1], int64 labels.

    Keys: test_x, test_y, calib (the first 1,000 training images), train_x, train_y.
    """
    with np.load(path) as data:
        images = {
            k: (data[k][:, None] / np.float32(255)).astype(np.float32)
            for k in ("x_train", "x_test")
        }
        return {
            "test_x": images["x_test"],
            "test_y": data["y_test"].astype(np.int64),
            "train_x": images["x_train"],
            "train_y": data["y_train"].astype(np.int64),
            "calib": images["x_train"][:1000],
        }
