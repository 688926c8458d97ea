"""The bundle verifier: proves a parsed bundle well formed before anything is decoded or run.

In the spirit of the WebAssembly validator and the eBPF verifier, one pass over the tables
and one abstract run of the program, on shapes and dtypes only:

    tables    every enum value known; tensor codings consistent; every declared count and
              size bounded by the bytes that hold it and by `Limits`
    program   operands defined before use (each buffer written once), weight FIFO pushes and
              pops balanced, host input/output indices in range, each output written once,
              HALT last; every attribute record typed and in its op's domain; every result
              equal to its op record's shape and dtype rules and to its buffer's declaration
    memory    the peak of live activations plus kernel workspace within `Limits`

`plan()` is the abstract run itself, at one binding of the symbols (the batch N and any other
symbolic dimension, bound from the inputs' shapes); `plans()` runs several bindings at once,
each buffer holding a shape per binding. The verifier runs the reference binding and every
probe (one symbol doubled) in one such run; the runtime plans again for each binding it is
given (cached), so a program verified at batch 1 and 2 cannot fail at batch 3 inside a
kernel. A bundle that passes cannot crash the runtime: its kernels also defend their own
preconditions (see `kernels.strided.strided_view`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections import deque

import numpy as np

from dlcc.errors import BundleFormatError, DlccError, ExecutionError
from dlcc.formats import isa
from dlcc.formats.bundle import (
    DERIVED,
    MAX_META_BYTES,
    STATIC,
    BufferRecord,
    BundleFile,
    TensorRecord,
)
from dlcc.formats.huffman import SYMBOL_BITS
from dlcc.runtime.activate import SPREAD_RATIO
from dlcc.runtime.kernels import (
    F32,
    I8,
    I32,
    INDEX_DTYPES,
    Kernel,
    NoAttrs,
    get_kernel,
    kernel_at,
)

DTYPES = ("float32", "int8", "int32", "uint8", "int64", "bool")
VALUE_CODINGS = ("raw", "int8", "codebook", "zigzag")
POSITION_CODINGS = ("dense", "csr", "bitmask")
BLOB_ROLES = ("VALUES", "POSITIONS", "CODEBOOK", "SCALES")
MAX_DIM = (1 << 31) - 1
MAX_FIFO = 256  # weight tiles in flight
MAX_SYMBOLS = 16
Binding = tuple[int, ...]  # the value of each symbol, by id - 1
WORKSPACE_ITEM_BYTES = 8  # a bound per temporary element: a float32 copy beside its original


@dataclasses.dataclass(frozen=True)
class Limits:
    """Resource limits a bundle must stay within (bytes unless said otherwise)."""

    activation_bytes: int = 16 << 30  # peak live activations plus kernel workspace, per run
    tensor_bytes: int = 16 << 30  # decoded weights and the forms derived from them to run
    meta_bytes: int = MAX_META_BYTES  # the decompressed META JSON
    huffman_symbols: int = 1 << 32  # symbols of one Huffman stream


DEFAULT_LIMITS = Limits()


def verify(
    file: BundleFile, source: str = "bundle", limits: Limits = DEFAULT_LIMITS
) -> tuple[list[object], dict[Binding, int]]:
    """Prove `file` well formed (BundleFormatError otherwise): each instruction's attributes,
    and the peak bytes of the program at the reference binding and every probe (the
    runtime's plans for them)."""
    for index, t in enumerate(file.tensors):
        problem = _tensor_problem(t, file.data, limits)
        _check(problem, source, "TENSORS", f"tensor #{index} {t.name!r}")
    total = _resident_weight_bytes(file)
    _check(
        None if total <= limits.tensor_bytes else f"{total:,} B > limit {limits.tensor_bytes:,}",
        source,
        "TENSORS",
        "decoded tensors and the float32 forms the matrix unit derives from them",
    )
    symbols = file.symbols
    if not 1 <= len(symbols) <= MAX_SYMBOLS or len(set(symbols)) != len(symbols):
        _check(f"{len(symbols)} symbols {symbols[:4]}...", source, "PROGRAM", "symbols")
    for index, b in enumerate(file.buffers):
        _check(_buffer_problem(b, len(symbols)), source, "BUFFERS", f"buffer #{index}")
    reference = _reference(file, source)
    typed: dict[tuple[str, int], object] = {}  # by (op, record): instructions share records
    attrs = [_typed_attrs(file, k, instr, source, typed) for k, instr in enumerate(file.program)]
    probes = (reference, *(_doubled(reference, i) for i in range(len(reference))))
    return attrs, plans(file, attrs, probes, limits, BundleFormatError, source)


def reference_binding(file: BundleFile) -> Binding:
    """Each symbol's value at the reference binding: what the input buffers declare (1 for
    the batch, and for a symbol no input holds)."""
    values = [1] * len(file.symbols)
    for _, buf in file.inputs:
        if buf < len(file.buffers):
            b = file.buffers[buf]
            for d, code in zip(b.shape, b.dims):
                if STATIC < code <= len(values):
                    values[code - 1] = d
    return tuple(values)


def _doubled(binding: Binding, symbol: int) -> Binding:
    return tuple(2 * v if j == symbol else v for j, v in enumerate(binding))


def _reference(file: BundleFile, source: str) -> Binding:
    """The reference binding, checked: the inputs agree on it, hold no derived dimension,
    and bind every symbol a buffer uses."""
    reference, bound = reference_binding(file), {1}
    for name, buf in file.inputs:
        if buf >= len(file.buffers):
            continue  # the abstract run reports it
        b = file.buffers[buf]
        for d, code in zip(b.shape, b.dims):
            if code == DERIVED or (code != STATIC and d != reference[code - 1]):
                problem = f"dims {b.dims} of shape {b.shape} disagree with the other inputs'"
                _check(problem, source, "BUFFERS", f"input {name!r}")
            bound.add(code)
    if reference[0] != 1:
        _check(f"the batch is {reference[0]} at batch 1", source, "BUFFERS", "inputs")
    used = {code for b in file.buffers for code in b.dims} - {STATIC, DERIVED}
    if used - bound:
        names = [file.symbols[code - 1] for code in sorted(used - bound)]
        _check(f"symbol(s) {names} bound by no input", source, "PROGRAM", "symbols")
    return reference


def plan(
    file: BundleFile,
    attrs: list[object],
    binding: Binding,
    limits: Limits = DEFAULT_LIMITS,
    error: type[DlccError] = ExecutionError,
    source: str = "bundle",
) -> int:
    """Run the program abstractly at `binding`; the peak bytes it needs, or `error`."""
    return plans(file, attrs, (binding,), limits, error, source)[binding]


def plans(
    file: BundleFile,
    attrs: list[object],
    bindings: tuple[Binding, ...],
    limits: Limits = DEFAULT_LIMITS,
    error: type[DlccError] = ExecutionError,
    source: str = "bundle",
) -> dict[Binding, int]:
    """`plan` at every one of `bindings`, in one abstract run that carries a shape per
    binding: the rules that do not depend on shapes (operands, FIFO, dtypes, outputs) are
    checked once, the op records' shape rules once per binding."""
    try:
        return dict(zip(bindings, _Abstract(file, attrs, bindings).run(limits)))
    except _Violation as v:
        where = f"{source}: section PROGRAM" if error is BundleFormatError else source
        raise error(f"{where}: {v}") from None


class _Violation(Exception):
    """A broken rule of the program, with the instruction it broke at."""


Shapes = tuple[tuple[int, ...], ...]  # a buffer's shape at each binding of the run


@dataclasses.dataclass
class _Abstract:
    """The abstract machine: shapes (one per binding) and dtypes in buffers, tensor ids in
    the weight FIFO."""

    file: BundleFile
    attrs: list[object]
    bindings: tuple[Binding, ...]

    def run(self, limits: Limits) -> list[int]:
        """The peak bytes at each binding."""
        f = self.file
        reference = reference_binding(f)
        self.exact = [b == reference for b in self.bindings]  # derived dims as declared
        self.defined: dict[int, tuple[Shapes, str]] = {}
        self.nbytes: dict[int, list[int]] = {}  # of each defined buffer, per binding
        self.fifo: deque[int] = deque()
        self.written: set[int] = set()
        writes = [tuple(isa.writes(instr)) for instr in f.program]
        frees = isa.last_reads(f.program)
        n = len(self.bindings)
        live, peak, none = [0] * n, [0] * n, [0] * n
        for k, instr in enumerate(f.program):
            self.k = k
            try:
                workspace = self.step(instr, self.attrs[k])
            except _Violation:
                raise
            except (ValueError, TypeError, IndexError, KeyError, ZeroDivisionError) as e:
                # An op record's shape or dtype rule refused its operands.
                raise _Violation(f"instruction #{k} ({_name(instr)}): {e}") from None
            for b in writes[k]:
                live = [a + size for a, size in zip(live, self.nbytes[b])]
            peak = [max(p, a + w) for p, a, w in zip(peak, live, workspace or none)]
            if max(peak) > limits.activation_bytes:
                i = max(range(n), key=peak.__getitem__)
                needs = f"needs {peak[i]:,} B of activations, limit {limits.activation_bytes:,}"
                self.fail(f"{needs} (at {self.symbols(i)})")
            for b in frees.get(k, ()):
                live = [a - size for a, size in zip(live, self.nbytes[b])]
            if isinstance(instr, isa.Halt):
                if k != len(f.program) - 1:
                    self.fail("HALT before the end of the program")
                if self.fifo:
                    self.fail(f"{len(self.fifo)} weight tile(s) left in the FIFO")
                if len(self.written) != len(f.outputs):
                    self.fail(f"{len(f.outputs) - len(self.written)} output(s) never written")
                return peak
        raise _Violation("the program does not end with HALT")

    # -- rules ------------------------------------------------------------------------------
    def step(self, instr: isa.Instruction, attrs) -> list[int] | None:
        """Check one instruction and define what it writes; its kernel workspace in bytes
        at each binding (None: none)."""
        f = self.file
        if isinstance(instr, isa.ReadHost):
            if instr.input >= len(f.inputs) or f.inputs[instr.input][1] != instr.dst:
                self.fail(f"host input #{instr.input} is not bound to ub[{instr.dst}]")
            declared = self.declared(instr.dst)
            if any(None in shape for shape in declared):
                self.fail(f"input ub[{instr.dst}] has a derived dimension")
            self.define(instr.dst, declared, f.buffers[instr.dst].dtype)
        elif isinstance(instr, isa.ReadWeights):
            self.tensor(instr.tensor)
            if len(self.fifo) == MAX_FIFO:
                self.fail(f"more than {MAX_FIFO} weight tiles pushed")
            self.fifo.append(instr.tensor)
        elif isinstance(instr, isa.MatrixMultiply | isa.Convolve):
            if not self.fifo:
                self.fail("pops an empty weight FIFO")
            if instr.accumulate or min(instr.folds_k, instr.folds_n) < 1:
                self.fail("accumulate is not supported; folds must be >= 1")
            w = self.tensor(self.fifo.popleft())
            return self.apply(_matrix_kernel(instr), attrs, [self.use(instr.src), w], [instr.dst])
        elif isinstance(instr, isa.Activate):
            return self.activate(instr, attrs)
        elif isinstance(instr, isa.Vector):
            kernel = kernel_at(instr.function)
            if kernel is None:
                self.fail(f"unknown vector function code {instr.function}")
            ins = [self.operand(o) for o in instr.inputs]
            return self.apply(kernel, attrs, ins, list(instr.outputs))
        elif isinstance(instr, isa.WriteHost):
            if instr.output >= len(f.outputs) or f.outputs[instr.output][1] != instr.src:
                self.fail(f"host output #{instr.output} is not bound to ub[{instr.src}]")
            if instr.output in self.written:
                self.fail(f"host output #{instr.output} written twice")
            self.use(instr.src)
            self.written.add(instr.output)
        return None

    def activate(self, instr: isa.Activate, attrs) -> list[int] | None:
        """bias, then float scales (float out), or requantize and table (int8 out), then f."""
        kernel = kernel_at(instr.function)
        if kernel is None and instr.function != isa.NONE:
            self.fail(f"unknown function code {instr.function}")
        accs, acc_dtype = self.use(instr.src)
        integer = acc_dtype == I32
        if instr.bias != isa.NO_TENSOR:
            (bias, *_), bias_dtype = self.tensor(instr.bias)
            for acc in accs:
                if bias_dtype != acc_dtype or _broadcast(acc, bias) != acc:
                    self.fail(
                        f"bias {bias_dtype} {bias} does not fit accumulators {acc_dtype} {acc}"
                    )
        out_dtype = acc_dtype
        if instr.requant != isa.NO_TENSOR:
            (scales, *_), dtype = self.tensor(instr.requant)
            rows = scales[1:] if dtype in INDEX_DTYPES else scales  # [multipliers, shifts]
            for acc in accs:
                if not integer or dtype not in (F32, *INDEX_DTYPES) or _broadcast(acc, rows) != acc:
                    self.fail(f"requantization {dtype} {scales} does not fit {acc_dtype} {acc}")
            if dtype in INDEX_DTYPES and scales[:1] != (2,):
                self.fail(f"integer requantization {scales} is not [multipliers, shifts]")
            out_dtype = F32 if dtype == F32 else I8
        elif integer:
            self.fail("int32 accumulators need a requantization tensor")
        if instr.lut != isa.NO_TENSOR:
            (table, *_), dtype = self.tensor(instr.lut)
            if out_dtype != I8 or (table, dtype) != ((256,), I8):
                self.fail("a lookup table needs integer requantization and 256 int8 entries")
            return self.apply(None, attrs, [(accs, I8)], [instr.dst])
        if kernel is None:
            return self.apply(None, attrs, [(accs, out_dtype)], [instr.dst])
        if not kernel.pointwise:
            self.fail(f"{kernel.op} is not an activation the Activate unit applies")
        return self.apply(kernel, attrs, [(accs, out_dtype)], [instr.dst])

    def apply(self, kernel: Kernel | None, attrs, ins: list, outs: list[int]) -> list[int] | None:
        """Define `outs` from `kernel`'s rules on `ins` ((shapes, dtype) or None); the
        workspace at each binding."""
        shapes = [None if i is None else i[0] for i in ins]
        dtypes = [None if i is None else i[1] for i in ins]
        if kernel is None:  # the identity of an Activate with no function
            self.define(outs[0], shapes[0], dtypes[0])
            return None
        if None in shapes[: _required_inputs(kernel)]:
            self.fail(f"a required operand of {kernel.op} is absent")
        dtype = kernel.dtype(attrs, *dtypes)
        results, work = [], []
        for i in range(len(self.bindings)):
            at = [None if s is None else s[i] for s in shapes]
            results.append(kernel.shape(attrs, *at))
            if len(results[-1]) != len(outs):
                self.fail(f"{len(results[-1])} results written to {len(outs)} buffers")
            work.append(kernel.workspace(attrs, *at) * WORKSPACE_ITEM_BYTES)
        for o, b in enumerate(outs):
            self.define(b, tuple(tuple(r[o]) for r in results), dtype)
        return work

    # -- state ------------------------------------------------------------------------------
    def define(self, b: int, shapes: Shapes, dtype: str) -> None:
        if b in self.defined:
            self.fail(f"ub[{b}] is written twice")
        for i, (shape, declared) in enumerate(zip(shapes, self.declared(b))):
            fits = shape == declared or (
                len(shape) == len(declared)
                and all(
                    d == want if want is not None else 1 <= d <= MAX_DIM
                    for d, want in zip(shape, declared)
                )
            )
            if not fits or dtype != self.file.buffers[b].dtype:
                self.fail(
                    f"ub[{b}] gets {dtype} {shape}, declared {self.file.buffers[b].dtype} "
                    f"{tuple('?' if d is None else d for d in declared)} (at {self.symbols(i)})"
                )
        self.defined[b] = (shapes, dtype)
        self.nbytes[b] = [_nbytes(shape, dtype) for shape in shapes]

    def declared(self, b: int) -> list[tuple[int | None, ...]]:
        """The buffer's shape at each binding; None for a derived dimension (any size)."""
        if b >= len(self.file.buffers):
            self.fail(f"buffer {b} is past the table of {len(self.file.buffers)}")
        record = self.file.buffers[b]
        return [
            tuple(
                d
                if code == STATIC or (code == DERIVED and exact)
                else None
                if code == DERIVED
                else binding[code - 1]
                for d, code in zip(record.shape, record.dims)
            )
            for binding, exact in zip(self.bindings, self.exact)
        ]

    def symbols(self, i: int) -> str:
        """The symbols' values at binding `i`, as `N=2, T=7`."""
        return ", ".join(f"{n}={v}" for n, v in zip(self.file.symbols, self.bindings[i]))

    def use(self, b: int) -> tuple[Shapes, str]:
        if b not in self.defined:
            self.fail(f"reads ub[{b}] before any instruction writes it")
        return self.defined[b]

    def tensor(self, t: int) -> tuple[Shapes, str]:
        if t >= len(self.file.tensors):
            self.fail(f"tensor {t} is past the table of {len(self.file.tensors)}")
        record = self.file.tensors[t]
        return (tuple(record.shape),) * len(self.bindings), record.dtype

    def operand(self, o: isa.Operand):
        if o.memory == "UB":
            return self.use(o.index)
        if o.memory == "WEIGHTS":
            return self.tensor(o.index)
        if o.memory == "NONE":
            return None
        self.fail(f"operand memory {o.memory!r} unknown")

    def fail(self, message: str):
        instr = self.file.program[self.k]
        raise _Violation(f"instruction #{self.k} ({_name(instr)}): {message}")


# -- attributes -----------------------------------------------------------------------------
def function_kernel(instr: isa.Instruction) -> Kernel | None:
    """The kernel an instruction's function or matrix op runs (None for pure data moves)."""
    if isinstance(instr, isa.MatrixMultiply | isa.Convolve):
        return _matrix_kernel(instr)
    if isinstance(instr, isa.Activate | isa.Vector):
        return kernel_at(instr.function)
    return None


@functools.cache
def _required_inputs(kernel: Kernel) -> int:
    """How many leading inputs `kernel.fn` requires (positional, without a default)."""
    params = list(inspect.signature(kernel.fn).parameters.values())[1:]  # after attrs
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional and p.default is p.empty for p in params)


