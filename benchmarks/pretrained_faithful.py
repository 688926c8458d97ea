"""Pretrained wheel models at -O3 with calibration: the default fidelity target on held-out
inputs, and the size beside onnxruntime's int8 quantizer.

    python benchmarks/pretrained_faithful.py [--only NAME,NAME] [--samples 128] [--cache DIR]

Models from benchmarks/pretrained.py (fetched into its cache once). Each gets --samples
calibration inputs (seeds 0..) and as many held-out inputs (seeds 10,000..), drawn by that
benchmark's input makers (smooth images, text pages flipped 180 degrees for half the
samples, audio features). dlcc runs the CLI's -O3 search (`dlcc.budget.search`) on the
calibration set, so the bundle keeps the default target: top-1 agreement >= 99% on
classifier outputs ([batch, classes]), SQNR >= 25 dB on the others; the held-out set is
scored only at the end. onnxruntime's `quantize_static` (QDQ, per-channel int8, the same
calibration inputs) is the reference: its file size and its fidelity on the same held-out
inputs, from the same measures (passes/fidelity.py). Ratios are against the fp32 ONNX file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from _common import quiet_root_logger
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static
from pretrained import DEFAULT_CACHE, MODELS, fetch, make_inputs

import dlcc
from dlcc.budget import FixedRates, search
from dlcc.data import Data
from dlcc.errors import DlccError
from dlcc.frontend import import_onnx
from dlcc.passes.fidelity import DEFAULT, Fidelity

CHOSEN = (
    "oww_alexa",
    "oww_hey_mycroft",
    "oww_weather",
    "mtcnn_rnet",
    "mtcnn_onet",
    "ppocr_cls",
    "oww_embedding",
)
HELD_SEED = 10_000


def samples(model, count: int, first_seed: int) -> dict[str, np.ndarray]:
    """`count` inputs stacked on the batch axis; text pages are turned 180 degrees for every
    other sample (the OCR orientation classifier's two classes)."""
    feeds = [make_inputs(model, first_seed + i) for i in range(count)]
    for i, feed in enumerate(feeds):
        if i % 2 and model.inputs[next(iter(feed))].kind == "text":
            feed.update({k: v[..., ::-1, ::-1].copy() for k, v in feed.items()})
    return {k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]}


class _Reader(CalibrationDataReader):
    def __init__(self, data: dict[str, np.ndarray]) -> None:
        count = len(next(iter(data.values())))
        self.rows = iter([{k: v[i : i + 1] for k, v in data.items()} for i in range(count)])

    def get_next(self):
        return next(self.rows, None)


def ort_outputs(path: str, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's outputs for every sample, one sample at a time (fixed batches too)."""
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    count = len(next(iter(data.values())))
    rows = [session.run(names, {k: v[i : i + 1] for k, v in data.items()}) for i in range(count)]
    return {name: np.concatenate([r[j] for r in rows]) for j, name in enumerate(names)}


def measure(model, count: int, cache: str, tmp: str) -> tuple:
    path = fetch(model, cache)
    calib = Data(samples(model, count, 0), f"{count} calibration inputs")
    held = Data(samples(model, count, HELD_SEED), f"{count} held-out inputs")
    start = time.perf_counter()
    text, chosen, calibration, held = search(path, calib, held, "O3")
    bundle = dlcc.compile(path, passes=text, calibration=calibration)
    seconds = time.perf_counter() - start
    fidelity = Fidelity(import_onnx(path), held, DEFAULT)
    loaded = dlcc.load_bytes(bundle.to_bytes())
    ours = {k: np.concatenate([loaded.run({n: v[i : i + 1] for n, v in held.items()})[k]
                               for i in range(count)]) for k in loaded.output_names}  # fmt: skip
    onnx_bytes = os.path.getsize(path)
    qdq = os.path.join(tmp, f"{model.name}_int8.onnx")
    try:
        with quiet_root_logger():
            quantize_static(
                path, qdq, _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True
            )
        theirs = fidelity.describe(ort_outputs(qdq, dict(held)))
        ort_ratio = f"{onnx_bytes / os.path.getsize(qdq):.1f}x"
    except Exception as e:  # onnxruntime's quantizer fails on some of these models
        theirs, ort_ratio = f"onnxruntime: {str(e).splitlines()[0][:80]}", "-"
    met = fidelity.score(ours) >= 0
    return (
        model.name,
        f"{onnx_bytes / len(bundle.to_bytes()):.1f}x",
        ort_ratio,
        fidelity.describe(ours),
        theirs,
        "met" if met else "MISSED",
        f"{seconds:.0f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(CHOSEN))
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--cache", default=DEFAULT_CACHE)
    args = parser.parse_args()
    by_name = {m.name: m for m in MODELS}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            print(f"  {name} ...", file=sys.stderr, flush=True)
            try:
                rows.append(measure(by_name[name], args.samples, args.cache, tmp))
            except (DlccError, FixedRates) as e:  # an unreachable target, or too long
                rows.append((name, "-", "-", f"dlcc: error: {e}", "-", "MISSED", "-"))
            print("  " + " | ".join(rows[-1]), flush=True)
    print()
    header = ("model", "dlcc -O3", "ORT int8", "dlcc on held-out", "ORT int8 on held-out", "", "s")
    for row in [header, *rows]:
        print(" | ".join(row))
    print(f"\n{sum(r[5] == 'met' for r in rows)} of {len(rows)} meet the default target "
          "(acceptance: at least 3)")  # fmt: skip


if __name__ == "__main__":
    main()
