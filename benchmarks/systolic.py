"""The systolic target: what compression buys on the array, and what emulation costs.

    python benchmarks/systolic.py [--data ../shared/data/mnist.npz] [--skip-resnet]

1. LeNet-300-100 -O0 vs -O3 (calibrated, int8) at batch 1 on the default 256x256 array:
   weight DRAM bytes, DRAM and total energy, cycles, beside the weights' compression ratio
   (a batch-1 MLP is weight-bound: its weight traffic and DRAM energy should fall by that
   ratio, the point of Deep Compression on the TPU).
2. Emulation speed: fast-mode systolic time / interpreter time on the same int8 bundle,
   LeNet-5 over the 10,000 MNIST test images and ResNet-50 (random weights) at batch 1.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
from _common import SAMPLES, add_data_option, best_time, mnist, table
from light_models import data_input, light_model

import dlcc
from dlcc.runtime.systolic.cost import report
from dlcc.runtime.systolic.engine import SystolicTarget


def systolic_report(bundle, x) -> dict:
    target = SystolicTarget()
    bundle.run(x, target=target)
    return report(target.records, target.config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    parser.add_argument("--skip-resnet", action="store_true")
    args = parser.parse_args()
    data = mnist(args.data)
    test_x = data["test_x"]
    calib = {"image": data["calib"]}

    model = os.path.join(SAMPLES, "lenet_300_100.onnx")
    o0 = dlcc.load_bytes(dlcc.compile(model).to_bytes())
    o3 = dlcc.load_bytes(dlcc.compile(model, passes="-O3", calibration=calib).to_bytes())
    a, b = systolic_report(o0, test_x[:1]), systolic_report(o3, test_x[:1])
    weights = sum(t.nbytes for t in o0.file.tensors) / sum(t.nbytes for t in o3.file.tensors)
    rows = []
    for label, key in (
        ("weight DRAM bytes", "weight_bytes"),
        ("DRAM bytes", "dram_bytes"),
        ("total cycles", "total_cycles"),
    ):
        rows.append((label, f"{a[key]:,}", f"{b[key]:,}", f"{a[key] / b[key]:.1f}x"))
    for part in ("dram", "mac", "total"):
        ea, eb = a["energy_pj"][part], b["energy_pj"][part]
        rows.append((f"energy {part} (pJ)", f"{ea:,.0f}", f"{eb:,.0f}", f"{ea / eb:.1f}x"))
    print(
        f"LeNet-300-100 at batch 1 on {a['config']['rows']}x{a['config']['cols']} "
        f"{a['config']['dataflow']}; weights compressed {weights:.1f}x"
    )
    print(table(rows, ("figure", "-O0", "-O3", "-O0 / -O3")))
    bounds = [
        (layer["name"], layer["roofline"]["bound"], f"{layer['ops_per_weight_byte']:.1f}")
        for layer in b["layers"]
    ]
    print("\n-O3 roofline per layer\n" + table(bounds, ("layer", "bound", "ops / weight byte")))

    speed = []
    lenet5 = dlcc.load_bytes(
        dlcc.compile(
            os.path.join(SAMPLES, "lenet5.onnx"), passes="-O1", calibration=calib
        ).to_bytes()
    )
    cases = [("lenet5 int8, 10,000 images", lenet5, test_x, 1)]
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_resnet:
            resnet = light_model("resnet50", tmp)
            name, shape = data_input(resnet)
            x = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
            bundle = dlcc.load_bytes(
                dlcc.compile(resnet, passes="-O1", calibration={name: x}).to_bytes()
            )
            cases.append(("resnet50 int8, batch 1", bundle, {name: x}, 2))
        for label, bundle, x, repeat in cases:
            interp = best_time(lambda b=bundle, x=x: b.run(x), repeat)
            systolic = best_time(lambda b=bundle, x=x: b.run(x, target=SystolicTarget()), repeat)
            speed.append((label, f"{interp:.2f}", f"{systolic:.2f}", f"{systolic / interp:.2f}x"))
    print("\nemulation speed (acceptance for LeNet-5: <= 3x)")
    print(table(speed, ("bundle", "interp s", "systolic s", "systolic / interp")))


if __name__ == "__main__":
    main()
