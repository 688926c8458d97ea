"""The automatic budget holds on held-out data.

    python benchmarks/budget.py [--data ../shared/data/mnist.npz]

For LeNet-300-100 and LeNet-5: calibration on 1,000 training images; the budget is chosen on
the first 5,000 MNIST test images (--max-drop 0.5% with labels, and --min-agreement 99%
without; each cleared by the CLI's margin, dlcc.budget.MARGIN standard errors) and checked on
the other 5,000, which the search never saw. Prints the chosen bundle's size and ratio, the
score on both halves beside the floor, and the seconds for the search and the final compile
on the physical cores (the issue's bar for LeNet-5's --max-drop 0.5%: 60 s on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import time

import onnxruntime as ort
from _common import SAMPLES, add_data_option, mnist, table, top1

import dlcc
from dlcc.budget import MARGIN, choose
from dlcc.passes.fidelity import Target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_option(parser)
    args = parser.parse_args()
    data = mnist(args.data)
    x = data["test_x"]
    y = data["test_y"]
    calib = {"image": data["calib"]}
    search, held = slice(0, 5000), slice(5000, 10000)
    rows = []
    for name in ("lenet_300_100", "lenet5"):
        model = os.path.join(SAMPLES, f"{name}.onnx")
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        original = top1(lambda b, s=session: s.run(None, {"image": b})[0], x)
        fp32 = sum(t.nbytes for t in dlcc.compile(model).tensors)
        for label, budget in (
            ("max-drop 0.5%", {"max_drop": 0.005}),
            ("min-agreement 99%", {"agreement": 0.99}),
        ):
            labels = {"labels": y[search]} if "max_drop" in budget else {}
            start = time.perf_counter()
            target = Target(**budget, z=MARGIN)
            text, report = choose(model, {"image": x[search], **labels}, calib, target)
            bundle = dlcc.compile(model, passes=text, calibration=calib)
            seconds = time.perf_counter() - start
            loaded = dlcc.load_bytes(bundle.to_bytes())
            ours = top1(lambda b, m=loaded: m.run(b)["logits"], x)
            if "max_drop" in budget:
                got = [(ours[s] == y[s]).mean() for s in (search, held)]
                need = [(original[s] == y[s]).mean() - 0.005 for s in (search, held)]
            else:
                got = [(ours[s] == original[s]).mean() for s in (search, held)]
                need = [0.99, 0.99]
            size = len(bundle.to_bytes())
            rows.append(
                (
                    name,
                    label,
                    f"{size:,}",
                    f"{fp32 / size:.1f}x",
                    f"{100 * got[0]:.2f}% (>= {100 * need[0]:.2f}%)",
                    f"{100 * got[1]:.2f}% (>= {100 * need[1]:.2f}%)",
                    "met" if got[1] >= need[1] else "MISSED",
                    f"{seconds:.0f}",
                )
            )
            print(f"  {name} {label}: {text}", flush=True)
    print()
    print(
        table(
            rows,
            (
                "model",
                "budget",
                "bundle B",
                "ratio",
                "search half",
                "held-out half",
                "held-out",
                "search s",
            ),
        )
    )


if __name__ == "__main__":
    main()
