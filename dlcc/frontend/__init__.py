"""The ONNX frontend: read a model, fold its constants and lower it into the dlcc IR."""

from __future__ import annotations

from dlcc.errors import DlccError, FrontendError
from dlcc.frontend.batchnorm import fold_batchnorm
from dlcc.frontend.loader import read_model
from dlcc.frontend.lowering import lower_model
from dlcc.ir import Graph


def import_onnx(
    path: str, notes: list[str] | None = None, shapes: dict[str, tuple] | None = None
) -> Graph:
    """Read the ONNX file at `path` and return its verified IR graph; errors name the file.

    `shapes` pins input dimensions (see `lower_model`). What the frontend had to work
    around (see read_model) is appended to `notes`.
    """
    model, weights = read_model(path, notes)  # its errors name the file already
    try:
        graph = lower_model(model, shapes, notes, weights)
        del weights  # the graph holds what it uses; folding then frees what it replaces
        fold_batchnorm(graph)
        graph.verify()
    except DlccError as e:
        kind = type(e) if isinstance(e, FrontendError) else FrontendError
        raise kind(f"{path}: {e}") from None
    return graph
