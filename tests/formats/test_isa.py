"""Instruction encodings: every instruction round-trips; the matrix word is the TPU's 12 bytes."""

from __future__ import annotations

import pytest

from dlcc.formats import isa

EXAMPLES = [
    isa.ReadHost(0, 3),
    isa.ReadWeights(65534),
    isa.MatrixMultiply(1, 2, 0, True, 300, 7),
    isa.Convolve(4, 5, 9),
    isa.Activate(5, 6, 2, 1, 0),
    isa.Activate(5, 6),
    isa.Vector(15, (isa.Operand("UB", 1), isa.Operand("WEIGHTS", 2)), (7,), 3),
    isa.Vector(21, (isa.Operand("UB", 1), isa.Operand("NONE")), (7, 8, 9), 3),
    isa.WriteHost(6, 0),
    isa.Halt(),
]


@pytest.mark.parametrize("instr", EXAMPLES, ids=lambda i: i.opcode)
def test_round_trip(instr):
    encoded = isa.INSTRUCTION.build(isa.to_container(instr))
    assert isa.from_container(isa.INSTRUCTION.parse(encoded)) == instr
    assert isa.disassemble(instr).startswith(instr.opcode)


def test_matrix_words_are_twelve_bytes():
    for instr in (isa.MatrixMultiply(1, 2), isa.Convolve(1, 2, 3, False, 2, 2)):
        assert len(isa.INSTRUCTION.build(isa.to_container(instr))) == 12 == isa.MATRIX_WORD_BYTES


def test_function_codes_are_stable():
    """Codes are the bundle's format: an op keeps its code for ever (these are version 1's)."""
    from dlcc.runtime.kernels import code_of

    first = ("Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Softmax", "MaxPool", "AveragePool")
    assert [code_of(op) for op in first] == list(range(1, 9))
    assert (code_of("Concat"), code_of("LSTM"), code_of("Lut")) == (15, 21, 26)
