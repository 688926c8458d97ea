"""A weight's storage plan in the IR: passes set it, codegen encodes the tensor by it.

The byte format of each plan (bit widths, position codings, Huffman streams) is
`dlcc.formats.encodings`, which reads these fields through its `EncodingSpec` protocol.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Encoding:
    """How a weight tensor is to be stored; passes set it, codegen encodes by it."""

    sparse: bool = False  # zeros are pruned weights: store the positions of the rest
    codebook: tuple[float, ...] | None = None  # shared values, sorted; entries index into it
    int8: bool = False  # values (or the codebook) are int8 times a scale
    scales: tuple[float, ...] = ()  # int8: one per output channel, or one per tensor/codebook
    channel_axis: int = 0  # int8 per-channel scales run along this axis
    huffman: bool = False  # Huffman-code the symbol streams where that is smaller

    def __str__(self) -> str:
        parts = ["sparse"] * self.sparse
        if self.codebook is not None:
            parts.append(f"codebook{len(self.codebook)}")
        parts += ["int8"] * self.int8 + ["huffman"] * self.huffman
        return "+".join(parts) or "dense"


DENSE = Encoding()
