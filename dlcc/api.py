"""The Python API: `compile` an ONNX model into a bundle, `load` a bundle to run it."""

from __future__ import annotations

import os

from dlcc.codegen import generate
from dlcc.errors import DlccError
from dlcc.fileio import write_atomic
from dlcc.formats.bundle import BundleFile
from dlcc.runtime.loader import LoadedBundle, load_bundle


def compile(  # noqa: A001
    model: str,
    output: str | None = None,
    passes: str = "-O0",
    calibration: dict | None = None,
    evaluation: dict | None = None,
    train: dict | None = None,
    sensitivity: dict | None = None,
    array: tuple[int, int] = (256, 256),
    progress=None,
) -> BundleFile:
    """Compile the ONNX file `model` with the pipeline `passes` (text or an -O level).

    `calibration` maps input names to sample arrays (used by data-aware passes);
    `evaluation` is held data (optional "labels") the sensitivity analysis scores on;
    `train` is labelled training data for finetune; `sensitivity` a table already measured
    (the sensitivity pass then stores it instead of measuring again). `array` is the R x C
    systolic array the matrix instructions are tiled for. `progress` is called as
    progress(description, done, total) during long passes. Writes the bundle to `output`
    atomically when given; returns its contents. Pass notes land in meta["notes"].
    """
    from dlcc.frontend import import_onnx
    from dlcc.passes.manager import PassContext, parse_pipeline, run_pipeline

    pipeline = parse_pipeline(passes)
    graph = import_onnx(model)
    inputs = [v.name for v in graph.inputs]
    ctx = PassContext(
        calibration=bind_data(calibration, inputs),
        evaluation=bind_data(evaluation, inputs),
        train=bind_data(train, inputs),
        sensitivity=sensitivity,
        progress=progress,
    )
    log = run_pipeline(graph, pipeline, ctx)
    meta = {
        "source": os.path.basename(model),
        "pipeline": str(pipeline.resolved()),
        "log": log,
        "notes": ctx.notes,
    }
    bundle = generate(graph, meta, array)
    if output is not None:
        write_atomic(output, bundle.to_bytes())
    return bundle


def bind_data(data: dict | None, inputs: list[str]) -> dict | None:
    """Data keyed by input name; one unlabelled array under any key feeds a one-input model."""
    if data is None:
        return None
    arrays = {k: v for k, v in data.items() if k != "labels"}
    if len(inputs) == 1 and len(arrays) == 1 and inputs[0] not in arrays:
        arrays = {inputs[0]: next(iter(arrays.values()))}
    missing = [name for name in inputs if name not in arrays]
    if missing:
        raise DlccError(
            f"data has no array for input(s) {', '.join(missing)}; keys: {', '.join(data)}"
        )
    return arrays | ({"labels": data["labels"]} if "labels" in data else {})


def load_bytes(blob: bytes, source: str = "<memory>") -> LoadedBundle:
    """Verify and load a bundle held in memory (e.g. `compile(...).to_bytes()`)."""
    from dlcc.formats.bundle import BundleFile
    from dlcc.runtime.loader import bind_bundle

    return bind_bundle(BundleFile.from_bytes(blob, source), source)


def load(path: str) -> LoadedBundle:
    """Load and verify the bundle at `path`; call `.run(inputs, target=...)` on the result."""
    return load_bundle(path)
