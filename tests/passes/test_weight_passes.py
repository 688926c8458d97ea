"""prune, kmeans, quantize and huffman on real graphs: what each rewrite guarantees."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sample_path

import dlcc
from dlcc.frontend import import_onnx
from dlcc.passes.manager import PassContext, parse_pipeline, run_pipeline, weight_layers


def compressed(model: str, pipeline: str):
    graph = import_onnx(sample_path(f"{model}.onnx"))
    original = {n.name: n.inputs[1].data.copy() for n in weight_layers(graph)}
    log = run_pipeline(graph, parse_pipeline(pipeline), PassContext())
    return graph, original, log


def test_prune_reaches_the_exact_sparsity_per_layer():
    graph, original, _ = compressed("lenet5", "prune(sparsity=0.8,layers=conv1:0.5)")
    for node in weight_layers(graph):
        w, before = node.inputs[1].data, original[node.name]
        target = 0.5 if "conv1" in node.name else 0.8
        assert np.count_nonzero(w == 0) == round(target * w.size)
        kept = w != 0
        assert np.array_equal(w[kept], before[kept])  # survivors keep their values
        assert np.abs(before[~kept]).max() <= np.abs(before[kept]).min()  # smallest went
        assert node.inputs[1].encoding.sparse


def test_prune_quality_rule_is_han_et_al_threshold():
    graph, original, _ = compressed("lenet_300_100", "prune(quality=1.0)")
    for node in weight_layers(graph):
        before = original[node.name]
        expected = np.where(np.abs(before) >= before.std(), before, 0)
        np.testing.assert_array_equal(node.inputs[1].data, expected)


@pytest.mark.parametrize("bits", [2, 5])
def test_kmeans_shares_at_most_two_to_the_bits_values(bits):
    pruned, _, _ = compressed("lenet_300_100", "prune(sparsity=0.5)")
    graph, _, _ = compressed("lenet_300_100", f"prune(sparsity=0.5),kmeans(bits={bits})")
    for before, node in zip(weight_layers(pruned), weight_layers(graph)):
        w = node.inputs[1].data
        book = node.inputs[1].encoding.codebook
        assert len(np.unique(w)) <= 2**bits and set(np.unique(w)) <= set(book)
        assert 0.0 in book and np.all(w[before.inputs[1].data == 0] == 0)


def test_kmeans_rate_shortens_the_index_code_of_every_large_layer():
    """Entropy-constrained sharing: fewer bits per index (logged), larger squared error."""
    plain = compressed("lenet_300_100", "prune(sparsity=0.9),kmeans")[2][-1]["layers"]
    rated = compressed("lenet_300_100", "prune(sparsity=0.9),kmeans(rate=0.5)")[2][-1]["layers"]
    large = [i for i, n in enumerate(plain["params"]) if n >= 10_000]
    assert len(large) == 2
    for i in large:
        assert rated["index_bits"][i] < plain["index_bits"][i] - 0.3
        assert rated["sse"][i] > plain["sse"][i]


def test_quantize_is_per_channel_int8_within_half_a_step():
    graph, original, _ = compressed("lenet5", "quantize")
    for node in weight_layers(graph):
        w, before, enc = node.inputs[1].data, original[node.name], node.inputs[1].encoding
        axis = enc.channel_axis
        shape = [1] * w.ndim
        shape[axis] = -1
        scales = np.asarray(enc.scales, np.float32).reshape(shape)
        q = w / scales
        assert np.allclose(q, np.round(q), atol=1e-3) and np.abs(q).max() <= 127.001
        assert np.all(np.abs(w - before) <= scales / 2 + 1e-6)
        assert len(enc.scales) == w.shape[axis]


def test_quantize_codebook_per_layer():
    graph, _, _ = compressed("lenet_300_100", "kmeans(bits=4),quantize")
    for node in weight_layers(graph):
        enc = node.inputs[1].encoding
        (scale,) = enc.scales
        q = np.asarray(enc.codebook) / scale
        assert np.allclose(q, np.round(q), atol=1e-3) and len(enc.codebook) <= 16


def test_o3_bundles_are_deterministic_and_decode_to_the_ir(tmp_path):
    a = dlcc.compile(sample_path("lenet5.onnx"), passes="-O3").to_bytes()
    b = dlcc.compile(sample_path("lenet5.onnx"), passes="-O3").to_bytes()
    assert a == b
    path = tmp_path / "m.bin"
    path.write_bytes(a)
    graph, _, _ = compressed("lenet5", "-O3")
    stored = dlcc.load(str(path)).weights
    for value, decoded in zip(graph.constants(), stored, strict=True):
        np.testing.assert_array_equal(value.data.reshape(decoded.shape), decoded)


def test_o1_is_at_least_3_9x_smaller_and_agrees(sample_images):
    images, _ = sample_images
    for model in ("lenet_300_100", "lenet5"):
        o0 = dlcc.compile(sample_path(f"{model}.onnx")).to_bytes()
        o1 = dlcc.compile(sample_path(f"{model}.onnx"), passes="-O1").to_bytes()
        assert len(o0) / len(o1) >= 3.9


def test_keep_largest_equals_a_stable_sort_with_ties():
    from dlcc.passes.prune import keep_largest

    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        magnitude = rng.integers(0, 5, n).astype(np.float32)  # many ties
        sparsity = float(rng.random())
        expected = np.ones(n, bool)
        expected[np.argsort(magnitude, kind="stable")[: int(round(sparsity * n))]] = False
        np.testing.assert_array_equal(keep_largest(magnitude, sparsity), expected)


@pytest.mark.parametrize("kind", ["normal", "ties", "mostly_zero"])
def test_kth_smallest_of_a_large_layer_equals_a_partition(kind):
    """The sampled bracket (no copy of a large layer) finds exactly np.partition's answer."""
    from dlcc.passes.prune import _kth_smallest

    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal(2_000_003)).astype(np.float32)
    if kind == "ties":
        x = np.round(x * 4) / 4
    if kind == "mostly_zero":
        x[: x.size * 9 // 10] = 0
    for k in (0, 1, x.size // 3, x.size * 92 // 100, x.size - 1):
        assert _kth_smallest(x, k) == np.partition(x, k)[k]


def test_kmeans_of_a_layer_above_the_fit_sample():
    """Fitted on a sample, assigned in full: at most k ascending centroids, each the mean of
    its members, within 5% of the exact k-means' squared error."""
    import types

    from dlcc.passes.cluster1d import kmeans_1d, quantization_error
    from dlcc.passes.kmeans import FIT_SAMPLE, _cluster

    values = np.random.default_rng(4).standard_normal(FIT_SAMPLE * 3).astype(np.float32)
    options = types.SimpleNamespace(init="linear", iters=100, seed=0)
    centroids, labels = _cluster(values, 31, options, 0.0)
    assert len(centroids) <= 31 and np.all(np.diff(centroids) > 0)
    means = np.bincount(labels, weights=values) / np.bincount(labels)
    np.testing.assert_allclose(centroids, means, rtol=1e-12)
    exact = kmeans_1d(values, 31)
    ratio = quantization_error(values, centroids, labels) / quantization_error(values, *exact)
    assert ratio < 1.05
