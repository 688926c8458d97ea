"""Verify a bundle against its original model: per output, and per layer on request.

    per output  top-1 agreement, accuracy of both (with labels), max |error|, cosine, SQNR
    per layer   SQNR of each matrix layer's input and output against the float model, ranked
                by the SQNR the layer itself loses (input SQNR - output SQNR, both capped at a
                60 dB "clean" floor): the layer that introduces the error comes first, not the
                ones downstream that inherit it

The original runs on onnxruntime; the per-layer reference is the original ONNX model lowered
to the IR and evaluated in float32 with the shared kernels (layers are matched by their
weight tensor's name). Everything is streamed in batches: memory does not grow with the data.
"""

from __future__ import annotations

import numpy as np

from dlcc.errors import DlccError
from dlcc.formats import isa
from dlcc.passes.comparison import Comparison


def verify(
    model: str,
    bundle,
    data: dict,
    target="interp",
    layers: bool = False,
    batch: int = 256,
) -> dict:
    """Compare `bundle` (a path or a loaded bundle) with the ONNX `model` on `data` (inputs
    by name, optional labels).

    `data` is checked by dlcc.data against the bundle's inputs; labels become class ids.
    """
    import onnxruntime as ort

    import dlcc
    from dlcc.data import for_bundle
    from dlcc.passes.calibrate import batches

    bundle = dlcc.load(bundle) if isinstance(bundle, str) else bundle
    data = for_bundle(data, bundle, "verification data")
    labels = data.pop("labels", None)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    graph, pairs = _layer_pairs(model, bundle) if layers else (None, [])
    reference_graph = graph or _input_graph(model)
    outputs = {name: Comparison() for name in bundle.output_names}
    layer_sums = {p["name"]: (Comparison(), Comparison()) for p in pairs}
    correct = {"original": 0, "bundle": 0}
    seen = 0
    for feeds in batches(reference_graph, data, batch):
        expected = dict(zip(bundle.output_names, session.run(bundle.output_names, feeds)))
        got = _run(bundle, feeds, target, [b for p in pairs for b in (p["in"], p["out"])])
        for name in bundle.output_names:
            outputs[name].add(expected[name], got[0][name])
        rows = len(expected[bundle.output_names[0]])
        if labels is not None:
            truth = labels[seen : seen + rows]
            first = bundle.output_names[0]
            correct["original"] += int((expected[first].argmax(1) == truth).sum())
            correct["bundle"] += int((got[0][first].argmax(1) == truth).sum())
        seen += rows
        if pairs:
            _add_layers(graph, feeds, pairs, got[1], bundle, layer_sums)
    report = {
        "model": model,
        "bundle": bundle.path,
        "samples": seen,
        "target": getattr(target, "name", target),
        "outputs": {name: s.metrics() for name, s in outputs.items()},
    }
    if labels is not None:
        report["accuracy"] = {k: v / max(seen, 1) for k, v in correct.items()}
        report["accuracy_drop"] = report["accuracy"]["original"] - report["accuracy"]["bundle"]
    if pairs:
        report["layers"] = _rank(layer_sums)
    return report


def _run(bundle, feeds: dict, target, watch: list[int]):
    from dlcc.runtime.interpreter import Interpreter
    from dlcc.runtime.targets import get_target

    runner = get_target(target) if isinstance(target, str) else target
    if isinstance(runner, Interpreter):
        outputs = runner.run(bundle, feeds, watch=watch)
        return outputs, runner.watched
    if not watch:
        return runner.run(bundle, feeds), {}
    raise DlccError("per-layer verification runs on the interp target; drop --layers or use it")


def _input_graph(model: str):
    from dlcc.frontend import import_onnx

    return import_onnx(model)


