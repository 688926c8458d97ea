"""finetune and backprop: gradients against finite differences, masks, codebooks, schedules."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from dlcc.frontend import import_onnx
from dlcc.ir import Graph
from dlcc.passes import surgery
from dlcc.passes.backprop import (
    backward,
    forward,
    parameters,
    softmax_cross_entropy,
    trainable_ops,
    untrainable,
)
from dlcc.passes.finetune import with_retraining
from dlcc.passes.manager import PassContext, parse_pipeline, run_pipeline, weight_layers
from dlcc.passes.prune import keep_largest
from dlcc.passes.surgery import schedule
from dlcc.runtime.kernels.activation import ClipAttrs, LeakyReluAttrs, SoftmaxAttrs
from dlcc.runtime.kernels.layout import ExpandAttrs
from dlcc.runtime.kernels.matrix import ConvAttrs
from dlcc.runtime.kernels.normalization import BatchNormAttrs
from dlcc.runtime.kernels.pooling import PoolAttrs
from dlcc.runtime.kernels.tensor import ConcatAttrs, FlattenAttrs, ReshapeAttrs, TransposeAttrs

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "torch")
RNG = np.random.default_rng(7)


def rand(*shape):
    return RNG.standard_normal(shape)


def unary(op, attrs=None, shape=(2, 3, 6, 7)):
    """x -> op -> out, float64."""
    g = Graph()
    x = g.add_input("x", (1, *shape[1:]), 0)
    g.outputs = [g.add(op, [x], attrs).outputs[0]]
    return g, {"x": rand(*shape)}


def binary(op, b_shape, b_positive=False):
    """a [N, 3, 4] op b, with b broadcast (b is a second graph input)."""
    g = Graph()
    a = g.add_input("a", (1, 3, 4), 0)
    b = g.add_input("b", b_shape, None)
    g.outputs = [g.add(op, [a, b]).outputs[0]]
    b_data = rand(*b_shape)
    return g, {"a": rand(2, 3, 4), "b": np.abs(b_data) + 0.5 if b_positive else b_data}


def layer(op, x_shape, w, attrs=None, bias=True):
    """x -> op(w, b) -> out: a Dense or Conv with float64 parameters."""
    g = Graph()
    x = g.add_input("x", (1, *x_shape[1:]), 0)
    b = g.constant("b", rand(w.shape[0] if op == "Conv" else w.shape[1])) if bias else None
    g.outputs = [g.add(op, [x, g.constant("w", w), b], attrs, name="layer").outputs[0]]
    return g, {"x": rand(*x_shape)}


def pool(op, **kw):
    return unary(op, PoolAttrs(**kw))


CASES = {
    "dense": lambda: layer("Dense", (3, 5), rand(5, 4)),
    "dense_3d": lambda: layer("Dense", (2, 3, 5), rand(5, 4), bias=False),
    "conv": lambda: layer("Conv", (2, 3, 7, 6), rand(4, 3, 3, 2), ConvAttrs(pads=(1, 0, 1, 1))),
    "conv_groups": lambda: layer(
        "Conv",
        (2, 4, 9, 8),
        rand(6, 2, 3, 3),
        ConvAttrs(strides=(2, 1), pads=(1, 0, 2, 1), dilations=(1, 2), group=2),
    ),
    "maxpool": lambda: pool("MaxPool", kernel=(3, 2), strides=(2, 2), pads=(1, 0, 1, 1)),
    "maxpool_ceil": lambda: pool("MaxPool", kernel=(2, 2), strides=(2, 2), ceil_mode=1),
    "avgpool": lambda: pool("AveragePool", kernel=(3, 3), strides=(2, 1), pads=(1, 1, 1, 1)),
    "avgpool_pad": lambda: pool(
        "AveragePool", kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=1
    ),
    "globalavg": lambda: unary("GlobalAveragePool"),
    "globalmax": lambda: unary("GlobalMaxPool"),
    "relu": lambda: unary("Relu"),
    "sigmoid": lambda: unary("Sigmoid"),
    "tanh": lambda: unary("Tanh"),
    "leakyrelu": lambda: unary("LeakyRelu", LeakyReluAttrs(0.1)),
    "clip": lambda: unary("Clip", ClipAttrs(-0.5, 0.7)),
    "softmax": lambda: unary("Softmax", SoftmaxAttrs(1), shape=(2, 5, 3)),
    "batchnorm": lambda: batchnorm(),
    "add": lambda: binary("Add", (4,)),
    "add_middle": lambda: binary("Add", (1, 3, 1)),
    "sub": lambda: binary("Sub", (3, 1)),
    "mul": lambda: binary("Mul", (1, 4)),
    "div": lambda: binary("Div", (3, 4), b_positive=True),
    "concat": lambda: concat(),
    "reshape": lambda: unary("Reshape", ReshapeAttrs((0, -1, 2)), shape=(2, 3, 4)),
    "flatten": lambda: unary("Flatten", FlattenAttrs(1)),
    "transpose": lambda: unary("Transpose", TransposeAttrs((0, 2, 3, 1))),
    "where": lambda: where(),
    "expand": lambda: unary("Expand", ExpandAttrs((1, 3, 4)), shape=(2, 1, 4)),
    "chain": lambda: chain(),
}


def batchnorm():
    g = Graph()
    x = g.add_input("x", (1, 3, 4, 4), 0)
    consts = [g.constant(n, v) for n, v in zip("sbmv", (rand(3), rand(3), rand(3), rand(3) ** 2))]
    g.outputs = [g.add("BatchNormalization", [x, *consts], BatchNormAttrs(1e-3)).outputs[0]]
    return g, {"x": rand(2, 3, 4, 4)}


def concat():
    g = Graph()
    a, b = g.add_input("a", (1, 2, 3), 0), g.add_input("b", (1, 4, 3), 0)
    g.outputs = [g.add("Concat", [a, b], ConcatAttrs(1)).outputs[0]]
    return g, {"a": rand(2, 2, 3), "b": rand(2, 4, 3)}


def where():
    """Where(c, a, b): a [N, 3, 4] where the constant mask c [3, 1] holds, b [4] elsewhere."""
    g = Graph()
    a, b = g.add_input("a", (1, 3, 4), 0), g.add_input("b", (4,), None)
    c = g.constant("c", np.array([[True], [False], [True]]))
    g.outputs = [g.add("Where", [c, a, b]).outputs[0]]
    return g, {"a": rand(2, 3, 4), "b": rand(4)}


def chain():
    """Conv -> Relu -> MaxPool -> Flatten -> Dense -> Softmax: trained on the Softmax's input."""
    g = Graph()
    x = g.add_input("x", (1, 2, 6, 6), 0)
    h = g.add("Conv", [x, g.constant("cw", rand(3, 2, 3, 3)), g.constant("cb", rand(3))], name="c")
    h = g.add("Relu", h.outputs)
    h = g.add("MaxPool", h.outputs, PoolAttrs(kernel=(2, 2), strides=(2, 2)))
    h = g.add("Flatten", h.outputs)
    h = g.add("Dense", [*h.outputs, g.constant("dw", rand(12, 5)), g.constant("db", rand(5))])
    g.outputs = [g.add("Softmax", h.outputs, SoftmaxAttrs(-1)).outputs[0]]
    return g, {"x": rand(3, 2, 6, 6)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradients_match_finite_differences(case):
    graph, feeds = CASES[case]()
    params = {k: v.astype(np.float64) for k, v in parameters(graph).items()}
    out, tape = forward(graph, feeds, params)
    weights = rand(*out.shape)  # the loss: sum(out * weights), or cross-entropy for 2-D logits
    labels = RNG.integers(0, out.shape[1], out.shape[0]) if out.ndim == 2 else None

    def loss(feeds, params):
        out = forward(graph, feeds, params)[0]
        return (
            softmax_cross_entropy(out, labels)[0] if labels is not None else (out * weights).sum()
        )

    dout = softmax_cross_entropy(out, labels)[1] if labels is not None else weights
    grads = backward(tape, dout, params, wrt_inputs=True)
    assert set(grads) == set(params) | set(feeds)
    for _ in range(3):  # directional derivatives along random directions of every variable
        df = {k: rand(*np.shape(v)) for k, v in feeds.items()}
        dp = {k: rand(*np.shape(v)) for k, v in params.items()}
        eps = 1e-6
        up = loss(
            {k: v + eps * df[k] for k, v in feeds.items()},
            {k: v + eps * dp[k] for k, v in params.items()},
        )
        down = loss(
            {k: v - eps * df[k] for k, v in feeds.items()},
            {k: v - eps * dp[k] for k, v in params.items()},
        )
        numeric = (up - down) / (2 * eps)
        analytic = sum((grads[k] * df[k]).sum() for k in feeds) + sum(
            (grads[k] * dp[k]).sum() for k in params
        )
        assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-7), case


