"""Real architectures, exported by both torch exporters, compile with their dynamic dims left
symbolic and answer like onnxruntime (issue "Real models in", acceptance: real architectures).

The models are the architecture-only skeletons of tests/data/arch (MobileNetV3-small,
ResNet-18, EfficientNet-B0, a U-Net, a YOLOv8-style detector, CRNN with LSTM and with GRU, a
BERT encoder, a 1-D conv + GRU audio model; see its README), filled with seeded weights by
`arch_models.filled_model`. For each model x exporter:

- the -O0 bundle, compiled once, runs at two values of every symbolic dim (batch 1 and 3; image
  size, width, sequence length or sample count as `arch_models.ARCH` lists) on the interpreter
  and on the systolic target, within 1e-4 of onnxruntime on the filled model (max |error| over
  the output's max |value|), output by output;
- the -O1 bundle compiled with calibration data runs at both settings, the systolic target
  equal to the interpreter bit for bit (the int8 contract), and its top-1 agreement (classifier,
  per-pixel or per-frame argmax) and SQNR against onnxruntime are printed (`pytest -s`):
  figures, not thresholds.

Every case takes a few seconds at most (the file about a minute on 2 cores), so none is marked
slow; a case that grows past ~5 s goes into SLOW.
"""

from __future__ import annotations

import math
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from arch_models import (
    ARCH,
    MAX_SKELETON_BYTES,
    cases,
    filled_model,
    inputs_at,
    load_skeleton,
    model_of,
    skeleton_path,
    stripped,
)

import dlcc

MAX_REL_ERR = 1e-4
TARGETS = ("interp", "systolic")
SLOW: set[str] = set()  # cases measured above ~5 s (none so far)
CASES = [pytest.param(c, id=c, marks=[pytest.mark.slow] if c in SLOW else []) for c in cases()]


