"""refit, biascorrect, equalize: recovery from calibration data, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

import dlcc
from dlcc.codegen import generate
from dlcc.ir import Graph
from dlcc.passes import refit
from dlcc.passes.evaluate import evaluate
from dlcc.passes.manager import PassContext, layer_rows, parse_pipeline, run_pipeline
from dlcc.passes.refit import damped, refit_support
from dlcc.runtime.kernels import get_kernel
from dlcc.runtime.kernels.matrix import ConvAttrs
from dlcc.runtime.kernels.pooling import PoolAttrs
from dlcc.runtime.kernels.tensor import FlattenAttrs


def correlated(rng, n: int, k: int) -> np.ndarray:
    """Samples with correlated features (as real activations), float32."""
    return (rng.normal(size=(n, k)) @ rng.normal(size=(k, k)) + 0.5).astype(np.float32)


def mlp(rng, sizes=(16, 12, 8, 4), bias=True) -> Graph:
    """x -> Dense -> Relu -> Dense -> Relu -> ... (no Relu after the last)."""
    g = Graph()
    v = g.add_input("x", (1, sizes[0]), 0)
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        w = g.constant(f"w{i}", rng.normal(size=(k, n)).astype(np.float32) * rng.uniform(0.2, 3, n))
        b = g.constant(f"b{i}", rng.normal(size=n).astype(np.float32)) if bias else None
        v = g.add("Dense", [v, w] + ([b] if b is not None else []), name=f"fc{i}").outputs[0]
        if i < len(sizes) - 2:
            v = g.add("Relu", [v]).outputs[0]
    g.outputs = [v]
    return g


def cnn(rng, group: int = 1, bias: bool = True) -> Graph:
    """x[N,4,10,10] -> Conv 3x3 pad 1 -> Relu -> MaxPool 2 -> Conv 3x3 -> Flatten -> Dense."""
    g = Graph()
    x = g.add_input("x", (1, 4, 10, 10), 0)
    w1 = g.constant("c1", rng.normal(size=(6, 4 // group, 3, 3)).astype(np.float32))
    b1 = [g.constant("cb1", rng.normal(size=6).astype(np.float32))] if bias else []
    v = g.add("Conv", [x, w1, *b1], ConvAttrs(pads=(1, 1, 1, 1), group=group), "conv1").outputs[0]
    v = g.add("Relu", [v]).outputs[0]
    v = g.add("MaxPool", [v], PoolAttrs(kernel=(2, 2), strides=(2, 2))).outputs[0]
    w2 = g.constant("c2", rng.normal(size=(5, 6, 3, 3)).astype(np.float32))
    v = g.add("Conv", [v, w2], ConvAttrs(), "conv2").outputs[0]
    v = g.add("Flatten", [v], FlattenAttrs(axis=1)).outputs[0]
    w3 = g.constant("d", rng.normal(size=(45, 3)).astype(np.float32))
    g.outputs = [g.add("Dense", [v, w3], name="fc").outputs[0]]
    return g


def forward(graph: Graph, x: np.ndarray) -> np.ndarray:
    """The graph's (single) output for `x`, float kernels."""
    for value, array in evaluate(graph, {"x": x}):
        if value is graph.outputs[0]:
            return array
    raise AssertionError("no output")


def compress(graph: Graph, pipeline: str, calib=None) -> tuple[list, PassContext]:
    ctx = PassContext(calibration=None if calib is None else {"x": calib})
    return run_pipeline(graph, parse_pipeline(pipeline), ctx), ctx


def rows(log, step: int) -> list[dict]:
    return layer_rows(log[step])


def layer_error(graph: Graph, ctx: PassContext, x: np.ndarray) -> float:
    """First layer's relative output error against its original weight on `x`."""
    w = graph.nodes[0].inputs[1].data
    ref = x @ ctx.original_weights[graph.nodes[0].name]
    return float(np.linalg.norm(x @ w - ref) / np.linalg.norm(ref))


