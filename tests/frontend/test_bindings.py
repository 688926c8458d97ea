"""Per-binding columns (dlcc.frontend.bindings): static entries, and the value that holds a
symbolic dimension."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from dlcc.errors import FrontendError
from dlcc.frontend.bindings import bindings, columns, constant_columns, held, is_static
from dlcc.frontend.lowering import Builder
from dlcc.ir import Graph


def _graph():
    graph = Graph()
    x = graph.add_input("x", (1, 3, 64), batch_axis=0, symbols={2: "L"})
    y = graph.add_input("y", (1, 5), batch_axis=0)
    b = Builder(graph, helper.make_node("Reshape", ["x", "s"], ["z"], name="r"), {})
    return graph, x, y, b


def test_columns_list_each_axis_at_every_binding():
    graph, x, y, _ = _graph()
    probes = bindings(graph)
    assert probes == [None, 0, 1]  # the reference, then N doubled, then L doubled
    assert columns(x, probes) == [(1, 2, 1), (3, 3, 3), (64, 64, 128)]
    assert [is_static(c) for c in columns(y, probes)] == [False, True]


def test_constant_columns_read_a_folded_shape_entry_by_entry():
    data = np.array([1, 3, 64], np.int64)
    moved = [np.array([2, 3, 64], np.int64), np.array([1, 3, 128], np.int64)]
    assert constant_columns(data, moved) == [(1, 2, 1), (3, 3, 3), (64, 64, 128)]


def test_held_finds_the_axis_of_each_wanted_column():
    graph, x, y, b = _graph()
    like, axes = held(b, y, [None, (64, 64, 128), (1, 2, 1)], bindings(graph))
    assert like is x  # y holds the batch but not L: the first value holding both
    assert axes == (-1, 2, 0)
    assert held(b, y, [None, None], bindings(graph)) == (None, (-1, -1))


def test_held_refuses_a_dimension_no_value_has():
    graph, x, _, b = _graph()
    with pytest.raises(FrontendError, match="no computed value holds"):
        held(b, x, [(7, 7, 14)], bindings(graph))


def test_symbolic_slice_ends_shorter_than_its_axes_is_one_error(tmp_path):
    """ends computed from a symbolic shape, one entry for two axes: an error naming the node
    (it was an IndexError deep in the converter)."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from dlcc.frontend import import_onnx

    ints = {"zero": [0], "one": [1], "st": [0, 0], "ax": [0, 1]}
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Slice", ["s", "zero", "one"], ["e"]),
        helper.make_node("Slice", ["x", "st", "e", "ax"], ["y"], name="cut"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])],
        [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()],
    )
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(FrontendError, match="'cut'.*differ in length"):
        import_onnx(path)
