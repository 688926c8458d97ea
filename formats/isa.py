"""The instruction set: TPU v1 style CISC instructions over named on-chip memories.

Memories: the host (model inputs and outputs), weight DRAM (the bundle's tensors), the weight
FIFO, the unified buffer (UB: activations) and the accumulators (ACC: matrix-unit results).
An address in UB or ACC is a buffer id of the program's buffer table; a buffer holds one whole
tensor (batch included), and the matrix instructions carry their fold counts so that a target
may tile them on an R x C array without changing the stream.

Each instruction is a typed dataclass here and a Construct struct in `INSTRUCTION`; the
dataclass docstring is the instruction's semantics in pseudo-code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

from construct import (
    Const,
    Enum,
    Flag,
    Int8ul,
    Int16ul,
    PrefixedArray,
    Struct,
    Switch,
    this,
)

# The vector unit's functions are numbered by the op records that define them (their stable
# `code` in dlcc.runtime.kernels); 0 is NONE, the identity (an Activate that only adds the bias).
NONE = 0
Memory = Enum(Int8ul, NONE=0, UB=1, WEIGHTS=2)
NO_TENSOR = 0xFFFF


@dataclasses.dataclass(frozen=True)
class Operand:
    """A vector-unit source: a UB buffer, a weight tensor, or NONE (absent optional input)."""

    memory: str
    index: int = 0

    def __str__(self) -> str:
        return {"UB": f"ub[{self.index}]", "WEIGHTS": f"w[{self.index}]"}.get(self.memory, "_")


@dataclasses.dataclass(frozen=True)
class ReadHost:
    """ub[dst] <- host input #input (the whole batch)."""

    opcode: ClassVar[str] = "READ_HOST"
    input: int
    dst: int


@dataclasses.dataclass(frozen=True)
class ReadWeights:
    """weight_fifo.push(decode(w[tensor])): the next matrix instruction's weights."""

    opcode: ClassVar[str] = "READ_WEIGHTS"
    tensor: int


@dataclasses.dataclass(frozen=True)
class _MatrixWord:
    """The fields of the 12-byte matrix instructions."""

    src: int
    dst: int
    attrs: int = 0
    accumulate: bool = False
    folds_k: int = 1
    folds_n: int = 1


@dataclasses.dataclass(frozen=True)
class MatrixMultiply(_MatrixWord):
    """acc[dst] (+)= ub[src] @ weight_fifo.pop()   (+= when accumulate, folds_k x folds_n tiles)."""

    opcode: ClassVar[str] = "MATRIX_MULTIPLY"


@dataclasses.dataclass(frozen=True)
class Convolve(_MatrixWord):
    """acc[dst] (+)= conv2d(ub[src], weight_fifo.pop(), attrs)   (lowered to a matmul by im2col)."""

    opcode: ClassVar[str] = "CONVOLVE"


@dataclasses.dataclass(frozen=True)
class Activate:
    """The Activate unit, accumulators -> unified buffer (bias broadcast over channels).

    float:  ub[dst] <- function[attrs](acc[src] + w[bias])
    int8:   ub[dst] <- w[lut][requantize(acc[src] + w[bias], w[requant])]
            (int32 bias; w[requant] = [multipliers, shifts]; the table holds `function`;
            without a table, `function` is applied to the int8 result: Relu only)
    int8 in, float32 out (w[requant] holds float32 scales, one per channel or layer):
            ub[dst] <- function[attrs]((acc[src] + w[bias]) * w[requant])
    """

    opcode: ClassVar[str] = "ACTIVATE"
    src: int
    dst: int
    bias: int = NO_TENSOR
    function: int = NONE
    attrs: int = 0
    requant: int = NO_TENSOR
    lut: int = NO_TENSOR


@dataclasses.dataclass(frozen=True)
class Vector:
    """ub[outputs...] <- function[attrs](inputs...)   (pooling, elementwise, data movement)."""

    opcode: ClassVar[str] = "VECTOR"
    function: int
    inputs: tuple[Operand, ...]
    outputs: tuple[int, ...]
    attrs: int = 0


@dataclasses.dataclass(frozen=True)
class WriteHost:
    """host output #output <- ub[src]."""

    opcode: ClassVar[str] = "WRITE_HOST"
    src: int
    output: int


@dataclasses.dataclass(frozen=True)
class Halt:
    """Stop; the host reads its outputs."""

    opcode: ClassVar[str] = "HALT"


Instruction = (
    ReadHost | ReadWeights | MatrixMultiply | Convolve | Activate | Vector | WriteHost | Halt
)
_CLASSES = (ReadHost, ReadWeights, MatrixMultiply, Convolve, Activate, Vector, WriteHost, Halt)
Opcode = Enum(Int8ul, **{cls.opcode: i + 1 for i, cls in enumerate(_CLASSES)})