def test_refit_recovers_a_pruned_layer_and_keeps_its_mask():
    rng = np.random.default_rng(1)
    graph, calib = mlp(rng), correlated(rng, 300, 16)
    log, ctx = compress(graph, "prune(sparsity=0.7),refit", calib)
    refit = rows(log, 1)
    assert all(r["applied"] and r["error_after"] < r["error_before"] for r in refit)
    assert all(r["rows"] == 300 for r in refit)
    before = {r["layer"]: r["nonzero_after"] for r in rows(log, 0)}
    for node in graph.nodes:
        if node.op == "Dense":
            assert np.count_nonzero(node.inputs[1].data) == before[node.name]
            assert node.inputs[1].encoding.sparse
    assert layer_error(graph, ctx, calib) == pytest.approx(refit[0]["error_after"], rel=1e-3)


def test_refit_with_a_full_mask_reproduces_the_original():
    rng = np.random.default_rng(2)
    x = correlated(rng, 50, 20).astype(np.float64)
    w_orig = rng.normal(size=(1, 20, 7))
    hd = damped((x.T @ x)[None], 0.01)
    out = refit_support(hd, w_orig + rng.normal(size=w_orig.shape) * 0.1, w_orig)
    np.testing.assert_allclose(out, w_orig, rtol=1e-9, atol=1e-9)