def _matrix_kernel(instr: isa.Instruction) -> Kernel:
    return get_kernel("Dense" if isinstance(instr, isa.MatrixMultiply) else "Conv")


def _typed_attrs(file: BundleFile, k: int, instr: isa.Instruction, source: str, typed) -> object:
    """Instruction k's attributes, checked by its op record; `typed` memoizes them by (op,
    attribute record)."""
    index = getattr(instr, "attrs", 0)
    if index >= len(file.attrs):
        where = f"{source}: section PROGRAM: instruction #{k} ({_name(instr)})"
        raise BundleFormatError(f"{where}: attribute record #{index} does not exist")
    kernel = function_kernel(instr)
    if kernel is None:
        return NoAttrs()
    if (kernel.op, index) not in typed:
        try:
            typed[kernel.op, index] = kernel.typed_attrs(file.attrs[index])
        except (ValueError, TypeError) as e:
            where = f"{source}: section PROGRAM: instruction #{k} ({_name(instr)})"
            raise BundleFormatError(f"{where}: attribute record #{index}: {e}") from None
    return typed[kernel.op, index]


# -- tables ---------------------------------------------------------------------------------
def _tensor_problem(t: TensorRecord, data: bytes, limits: Limits) -> str | None:
    """What is wrong with a tensor record's declarations, or None."""
    if t.dtype not in DTYPES or t.values not in VALUE_CODINGS:
        return f"unknown dtype {t.dtype!r} or value coding {t.values!r}"
    if t.positions not in POSITION_CODINGS:
        return f"unknown position coding {t.positions!r}"
    if problem := _dims_problem(t.shape):
        return problem
    size = math.prod(t.shape)
    blobs = {}
    for role, coding, offset, length in t.blobs:
        if role not in BLOB_ROLES or coding not in ("raw", "huffman") or role in blobs:
            return f"blob {role!r} ({coding!r}) unknown or repeated"
        blobs[role] = (coding, data[offset : offset + length])
    bits = {"raw": 8 * _ITEM_BYTES[t.dtype], "int8": 8}.get(t.values, t.value_bits)
    widest = {"codebook": 16, "raw": 64}.get(t.values, 32)
    if t.value_bits != bits or not 1 <= bits <= widest:
        return f"{t.value_bits}-bit values cannot hold {t.values} {t.dtype}"
    if t.values == "zigzag" and t.dtype not in (I8, I32, "int64"):
        return "zigzag values decode to integers only"
    if t.dtype == "bool" and t.values != "raw":
        return "bool values are stored raw"
    if not 0 <= t.channel_axis < max(len(t.shape), 1):
        return f"channel axis {t.channel_axis} outside rank {len(t.shape)}"
    if (t.values == "codebook") != ("CODEBOOK" in blobs) or "VALUES" not in blobs:
        return "VALUES (and CODEBOOK exactly for codebook values) must be present"
    if (t.positions == "dense") == ("POSITIONS" in blobs):
        return "POSITIONS must be present exactly for sparse positions"
    if t.positions == "dense" and t.entries != size:
        return f"{t.entries} dense entries for {size} elements"
    if t.entries > size:
        return f"{t.entries} entries for {size} elements"
    problem = _stream_problem("VALUES", *blobs["VALUES"], t.value_bits, t.entries, limits)
    if problem or t.positions == "dense":
        return problem
    if t.positions == "bitmask":
        coding, payload = blobs["POSITIONS"]
        if coding != "raw" or len(payload) != -(-size // 8):
            return f"bitmask of {len(payload)} B ({coding}) for {size} positions"
        return None
    if not 3 <= t.index_bits <= 8:
        return f"CSR index bits {t.index_bits} outside 3..8"
    return _stream_problem("POSITIONS", *blobs["POSITIONS"], t.index_bits, t.entries, limits)


def _stream_problem(role, coding, payload, bits, count, limits: Limits) -> str | None:
    """A symbol stream must hold exactly `count` symbols of `bits` bits, within the limit."""
    if coding == "raw":
        need = count * bits // 8 if bits in (8, 16, 32, 64) else -(-count * bits // 8)
        if len(payload) != need:
            return f"{role}: {len(payload)} B for {count} {bits}-bit symbols"
        return None
    if bits > SYMBOL_BITS:
        return f"{role}: a Huffman stream of {bits}-bit symbols (at most {SYMBOL_BITS})"
    if count > min(limits.huffman_symbols, 8 * len(payload)):  # a code has 1 bit or more
        return f"{role}: {count} symbols cannot be Huffman-coded in {len(payload)} B"
    return None


def _buffer_problem(b: BufferRecord, symbols: int) -> str | None:
    if b.dtype not in DTYPES:
        return f"unknown dtype {b.dtype!r}"
    valid = {STATIC, DERIVED, *range(1, symbols + 1)}
    if len(b.dims) != len(b.shape) or not valid.issuperset(b.dims):
        return f"dims {b.dims} do not fit shape {b.shape} and {symbols} symbol(s)"
    if b.dtype == I8 and not (b.scale is not None and 0 < b.scale < math.inf):
        return f"int8 scale {b.scale} is not finite and positive"
    return _dims_problem(b.shape)


def _dims_problem(shape: tuple[int, ...]) -> str | None:
    if any(not 1 <= d <= MAX_DIM for d in shape) or len(shape) > 8:
        return f"shape {shape}: rank above 8 or a dimension outside 1..{MAX_DIM}"
    return None


def _check(problem: str | None, source: str, section: str, what: str) -> None:
    if problem:
        raise BundleFormatError(f"{source}: section {section}: {what}: {problem}")


def _resident_weight_bytes(file: BundleFile) -> int:
    """The weights' bytes while the bundle runs: every tensor decoded, plus the most the
    matrix engines derive once from a weight they read (kernels.constants.derived): a Conv
    filter's matrix, an int8 weight's float32 copy (SGEMM's operand; for a Conv, its matrix
    too) and an int8 Dense weight's live-row mask (runtime/sparse.py); and each float
    ACTIVATE's bias written out over an image (runtime/activate.py, `spread_bias`)."""
    total = sum(_nbytes(t.shape, t.dtype) for t in file.tensors)
    fifo: deque[int] = deque()
    derived: dict[tuple[int, str], int] = {}
    for instr in file.program:
        if isinstance(instr, isa.Activate) and instr.requant == isa.NO_TENSOR:
            if instr.bias < len(file.tensors):
                t = file.tensors[instr.bias]
                total += SPREAD_RATIO * _nbytes(t.shape, t.dtype)
        elif isinstance(instr, isa.ReadWeights):
            fifo.append(instr.tensor)
        elif isinstance(instr, isa.MatrixMultiply | isa.Convolve) and fifo:
            k = fifo.popleft()
            if k >= len(file.tensors):
                continue
            t, conv = file.tensors[k], isinstance(instr, isa.Convolve)
            wide = 4 * math.prod(t.shape) if t.dtype == "int8" else 0  # the float32 copy
            forms = {
                "float32": wide,
                "matrix": wide + _nbytes(t.shape, t.dtype) if conv else 0,
                "rows": t.shape[0] if wide and not conv and t.shape else 0,
            }
            for kind, size in forms.items():
                derived[k, kind] = max(derived.get((k, kind), 0), size)
    return total + sum(derived.values())


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return math.prod(shape) * _ITEM_BYTES[dtype]


_ITEM_BYTES = {name: np.dtype(name).itemsize for name in DTYPES}


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    """numpy's broadcast of two shapes, or None (np.broadcast_shapes costs ~10x this)."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    if any(x != y and 1 not in (x, y) for x, y in zip(a, b)):
        return None
    return tuple(y if x == 1 else x for x, y in zip(a, b))


def function_name(code: int) -> str:
    """The op name of a function code, for messages and disassembly."""
    kernel = kernel_at(code)
    return "NONE" if code == isa.NONE else kernel.op if kernel else f"<unknown function {code}>"


def _name(instr: isa.Instruction) -> str:
    code = getattr(instr, "function", None)
    return instr.opcode if code is None else f"{instr.opcode} {function_name(code)}"
