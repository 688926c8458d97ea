"""Fidelity targets: which criterion each output gets, and the share of its allowance used."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sample_path

from dlcc.frontend import import_onnx
from dlcc.passes.fidelity import (
    DEFAULT,
    Fidelity,
    Target,
    criteria,
    graph_outputs,
    is_class_output,
)

LOGITS, MAP = True, False  # class scores or not


@pytest.mark.parametrize(
    "target, shape, first, labelled, expected",
    [
        (DEFAULT, LOGITS, True, False, {"agreement": 0.99}),
        (DEFAULT, MAP, True, False, {"sqnr_db": 25.0}),
        (Target(max_drop=0.01), LOGITS, True, True, {"accuracy": 0.01}),
        (Target(max_drop=0.01), LOGITS, False, True, {"agreement": 0.99}),  # not the first
        (Target(max_drop=0.01), LOGITS, True, False, {"agreement": 0.99}),  # no labels
        (Target(max_drop=0.01), MAP, True, True, {"sqnr_db": 25.0}),
        (Target(sqnr_db=30.0), LOGITS, True, False, {"sqnr_db": 30.0}),
        (Target(agreement=0.9, sqnr_db=30.0), LOGITS, True, False, {"agreement": 0.9}),
        (Target(agreement=0.9, cosine=0.999), MAP, True, False, {"cosine": 0.999}),
        (Target(sqnr_db=20.0, cosine=0.99), MAP, True, False, {"sqnr_db": 20.0, "cosine": 0.99}),
    ],
)
def test_each_output_gets_the_criteria_of_its_kind(target, shape, first, labelled, expected):
    assert criteria(target, shape, first, labelled) == expected


def test_class_scores_are_a_single_output_or_a_softmax():
    from dlcc.ir import Graph, Value

    graph = Graph("g")
    logits, boxes = Value("logits", (1, 10)), Value("boxes", (1, 4))
    graph.outputs = [logits]
    assert is_class_output(graph, logits)
    graph.outputs = [logits, boxes]
    assert not is_class_output(graph, boxes)


@pytest.fixture(scope="module")
def mlp(sample_images):
    graph = import_onnx(sample_path("lenet_300_100.onnx"))
    images, labels = sample_images
    return graph, {"image": images, "labels": labels}


def test_the_original_scores_one_and_each_use_follows_its_formula(mlp):
    graph, data = mlp
    reference = graph_outputs(graph, {"image": data["image"]}, 100)["logits"]
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(reference.shape)
    # noise scaled to exactly 30 dB below the logits' power: SQNR 30 dB uses 10^-0.5 of 25 dB
    noise *= np.sqrt((reference.astype(np.float64) ** 2).sum() / (noise**2).sum() / 1e3)
    moved = {"logits": reference + noise}
    signal = Fidelity(graph, data, Target(sqnr_db=25.0, cosine=0.999))
    assert signal.score({"logits": reference}) == 1.0
    measured = signal.measure(moved)["logits"]
    assert measured["sqnr_db"] == pytest.approx(30.0, abs=0.01)
    cosine = measured["cosine"]
    uses = signal.uses(moved)["logits"]
    assert uses["sqnr_db"] == pytest.approx(10**-0.5, rel=1e-3)
    assert uses["cosine"] == pytest.approx((1 - cosine) / 0.001)
    assert signal.score(moved) == pytest.approx(1 - max(uses.values()))

    flipped = reference.copy()
    flipped[:4] = -flipped[:4]  # 4 of 256 rows change their top-1: agreement 98.4375%
    top1 = Fidelity(graph, data, DEFAULT)
    assert top1.measure({"logits": flipped})["logits"]["agreement"] == 1 - 4 / 256
    assert top1.score({"logits": flipped}) == pytest.approx(1 - (4 / 256) / 0.01)
    accuracy = Fidelity(graph, data, Target(max_drop=0.02))
    assert accuracy.base_accuracy == (reference.argmax(1) == data["labels"]).mean()
    assert accuracy.score({"logits": reference}) == 1.0
    assert "accuracy" in accuracy.describe({"logits": flipped})


def test_a_margin_of_standard_errors_raises_each_loss(mlp):
    graph, data = mlp
    reference = graph_outputs(graph, {"image": data["image"]}, 100)["logits"]
    moved = {"logits": reference * 1.02 + 0.01}
    plain, careful = (Fidelity(graph, data, Target(sqnr_db=25.0, z=z)) for z in (0.0, 2.0))
    _, nsr, se = careful.losses(moved)["logits"]["sqnr_db"]
    noise = ((reference.astype(np.float64) * 0.02 + 0.01) ** 2).reshape(256, -1).sum(1)
    assert se == pytest.approx(
        np.sqrt(256) * noise.std() / (reference.astype(float) ** 2).sum(), rel=1e-4
    )
    allowance = 10**-2.5
    assert careful.uses(moved)["logits"]["sqnr_db"] == pytest.approx((nsr + 2 * se) / allowance)
    assert plain.uses(moved)["logits"]["sqnr_db"] == pytest.approx(nsr / allowance)
    assert careful.score({"logits": reference}) == 1.0  # nothing moved: nothing used
