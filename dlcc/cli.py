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
from dlcc.cli_accuracy import fraction, verify
from dlcc.cli_common import (
    emit,
    fail_cleanly,
    input_option,
    json_option,
    read_inputs,
    threads_option,
)
from dlcc.cli_hardware import profile, systolic_options, systolic_report, systolic_target
from dlcc.cli_sweep import sweep
from dlcc.errors import DlccError


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
@click.option(
    "--data", "data_path", help="Held data (.npz, optional 'labels') for sensitivity and budgets."
)
@click.option(
    "--max-drop",
    help="Budget: the smallest bundle whose accuracy on --data drops at most this much, e.g. 0.5%.",
)
@click.option(
    "--min-agreement",
    help="Budget: the smallest bundle whose top-1 agreement "
    "with the original on --data is at least this, e.g. 99%.",
)
@click.option(
    "--noise-sigma",
    type=float,
    help="Noise band of the sensitivity marks (e.g. measured from repeated trainings); "
    "default: the binomial standard error.",
)
@click.option(
    "--array",
    default="256x256",
    show_default=True,
    help="The systolic array ROWSxCOLS the matrix instructions are tiled for.",
)
@click.option("--train", "train_path", help="Labelled training data (.npz with 'labels').")
@click.option(
    "--finetune",
    type=click.IntRange(1, 1000),
    help="Retrain this many epochs after every prune and k-means step (needs --train).",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    default=0,
    show_default=True,
    help="Seed of the retraining (--finetune): same seed, same bundle bytes.",
)
@click.option(
    "--shape",
    "shapes",
    multiple=True,
    metavar="NAME=DIMS",
    help="Pin an input's dimensions, e.g. image=1x3x48xW (numbers fix, names stay symbolic, "
    "? keeps the model's). Repeatable.",
)
@click.option("--report", is_flag=True, help="Print the size ledger of the new bundle.")
@json_option
@fail_cleanly
def compile(
    model,
    output,
    opt_level,
    passes,
    calib,
    data_path,
    max_drop,
    min_agreement,
    noise_sigma,
    array,
    train_path,
    finetune,
    seed,
    shapes,
    report,
    as_json,
) -> None:
    """Compile MODEL (an .onnx file) into a bundle.

    `dlcc passes` lists the passes and their options. With --max-drop or --min-agreement
    (and --data), dlcc chooses the per-layer pipeline itself, prints it, and compiles it.
    So do -O2 and -O3 whenever data is given (--calib or --data): they choose per-layer
    rates that keep top-1 agreement with the original at 99% or more, and report fidelity
    on data the choice did not see (--data, or the last quarter of the one set given).

    \b
    Example:
      dlcc compile samples/lenet5.onnx -o lenet5.bin -O3 --report
      dlcc compile samples/lenet5.onnx -o small.bin --calib samples/mnist_test_256.npz
          --data samples/mnist_test_256.npz --max-drop 1%
      dlcc compile rec.onnx -o rec.bin --shape x=Nx3x48xW   # batch and width stay symbolic
    """
    import dlcc
    from dlcc.data import read
    from dlcc.explain import describe, render_ledger
    from dlcc.fileio import refuse_overwrite
    from dlcc.passes.manager import parse_pipeline
    from dlcc.report import render as render_report
    from dlcc.runtime.systolic.config import parse_array

    start = time.perf_counter()
    refuse_overwrite(output, model, calib, data_path, train_path)
    rows_cols = parse_array(array)
    calibration = read(calib) if calib else None
    data = read(data_path) if data_path else None
    pipeline = passes or f"-O{opt_level}"
    chosen = {}
    faithful_level = not passes and opt_level in ("2", "3") and not (max_drop or min_agreement)
    if faithful_level and (calibration is not None or data is not None):
        from dlcc.budget import DEFAULT_AGREEMENT, FixedRates, faithful

        try:
            pipeline, chosen, calibration, data = faithful(
                model, calibration, data, f"O{opt_level}", progress=_progress_line()
            )
        except FixedRates as e:
            click.echo(f"dlcc: warning: {e}", err=True)
        else:
            click.echo(
                f"dlcc: -O{opt_level}: chose {pipeline} (top-1 agreement {chosen['score']:.4f} "
                f">= {DEFAULT_AGREEMENT} on {chosen['sensitivity']['samples']} samples; the "
                f"report below is on {data.source})",
                err=True,
            )
    elif max_drop or min_agreement:
        from dlcc.budget import choose

        if data is None:
            raise DlccError("a budget needs --data to score on")
        pipeline, chosen = choose(
            model,
            data,
            calibration,
            fraction(max_drop),
            fraction(min_agreement),
            progress=_progress_line(),
        )
        click.echo(
            f"dlcc: budget: chose {pipeline} (score {chosen['score']:.4f} >= "
            f"{chosen['floor']:.4f} on --data)",
            err=True,
        )
    train = read(train_path) if train_path else None
    if finetune:
        from dlcc.passes.finetune import with_retraining

        if train is None or "labels" not in train:
            raise DlccError("--finetune needs --train data with 'labels'")
        pipeline = with_retraining(pipeline, finetune, seed=seed)
    if data is not None:  # the sensitivity table (measured, or the budget's) goes in the bundle
        analysis = (
            "sensitivity" if noise_sigma is None else f"sensitivity(noise_sigma={noise_sigma})"
        )
        pipeline = ",".join(filter(None, (analysis, str(parse_pipeline(pipeline)))))
    bundle = dlcc.compile(
        model,
        output,
        passes=pipeline,
        calibration=calibration,
        evaluation=data,
        train=train,
        sensitivity=chosen.get("sensitivity"),
        array=rows_cols,
        progress=_progress_line(),
        shapes=_parse_shapes(shapes),
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
    info["report"] = {**bundle.meta["report"], "bundle_bytes": size}
    _warn_about_fidelity(bundle.meta["report"])
    text = f"{model} -> {output}: {size:,} bytes, {info['seconds']} s\n" + render_report(
        bundle.meta["report"], size
    )
    if report:
        info["ledger"] = describe(dlcc.load(output), size)
        text += "\n\n" + render_ledger(info["ledger"])
    emit(info, as_json, text)


def _parse_shapes(specs: tuple[str, ...]) -> dict[str, tuple[int | str | None, ...]]:
    """`--shape NAME=DIMS` options by input name: 1x3x48xW -> (1, 3, 48, "W"), ? -> None."""
    shapes = {}
    for spec in specs:
        name, _, dims = spec.rpartition("=")
        parts = dims.split("x")
        if not name or not all(
            p.isidentifier() or p == "?" or p.isdigit() and int(p) for p in parts
        ):
            raise DlccError(
                f"--shape {spec!r}: expected NAME=DIMS, dims >= 1 or names, e.g. image=1x3x48xW"
            )
        shapes[name] = tuple(int(p) if p.isdigit() else None if p == "?" else p for p in parts)
    return shapes


AGREEMENT_FLOOR = 0.99  # below this top-1 agreement, a compile says how to do better


def _warn_about_fidelity(report: dict) -> None:
    """A warning when fidelity was not checked, or when the bundle moved far from the model."""
    from dlcc.report import UNCHECKED

    if "fidelity" not in report:
        click.echo(f"dlcc: warning: {UNCHECKED}", err=True)
        return
    for name, m in report["fidelity"]["outputs"].items():
        if m.get("agreement", 1.0) < AGREEMENT_FLOOR:
            click.echo(
                f"dlcc: warning: output {name!r} agrees with the original on only "
                f"{100 * m['agreement']:.2f}% of --data; let dlcc choose per-layer rates "
                f"with --min-agreement 99% (or --max-drop 0.5% with labels), or add recovery "
                "passes (dlcc passes: equalize, refit, biascorrect)",
                err=True,
            )


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


def _progress_line():
    """A progress callback: one redrawn line on a terminal's stderr; off a terminal, a line
    when a step starts, every PROGRESS_SECONDS, and when it ends (logs stay readable)."""
    tty, last = sys.stderr.isatty(), {}

    def show(description: str, done: int, total: int) -> None:
        now = time.monotonic()
        if tty:
            click.echo(f"\r{description}: {done}/{total}", err=True, nl=done >= total)
        elif done >= total or now - last.get(description, -PROGRESS_SECONDS) >= PROGRESS_SECONDS:
            click.echo(f"dlcc: {description}: {done}/{total}", err=True)
            last[description] = now

    return show


PROGRESS_SECONDS = 10.0


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


main.add_command(profile)
main.add_command(verify)
main.add_command(sweep)
