"""The `dlcc` command line: compile, run, explain. Thin over the Python API.

Results go to stdout, talk to stderr. Every expected failure is one line
`dlcc: error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
import time

import click

from dlcc import __version__
from dlcc.cli_common import emit, fail_cleanly, input_option, json_option, read_inputs
from dlcc.cli_hardware import profile, systolic_options, systolic_report, systolic_target


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlcc")
def main() -> None:
    """dlcc: compress an ONNX model into a compact bundle and run it.

    \b
      dlcc compile model.onnx -o model.bin     # ONNX -> IR -> passes -> bundle
      dlcc run model.bin --input x.npy         # execute on the numpy interpreter
      dlcc explain model.bin --asm             # what the bundle holds
    """


@main.command()
@click.argument("model")
@click.option("-o", "--output", required=True, help="Bundle file to write.")
@click.option(
    "-O",
    "opt_level",
    type=click.Choice(["0", "1", "2", "3"]),
    default="0",
    show_default=True,
    help="Named pipeline: -O0 none, -O1 int8, -O2 prune+int8+Huffman, -O3 + k-means.",
)
@click.option("--passes", help="Explicit pipeline, e.g. 'prune(sparsity=0.9),huffman'.")
@click.option("--calib", help="Calibration data: .npz keyed by input name (or one array).")
@click.option("--report", is_flag=True, help="Print the size ledger of the new bundle.")
@json_option
@fail_cleanly
def compile(model, output, opt_level, passes, calib, report, as_json) -> None:
    """Compile MODEL (an .onnx file) into a bundle.

    `dlcc passes` lists the passes and their options.

    \b
    Example:
      dlcc compile samples/lenet5.onnx -o lenet5.bin -O3 --report
    """
    import dlcc
    from dlcc.explain import describe, render_ledger

    start = time.perf_counter()
    calibration = _read_calibration(calib) if calib else None
    bundle = dlcc.compile(
        model,
        output,
        passes=passes or f"-O{opt_level}",
        calibration=calibration,
        progress=_progress_line(),
    )
    for note in bundle.meta["notes"]:
        click.echo(f"dlcc: note: {note}", err=True)
    size = os.path.getsize(output)
    info = {
        "model": model,
        "bundle": output,
        "bytes": size,
        "pipeline": bundle.meta["pipeline"],
        "seconds": round(time.perf_counter() - start, 3),
    }
    text = f"{model} -> {output}: {size:,} bytes, {info['seconds']} s"
    if report:
        info["report"] = describe(dlcc.load(output), size)
        text += "\n\n" + render_ledger(info["report"])
    emit(info, as_json, text)


@main.command()
@json_option
def passes(as_json: bool) -> None:
    """List every pass with its options, defaults and ranges, and the -O levels.

    \b
    Example:
      dlcc passes
    """
    from dlcc.passes.manager import PRESETS, pass_table

    table = pass_table()
    if as_json:
        emit({"passes": table, "presets": PRESETS}, True, "")
        return
    lines = []
    for entry in table:
        lines.append(f"{entry['name']:<10} {entry['summary']}")
        for opt in entry["options"]:
            lines.append(f"    {opt['name']}={opt['default']:<10} {opt['help']}{opt['range']}")
    lines.append("")
    lines += [f"-{level:<9} {text or '(no passes)'}" for level, text in PRESETS.items()]
    click.echo("\n".join(lines))


def _read_calibration(path: str) -> dict:
    from dlcc.fileio import read_arrays

    arrays = read_arrays(path)
    if not isinstance(arrays, dict):
        return {"": arrays}
    arrays.pop("labels", None)
    return arrays


def _progress_line():
    """A progress callback drawing one line on a terminal's stderr; None when not a terminal."""
    if not sys.stderr.isatty():
        return None

    def show(description: str, done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        click.echo(f"\r{description}: {done}/{total}", err=True, nl=False)
        click.echo(end, err=True, nl=False)

    return show


@main.command()
@click.argument("bundle")
@input_option
@click.option("--output", "output_path", help="Write outputs: .npy (one output) or .npz.")
@click.option(
    "--target",
    default="interp",
    show_default=True,
    help="interp (numpy interpreter) or systolic (systolic-array emulator).",
)
@systolic_options
@click.option("--stats", is_flag=True, help="systolic: print the cycle, traffic and energy report.")
@json_option
@fail_cleanly
def run(
    bundle,
    input_path,
    output_path,
    target,
    array,
    dataflow,
    config_path,
    exact_timing,
    stats,
    as_json,
) -> None:
    """Run BUNDLE on the inputs in --input.

    Prints each output's shape and, for 2-D outputs, the per-row argmax; with labels in the
    .npz, the top-1 accuracy. On the systolic target, --stats adds cycles, utilization,
    MACs, SRAM/DRAM traffic, energy and the roofline position of every layer.

    \b
    Example:
      dlcc run lenet5.bin --input samples/mnist_test_256.npz
      dlcc run lenet5.bin --input samples/mnist_test_256.npz --target systolic --array 32x32 --stats
    """
    import dlcc
    from dlcc.fileio import write_arrays

    loaded = dlcc.load(bundle)
    arrays, labels = read_inputs(loaded, input_path)
    engine = (
        systolic_target(array, dataflow, config_path, exact_timing)
        if target == "systolic"
        else target
    )
    start = time.perf_counter()
    outputs = loaded.run(arrays, target=engine)
    seconds = time.perf_counter() - start
    if output_path:
        write_arrays(output_path, outputs)
    info = {"target": target, "seconds": round(seconds, 4), "outputs": {}}
    lines = []
    for name, y in outputs.items():
        entry = {"shape": list(y.shape), "dtype": str(y.dtype)}
        line = f"{name}  {'×'.join(map(str, y.shape))} {y.dtype}"
        if y.ndim == 2:
            entry["argmax"] = y.argmax(axis=1).tolist()
            shown = " ".join(map(str, entry["argmax"][:16]))
            line += f"  argmax: {shown}{' …' if len(y) > 16 else ''}"
            if labels is not None and len(labels) == len(y):
                correct = int((y.argmax(axis=1) == labels.reshape(-1)).sum())
                info["accuracy"] = correct / len(y)
                line += f"\n  accuracy: {correct}/{len(y)} = {100 * correct / len(y):.2f}%"
        info["outputs"][name] = entry
        lines.append(line)
    lines.append(f"{target}: {seconds * 1000:.1f} ms")
    if target == "systolic" and (stats or as_json):
        from dlcc.runtime.systolic.cost import render

        info["systolic"] = systolic_report(engine)
        if stats:
            lines += ["", render(info["systolic"])]
    emit(info, as_json, "\n".join(lines))


@main.command()
@click.argument("bundle")
@click.option("--asm", is_flag=True, help="Disassemble the instruction stream.")
@json_option
@fail_cleanly
def explain(bundle: str, asm: bool, as_json: bool) -> None:
    """Show what BUNDLE holds: model, tensors with shapes and bytes, sections, program.

    \b
    Example:
      dlcc explain lenet5.bin --asm
    """
    import dlcc
    from dlcc.explain import describe, render

    loaded = dlcc.load(bundle)
    report = describe(loaded, os.path.getsize(bundle), asm=asm)
    emit(report, as_json, render(report))


@main.command()
@click.argument("model")
@click.argument("bundle")
@click.option(
    "--data",
    "data_path",
    required=True,
    help=".npz keyed by input name (or one array), optional 'labels'.",
)
@click.option("--target", default="interp", show_default=True, help="interp or systolic.")
@click.option("--layers", is_flag=True, help="Also rank the layers by the SQNR each one loses.")
@click.option(
    "--max-drop",
    help="Exit 1 when accuracy (with labels) or top-1 agreement drops more than this, e.g. 0.5%.",
)
@json_option
@fail_cleanly
def verify(model, bundle, data_path, target, layers, max_drop, as_json) -> None:
    """Check BUNDLE against the original MODEL (onnxruntime) on --data.

    Reports top-1 agreement, accuracy of both (with labels), max |error|, cosine similarity
    and SQNR per output; with --layers, each matrix layer's SQNR, ranked by what it loses.
    Exit code 1 when --max-drop is exceeded, so CI pipelines can gate on it.

    \b
    Example:
      dlcc verify samples/lenet5.onnx lenet5.bin --data samples/mnist_test_256.npz --layers
    """
    from dlcc.fileio import read_arrays
    from dlcc.verify import render
    from dlcc.verify import verify as check

    arrays = read_arrays(data_path)
    report = check(
        model,
        bundle,
        arrays if isinstance(arrays, dict) else {"": arrays},
        target=target,
        layers=layers,
    )
    failed = False
    if max_drop is not None:
        limit = _fraction(max_drop)
        first = next(iter(report["outputs"].values()))
        drop = report.get("accuracy_drop", 1 - first.get("agreement", 0.0))
        failed = drop > limit
        report["max_drop"] = {"limit": limit, "drop": drop, "exceeded": failed}
    text = render(report)
    if failed:
        text += f"\nFAILED: drop {100 * drop:.2f} pts exceeds --max-drop {100 * limit:.2f} pts"
    emit(report, as_json, text)
    if failed:
        sys.exit(1)


def _fraction(text: str) -> float:
    """`0.5%` or `0.005` -> 0.005."""
    from dlcc.errors import DlccError

    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise DlccError(f"--max-drop {text!r}: expected a number or a percentage") from None
    return value


main.add_command(profile)
