"""Compile at scale: int8 size ratios, bundle load time against onnxruntime, VGG-19 at -O3.

    python benchmarks/compile_scale.py [--skip-vgg]

Three tables, models from onnx's light zoo with seeded random weights and the two samples:

1. size: the -O0 bundle's bytes over the -O1 (int8) bundle's, for ResNet-50 (acceptance:
   >= 3.9x), LeNet-300-100 and LeNet-5;
2. load: `dlcc.load` (verify and decode) of a pruned and shared ResNet-50 bundle divided by
   the time onnxruntime takes to create an `InferenceSession` on the fp32 ONNX file, best of
   3 each after a warm-up, in the same run: the ratio is the figure on a shared machine;
3. VGG-19 (~143 M parameters, ~550 MB of fp32 weights) at -O3: compiled in a child process
   (`python -c`); the table gives its compile time (inside the child), its peak resident set
   (the child's VmHWM from /proc/self/status: RUSAGE_CHILDREN's ru_maxrss would count the
   parent's RSS too, Linux carries the pre-exec peak over), and the bundle's size against
   the fp32 weights and the ONNX file. Takes minutes; `--skip-vgg` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import onnxruntime as ort
from _common import SAMPLES, best_time, table
from light_models import light_model, weight_bytes

import dlcc

SIZE_ACCEPTANCE = 3.9  # ResNet-50: bytes(-O0) / bytes(-O1)
LOAD_PIPELINES = ("prune(sparsity=0.9),kmeans,huffman", "-O3")
# Compiles argv[1] into argv[2] with pipeline argv[3]; prints seconds and peak RSS (kB).
CHILD = """
import json, sys, time
import dlcc
start = time.perf_counter()
dlcc.compile(sys.argv[1], sys.argv[2], passes=sys.argv[3])
seconds = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"seconds": seconds, "peak_kb": int(status["VmHWM"].split()[0])}))
"""


def bundle_size(model: str, bundle: str, passes: str) -> int:
    """Bytes of the bundle file `model` compiles into with `passes`."""
    dlcc.compile(model, bundle, passes=passes)
    return os.path.getsize(bundle)


def size_rows(models: dict[str, str], tmp: str) -> list[tuple]:
    """Table 1: -O0 bytes, -O1 bytes and their ratio for each model."""
    rows = []
    for name, model in models.items():
        o0, o1 = (bundle_size(model, os.path.join(tmp, "size.bin"), p) for p in ("-O0", "-O1"))
        check = ("pass" if o0 / o1 >= SIZE_ACCEPTANCE else "FAIL") if name == "resnet50" else "-"
        rows.append((name, f"{o0:,}", f"{o1:,}", f"{o0 / o1:.2f}x", check))
        print(f"  measured size {name}: {o0 / o1:.2f}x", flush=True)
    return rows


def load_rows(model: str, tmp: str) -> list[tuple]:
    """Table 2: dlcc.load time of each LOAD_PIPELINES bundle over ort session creation."""
    session = best_time(
        lambda: ort.InferenceSession(model, providers=["CPUExecutionProvider"]), repeat=3
    )
    rows = []
    for passes in LOAD_PIPELINES:
        bundle = os.path.join(tmp, "load.bin")
        size = bundle_size(model, bundle, passes)
        ours = best_time(lambda b=bundle: dlcc.load(b), repeat=3)
        ratio = f"{ours / session:.2f}x"
        rows.append((passes, f"{size:,}", f"{ours * 1e3:.1f}", f"{session * 1e3:.1f}", ratio))
        print(f"  measured load {passes}: {ratio}", flush=True)
    return rows


def vgg_row(tmp: str) -> tuple:
    """Table 3: VGG-19 compiled at -O3 in a child process."""
    model = light_model("vgg19", tmp)
    weights, onnx_size = weight_bytes(model), os.path.getsize(model)
    bundle = os.path.join(tmp, "vgg19.bin")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, model, bundle, "-O3"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"VGG-19 -O3 compile failed ({done.returncode}):\n{done.stderr}")
    child = json.loads(done.stdout.splitlines()[-1])
    size = os.path.getsize(bundle)
    os.remove(bundle)
    return (
        "vgg19",
        f"{weights:,}",
        f"{onnx_size:,}",
        f"{size:,}",
        f"{weights / size:.1f}x",
        f"{child['seconds']:.1f}",
        f"{child['peak_kb'] / 1024:,.0f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-vgg", action="store_true", help="skip VGG-19 at -O3 (minutes)")
    args = parser.parse_args()

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        resnet = light_model("resnet50", tmp)
        models = {"resnet50": resnet}
        models |= {n: os.path.join(SAMPLES, f"{n}.onnx") for n in ("lenet_300_100", "lenet5")}
        sizes = size_rows(models, tmp)
        loads = load_rows(resnet, tmp)
        os.remove(resnet)
        vgg = None if args.skip_vgg else vgg_row(tmp)

    print("\nint8 size: bundle bytes at -O0 / at -O1")
    print(table(sizes, ("model", "-O0 bytes", "-O1 bytes", "-O0 / -O1", f">= {SIZE_ACCEPTANCE}x")))
    print("\nResNet-50 load: dlcc.load / onnxruntime InferenceSession(fp32 .onnx), best of 3")
    print(table(loads, ("pipeline", "bundle bytes", "dlcc.load ms", "ort session ms", "ratio")))
    if vgg is not None:
        print("\nVGG-19 at -O3 (child process; peak = its VmHWM)")
        header = ("model", "fp32 weights", "onnx file", "bundle", "weights / bundle")
        print(table([vgg], (*header, "compile s", "peak RSS MiB")))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
