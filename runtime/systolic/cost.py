"""The systolic target's cost model: weight loading, stalls, UB spills, energy and roofline.

SCALE-Sim counts the matrix unit alone (`compute_cycles` of each LayerRecord). This adds
what the TPU also pays, layer by layer in program order (i = 0, 1, ...), with B =
`dram_bytes_per_cycle`, one DRAM channel shared by weights and spills:

- weight fetch: W_i = ceil(weight_bytes / B); weights come in their size in the bundle,
  so a compressed bundle fetches fewer bytes (Deep Compression's point for weight-bound
  layers).
- prefetch through the weight FIFO: while layer i-1 runs, the DRAM cycles it leaves idle
  (slack_{i-1} = cycles_{i-1} - (W_{i-1} - P_{i-1}) - S_{i-1}) fetch the start of layer i's
  weights, up to the FIFO's capacity of `fifo_depth` decoded R x C tiles, i.e.
  fifo_depth*R*C weights = fifo_depth*R*C*weight_bytes/(k*n*groups) DRAM bytes:
  P_i = min(W_i, slack_{i-1}, ceil(capacity / B)); P_0 = 0 (nothing runs before).
- double buffering inside the layer: the rest, W'_i = W_i - P_i, streams while the matrix
  unit computes. With T = max(1, folds) tiles, a two-stage fetch -> compute pipeline of
  equal tiles takes max(C, W') + min(f, c), f = W_i/T and c = C/T (fill/drain); a
  prefetched first tile shortens the fill: fill_i = ceil(min(max(0, f - P_i), c, W'_i)).
- unified-buffer spill: when input_bytes + output_bytes exceed `ub_bytes`, the excess is
  written to DRAM and read back: spill_bytes = 2*excess, S_i = ceil(spill_bytes / B), not
  overlapped (the matrix unit waits on the activation it depends on).
- cycles_i = max(C_i, W'_i) + fill_i + S_i; weight_stall_cycles = max(C_i, W'_i) - C_i +
  fill_i; data_stall_cycles = S_i; stall_cycles = their sum = cycles_i - C_i.
Not modeled: vector-unit instructions between matrix instructions, host transfers, the
accumulators' capacity. Traffic: sram_bytes = input_bytes + output_bytes (unified buffer
reads, accumulator writes); dram_bytes = weight_bytes + spill_bytes.

Energy (pJ): MACs at int8 mult + int32 add (integer records) or fp32 mult + add; SRAM per
64-bit access at the smallest table size holding `ub_bytes` (else the largest, 1 MB);
DRAM per 64-bit access. `mac_gated` is the MAC energy if zero-operand MACs were skipped;
`total` = mac + sram + dram (ungated).

Report schema (`report()`, `dlcc run --target systolic --json`), version `schema`:
    schema: "dlcc.systolic.report/1"
    config: SystolicConfig.describe()          energy_table: the pJ table used
    total_cycles, compute_cycles, stall_cycles, weight_stall_cycles, data_stall_cycles: int
    seconds: total_cycles / clock_hz
    utilization: macs / (R*C*total_cycles)     compute_utilization: macs / (R*C*compute)
    macs, zero_macs, sram_bytes, dram_bytes, weight_bytes, spill_bytes: int
    energy_pj: {mac, mac_gated, sram, dram, total}
    roofline: {peak_ops_per_cycle: 2*R*C, bytes_per_cycle: B, ridge_intensity: peak/B}
    layers: [ {name, op, m, k, n, groups, folds, cycles, compute_cycles,
               weight_fetch_cycles, prefetch_cycles, stall_cycles, weight_stall_cycles,
               data_stall_cycles, utilization, mapping_efficiency, macs, zero_macs,
               weight_bytes, input_bytes, output_bytes, spill_bytes, sram_bytes,
               dram_bytes, energy_pj: {mac, mac_gated, sram, dram, total},
               ops_per_weight_byte: 2*macs/weight_bytes (null without weights),
               roofline: {intensity: 2*macs/dram_bytes (null without DRAM bytes),
                          attainable_ops_per_cycle: min(peak, B*intensity),
                          achieved_ops_per_cycle: 2*macs/cycles,
                          bound: "compute" | "memory" (intensity vs the ridge)}} ]
"""

