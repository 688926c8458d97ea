"""The systolic target: register-level vs fast mode, bit-exactness vs interp, SCALE-Sim cycles.

- regsim (values and cycles) against the closed form and the fast engine on random Dense and
  Conv GEMMs (shapes smaller than the array and non-multiples of it), 4x4 / 8x8 / 16x16;
- `--target systolic` equals `--target interp` exactly on int8 bundles (LeNet-5 at -O1 and
  -O3, an LSTM model, SqueezeNet; ResNet-50 is @slow), arrays 8 / 32 / 256, every dataflow;
- compute cycles against SCALE-Sim v2.0.2's "Total Cycles" for the acceptance workloads
  (measured by benchmarks/scalesim_check.py): dlcc = SCALE-Sim + 1, and against a live
  SCALE-Sim run when the package is installed.
"""

from __future__ import annotations

import csv
import os
import types

import numpy as np
import pytest
from conftest import sample_path
from hypothesis import given, settings
from hypothesis import strategies as st

import dlcc
from dlcc.errors import ExecutionError
from dlcc.runtime.kernels import NoAttrs, get_kernel
from dlcc.runtime.kernels.matrix import ConvAttrs
from dlcc.runtime.systolic import regsim
from dlcc.runtime.systolic.config import DATAFLOWS, SystolicConfig
from dlcc.runtime.systolic.cycles import SCALESIM_OFFSET, gemm_cycles, mapping_efficiency
from dlcc.runtime.systolic.engine import SystolicEngine, SystolicTarget
from dlcc.runtime.targets import get_target

ARRAYS = (8, 32, 256)
SMALL_ARRAYS = (4, 8, 16)
# SCALE-Sim v2.0.2 "Total Cycles" (CALC bandwidth, 0 stalls) by (M, K, N) and array side,
# in ws, os, is order. LeNet-5's convs: 28x28x1 -> 20 5x5 filters, 12x12x20 -> 50 5x5.
SCALESIM = {
    (1, 784, 300): {8: (85651, 30323, 31555), 32: (23749, 8459, 9849), 128: (8042, 3113, 4773)},
    (64, 784, 300): {8: (320263, 242591, 252447), 32: (39499, 16919, 19699),
                     128: (9365, 3113, 4773)},
    (256, 256, 256): {8: (284671, 276479, 284671), 32: (22399, 20351, 22399),
                      128: (2551, 2039, 2551)},
    (576, 25, 20): {8: (7175, 8423, 12095), 32: (669, 1565, 2051), 128: (957, 1394, 2009)},
    (64, 500, 50): {8: (37925, 28783, 36287), 32: (5055, 2247, 4607), 128: (1783, 753, 1727)},
}  # fmt: skip


def stub_bundle(n_tensors: int = 1):
    """What the engine reads of a bundle: each tensor's name and stored bytes."""
    tensors = [types.SimpleNamespace(name=f"w{i}", nbytes=100 + i) for i in range(n_tensors)]
    return types.SimpleNamespace(file=types.SimpleNamespace(tensors=tensors))


def int8(rng, shape, zeros=0.3):
    """Random int8 values with about `zeros` of them zero."""
    x = rng.integers(-128, 128, shape).astype(np.int8)
    return np.where(rng.random(shape) < zeros, 0, x).astype(np.int8)


# ---------------------------------------------------------------- closed form and regsim


@pytest.mark.parametrize("mkn", list(SCALESIM))
@pytest.mark.parametrize("side", [8, 32, 128])
def test_cycles_match_scalesim_table(mkn, side):
    for dataflow, expected in zip(DATAFLOWS, SCALESIM[mkn][side]):
        cycles, _ = gemm_cycles(dataflow, side, side, *mkn)
        assert cycles - SCALESIM_OFFSET == expected, (dataflow, mkn, side)


