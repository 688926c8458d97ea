"""filters: structured Conv filter pruning is exact, picks the smallest L1 norms, skips safely."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import sample_path

import dlcc
from dlcc.codegen import generate
from dlcc.errors import PipelineError
from dlcc.frontend import import_onnx
from dlcc.ir import Graph
from dlcc.passes.filters import keep_filters
from dlcc.passes.manager import PassContext, layer_rows, parse_pipeline, run_pipeline
from dlcc.runtime.kernels.matrix import ConvAttrs
from dlcc.runtime.kernels.normalization import BatchNormAttrs, LRNAttrs
from dlcc.runtime.kernels.pooling import PoolAttrs
from dlcc.runtime.kernels.tensor import ConcatAttrs, ReshapeAttrs

RNG = np.random.default_rng(0)


def run(graph: Graph, x: np.ndarray, tmp_path) -> np.ndarray:
    path = tmp_path / f"g{len(list(tmp_path.iterdir()))}.bin"
    path.write_bytes(generate(graph).to_bytes())
    (out,) = dlcc.load(str(path)).run(x).values()
    return out


def filters(graph: Graph, options: str = "") -> list[dict]:
    log = run_pipeline(graph, parse_pipeline(f"filters({options})"), PassContext())
    return layer_rows(log[0])


def kept_rows(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Which rows of `old` survive in `new` (found by equality, independent of the rule)."""
    same = (new[:, None] == old[None]).reshape(len(new), len(old), -1).all(axis=2)
    assert np.all(same.sum(axis=1) >= 1)
    return same.argmax(axis=1)


def removed_by_rule(w: np.ndarray, fraction: float) -> np.ndarray:
    """Brute force: filter o goes iff fewer than `drop` filters rank before it by (norm, index)."""
    n = np.abs(w).reshape(len(w), -1).sum(axis=1, dtype=np.float64)
    i = np.arange(len(w))
    before = (n[None] < n[:, None]) | ((n[None] == n[:, None]) & (i[None] < i[:, None]))
    return before.sum(axis=1) < min(round(fraction * len(w)), len(w) - 1)


def lenet():
    graph = import_onnx(sample_path("lenet5.onnx"))
    weights = {n.name.split("/")[1]: n for n in graph.nodes if n.op in ("Conv", "Dense")}
    return graph, weights