from __future__ import annotations

import math

from dlcc.errors import ExecutionError

SCHEMA = "dlcc.systolic.report/1"

# Energy per operation in pJ, 45 nm, 0.9 V: M. Horowitz, "Computing's energy problem (and
# what we can do about it)", ISSCC 2014, Fig. 1.1.9. SRAM and DRAM are per 64-bit access;
# DRAM is given there as 1.3-2.6 nJ: the low end here (Han et al.'s 640 pJ per 32 bits).
ENERGY_PJ: dict[str, float] = {
    "int8_add": 0.03,
    "int32_add": 0.1,
    "int8_mult": 0.2,
    "int32_mult": 3.1,
    "fp16_add": 0.4,
    "fp16_mult": 1.1,
    "fp32_add": 0.9,
    "fp32_mult": 3.7,
    "sram_8kb_64b": 10.0,
    "sram_32kb_64b": 20.0,
    "sram_1mb_64b": 100.0,
    "dram_64b": 1300.0,
}
_SRAM_SIZES = (("sram_8kb_64b", 8 * 2**10), ("sram_32kb_64b", 32 * 2**10), ("sram_1mb_64b", 2**20))


def energy_table(energy: dict | None = None) -> dict[str, float]:
    """ENERGY_PJ with the entries of `energy` overriding it (unknown keys are an error)."""
    energy = dict(energy or {})
    unknown = sorted(set(energy) - set(ENERGY_PJ))
    if unknown:
        raise ExecutionError(f"energy table: unknown keys {unknown}; known: {sorted(ENERGY_PJ)}")
    bad = sorted(k for k, v in energy.items() if not isinstance(v, (int, float)) or not v >= 0)
    if bad:
        raise ExecutionError(f"energy table: {bad} must be non-negative numbers (pJ)")
    return {**ENERGY_PJ, **{k: float(v) for k, v in energy.items()}}


def _sram_pj_per_byte(table: dict, ub_bytes: int) -> float:
    """Per-byte SRAM cost at the smallest table size holding the unified buffer."""
    key = next((k for k, size in _SRAM_SIZES if ub_bytes <= size), _SRAM_SIZES[-1][0])
    return table[key] / 8


def _ceil(x: float) -> int:
    """Cycles are whole: ceil, tolerant of float noise."""
    return max(0, math.ceil(x - 1e-9))


def _energy(rec, sram_bytes: int, dram_bytes: int, table: dict, config) -> dict:
    """Energy in pJ of one layer by component."""
    ops = ("int8_mult", "int32_add") if rec.integer else ("fp32_mult", "fp32_add")
    per_mac = table[ops[0]] + table[ops[1]]
    mac = rec.macs * per_mac
    sram = sram_bytes * _sram_pj_per_byte(table, config.ub_bytes)
    dram = dram_bytes * table["dram_64b"] / 8
    return {
        "mac": mac,
        "mac_gated": (rec.macs - rec.zero_macs) * per_mac,
        "sram": sram,
        "dram": dram,
        "total": mac + sram + dram,
    }


def _roofline(macs: int, dram_bytes: int, cycles: int, config) -> dict:
    """Where a layer sits on the array's roofline."""
    peak = 2 * config.rows * config.cols
    ops = 2 * macs
    intensity = ops / dram_bytes if dram_bytes else None
    attainable = peak if intensity is None else min(peak, config.dram_bytes_per_cycle * intensity)
    return {
        "intensity": intensity,
        "attainable_ops_per_cycle": attainable,
        "achieved_ops_per_cycle": ops / cycles if cycles else 0.0,
        "bound": "compute" if attainable >= peak else "memory",
    }