# -- encodings (the 12-byte matrix word is the TPU's) --------------------------------------
_Matrix = Struct(
    "src" / Int16ul,  # UB buffer holding the left operand
    "dst" / Int16ul,  # ACC buffer receiving the product
    "attrs" / Int16ul,  # attribute record (Convolve: strides, pads, dilations, group)
    "accumulate" / Flag,  # add into acc[dst] instead of overwriting it
    "folds_k" / Int16ul,  # tiles along the reduction axis K
    "folds_n" / Int16ul,  # tiles along the output axis N
)
_OPERAND = Struct("memory" / Memory, "index" / Int16ul)
_BODIES = {
    "READ_HOST": Struct("input" / Int8ul, "dst" / Int16ul),
    "READ_WEIGHTS": Struct("tensor" / Int16ul),
    "MATRIX_MULTIPLY": _Matrix,
    "CONVOLVE": _Matrix,
    "ACTIVATE": Struct(
        "src" / Int16ul,
        "dst" / Int16ul,
        "bias" / Int16ul,  # weight tensor id, 0xFFFF for none
        "function" / Int8ul,  # an op record's code, 0: NONE
        "attrs" / Int16ul,
        "requant" / Int16ul,  # int8: tensor of per-channel multipliers and shifts, or 0xFFFF
        "lut" / Int16ul,  # int8: 256-entry activation table, or 0xFFFF
    ),
    "VECTOR": Struct(
        "function" / Int8ul,  # an op record's code
        "attrs" / Int16ul,
        "inputs" / PrefixedArray(Int8ul, _OPERAND),
        "outputs" / PrefixedArray(Int8ul, Int16ul),
    ),
    "WRITE_HOST": Struct("src" / Int16ul, "output" / Int8ul),
    "HALT": Struct(),
}
INSTRUCTION = Struct("opcode" / Opcode, "body" / Switch(this.opcode, _BODIES))
PROGRAM = Struct(
    "version" / Const(1, Int8ul),
    "instructions" / PrefixedArray(Int16ul, INSTRUCTION),
)
MATRIX_WORD_BYTES = 1 + _Matrix.sizeof()  # opcode + body: 12, as the TPU's


def reads(instr: Instruction) -> list[int]:
    """The UB/ACC buffers an instruction reads."""
    if isinstance(instr, Vector):
        return [o.index for o in instr.inputs if o.memory == "UB"]
    return [instr.src] if hasattr(instr, "src") else []


def writes(instr: Instruction) -> list[int]:
    """The UB/ACC buffers an instruction writes."""
    if isinstance(instr, Vector):
        return list(instr.outputs)
    return [instr.dst] if hasattr(instr, "dst") else []


def last_reads(program: list[Instruction]) -> dict[int, list[int]]:
    """By instruction index, the UB/ACC buffers whose last read happens there (the buffers
    free after it)."""
    last: dict[int, int] = {}
    for k, instr in enumerate(program):
        for b in reads(instr):
            last[b] = k
    by_step: dict[int, list[int]] = {}
    for b, k in last.items():
        by_step.setdefault(k, []).append(b)
    return by_step


def to_container(instr: Instruction) -> dict:
    """The Construct-buildable form of a typed instruction."""
    body = dataclasses.asdict(instr)
    if isinstance(instr, Vector):
        body["inputs"] = [dataclasses.asdict(o) for o in instr.inputs]
        body["outputs"] = list(instr.outputs)
    return {"opcode": instr.opcode, "body": body}


def from_container(c) -> Instruction:
    """The typed instruction of a parsed Construct container (ValueError: unknown opcode)."""
    cls = next((k for k in _CLASSES if k.opcode == str(c.opcode)), None)
    if cls is None:
        raise ValueError(f"unknown opcode {int(c.opcode)}")
    fields = {}
    for f in dataclasses.fields(cls):
        v = c.body[f.name]
        if f.name == "inputs":
            v = tuple(Operand(str(o.memory), o.index) for o in v)
        elif f.name == "outputs":
            v = tuple(v)
        fields[f.name] = v
    return cls(**fields)


def disassemble(instr: Instruction, name: Callable[[int], str] = lambda code: f"f{code}") -> str:
    """One line of assembly, e.g. `MATRIX_MULTIPLY acc[3] <- ub[2] @ fifo  attrs=#1`.

    `name` spells a function code (the runtime's op records know the names).
    """
    i = instr
    if isinstance(i, ReadHost):
        return f"READ_HOST        ub[{i.dst}] <- host.in[{i.input}]"
    if isinstance(i, ReadWeights):
        return f"READ_WEIGHTS     fifo <- w[{i.tensor}]"
    if isinstance(i, MatrixMultiply | Convolve):
        op = "@" if isinstance(i, MatrixMultiply) else "*"
        acc = "+=" if i.accumulate else "<-"
        folds = f"  folds={i.folds_k}x{i.folds_n}" if (i.folds_k, i.folds_n) != (1, 1) else ""
        attrs = f"  attrs=#{i.attrs}" if i.attrs else ""
        return f"{i.opcode:<16} acc[{i.dst}] {acc} ub[{i.src}] {op} fifo{attrs}{folds}"
    if isinstance(i, Activate):
        fn = "NONE" if i.function == NONE else name(i.function)
        bias = "" if i.bias == NO_TENSOR else f" + w[{i.bias}]"
        attrs = f"  attrs=#{i.attrs}" if i.attrs else ""
        inner = f"acc[{i.src}]{bias}"
        if i.requant != NO_TENSOR:
            inner = f"requantize({inner}, w[{i.requant}])"
        if i.lut != NO_TENSOR:
            return f"ACTIVATE         ub[{i.dst}] <- w[{i.lut}][{inner}]  ({fn}){attrs}"
        return f"ACTIVATE         ub[{i.dst}] <- {fn}({inner}){attrs}"
    if isinstance(i, Vector):
        outs = ", ".join(f"ub[{o}]" for o in i.outputs)
        ins = ", ".join(str(o) for o in i.inputs)
        attrs = f"  attrs=#{i.attrs}" if i.attrs else ""
        return f"VECTOR           {outs} <- {name(i.function)}({ins}){attrs}"
    if isinstance(i, WriteHost):
        return f"WRITE_HOST       host.out[{i.output}] <- ub[{i.src}]"
    return "HALT"
