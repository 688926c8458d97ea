"""Huffman coding of the weights' symbol streams (Han et al., ICLR 2016, section 4).

    stream -> canonical length-limited Huffman codes, stored as code lengths only

Marks every weight tensor; the encoder codes each symbol stream of up to 8-bit symbols
(values, relative indices) with Huffman only where that is smaller than its raw bits, as
Huffman-only DEFLATE blocks (formats/huffman.py: a code per ~32 K symbols).
"""

from __future__ import annotations

import dataclasses

from dlcc.ir import Graph
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    register_pass,
    weights,
)


@register_pass
class Huffman(Pass):
    name = "huffman"
    summary = "canonical Huffman coding of the symbol streams, where smaller than raw bits"

    def run(self, graph: Graph, options: PassOptions, ctx: PassContext) -> dict:
        layers = []
        for weight in weights(graph):
            w = weight.value
            encoding = dataclasses.replace(w.encoding, huffman=True)
            graph.replace_weight(weight.node, weight.index, w.data, encoding)
            layers.append({"layer": weight.label, "encoding": str(encoding)})
        return {"layers": layers}