def test_every_rule_is_exercised():
    exercised = {"Dense", "Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"}
    exercised |= {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Softmax", "BatchNormalization"}
    exercised |= {"Add", "Sub", "Mul", "Div", "Concat", "Reshape", "Flatten", "Transpose"}
    exercised |= {"Where", "Expand"}
    assert trainable_ops() == exercised


# -- the finetune pass ----------------------------------------------------------------------
def mlp(seed=0):
    """A 2-layer MLP and a 3-class synthetic problem it can learn (labels from a random MLP)."""
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input("x", (1, 8), 0)
    h = g.add("Dense", [x, g.constant("w1", rng.normal(0, 0.5, (8, 32)).astype(np.float32))])
    h = g.add("Relu", h.outputs)
    h = g.add(
        "Dense",
        [
            *h.outputs,
            g.constant("w2", rng.normal(0, 0.3, (32, 3)).astype(np.float32)),
            g.constant("b2", np.zeros(3, np.float32)),
        ],
    )
    g.outputs = h.outputs
    data = rng.standard_normal((600, 8)).astype(np.float32)
    labels = (data[:, :3] + 0.3 * data[:, 3:6]).argmax(axis=1)
    return g, {"x": data, "labels": labels}


def tuned(pipeline):
    graph, train = mlp()
    ctx = PassContext(train=train)
    log = run_pipeline(graph, parse_pipeline(pipeline), ctx)
    return graph, log, ctx


def weights(graph):
    return [n.inputs[1] for n in weight_layers(graph)]


def test_loss_decreases_and_epochs_are_reported():
    graph, train = mlp()
    calls = []
    ctx = PassContext(train=train, progress=lambda *call: calls.append(call))
    log = run_pipeline(graph, parse_pipeline("finetune(epochs=6,lr=0.01,batch=32)"), ctx)
    epochs = log[-1]["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 3, 4, 6] and not ctx.notes
    assert epochs[-1]["loss"] < 0.6 * epochs[0]["loss"]
    assert epochs[-1]["accuracy"] > epochs[0]["accuracy"]
    assert log[-1]["layers"]["trains"] == ["weights", "weights"]
    # One call per step (600 / 32 -> 19 per epoch), each epoch's last one with its summary.
    assert [done for _, done, _ in calls] == list(range(1, 6 * 19 + 1))
    assert {total for _, _, total in calls} == {6 * 19}
    assert calls[-1][0].startswith("finetune (epoch 6: loss ") and calls[0][0] == "finetune"


def test_pruned_weights_keep_their_zeros():
    pruned, _, _ = tuned("prune(sparsity=0.6)")
    graph, log, _ = tuned("prune(sparsity=0.6),finetune(epochs=3,lr=0.01,batch=32)")
    for before, after in zip(weights(pruned), weights(graph)):
        np.testing.assert_array_equal(after.data == 0, before.data == 0)
        assert after.encoding == before.encoding
        assert not np.array_equal(after.data, before.data)
    assert log[-1]["layers"]["trains"] == ["sparse", "sparse"]


@pytest.mark.parametrize("prune", ["prune(sparsity=0.5),", ""])
def test_shared_weights_train_their_centroids(prune):
    shared, _, _ = tuned(f"{prune}kmeans(bits=2)")
    graph, _, _ = tuned(f"{prune}kmeans(bits=2),finetune(epochs=3,lr=0.01,batch=32)")
    for before, after in zip(weights(shared), weights(graph)):
        book = np.asarray(after.encoding.codebook)
        assert np.array_equal(np.unique(after.data), book) and len(book) <= 4
        assert not np.array_equal(book, before.encoding.codebook)  # the centroids moved
        # Same clusters: weights that shared a value still do, and pruned zeros stay zero.
        _, old = np.unique(before.data, return_inverse=True)
        _, new = np.unique(after.data, return_inverse=True)
        assert np.array_equal(old, new)
        if prune:
            np.testing.assert_array_equal(after.data == 0, before.data == 0)


def test_same_seed_gives_the_same_bits():
    runs = [tuned(f"prune(sparsity=0.3),finetune(epochs=2,seed={s})")[0] for s in (3, 3, 4)]
    bits = [[w.data.tobytes() for w in weights(g)] for g in runs]
    assert bits[0] == bits[1] and bits[0] != bits[2]


def test_untrainable_op_leaves_the_weights_and_says_which():
    graph = import_onnx(os.path.join(DATA, "lstm_legacy.onnx"))
    assert untrainable(graph) == [("LSTM", "/lstm/LSTM"), ("Gather", "/Gather")]
    before = [v.data.copy() for v in graph.constants()]
    train = {"x": rand(5, 6, 8).astype(np.float32), "labels": np.zeros(6, np.int64)}
    ctx = PassContext(train=train)
    run_pipeline(graph, parse_pipeline("finetune"), ctx)
    assert len(ctx.notes) == 1 and "LSTM (node '/lstm/LSTM')" in ctx.notes[0]
    assert all(np.array_equal(a, v.data) for a, v in zip(before, graph.constants()))


def test_masks_carry_no_gradient_and_do_not_block_retraining():
    """h = x W; y = Where(h > 0, h, 0): the comparison makes a bool, which no gradient
    crosses; dL/dW flows through Where's x alone (a ReLU written as a mask)."""
    g = Graph()
    x = g.add_input("x", (1, 5), 0)
    w = g.constant("w", rand(5, 4))
    (h,) = g.add("Dense", [x, w, None], name="layer").outputs
    zero = g.constant("zero", np.zeros((), np.float64))
    (m,) = g.add("Greater", [h, zero]).outputs
    g.outputs = [g.add("Where", [m, h, zero]).outputs[0]]
    assert untrainable(g) == []
    feeds, params = {"x": rand(3, 5)}, parameters(g)
    out, tape = forward(g, feeds, params)
    dout = rand(*out.shape)
    grads = backward(tape, dout, params)
    hidden = feeds["x"] @ params[("layer", 1)]
    np.testing.assert_allclose(grads[("layer", 1)], feeds["x"].T @ (dout * (hidden > 0)))
    g.outputs = [m]  # bool logits: the comparison would have to pass a gradient
    assert untrainable(g) == [("Greater", m.producer.name)]


def test_without_data_or_after_quantize_it_is_skipped_with_a_note():
    graph, _ = mlp()
    ctx = PassContext()
    run_pipeline(graph, parse_pipeline("finetune"), ctx)
    assert ctx.notes == ["finetune: no --train data; skipped"]
    _, _, ctx = tuned("quantize,finetune")
    assert "before quantize" in ctx.notes[-1]


def test_with_retraining_prunes_while_it_trains_then_trains_the_centroids():
    assert with_retraining("-O3", 4) == (
        "surgery(sparsity=0.95,layers=Conv#0:0.5;#-1:0.8;Dense#1:0.96;Dense#-2:0.98;Conv:0.93,"
        "epochs=4,lr=0.002,distill=0.5,weight_decay=0.1),"
        "kmeans(layers=#-1:8,rate=0.5),finetune(epochs=2,lr=0.0002),quantize,huffman"
    )
    assert with_retraining("prune(sparsity=0.8,layers=#-1:0.5),quantize", 3, seed=5) == (
        "surgery(sparsity=0.8,layers=#-1:0.5,epochs=3,lr=0.002,distill=0.5,weight_decay=0.1,"
        "seed=5),quantize"
    )
    assert with_retraining("prune(quality=1.0),finetune(epochs=9)", 2, seed=5) == (
        "prune(quality=1.0),finetune(epochs=9)"
    )
    assert with_retraining("kmeans(bits=3),quantize", 3, seed=5) == (
        "kmeans(bits=3,rate=0.5),finetune(epochs=2,lr=0.0002,seed=5),quantize"
    )
    assert with_retraining("kmeans(rate=0)", 3).startswith("kmeans(rate=0),finetune(")


@pytest.mark.parametrize(
    "model, rates", [("lenet_300_100", [0.95, 0.96, 0.8]), ("lenet5", [0.5, 0.93, 0.98, 0.8])]
)
def test_retrained_o3_rates_fall_on_the_intended_layers(model, rates):
    from conftest import sample_path

    graph = import_onnx(sample_path(f"{model}.onnx"))
    step = parse_pipeline(with_retraining("-O3", 1)).steps[0]
    nodes = weight_layers(graph)
    assert [surgery.Surgery.for_layer(step.typed(), n, nodes) for n in nodes] == rates


# -- surgery: gradual pruning while retraining -------------------------------------------------
def test_schedule_is_cubic_from_the_start_to_the_target():
    assert schedule(0.2, 0.9, 0) == pytest.approx(0.2)
    assert schedule(0.2, 0.9, 1) == schedule(0.2, 0.9, 1.5) == 0.9
    assert schedule(0.0, 0.8, 0.5) == pytest.approx(0.8 - 0.8 / 8)
    steps = np.diff([schedule(0.0, 0.9, t) for t in np.linspace(0, 1, 11)])
    assert np.all(steps > 0) and np.all(np.diff(steps) < 0)  # fast first, slow near the end


def test_surgery_moves_the_masks_on_the_schedule(monkeypatch):
    calls = []

    def counted(magnitude, sparsity):
        keep = keep_largest(magnitude, sparsity)
        calls.append((magnitude.size, sparsity, keep))
        return keep

    monkeypatch.setattr(surgery, "keep_largest", counted)
    # 600 samples / 32 -> 19 steps an epoch, 152 in all; the ramp ends at step 76, masks move
    # at steps 0, 32, 64 and 76.
    tuned("surgery(sparsity=0.7,layers=#-1:0.5,epochs=8,ramp=0.5,batch=32)")
    for size, target in ((256, 0.7), (96, 0.5)):
        got = [s for n, s, _ in calls if n == size]
        assert got == pytest.approx([schedule(0, target, t) for t in (0, 32 / 76, 64 / 76, 1)])
        masks = [keep for n, _, keep in calls if n == size]
        assert all(np.all(later <= earlier) for earlier, later in zip(masks, masks[1:]))


def test_surgery_ends_at_its_targets_and_beats_pruning_alone():
    pruned, _, _ = tuned("prune(sparsity=0.85)")
    graph, log, ctx = tuned("surgery(sparsity=0.85,epochs=6,lr=0.01,batch=32)")
    for w in weights(graph):
        assert w.encoding.sparse and np.count_nonzero(w.data == 0) == round(0.85 * w.data.size)
    assert log[-1]["layers"]["sparsity"] == [0.8516, 0.8542] and not ctx.notes
    _, train = mlp()
    assert accuracy(graph, train) > accuracy(pruned, train) + 0.1
    # finetune after it keeps its zeros (the encoding is sparse, as prune's)
    again, _, _ = tuned("surgery(sparsity=0.85,epochs=6,lr=0.01,batch=32),finetune(epochs=1)")
    for a, b in zip(weights(graph), weights(again)):
        np.testing.assert_array_equal(a.data == 0, b.data == 0)


def test_surgery_is_deterministic_and_refuses_shared_weights():
    text = "surgery(sparsity=0.6,epochs=2,distill=0.5,seed={})"
    runs = [tuned(text.format(s))[0] for s in (3, 3, 4)]
    bits = [[w.data.tobytes() for w in weights(g)] for g in runs]
    assert bits[0] == bits[1] and bits[0] != bits[2]
    _, _, ctx = tuned("kmeans(bits=2),surgery")
    assert "shared already; run it before kmeans" in ctx.notes[-1]


def test_full_distillation_follows_the_graph_before_the_pass_not_the_labels():
    """distill=1: the loss is the distance to the logits before the pass; the labels drop out."""
    _, train = mlp()
    shuffled = {**train, "labels": (train["labels"] + 1) % 3}
    bits = []
    for data in (train, shuffled):
        graph = mlp()[0]
        run_pipeline(
            graph,
            parse_pipeline("surgery(sparsity=0.5,epochs=2,distill=1)"),
            PassContext(train=data),
        )
        bits.append([w.data.tobytes() for w in weights(graph)])
    assert bits[0] == bits[1]
    assert bits[0] != [w.data.tobytes() for w in weights(tuned("prune(sparsity=0.5)")[0])]


def test_distillation_gradient_matches_finite_differences():
    logits, teacher = rand(4, 5), rand(4, 5)
    labels = RNG.integers(0, 5, 4)
    soft = (teacher, 0.3)
    _, grad, _ = softmax_cross_entropy(logits, labels, soft)
    direction = rand(4, 5)
    eps = 1e-6
    up = softmax_cross_entropy(logits + eps * direction, labels, soft)[0]
    down = softmax_cross_entropy(logits - eps * direction, labels, soft)[0]
    assert (up - down) / (2 * eps) == pytest.approx((grad * direction).sum(), rel=1e-6)
    assert softmax_cross_entropy(teacher, labels, (teacher, 1.0))[0] == pytest.approx(0, abs=1e-12)


def accuracy(graph, train):
    logits = forward(graph, {"x": train["x"]}, parameters(graph))[0]
    return float(np.mean(logits.argmax(axis=1) == train["labels"]))


def test_cli_retraining_is_deterministic_for_a_seed(tmp_path):
    """`dlcc compile -O3 --train T --finetune E --seed S`: same seed, same bundle bytes."""
    from conftest import invoke, sample_path

    train, bundles = sample_path("mnist_test_256.npz"), []
    for i, seed in enumerate((1, 1, 2)):
        out = str(tmp_path / f"{i}.bin")
        args = ("-O3", "--train", train, "--finetune", "1", "--seed", str(seed), "--json")
        result = invoke("compile", sample_path("lenet_300_100.onnx"), "-o", out, *args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["pipeline"].startswith("surgery(")
        with open(out, "rb") as f:
            bundles.append(f.read())
    assert bundles[0] == bundles[1] != bundles[2]
