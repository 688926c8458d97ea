"""Read an ONNX file into a checked ModelProto at a known opset and its weights; failures are
FrontendErrors.

The checks (onnx's checker, version converter, shape inference) see the model without its
large initializers' payloads (`payloads.py`): they need types and shapes, not values, and
copying 500 MB of weights through each of them cost most of a large compile. The weights
are then read once, each straight into its numpy array.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import checker, shape_inference, version_converter

from dlcc.errors import FrontendError
from dlcc.frontend.payloads import declare, first_line, read_payloads, split_model, undeclare

# Models older than this are brought up with onnx's version converter, so converters see one
# form of each op (axes as inputs, Softmax over one axis, Clip bounds as inputs).
MIN_OPSET = 17


def opset_of(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise FrontendError("model imports no version of the default ONNX domain")


def read_model(
    path: str, notes: list[str] | None = None
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Load, check, upgrade and shape-infer the model at `path`: the model without its large
    initializers, and their values by name (see the module docstring).

    Where onnx's strict shape inference refuses a model onnxruntime runs (a declared output
    shape that disagrees with the ops, say), inference is retried leniently and the reason
    appended to `notes`: dlcc infers every shape from its own op records anyway.
    """
    if not os.path.isfile(path):
        raise FrontendError(f"{path}: no such file")
    model, stripped = _load(path)
    if not model.HasField("graph") or not model.graph.node:
        raise FrontendError(f"{path}: not an ONNX model (no graph nodes; is the file truncated?)")
    declared = declare(model, stripped)
    model = _checked(model, path, notes)
    undeclare(model, declared)
    try:
        return model, read_payloads(path, stripped)
    except FrontendError as e:
        raise FrontendError(f"{path}: {e}") from None


def _load(path: str) -> tuple[onnx.ModelProto, list]:
    """The model without its large initializers, and those (`payloads.split_model`)."""
    try:
        split = split_model(path)
        return split if split is not None else (onnx.load(path), [])
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-like errors or OSError
        raise FrontendError(f"{path}: not a readable ONNX model ({first_line(e)})") from None


def _checked(model: onnx.ModelProto, path: str, notes: list[str] | None) -> onnx.ModelProto:
    """The model checked, brought up to MIN_OPSET and shape-inferred."""
    try:
        checker.check_model(model)
        if opset_of(model) < MIN_OPSET:
            model = version_converter.convert_version(model, MIN_OPSET)
    except FrontendError:
        raise
    except Exception as e:  # ValidationError, converter RuntimeError
        raise FrontendError(f"{path}: invalid ONNX model: {first_line(e)}") from None
    try:
        return shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as strict:  # InferenceError
        reason = first_line(strict)
    try:
        model = shape_inference.infer_shapes(model, check_type=True, strict_mode=False)
    except Exception as e:
        raise FrontendError(f"{path}: invalid ONNX model: {first_line(e)}") from None
    if notes is not None:
        notes.append(f"frontend: strict shape inference failed ({reason}); inferred leniently")
    return model
