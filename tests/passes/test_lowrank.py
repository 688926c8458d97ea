"""lowrank: SVD factorization of Dense and Conv layers, rank by energy or ratio, skip rules."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sample_path

from dlcc.codegen import generate
from dlcc.encoding import DENSE
from dlcc.errors import PipelineError
from dlcc.frontend import import_onnx
from dlcc.ir import Graph
from dlcc.passes.manager import (
    PassContext,
    layer_rows,
    parse_pipeline,
    run_pipeline,
    weight_layers,
)
from dlcc.runtime.kernels.matrix import ConvAttrs
from dlcc.runtime.loader import load_bundle

rng = np.random.default_rng(0)


def low_rank(k: int, n: int, rank: int) -> np.ndarray:
    """A float32 [k, n] matrix of exactly `rank` (up to float32 rounding)."""
    return (rng.standard_normal((k, rank)) @ rng.standard_normal((rank, n)) / k).astype(np.float32)


def mlp(*weights: np.ndarray) -> Graph:
    """x -> Dense(fc1) -> Relu -> Dense(fc2) ... ; the last Dense's output is `y`."""
    g = Graph("mlp")
    h = g.add_input("x", (1, weights[0].shape[0]), batch_axis=0)
    for i, w in enumerate(weights, 1):
        b = g.constant(f"b{i}", rng.standard_normal(w.shape[1]).astype(np.float32))
        last = i == len(weights)
        h = g.add("Dense", [h, g.constant(f"w{i}", w), b], name="y" if last else f"fc{i}")
        h = h.outputs[0] if last else g.add("Relu", [h.outputs[0]]).outputs[0]
    g.outputs.append(h)
    return g


def conv_graph(w: np.ndarray, attrs: ConvAttrs, hw: tuple[int, int] = (11, 9)) -> Graph:
    """x[N, C, H, W] -> Conv(conv, attrs) -> Relu -> y."""
    g = Graph("conv")
    x = g.add_input("x", (1, w.shape[1] * attrs.group, *hw), batch_axis=0)
    b = g.constant("b", rng.standard_normal(w.shape[0]).astype(np.float32))
    h = g.add("Conv", [x, g.constant("w", w), b], attrs, name="conv").outputs[0]
    g.outputs.append(g.add("Relu", [h], name="y").outputs[0])
    return g


def lowrank(graph: Graph, options: str) -> list[dict]:
    """Run lowrank(options) on `graph`; its per-layer rows."""
    (entry,) = run_pipeline(graph, parse_pipeline(f"lowrank({options})"), PassContext())
    return layer_rows(entry)


def evaluate(graph: Graph, x: np.ndarray, path) -> np.ndarray:
    """The graph's only output on `x`, through codegen, the bundle file and the interpreter."""
    path.write_bytes(generate(graph).to_bytes())
    (y,) = load_bundle(str(path)).run(x).values()
    return y


def brute_energy_rank(w: np.ndarray, energy: float) -> int:
    s2 = np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2
    return next(r for r in range(1, s2.size + 1) if s2[:r].sum() >= energy * s2.sum())


def test_exact_low_rank_dense_is_factored_without_changing_the_output(tmp_path):
    g = mlp(low_rank(40, 30, 3), low_rank(30, 20, 2))
    x = rng.standard_normal((5, 40)).astype(np.float32)
    before = evaluate(g, x, tmp_path / "a.bin")
    rows = lowrank(g, "energy=1.0")
    assert [(r["rank"], r["full_rank"], r["applied"]) for r in rows] == [
        (3, 30, True),
        (2, 20, True),
    ]
    assert [(r["params_before"], r["params_after"]) for r in rows] == [(1200, 210), (600, 100)]
    assert [n.name for n in g.nodes] == ["fc1/u", "fc1/v", "relu", "y/u", "y/v"]
    assert [n.inputs[1].shape for n in weight_layers(g)] == [(40, 3), (3, 30), (30, 2), (2, 20)]
    assert g.nodes[0].inputs[2] is None and g.nodes[1].inputs[2].name == "b1"
    assert [v.name for v in g.outputs] == ["y"]  # the output keeps its name
    for node in weight_layers(g):
        assert node.inputs[1].encoding == DENSE and node.inputs[1].dtype == "float32"
    after = evaluate(g, x, tmp_path / "b.bin")
    assert after.dtype == np.float32
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("energy", [0.3, 0.5, 0.8, 0.9, 0.99])
def test_energy_picks_the_smallest_rank_reaching_it(energy):
    # A decaying spectrum, so every energy lands on a different rank.
    u, _ = np.linalg.qr(rng.standard_normal((60, 40)))
    v, _ = np.linalg.qr(rng.standard_normal((40, 40)))
    w = ((u * 0.9 ** np.arange(40)) @ v.T).astype(np.float32)
    g = mlp(w)
    (row,) = lowrank(g, f"energy={energy}")
    r = brute_energy_rank(w, energy)
    s2 = np.linalg.svd(w.astype(np.float64), compute_uv=False) ** 2
    assert row["rank"] == r and row["applied"] and row["params_after"] == r * 100
    assert row["energy_kept"] == pytest.approx(s2[:r].sum() / s2.sum(), rel=1e-4)
    a, b = (n.inputs[1].data.astype(np.float64) for n in weight_layers(g))
    # Eckart-Young: the truncated SVD misses exactly the dropped singular values.
    assert ((a @ b - w) ** 2).sum() == pytest.approx(s2[r:].sum(), rel=1e-3, abs=1e-6)


