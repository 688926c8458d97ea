"""Instruction encodings: every instruction round-trips; the matrix word is the TPU's 12 bytes."""

from __future__ import annotations

import pytest

from dlcc.formats import isa

EXAMPLES = [
    isa.ReadHost(0, 3),
    isa.ReadWeights(65534),
    isa.MatrixMultiply(1, 2, 0, True, 300, 7),
    isa.Convolve(4, 5, 9),
    isa.Activate(5, 6, 2, "Relu", 0),
    isa.Activate(5, 6),
    isa.Vector("Concat", (isa.Operand("UB", 1), isa.Operand("WEIGHTS", 2)), (7,), 3),
    isa.Vector("LSTM", (isa.Operand("UB", 1), isa.Operand("NONE")), (7, 8, 9), 3),
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


def test_every_vector_function_has_a_kernel():
    from dlcc.runtime.kernels import load_all

    assert set(isa.FUNCTIONS) - {"NONE"} <= set(load_all())
