"""Hardware options shared by `run --target systolic` and `profile`, and the profile command."""

from __future__ import annotations

import functools

import click

from dlcc.cli_common import emit, fail_cleanly, input_option, json_option


def systolic_options(fn):
    """--array, --dataflow, --config, --exact-timing: the emulated array."""
    options = [
        click.option("--array", help="Systolic array ROWSxCOLS (default 256x256, the TPU's)."),
        click.option(
            "--dataflow",
            type=click.Choice(["ws", "os", "is"]),
            help="Weight-, output- or input-stationary (default ws).",
        ),
        click.option(
            "--config",
            "config_path",
            help="JSON file of SystolicConfig fields (memories, clock, bandwidth).",
        ),
        click.option(
            "--exact-timing",
            is_flag=True,
            help="Step the PE registers cycle by cycle (arrays up to 64x64).",
        ),
    ]
    return functools.reduce(lambda f, option: option(f), reversed(options), fn)


def systolic_target(
    array: str | None, dataflow: str | None, config_path: str | None, exact_timing: bool
):
    """The systolic target for these options."""
    from dlcc.runtime.systolic.config import SystolicConfig, parse_array
    from dlcc.runtime.systolic.engine import SystolicTarget

    rows, cols = parse_array(array) if array else (None, None)
    overrides = {"rows": rows, "cols": cols, "dataflow": dataflow}
    if config_path:
        config = SystolicConfig.from_file(config_path, **overrides)
    else:
        config = SystolicConfig(**{k: v for k, v in overrides.items() if v is not None})
    return SystolicTarget(config, exact_timing=exact_timing)


def systolic_report(target, bundle) -> dict:
    """The cost report of the target's last run on `bundle`; a re-tiling is said on stderr."""
    from dlcc.runtime.systolic.cost import report

    tiling = target.tiling(bundle)
    if tiling["retiled"]:
        rows, cols = tiling["bundle"]
        click.echo(
            f"dlcc: note: the bundle is tiled for a {rows}x{cols} array; re-tiled for "
            f"{target.config.rows}x{target.config.cols}",
            err=True,
        )
    return {**report(target.records, target.config), "tiling": tiling}


@click.command()
@click.argument("bundle")
@input_option
@systolic_options
@click.option("--compare", "other", help="A second bundle: the cosine distance of the profiles.")
@click.option("--cores", default=1, show_default=True, help="Amdahl projection: arrays.")
@click.option("--vector-length", default=1, show_default=True, help="Amdahl: vector lanes.")
@click.option("--plot", help="Write the roofline with every layer on it to this PNG.")
@json_option
@fail_cleanly
def profile(
    bundle,
    input_path,
    array,
    dataflow,
    config_path,
    exact_timing,
    other,
    cores,
    vector_length,
    plot,
    as_json,
) -> None:
    """Profile BUNDLE on the systolic array: where the cycles go, and what more arrays buy.

    Prints the profile vector (fractions of cycles in compute, weight loads, data loads and
    transfers), an Amdahl projection for --cores and --vector-length, and with --compare the
    cosine distance phi = 1 - A.B/|A||B| between the two bundles' profiles.

    \b
    Example:
      dlcc profile lenet5-O3.bin --input samples/mnist_test_256.npz --compare lenet5-O0.bin
    """
    import dlcc
    from dlcc.cli_common import read_inputs
    from dlcc.fileio import refuse_overwrite
    from dlcc.runtime.systolic.profile import compare, profile_vector, projection, render_profile

    refuse_overwrite(plot, bundle, input_path, other, config_path)

    def run(path: str) -> dict:
        loaded = dlcc.load(path)
        target = systolic_target(array, dataflow, config_path, exact_timing)
        loaded.run(read_inputs(loaded, input_path)[0], target=target)
        return systolic_report(target, loaded)

    rep = run(bundle)
    info = {
        "bundle": bundle,
        "config": rep["config"],
        "profile": profile_vector(rep),
        "amdahl": projection(rep, cores, vector_length),
    }
    lines = [render_profile(info["profile"], f"profile of {bundle}")]
    amdahl = info["amdahl"]
    lines.append(
        f"amdahl: serial {amdahl['serial_fraction']:.2%}, scalar "
        f"{amdahl['scalar_fraction']:.2%} -> speedup {amdahl['speedup']:.2f}x on "
        f"{cores} arrays x {vector_length} lanes"
    )
    if other:
        info["compare"] = compare(rep, run(other))
        lines.append(render_profile(info["compare"]["other_profile"], f"profile of {other}"))
        lines.append(f"cosine distance phi = {info['compare']['cosine_distance']:.4f}")
    if plot:
        from dlcc.plot import roofline_png

        roofline_png(rep, plot, title=bundle)
        lines.append(f"roofline: {plot}")
    emit(info, as_json, "\n".join(lines))
