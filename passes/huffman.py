"""Huffman coding of the weights' symbol streams (Han et al., ICLR 2016, section 4).

    stream -> canonical length-limited Huffman code, stored as code lengths only

Marks every weight tensor; the encoder codes each symbol stream (values, relative indices)
with Huffman only where that is smaller than its raw bits.
"""

from __future__ import annotations

import dataclasses

from dlcc.ir import Graph
from dlcc.passes.manager import (
    Pass,
    PassContext,
    PassOptions,
    register_pass,
    weight_layers,
)


@register_pass
class Huffman(Pass):
    name = "huffman"
    summary = "canonical Huffman coding of the symbol streams, where smaller than raw bits"

    def run(self, graph: Graph, options: PassOptions, ctx: PassContext) -> dict:
        layers = []
        for node in weight_layers(graph):
            w = node.inputs[1]
            encoding = dataclasses.replace(w.encoding, huffman=True)
            graph.replace_weight(node, 1, w.data, encoding)
            layers.append({"layer": node.name, "encoding": str(encoding)})
        return {"layers": layers}
