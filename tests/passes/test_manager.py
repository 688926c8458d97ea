"""Pipelines: text round trips, presets, typed and checked options, per-layer overrides."""

from __future__ import annotations

import numpy as np
import pytest

from dlcc.errors import PipelineError
from dlcc.ir import Graph
from dlcc.passes.manager import PRESETS, LayerOverrides, parse_pipeline, registered_passes

ALL_PASSES = ("prune", "kmeans", "quantize", "huffman")


def test_registry_holds_every_pass():
    assert set(ALL_PASSES) <= set(registered_passes())


@pytest.mark.parametrize(
    "text",
    ["prune(sparsity=0.92),kmeans(bits=5),quantize,huffman", "prune(layers=fc1:0.95;Conv:0.5)", ""],
)
def test_text_round_trip(text):
    assert str(parse_pipeline(text)) == text
    assert parse_pipeline(str(parse_pipeline(text))) == parse_pipeline(text)


@pytest.mark.parametrize("level", sorted(PRESETS))
def test_presets_resolve_to_every_option(level):
    resolved = parse_pipeline(f"-{level}").resolved()
    assert parse_pipeline(str(resolved)).resolved() == resolved
    for step in resolved.steps:
        assert "layers" in dict(step.options)


@pytest.mark.parametrize(
    "text,message",
    [
        ("prune(sparsity=1.5)", "out of range"),
        ("prune(sparsity=lots)", "expected float"),
        ("prune(density=0.5)", "has no option 'density'"),
        ("kmeans(init=random)", "choose one of"),
        ("shrink", "unknown pass 'shrink'"),
        ("prune(sparsity)", "key=value"),
        ("prune(layers=fc1)", "NAME:VALUE"),
        ("prune((", "cannot parse"),
    ],
)
def test_bad_pipelines_are_clear_errors(text, message):
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text)


def test_layer_selectors():
    g = Graph()
    x = g.add_input("x", (1, 1, 8, 8), 0)
    nodes = []
    for name, shape in (("/conv1/Conv", (2, 1, 3, 3)), ("/conv2/Conv", (2, 2, 3, 3))):
        w = g.constant(name + ".w", np.zeros(shape, np.float32))
        nodes.append(
            g.add(
                "Conv",
                [x if not nodes else nodes[-1].outputs[0], w, None],
                _conv_attrs(),
                name=name,
            )
        )
    overrides = LayerOverrides((("Conv#-1", "a"), ("conv1", "b"), ("#*", "c")))
    assert [overrides.lookup(n, nodes) for n in nodes] == ["b", "a"]
    assert LayerOverrides((("*2*", "z"),)).lookup(nodes[1], nodes) == "z"
    assert LayerOverrides((("Dense", "z"),)).lookup(nodes[1], nodes) is None


def _conv_attrs():
    from dlcc.runtime.kernels.matrix import ConvAttrs

    return ConvAttrs((1, 1), (1, 1, 1, 1), (1, 1), 1)
