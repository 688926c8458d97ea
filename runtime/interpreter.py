"""The interpreter target: executes a bundle's instruction stream on whole tensors with numpy.

The matrix instructions go to a `MatrixEngine`; everything else runs the shared kernels. A
target that models other hardware (the systolic array) swaps only the engine. Buffers are
freed after their last use, so peak memory follows the live activations, not the program.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Callable
from typing import Protocol

import numpy as np

from dlcc.errors import ExecutionError
from dlcc.formats import isa
from dlcc.runtime.activate import ActivateUnit
from dlcc.runtime.kernels import NoAttrs, get_kernel
from dlcc.runtime.kernels.matrix import conv_accumulators, conv_output_hw, dense_accumulators
from dlcc.runtime.loader import LoadedBundle
from dlcc.runtime.sparse import sparse_product
from dlcc.runtime.threads import blas_threads, product_threads
from dlcc.runtime.verifier import function_kernel


class MatrixEngine(Protocol):
    """What executes MATRIX_MULTIPLY and CONVOLVE; `tensor` is the weight's tensor id."""

    def matmul(self, x: np.ndarray, w: np.ndarray, tensor: int) -> np.ndarray: ...

    def convolve(self, x: np.ndarray, w: np.ndarray, attrs, tensor: int) -> np.ndarray: ...


_DENSE, _CONV = get_kernel("Dense").fn, get_kernel("Conv").fn
_NO_ATTRS = NoAttrs()


class NumpyEngine:
    """Whole-tensor matrix products through the shared Dense and Conv kernels; with `sparse`,
    an int8 Dense of a few rows runs over its active weight rows where that pays (its
    exact result is the dense one: runtime/sparse.py). Each product runs on one BLAS thread
    or the run's count by its size (runtime/threads.py, `product_threads`).

    With `wide`, int8 products may come back as float32 holding the exact int32 sums (the
    SGEMM result before its cast, `kernels.matrix.dense_accumulators`), for an Activate unit
    that takes them so (`ActivateUnit.takes_float`): a cast less, the same result."""

    def __init__(self, sparse: bool = True) -> None:
        self.sparse = sparse

    def matmul(self, x: np.ndarray, w: np.ndarray, tensor: int, wide: bool = False):
        product_threads(x.size * w.shape[1])
        if x.dtype == np.int8:
            if self.sparse and x.ndim == 2:
                y = sparse_product(x, w)
                if y is not None:
                    return y
            if wide:
                return dense_accumulators(x, w)
        return _DENSE(_NO_ATTRS, x, w, None)

    def convolve(self, x: np.ndarray, w: np.ndarray, attrs, tensor: int, wide: bool = False):
        if x.ndim == 4 and w.ndim == 4:  # (the kernel itself reports any other shape)
            oh, ow = conv_output_hw(x.shape[2], x.shape[3], w.shape[2:], attrs)
            product_threads(x.shape[0] * oh * ow * w.size)
        if wide and x.dtype == np.int8:
            return conv_accumulators(attrs, x, w)
        return _CONV(attrs, x, w, None)


class Interpreter:
    """Runs bundles instruction by instruction; `engine` executes the matrix instructions."""

    name = "interp"

    def __init__(self, engine: MatrixEngine | None = None) -> None:
        self.engine = engine or NumpyEngine()

    def run(self, bundle: LoadedBundle, inputs, watch=()) -> dict[str, np.ndarray]:
        """Outputs by name for `inputs` (one array, or a dict keyed by input name).

        The arrays written to the buffers in `watch` are kept in `self.watched`. BLAS runs
        on `bundle.threads` threads unless an enclosing run has set them (runtime/threads).
        """
        self.watched: dict[int, np.ndarray] = {}
        program = bundle._steps
        if program is None:
            program = bundle._steps = compile_program(bundle)
        host_in = bind_inputs(bundle, inputs, program.inputs)
        ub: dict[int, np.ndarray] = {}
        outputs: dict[str, np.ndarray] = {}
        engine = self.engine
        with blas_threads(bundle.threads):
            if not watch:
                for step, free in program.steps:
                    step(ub, engine, host_in, outputs, True)
                    for b in free:
                        ub.pop(b, None)
                return outputs
            for step, free in program.steps:
                step(ub, engine, host_in, outputs, False)  # in place never: watched values
                for b in watch:
                    if b in ub and b not in self.watched:
                        self.watched[b] = ub[b]
                for b in free:
                    ub.pop(b, None)
        return outputs


