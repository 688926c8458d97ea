"""The IR: symbolic-shape inference, consistent use lists, guarded mutation, readable text."""

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
    folded = g.add("Reshape", [h], ReshapeAttrs((-1,))).outputs[0]  # N*3*5: derived
    assert (folded.dims(), folded.batch_axis, folded.probes) == ("?", None, ((30,),))


def test_symbols_beyond_the_batch_are_probed_one_at_a_time():
    g = Graph("g")
    x = g.add_input("x", (1, 3, 8, 64), batch_axis=0, symbols={3: "W"})
    ids = g.add_input("ids", (64,), None, "int64", symbols={0: "W"})
    assert g.symbols == [("N", 1), ("W", 64)]
    assert x.probes == ((2, 3, 8, 64), (1, 3, 8, 128)) and ids.probes == ((64,), (128,))
    w = g.constant("w", np.ones((4, 3, 3, 3), np.float32))
    (y,) = g.add("Conv", [x, w, None], name="conv").outputs  # 'valid' 3x3: W - 2
    assert y.dims() == "N×4×6×?" and y.probes == ((2, 4, 6, 62), (1, 4, 6, 126))
    pooled = g.add("GlobalAveragePool", [y]).outputs[0]
    assert pooled.dims() == "N×4×1×1" and pooled.batch_axis == 0
    with pytest.raises(DlccError, match="symbol 'W' is 32 here, 64 elsewhere"):
        g.add_input("z", (32,), None, symbols={0: "W"})


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
