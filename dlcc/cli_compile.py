"""`dlcc compile`: ONNX in, bundle out, with a before/after report; targets and searches."""

from __future__ import annotations

import os
import sys
import time

import click

from dlcc.cli_accuracy import fraction
from dlcc.cli_common import emit, fail_cleanly, json_option
from dlcc.errors import DlccError


@click.command()
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
    "--min-sqnr",
    type=float,
    help="Budget: the smallest bundle whose outputs keep this SQNR (dB) against the original's.",
)
@click.option(
    "--min-cosine",
    type=click.FloatRange(-1.0, 1.0),
    help="Budget: the smallest bundle whose outputs keep this cosine similarity, e.g. 0.995.",
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
    min_sqnr,
    min_cosine,
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

    `dlcc passes` lists the passes and their options. With a target (--max-drop,
    --min-agreement, --min-sqnr, --min-cosine) dlcc chooses the per-layer pipeline itself,
    prints it, and compiles it. So do -O2 and -O3 whenever data is given (--calib or
    --data), to a default target: top-1 agreement >= 99% on classifier outputs, SQNR >= 25
    dB on the others. The search scores on --calib (on --data when --max-drop needs labels
    --calib lacks); fidelity is reported on data the search did not see (the other set, or
    the last quarter of the one set searched). An unreachable target is an error.

    \b
    Example:
      dlcc compile samples/lenet5.onnx -o lenet5.bin -O3 --report
      dlcc compile samples/lenet5.onnx -o small.bin -O3 --calib samples/mnist_test_256.npz
      dlcc compile det.onnx -o det.bin -O3 --calib images.npz --min-sqnr 30
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
    target = _target(max_drop, min_agreement, min_sqnr, min_cosine)
    chosen = {}
    level = f"O{opt_level}" if not passes and opt_level in ("2", "3") else None
    if target is not None or (level and (calibration is not None or data is not None)):
        pipeline, chosen, calibration, data = _search(model, calibration, data, level, target)
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
        progress=progress_line(),
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


def _target(max_drop, min_agreement, min_sqnr, min_cosine):
    """The fidelity target the flags set, or None when none is given."""
    from dlcc.passes.fidelity import Target

    if max_drop is not None and min_agreement is not None:
        raise DlccError("give --max-drop or --min-agreement, not both")
    flags = (max_drop, min_agreement, min_sqnr, min_cosine)
    if all(flag is None for flag in flags):
        return None
    agreement = fraction(min_agreement, "--min-agreement")
    return Target(agreement, fraction(max_drop), min_sqnr, min_cosine)


def _search(model, calibration, data, level, target):
    """(pipeline, report, calibration, held-out data) of the budget search, said on stderr;
    a preset whose search would take too long keeps its fixed rates, with a warning."""
    from dlcc.budget import FixedRates, search

    try:
        pipeline, chosen, calibration, data = search(
            model, calibration, data, level, target, progress=progress_line()
        )
    except FixedRates as e:
        click.echo(f"dlcc: warning: {e}", err=True)
        return f"-{level}", {}, calibration, data
    click.echo(
        f"dlcc: {'-' + level if level else 'budget'}: chose {pipeline} ({chosen['fidelity']} "
        f"on {chosen['samples']:,} samples; the report below is on {data.source})",
        err=True,
    )
    if not chosen["int8_activations"]:
        click.echo(
            "dlcc: note: activations stay float32: int8 activations alone miss the target",
            err=True,
        )
    return pipeline, chosen, calibration, data


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


def progress_line():
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
