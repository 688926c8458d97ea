"""The interpreter target: executes a bundle's instruction stream on whole tensors with numpy.

The matrix instructions go to a `MatrixEngine`; everything else runs the shared kernels. A
target that models other hardware (the systolic array) swaps only the engine. Buffers are
freed after their last use, so peak memory follows the live activations, not the program.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np

from dlcc.errors import ExecutionError
from dlcc.formats import isa
from dlcc.runtime.kernels import NoAttrs, get_kernel
from dlcc.runtime.kernels.quant import lut, requantize
from dlcc.runtime.loader import LoadedBundle
from dlcc.runtime.verifier import function_kernel


class MatrixEngine(Protocol):
    """What executes MATRIX_MULTIPLY and CONVOLVE; `tensor` is the weight's tensor id."""

    def matmul(self, x: np.ndarray, w: np.ndarray, tensor: int) -> np.ndarray: ...

    def convolve(self, x: np.ndarray, w: np.ndarray, attrs, tensor: int) -> np.ndarray: ...


class NumpyEngine:
    """Whole-tensor matrix products through the shared Dense and Conv kernels."""

    def matmul(self, x: np.ndarray, w: np.ndarray, tensor: int) -> np.ndarray:
        return get_kernel("Dense").fn(NoAttrs(), x, w, None)

    def convolve(self, x: np.ndarray, w: np.ndarray, attrs, tensor: int) -> np.ndarray:
        return get_kernel("Conv").fn(attrs, x, w, None)


class Interpreter:
    """Runs bundles instruction by instruction; `engine` executes the matrix instructions."""

    name = "interp"

    def __init__(self, engine: MatrixEngine | None = None) -> None:
        self.engine = engine or NumpyEngine()

    def run(self, bundle: LoadedBundle, inputs, watch=()) -> dict[str, np.ndarray]:
        """Outputs by name for `inputs` (one array, or a dict keyed by input name).

        The arrays written to the buffers in `watch` are kept in `self.watched`.
        """
        self.watched: dict[int, np.ndarray] = {}
        host_in = bind_inputs(bundle, inputs)
        program = bundle.file.program
        last_use = _last_uses(program)
        ub: dict[int, np.ndarray] = {}
        fifo: deque[int] = deque()  # weight tensor ids
        outputs: dict[str, np.ndarray] = {}
        w = bundle.weights
        for k, (instr, attrs) in enumerate(zip(program, bundle.attrs)):
            if isinstance(instr, isa.ReadHost):
                ub[instr.dst] = host_in[instr.input]
            elif isinstance(instr, isa.ReadWeights):
                fifo.append(instr.tensor)
            elif isinstance(instr, isa.MatrixMultiply):
                t = fifo.popleft()
                ub[instr.dst] = self.engine.matmul(ub[instr.src], w[t], t)
            elif isinstance(instr, isa.Convolve):
                t = fifo.popleft()
                ub[instr.dst] = self.engine.convolve(ub[instr.src], w[t], attrs, t)
            elif isinstance(instr, isa.Activate):
                ub[instr.dst] = activate(instr, attrs, ub[instr.src], w)
            elif isinstance(instr, isa.Vector):
                args = [_operand(o, ub, w) for o in instr.inputs]
                results = function_kernel(instr)(attrs, *args)
                for dst, value in zip(instr.outputs, results):
                    ub[dst] = value
            elif isinstance(instr, isa.WriteHost):
                name = bundle.file.outputs[instr.output][0]
                outputs[name] = np.asarray(ub[instr.src], order="C")
            elif isinstance(instr, isa.Halt):
                break
            for b in watch:
                if b in ub and b not in self.watched:
                    self.watched[b] = ub[b]
            for b in last_use.get(k, ()):
                ub.pop(b, None)
        return outputs


def activate(instr: isa.Activate, attrs, acc: np.ndarray, w: list[np.ndarray]) -> np.ndarray:
    """The Activate unit: bias, then requantization and table (int8 out), or dequantization
    (int32 accumulators, float32 out), then the float function."""
    if instr.bias != isa.NO_TENSOR:
        acc = acc + w[instr.bias]
    if instr.requant != isa.NO_TENSOR:
        requant = w[instr.requant]
        if requant.dtype.kind == "f":  # per-channel scales of one accumulator unit
            acc = (acc * requant.astype(np.float64)).astype(np.float32)
        else:
            acc = requantize(acc, *requant)
            if instr.lut != isa.NO_TENSOR:
                return lut(None, acc, w[instr.lut])
    kernel = function_kernel(instr)
    return kernel.fn(attrs, acc) if kernel else acc


def bind_inputs(bundle: LoadedBundle, inputs) -> list[np.ndarray]:
    """Host input arrays in program order, checked against the bundle's input buffers and
    the program proved to run at the symbols they bind (`LoadedBundle.bind`)."""
    names = bundle.input_names
    if isinstance(inputs, np.ndarray):
        if len(names) != 1:
            raise ExecutionError(
                f"the model has {len(names)} inputs ({', '.join(names)}); pass them by name"
            )
        inputs = {names[0]: inputs}
    missing = [n for n in names if n not in inputs]
    if missing:
        raise ExecutionError(
            f"missing input(s) {', '.join(missing)}; the model takes {', '.join(names)}"
        )
    arrays = []
    for name, buf in bundle.file.inputs:
        record = bundle.file.buffers[buf]
        x = np.asarray(inputs[name])
        if x.dtype.kind not in "fiub":
            raise ExecutionError(f"input {name!r}: {x.dtype} is not numeric")
        if record.dtype.startswith("int") and x.dtype.kind not in "iub":
            raise ExecutionError(f"input {name!r} takes integers ({record.dtype}), not {x.dtype}")
        if record.dtype == "bool" and x.dtype.kind != "b":
            raise ExecutionError(f"input {name!r} is {record.dtype}; got {x.dtype}")
        arrays.append(np.asarray(x, dtype=record.dtype, order="C"))  # keeps 0-d inputs 0-d
    bundle.bind({name: x.shape for name, x in zip(names, arrays)})
    return arrays


def _operand(o: isa.Operand, ub: dict[int, np.ndarray], w: list[np.ndarray]):
    if o.memory == "UB":
        return ub[o.index]
    if o.memory == "WEIGHTS":
        return w[o.index]
    return None


def _last_uses(program: list[isa.Instruction]) -> dict[int, list[int]]:
    """For each instruction index, the UB/ACC buffers whose last read happens there."""
    last: dict[int, int] = {}
    for k, instr in enumerate(program):
        for b in isa.reads(instr):
            last[b] = k
    by_step: dict[int, list[int]] = {}
    for b, k in last.items():
        by_step.setdefault(k, []).append(b)
    return by_step
