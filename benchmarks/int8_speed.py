"""dlcc's float and int8 paths beside onnxruntime's fp32 and QDQ int8 models, as ratios.

    python benchmarks/int8_speed.py [--quick] [--threads N] [--repeat R] [--arch]

Four runners per model and batch, timed in interleaved rounds (each round runs every runner
once, in turn), medians over the rounds: the machine is shared, and interleaving spreads
its noise evenly over the four, so the ratios hold where absolute times do not.

    dlcc fp32   the -O0 bundle on the interp target
    dlcc int8   the -O1 bundle compiled with calibration data (int8 weights, activations)
    ort fp32    onnxruntime on the original model
    ort qdq     onnxruntime on quantize_static's QDQ model (int8 per-channel weights, int8
                activations, the same calibration data): its own int8 kernels

Every runner gets the same number of threads (default 1): dlcc through `threads=` (its BLAS),
onnxruntime through intra_op_num_threads (inter_op 1); `--threads 0` leaves each its own
default (dlcc: the physical cores, as a ceiling: runtime/threads.py; onnxruntime: its own).
Models: the two MNIST samples and the PyTorch fixtures of tests/data/torch (a CNN, an LSTM,
a bidirectional LSTM); `--arch` adds tests/arch_models.py's ResNet-18, MobileNetV3-small,
BERT-style encoder and CRNN when that module is present. Batch 1 and 256.

The figures printed:
    int8 / fp32      dlcc's int8 path against its own float path (goal <= 1.0)
    fp32 / ort       dlcc's interpreter against onnxruntime fp32 (goal <= 1.0 at 256, <= 2 at 1)
    int8 / qdq       dlcc's int8 path against onnxruntime's QDQ int8 (goal <= 1.5)

and, first, single nodes against onnxruntime's (`floors`): one float32 product through numpy
(the OpenBLAS it ships) against a MatMul node (MLAS) of the same shape, for the GEMMs that
dominate the samples at batch 256 and a ResNet 3x3 convolution's im2col (the part of
fp32 / ort that is not dlcc's code), and dlcc's Conv kernel against a Conv node (onnxruntime's
direct NCHWc convolution) on ResNet-18's 3x3 layers.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
from _common import ROOT, SAMPLES, quiet_root_logger, table
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

import dlcc
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.matrix import ConvAttrs
from dlcc.runtime.memory import keep_freed_memory

try:
    from dlcc.runtime.threads import blas_threads
except ImportError:  # a dlcc from before its threads setting (to measure "before"): the same
    from threadpoolctl import threadpool_limits

    def blas_threads(n: int):
        return threadpool_limits(n, user_api="blas")


TORCH = os.path.join(ROOT, "tests", "data", "torch")
CALIBRATION = 256  # calibration samples, for both dlcc and quantize_static


def _mnist(n: int) -> np.ndarray:
    with np.load(os.path.join(SAMPLES, "mnist_test_256.npz")) as data:
        images = data["image"]
    return np.concatenate([images] * (n // len(images) + 1))[:n]


def _normal(shape: tuple[int, ...], batch_axis: int = 0):
    def make(n: int) -> np.ndarray:
        dims = list(shape)
        dims[batch_axis] = n
        return np.random.default_rng(n).standard_normal(dims).astype(np.float32)

    return make


# name -> (ONNX path, input name, inputs at batch n)
MODELS: dict[str, tuple[str, str, Callable[[int], np.ndarray]]] = {
    "lenet_300_100": (os.path.join(SAMPLES, "lenet_300_100.onnx"), "image", _mnist),
    "lenet5": (os.path.join(SAMPLES, "lenet5.onnx"), "image", _mnist),
    "cnn (torch)": (os.path.join(TORCH, "cnn_dynamo.onnx"), "x", _normal((1, 3, 16, 16))),
    "lstm (torch)": (os.path.join(TORCH, "lstm_dynamo.onnx"), "x", _normal((5, 1, 8), 1)),
    "lstm_bi (torch)": (os.path.join(TORCH, "lstm_bi_dynamo.onnx"), "x", _normal((5, 1, 8), 1)),
}


ARCH = ("resnet18", "mobilenet_v3_small", "bert", "crnn_lstm")  # issue 12's "Real models in"


def _arch_models(tmp: str) -> None:
    """tests/arch_models.py's ResNet-18, MobileNetV3-small, BERT-style encoder and CRNN (seeded
    weights; inputs as that module makes them, token ids for BERT), when the module exists."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    try:
        from arch_models import filled_model, inputs_at
    except ImportError:
        print("  (tests/arch_models.py not found: --arch skipped)", file=sys.stderr)
        return
    for name in ARCH:
        try:
            path = filled_model(f"{name}_legacy", tmp)
            ((input_name, _),) = inputs_at(name, 0).items()
        except Exception as e:  # noqa: BLE001 - an optional extra; say why and go on
            print(f"  ({name}: {e})", file=sys.stderr)
            continue

        def make(n: int, name=name, input_name=input_name) -> np.ndarray:
            return inputs_at(name, 0, batch=n, seed=n)[input_name]

        MODELS[name] = (path, input_name, make)