def layer_costs(records, config, energy: dict | None = None) -> list[dict]:
    """The cost of each LayerRecord in program order, per the model in the module docstring."""
    table = energy_table(energy)
    bw = config.dram_bytes_per_cycle
    pes = config.rows * config.cols
    slack = 0  # DRAM cycles the previous layer left idle (none before the first)
    layers = []
    for rec in records:
        c = int(rec.compute_cycles)
        w = _ceil(rec.weight_bytes / bw)
        weights = rec.k * rec.n * rec.groups
        fifo_bytes = config.fifo_depth * pes * (rec.weight_bytes / weights if weights else 0)
        p = min(w, slack, _ceil(fifo_bytes / bw))
        rest = w - p
        tiles = max(1, rec.folds)
        fill = _ceil(min(max(0.0, w / tiles - p), c / tiles, rest))
        spill = 2 * max(0, rec.input_bytes + rec.output_bytes - config.ub_bytes)
        s = _ceil(spill / bw)
        weight_stall = max(c, rest) - c + fill
        cycles = c + weight_stall + s
        slack = cycles - rest - s
        sram = rec.input_bytes + rec.output_bytes
        dram = rec.weight_bytes + spill
        opb = 2 * rec.macs / rec.weight_bytes if rec.weight_bytes else None
        layers.append(
            {
                "name": rec.name,
                "op": rec.op,
                "m": rec.m,
                "k": rec.k,
                "n": rec.n,
                "groups": rec.groups,
                "folds": rec.folds,
                "cycles": cycles,
                "compute_cycles": c,
                "weight_fetch_cycles": w,
                "prefetch_cycles": p,
                "stall_cycles": weight_stall + s,
                "weight_stall_cycles": weight_stall,
                "data_stall_cycles": s,
                "utilization": rec.macs / (pes * cycles) if cycles else 0.0,
                "mapping_efficiency": rec.mapping_efficiency,
                "macs": rec.macs,
                "zero_macs": rec.zero_macs,
                "weight_bytes": rec.weight_bytes,
                "input_bytes": rec.input_bytes,
                "output_bytes": rec.output_bytes,
                "spill_bytes": spill,
                "sram_bytes": sram,
                "dram_bytes": dram,
                "energy_pj": _energy(rec, sram, dram, table, config),
                "ops_per_weight_byte": opb,
                "roofline": _roofline(rec.macs, dram, cycles, config),
            }
        )
    return layers


def report(records, config, energy: dict | None = None) -> dict:
    """The whole run's report: totals over `layer_costs` (schema in the module docstring)."""
    layers = layer_costs(records, config, energy)
    pes = config.rows * config.cols

    def total(key: str) -> int:
        return sum(layer[key] for layer in layers)

    cycles, compute, macs = total("cycles"), total("compute_cycles"), total("macs")
    parts = ("mac", "mac_gated", "sram", "dram", "total")
    peak = 2 * pes
    return {
        "schema": SCHEMA,
        "config": config.describe(),
        "energy_table": energy_table(energy),
        "total_cycles": cycles,
        "compute_cycles": compute,
        "stall_cycles": total("stall_cycles"),
        "weight_stall_cycles": total("weight_stall_cycles"),
        "data_stall_cycles": total("data_stall_cycles"),
        "seconds": cycles / config.clock_hz,
        "utilization": macs / (pes * cycles) if cycles else 0.0,
        "compute_utilization": macs / (pes * compute) if compute else 0.0,
        "macs": macs,
        "zero_macs": total("zero_macs"),
        "sram_bytes": total("sram_bytes"),
        "dram_bytes": total("dram_bytes"),
        "weight_bytes": total("weight_bytes"),
        "spill_bytes": total("spill_bytes"),
        "energy_pj": {p: sum(layer["energy_pj"][p] for layer in layers) for p in parts},
        "roofline": {
            "peak_ops_per_cycle": peak,
            "bytes_per_cycle": config.dram_bytes_per_cycle,
            "ridge_intensity": peak / config.dram_bytes_per_cycle,
        },
        "layers": layers,
    }


