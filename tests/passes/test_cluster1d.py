"""passes/cluster1d.py: exact 1-D k-means against a brute-force distance-matrix Lloyd.

The reference below is the textbook algorithm (an n-by-k distance matrix, `argmin` so that a
value equidistant from two centroids goes to the lower one, empty clusters dropped) with
independently written initializations. Values on a 1/8 grid and integer weights keep every
sum exact, so the fast path and the reference must agree on every label.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dlcc.passes.cluster1d import INITS, _assign, kmeans_1d, quantization_error


def ref_kmeanspp(x: np.ndarray, w: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Plain k-means++: full cumulative sums and distance updates for every center."""
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    rng = np.random.default_rng(seed)
    centers = [x[np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right")]]
    for _ in range(1, k):
        d2 = np.min(np.square(x[:, None] - np.array(centers)[None, :]), axis=1)
        cum = np.cumsum(w * d2)
        if cum[-1] == 0:
            break
        centers.append(x[np.searchsorted(cum, rng.random() * cum[-1], side="right")])
    return np.array(centers)


def ref_init(x: np.ndarray, w: np.ndarray, k: int, init: str, seed: int) -> np.ndarray:
    """The initial centroids, written independently of the module (integer weights)."""
    if init == "linear":
        c = np.linspace(x.min(), x.max(), k)
    elif init == "density":  # inverted CDF at (i + 0.5) / k, in exact integer arithmetic
        rep = np.sort(np.repeat(x, w.astype(int)))
        c = rep[-(-(2 * np.arange(k) + 1) * rep.size // (2 * k)) - 1]
    else:
        c = ref_kmeanspp(x, w, k, seed)
    return np.unique(c)


def ref_kmeans(values, k, init="linear", max_iter=100, seed=0, weights=None):
    """Brute-force Lloyd with an O(n*k) distance matrix and the module's documented rules."""
    x = np.asarray(values, dtype=np.float64).ravel()
    w = np.ones_like(x) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if x.size == 0:
        return np.empty(0), np.empty(np.shape(values), dtype=np.int64)
    distinct, inverse = np.unique(x, return_inverse=True)
    if distinct.size <= k:
        return distinct, inverse.reshape(np.shape(values))
    c = ref_init(x, w, k, init, seed)
    prev = None
    for _ in range(max_iter):
        nearest = np.argmin(np.abs(x[:, None] - c[None, :]), axis=1)  # first minimum wins
        _, lab = np.unique(nearest, return_inverse=True)  # drop empty clusters
        if prev is not None and np.array_equal(lab, prev):
            break
        prev = lab
        c = np.bincount(lab, w * x) / np.bincount(lab, w)
    return c, prev.reshape(np.shape(values))


@st.composite
def grid_inputs(draw):
    """Values on a 1/8 grid (many duplicates and exact midpoints), optional integer weights."""
    half = draw(st.integers(1, 60))
    n = draw(st.integers(0, 200))
    ints = draw(st.lists(st.integers(-half, half), min_size=n, max_size=n))
    values = np.array(ints, dtype=np.float64) / 8
    weights = None
    if draw(st.booleans()):
        weights = np.array(draw(st.lists(st.integers(1, 5), min_size=n, max_size=n)), float)
    return values, weights


@settings(max_examples=300, deadline=None)
@given(
    grid_inputs(),
    st.integers(1, 16),
    st.sampled_from(INITS),
    st.integers(1, 100),
    st.integers(0, 2**32 - 1),
)
def test_matches_brute_force(inputs, k, init, max_iter, seed):
    values, weights = inputs
    c, lab = kmeans_1d(values, k, init=init, max_iter=max_iter, seed=seed, weights=weights)
    rc, rlab = ref_kmeans(values, k, init=init, max_iter=max_iter, seed=seed, weights=weights)
    assert lab.dtype == np.int64 and lab.shape == values.shape
    np.testing.assert_array_equal(lab, rlab)
    np.testing.assert_allclose(c, rc, rtol=0, atol=1e-12)
    assert c.size <= k and np.all(np.diff(c) > 0)


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_on_gaussian_floats(init, seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal((20, 17)) * 0.05
    for k in (3, 16, 40):
        c, lab = kmeans_1d(values, k, init=init, seed=seed)
        rc, rlab = ref_kmeans(values, k, init=init, seed=seed)
        np.testing.assert_array_equal(lab, rlab)
        np.testing.assert_allclose(c, rc, rtol=0, atol=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    st.floats(-1e6, 1e6, allow_subnormal=False),
    st.floats(1e-9, 1e6, allow_subnormal=False),
    st.integers(-3, 3),
)
def test_assignment_ties_follow_the_distance_test_not_the_rounded_midpoint(lo, gap, shift):
    c = np.array([lo, lo + gap])
    if not c[1] > c[0]:
        return
    x = np.array([(c[0] + c[1]) / 2])
    for _ in range(abs(shift)):
        x = np.nextafter(x, np.inf if shift > 0 else -np.inf)
    x = np.sort(np.concatenate([x, np.nextafter(x, -np.inf), np.nextafter(x, np.inf), c]))
    starts = _assign(x, c)
    labels = np.searchsorted(starts, np.arange(x.size), side="right") - 1
    np.testing.assert_array_equal(labels, np.argmin(np.abs(x[:, None] - c[None, :]), axis=1))


def test_value_exactly_at_the_midpoint_goes_to_the_lower_cluster():
    c, lab = kmeans_1d(np.array([0.0, 1.0, 2.0]), 2)  # linear init: centroids 0 and 2
    np.testing.assert_array_equal(lab, [0, 0, 1])
    np.testing.assert_array_equal(c, [0.5, 2.0])
    c, lab = kmeans_1d(np.array([2.0, 0.0, 1.0, 2.0, 0.0]), 2)
    np.testing.assert_array_equal(lab, [1, 0, 0, 1, 0])
    np.testing.assert_allclose(c, [1 / 3, 2.0])


def test_empty_clusters_are_dropped():
    values = np.array([-1.0, -1.0, -0.9, -0.8, 0.8, 0.9, 1.0, 1.0])
    c, lab = kmeans_1d(values, 5)  # linear init -1, -0.5, 0, 0.5, 1: three start empty
    np.testing.assert_allclose(c, [-0.925, 0.925])
    np.testing.assert_array_equal(lab, [0, 0, 0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("shape", [(0,), (0, 3)])
def test_empty_input(shape):
    c, lab = kmeans_1d(np.zeros(shape), 4)
    assert c.shape == (0,) and c.dtype == np.float64
    assert lab.shape == shape and lab.dtype == np.int64
    assert quantization_error(np.zeros(shape), c, lab) == 0.0


@pytest.mark.parametrize("init", INITS)
def test_few_distinct_values_are_their_own_centroids(init):
    c, lab = kmeans_1d(np.array([3.5]), 4, init=init)
    np.testing.assert_array_equal(c, [3.5])
    np.testing.assert_array_equal(lab, [0])
    c, lab = kmeans_1d(np.full((5, 7), -0.25), 16, init=init)
    np.testing.assert_array_equal(c, [-0.25])
    np.testing.assert_array_equal(lab, np.zeros((5, 7)))
    values = np.array([[3.0, 1.0, 2.0], [1.0, 3.0, 1.0]])
    for k in (3, 8):
        c, lab = kmeans_1d(values, k, init=init)
        np.testing.assert_array_equal(c, [1.0, 2.0, 3.0])
        np.testing.assert_array_equal(lab, [[2, 0, 1], [0, 2, 0]])
        assert quantization_error(values, c, lab) == 0.0


@pytest.mark.parametrize("init", INITS)
def test_deterministic_and_independent_of_input_order(init):
    rng = np.random.default_rng(7)
    values = rng.laplace(size=5000)
    c1, lab1 = kmeans_1d(values, 32, init=init, seed=3)
    c2, lab2 = kmeans_1d(values.copy(), 32, init=init, seed=3)
    assert c1.tobytes() == c2.tobytes() and lab1.tobytes() == lab2.tobytes()
    perm = rng.permutation(values.size)
    c3, lab3 = kmeans_1d(values[perm], 32, init=init, seed=3)
    assert c1.tobytes() == c3.tobytes()
    np.testing.assert_array_equal(lab3, lab1[perm])
    if init == "kmeans++":
        first = [kmeans_1d(values, 32, init=init, seed=s, max_iter=1)[0] for s in (3, 4)]
        assert not np.array_equal(*first)


@settings(max_examples=50, deadline=None)
@given(grid_inputs(), st.integers(1, 16), st.sampled_from(INITS), st.sampled_from([0.0, 0.3]))
def test_integer_weights_equal_repetition(inputs, k, init, rate):
    values, weights = inputs
    if weights is None:
        return
    c, lab = kmeans_1d(values, k, init=init, weights=weights, rate=rate)
    rc, rlab = kmeans_1d(np.repeat(values, weights.astype(int)), k, init=init, rate=rate)
    np.testing.assert_allclose(c, rc, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(np.repeat(lab, weights.astype(int)), rlab)


@pytest.mark.parametrize("init", INITS)
def test_error_never_increases_with_more_iterations(init):
    values = np.random.default_rng(5).standard_normal(3000) ** 3
    errors = [quantization_error(values, *kmeans_1d(values, 16, init, t)) for t in range(1, 40)]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(errors, errors[1:]))


def entropy_bits(labels: np.ndarray) -> np.ndarray:
    """-log2 of each cluster's share of the values."""
    counts = np.bincount(labels)
    return -np.log2(counts / counts.sum())


@pytest.mark.parametrize("rate", [0.03, 0.3, 3.0])
def test_entropy_constrained_labels_are_the_brute_force_argmin(rate):
    """At convergence every value minimizes (x - c)^2 + lambda * bits over all centroids."""
    values = np.random.default_rng(1).standard_normal(4000) ** 3
    lam = rate * (np.ptp(values) / 31) ** 2
    c, lab = kmeans_1d(values, 31, rate=lam, max_iter=10_000)
    cost = np.square(values[:, None] - c[None, :]) + lam * entropy_bits(lab)[None, :]
    np.testing.assert_array_equal(cost.argmin(axis=1), lab)
    np.testing.assert_allclose(c, np.bincount(lab, values) / np.bincount(lab), rtol=1e-9)


def test_entropy_constraint_trades_squared_error_for_code_length():
    """Each ECSQ step lowers error + lambda * bits below the k-means start; the code shrinks."""
    values = np.random.default_rng(2).standard_normal(20_000) * 0.05
    values = values[np.abs(values) > 0.03]  # a pruned layer's two modes
    plain_c, plain = kmeans_1d(values, 31)
    lengths = [entropy_bits(plain).take(plain).mean()]
    for rate in (0.1, 0.5, 2.0):
        lam = rate * (np.ptp(values) / 31) ** 2
        c, lab = kmeans_1d(values, 31, rate=lam)
        cost = quantization_error(values, c, lab) + lam * entropy_bits(lab).take(lab).sum()
        start = quantization_error(values, plain_c, plain) + lam * lengths[0] * values.size
        assert cost <= start
        lengths.append(entropy_bits(lab).take(lab).mean())
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] < lengths[0] - 1


def test_quantization_error():
    values = np.array([[0.0, 1.0], [2.0, 4.0]])
    assert quantization_error(values, np.array([0.5, 3.0]), np.array([[0, 0], [1, 1]])) == 2.5
    with pytest.raises(ValueError, match="shape"):
        quantization_error(values, np.array([0.5, 3.0]), np.array([0, 0, 1, 1]))


def test_bad_arguments():
    good = {"values": np.array([1.0, 5.0, 2.0]), "k": 2}
    scalars = ({"k": 0}, {"k": 2.5}, {"init": "random"}, {"max_iter": 0}, {"rate": -1.0})
    values = ({"values": [1.0, np.nan, 2.0]}, {"values": [1.0, np.inf, 2.0]})
    weights = tuple({"weights": w} for w in ([1.0, 1.0], [1.0, 0.0, 2.0], [1.0, -1.0, 2.0]))
    for bad in scalars + values + weights:
        with pytest.raises(ValueError):
            kmeans_1d(**{**good, **bad})


def test_one_million_values_is_fast():
    values = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
    for k in (256, 32):
        start = time.perf_counter()
        c, lab = kmeans_1d(values, k)
        elapsed = time.perf_counter() - start
        print(f"kmeans_1d: 1M values, k={k}, linear init: {elapsed:.3f} s, k'={c.size}")
        assert lab.shape == values.shape and lab.max() == c.size - 1
        np.testing.assert_allclose(
            c, np.bincount(lab, values.astype(np.float64)) / np.bincount(lab), rtol=1e-9
        )


def test_linear_init_keeps_centroids_on_the_large_weights():
    # A pruned layer (Han et al. fig. 4): the small weights are gone, two modes remain.
    rng = np.random.default_rng(0)
    w = rng.standard_normal(200_000) * 0.02
    w = w[np.abs(w) > 0.015]
    p99 = np.quantile(np.abs(w), 0.99)
    linear, _ = kmeans_1d(w, 32, init="linear")  # 5 bits, the paper's fully-connected setting
    density, _ = kmeans_1d(w, 32, init="density")
    assert linear[-1] > p99 and linear[0] < -p99
    assert linear[-1] > density[-1] and linear[0] < density[0]