def test_lenet_is_exact_against_zeroed_filters_and_follows_the_l1_rule(tmp_path):
    original, ow = lenet()
    pruned, pw = lenet()
    rows = filters(pruned, "fraction=0.25")
    assert [(r["filters_before"], r["filters_after"], r["applied"]) for r in rows] == [
        (20, 15, True),
        (50, 38, True),
    ]
    w1, w2, fc1 = (ow[k].inputs[1].data for k in ("conv1", "conv2", "fc1"))
    keep1 = kept_rows(pw["conv1"].inputs[1].data, w1)
    keep2 = kept_rows(pw["conv2"].inputs[1].data, w2[:, keep1])
    assert pw["conv2"].inputs[1].data.shape == (38, 15, 5, 5)
    assert pw["fc1"].inputs[1].data.shape == (38 * 16, 500)
    fc_rows = (keep2[:, None] * 16 + np.arange(16)).reshape(-1)
    np.testing.assert_array_equal(pw["fc1"].inputs[1].data, fc1[fc_rows])
    # The L1 rule, by brute force; conv2's norms are taken after conv1 removed its inputs.
    assert np.array_equal(np.flatnonzero(~removed_by_rule(w1, 0.25)), keep1)
    assert np.array_equal(np.flatnonzero(~removed_by_rule(w2[:, keep1], 0.25)), keep2)
    assert rows[0]["params_removed"] == 5 * 25 + 5 + 50 * 5 * 25
    # Exactness: zeroed filters (and biases) give 0 activations, maxpool keeps them 0.
    for name, keep in (("conv1", keep1), ("conv2", keep2)):
        for i in (1, 2):
            data = ow[name].inputs[i].data.copy()
            data[np.setdiff1d(np.arange(len(data)), keep)] = 0
            ow[name].inputs[i].data = data
    x = RNG.standard_normal((4, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(run(pruned, x, tmp_path), run(original, x, tmp_path), atol=1e-5)


def test_lenet_layer_override_keeps_conv2_filters():
    graph, w = lenet()
    rows = filters(graph, "fraction=0.25,layers=conv2:0")
    assert w["conv1"].outputs[0].shape == (1, 15, 24, 24)
    assert w["conv2"].inputs[1].data.shape == (50, 15, 5, 5)
    assert w["fc1"].inputs[1].data.shape == (800, 500)
    assert rows[1]["applied"] is False and "no filter" in rows[1]["reason"]


def test_ties_remove_the_lower_index_and_one_filter_always_stays():
    w = np.ones((4, 2, 3, 3), np.float32)
    assert keep_filters(w, 0.5).tolist() == [2, 3]
    assert keep_filters(w, 0.95).tolist() == [3]
    w[0] *= 2
    assert keep_filters(w, 0.5).tolist() == [0, 3]
    with pytest.raises(PipelineError, match="out of range"):
        parse_pipeline("filters(fraction=0.96)")


def conv(g: Graph, x, filters: int, name: str, pads: int = 1):
    w = RNG.standard_normal((filters, x.shape[1], 3, 3)).astype(np.float32)
    b = RNG.standard_normal(filters).astype(np.float32)
    inputs = [x, g.constant(f"{name}.w", w), g.constant(f"{name}.b", b)]
    return g.add("Conv", inputs, ConvAttrs(pads=(pads,) * 4), name=name).outputs[0]


def test_residual_add_concat_lrn_and_other_ops_are_skipped_with_a_reason():
    g = Graph("residual")
    x = g.add_input("x", (1, 3, 8, 8), batch_axis=0)
    a = g.add("Relu", [conv(g, x, 4, "a")]).outputs[0]
    s = g.add("Add", [a, conv(g, a, 4, "b")]).outputs[0]
    g.outputs.append(conv(g, s, 2, "c"))
    before = [v.data.copy() for v in g.constants()]
    rows = filters(g, "fraction=0.5")
    assert [r["applied"] for r in rows] == [False] * 3
    assert "residual" in rows[0]["reason"] and "residual" in rows[1]["reason"]
    assert "graph output" in rows[2]["reason"]
    assert all(np.array_equal(b, v.data) for b, v in zip(before, g.constants()))
    for op, attrs, why in (
        ("Concat", ConcatAttrs(1), "Concat"),
        ("LRN", LRNAttrs(3), "neighbouring"),
        ("Softmax", None, "Softmax"),
    ):
        g = Graph(op)
        x = g.add_input("x", (1, 3, 8, 8), batch_axis=0)
        y = conv(g, x, 4, "a")
        mid = g.add(op, [y, x] if op == "Concat" else [y], attrs).outputs[0]
        g.outputs.append(conv(g, mid, 2, "b"))
        (row, _) = filters(g, "fraction=0.5")
        assert not row["applied"] and why in row["reason"] and op in row["reason"]


def test_batchnorm_and_per_channel_constants_are_sliced_and_reshape_retargeted(tmp_path):
    g = Graph("bn")
    x = g.add_input("x", (1, 3, 6, 6), batch_axis=0)
    y = conv(g, x, 6, "a")
    stats = [RNG.standard_normal(6).astype(np.float32) for _ in range(4)]
    stats[3] = np.abs(stats[3]) + 0.5  # variance
    bn_in = [y] + [g.constant(f"bn{i}", s) for i, s in enumerate(stats)]
    y = g.add("BatchNormalization", bn_in, BatchNormAttrs(), name="bn").outputs[0]
    scale = g.constant("scale", RNG.standard_normal((6, 1, 1)).astype(np.float32))
    shift = g.constant("shift", RNG.standard_normal((1, 6, 1, 1)).astype(np.float32))
    y = g.add("Mul", [g.add("Relu", [y]).outputs[0], scale]).outputs[0]
    y = g.add("Add", [shift, y]).outputs[0]
    y = g.add("MaxPool", [y], PoolAttrs(kernel=(2, 2), strides=(1, 1))).outputs[0]
    y = conv(g, y, 5, "c", pads=0)  # [N, 5, 3, 3]
    y = g.add("Reshape", [y], ReshapeAttrs((-1, 5 * 3 * 3)), name="flat").outputs[0]
    fc = RNG.standard_normal((45, 3)).astype(np.float32)
    g.outputs.append(g.add("Dense", [y, g.constant("fc", fc), None], name="fc").outputs[0])
    original = copy.deepcopy(g)
    nodes = {n.name: n for n in g.nodes}
    rows = filters(g, "fraction=0.5")
    # 6 * 0.5 removes 3 filters of a; 5 * 0.5 = 2.5 rounds to 2 removed of c.
    assert [(r["filters_after"], r["applied"]) for r in rows] == [(3, True), (3, True)]
    keep = kept_rows(nodes["a"].inputs[1].data, original.nodes[0].inputs[1].data)
    for i, s in enumerate(stats):
        np.testing.assert_array_equal(nodes["bn"].inputs[i + 1].data, s[keep])
    consts = {v.name: v.data for v in g.constants()}
    assert consts["scale"].shape == (3, 1, 1) and consts["shift"].shape == (1, 3, 1, 1)
    assert nodes["flat"].attrs == ReshapeAttrs((-1, 3 * 3 * 3))
    assert g.outputs[0].shape == (1, 3)
    # Removing a channel equals zeroing its weights in the consumer (BN maps 0 to non-zero).
    onodes = {n.name: n for n in original.nodes}
    wc, wf = onodes["c"].inputs[1].data, onodes["fc"].inputs[1].data
    keep_c = kept_rows(nodes["c"].inputs[1].data, wc[:, keep])
    wc[:, np.setdiff1d(np.arange(6), keep)] = 0
    wf[np.setdiff1d(np.arange(45), (keep_c[:, None] * 9 + np.arange(9)).reshape(-1))] = 0
    x = RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(run(g, x, tmp_path), run(original, x, tmp_path), atol=1e-5)


def test_lenet_compiles_with_the_whole_pipeline_and_runs(tmp_path, sample_images):
    out = str(tmp_path / "lenet5.bin")
    pipeline = "filters(fraction=0.25),prune,kmeans,quantize,huffman"
    dlcc.compile(sample_path("lenet5.onnx"), out, passes=pipeline)
    images, labels = sample_images
    (logits,) = dlcc.load(out).run(images).values()
    assert logits.shape == (len(labels), 10)
    print(f"accuracy: {np.mean(logits.argmax(axis=1) == labels):.4f}")
