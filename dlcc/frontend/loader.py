"""Read an ONNX file into a checked ModelProto at a known opset; failures are FrontendErrors."""

from __future__ import annotations

import os

import onnx
from onnx import checker, shape_inference, version_converter

from dlcc.errors import FrontendError

# Models older than this are brought up with onnx's version converter, so converters see one
# form of each op (axes as inputs, Softmax over one axis, Clip bounds as inputs).
MIN_OPSET = 17


def opset_of(model: onnx.ModelProto) -> int:
    """The version of the default ONNX domain the model imports."""
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    raise FrontendError("model imports no version of the default ONNX domain")


def read_model(path: str, notes: list[str] | None = None) -> onnx.ModelProto:
    """Load, check, upgrade and shape-infer the model at `path`.

    Where onnx's strict shape inference refuses a model onnxruntime runs (a declared output
    shape that disagrees with the ops, say), inference is retried leniently and the reason
    appended to `notes`: dlcc infers every shape from its own op records anyway.
    """
    if not os.path.isfile(path):
        raise FrontendError(f"{path}: no such file")
    try:
        model = onnx.load(path)
    except Exception as e:  # protobuf raises DecodeError, RuntimeWarning-like errors or OSError
        raise FrontendError(f"{path}: not a readable ONNX model ({_first_line(e)})") from None
    if not model.HasField("graph") or not model.graph.node:
        raise FrontendError(f"{path}: not an ONNX model (no graph nodes; is the file truncated?)")
    try:
        checker.check_model(model)
        if opset_of(model) < MIN_OPSET:
            model = version_converter.convert_version(model, MIN_OPSET)
    except FrontendError:
        raise
    except Exception as e:  # ValidationError, converter RuntimeError
        raise FrontendError(f"{path}: invalid ONNX model: {_first_line(e)}") from None
    try:
        return shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as strict:  # InferenceError
        reason = _first_line(strict)
    try:
        model = shape_inference.infer_shapes(model, check_type=True, strict_mode=False)
    except Exception as e:
        raise FrontendError(f"{path}: invalid ONNX model: {_first_line(e)}") from None
    if notes is not None:
        notes.append(f"frontend: strict shape inference failed ({reason}); inferred leniently")
    return model


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