class _Reader(CalibrationDataReader):
    def __init__(self, name: str, data: np.ndarray, batch_axis: int) -> None:
        self.feeds = iter(
            [{name: np.take(data, [i], axis=batch_axis)} for i in range(data.shape[batch_axis])]
        )

    def get_next(self):
        return next(self.feeds, None)


def _session(path: str | bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def _batch_axis(path: str, input_name: str) -> int:
    model = onnx.load(path, load_external_data=False)
    (value,) = [v for v in model.graph.input if v.name == input_name]
    dims = value.type.tensor_type.shape.dim
    return next((i for i, d in enumerate(dims) if d.dim_param), 0)


def runners(name: str, tmp: str, threads: int) -> dict[str, tuple[Callable, int]]:
    """The four runners of one model: label -> (run(x), batch axis)."""
    path, input_name, make = MODELS[name]
    axis = _batch_axis(path, input_name)
    calib = make(CALIBRATION)
    fp32 = os.path.join(tmp, f"{name}.O0.bin")
    int8 = os.path.join(tmp, f"{name}.O1.bin")
    dlcc.compile(path, fp32, passes="-O0")
    dlcc.compile(path, int8, passes="-O1", calibration={input_name: calib})
    qdq = os.path.join(tmp, f"{name}.qdq.onnx")
    with quiet_root_logger():
        quantize_static(
            path,
            qdq,
            _Reader(input_name, calib, axis),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    b_fp32, b_int8 = dlcc.load(fp32), dlcc.load(int8)
    s_fp32, s_qdq = _session(path, threads), _session(qdq, threads)
    return {
        "dlcc fp32": (lambda x: b_fp32.run({input_name: x}), axis),
        "dlcc int8": (lambda x: b_int8.run({input_name: x}), axis),
        "ort fp32": (lambda x: s_fp32.run(None, {input_name: x}), axis),
        "ort qdq": (lambda x: s_qdq.run(None, {input_name: x}), axis),
    }


# (M, K, N): LeNet-300-100's and LeNet-5's fc1 at batch 256; the --arch ResNet-18's 3x3
# 64->64 conv (16x16 maps) at batch 32 as one im2col product
GEMMS = ((256, 784, 300), (256, 800, 500), (8192, 576, 64))
# (x, w): that conv itself, and ResNet-18's 3x3 256->256 one (4x4 maps), pads 1
CONVS = (((32, 64, 16, 16), (64, 64, 3, 3)), ((32, 256, 4, 4), (256, 256, 3, 3)))


def floors(threads: int, rounds: int) -> list[tuple]:
    """One node at a time against onnxruntime's: numpy's float32 matmul against a MatMul
    node, per shape in GEMMS (the BLAS), and dlcc's Conv kernel against a Conv node, per
    shape in CONVS (im2col and SGEMM against onnxruntime's direct convolution)."""
    keep_freed_memory()  # as a bundle's run does: no page faults charged to the kernel
    rng = np.random.default_rng(0)
    conv = get_kernel("Conv").fn
    cases = []
    for m, k, n in GEMMS:
        out = np.empty((m, n), np.float32)
        x, w = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        node = onnx.helper.make_node("MatMul", ["x", "w"], ["y"])
        ours = functools.partial(np.matmul, x, w, out=out)
        cases.append((f"MatMul {m}x{k}x{n}", node, x, w, ours))
    for xs, ws in CONVS:
        x, w = rng.standard_normal(xs, np.float32), rng.standard_normal(ws, np.float32)
        node = onnx.helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)
        ours = functools.partial(conv, ConvAttrs(pads=(1, 1, 1, 1)), x, w)
        cases.append(
            (f"Conv {'x'.join(map(str, xs))} by {'x'.join(map(str, ws))}", node, x, w, ours)
        )
    rows = []
    for label, node, x, w, ours in cases:
        graph = onnx.helper.make_graph(
            [node],
            "one_node",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, x.shape)],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [onnx.numpy_helper.from_array(w, "w")],
        )
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
        session = _session(model.SerializeToString(), threads)
        med = interleaved(
            {"dlcc": ours, "ort": lambda x=x, s=session: s.run(None, {"x": x})}, rounds
        )
        rows.append(
            (
                label,
                f"{med['dlcc'] * 1e3:.3f}",
                f"{med['ort'] * 1e3:.3f}",
                f"{med['dlcc'] / med['ort']:.2f}x",
            )
        )
    return rows


