"""The bundle container: round trips, determinism, and a reader that trusts nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save

import dlcc
from dlcc.errors import BundleFormatError
from dlcc.formats.bundle import BundleFile
from dlcc.formats.schema import ALIGN


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> bytes:
    """A small MLP bundle (~1 KB), so every byte of it can be corrupted in turn."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"]),
        helper.make_node("Relu", ["h"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        [w, b],
    )
    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return dlcc.compile(str(path)).to_bytes()


def test_round_trip_and_determinism(tiny_bundle, sample_bundles):
    parsed = BundleFile.from_bytes(tiny_bundle)
    assert parsed.to_bytes() == tiny_bundle
    assert (
        open(sample_bundles["lenet5"], "rb").read()
        == dlcc.compile("samples/lenet5.onnx").to_bytes()
    )


def test_data_is_read_as_a_view_of_the_file(tiny_bundle):
    """The reader copies no payload: DATA (the weights) is a view of the bytes read, and an
    -O0 weight decodes to a view of it in turn."""
    parsed = BundleFile.from_bytes(tiny_bundle)
    assert isinstance(parsed.data, memoryview) and parsed.data.obj is tiny_bundle
    loaded = dlcc.load_bytes(tiny_bundle)
    data = np.frombuffer(loaded.file.data, np.uint8)
    assert any(np.shares_memory(w, data) for w in loaded.weights if w.size > 1)


def test_codegen_data_stays_in_chunks_viewing_the_weights():
    """Codegen joins nothing: an -O0 weight's payload is a view of the graph's array; the
    pieces a file is written from are the bundle's bytes."""
    from dlcc.codegen import generate
    from dlcc.frontend import import_onnx

    graph = import_onnx("samples/lenet5.onnx")
    bundle = generate(graph)
    weights = [v.data for v in graph.constants() if v.data.size > 1000]
    chunks = [np.frombuffer(c, np.uint8) for c in bundle.data if len(c)]
    assert weights and all(any(np.shares_memory(w, c) for c in chunks) for w in weights)
    joined = dataclasses.replace(bundle, data=b"".join(bundle.data))
    assert b"".join(bundle.pieces()) == bundle.to_bytes() == joined.to_bytes()


def test_sections_are_aligned(tiny_bundle):
    from dlcc.formats.schema import HEADER

    for entry in HEADER.parse(tiny_bundle).body.value.sections:
        assert entry.offset % ALIGN == 0


def test_every_flipped_byte_is_detected(tiny_bundle):
    for offset in range(len(tiny_bundle)):
        data = bytearray(tiny_bundle)
        data[offset] ^= 0x01
        with pytest.raises(BundleFormatError):
            BundleFile.from_bytes(bytes(data))


def test_every_truncation_is_detected(tiny_bundle):
    for length in range(len(tiny_bundle)):
        with pytest.raises(BundleFormatError):
            BundleFile.from_bytes(tiny_bundle[:length])


def test_appended_garbage_is_detected(tiny_bundle):
    with pytest.raises(BundleFormatError, match="unexpected bytes"):
        BundleFile.from_bytes(tiny_bundle + b"\x00" * ALIGN)