@given(
    dataflow=st.sampled_from(DATAFLOWS),
    side=st.sampled_from(SMALL_ARRAYS),
    mkn=st.tuples(*[st.integers(1, 40)] * 3),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=60, deadline=None)
def test_regsim_matches_closed_form(dataflow, side, mkn, seed):
    m, k, n = mkn
    rng = np.random.default_rng(seed)
    a, b = int8(rng, (m, k)), int8(rng, (k, n))
    y, cycles = regsim.simulate(dataflow, side, side, a, b)
    assert np.array_equal(y, a.astype(np.int64) @ b)
    assert cycles == gemm_cycles(dataflow, side, side, m, k, n)[0]


@pytest.mark.parametrize("rows, cols", [(3, 5), (5, 3), (1, 7), (4, 4)])
def test_regsim_rectangular_arrays_and_stacked_gemms(rows, cols):
    rng = np.random.default_rng(rows * cols)
    a, b = int8(rng, (3, 13, 11)), int8(rng, (3, 11, 9))  # e.g. a conv's groups: in sequence
    for dataflow in DATAFLOWS:
        y, cycles = regsim.simulate(dataflow, rows, cols, a, b)
        assert np.array_equal(y, a.astype(np.int64) @ b)
        assert cycles == 3 * gemm_cycles(dataflow, rows, cols, 13, 11, 9)[0]


def test_mapping_efficiency_is_the_mean_over_folds():
    # ws, K=7 x N=6 on 4x4: folds map 4x4, 4x2, 3x4, 3x2 PEs (SCALE-Sim reports 65.625 %)
    assert mapping_efficiency("ws", 4, 4, 10, 7, 6) == pytest.approx((16 + 8 + 12 + 6) / 64)
    assert mapping_efficiency("is", 4, 4, 10, 7, 6) == pytest.approx(70 / 96)
    assert mapping_efficiency("os", 4, 4, 10, 7, 6) == pytest.approx(60 / 96)


def engines(dataflow: str, side: int):
    """A fast and an exact-timing engine on the same array."""
    config = SystolicConfig(rows=side, cols=side, dataflow=dataflow)
    return SystolicEngine(config, stub_bundle()), SystolicEngine(config, stub_bundle(), True)