def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each fn: `rounds` rounds, each calling every fn in turn
    (enough calls per round to last ~20 ms, so timer and scheduler noise averages out)."""
    calls = {}
    for label, fn in fns.items():
        fn()  # warm-up (and the bundle's plan at this binding)
        start = time.perf_counter()
        fn()
        calls[label] = max(1, int(0.02 / max(time.perf_counter() - start, 1e-6)))
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(rounds):
        for label, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls[label]):
                fn()
            times[label].append((time.perf_counter() - start) / calls[label])
    return {label: statistics.median(t) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads of every runner (0: defaults)"
    )
    parser.add_argument("--repeat", type=int, help="rounds per case (default 15, quick 7)")
    parser.add_argument("--arch", action="store_true", help="add the architectures (ARCH)")
    parser.add_argument("--only", help="comma-separated model names")
    parser.add_argument("--batches", default="1,256", help="comma-separated batch sizes")
    args = parser.parse_args()
    rounds = args.repeat or (7 if args.quick else 15)
    rows = []
    # dlcc's BLAS threads for the whole run (onnxruntime's are set per session).
    with blas_threads(args.threads or None), tempfile.TemporaryDirectory() as tmp:
        nodes = floors(args.threads, rounds)
        if args.arch:
            _arch_models(tmp)
        names = args.only.split(",") if args.only else list(MODELS)
        for name in names:
            run = runners(name, tmp, args.threads)
            for batch in map(int, args.batches.split(",")):
                _, _, make = MODELS[name]
                x = np.take(make(max(batch, 2)), np.arange(batch), axis=run["dlcc fp32"][1])
                x = np.ascontiguousarray(x)
                med = interleaved({k: functools.partial(f, x) for k, (f, _) in run.items()}, rounds)
                row = (
                    name,
                    batch,
                    *(f"{med[k] * 1e3:.3f}" for k in run),
                    f"{med['dlcc int8'] / med['dlcc fp32']:.2f}x",
                    f"{med['dlcc fp32'] / med['ort fp32']:.2f}x",
                    f"{med['dlcc int8'] / med['ort qdq']:.2f}x",
                )
                rows.append(row)
                print("  " + "  ".join(map(str, row)), file=sys.stderr, flush=True)
    header = (
        "model", "batch", "dlcc fp32 ms", "dlcc int8 ms", "ort fp32 ms", "ort qdq ms",
        "int8/fp32", "fp32/ort", "int8/qdq",
    )  # fmt: skip
    print(f"threads: {args.threads or 'defaults'}; medians of {rounds} interleaved rounds")
    print("one node: numpy's matmul (OpenBLAS) and dlcc's Conv kernel against onnxruntime's:")
    print(table(nodes, ("node", "dlcc ms", "ort ms", "dlcc/ort")))
    print(table(rows, header))


if __name__ == "__main__":
    main()