Step = Callable[[dict, MatrixEngine, list, dict, bool], None]


@dataclasses.dataclass(frozen=True)
class Program:
    """A bundle's program resolved for the interpreter, once per bundle."""

    steps: list[tuple[Step, tuple[int, ...]]]  # (step, buffers freed after it)
    inputs: list[tuple[str, np.dtype]]  # the host inputs in order: name, dtype


def compile_program(bundle: LoadedBundle) -> Program:
    """The program as (step, buffers freed after it) pairs, resolved once per bundle.

    A step is step(ub, engine, host_inputs, outputs, inplace). Kernels, attributes, constant
    operands and each matrix instruction's weight (the FIFO's order, which the verifier has
    proved balanced) are bound here, so a run only moves arrays. With `inplace` (no buffer
    watched), an Activate may write over accumulators that only it reads and a matrix
    instruction produced, and the numpy engine may hand it them as exact float32 sums.
    """
    program = bundle.file.program
    readers: dict[int, int] = {}
    writers: dict[int, int] = {}
    for instr in program:
        for b in isa.reads(instr):
            readers[b] = readers.get(b, 0) + 1
        for b in isa.writes(instr):
            writers[b] = writers.get(b, 0) + 1
    sole = {b for b, n in readers.items() if n == 1 and writers.get(b) == 1}
    bounds = _accumulator_bounds(bundle, sole)
    units = {
        k: ActivateUnit(instr, attrs, bundle.weights, bounds.get(instr.src))
        for k, (instr, attrs) in enumerate(zip(program, bundle.attrs))
        if isinstance(instr, isa.Activate)
    }
    wide = {program[k].src for k, unit in units.items() if unit.takes_float} & sole
    last_use = isa.last_reads(program)
    fifo: deque[int] = deque()
    matrix_out: set[int] = set()
    steps = []
    for k, (instr, attrs) in enumerate(zip(program, bundle.attrs)):
        if isinstance(instr, isa.Halt):
            break
        if isinstance(instr, isa.ReadWeights):
            fifo.append(instr.tensor)
            continue
        if isinstance(instr, isa.MatrixMultiply | isa.Convolve):
            matrix_out.add(instr.dst)
            step = _matrix_step(bundle, instr, attrs, fifo.popleft(), instr.dst in wide)
        elif isinstance(instr, isa.Activate):
            step = _activate_step(instr, units[k], instr.src in matrix_out and instr.src in sole)
        else:
            step = _step(bundle, instr, attrs)
        steps.append((step, tuple(last_use.get(k, ()))))
    buffers = bundle.file.buffers
    return Program(steps, [(name, np.dtype(buffers[b].dtype)) for name, b in bundle.file.inputs])


def _accumulator_bounds(bundle: LoadedBundle, buffers: set[int]) -> dict[int, int]:
    """For each of `buffers` a matrix instruction writes: the largest magnitude of its int8
    sums, K * 128^2 (K: the weight's inputs per output)."""
    bounds, fifo = {}, deque()
    for instr in bundle.file.program:
        if isinstance(instr, isa.ReadWeights):
            fifo.append(bundle.weights[instr.tensor].shape)
        elif isinstance(instr, isa.MatrixMultiply | isa.Convolve):
            shape = fifo.popleft()
            k = shape[0] if isinstance(instr, isa.MatrixMultiply) else math.prod(shape[1:])
            if instr.dst in buffers:
                bounds[instr.dst] = k * 128 * 128
    return bounds


def _matrix_step(bundle: LoadedBundle, instr, attrs, t: int, wide: bool) -> Step:
    """A MATRIX_MULTIPLY or CONVOLVE of weight tensor `t`; `wide`: its accumulators go only
    to an Activate unit that takes them as float32 (when the engine is the numpy one)."""
    src, dst, weight = instr.src, instr.dst, bundle.weights[t]
    if isinstance(instr, isa.MatrixMultiply):

        def matrix_multiply(ub, engine, host_in, outputs, inplace):
            if wide and inplace and type(engine) is NumpyEngine:
                ub[dst] = engine.matmul(ub[src], weight, t, wide=True)
            else:
                ub[dst] = engine.matmul(ub[src], weight, t)

        return matrix_multiply

    def convolve(ub, engine, host_in, outputs, inplace):
        if wide and inplace and type(engine) is NumpyEngine:
            ub[dst] = engine.convolve(ub[src], weight, attrs, t, wide=True)
        else:
            ub[dst] = engine.convolve(ub[src], weight, attrs, t)

    return convolve


