"""The fused Activate unit and the interpreter's compiled program, against the unfused ops.

- `ActivateUnit` (bias + requantize + table / Relu / dequantize, in cache-sized blocks)
  equals the op-by-op composition with the int64 requantize formula, bit for bit, for dense
  and conv accumulators, one block and many;
- the interpreter writes over accumulators in place only where no one else sees them;
- constants (a bundle's weights) have their derived operands cached, other arrays never;
- the hot path runs no import (`get_kernel` cached), and the fused unit beats the unfused
  ops (a ratio of interleaved medians, never an absolute time).
"""

from __future__ import annotations

import builtins
import importlib
import statistics
import time

import numpy as np
import pytest
from test_quant import requantize_int64

import dlcc
import dlcc.runtime.activate as activate_module
from dlcc.formats import isa
from dlcc.runtime.activate import ActivateUnit, spread_bias
from dlcc.runtime.interpreter import Interpreter
from dlcc.runtime.kernels import code_of, get_kernel, kernel_at, load_all
from dlcc.runtime.kernels.activation import LeakyReluAttrs
from dlcc.runtime.kernels.constants import derived, is_constant, mark_constant
from dlcc.runtime.kernels.matrix import as_float32, conv_weight_matrix
from dlcc.runtime.kernels.quant import quantize_multiplier

NO = isa.NO_TENSOR


def unfused(instr: isa.Activate, attrs, acc: np.ndarray, w: list[np.ndarray]) -> np.ndarray:
    """The Activate instruction's docstring, op by op, with the int64 requantize."""
    if instr.bias != NO:
        acc = acc + w[instr.bias]
    if instr.requant != NO:
        r = w[instr.requant]
        if r.dtype.kind == "f":
            acc = (acc * r.astype(np.float64)).astype(np.float32)
        else:
            acc = requantize_int64(acc, r[0], r[1])
            if instr.lut != NO:
                return w[instr.lut][acc.astype(np.int16) + 128]
    kernel = kernel_at(instr.function)
    return kernel.fn(attrs, acc) if kernel else acc


def weights_for(rng, channels: int, view: tuple[int, ...], smallest: float = 2.0**-14):
    """[bias, int requant, float scales, table, float bias] for `channels` channels shaped
    `view`; the
    multipliers from `smallest` (2^-14: shifts up to 44, "float"; below: "split") to 2^-6."""
    real = np.exp2(rng.uniform(np.log2(smallest), -6, channels))
    mult, shift = quantize_multiplier(real)
    bias = rng.integers(-(2**20), 2**20, channels).astype(np.int32).reshape(view)
    requant = np.stack([mult, shift]).reshape(2, *view)
    scales = rng.uniform(1e-4, 1e-2, channels).astype(np.float32).reshape(view)
    table = rng.integers(-128, 128, 256).astype(np.int8)
    fbias = rng.standard_normal(channels).astype(np.float32).reshape(view)
    return [mark_constant(a) for a in (bias, requant, scales, table, fbias)]


CASES = {  # name: (bias, function, requant, table)
    "int8": (0, isa.NONE, 1, NO),
    "int8 small scales": (0, "Relu", 1, NO),
    "int8+relu": (0, "Relu", 1, NO),
    "int8+lut": (0, "Sigmoid", 1, 3),
    "int8 no bias": (NO, "Relu", 1, NO),
    "dequantize": (0, isa.NONE, 2, NO),
    "dequantize+sigmoid": (0, "Sigmoid", 2, NO),
    "float+leaky": (4, "LeakyRelu", NO, NO),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    "shape,view,block",
    [
        ((7, 300), (300,), 1 << 16),  # Dense, one block
        ((7, 300), (300,), 1000),  # Dense, runs of rows
        ((3, 20, 9, 9), (20, 1, 1), 1 << 16),  # Conv, one block
        ((3, 20, 9, 9), (20, 1, 1), 500),  # Conv, runs of channels within one image
        ((3, 20, 2, 2), (20, 1, 1), 1 << 16),  # Conv over 2x2 maps: a float bias written out
        ((300,), (300,), 64),  # a 1-D accumulator, runs of channels
    ],
)
def test_fused_activate_equals_the_unfused_ops(monkeypatch, case, shape, view, block):
    monkeypatch.setattr(activate_module, "BLOCK", block)
    rng = np.random.default_rng(len(case) + len(shape) + block)
    w = weights_for(rng, view[0], view, 2.0**-22 if "small" in case else 2.0**-14)
    bias, function, requant, table = CASES[case]
    code = function if isinstance(function, int) else code_of(function)
    attrs = LeakyReluAttrs(0.1) if function == "LeakyRelu" else None
    instr = isa.Activate(0, 1, bias, code, 0, requant, table)
    if requant == NO:
        acc = rng.standard_normal(shape).astype(np.float32)
    else:
        acc = rng.integers(-(2**26), 2**26, shape).astype(np.int32)
        acc.reshape(-1)[:4] = [-(2**31), 2**31 - 1, 0, -1]  # the int32 limits (bias wraps)
    expected = unfused(instr, attrs, acc, w)
    unit = ActivateUnit(instr, attrs, w)
    if requant == 1:
        assert unit.requant.method == ("split" if "small" in case else "float")
    got = unit(acc.copy())
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(unit(acc.copy(), owned=True), expected)  # in place, same


