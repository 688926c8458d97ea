"""Pieces every CLI command shares: --json, clean errors, output, reading inputs."""

from __future__ import annotations

import functools
import json
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
    """Results on stdout: JSON for scripts, or text for people."""
    click.echo(json.dumps(data, indent=2, default=_jsonable) if as_json else text)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_data(path: str) -> dict:
    """Arrays of a .npz (or the one array of a .npy, under "") by key, labels included."""
    from dlcc.fileio import read_arrays

    arrays = read_arrays(path)
    return arrays if isinstance(arrays, dict) else {"": arrays}


def read_inputs(loaded, path: str):
    """(inputs for `loaded.run`, labels or None) from a .npy or .npz file."""
    from dlcc.fileio import read_arrays

    arrays = read_arrays(path)
    labels = arrays.pop("labels", None) if isinstance(arrays, dict) else None
    if isinstance(arrays, dict) and len(arrays) == 1 and len(loaded.input_names) == 1:
        arrays = next(iter(arrays.values()))
    return arrays, labels