def _activate_step(instr: isa.Activate, unit: ActivateUnit, owned: bool) -> Step:
    """An ACTIVATE; `owned`: its accumulators are its alone (a matrix instruction's)."""
    src, dst = instr.src, instr.dst

    def activate(ub, engine, host_in, outputs, inplace):
        ub[dst] = unit(ub[src], owned and inplace)

    return activate


def _step(bundle: LoadedBundle, instr, attrs) -> Step:
    """One instruction as a closure over everything that does not change between runs."""
    w = bundle.weights
    if isinstance(instr, isa.ReadHost):
        i, dst = instr.input, instr.dst

        def read_host(ub, engine, host_in, outputs, inplace):
            ub[dst] = host_in[i]

        return read_host
    if isinstance(instr, isa.Vector):
        kernel, dsts = function_kernel(instr), instr.outputs
        sources = [
            (o.index, None) if o.memory == "UB" else (None, _operand(o, {}, w))
            for o in instr.inputs
        ]
        if len(dsts) == 1 and len(sources) == 1 and sources[0][1] is None:
            fn, src, dst = kernel.fn, sources[0][0], dsts[0]

            def unary(ub, engine, host_in, outputs, inplace):  # most vector ops: no lists
                y = fn(attrs, ub[src])
                ub[dst] = y[0] if type(y) is tuple else y

            return unary

        def vector(ub, engine, host_in, outputs, inplace):
            args = [c if b is None else ub[b] for b, c in sources]
            for dst, value in zip(dsts, kernel(attrs, *args)):
                ub[dst] = value

        return vector
    if isinstance(instr, isa.WriteHost):
        name, src = bundle.file.outputs[instr.output][0], instr.src

        def write_host(ub, engine, host_in, outputs, inplace):
            outputs[name] = np.asarray(ub[src], order="C")

        return write_host
    raise ExecutionError(f"instruction {instr} has no interpreter step")


def bind_inputs(bundle: LoadedBundle, inputs, specs: list[tuple[str, np.dtype]]) -> list:
    """Host input arrays in program order (`specs`: name and dtype of each), checked against
    the bundle's input buffers and the program proved to run at the symbols they bind
    (`LoadedBundle.bind`). An array of the buffer's dtype, C-ordered, is taken as it is."""
    if isinstance(inputs, np.ndarray):
        if len(specs) != 1:
            names = ", ".join(name for name, _ in specs)
            raise ExecutionError(f"the model has {len(specs)} inputs ({names}); pass them by name")
        inputs = {specs[0][0]: inputs}
    missing = [name for name, _ in specs if name not in inputs]
    if missing:
        names = ", ".join(name for name, _ in specs)
        raise ExecutionError(f"missing input(s) {', '.join(missing)}; the model takes {names}")
    arrays = []
    for name, dtype in specs:
        x = inputs[name]
        if not (type(x) is np.ndarray and x.dtype == dtype and x.flags.c_contiguous):
            x = _converted(name, np.asarray(x), dtype)
        arrays.append(x)
    bundle.bind({name: x.shape for (name, _), x in zip(specs, arrays)})
    return arrays


def _converted(name: str, x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Input `name` as a C-ordered array of `dtype`, or the ExecutionError that says why not."""
    if x.dtype.kind not in "fiub":
        raise ExecutionError(f"input {name!r}: {x.dtype} is not numeric")
    if dtype.kind == "i" and x.dtype.kind not in "iub":
        raise ExecutionError(f"input {name!r} takes integers ({dtype}), not {x.dtype}")
    if dtype.kind == "b" and x.dtype.kind != "b":
        raise ExecutionError(f"input {name!r} is {dtype}; got {x.dtype}")
    return np.asarray(x, dtype=dtype, order="C")  # keeps 0-d inputs 0-d


def _operand(o: isa.Operand, ub: dict[int, np.ndarray], w: list[np.ndarray]):
    if o.memory == "UB":
        return ub[o.index]
    if o.memory == "WEIGHTS":
        return w[o.index]
    return None
