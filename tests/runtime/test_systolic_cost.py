"""The systolic cost model, profile and roofline plot on synthetic LayerRecords.

A 4x4 array at 1 DRAM byte per cycle keeps the arithmetic checkable by hand.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from dlcc.errors import DlccError, ExecutionError
from dlcc.runtime.systolic.config import SystolicConfig
from dlcc.runtime.systolic.cost import ENERGY_PJ, layer_costs, render, report
from dlcc.runtime.systolic.profile import (
    KEYS,
    amdahl,
    amdahl_fractions,
    compare,
    cosine_distance,
    profile_vector,
    projection,
)
from dlcc.runtime.systolic.records import LayerRecord

CFG = SystolicConfig(rows=4, cols=4, ub_bytes=10_000, fifo_depth=2, dram_bytes_per_cycle=1.0)


def rec(name="fc", *, m=1, k=1000, n=1, folds=250, compute=250, zero=0, wbytes=None, inp=16,
        out=16, integer=True) -> LayerRecord:  # fmt: skip
    """A LayerRecord; weight_bytes defaults to one byte per weight (k * n int8)."""
    return LayerRecord(
        name=name, op="Dense", m=m, k=k, n=n, groups=1, folds=folds, compute_cycles=compute,
        macs=m * k * n, zero_macs=zero, mapping_efficiency=0.5,
        weight_bytes=k * n if wbytes is None else wbytes, input_bytes=inp, output_bytes=out,
        integer=integer,
    )  # fmt: skip


def weight_bound(wbytes=1000):
    """A matrix-vector layer: 1000 weights in 250 tiles of 4x4, 1000 MACs, 250 cycles."""
    return rec("fc", k=1000, folds=250, compute=250, wbytes=wbytes)


def compute_bound():
    """A big GEMM with few weights: 16 weights, 64000 MACs, 4000 cycles."""
    return rec("conv", m=4000, k=4, n=4, folds=1, compute=4000)


def test_cycles_never_below_compute():
    recs = [weight_bound(), compute_bound(), weight_bound(10), rec("s", inp=9000, out=9000)]
    for layer in layer_costs(recs, CFG):
        assert layer["cycles"] >= layer["compute_cycles"]
        assert layer["cycles"] == layer["compute_cycles"] + layer["stall_cycles"]
        assert layer["stall_cycles"] == layer["weight_stall_cycles"] + layer["data_stall_cycles"]


def test_weight_bound_layer_is_memory_bound_with_stalls():
    (x,) = layer_costs([weight_bound()], CFG)
    assert x["weight_fetch_cycles"] == 1000 and x["prefetch_cycles"] == 0
    # max(C, W) + fill, fill = ceil(min(W / tiles, C / tiles)) = ceil(min(4, 1)): the drain
    assert x["cycles"] == 1001 and x["weight_stall_cycles"] == 1000 - 250 + 1
    assert x["roofline"]["bound"] == "memory"
    assert x["roofline"]["intensity"] == pytest.approx(2.0)
    assert x["roofline"]["attainable_ops_per_cycle"] == pytest.approx(2.0)
    assert x["ops_per_weight_byte"] == pytest.approx(2.0)


def test_halving_weight_bytes_halves_fetch_and_dram_energy():
    (full,) = layer_costs([weight_bound(1000)], CFG)
    (half,) = layer_costs([weight_bound(500)], CFG)
    assert half["weight_fetch_cycles"] * 2 == full["weight_fetch_cycles"]
    assert half["dram_bytes"] * 2 == full["dram_bytes"]
    assert half["energy_pj"]["dram"] * 2 == pytest.approx(full["energy_pj"]["dram"])
    assert half["cycles"] < full["cycles"] and half["energy_pj"]["mac"] == full["energy_pj"]["mac"]


def test_compute_bound_layer():
    (x,) = layer_costs([compute_bound()], CFG)
    assert x["roofline"]["bound"] == "compute"
    assert x["roofline"]["attainable_ops_per_cycle"] == 2 * 4 * 4
    # the first (and only) weight tile must arrive before compute: 16 cycles of fill
    assert x["cycles"] == 4000 + 16 and x["weight_stall_cycles"] == 16
    assert x["utilization"] == pytest.approx(64000 / (16 * 4016))


def test_weight_fifo_prefetches_during_previous_compute():
    first, second = layer_costs([compute_bound(), weight_bound()], CFG)
    # the first layer leaves 4016 - 16 idle DRAM cycles; the FIFO holds 2 * 4 * 4 = 32 weights
    assert second["prefetch_cycles"] == 32
    assert second["cycles"] == 1000 - 32  # the first 4-byte tile is already there: no fill
    big_fifo = SystolicConfig(rows=4, cols=4, fifo_depth=100, dram_bytes_per_cycle=1.0)
    _, hidden = layer_costs([compute_bound(), weight_bound()], big_fifo)
    assert hidden["prefetch_cycles"] == 1000 and hidden["cycles"] == hidden["compute_cycles"]


def test_compressed_weights_fill_the_fifo_with_fewer_bytes():
    # 1000 weights in 250 bytes: the 32-weight FIFO holds 8 bytes of the compressed stream
    _, x = layer_costs([compute_bound(), weight_bound(250)], CFG)
    assert x["prefetch_cycles"] == 8


def test_ub_spill_is_dram_traffic_and_stall():
    (x,) = layer_costs([rec("big", compute=100, wbytes=0, inp=8000, out=4000)], CFG)
    assert x["spill_bytes"] == 2 * 2000  # written out and read back
    assert x["dram_bytes"] == 4000 and x["data_stall_cycles"] == 4000
    assert x["cycles"] == 100 + 4000
    (fits,) = layer_costs([rec("ok", compute=100, wbytes=0, inp=5000, out=5000)], CFG)
    assert fits["spill_bytes"] == 0 and fits["cycles"] == 100


def test_energy_components_add_up():
    rep = report([weight_bound(), compute_bound(), rec("f", zero=400, integer=False)], CFG)
    for e in [rep["energy_pj"]] + [x["energy_pj"] for x in rep["layers"]]:
        assert e["total"] == pytest.approx(e["mac"] + e["sram"] + e["dram"])
        assert e["mac_gated"] <= e["mac"]
    fc = rep["layers"][0]
    assert fc["energy_pj"]["mac"] == pytest.approx(1000 * (0.2 + 0.1))  # int8 mult + int32 add
    assert fc["energy_pj"]["dram"] == pytest.approx(1000 * 1300 / 8)
    assert fc["energy_pj"]["sram"] == pytest.approx(32 * 20 / 8)  # 10 kB UB: the 32 KB entry
    f = rep["layers"][2]
    assert f["energy_pj"]["mac"] == pytest.approx(1000 * (3.7 + 0.9))
    assert f["energy_pj"]["mac_gated"] == pytest.approx(600 * (3.7 + 0.9))


def test_energy_table_is_overridable():
    base = report([weight_bound()], CFG)
    cheap = report([weight_bound()], CFG, energy={"dram_64b": 650.0})
    assert cheap["energy_pj"]["dram"] * 2 == pytest.approx(base["energy_pj"]["dram"])
    assert cheap["energy_table"]["dram_64b"] == 650.0 and ENERGY_PJ["dram_64b"] == 1300.0
    with pytest.raises(ExecutionError, match="unknown keys"):
        report([weight_bound()], CFG, energy={"dram": 1.0})
    with pytest.raises(ExecutionError, match="non-negative"):
        report([weight_bound()], CFG, energy={"dram_64b": -1})
    with pytest.raises(ExecutionError, match="non-negative"):
        report([weight_bound()], CFG, energy={"dram_64b": "lots"})


def test_report_schema_and_json():
    rep = json.loads(json.dumps(report([weight_bound(), compute_bound()], CFG)))
    top = "schema config total_cycles seconds utilization macs zero_macs sram_bytes dram_bytes"
    for key in (*top.split(), "energy_pj", "roofline", "layers"):
        assert key in rep
    assert rep["config"] == CFG.describe()
    assert set(rep["energy_pj"]) == {"mac", "mac_gated", "sram", "dram", "total"}
    assert rep["total_cycles"] == sum(x["cycles"] for x in rep["layers"])
    assert rep["seconds"] == pytest.approx(rep["total_cycles"] / CFG.clock_hz)
    assert rep["utilization"] == pytest.approx(rep["macs"] / (16 * rep["total_cycles"]))
    for x in rep["layers"]:
        for key in ("name", "op", "cycles", "compute_cycles", "weight_fetch_cycles",
                    "stall_cycles", "utilization", "mapping_efficiency", "macs", "zero_macs",
                    "sram_bytes", "dram_bytes", "energy_pj", "ops_per_weight_byte"):  # fmt: skip
            assert key in x
        assert set(x["roofline"]) >= {"intensity", "attainable_ops_per_cycle", "bound"}


def test_empty_program_and_render():
    empty = report([], CFG)
    assert empty["total_cycles"] == 0 and empty["layers"] == [] and empty["utilization"] == 0
    text = render(report([weight_bound(), compute_bound()], CFG))
    assert text.splitlines()[0].startswith("systolic 4x4 ws")
    assert "fc" in text and "conv" in text and "memory" in text and "Horowitz" in text
    assert "total cycles" in render(empty)


def test_profile_vector_sums_to_one():
    rep = report([weight_bound(), compute_bound(), rec("s", inp=9000, out=9000)], CFG)
    p = profile_vector(rep)
    assert tuple(p) == KEYS and math.isclose(sum(p.values()), 1.0)
    assert p["weight_load"] > 0 and p["data_load"] > 0 and p["transfer"] == 0
    with pytest.raises(ExecutionError, match="no cycles"):
        profile_vector(report([], CFG))


def test_cosine_distance():
    a = profile_vector(report([weight_bound()], CFG))
    b = profile_vector(report([compute_bound()], CFG))
    assert cosine_distance(a, dict(a)) == 0.0
    assert 0 < cosine_distance(a, b) <= 1
    assert cosine_distance({"x": 1.0, "y": 0.0}, {"x": 0.0, "y": 1.0}) == pytest.approx(1.0)
    with pytest.raises(ExecutionError):
        cosine_distance({"x": 1.0}, {"y": 1.0})
    with pytest.raises(ExecutionError):
        cosine_distance({"x": 0.0}, {"x": 1.0})
    cmp = compare(report([weight_bound()], CFG), report([weight_bound(100)], CFG))
    assert cmp["cosine_distance"] > 0


def test_amdahl_limits():
    assert amdahl(0.3, 0.4, 1, 1) == pytest.approx(1.0)
    assert amdahl(0.0, 0.0, 8, 16) == pytest.approx(128.0)
    assert amdahl(1.0, 0.5, 64, 64) == pytest.approx(1.0)
    assert amdahl(0.0, 1.0, 8, 16) == pytest.approx(8.0)
    assert amdahl(0.5, 0.0, 10**6, 10**6) == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ExecutionError):
        amdahl(1.5, 0, 1, 1)
    with pytest.raises(ExecutionError):
        amdahl(0, 0, 0, 1)


def test_amdahl_fractions_from_the_profile():
    rep = report([weight_bound(), compute_bound()], CFG)
    fr = amdahl_fractions(rep)
    p = profile_vector(rep)
    assert fr["serial_fraction"] == pytest.approx(p["weight_load"] + p["data_load"])
    assert fr["scalar_fraction"] == pytest.approx(1 - rep["compute_utilization"])
    assert 0 < fr["scalar_fraction"] < 1
    proj = projection(rep, 4, 8)
    assert 1 <= proj["speedup"] <= 1 / fr["serial_fraction"]


def test_roofline_png(tmp_path):
    pytest.importorskip("matplotlib")
    from dlcc.plot import roofline_png

    path = tmp_path / "roof.png"
    rep = report([weight_bound(), compute_bound(), rec("nodram", wbytes=0)], CFG)
    roofline_png(rep, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_roofline_png_without_matplotlib(tmp_path, monkeypatch):
    from dlcc.plot import roofline_png

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(DlccError, match="pip install matplotlib"):
        roofline_png(report([weight_bound()], CFG), str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()