@pytest.mark.parametrize("ratio,rank", [(0.5, 12), (0.3, 7), (0.01, 1)])
def test_ratio_sets_the_rank_from_the_parameter_budget(ratio, rank):
    g = mlp(rng.standard_normal((60, 40)).astype(np.float32))
    (row,) = lowrank(g, f"ratio={ratio}")  # floor(ratio * 60*40 / (60+40))
    assert (row["rank"], row["params_after"], row["applied"]) == (rank, rank * 100, True)
    assert row["params_after"] <= ratio * 2400 or rank == 1


def test_a_layer_that_would_not_shrink_is_left_alone_and_reported():
    w = rng.standard_normal((10, 10)).astype(np.float32)
    g = mlp(w)
    node = g.nodes[0]
    (row,) = lowrank(g, "energy=1.0")
    assert (row["rank"], row["applied"], row["params_after"]) == (10, False, 100)
    assert row["reason"] == "rank 10 saves nothing: 200 >= 100 params"
    assert g.nodes == [node] and node.inputs[1].data is not None
    np.testing.assert_array_equal(node.inputs[1].data, w)


@pytest.mark.parametrize(
    "attrs",
    [ConvAttrs(), ConvAttrs(strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2))],
)
def test_conv_is_factored_into_r_filters_and_a_1x1_conv(tmp_path, attrs):
    w = low_rank(8, 4 * 3 * 3, 2).reshape(8, 4, 3, 3)
    g = conv_graph(w, attrs)
    x = rng.standard_normal((3, 4, 11, 9)).astype(np.float32)
    before = evaluate(g, x, tmp_path / "a.bin")
    (row,) = lowrank(g, "energy=1.0")
    assert (row["rank"], row["full_rank"], row["params_after"]) == (2, 8, 2 * 36 + 8 * 2)
    first, second = weight_layers(g)
    assert (first.name, first.attrs, first.inputs[1].shape) == ("conv/u", attrs, (2, 4, 3, 3))
    assert (second.name, second.attrs, second.inputs[1].shape) == (
        "conv/v",
        ConvAttrs(),
        (8, 2, 1, 1),
    )
    assert first.inputs[2] is None and second.inputs[2].name == "b"
    assert row["macs_after"] * 288 == row["macs_before"] * 88  # same grid: MACs shrink alike
    np.testing.assert_allclose(evaluate(g, x, tmp_path / "b.bin"), before, rtol=1e-5, atol=1e-5)


def test_grouped_conv_is_skipped_with_a_reason():
    g = conv_graph(low_rank(8, 18, 1).reshape(8, 2, 3, 3), ConvAttrs(group=2))
    (row,) = lowrank(g, "energy=0.5")
    assert (row["applied"], row["reason"]) == (False, "grouped convolution (group=2)")
    assert [n.name for n in g.nodes] == ["conv", "y"]


def test_pruned_weights_are_skipped_run_lowrank_first():
    graph = import_onnx(sample_path("lenet_300_100.onnx"))
    pipeline = parse_pipeline("prune(sparsity=0.5),lowrank")
    rows = layer_rows(run_pipeline(graph, pipeline, PassContext())[1])
    assert {r["reason"] for r in rows} == {"run lowrank before prune"}
    assert not any(r["applied"] for r in rows) and len(weight_layers(graph)) == 3


@pytest.mark.parametrize(
    "text", ["lowrank(energy=0)", "lowrank(ratio=2)", "lowrank(energy=-1)", "lowrank(layers=fc1:0)"]
)
def test_options_out_of_range_are_pipeline_errors(text):
    with pytest.raises(PipelineError, match="out of range"):
        parse_pipeline(text)


def test_option_text_round_trips():
    text = "lowrank(energy=1.0,ratio=0.5,layers=fc1:0.25)"
    assert str(parse_pipeline(text)) == text
    resolved = parse_pipeline("lowrank").resolved()
    assert str(resolved) == "lowrank(energy=0.9,ratio=none,layers=)"


@pytest.mark.parametrize(
    "base,override,fc1_rank",
    [("energy=0.99", "0.5", None), ("ratio=0.5", "0.1", int(0.1 * 784 * 300 / (784 + 300)))],
)
def test_layer_override_changes_only_that_layer(base, override, fc1_rank):
    graph = import_onnx(sample_path("lenet_300_100.onnx"))
    fc1 = graph.nodes[1].inputs[1].data.copy()
    plain = lowrank(import_onnx(sample_path("lenet_300_100.onnx")), base)
    rows = lowrank(graph, f"{base},layers=fc1:{override}")
    assert rows[1:] == plain[1:]
    assert rows[0]["rank"] == (fc1_rank or brute_energy_rank(fc1, 0.5)) != plain[0]["rank"]
    assert rows[0]["applied"]
    factored = [n.name for n in weight_layers(graph)]
    assert factored[:2] == ["/fc1/Gemm/u", "/fc1/Gemm/v"] and len(factored) == 3 + sum(
        r["applied"] for r in rows
    )


def test_lenet_keeps_its_accuracy_and_composes_with_later_passes(tmp_path, sample_images):
    images, labels = sample_images
    graph = import_onnx(sample_path("lenet_300_100.onnx"))
    reference = evaluate(graph, images, tmp_path / "a.bin").argmax(1)
    pipeline = parse_pipeline("lowrank(energy=0.95),prune(sparsity=0.3),kmeans(bits=8),quantize")
    log = run_pipeline(graph, pipeline, PassContext())
    assert all(layer_rows(log[0])[i]["applied"] for i in range(3))
    assert len(weight_layers(graph)) == 6
    assert all(n.inputs[1].encoding.sparse for n in weight_layers(graph))
    predicted = evaluate(graph, images, tmp_path / "b.bin").argmax(1)
    assert (predicted == labels).mean() >= (reference == labels).mean() - 0.03
