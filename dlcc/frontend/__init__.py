"""The ONNX frontend: read a model, fold its constants and lower it into the dlcc IR."""

from __future__ import annotations

from dlcc.frontend.batchnorm import fold_batchnorm
from dlcc.frontend.loader import read_model
from dlcc.frontend.lowering import lower_model
from dlcc.ir import Graph


def import_onnx(path: str) -> Graph:
    """Read the ONNX file at `path` and return its verified IR graph."""
    graph = lower_model(read_model(path))
    fold_batchnorm(graph)
    graph.verify()
    return graph