def _si(x: float, unit: str = "") -> str:
    """A compact number with its unit: 1234567 -> 1.23M; bytes in binary (24 MiB)."""
    if unit == "B":
        steps = ((2**30, "Gi"), (2**20, "Mi"), (2**10, "Ki"))
    else:
        steps = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1, ""), (1e-3, "m"))
        steps += ((1e-6, "u"), (1e-9, "n"), (1e-12, "p"))
    for scale, prefix in steps:
        if abs(x) >= scale:
            return f"{x / scale:.3g}{prefix}{unit}"
    return f"{x:.3g}{unit}"


def render(rep: dict) -> str:
    """The report as text for people: the configuration, a table per layer, then totals."""
    cfg = rep["config"]
    lines = [
        f"systolic {cfg['rows']}x{cfg['cols']} {cfg['dataflow']}, UB {_si(cfg['ub_bytes'], 'B')},"
        f" acc {_si(cfg['acc_bytes'], 'B')}, weight FIFO {cfg['fifo_depth']} tiles,"
        f" {_si(cfg['clock_hz'], 'Hz')}, DRAM {cfg['dram_bytes_per_cycle']:.3g} B/cycle",
        "",
    ]
    head = (
        "layer", "op", "cycles", "compute", "wfetch", "stall", "util", "map", "MACs",
        "zero", "DRAM B", "energy", "ops/wB", "bound",
    )  # fmt: skip
    rows = [head]
    for x in rep["layers"]:
        opb = x["ops_per_weight_byte"]
        zero = f"{x['zero_macs'] / x['macs']:.1%}" if x["macs"] else "-"
        rows.append(
            (x["name"], x["op"], str(x["cycles"]), str(x["compute_cycles"]),
             str(x["weight_fetch_cycles"]), str(x["stall_cycles"]), f"{x['utilization']:.2%}",
             f"{x['mapping_efficiency']:.1%}", _si(x["macs"]), zero, _si(x["dram_bytes"], "B"),
             _si(x["energy_pj"]["total"] * 1e-12, "J"), "-" if opb is None else f"{opb:.3g}",
             x["roofline"]["bound"])
        )  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    e = rep["energy_pj"]

    def j(pj: float) -> str:
        return _si(pj * 1e-12, "J")

    zero = rep["zero_macs"] / rep["macs"] if rep["macs"] else 0.0
    lines += [
        "",
        f"total cycles {rep['total_cycles']} ({rep['seconds'] * 1e6:.4g} us):"
        f" compute {rep['compute_cycles']}, weight stalls {rep['weight_stall_cycles']},"
        f" data stalls {rep['data_stall_cycles']}",
        f"utilization {rep['utilization']:.2%} (matrix unit alone"
        f" {rep['compute_utilization']:.2%})",
        f"MACs {_si(rep['macs'])}, with a zero operand {_si(rep['zero_macs'])} ({zero:.1%})",
        f"SRAM {_si(rep['sram_bytes'], 'B')}, DRAM {_si(rep['dram_bytes'], 'B')}"
        f" (weights {_si(rep['weight_bytes'], 'B')}, spills {_si(rep['spill_bytes'], 'B')})",
        f"energy {j(e['total'])}: MAC {j(e['mac'])} (zero-gated {j(e['mac_gated'])}),"
        f" SRAM {j(e['sram'])}, DRAM {j(e['dram'])}  [Horowitz ISSCC 2014, 45 nm]",
        f"roofline: peak {rep['roofline']['peak_ops_per_cycle']} ops/cycle, ridge at"
        f" {rep['roofline']['ridge_intensity']:.4g} ops/DRAM byte",
    ]
    return "\n".join(lines)
