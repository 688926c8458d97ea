"""What verifying adds to loading: the verifier's time as a share of `dlcc.load`.

    python benchmarks/verify_cost.py [--model resnet50] [--passes -O3] [--repeat 7]

Compiles a light-zoo model (seeded random weights) and loads its bundle repeatedly, the
phases interleaved within each repetition so that machine noise falls on all of them alike:
parse (`BundleFile.from_bytes`: header, CRCs, sections), verify (`runtime.verifier.verify`),
decode (every tensor). Prints the medians and verify / (parse + decode), the figure issue 9
bounds at 5%, beside onnxruntime's session creation on the same ONNX file for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import onnxruntime as ort
from _common import table
from light_models import light_model

import dlcc
from dlcc.formats.bundle import BundleFile
from dlcc.formats.encodings import decode
from dlcc.runtime.verifier import verify

ACCEPTANCE = 0.05  # verify / (load without it)


def timed(fn, *args) -> tuple[float, object]:
    """(seconds, result) of fn(*args)."""
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def decode_all(file: BundleFile) -> list:
    return [decode(t, file.data) for t in file.tensors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--passes", default="-O3")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = light_model(args.model, tmp)
        bundle = os.path.join(tmp, "m.bin")
        dlcc.compile(model, bundle, passes=args.passes)
        blob = open(bundle, "rb").read()
        times = {"parse": [], "verify": [], "decode": [], "onnxruntime session": []}
        for _ in range(args.repeat + 1):  # the first round warms up and is dropped
            t_parse, file = timed(BundleFile.from_bytes, blob, bundle)
            t_verify, _ = timed(verify, file, bundle)
            t_decode, _ = timed(decode_all, file)
            t_ort, _ = timed(ort.InferenceSession, model)
            for key, t in zip(times, (t_parse, t_verify, t_decode, t_ort)):
                times[key].append(t)
    median = {k: statistics.median(v[1:]) for k, v in times.items()}
    share = median["verify"] / (median["parse"] + median["decode"])
    rows = [(k, f"{1000 * v:.1f}") for k, v in median.items()]
    print(f"{args.model} {args.passes}: {len(blob):,} B bundle, {args.repeat} repetitions\n")
    print(table(rows, ("phase", "median ms")))
    verdict = "meets" if share <= ACCEPTANCE else "MISSES"
    print(f"\nverify / (parse + decode) = {100 * share:.2f}%  (bar <= 5%: {verdict})")


if __name__ == "__main__":
    main()
