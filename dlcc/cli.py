"""The `dlcc` command line: compile, run, explain. Thin over the Python API.

Results go to stdout, talk to stderr. Every expected failure is one line
`dlcc: error: ...` on stderr and exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time

import click
import numpy as np

from dlcc import __version__
from dlcc.errors import DlccError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _fail_cleanly(fn):
    """Turn a DlccError into `dlcc: error: ...` and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DlccError as e:
            click.echo(f"dlcc: error: {e}", err=True)
            sys.exit(2)

    return wrapper


def _emit(data: dict, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=_jsonable) if as_json else text)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


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
    help="Named pipeline: -O0 none.",
)
@click.option("--passes", help="Explicit pass pipeline, e.g. 'prune(sparsity=0.9)'; overrides -O.")
@json_option
@_fail_cleanly
def compile(model: str, output: str, opt_level: str, passes: str | None, as_json: bool) -> None:
    """Compile MODEL (an .onnx file) into a bundle.

    \b
    Example:
      dlcc compile samples/lenet5.onnx -o lenet5.bin -O0
    """
    import dlcc

    start = time.perf_counter()
    bundle = dlcc.compile(model, output, passes=passes or f"-O{opt_level}")
    size = os.path.getsize(output)
    weights = sum(t.nbytes for t in bundle.tensors)
    info = {
        "model": model,
        "bundle": output,
        "bytes": size,
        "weight_bytes": weights,
        "pipeline": bundle.meta["pipeline"],
        "seconds": round(time.perf_counter() - start, 3),
    }
    text = f"{model} -> {output}: {size:,} bytes ({weights:,} of weights), {info['seconds']} s"
    _emit(info, as_json, text)


@main.command()
@click.argument("bundle")
@click.option(
    "-i",
    "--input",
    "input_path",
    required=True,
    help=".npy for a one-input model, or .npz keyed by input name (+ optional 'labels').",
)
@click.option("--output", "output_path", help="Write outputs: .npy (one output) or .npz.")
@click.option("--target", default="interp", show_default=True, help="Execution target.")
@json_option
@_fail_cleanly
def run(bundle: str, input_path: str, output_path: str | None, target: str, as_json: bool) -> None:
    """Run BUNDLE on the inputs in --input.

    Prints each output's shape and, for 2-D outputs, the per-row argmax; with labels in the
    .npz, the top-1 accuracy.

    \b
    Example:
      dlcc run lenet5.bin --input samples/mnist_test_256.npz
    """
    import dlcc
    from dlcc.fileio import read_arrays, write_arrays

    loaded = dlcc.load(bundle)
    arrays = read_arrays(input_path)
    labels = arrays.pop("labels", None) if isinstance(arrays, dict) else None
    if isinstance(arrays, dict) and len(arrays) == 1 and len(loaded.input_names) == 1:
        arrays = next(iter(arrays.values()))
    start = time.perf_counter()
    outputs = loaded.run(arrays, target=target)
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
    _emit(info, as_json, "\n".join(lines))


@main.command()
@click.argument("bundle")
@click.option("--asm", is_flag=True, help="Disassemble the instruction stream.")
@json_option
@_fail_cleanly
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
    _emit(report, as_json, render(report))
