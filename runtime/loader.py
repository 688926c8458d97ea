"""Load a bundle file: verify it, decode its tensors, bind its program to the kernels.

Everything that can be checked before running is checked here, so a bad bundle fails at load
with a BundleFormatError naming the section, never with an exception deep inside a kernel.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dlcc.errors import BundleFormatError, DlccError
from dlcc.formats import isa
from dlcc.formats.bundle import BundleFile
from dlcc.formats.encodings import decode
from dlcc.runtime.kernels import Kernel, NoAttrs, get_kernel


@dataclasses.dataclass
class LoadedBundle:
    """A verified bundle: its file contents, decoded weights and per-instruction attributes."""

    path: str
    file: BundleFile
    weights: list[np.ndarray]
    attrs: list[object]  # per instruction: the typed attributes of its function (or NoAttrs)

    @property
    def input_names(self) -> list[str]:
        return [name for name, _ in self.file.inputs]

    @property
    def output_names(self) -> list[str]:
        return [name for name, _ in self.file.outputs]

    def run(self, inputs, target="interp") -> dict[str, np.ndarray]:
        """Execute on `target` (a name or a target object); `inputs`: an array or a dict."""
        from dlcc.runtime.targets import get_target

        return (get_target(target) if isinstance(target, str) else target).run(self, inputs)


def load_bundle(path: str) -> LoadedBundle:
    """Read and verify the bundle at `path`."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise BundleFormatError(f"{path}: {e.strerror or e}") from None
    return bind_bundle(BundleFile.from_bytes(blob, source=path), path)


def bind_bundle(file: BundleFile, path: str = "<memory>") -> LoadedBundle:
    """A parsed bundle, verified and decoded, ready to run."""
    weights = [decode(t, file.data) for t in file.tensors]
    for w in weights:
        w.flags.writeable = False
    return LoadedBundle(path, file, weights, _bind(path, file))


def function_kernel(instr: isa.Instruction) -> Kernel | None:
    """The kernel an instruction's function or matrix op runs (None for pure data moves)."""
    if isinstance(instr, isa.MatrixMultiply):
        return get_kernel("Dense")
    if isinstance(instr, isa.Convolve):
        return get_kernel("Conv")
    if isinstance(instr, isa.Activate | isa.Vector) and instr.function != "NONE":
        return get_kernel(instr.function)
    return None


def _bind(path: str, file: BundleFile) -> list[object]:
    """Check every reference of the program and build each instruction's attributes."""
    where = f"{path}: section PROGRAM"
    n_buf, n_tensor, n_attr = len(file.buffers), len(file.tensors), len(file.attrs)
    for name, buf in file.inputs + file.outputs:
        if buf >= n_buf:
            raise BundleFormatError(f"{where}: {name!r} is bound to missing buffer {buf}")
    bound = []
    for k, instr in enumerate(file.program):
        refs = isa.reads(instr) + isa.writes(instr)
        tensors = _tensor_refs(instr)
        if any(b >= n_buf for b in refs) or any(t >= n_tensor for t in tensors):
            raise BundleFormatError(f"{where}: instruction #{k} refers past the tables")
        index = getattr(instr, "attrs", 0)
        if index >= n_attr:
            raise BundleFormatError(f"{where}: instruction #{k} uses missing attrs #{index}")
        kernel = function_kernel(instr)
        try:
            bound.append(kernel.attrs(*file.attrs[index]) if kernel else NoAttrs())
        except (TypeError, DlccError) as e:
            raise BundleFormatError(f"{where}: instruction #{k}: bad attributes ({e})") from None
    if not file.program or not isinstance(file.program[-1], isa.Halt):
        raise BundleFormatError(f"{where}: the program does not end with HALT")
    return bound


def _tensor_refs(instr: isa.Instruction) -> list[int]:
    if isinstance(instr, isa.Vector):
        return [o.index for o in instr.inputs if o.memory == "WEIGHTS"]
    if isinstance(instr, isa.ReadWeights):
        return [instr.tensor]
    if isinstance(instr, isa.Activate):
        refs = (instr.bias, instr.requant, instr.lut)
        return [t for t in refs if t != isa.NO_TENSOR]
    return []