def _layer_pairs(model: str, bundle) -> tuple:
    """The float IR of `model`, and the bundle's matrix layers matched to its nodes."""
    from dlcc.codegen import fusable_activation
    from dlcc.passes.manager import matrix_layers

    graph = _input_graph(model)
    by_weight = {n.inputs[1].name: n for n in matrix_layers(graph)}
    program, names = bundle.file.program, [t.name for t in bundle.file.tensors]
    pairs, fifo = [], []
    for k, instr in enumerate(program):
        if isinstance(instr, isa.ReadWeights):
            fifo.append(names[instr.tensor])
        elif isinstance(instr, isa.MatrixMultiply | isa.Convolve):
            node = by_weight.get(fifo.pop(0))
            activate = next(i for i in program[k:] if isinstance(i, isa.Activate))
            if node is not None:
                act = fusable_activation(graph, node)
                pairs.append(
                    {
                        "name": node.name,
                        "in": instr.src,
                        "out": activate.dst,
                        "in_value": node.inputs[0],
                        "out_value": (act or node).outputs[0],
                    }
                )
    return graph, pairs


def _add_layers(graph, feeds, pairs, watched, bundle, sums) -> None:
    from dlcc.passes.evaluate import evaluate

    wanted: dict[int, list] = {}
    for pair in pairs:  # one value can be a layer's output and the next layer's input
        for index, side in enumerate(("in", "out")):
            wanted.setdefault(id(pair[f"{side}_value"]), []).append((pair, side, index))
    for value, ref in evaluate(graph, feeds):
        for pair, side, index in wanted.get(id(value), ()):
            got = _real(watched[pair[side]], bundle.file.buffers[pair[side]])
            sums[pair["name"]][index].add(ref, got.reshape(ref.shape))


def _real(array: np.ndarray, record) -> np.ndarray:
    """A buffer's values in real units (int8 buffers carry their scale)."""
    return array.astype(np.float64) * record.scale if record.scale is not None else array


# SQNR above this counts as clean (about 10 bits): an exact input must not make the first
# lossy layer look infinitely worse than one that turns 45 dB into noise.
CLEAN_DB = 60.0


def _rank(layer_sums: dict) -> list[dict]:
    rows = []
    for name, (inp, out) in layer_sums.items():
        sqnr_in, sqnr_out = inp.metrics()["sqnr_db"], out.metrics()["sqnr_db"]
        lost = min(sqnr_in, CLEAN_DB) - min(sqnr_out, CLEAN_DB)
        rows.append(
            {
                "layer": name,
                "input_sqnr_db": sqnr_in,
                "output_sqnr_db": sqnr_out,
                "sqnr_lost_db": lost,
            }
        )
    return sorted(rows, key=lambda r: (-r["sqnr_lost_db"], r["output_sqnr_db"]))


def render(report: dict) -> str:
    """The verification report as text."""
    lines = [f"verify {report['bundle']} against {report['model']} on {report['target']}"]
    if "accuracy" in report:
        acc = report["accuracy"]
        lines.append(
            f"accuracy  original {100 * acc['original']:.2f}%  bundle "
            f"{100 * acc['bundle']:.2f}%  drop {100 * report['accuracy_drop']:+.2f} pts"
        )
    for name, m in report["outputs"].items():
        agreement = f"  top-1 agreement {100 * m['agreement']:.2f}%" if "agreement" in m else ""
        lines.append(
            f"output {name}: SQNR {m['sqnr_db']:.1f} dB  cosine {m['cosine']:.5f}  "
            f"max |error| {m['max_abs_error']:.4g}{agreement}"
        )
    if "layers" in report:
        lines.append("layers, ranked by the SQNR each one loses (worst first):")
        width = max(len(r["layer"]) for r in report["layers"])
        for r in report["layers"]:
            lines.append(
                f"  {r['layer']:<{width}}  in {r['input_sqnr_db']:7.1f} dB  out "
                f"{r['output_sqnr_db']:7.1f} dB  lost {r['sqnr_lost_db']:7.1f} dB"
            )
    return "\n".join(lines)