def test_refit_matches_lstsq_on_a_dense_layer():
    rng = np.random.default_rng(3)
    graph, calib = mlp(rng, (12, 5)), correlated(rng, 200, 12)
    _, ctx = compress(graph, "prune(sparsity=0.5),refit(damp=0,batch=64)", calib)
    w, w_orig = graph.nodes[0].inputs[1].data, ctx.original_weights[graph.nodes[0].name]
    x = calib.astype(np.float64)
    for n in range(w.shape[1]):
        support = np.flatnonzero(w[:, n])
        best = np.linalg.lstsq(x[:, support], x @ w_orig[:, n], rcond=None)[0]
        np.testing.assert_allclose(w[support, n], best, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("group", [1, 2])
def test_refit_matches_lstsq_on_a_conv_layer(group):
    rng = np.random.default_rng(4)
    # 5 images, 500 patches: under ROWS_PER_INPUT per input (18 or 36 inputs), all are used
    graph, calib = cnn(rng, group), rng.normal(size=(5, 4, 10, 10)).astype(np.float32)
    _, ctx = compress(graph, "prune(sparsity=0.5,layers=conv2:0;fc:0),refit(damp=0)", calib)
    conv = graph.nodes[0]
    w, w_orig = conv.inputs[1].data, ctx.original_weights[conv.name]
    xp = np.pad(calib.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    per = 6 // group
    for m in range(6):
        c = slice(m // per * (4 // group), (m // per + 1) * (4 // group))
        x = windows[:, c].transpose(0, 2, 3, 1, 4, 5).reshape(-1, w[m].size)  # (c, kh, kw)
        support = np.flatnonzero(w[m].ravel())
        best = np.linalg.lstsq(x[:, support], x @ w_orig[m].ravel(), rcond=None)[0]
        np.testing.assert_allclose(w[m].ravel()[support], best, rtol=1e-4, atol=1e-5)


def test_refit_estimates_h_from_a_fixed_subsample_of_many_patches(monkeypatch):
    """Above ROWS_PER_INPUT patches per input, H comes from a fixed-seed subsample: the same
    weights every run, and about the error on every patch that all of them give."""
    noise = np.random.default_rng(6).normal(size=(40, 4, 10, 10))
    calib = (noise.cumsum(axis=3) + noise.sum(axis=1, keepdims=True)).astype(np.float32)

    def refitted(limit: int):
        monkeypatch.setattr(refit, "ROWS_PER_INPUT", limit)
        graph = cnn(np.random.default_rng(4))
        log, ctx = compress(graph, "prune(sparsity=0.6,layers=conv2:0;fc:0),refit", calib)
        conv = graph.nodes[0]
        w, w_orig = (
            refit.weight_matrix(conv, a)
            for a in (conv.inputs[1].data, ctx.original_weights[conv.name])
        )
        return rows(log, 1)[0], w, w_orig, graph

    every, w_every, w_orig, graph = refitted(10**6)
    sampled, w_sampled, _, _ = refitted(8)  # 8 x 36 inputs = 288 of 4,000 patches
    assert every["rows"] == 4000 and sampled["rows"] == 288
    np.testing.assert_array_equal(w_sampled, refitted(8)[1])
    monkeypatch.setattr(refit, "ROWS_PER_INPUT", 10**6)
    h, _ = refit.gram(refit.Walk(graph, {"x": calib}, 256), graph.nodes[0])  # every patch
    error = {
        k: refit.relative_error(h, w, w_orig) for k, w in (("all", w_every), ("some", w_sampled))
    }
    assert error["all"] <= error["some"] < 1.1 * error["all"] < every["error_before"]


def test_carrying_the_batches_between_layers_gives_what_running_from_the_start_gives(
    monkeypatch,
):
    """Walk carries each batch's live values from layer to layer; past CARRIED_BYTES it runs
    every layer's inputs from the graph's inputs again: the same weights and biases."""
    calib = np.random.default_rng(7).normal(size=(20, 4, 10, 10)).astype(np.float32)
    pipeline = "prune(sparsity=0.5),refit(batch=8),kmeans(bits=4),refit,quantize,biascorrect"
    found = []
    for limit in (refit.CARRIED_BYTES, 0):
        monkeypatch.setattr(refit, "CARRIED_BYTES", limit)
        graph = cnn(np.random.default_rng(4), bias=False)
        compress(graph, pipeline, calib)
        found.append([v.data for v in graph.constants()])
    assert len(found[0]) == len(found[1]) > 3  # biases added
    for carried, rerun in zip(*found):
        np.testing.assert_array_equal(carried, rerun)


@pytest.mark.parametrize("prune", ["prune(sparsity=0.6),", ""])
def test_centroid_refit_lowers_the_error_and_keeps_the_codebook(prune):
    rng = np.random.default_rng(5)
    graph, calib = mlp(rng, (24, 10)), correlated(rng, 400, 24)
    shared = graph.nodes[0].inputs[1].data
    log, ctx = compress(graph, f"{prune}kmeans(bits=3),refit", calib)
    (row,) = rows(log, -1)
    assert row["applied"] and row["error_after"] < row["error_before"]
    w, enc = graph.nodes[0].inputs[1].data, graph.nodes[0].inputs[1].encoding
    assert set(np.unique(w).tolist()) <= set(enc.codebook) and len(enc.codebook) <= 8
    if prune:
        assert 0.0 in enc.codebook and enc.sparse and np.count_nonzero(w) <= 0.4 * w.size + 1
    assert not np.array_equal(w, shared)


def test_refit_refuses_int8_and_dense_weights():
    rng = np.random.default_rng(6)
    graph, calib = mlp(rng), correlated(rng, 50, 16)
    log, _ = compress(graph, "quantize,refit", calib)
    assert {r["reason"] for r in rows(log, 1)} == {"refit before quantize"}
    log, _ = compress(mlp(rng), "refit", calib)
    assert not any(r["applied"] for r in rows(log, 0))


def test_without_calibration_refit_and_biascorrect_only_note():
    rng = np.random.default_rng(7)
    graph = mlp(rng)
    _, ctx = compress(graph, "prune(sparsity=0.5)")
    before = [n.inputs[1].data.copy() for n in graph.nodes if n.op == "Dense"]
    for name in ("refit", "biascorrect"):
        run_pipeline(graph, parse_pipeline(name), ctx)
        assert any(note.startswith(f"{name}: no calibration data") for note in ctx.notes)
    after = [n.inputs[1].data for n in graph.nodes if n.op == "Dense"]
    assert all(np.array_equal(a, b) for a, b in zip(after, before))


def test_equalize_is_exact_and_equalizes_each_pair():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(5, 4, 10, 10)).astype(np.float32)
    graph = cnn(rng)
    reference = forward(graph, x)
    log, ctx = compress(graph, "equalize", calib=x)  # with data: the originals are recorded
    assert [(r["layer"], r["next"], r["via"]) for r in rows(log, 0)] == [
        ("conv1", "conv2", "Relu+MaxPool"),
        ("conv2", "fc", "Flatten"),
    ]
    np.testing.assert_allclose(forward(graph, x), reference, rtol=1e-5, atol=1e-5)
    for node in graph.nodes:  # the record of the originals follows the rewrite
        if node.op in ("Conv", "Dense"):
            np.testing.assert_allclose(ctx.original_weights[node.name], node.inputs[1].data)
    pair = mlp(rng, (9, 7, 3))
    reference = forward(pair, x.reshape(-1, 400)[:, :9])
    log, _ = compress(pair, "equalize")
    (row,) = rows(log, 0)
    assert row["spread_before"] > 0.1 and row["spread_after"] < 1e-6
    w1, w2 = (n.inputs[1].data for n in pair.nodes if n.op == "Dense")
    np.testing.assert_allclose(np.abs(w1).max(axis=0), np.abs(w2).max(axis=1), rtol=1e-6)
    np.testing.assert_allclose(forward(pair, x.reshape(-1, 400)[:, :9]), reference, rtol=1e-5)


def test_equalize_skips_grouped_and_branching_layers():
    graph = cnn(np.random.default_rng(9), group=2)
    log, _ = compress(graph, "equalize")
    assert [r["layer"] for r in rows(log, 0)] == ["conv2"]
    graph = mlp(np.random.default_rng(9))
    graph.outputs.append(graph.nodes[0].outputs[0])  # fc0's output is also read elsewhere
    log, _ = compress(graph, "equalize")
    assert [r["layer"] for r in rows(log, 0)] == ["fc1"]


@pytest.mark.parametrize("make", [mlp, cnn])
def test_biascorrect_removes_the_mean_output_error(make):
    rng = np.random.default_rng(10)
    graph = make(rng, bias=False)
    first = graph.nodes[0]
    shape = (300, 16) if first.op == "Dense" else (30, 4, 10, 10)
    calib = rng.normal(size=shape).astype(np.float32) + 0.5
    log, ctx = compress(graph, "prune(sparsity=0.7),biascorrect", calib)
    assert rows(log, 1)[0]["bias"] == "added" and len(first.inputs) == 3
    (reference,) = get_kernel(first.op)(first.attrs, calib, ctx.original_weights[first.name])
    output = next(a for v, a in evaluate(graph, {"x": calib}) if v is first.outputs[0])
    axes = (0,) if first.op == "Dense" else (0, 2, 3)
    diff, scale = output - reference, np.abs(reference).mean()
    assert np.abs(diff.mean(axis=axes)).max() < 1e-5 * scale
    assert np.abs(diff).mean() > 1e-2 * scale  # the weights did change


def test_the_whole_recovery_pipeline_makes_a_runnable_deterministic_bundle(tmp_path):
    steps = "equalize,prune(sparsity=0.6),refit,kmeans(bits=4),refit,quantize,biascorrect,huffman"
    blobs = []
    for _ in range(2):
        rng = np.random.default_rng(11)
        graph, calib = cnn(rng), rng.normal(size=(20, 4, 10, 10)).astype(np.float32)
        compress(graph, steps, calib)
        blobs.append(generate(graph).to_bytes())
    assert blobs[0] == blobs[1]
    path = tmp_path / "m.bin"
    path.write_bytes(blobs[0])
    (out,) = dlcc.load(str(path)).run(calib[:3]).values()
    assert out.shape == (3, 3) and np.isfinite(out).all()
