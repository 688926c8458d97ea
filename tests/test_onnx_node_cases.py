"""ONNX's backend node test cases, for every op type dlcc lowers.

The cases come from `onnx.backend.test.case.node.collect_testcases()`; one is taken when its
model is a single node whose op type has a converter (`dlcc.frontend.lowering.CONVERTERS`).
The inputs at the converter's `params` positions (weights, shapes, bounds) become
initializers holding the test data, the others stay graph inputs. dlcc compiles the model at
-O0 and runs it on the interpreter; the outputs must match (rtol 1e-4, atol 1e-5).

A DlccError at compile time is a rejection that dlcc documents (3-D conv, an integer input,
an unsupported attribute): the case is skipped with dlcc's message as the reason, so
`pytest -rs` lists them all. Anything else fails: wrong or missing outputs, a DlccError when
running a bundle that compiled, any other exception. `benchmarks/onnx_node_cases.py` prints
the per-op table.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import traceback
import warnings
from functools import cache

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

import dlcc
from dlcc.errors import DlccError
from dlcc.frontend import converters  # noqa: F401  (registers the converters)
from dlcc.frontend.lowering import CONVERTERS

RTOL, ATOL = 1e-4, 1e-5
# Cases whose expected outputs are less precise than RTOL/ATOL: compared with them at onnx's
# own tolerance for the case, and with onnxruntime's outputs at RTOL/ATOL.
IMPRECISE_EXPECTATIONS = {
    "test_averagepool_2d_ceil_last_window_starts_on_pad": "rounded to 4 decimals",
}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one case went: status "passed", "skipped" or "failed", and why."""

    status: str
    detail: str = ""


@cache
def node_cases() -> list:
    """The single-node test cases of ops in CONVERTERS, in onnx's order."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # the case generators compute log(0), casts to fp8...
        cases = collect_testcases()
    return [c for c in cases if len(c.model.graph.node) == 1 and op_of(c) in CONVERTERS]


def op_of(case) -> str:
    return case.model.graph.node[0].op_type


def with_constant_params(case) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The case's model with its converter's `params` inputs as initializers, and the feeds."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    graph, (node,) = model.graph, model.graph.node
    inputs, _ = case.data_sets[0]
    feeds = {inp.name: value for inp, value in zip(graph.input, inputs)}
    constant = {node.input[i] for i in CONVERTERS[node.op_type].params if i < len(node.input)}
    for name in constant & feeds.keys():
        graph.initializer.append(numpy_helper.from_array(np.asarray(feeds.pop(name)), name))
    kept = [inp for inp in graph.input if inp.name in feeds]
    del graph.input[:]
    graph.input.extend(kept)
    return model, feeds


def run_case(case, workdir: str) -> Outcome:
    """Compile and run `case` with dlcc in `workdir`; compare with the expected outputs."""
    model, feeds = with_constant_params(case)
    model_path, bundle_path = os.path.join(workdir, "model.onnx"), os.path.join(workdir, "m.bin")
    onnx.save(model, model_path)
    try:
        dlcc.compile(model_path, bundle_path, passes="-O0")
    except DlccError as e:
        return Outcome("skipped", str(e).replace(model_path, "model.onnx"))
    except Exception as e:
        return Outcome("failed", f"compile crashed: {_describe(e)}")
    try:
        outputs = dlcc.load(bundle_path).run(feeds, target="interp")
    except Exception as e:
        return Outcome("failed", f"run raised {_describe(e)}")
    names = [out.name for out in model.graph.output]
    missing = [name for name in names if name not in outputs]
    if missing:
        return Outcome("failed", f"no output {missing[0]!r}; got {sorted(outputs)}")
    expected = case.data_sets[0][1]
    references = [(expected, RTOL, ATOL)]
    if case.name in IMPRECISE_EXPECTATIONS:
        references = [(expected, case.rtol, case.atol), (_ort(model, feeds), RTOL, ATOL)]
    for expected, rtol, atol in references:
        for name, want in zip(names, expected):
            try:
                np.testing.assert_allclose(outputs[name], want, rtol, atol, strict=True)
            except AssertionError as e:
                return Outcome("failed", f"output {name!r}: {str(e).strip()}")
    return Outcome("passed")


def _ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def _describe(e: Exception) -> str:
    """`Type: message (at file:line)`, the innermost frame that raised."""
    frame = traceback.extract_tb(e.__traceback__)[-1]
    return f"{type(e).__name__}: {e} (at {os.path.basename(frame.filename)}:{frame.lineno})"


@pytest.mark.parametrize("case", node_cases(), ids=lambda c: c.name)
def test_node_case(case):
    with tempfile.TemporaryDirectory() as workdir:
        outcome = run_case(case, workdir)
    if outcome.status == "skipped":
        pytest.skip(f"{case.name} ({op_of(case)}): {outcome.detail}")
    if outcome.status == "failed":
        pytest.fail(outcome.detail, pytrace=False)
