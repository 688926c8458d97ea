"""The `dlcc sweep` command: a design-space sweep over pipelines and arrays (dlcc/sweep.py)."""

from __future__ import annotations

import click

from dlcc.cli_common import emit, fail_cleanly, json_option


def _items(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


@click.command()
@click.argument("model")
@click.option("--data", "data_path", required=True, help="Scoring data (.npz, optional 'labels').")
@click.option("--calib", help="Calibration data (.npz); default: --data.")
@click.option(
    "--grid",
    multiple=True,
    metavar="SPEC",
    help="A pipeline template, {a|b} listing alternatives (repeatable; @FILE reads one per "
    "line). Default: 25 pipelines from fp32 to prune+kmeans+int8+huffman.",
)
@click.option("--array", "arrays", default="32x32,128x128,256x256", show_default=True,
              help="Systolic arrays ROWSxCOLS, comma-separated.")  # fmt: skip
@click.option("--dataflow", "dataflows", default="ws,os,is", show_default=True,
              help="Dataflows, comma-separated: ws, os, is.")  # fmt: skip
@click.option("--batch", default=1, show_default=True, help="Samples per costed inference.")
@click.option("-o", "--output", "out_dir", required=True, help="Directory of the tables and cache.")
@click.option("--workers", type=int, help="Local worker processes (default: the physical cores).")
@click.option("--ray", metavar="ADDRESS", help="Run on Ray: auto, local, HOST:PORT or ray://...")
@click.option("--keep-bundles", is_flag=True, help="Keep the front's bundles in DIR/bundles/.")
@click.option("--plot", is_flag=True, help="Draw DIR/accuracy_vs_bytes.png, energy_vs_bytes.png.")
@json_option
@fail_cleanly
def sweep(
    model, data_path, calib, grid, arrays, dataflows, batch, out_dir, workers, ray,
    keep_bundles, plot, as_json,
) -> None:  # fmt: skip
    """Compile, score and cost every point of a grid of pipelines on every array and dataflow.

    Each point is compiled with --calib, scored on --data against the original (accuracy
    with labels, top-1 agreement, SQNR) and run on the systolic array (cycles, utilization,
    DRAM bytes, energy). Writes DIR/points.csv and points.json (one row per point x array x
    dataflow, with the pipeline to reproduce it: `dlcc compile --passes`) and DIR/front.csv,
    the Pareto front over bytes x fidelity x cycles x energy of each array and dataflow.
    Points are cached in DIR/cache/ by content: a rerun computes only what is missing.

    A grid SPEC is a pipeline with {a|b|c} alternatives (nested, or empty to leave a step
    out); every combination is a point, e.g. 6 points:

    \b
      'prune(sparsity={0.8|0.9}),{|kmeans(bits={4|6}),}quantize,huffman'

    \b
    Example:
      dlcc sweep samples/lenet5.onnx --data samples/mnist_test_256.npz -o sweep --plot
      dlcc sweep model.onnx --data d.npz --grid 'lowrank(energy={0.8|0.9}),{quantize,|}huffman'
          --array 64x64 --dataflow ws -o out --ray auto
    """
    import sys

    from dlcc.sweep import sweep as run_sweep
    from dlcc.sweep_table import render

    summary = run_sweep(
        model,
        data_path,
        out_dir,
        calib_path=calib,
        grid=_templates(grid),
        arrays=_items(arrays),
        dataflows=_items(dataflows),
        workers=workers,
        ray=ray,
        keep_bundles=keep_bundles,
        plot=plot,
        batch=batch,
        stream=sys.stderr,
    )
    info = {k: v for k, v in summary.items() if k != "rows"}
    emit(info, as_json, render(summary))


def _templates(specs: tuple[str, ...]) -> tuple[str, ...]:
    """--grid values, with @FILE read as one template per line (blank lines and lines
    starting with # ignored; # inside a line is a layer position, e.g. Conv#0)."""
    from dlcc.errors import DlccError

    out = []
    for spec in specs:
        if not spec.startswith("@"):
            out.append(spec)
            continue
        try:
            with open(spec[1:]) as f:
                lines = [line.strip() for line in f]
        except OSError as e:
            raise DlccError(f"--grid {spec}: cannot read ({e.strerror or e})") from None
        out += [line for line in lines if line and not line.startswith("#")]
    return tuple(out)
