"""The `dlcc` command line: compile, run, explain. Thin over the Python API.

Results go to stdout, talk to stderr. Every expected failure is one line
`dlcc: error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import os
import time

import click

from dlcc import __version__
from dlcc.cli_accuracy import verify
from dlcc.cli_common import (
    emit,
    fail_cleanly,
    input_option,
    json_option,
    read_inputs,
    threads_option,
)
from dlcc.cli_compile import compile
from dlcc.cli_hardware import profile, systolic_options, systolic_report, systolic_target
from dlcc.cli_sweep import sweep


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dlcc")
def main() -> None:
    """dlcc: compress an ONNX model into a compact bundle and run it.

    \b
      dlcc compile model.onnx -o model.bin     # ONNX -> IR -> passes -> bundle
      dlcc run model.bin --input x.npy         # execute on the numpy interpreter
      dlcc explain model.bin --asm             # what the bundle holds
      dlcc export model.bin -o model.onnx      # the bundle as standard ONNX
    """


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
@threads_option
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
    threads,
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
      dlcc run lenet5.bin --input samples/mnist_test_256.npz --threads 1
    """
    import dlcc
    from dlcc.fileio import refuse_overwrite, write_arrays
    from dlcc.runtime.targets import get_target

    refuse_overwrite(output_path, bundle, input_path, config_path)
    engine = (
        systolic_target(array, dataflow, config_path, exact_timing)
        if target == "systolic"
        else get_target(target)
    )
    loaded = dlcc.load(bundle, threads=threads)
    arrays, labels = read_inputs(loaded, input_path)
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
            if labels is not None and name == loaded.output_names[0]:
                correct = int((y.argmax(axis=1) == labels).sum())
                info["accuracy"] = correct / len(y)
                line += f"\n  accuracy: {correct}/{len(y)} = {100 * correct / len(y):.2f}%"
        info["outputs"][name] = entry
        lines.append(line)
    lines.append(f"{target}: {seconds * 1000:.1f} ms")
    if target == "systolic" and (stats or as_json):
        from dlcc.runtime.systolic.cost import render

        info["systolic"] = systolic_report(engine, loaded)
        if stats:
            lines += ["", render(info["systolic"])]
    emit(info, as_json, "\n".join(lines))


@main.command()
@click.argument("bundle")
@click.option("--asm", is_flag=True, help="Disassemble the instruction stream.")
@click.option("--plot", "plot_path", help="Write where the bytes went (pass, tensor) to a PNG.")
@click.option("--sensitivity-plot", "heat_path", help="Write the sensitivity heat map to a PNG.")
@json_option
@fail_cleanly
def explain(bundle: str, asm: bool, plot_path, heat_path, as_json: bool) -> None:
    """Show what BUNDLE holds: model, tensors with shapes and bytes, sections, program.

    \b
    Example:
      dlcc explain lenet5.bin --asm
      dlcc explain lenet5.bin --plot size.png   # a waterfall from fp32 to the bundle
    """
    import dlcc
    from dlcc.explain import describe, render
    from dlcc.fileio import refuse_overwrite

    refuse_overwrite(plot_path, bundle)
    refuse_overwrite(heat_path, bundle)
    loaded = dlcc.load(bundle)
    report = describe(loaded, os.path.getsize(bundle), asm=asm)
    for path, name in ((plot_path, "size_png"), (heat_path, "sensitivity_png")):
        if path:
            from dlcc import plot

            getattr(plot, name)(report, path)
            click.echo(f"dlcc: wrote {path}", err=True)
    emit(report, as_json, render(report))


@main.command("export")
@click.argument("bundle")
@click.option("-o", "--output", required=True, help="ONNX file to write.")
@click.option(
    "--format",
    "fmt",
    default="float",
    show_default=True,
    help="float (float32 weights and ops) or qdq (int8 behind QuantizeLinear/DequantizeLinear).",
)
@json_option
@fail_cleanly
def export(bundle: str, output: str, fmt: str, as_json: bool) -> None:
    """Export BUNDLE as a standard ONNX model (opset 20): a view of the bundle.

    float: the weights decoded to float32 and the instructions as ONNX ops, int8 activations
    rounded to their grid by float ops, so onnxruntime answers as `dlcc run`. qdq: int8
    weights and activations behind QuantizeLinear/DequantizeLinear at the bundle's scales,
    for onnxruntime's int8 kernels. Input and output names and the symbolic batch are kept.

    \b
    Example:
      dlcc export lenet5.bin -o lenet5.onnx --format qdq
    """
    from dlcc.api import to_onnx

    model = to_onnx(bundle, output, fmt)
    size = os.path.getsize(output)
    info = {"bundle": bundle, "onnx": output, "format": fmt, "bytes": size}
    info["nodes"] = len(model.graph.node)
    text = f"{bundle} -> {output}: {fmt}, {info['nodes']} ONNX nodes, {size:,} bytes"
    emit(info, as_json, text)


main.add_command(compile)
main.add_command(profile)
main.add_command(verify)
main.add_command(sweep)
