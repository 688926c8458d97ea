"""The Python API: `compile` an ONNX model into a bundle, `load` a bundle to run it."""

from __future__ import annotations

import os

from dlcc.codegen import generate
from dlcc.fileio import write_atomic
from dlcc.formats.bundle import BundleFile
from dlcc.runtime.loader import LoadedBundle, load_bundle


def compile(  # noqa: A001
    model: str,
    output: str | None = None,
    passes: str = "-O0",
    calibration: dict | None = None,
    progress=None,
) -> BundleFile:
    """Compile the ONNX file `model` with the pipeline `passes` (text or an -O level).

    `calibration` maps input names to sample arrays (used by data-aware passes); `progress`
    is called as progress(description, done, total) during long passes. Writes the bundle to
    `output` atomically when given; returns its contents. Pass notes land in meta["notes"].
    """
    from dlcc.frontend import import_onnx
    from dlcc.passes.manager import PassContext, parse_pipeline, run_pipeline

    pipeline = parse_pipeline(passes)
    graph = import_onnx(model)
    ctx = PassContext(calibration=calibration, progress=progress)
    log = run_pipeline(graph, pipeline, ctx)
    meta = {
        "source": os.path.basename(model),
        "pipeline": str(pipeline.resolved()),
        "log": log,
        "notes": ctx.notes,
    }
    bundle = generate(graph, meta)
    if output is not None:
        write_atomic(output, bundle.to_bytes())
    return bundle


def load(path: str) -> LoadedBundle:
    """Load and verify the bundle at `path`; call `.run(inputs, target=...)` on the result."""
    return load_bundle(path)
