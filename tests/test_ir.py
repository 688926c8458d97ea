"""The IR: batch-axis inference, consistent use lists, guarded mutation, readable text."""

from __future__ import annotations

import numpy as np
import pytest

from dlcc.errors import DlccError
from dlcc.ir import Graph
from dlcc.runtime.kernels.tensor import ReshapeAttrs, TransposeAttrs


def small_graph():
    g = Graph("g")
    x = g.add_input("x", (1, 3, 4), batch_axis=0)
    w = g.constant("w", np.ones((4, 5), np.float32))
    h = g.add("Dense", [x, w, None], name="fc").outputs[0]
    y = g.add("Relu", [h], name="act").outputs[0]
    g.outputs.append(y)
    return g, x, w, h, y


def test_shapes_and_batch_axis_follow_the_ops():
    g, x, w, h, y = small_graph()
    assert (h.shape, h.batch_axis) == ((1, 3, 5), 0)
    t = g.add("Transpose", [h], TransposeAttrs((2, 0, 1))).outputs[0]
    assert (t.shape, t.batch_axis, t.dims()) == ((5, 1, 3), 1, "5×N×3")
    with pytest.raises(DlccError, match="mixes the batch dimension"):
        g.add("Reshape", [h], ReshapeAttrs((-1,)))


def test_uses_and_guarded_removal():
    g, x, w, h, y = small_graph()
    relu = y.producer
    assert h.uses == [(relu, 0)] and w.uses == [(h.producer, 1)]
    with pytest.raises(DlccError, match="still used"):
        g.remove(h.producer)
    g.replace_all_uses(y, h)
    assert g.outputs == [h]
    g.remove(relu)
    assert h.uses == [] and [n.name for n in g.nodes] == ["fc"]
    g.verify()


def test_verify_catches_use_before_definition():
    g, x, w, h, y = small_graph()
    g.nodes.reverse()
    with pytest.raises(DlccError, match="before definition"):
        g.verify()


def test_text_form_is_readable():
    g, *_ = small_graph()
    assert str(g).splitlines()[1].strip() == "%fc: N×3×5 = Dense(%x, %w, _)  # fc"