@given(
    dataflow=st.sampled_from(DATAFLOWS),
    side=st.sampled_from(SMALL_ARRAYS),
    lead=st.lists(st.integers(1, 6), min_size=1, max_size=2),
    kn=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_dense_exact_timing_equals_fast(dataflow, side, lead, kn, seed):
    rng = np.random.default_rng(seed)
    x, w = int8(rng, (*lead, kn[0])), int8(rng, kn)
    fast, exact = engines(dataflow, side)
    y = fast.matmul(x, w, 0)
    assert np.array_equal(y, get_kernel("Dense").fn(NoAttrs(), x, w, None))
    assert np.array_equal(exact.matmul(x, w, 0), y) and y.dtype == np.int32
    assert fast.records == exact.records
    (rec,) = fast.records
    products = x.reshape(-1, kn[0])[:, :, None].astype(int) * w[None].astype(int)
    assert rec.zero_macs == np.count_nonzero(products == 0) and rec.macs == products.size


@given(
    dataflow=st.sampled_from(DATAFLOWS),
    side=st.sampled_from(SMALL_ARRAYS),
    batch=st.integers(1, 2),
    cin=st.integers(1, 3),
    cout=st.integers(1, 3),
    group=st.sampled_from([1, 2]),
    hw=st.tuples(st.integers(3, 9), st.integers(3, 9)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.integers(1, 2),
    pad=st.integers(0, 1),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=40, deadline=None)
def test_conv_exact_timing_equals_fast(
    dataflow, side, batch, cin, cout, group, hw, kernel, stride, pad, seed
):
    rng = np.random.default_rng(seed)
    x = int8(rng, (batch, cin * group, *hw))
    w = int8(rng, (cout * group, cin, *kernel))
    attrs = ConvAttrs(strides=(stride, stride), pads=(pad,) * 4, group=group)
    fast, exact = engines(dataflow, side)
    y = fast.convolve(x, w, attrs, 0)
    assert np.array_equal(y, get_kernel("Conv").fn(attrs, x, w, None))
    assert np.array_equal(exact.convolve(x, w, attrs, 0), y)
    assert fast.records == exact.records
    (rec,) = fast.records
    m, k = batch * y.shape[2] * y.shape[3], cin * kernel[0] * kernel[1]
    assert (rec.m, rec.k, rec.n, rec.groups) == (m, k, cout, group)
    per_group = gemm_cycles(dataflow, side, side, rec.m, rec.k, rec.n)
    assert (rec.compute_cycles, rec.folds) == (group * per_group[0], group * per_group[1])


def test_float_operands_take_the_kernel_values():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((5, 30), np.float32), rng.standard_normal((30, 7), np.float32)
    fast, exact = engines("os", 4)
    y = exact.matmul(x, w, 0)
    assert np.array_equal(y, get_kernel("Dense").fn(NoAttrs(), x, w, None))
    assert np.array_equal(fast.matmul(x, w, 0), y)
    assert fast.records == exact.records and not fast.records[0].integer


def test_exact_timing_refuses_large_arrays():
    with pytest.raises(ExecutionError, match="64x64"):
        SystolicEngine(SystolicConfig(rows=128, cols=8), stub_bundle(), exact_timing=True)


def test_registered_target():
    target = get_target("systolic")
    assert isinstance(target, SystolicTarget) and target.config == SystolicConfig()


# ---------------------------------------------------------------- whole bundles


def assert_matches_interp(bundle, x, sides=ARRAYS):
    """Every output of every array and dataflow equals the interpreter's, bit for bit."""
    expected = bundle.run(x, target="interp")
    for side in sides:
        for dataflow in DATAFLOWS:
            target = SystolicTarget(SystolicConfig(rows=side, cols=side, dataflow=dataflow))
            got = target.run(bundle, x)
            assert got.keys() == expected.keys()
            for name in expected:
                assert np.array_equal(got[name], expected[name]), (name, side, dataflow)
                assert got[name].dtype == expected[name].dtype
            assert target.records and all(r.integer for r in target.records)


@pytest.fixture(scope="module")
def lenet5(tmp_path_factory, sample_images):
    """LeNet-5 compiled at -O1 and -O3 with the 256 sample images as calibration."""
    out = tmp_path_factory.mktemp("systolic")
    bundles = {}
    for level in ("-O1", "-O3"):
        path = str(out / f"lenet5{level}.bin")
        dlcc.compile(sample_path("lenet5.onnx"), path, level, {"image": sample_images[0]})
        bundles[level] = dlcc.load(path)
    return bundles


@pytest.mark.parametrize("level", ["-O1", "-O3"])
def test_lenet5_int8_matches_interp(lenet5, sample_images, level):
    assert_matches_interp(lenet5[level], sample_images[0])


@pytest.mark.parametrize("dataflow", DATAFLOWS)
def test_lenet5_exact_timing_equals_fast(lenet5, sample_images, dataflow):
    config = SystolicConfig(rows=8, cols=8, dataflow=dataflow)
    fast, exact = SystolicTarget(config), SystolicTarget(config, exact_timing=True)
    x = sample_images[0][:3]
    got, expected = exact.run(lenet5["-O1"], x), fast.run(lenet5["-O1"], x)
    assert all(np.array_equal(got[k], expected[k]) for k in expected)
    assert exact.records == fast.records and len(fast.records) == 4


def test_lenet5_records(lenet5):
    target = SystolicTarget(SystolicConfig(rows=32, cols=32))
    lenet5["-O1"].run(np.zeros((2, 1, 28, 28), np.float32), target=target)
    conv1, conv2, fc1, fc2 = target.records
    assert (conv1.op, conv1.m, conv1.k, conv1.n) == ("Conv", 2 * 576, 25, 20)
    assert (conv2.m, conv2.k, conv2.n, fc1.m, fc1.k, fc1.n) == (128, 500, 50, 2, 800, 500)
    tensors = {t.name: t.nbytes for t in lenet5["-O1"].file.tensors}
    assert all(r.weight_bytes == tensors[r.name] for r in target.records)
    assert fc2.input_bytes == 2 * 500 and fc2.output_bytes == 2 * 10 * 4
    assert conv1.zero_macs == conv1.macs  # an all-zero image


def test_lstm_int8_matches_interp(tmp_path):
    rng = np.random.default_rng(3)
    path = str(tmp_path / "lstm.bin")
    calibration = {"x": rng.standard_normal((5, 32, 8), np.float32)}
    model = os.path.join(os.path.dirname(__file__), "..", "data", "torch", "lstm_legacy.onnx")
    dlcc.compile(model, path, "-O1", calibration)
    assert_matches_interp(dlcc.load(path), rng.standard_normal((5, 4, 8), np.float32))


def light_int8(name: str, work) -> tuple:
    """A light-zoo model compiled at -O1 (4 calibration images) and one batch-1 input."""
    from light_models import data_input, light_model

    model = light_model(name, str(work))
    input_name, shape = data_input(model)
    rng = np.random.default_rng(4)
    path = str(work / f"{name}.bin")
    calibration = {input_name: rng.standard_normal((4, *shape), np.float32)}
    dlcc.compile(model, path, "-O1", calibration)
    return dlcc.load(path), rng.standard_normal((1, *shape), np.float32)


def test_squeezenet_int8_matches_interp(tmp_path):
    assert_matches_interp(*light_int8("squeezenet", tmp_path))


@pytest.mark.slow
def test_resnet50_int8_matches_interp(tmp_path):
    assert_matches_interp(*light_int8("resnet50", tmp_path))


# ---------------------------------------------------------------- a live SCALE-Sim run
SCALESIM_CFG = (
    "[general]\nrun_name = dlcc\n[architecture_presets]\nArrayHeight: {side}\n"
    "ArrayWidth: {side}\nIfmapSramSzkB: 4096\nFilterSramSzkB: 4096\nOfmapSramSzkB: 4096\n"
    "IfmapOffset: 0\nFilterOffset: 10000000\nOfmapOffset: 20000000\nDataflow: {dataflow}\n"
    "Bandwidth: 10\nMemoryBanks: 1\n[run_presets]\nInterfaceBandwidth: CALC\n"
)


@pytest.mark.parametrize("mkn", [(10, 7, 6), (3, 17, 9), (576, 25, 20)])
@pytest.mark.parametrize("side", [4, 8])
def test_against_live_scalesim(tmp_path, mkn, side):
    scale_sim = pytest.importorskip("scalesim.scale_sim")
    m, k, n = mkn
    for dataflow in DATAFLOWS:
        work = tmp_path / dataflow
        work.mkdir()
        (work / "a.cfg").write_text(SCALESIM_CFG.format(side=side, dataflow=dataflow))
        (work / "t.csv").write_text(f"Layer, M, N, K,\nl0, {m}, {n}, {k},\n")
        sim = scale_sim.scalesim(
            save_disk_space=True, verbose=False, config=str(work / "a.cfg"),
            topology=str(work / "t.csv"), input_type_gemm=True,
        )  # fmt: skip
        sim.run_scale(top_path=str(work))
        with open(work / "dlcc" / "COMPUTE_REPORT.csv") as f:
            total, stalls = (int(v) for v in list(csv.reader(f))[1][1:3])
        assert stalls == 0
        assert gemm_cycles(dataflow, side, side, m, k, n)[0] == total + SCALESIM_OFFSET
