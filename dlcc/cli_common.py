"""Pieces every CLI command shares: --json, clean errors, output, reading inputs."""

from __future__ import annotations

import functools
import json
import math
import sys

import click
import numpy as np

from dlcc.errors import DlccError

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
input_option = click.option(
    "-i",
    "--input",
    "input_path",
    required=True,
    help=".npy for a one-input model, or .npz keyed by input name (+ optional 'labels').",
)

threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    help="At most this many threads per matrix product (BLAS), for the whole run; products "
    "under 2^27 multiply-adds run on one [default: physical cores].",
)


def fail_cleanly(fn):
    """Turn a DlccError into `dlcc: error: ...` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DlccError as e:
            click.echo(f"dlcc: error: {e}", err=True)
            sys.exit(2)

    return wrapper


def emit(data: dict, as_json: bool, text: str) -> None:
    """Results on stdout: strict JSON for scripts (NaN and infinities become null), or text."""
    click.echo(json.dumps(_strict(data), indent=2, allow_nan=False) if as_json else text)


def _strict(value):
    """`value` with numpy scalars as Python ones and non-finite floats as None, recursively."""
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def read_inputs(loaded, path: str):
    """(inputs by name for `loaded.run`, class ids or None) from a .npy or .npz file."""
    from dlcc.data import for_bundle, read

    inputs = for_bundle(read(path), loaded)
    return inputs, inputs.pop("labels", None)
