"""The Python API: `compile` an ONNX model into a bundle, `load` a bundle to run it."""

from __future__ import annotations

import os

from dlcc.codegen import generate
from dlcc.fileio import write_atomic
from dlcc.formats.bundle import BundleFile
from dlcc.runtime.loader import LoadedBundle, load_bundle


def compile(model: str, output: str | None = None, passes: str = "-O0") -> BundleFile:  # noqa: A001
    """Compile the ONNX file `model` with the pipeline `passes` (text or -O level).

    Writes the bundle to `output` atomically when given; returns its contents.
    """
    from dlcc.frontend import import_onnx
    from dlcc.passes.manager import parse_pipeline, run_pipeline

    pipeline = parse_pipeline(passes)
    graph = import_onnx(model)
    log = run_pipeline(graph, pipeline)
    meta = {"source": os.path.basename(model), "pipeline": str(pipeline), "log": log}
    bundle = generate(graph, meta)
    if output is not None:
        write_atomic(output, bundle.to_bytes())
    return bundle


def load(path: str) -> LoadedBundle:
    """Load and verify the bundle at `path`; call `.run(inputs, target=...)` on the result."""
    return load_bundle(path)
