"""Accuracy commands: verify a bundle against its original model."""

from __future__ import annotations

import sys

import click

from dlcc.cli_common import emit, fail_cleanly, json_option, threads_option
from dlcc.errors import DlccError


@click.command()
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
@threads_option
@json_option
@fail_cleanly
def verify(model, bundle, data_path, target, layers, max_drop, threads, as_json) -> None:
    """Check BUNDLE against the original MODEL (onnxruntime) on --data.

    Reports top-1 agreement, accuracy of both (with labels), max |error|, cosine similarity
    and SQNR per output; with --layers, each matrix layer's SQNR, ranked by what it loses.
    Exit code 1 when --max-drop is exceeded, so CI pipelines can gate on it.

    \b
    Example:
      dlcc verify samples/lenet5.onnx lenet5.bin --data samples/mnist_test_256.npz --layers
      dlcc verify samples/lenet5.onnx lenet5.bin --data samples/mnist_test_256.npz --threads 1
    """
    from dlcc.data import read
    from dlcc.runtime.threads import blas_threads
    from dlcc.verify import render
    from dlcc.verify import verify as check

    with blas_threads(threads):  # every run of the bundle below (the outermost setting wins)
        report = check(model, bundle, read(data_path), target=target, layers=layers)
    failed = False
    if max_drop is not None:
        limit = fraction(max_drop)
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


def fraction(text: str | None, flag: str = "--max-drop") -> float | None:
    """`0.5%` or `0.005` -> 0.005, within [0, 1] (None stays None)."""
    if text is None:
        return None
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise DlccError(f"{flag} {text!r}: expected a number or a percentage") from None
    if not 0 <= value <= 1:
        raise DlccError(f"{flag} {text!r}: expected a fraction from 0 to 100%")
    return value