@pytest.mark.parametrize("case", [c for c, spec in CASES.items() if spec[2] != NO])
@pytest.mark.parametrize(
    "shape,view,bound",
    [
        ((5, 300), (300,), 2**21),  # Dense, few elements (<= SMALL: the fewest calls); float32 bias
        ((40, 300), (300,), 2**24),  # Dense, many; bound + bias past 2^24: float64 bias
        ((3, 20, 9, 9), (20, 1, 1), 2**21),  # Conv, contiguous and strided
    ],
)
@pytest.mark.parametrize("block,in_place", [(1 << 16, 1000), (1000, 1000), (1000, 1 << 30)])
def test_float32_and_strided_accumulators_give_the_int32_result(
    monkeypatch, case, shape, view, bound, block, in_place
):
    """What the numpy engine hands an Activate that `takes_float`: float32 holding the exact
    sums (|acc| <= bound), maybe in the product's own layout (read as it lies, or copied to
    C order first): the int32 result, bit for bit."""
    monkeypatch.setattr(activate_module, "BLOCK", block)
    monkeypatch.setattr(activate_module, "IN_PLACE_ORDER", in_place)
    rng = np.random.default_rng(bound % 1000 + len(shape) + block)
    w = weights_for(rng, view[0], view, 2.0**-22 if "small" in case else 2.0**-14)
    bias, function, requant, table = CASES[case]
    code = function if isinstance(function, int) else code_of(function)
    instr = isa.Activate(0, 1, bias, code, 0, requant, table)
    acc = rng.integers(-bound, bound + 1, shape).astype(np.int32)
    acc.reshape(-1)[:2] = [-bound, bound]
    expected = unfused(instr, None, acc, w)
    unit = ActivateUnit(instr, None, w, bound)
    assert unit.takes_float
    if bias != NO:
        top = np.abs(w[bias]).max()
        assert unit.wide_bias.dtype == (np.float32 if bound + top <= 2**24 else np.float64)
    layouts = [acc.astype(np.float32)]
    if len(shape) == 4:  # as an NHWC product leaves them, and as a channel-major one
        for order in ((0, 2, 3, 1), (1, 0, 2, 3)):
            back = np.argsort(order)
            layouts.append(np.ascontiguousarray(layouts[0].transpose(order)).transpose(back))
            assert not layouts[-1].flags.c_contiguous
        layouts.append(acc.transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2))  # int32 too
    for a in layouts:
        for owned in (False, True):
            got = unit(a.copy() if owned else a, owned)
            assert got.dtype == expected.dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, expected)


def test_a_float_bias_is_written_out_over_an_image_of_few_pixels_only():
    bias = np.arange(20, dtype=np.float32).reshape(20, 1, 1)
    spread = spread_bias(bias, (3, 20, 2, 2))  # 4 pixels a channel: written out
    assert spread.shape == (1, 20, 2, 2) and spread.flags.c_contiguous
    assert np.array_equal(
        np.broadcast_to(spread, (3, 20, 2, 2)), np.broadcast_to(bias, (3, 20, 2, 2))
    )
    assert spread_bias(bias, (3, 20, 9, 9)) is bias  # 81 > SPREAD_RATIO: the broadcast one
    dense = np.ones(300, np.float32)
    assert spread_bias(dense, (7, 300)) is dense  # nothing to write out
    assert spread_bias(bias, (3, 7, 2, 2)) is bias  # a mismatch: numpy's add will say so


def test_a_bias_that_could_wrap_int32_keeps_the_accumulators_int32():
    rng = np.random.default_rng(4)
    w = weights_for(rng, 4, (4,))
    instr = isa.Activate(0, 1, 0, isa.NONE, 0, 1, NO)
    assert ActivateUnit(instr, None, w, 2**20).takes_float
    assert not ActivateUnit(instr, None, w, 2**24 + 1).takes_float  # sums past float32's
    assert not ActivateUnit(instr, None, w).takes_float  # no bound: never float32
    big = [mark_constant(np.full(4, 2**31 - 2**20, np.int32)), *w[1:]]
    assert not ActivateUnit(instr, None, big, 2**20).takes_float  # acc + b may pass 2^31