class Workspace:
    """Filled models, onnxruntime's answers and compiled bundles, each made once per module.
    A compile that fails is remembered and raised again in every test that needs it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._models: dict[str, str] = {}
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._bundles: dict[str, object] = {}

    def model(self, case: str) -> str:
        if case not in self._models:
            self._models[case] = filled_model(case, self.directory)
        return self._models[case]

    def reference(self, case: str, feeds: dict) -> dict[str, np.ndarray]:
        if case not in self._sessions:
            self._sessions[case] = ort.InferenceSession(
                self.model(case), providers=["CPUExecutionProvider"]
            )
        session = self._sessions[case]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(None, feeds)))

    def bundle_o0(self, case: str):
        if case not in self._bundles:
            try:
                self._bundles[case] = dlcc.load_bytes(dlcc.compile(self.model(case)).to_bytes())
            except Exception as e:  # noqa: BLE001  (remembered, raised in each test)
                self._bundles[case] = e
        bundle = self._bundles[case]
        if isinstance(bundle, Exception):
            raise bundle
        return bundle


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Workspace:
    return Workspace(str(tmp_path_factory.mktemp("arch")))


def max_rel_error(got: np.ndarray, expected: np.ndarray) -> float:
    """max |got - expected| / max |expected|."""
    return float(np.abs(got - expected).max() / max(np.abs(expected).max(), 1e-30))


def sqnr_db(got: np.ndarray, expected: np.ndarray) -> float:
    noise = float(((got.astype(np.float64) - expected) ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float((expected**2).sum()) / noise)


def shapes(feeds: dict) -> str:
    return ", ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in feeds.items())


@pytest.mark.parametrize("case", CASES)
def test_skeleton_holds_no_weights_and_keeps_its_dims_symbolic(case, work):
    """Under the commit-size rule, every learned tensor stripped (and filled back), and every
    dim that differs between the two settings symbolic in the file."""
    assert os.path.getsize(skeleton_path(case)) < MAX_SKELETON_BYTES
    skeleton = load_skeleton(case)
    empty = {t.name for t in stripped(skeleton)}
    assert empty, "no initializer was stripped"
    for t in skeleton.graph.initializer:  # what keeps its payload: ints, scalars, Resize scales
        if t.data_type == onnx.TensorProto.FLOAT and t.name not in empty:
            assert math.prod(t.dims) <= 4, f"{t.name} {list(t.dims)} kept its payload"
    low, high = ARCH[model_of(case)].settings
    declared = {i.name: i.type.tensor_type.shape.dim for i in skeleton.graph.input}
    assert set(declared) == set(low)
    for name, dims in declared.items():
        assert len(dims) == len(low[name])
        for axis, (d, a, b) in enumerate(zip(dims, low[name], high[name])):
            if a != b:
                assert d.dim_param, f"{name} axis {axis} is {d.dim_value}, not symbolic"
            elif not d.dim_param:
                assert d.dim_value == a, f"{name} axis {axis}: {d.dim_value} != {a}"
    filled = onnx.load(work.model(case))
    assert not stripped(filled)
    onnx.checker.check_model(filled)
    for setting in (0, 1):
        for name, y in work.reference(case, inputs_at(model_of(case), setting)).items():
            assert np.isfinite(y).all() and np.abs(y).max() > 1e-3, f"{name}: degenerate output"


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES)
def test_O0_matches_onnxruntime_at_two_values_of_each_symbolic_dim(case, target, work):
    bundle = work.bundle_o0(case)
    for setting in (0, 1):
        feeds = inputs_at(model_of(case), setting)
        want = work.reference(case, feeds)
        got = bundle.run(feeds, target=target)
        assert sorted(got) == sorted(want), f"outputs {sorted(got)}, onnxruntime {sorted(want)}"
        for name, expected in want.items():
            where = f"{name} at {shapes(feeds)} on {target}"
            assert got[name].shape == expected.shape, f"{where}: shape {got[name].shape}"
            error = max_rel_error(got[name], expected)
            assert error <= MAX_REL_ERR, f"{where}: max relative error {error:.2e}"


def agreement(got: np.ndarray, expected: np.ndarray, axis: int | None) -> float | None:
    """Share of positions whose argmax along `axis` agrees (None: no classes axis)."""
    if axis is None:
        return None
    return float((got.argmax(axis) == expected.argmax(axis)).mean())


@pytest.mark.parametrize("case", CASES)
def test_O1_with_calibration_runs_and_reports_its_fidelity(case, work):
    model = model_of(case)
    spec = ARCH[model]
    calibration = inputs_at(model, 0, batch=spec.calibration_batch, seed=1)
    bundle = dlcc.load_bytes(
        dlcc.compile(work.model(case), passes="-O1", calibration=calibration).to_bytes()
    )
    for setting in (0, 1):
        feeds = inputs_at(model, setting, batch=spec.calibration_batch, seed=2)
        want = work.reference(case, feeds)
        got = bundle.run(feeds, target="interp")
        on_array = bundle.run(feeds, target="systolic")
        figures = []
        for name, expected in want.items():
            assert got[name].shape == expected.shape, f"{name}: shape {got[name].shape}"
            assert np.isfinite(got[name]).all(), f"{name}: non-finite outputs"
            assert np.array_equal(on_array[name], got[name]), f"{name}: systolic != interp"
            top1 = agreement(got[name], expected, spec.classes_axis) if not figures else None
            figures.append(
                f"{name}: SQNR {sqnr_db(got[name], expected):.1f} dB"
                + ("" if top1 is None else f", top-1 agreement {top1:.1%}")
            )
        print(f"\n{case} -O1 at {shapes(feeds)}: " + "; ".join(figures))


@pytest.mark.parametrize("level", ["-O0", "-O1", "-O3"])
@pytest.mark.parametrize("case", [c for c in CASES if "legacy" in c.id])
def test_export_runs_in_onnxruntime_like_dlcc_run(case, level, work, tmp_path):
    """`dlcc export --format float` (issue "Deploy and explore"): onnxruntime on the exported
    model answers like `dlcc run` at both settings: within 1e-5 for a float bundle; for an
    int8 bundle within its rounding: float ops put a value at a rounding boundary one int8
    step over now and then, and deep nets carry it on (MobileNetV3 -O1: 28 dB), so >= 20 dB."""
    model = model_of(case)
    spec = ARCH[model]
    calibration = inputs_at(model, 0, batch=spec.calibration_batch, seed=1)
    bundle_path = str(tmp_path / "b.bin")
    dlcc.compile(work.model(case), bundle_path, passes=level, calibration=calibration)
    exported = str(tmp_path / "b.onnx")
    dlcc.to_onnx(bundle_path, exported)
    session = ort.InferenceSession(exported, providers=["CPUExecutionProvider"])
    bundle = dlcc.load(bundle_path)
    for setting in (0, 1):
        feeds = inputs_at(model, setting, seed=3)
        ours = bundle.run(feeds)
        for name, got in zip(bundle.output_names, session.run(bundle.output_names, feeds)):
            if level == "-O0":
                assert max_rel_error(got, ours[name]) <= 1e-5, name
            else:
                assert sqnr_db(got, ours[name]) >= 20, name
