"""Load a bundle file: parse it, verify it, decode its tensors.

Nothing is decoded or allocated before the verifier (runtime/verifier.py) has proved the
bundle well formed and its sizes within `Limits`; a bad bundle fails at load with a
BundleFormatError naming the section, never with an exception deep inside a kernel.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.errors import BundleFormatError, ExecutionError
from dlcc.formats import isa
from dlcc.formats.bundle import STATIC, BundleFile
from dlcc.formats.encodings import decode
from dlcc.runtime.kernels.constants import mark_constant
from dlcc.runtime.memory import keep_freed_memory
from dlcc.runtime.targets import get_target
from dlcc.runtime.threads import blas_threads, check_threads
from dlcc.runtime.verifier import DEFAULT_LIMITS, Binding, Limits, plan, verify


@dataclasses.dataclass
class LoadedBundle:
    """A verified bundle: its file contents, decoded weights and per-instruction attributes."""

    path: str
    file: BundleFile
    weights: list[np.ndarray]
    attrs: list[object]  # per instruction: the typed attributes of its function (or NoAttrs)
    limits: Limits = DEFAULT_LIMITS
    _plans: dict[Binding, int] = dataclasses.field(default_factory=dict, repr=False)  # peaks
    threads: int | None = None  # BLAS threads of its runs (None: the physical cores)
    _steps: object = dataclasses.field(default=None, repr=False)  # the interpreter's program
    _bindings: dict[tuple, Binding] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def input_names(self) -> list[str]:
        return [name for name, _ in self.file.inputs]

    @property
    def output_names(self) -> list[str]:
        return [name for name, _ in self.file.outputs]

    def bind(self, shapes: dict[str, tuple[int, ...]]) -> Binding:
        """The symbols' values given the inputs' shapes by name, the program proved to run
        at them (`plan`, cached); ExecutionError naming the input that does not fit."""
        key = tuple(tuple(shapes[name]) for name in self.input_names)
        binding = self._bindings.get(key)
        if binding is not None:
            return binding
        file = self.file
        values: dict[int, tuple[int, str]] = {}  # symbol id -> (value, the input that set it)
        for name, buf in file.inputs:
            record, shape = file.buffers[buf], tuple(shapes[name])
            labels = record.labels(file.symbols)
            shown = "×".join(label or str(d) for d, label in zip(record.shape, labels)) or "scalar"
            if len(shape) != len(record.shape):
                raise ExecutionError(f"input {name!r}: expected shape {shown}, got {shape}")
            for axis, (d, want, code) in enumerate(zip(shape, record.shape, record.dims)):
                if code == STATIC and d != want:
                    raise ExecutionError(f"input {name!r}: expected shape {shown}, got {shape}")
                if code == STATIC:
                    continue
                if d < 1:
                    what = "no samples (batch 0)" if code == 1 else f"{labels[axis]} is 0"
                    raise ExecutionError(f"input {name!r}: {what}")
                seen, where = values.setdefault(code, (d, name))
                if seen != d:
                    raise ExecutionError(
                        f"input {name!r}: {labels[axis]} is {d} here but {seen} in "
                        f"input {where!r}; the inputs disagree"
                    )
        binding = tuple(values.get(i + 1, (1, ""))[0] for i in range(len(file.symbols)))
        if binding not in self._plans:
            self._plans[binding] = plan(file, self.attrs, binding, self.limits, source=self.path)
        if len(self._bindings) < 64:  # input shapes seen, each proved to run
            self._bindings[key] = binding
        return binding

    def run(self, inputs, target="interp", threads: int | None = None) -> dict[str, np.ndarray]:
        """Execute on `target` (a name or a target object); `inputs`: an array or a dict.

        `threads`: BLAS threads for this run (default: the bundle's `threads`, else the
        physical cores; runtime/threads.py). The process keeps freed memory for the next
        run (runtime/memory.py).
        """
        runner = get_target(target) if isinstance(target, str) else target
        keep_freed_memory()
        with blas_threads(check_threads(threads) or self.threads):
            return runner.run(self, inputs)


def load_bundle(
    path: str, limits: Limits = DEFAULT_LIMITS, threads: int | None = None
) -> LoadedBundle:
    """Read and verify the bundle at `path`; `threads`: BLAS threads of its runs."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise BundleFormatError(f"{path}: {e.strerror or e}") from None
    bundle = bind_bundle(BundleFile.from_bytes(blob, path, limits.meta_bytes), path, limits)
    bundle.threads = check_threads(threads)
    return bundle


def bind_bundle(
    file: BundleFile, path: str = "<memory>", limits: Limits = DEFAULT_LIMITS
) -> LoadedBundle:
    """A parsed bundle, verified and decoded, ready to run."""
    attrs, peaks = verify(file, path, limits)
    weights = [decode(record, file.data) for record in file.tensors]
    for w in weights:
        mark_constant(w)  # read-only; the kernels may cache what they derive from it
    _check_requantization(file, weights, path)
    return LoadedBundle(path, file, weights, attrs, limits, peaks)


def _check_requantization(file: BundleFile, weights: list[np.ndarray], path: str) -> None:
    """Integer requantization constants in range: multipliers in [0, 2^31), shifts in 1..62."""
    for k, instr in enumerate(file.program):
        if not isinstance(instr, isa.Activate) or instr.requant == isa.NO_TENSOR:
            continue
        r = weights[instr.requant]
        if r.dtype.kind == "f":
            ok = bool(np.isfinite(r).all())
        else:
            ok = r[0].min() >= 0 and r[0].max() < 1 << 31 and r[1].min() >= 1 and r[1].max() <= 62
        if not ok:
            raise BundleFormatError(
                f"{path}: section TENSORS: tensor #{instr.requant} (requantization of "
                f"instruction #{k}) holds values out of range"
            )
