"""Sparse execution of int8 Dense products (runtime/sparse.py) against the dense ones.

- the product over the active rows equals the dense int8 product (and int64 arithmetic) bit
  for bit: any batch, pruned rows, sums past 2^24 (the blocked path);
- the rule: sparse only at small batch, on large weights, with few active rows;
- bundles: sparse and dense execution of an int8 bundle give the same outputs bit for bit at
  every batch, the sparse path taken where the rule says; the systolic target agrees; a float
  bundle never runs sparse.
"""

from __future__ import annotations

import numpy as np
import pytest

import dlcc
import dlcc.runtime.interpreter as interpreter
from dlcc.runtime.interpreter import Interpreter, NumpyEngine
from dlcc.runtime.kernels import NoAttrs, get_kernel
from dlcc.runtime.kernels.constants import mark_constant
from dlcc.runtime.kernels.matrix import EXACT_K
from dlcc.runtime.sparse import (
    DENSITY,
    MAX_ROWS,
    MIN_WEIGHT,
    active_rows,
    rows_product,
    sparse_product,
)

DENSE = get_kernel("Dense").fn


def pruned(rng, k: int, n: int, density: float, zero_rows: int = 0) -> np.ndarray:
    """A constant int8 weight [k, n] with about `density` nonzeros and `zero_rows` empty rows."""
    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    w[rng.random((k, n)) > density] = 0
    w[rng.choice(k, zero_rows, replace=False)] = 0
    return mark_constant(w)


def activations(rng, m: int, k: int, active: float) -> np.ndarray:
    """int8 x [m, k]: about `active` of the columns nonzero (+-1..127), the others 0."""
    x = (rng.integers(1, 128, (m, k)) * rng.choice([-1, 1], (m, k))).astype(np.int8)
    x[:, rng.random(k) > active] = 0
    return x


def forced(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    rows, xa = active_rows(x, w)
    return rows_product(xa, w, rows)


@pytest.mark.parametrize("m", [1, 3, 8, 20])
@pytest.mark.parametrize("active", [0.0, 0.05, 0.3, 1.0])
def test_the_sparse_product_is_the_dense_one(m, active):
    rng = np.random.default_rng(m)
    w = pruned(rng, 300, 70, 0.2, zero_rows=40)
    x = activations(rng, m, 300, active)
    y = forced(x, w)
    assert y.dtype == np.int32 and y.shape == (m, 70)
    np.testing.assert_array_equal(y, DENSE(NoAttrs(), x, w))
    np.testing.assert_array_equal(y, x.astype(np.int64) @ w.astype(np.int64))


def test_sums_past_2_to_24_stay_exact():
    k = 3 * EXACT_K + 5  # every product 127 * 127: float32 sums would round past 2^24
    w = mark_constant(np.full((k, 4), 127, np.int8))
    x = np.full((1, k), 127, np.int8)
    x[0, ::7] = 0
    y = forced(x, w)
    np.testing.assert_array_equal(y, x.astype(np.int64) @ w.astype(np.int64))
    assert y[0, 0] > 1 << 24


def test_the_rule_runs_sparse_only_where_it_pays():
    rng = np.random.default_rng(0)
    k = 1024
    w = pruned(rng, k, MIN_WEIGHT // k, 0.1)
    few = activations(rng, 1, k, DENSITY / 2)
    y = sparse_product(few, w)
    assert y is not None
    np.testing.assert_array_equal(y, DENSE(NoAttrs(), few, w))
    assert sparse_product(activations(rng, 1, k, min(1.0, DENSITY * 2)), w) is None
    batch = np.repeat(few, MAX_ROWS + 1, axis=0)
    assert sparse_product(batch[:MAX_ROWS], w) is not None  # same columns: as sparse
    assert sparse_product(batch, w) is None  # past the batch bound: dense, unscanned
    small = pruned(rng, k, MIN_WEIGHT // k - 1, 0.1)
    assert sparse_product(few, small) is None
    assert sparse_product(few[:0], w) is None  # no rows: nothing to scan


def test_pruned_rows_never_count_as_active():
    rng = np.random.default_rng(1)
    w = pruned(rng, 200, 30, 0.5, zero_rows=150)
    x = activations(rng, 1, 200, 1.0)
    rows, xa = active_rows(x, w)
    assert len(rows) == 50 and set(rows) == set(np.flatnonzero(w.any(axis=1)))
    np.testing.assert_array_equal(xa, x[:, rows])


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory, sample_images):
    """LeNet-300-100 pruned to 90% and quantized (int8 weights and activations)."""
    path = str(tmp_path_factory.mktemp("sparse") / "lenet_300_100.int8.bin")
    calibration = {"image": sample_images[0][:64]}
    model = "samples/lenet_300_100.onnx"
    dlcc.compile(model, path, passes="prune(sparsity=0.9),quantize", calibration=calibration)
    return dlcc.load(path)


@pytest.fixture
def sparse_calls(monkeypatch) -> list[bool]:
    """One entry per int8 product the interpreter offered the sparse path: True if taken."""
    calls = []

    def counted(x, w):
        y = sparse_product(x, w)
        calls.append(y is not None)
        return y

    monkeypatch.setattr(interpreter, "sparse_product", counted)
    return calls


@pytest.mark.parametrize("batch", [1, 2, 8, 9, 64])
def test_sparse_and_dense_execution_of_an_int8_bundle_agree(
    int8_bundle, sample_images, sparse_calls, batch
):
    x = sample_images[0][:batch]
    dense = int8_bundle.run(x, target=Interpreter(NumpyEngine(sparse=False)))["logits"]
    assert not sparse_calls
    sparse = int8_bundle.run(x)["logits"]
    np.testing.assert_array_equal(sparse, dense)
    np.testing.assert_array_equal(int8_bundle.run(x, target="systolic")["logits"], sparse)
    if batch > MAX_ROWS:
        assert not any(sparse_calls)


def test_each_digit_alone_runs_as_in_a_batch(int8_bundle, sample_images, sparse_calls):
    x = sample_images[0][:32]
    whole = int8_bundle.run(x, target=Interpreter(NumpyEngine(sparse=False)))["logits"]
    one_by_one = np.concatenate([int8_bundle.run(x[i : i + 1])["logits"] for i in range(32)])
    np.testing.assert_array_equal(one_by_one, whole)
    assert 0 < sum(sparse_calls) < len(sparse_calls)  # some digits sparse, others dense


def test_a_float_bundle_never_runs_sparse(sample_bundles, sample_images, sparse_calls):
    bundle = dlcc.load(sample_bundles["lenet_300_100"])
    x = sample_images[0][:1]
    dense = bundle.run(x, target=Interpreter(NumpyEngine(sparse=False)))["logits"]
    np.testing.assert_array_equal(bundle.run(x)["logits"], dense)
    assert not sparse_calls  # float sums in another order would round differently
