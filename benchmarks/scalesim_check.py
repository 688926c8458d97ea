"""Matrix-unit compute cycles of the systolic target against SCALE-Sim v2's, workload by workload.

    python benchmarks/scalesim_check.py [--skip-scalesim]

Workloads (single layers): FC 784->300 at batch 1 and 64, a 256x256x256 GEMM, and LeNet-5's
two convolutions (samples/lenet5.onnx at batch 1: 28x28x1 -> 20 5x5 filters, 12x12x20 -> 50
5x5 filters), on 8x8, 32x32 and 128x128 arrays, for ws, os and is. dlcc's figures come from
the engine: the convolutions from a SystolicTarget run of the compiled LeNet-5 (so the
lowering is checked too), the GEMMs from `gemm_cycles`. SCALE-Sim (`pip install
scalesim==2.0.2`; not a dlcc dependency) runs each layer from generated topology and config
files in a temporary directory, with CALC interface bandwidth (no memory stalls) and large
SRAMs. The convention: dlcc counts the cycles of every fold's schedule, SCALE-Sim reports the
0-based index of the last output write, so dlcc = SCALE-Sim + 1 for every layer. Running all
45 SCALE-Sim layers takes a few minutes (its 256^3 GEMM on 8x8 alone is ~10 s a dataflow).
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile

import numpy as np
from _common import SAMPLES, table

import dlcc
from dlcc.runtime.systolic.config import SystolicConfig
from dlcc.runtime.systolic.cycles import SCALESIM_OFFSET, gemm_cycles
from dlcc.runtime.systolic.engine import SystolicTarget

ARRAYS = (8, 32, 128)
DATAFLOWS = ("ws", "os", "is")
GEMMS = {  # name: (M, K, N)
    "fc784x300_b1": (1, 784, 300),
    "fc784x300_b64": (64, 784, 300),
    "gemm256": (256, 256, 256),
}
# LeNet-5's convolutions as SCALE-Sim conv topology rows:
# IFMAP H, IFMAP W, filter H, filter W, channels, filters, stride (no padding in the model).
CONVS = {"conv1.weight": (28, 28, 5, 5, 1, 20, 1), "conv2.weight": (12, 12, 5, 5, 20, 50, 1)}
CONFIG = """[general]
run_name = dlcc_check

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 65536
FilterSramSzkB: 65536
OfmapSramSzkB: 65536
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Dataflow: {dataflow}
Bandwidth: 10
MemoryBanks: 1

[run_presets]
InterfaceBandwidth: CALC
"""


def scalesim_cycles(dataflow: str, side: int, layer: tuple, gemm: bool) -> tuple[int, int]:
    """(Total Cycles, Stall Cycles) of SCALE-Sim v2 for one layer (a GEMM M,K,N or a conv)."""
    from scalesim.scale_sim import scalesim

    with tempfile.TemporaryDirectory() as work:
        config = os.path.join(work, "dlcc.cfg")
        with open(config, "w") as f:
            f.write(CONFIG.format(rows=side, cols=side, dataflow=dataflow))
        topology = os.path.join(work, "layer.csv")
        with open(topology, "w") as f:
            if gemm:
                m, k, n = layer
                f.write(f"Layer, M, N, K,\nl0, {m}, {n}, {k},\n")
            else:
                f.write("Layer, IFMAP H, IFMAP W, Filt H, Filt W, Channels, Filters, Stride,\n")
                f.write("l0, " + ", ".join(map(str, layer)) + ",\n")
        sim = scalesim(
            save_disk_space=True, verbose=False, config=config, topology=topology,
            input_type_gemm=gemm,
        )  # fmt: skip
        sim.run_scale(top_path=work)
        for root, _, files in os.walk(work):
            if "COMPUTE_REPORT.csv" in files:
                with open(os.path.join(root, "COMPUTE_REPORT.csv")) as f:
                    row = list(csv.reader(f))[1]
                return int(row[1]), int(row[2])
    raise RuntimeError("SCALE-Sim wrote no COMPUTE_REPORT.csv")


def conv_records(side: int, dataflow: str, bundle) -> dict[str, tuple[int, int, int, int]]:
    """LeNet-5's Conv records at batch 1: name -> (M, K, N, compute cycles)."""
    target = SystolicTarget(SystolicConfig(rows=side, cols=side, dataflow=dataflow))
    bundle.run(np.zeros((1, 1, 28, 28), np.float32), target=target)
    return {r.name: (r.m, r.k, r.n, r.compute_cycles) for r in target.records if r.op == "Conv"}


def conv_gemm(layer: tuple) -> tuple[int, int, int]:
    """SCALE-Sim's lowering of a conv topology row: (ofmap pixels, window size, filters)."""
    h, w, fh, fw, c, filters, stride = layer
    return ((h - fh) // stride + 1) * ((w - fw) // stride + 1), fh * fw * c, filters


def measure(side: int, dataflow: str, bundle, have_scalesim: bool) -> list[tuple]:
    """Table rows of one array and dataflow: every workload, dlcc against SCALE-Sim."""
    convs = conv_records(side, dataflow, bundle)
    layers = [(name, (m, k, n), True) for name, (m, k, n) in GEMMS.items()]
    layers += [(name, layer, False) for name, layer in CONVS.items()]
    rows = []
    for name, layer, gemm in layers:
        if gemm:
            m, k, n = layer
            cycles = gemm_cycles(dataflow, side, side, m, k, n)[0]
        else:
            m, k, n, cycles = convs[name]
            assert (m, k, n) == conv_gemm(layer), f"{name}: dlcc lowers it unlike SCALE-Sim"
        ref, stalls, diff = "-", "-", "-"
        if have_scalesim:
            ref, stalls = scalesim_cycles(dataflow, side, layer, gemm)
            diff = cycles - ref
        rows.append((name, f"{side}x{side}", dataflow, f"{m}x{k}x{n}", cycles, ref, stalls, diff))
        print(table(rows[-1:], HEADER).splitlines()[-1], flush=True)  # progress
    return rows


def main() -> None:
    """Print the table: dlcc and SCALE-Sim cycles per workload, array and dataflow."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-scalesim", action="store_true", help="dlcc's figures only")
    args = parser.parse_args()
    have_scalesim = False
    if not args.skip_scalesim:
        try:
            import scalesim  # noqa: F401

            have_scalesim = True
        except ImportError:
            print("SCALE-Sim is not installed (pip install scalesim==2.0.2): dlcc figures only")
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "lenet5.bin")
        dlcc.compile(os.path.join(SAMPLES, "lenet5.onnx"), path)
        bundle = dlcc.load(path)
        rows = [
            r
            for side in ARRAYS
            for df in DATAFLOWS
            for r in measure(side, df, bundle, have_scalesim)
        ]
    print()
    print(table(rows, HEADER))
    if have_scalesim:
        bad = sum(r[-1] != SCALESIM_OFFSET or r[-2] != 0 for r in rows)
        verdict = "every layer" if not bad else f"{bad} layer(s) do NOT"
        print(f"\n{verdict}: dlcc = SCALE-Sim + {SCALESIM_OFFSET} (documented in cycles.py)")


HEADER = ("layer", "array", "df", "MxKxN", "dlcc", "scalesim", "stalls", "dlcc-ss")

if __name__ == "__main__":
    main()
