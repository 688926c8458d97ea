"""The Python API: `compile` an ONNX model into a bundle, `load` a bundle to run it,
`to_onnx` to see it as a standard ONNX model."""

from __future__ import annotations

import gc
import os

import numpy as np

from dlcc.codegen import generate
from dlcc.errors import DlccError
from dlcc.fileio import refuse_overwrite, write_atomic
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
    shapes: dict[str, tuple[int | str | None, ...]] | None = None,
) -> BundleFile:
    """Compile the ONNX file `model` with the pipeline `passes` (text or an -O level).

    `calibration` maps input names to sample arrays (used by data-aware passes);
    `evaluation` is held data (optional "labels") the sensitivity analysis scores on;
    `train` is labelled training data for finetune; `sensitivity` a table already measured
    (the sensitivity pass then stores it instead of measuring again). `array` is the R x C
    systolic array the matrix instructions are tiled for. `progress` is called as
    progress(description, done, total) during long passes. `shapes` pins input dimensions
    by input name (an int fixes one, a str names it a symbol, None keeps the model's); other
    symbolic dimensions stay symbolic and are bound at run time. The data is checked first
    (dlcc.data); the new bundle is loaded once to prove it sound, then written to `output`
    atomically when given; returns its contents. Pass notes land in meta["notes"], the
    before/after report (sizes; fidelity on `evaluation`) in meta["report"] (dlcc/report.py).
    """
    from dlcc.data import for_graph
    from dlcc.frontend import import_onnx
    from dlcc.passes.manager import PassContext, parse_pipeline, run_pipeline
    from dlcc.report import fp32_weight_bytes

    refuse_overwrite(output, model)
    pipeline = parse_pipeline(passes)
    notes: list[str] = []
    graph = import_onnx(model, notes, shapes)
    weight_bytes = fp32_weight_bytes(graph)
    ctx = PassContext(
        calibration=for_graph(calibration, graph, "calibration data", nonzero=True),
        evaluation=for_graph(evaluation, graph, "evaluation data"),
        train=for_graph(train, graph, "training data"),
        sensitivity=sensitivity,
        progress=progress,
        notes=notes,
    )
    log = run_pipeline(graph, pipeline, ctx)
    meta = {
        "source": os.path.basename(model),
        "pipeline": str(pipeline.resolved()),
        "log": log,
        "notes": ctx.notes,
    }
    bundle = generate(graph, meta, array)
    evaluation = ctx.evaluation
    # Free the IR (nodes and values refer to each other: only the cycle collector frees
    # them); the weights DATA's chunks view live on until `_parsed` has joined them.
    del graph, ctx
    gc.collect()
    bundle.meta["report"] = _loaded_report(model, bundle, weight_bytes, evaluation)
    if output is not None:
        write_atomic(output, *bundle.pieces())
    return bundle


def _loaded_report(model: str, bundle: BundleFile, weight_bytes: int, data) -> dict:
    """Load the new bundle (a compile never writes one that does not load) and measure its
    before/after report; the decoded bundle is freed before the file is written."""
    from dlcc.report import measure
    from dlcc.runtime.loader import bind_bundle

    try:
        loaded = bind_bundle(_parsed(bundle))
    except DlccError as e:
        raise DlccError(
            f"{model}: the compiled bundle does not load, nothing written: {e}"
        ) from None
    return measure(model, weight_bytes, loaded, data, getattr(data, "source", "--data"))


def _parsed(bundle: BundleFile) -> BundleFile:
    """`bundle` parsed back from its bytes, sharing its DATA section with `bundle` (a view of
    the same buffer): a large model's weights are held about once (`_joined`)."""
    pieces, bundle.data = bundle.pieces(), b""  # DATA's chunks now live in `pieces` alone
    parsed = BundleFile.from_bytes(_joined(pieces), "<memory>")
    bundle.data = parsed.data
    return parsed


def _joined(pieces: list) -> memoryview:
    """The pieces in one buffer, each released as soon as it is copied. The buffer's pages
    are touched only as they are filled, and the last piece is copied first: the newest
    arrays go first, from the top of the heap, where the allocator hands their pages back."""
    sizes = [memoryview(p).nbytes for p in pieces]
    image = memoryview(np.empty(sum(sizes), np.uint8))
    end = len(image)
    for i in reversed(range(len(pieces))):
        image[end - sizes[i] : end] = memoryview(pieces[i]).cast("B")
        end -= sizes[i]
        pieces[i] = None
    return image


def load_bytes(blob: bytes, source: str = "<memory>", threads: int | None = None) -> LoadedBundle:
    """Verify and load a bundle held in memory (e.g. `compile(...).to_bytes()`)."""
    from dlcc.formats.bundle import BundleFile
    from dlcc.runtime.loader import bind_bundle
    from dlcc.runtime.threads import check_threads

    bundle = bind_bundle(BundleFile.from_bytes(blob, source), source)
    bundle.threads = check_threads(threads)
    return bundle


def load(path: str, threads: int | None = None) -> LoadedBundle:
    """Load and verify the bundle at `path`; call `.run(inputs, target=...)` on the result.

    `threads`: how many threads BLAS may use in its runs (None: the physical cores); a
    run's own `threads=` overrides it (runtime/threads.py).
    """
    return load_bundle(path, threads=threads)


def to_onnx(bundle: LoadedBundle | str, output: str | None = None, format: str = "float"):  # noqa: A002
    """The ONNX model (an onnx.ModelProto, opset 20) that is a view of `bundle` (a loaded
    bundle or a bundle's path): "float" (float32 weights and ops; int8 activations rounded to
    their grid by float ops) or "qdq" (int8 weights and activations behind QuantizeLinear /
    DequantizeLinear at the bundle's scales). See dlcc/export.py for the mapping. Written to
    `output` atomically when given, never over the bundle itself.
    """
    from dlcc.export import check_format, to_model

    check_format(format)
    if isinstance(bundle, str):
        refuse_overwrite(output, bundle)
        bundle = load(bundle)
    refuse_overwrite(output, bundle.path)
    model = to_model(bundle, format)
    if output is not None:
        write_atomic(output, model.SerializeToString())
    return model