def test_relu_folds_into_the_clamp_and_identity_tables_vanish():
    rng = np.random.default_rng(1)
    w = weights_for(rng, 4, (4,))
    relu = ActivateUnit(isa.Activate(0, 1, 0, code_of("Relu"), 0, 1, NO), None, w)
    assert (relu.lo, relu.table) == (0, None)
    identity = mark_constant(np.arange(-128, 128, dtype=np.int8))
    unit = ActivateUnit(isa.Activate(0, 1, 0, isa.NONE, 0, 1, 5), None, [*w, identity])
    assert (unit.lo, unit.table) == (-127, None)


def test_the_interpreter_leaves_watched_and_shared_accumulators_alone(sample_bundles):
    """In place only where the accumulators are the Activate's alone: a watched run keeps
    them as the matrix unit wrote them, and gives the same outputs."""
    bundle = dlcc.load(sample_bundles["lenet5"])
    x = np.random.default_rng(2).standard_normal((3, 1, 28, 28)).astype(np.float32)
    conv = next(i for i in bundle.file.program if isinstance(i, isa.Convolve))
    act = next(i for i in bundle.file.program if isinstance(i, isa.Activate))
    assert act.src == conv.dst and act.bias != NO
    plain = Interpreter().run(bundle, x)
    interp = Interpreter()
    watched = interp.run(bundle, x, watch=(conv.dst, act.dst))
    assert all(np.array_equal(plain[k], watched[k]) for k in plain)
    acc, out = interp.watched[conv.dst], interp.watched[act.dst]
    assert not np.shares_memory(acc, out)
    attrs = bundle.attrs[bundle.file.program.index(act)]
    np.testing.assert_array_equal(unfused(act, attrs, acc, bundle.weights), out)


def test_constants_cache_what_kernels_derive_and_release_it():
    w = np.arange(24, dtype=np.int8).reshape(2, 3, 2, 2)
    fresh = conv_weight_matrix(w, 1)
    assert conv_weight_matrix(w, 1) is not fresh  # not constant: computed every call
    mark_constant(w)
    assert not w.flags.writeable
    m = conv_weight_matrix(w, 1)
    assert conv_weight_matrix(w, 1) is m and is_constant(m)
    np.testing.assert_array_equal(m, fresh)
    f = as_float32(m)
    assert f.dtype == np.float32 and as_float32(m) is f
    calls = []
    assert derived(w, "probe", lambda v: calls.append(1) or v.sum()) == derived(
        w, "probe", lambda v: calls.append(1) or v.sum()
    )
    assert calls == [1]
    from dlcc.runtime.kernels import constants

    before = len(constants._DERIVED)
    del w, m, f
    assert len(constants._DERIVED) <= before - 3  # released with the constant


def test_the_hot_path_imports_nothing(sample_bundles):
    load_all()
    bundle = dlcc.load(sample_bundles["lenet_300_100"])
    x = np.zeros((2, 1, 28, 28), np.float32)
    bundle.run(x)  # compiles the program once

    def refuse(*args, **kwargs):
        raise AssertionError("an import on the hot path")

    # By hand, not monkeypatch: its setattr itself imports (inspect) on newer pytest.
    real_import, real_import_module = builtins.__import__, importlib.import_module
    builtins.__import__, importlib.import_module = refuse, refuse
    try:
        assert get_kernel("Dense").op == "Dense"
        bundle.run(x)
    finally:
        builtins.__import__, importlib.import_module = real_import, real_import_module


def test_the_fused_activate_is_faster_than_the_unfused_ops():
    """bias + requantize + Relu on a conv layer's accumulators (beyond L2): the fused,
    blocked unit against the op-by-op int64 composition. Interleaved rounds, medians, a
    ratio (the machine is shared; it measures ~5x here)."""
    rng = np.random.default_rng(3)
    w = weights_for(rng, 20, (20, 1, 1))
    instr = isa.Activate(0, 1, 0, code_of("Relu"), 0, 1, NO)
    unit = ActivateUnit(instr, None, w)
    acc = rng.integers(-(2**22), 2**22, (32, 20, 24, 24)).astype(np.int32)
    fused, plain = [], []
    for _ in range(9):
        for times, fn in ((fused, unit), (plain, lambda a: unfused(instr, None, a, w))):
            start = time.perf_counter()
            for _ in range(3):
                fn(acc)
            times.append(time.perf_counter() - start)
    assert statistics.median(fused) < 0.6 * statistics.median(plain)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_chooses_its_numerator_bit_for_bit(dtype):
    """One exp and one division, the same bits as computing both quotients and selecting."""
    from dlcc.runtime.kernels.activation import sigmoid

    rng = np.random.default_rng(6)
    special = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e30, -1e30, 88.0, -88.0, 1e-40, -1e-40]
    x = np.concatenate([rng.standard_normal(50_000) * 12, special]).astype(dtype)
    z = np.exp(-np.abs(x))
    both = np.where(x >= 0, 1 / (1 + z), z / (1 + z)).astype(dtype)
    got = sigmoid(None, x)
    assert got.dtype == dtype and np.array_equal(got, both, equal_nan=True)
