"""Sample data as every command takes it: read once, checked against the model before use.

    read(path)                        the arrays of a .npy/.npz file, remembering the file
    for_graph(data, graph, ...)       bound to an imported model's inputs (compile, budgets)
    for_bundle(data, bundle)          bound to a bundle's input buffers (run, profile, verify)

Binding maps arrays to input names (one unlabelled array feeds a one-input model under any
key) and refuses, naming the file and the input:
- a dtype that is not bool, integer or float (strings, objects, complex, structured);
- NaN, infinities, and values beyond +-LIMIT;
- an input with no samples, a shape the model does not take (the batch axis is free),
  inputs holding different sample counts;
- labels that are not class ids [N] (integers or whole floats; [N, 1] is a column of them)
  or one-hot / probability rows [N, classes]; those rows become their argmax, so every
  consumer sees int64 class ids, one per sample, in [0, classes) when the output says;
- for calibration (`nonzero`), an input that is all zeros: its activation range would be 0.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.errors import DlccError
from dlcc.fileio import read_arrays
from dlcc.ir import sample_axis

# Data values beyond this are refused. Real inputs (pixels, normalized features, embeddings)
# sit many orders of magnitude below; float32 tops out at 3.4e38 and squares overflow above
# 1.8e19 (LRN, variances, SQNR sums), while each layer can grow values by its fan-in times
# its weights. 1e12 leaves about seven orders of magnitude of that headroom.
LIMIT = 1e12


class Data(dict):
    """Arrays by key (input names, optional "labels"), and the file they came from."""

    def __init__(self, arrays: dict, source: str) -> None:
        super().__init__(arrays)
        self.source = source


def read(path: str) -> Data:
    """The arrays of a .npz file by key (a .npy file's one array under "")."""
    return Data(read_arrays(path), path)


def for_graph(data: dict | None, graph, source: str = "data", nonzero: bool = False):
    """`data` bound to the inputs of an IR graph, classes from its first output (None: None)."""
    inputs = {v.name: v for v in graph.inputs}
    return bind(data, inputs, graph.outputs[0], source, nonzero)


def for_bundle(data: dict, bundle, source: str = "input data") -> Data:
    """`data` bound to a loaded bundle's input buffers, classes from its first output."""
    file = bundle.file

    def spec(buf: int) -> Spec:
        b = file.buffers[buf]
        return Spec(b.shape, b.dtype, b.batch_axis, b.labels(file.symbols))

    inputs = {name: spec(buf) for name, buf in file.inputs}
    return bind(data, inputs, spec(file.outputs[0][1]), source)


@dataclasses.dataclass(frozen=True)
class Spec:
    """What `bind` needs of an input or output: an IR value or a bundle buffer has these."""

    shape: tuple[int, ...]
    dtype: str
    batch_axis: int | None
    labels: tuple[str, ...]  # per axis: "" static, else the symbol (free); () all static


def bind(data: dict | None, inputs: dict, output, source: str, nonzero: bool = False):
    """Checked arrays by input name, and "labels" as int64 class ids if `data` has them.

    `inputs` maps names to `Spec`s (or IR values, which have the same fields); `output` is
    such a spec for the scored output. Symbolic dimensions take any size. `source` names the
    data in errors unless `data` is a `Data` read from a file.
    """
    if data is None:
        return None
    source = data.source if isinstance(data, Data) else source
    arrays = {k: v for k, v in data.items() if k != "labels"}
    if len(inputs) == 1 and len(arrays) == 1 and next(iter(inputs)) not in arrays:
        arrays = {next(iter(inputs)): next(iter(arrays.values()))}
    missing = [name for name in inputs if name not in arrays]
    if missing:
        held = ", ".join(repr(k) for k in data if k) or "one unnamed array"
        raise DlccError(
            f"{source}: no array for input(s) {', '.join(map(repr, missing))}; it holds {held}"
        )
    bound, counts = {}, set()
    for name, spec in inputs.items():
        x = np.asarray(arrays[name])
        where = f"{source}: input {name!r}"
        _check_dtype(x, where)
        if spec.dtype.startswith("int") and x.dtype.kind not in "iu":
            raise DlccError(f"{where}: the model takes integers ({spec.dtype}), not {x.dtype}")
        if spec.dtype == "bool" and x.dtype.kind != "b":
            raise DlccError(f"{where}: the model takes {spec.dtype}, not {x.dtype}")
        _check_shape(x, spec, where)
        if x.size == 0:
            raise DlccError(f"{where}: no samples (shape {_dims(x.shape)})")
        _check_values(x, where, nonzero and spec.dtype == "float32")  # masks, ids: no range
        axis = sample_axis(spec.shape, spec.batch_axis)
        if axis is not None:
            counts.add(x.shape[axis])
        bound[name] = x
    if len(counts) > 1:
        raise DlccError(f"{source}: the inputs hold different sample counts {sorted(counts)}")
    if "labels" in data:
        samples = counts.pop() if counts else None
        bound["labels"] = _labels(data["labels"], f"{source}: labels", samples, _classes(output))
    return Data(bound, source)


def split(data: Data, graph, fraction: float) -> tuple[Data, Data]:
    """`data` cut along each input's sample axis (labels along theirs): the first `fraction`
    of the samples, and the rest (each at least one sample)."""
    axes = {v.name: sample_axis(v.shape, v.batch_axis) for v in graph.inputs}
    bound = for_graph(data, graph, getattr(data, "source", "data"))
    count = next(bound[v.name].shape[axes[v.name] or 0] for v in graph.inputs)
    if count < 2:
        raise DlccError(f"{bound.source}: {count} sample(s); a held-out split needs at least 2")
    cut = min(max(int(round(count * fraction)), 1), count - 1)
    parts = [{}, {}]
    for key, array in bound.items():
        axis = axes.get(key) or 0
        parts[0][key] = np.take(array, np.arange(cut), axis=axis)
        parts[1][key] = np.take(array, np.arange(cut, count), axis=axis)
    return (
        Data(parts[0], f"{bound.source} (first {cut})"),
        Data(parts[1], f"{bound.source} (last {count - cut}, held out)"),
    )


def _classes(output) -> int | None:
    """The class count of a [N, classes] output spec; None for any other shape."""
    return output.shape[1] if len(output.shape) == 2 and output.batch_axis != 1 else None


def _labels(y, where: str, samples: int | None, n_classes: int | None) -> np.ndarray:
    """Class ids from ids [N] / [N, 1] or one-hot / probability rows [N, classes]."""
    y = np.asarray(y)
    _check_dtype(y, where)
    if y.ndim not in (1, 2):
        raise DlccError(
            f"{where}: shape {_dims(y.shape)}; expected class ids [N] or "
            "one-hot / probability rows [N, classes]"
        )
    if y.size:
        _check_values(y, where)
    if y.ndim == 2 and y.shape[1] > 1:
        if n_classes is not None and y.shape[1] != n_classes:
            raise DlccError(f"{where}: {y.shape[1]} columns; the model has {n_classes} classes")
        ids = y.argmax(axis=1)
    else:
        ids = y.reshape(-1)
        if y.dtype.kind == "f" and np.any(ids != np.floor(ids)):
            raise DlccError(f"{where}: class ids must be whole numbers")
    if samples is not None and len(ids) != samples:
        raise DlccError(f"{where}: {len(ids)} labels for {samples} samples")
    if ids.size and ids.min() < 0:
        raise DlccError(f"{where}: class ids must not be negative; found {ids.min()}")
    if ids.size and n_classes is not None and ids.max() >= n_classes:
        raise DlccError(
            f"{where}: class ids must be in [0, {n_classes}) for the model's {n_classes} "
            f"classes; found {ids.max()}"
        )
    return ids.astype(np.int64)


def _check_dtype(x: np.ndarray, where: str) -> None:
    if x.dtype.kind not in "biuf":
        raise DlccError(f"{where}: dtype {x.dtype} is not numeric (bool, integer or float)")


def _check_shape(x: np.ndarray, spec, where: str) -> None:
    expected = list(spec.shape)
    free = [i for i, label in enumerate(spec.labels) if label]
    axis = sample_axis(spec.shape, spec.batch_axis)
    for i in {*free, *([] if axis is None else [axis])}:
        if x.ndim == len(expected):
            expected[i] = x.shape[i]
    if list(x.shape) != expected:
        raise DlccError(f"{where}: shape {_dims(x.shape)}; the model takes {_dims_of(spec)}")


def _check_values(x: np.ndarray, where: str, nonzero: bool = False) -> None:
    """Finite, within +-LIMIT, and (with `nonzero`) not all zeros; min/max copy nothing."""
    with np.errstate(invalid="ignore"):
        lo, hi = x.min(), x.max()
    if np.isnan(lo) or np.isnan(hi):
        raise DlccError(f"{where}: NaN values")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise DlccError(f"{where}: infinite values")
    if lo < -LIMIT or hi > LIMIT:
        peak = float(hi if hi > LIMIT else lo)
        raise DlccError(f"{where}: value {peak:.3g}; data must lie within +-{LIMIT:.0e}")
    if nonzero and lo == hi == 0:
        raise DlccError(f"{where}: all zeros, no activation range to calibrate on")


def _dims(shape) -> str:
    """`1×28×28`."""
    return "×".join(map(str, shape)) or "scalar"


def _dims_of(spec) -> str:
    """`N×1×28×W`: symbolic dimensions by name."""
    labels = spec.labels or ("",) * len(spec.shape)
    return "×".join(label or str(d) for d, label in zip(spec.shape, labels)) or "scalar"
