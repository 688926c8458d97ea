"""Compile at scale: int8 size ratios, bundle load time against onnxruntime, big compiles.

    python benchmarks/compile_scale.py [--skip-big]

Three tables, models from onnx's light zoo with seeded random weights and the two samples:

1. size: the -O0 bundle's bytes over the -O1 (int8) bundle's, for ResNet-50 (acceptance:
   >= 3.9x), LeNet-300-100 and LeNet-5;
2. load: `dlcc.load` (verify and decode) of -O3 (and pruned + shared) bundles of ResNet-50 and
   VGG-19 divided by the time onnxruntime takes to create an `InferenceSession` on the fp32
   ONNX file, each timed alone in fresh child processes (REPEAT times after a warm-up), the
   two alternating for LOAD_ROUNDS rounds, medians, one thread each (acceptance: <= 1.5x).
   Not interleaved in one process: there, each slowed the other (onnxruntime's session
   106-126 ms alone, 175-188 ms between two dlcc loads), which flattered the ratio;
3. compile: VGG-19 (~143 M parameters, ~550 MB of fp32 weights) at -O3 and ResNet-50 at -O0,
   each compiled in a child process (`python -c`, one BLAS thread); the table gives its
   compile time (inside the child) and its peak resident set (the child's VmHWM from
   /proc/self/status: RUSAGE_CHILDREN's ru_maxrss would count the parent's RSS too, Linux
   carries the pre-exec peak over) over the fp32 weight bytes (acceptance: VGG-19 -O3
   <= 25 s and <= 2.5x, ResNet-50 -O0 <= 2x), and the bundle's size. Minutes, with VGG-19's
   load in table 2; `--skip-big` leaves VGG-19 out of both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _common import SAMPLES, table
from light_models import light_model, weight_bytes

import dlcc

SIZE_ACCEPTANCE = 3.9  # ResNet-50: bytes(-O0) / bytes(-O1)
LOAD_ACCEPTANCE = 1.5  # dlcc.load / onnxruntime InferenceSession
LOAD_PIPELINES = ("prune(sparsity=0.9),kmeans,huffman", "-O3")
REPEAT = 5
LOAD_ROUNDS = 3  # alternating child processes per tool
# (model, pipeline, seconds at most or None, peak RSS / fp32 weight bytes at most)
COMPILES = (("vgg19", "-O3", 25.0, 2.5), ("resnet50", "-O0", None, 2.0))
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
# Times argv[1] ("dlcc": dlcc.load of the bundle argv[2]; "ort": an onnxruntime session on
# the model argv[2]) alone, one thread, argv[3] times after a warm-up; prints the median (s).
LOAD_CHILD = """
import json, statistics, sys, time
what, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
if what == "ort":
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    run = lambda: ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
else:
    import dlcc
    run = lambda: dlcc.load(path, threads=1)
times = []
for _ in range(repeat + 1):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
print(json.dumps(statistics.median(times[1:])))
"""
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


def load_rows(models: dict[str, str], tmp: str) -> list[tuple]:
    """Table 2: dlcc.load time of each LOAD_PIPELINES bundle over ort session creation."""
    rows = []
    for name, model in models.items():
        for passes in LOAD_PIPELINES:
            bundle = os.path.join(tmp, "load.bin")
            size = bundle_size(model, bundle, passes)
            ours, session = _child_loads(model, bundle)
            ratio = ours / session
            check = "pass" if ratio <= LOAD_ACCEPTANCE else "FAIL"
            rows.append(
                (name, passes, f"{size:,}", f"{ours * 1e3:.0f}", f"{session * 1e3:.0f}")
                + (f"{ratio:.2f}x", check)
            )
            print(f"  measured load {name} {passes}: {ratio:.2f}x", flush=True)
            os.remove(bundle)
    return rows


def _child_loads(model: str, bundle: str) -> tuple[float, float]:
    """(dlcc.load seconds, onnxruntime session seconds): each timed alone in fresh child
    processes, the two alternating for LOAD_ROUNDS rounds; medians."""
    times: dict[str, list[float]] = {"dlcc": [], "ort": []}
    for _ in range(LOAD_ROUNDS):
        for what, path in (("dlcc", bundle), ("ort", model)):
            done = subprocess.run(
                [sys.executable, "-c", LOAD_CHILD, what, path, str(REPEAT)],
                capture_output=True,
                text=True,
                env=os.environ | THREADS,
            )
            if done.returncode != 0:
                sys.exit(f"{what} load timing of {path} failed:\n{done.stderr}")
            times[what].append(json.loads(done.stdout.splitlines()[-1]))
    return statistics.median(times["dlcc"]), statistics.median(times["ort"])


def compile_row(name: str, model: str, passes: str, seconds_max, ratio_max, tmp: str) -> tuple:
    """Table 3: `model` compiled with `passes` in a child process on one BLAS thread."""
    weights, onnx_size = weight_bytes(model), os.path.getsize(model)
    bundle = os.path.join(tmp, f"{name}.bin")
    done = subprocess.run(
        [sys.executable, "-c", CHILD, model, bundle, passes],
        capture_output=True,
        text=True,
        env=os.environ | THREADS,
    )
    if done.returncode != 0:
        sys.exit(f"{name} {passes} compile failed ({done.returncode}):\n{done.stderr}")
    child = json.loads(done.stdout.splitlines()[-1])
    size = os.path.getsize(bundle)
    os.remove(bundle)
    ratio = child["peak_kb"] * 1024 / weights
    fast = seconds_max is None or child["seconds"] <= seconds_max
    check = "pass" if fast and ratio <= ratio_max else "FAIL"
    target = f"{'' if seconds_max is None else f'<= {seconds_max:.0f} s, '}<= {ratio_max}x"
    print(f"  measured compile {name} {passes}: {child['seconds']:.1f} s, {ratio:.2f}x", flush=True)
    return (
        (name, passes, f"{weights:,}", f"{onnx_size:,}", f"{size:,}")
        + (f"{child['seconds']:.1f}", f"{child['peak_kb'] / 1024:,.0f}", f"{ratio:.2f}x")
        + (target, check)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-big", action="store_true", help="skip VGG-19 (minutes)")
    args = parser.parse_args()

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        big = {n: light_model(n, tmp) for n in ("resnet50",) + ("vgg19",) * (not args.skip_big)}
        models = {"resnet50": big["resnet50"]}
        models |= {n: os.path.join(SAMPLES, f"{n}.onnx") for n in ("lenet_300_100", "lenet5")}
        sizes = size_rows(models, tmp)
        loads = load_rows(big, tmp)
        compiles = [compile_row(n, big[n], p, s, r, tmp) for n, p, s, r in COMPILES if n in big]

    print("\nint8 size: bundle bytes at -O0 / at -O1")
    print(table(sizes, ("model", "-O0 bytes", "-O1 bytes", "-O0 / -O1", f">= {SIZE_ACCEPTANCE}x")))
    print(f"\nload: dlcc.load / onnxruntime InferenceSession(fp32 .onnx), medians of {REPEAT}")
    header = ("model", "pipeline", "bundle bytes", "dlcc.load ms", "ort session ms", "ratio")
    print(table(loads, (*header, f"<= {LOAD_ACCEPTANCE}x")))
    print("\ncompile in a child process, one BLAS thread (peak = its VmHWM)")
    header = ("model", "pipeline", "fp32 weights", "onnx file", "bundle", "compile s")
    print(table(compiles, (*header, "peak RSS MiB", "peak / weights", "target", "check")))
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
