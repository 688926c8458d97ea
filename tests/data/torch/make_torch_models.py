"""Regenerate the small PyTorch-exported ONNX test fixtures in this directory.

Not part of dlcc (needs torch). Run from anywhere:

    python3 tests/data/torch/make_torch_models.py

Each model is built with random (seeded) weights and exported twice:

  {model}_legacy.onnx   torch.onnx.export(..., dynamo=False, opset_version=17)  (TorchScript)
  {model}_dynamo.onnx   torch.onnx.export(..., dynamo=True, dynamic_shapes=...)   (torch.export)

Models (batch dimension symbolic "N" in every file):

  mlp      input x [N, 4, 5] -> x.view(x.size(0), -1) -> Linear(20,32)-ReLU-Linear(32,16)-
           Sigmoid-Linear(16,5) -> y [N, 5]
  cnn      input x [N, 3, 16, 16] -> Conv(3,8,3,p=1)-BatchNorm(eval, non-trivial stats)-ReLU-
           MaxPool(2)-Conv(8,16,3,s=2)-LeakyReLU(0.1)-AvgPool(2)-flatten-Linear(16,10)
           -> y [N, 10] (logits, no softmax)
  lstm     input x [T=5, N, 8] -> LSTM(8,16) -> last step -> Linear(16,4) -> y [N, 4]
  lstm_bi  same with bidirectional=True, Linear(32,4)

The script checks every file with onnx.checker and onnxruntime at batch sizes 1 and 8 against
the torch model, and prints the op types used by each file. Output is byte-for-byte
reproducible on the same torch/onnxscript build (checked with torch 2.13.0+cpu, onnxscript 0.7.2).

Exporter notes (torch 2.13):
  * All four models export with both exporters; nothing is skipped (DYNAMO_SKIP is empty).
  * The dynamo exporter has no opset-17 implementations: it exports at opset 18 and then
    down-converts to 17 with the onnx C API version converter (it logs a warning about this).
  * Both exporters fold the eval-mode BatchNorm into conv1, so no BatchNormalization node is
    left in cnn_*.onnx (legacy: new initializers "onnx::Conv_*"; dynamo: onnxscript rule
    FuseBatchNormIntoConv, which keeps the name "conv1.weight" for the *fused* weights).
  * Only the legacy exporter emits the Shape/Gather/Unsqueeze/Concat/Reshape chain for
    x.view(x.size(0), -1); the dynamo exporter emits Reshape(x, [-1, 20]) with allowzero=1.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import random
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort  # noqa: TID251  (offline fixture generator, not dlcc runtime)
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 17
SEED = 1234


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.fc2 = nn.Linear(32, 16)
        self.fc3 = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Deliberately x.view(x.size(0), -1): the legacy exporter emits a
        # Shape -> Gather -> Unsqueeze -> Concat -> Reshape chain for it.
        x = x.view(x.size(0), -1)
        x = torch.relu(self.fc1(x))
        x = torch.sigmoid(self.fc2(x))
        return self.fc3(x)


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2)
        self.act2 = nn.LeakyReLU(0.1)
        self.pool2 = nn.AvgPool2d(2)
        self.fc = nn.Linear(16 * 1 * 1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(torch.relu(self.bn1(self.conv1(x))))  # [N, 8, 8, 8]
        x = self.pool2(self.act2(self.conv2(x)))  # conv2 -> [N, 16, 3, 3], pool -> [N, 16, 1, 1]
        x = torch.flatten(x, 1)
        return self.fc(x)  # logits


class LSTMHead(nn.Module):
    def __init__(self, bidirectional: bool) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size=8,
            hidden_size=16,
            num_layers=1,
            batch_first=False,
            bidirectional=bidirectional,
        )
        self.fc = nn.Linear(16 * (2 if bidirectional else 1), 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # [T, N, H * dirs]
        return self.fc(out[-1])  # last time step -> [N, 4]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(name: str) -> tuple[nn.Module, torch.Tensor, int]:
    """Return (model in eval mode, example input, index of the batch axis)."""
    if name == "mlp":
        return MLP().eval(), torch.randn(2, 4, 5), 0
    if name == "cnn":
        model = CNN()
        # Give BatchNorm non-trivial running statistics, then freeze it.
        model.train()
        with torch.no_grad():
            for _ in range(5):
                model(torch.randn(16, 3, 16, 16) * 2.0 + 0.5)
        return model.eval(), torch.randn(2, 3, 16, 16), 0
    if name == "lstm":
        return LSTMHead(bidirectional=False).eval(), torch.randn(5, 2, 8), 1
    if name == "lstm_bi":
        return LSTMHead(bidirectional=True).eval(), torch.randn(5, 2, 8), 1
    raise ValueError(name)


def export_legacy(model: nn.Module, x: torch.Tensor, batch_axis: int, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {batch_axis: "N"}, "y": {0: "N"}},
        )


def export_dynamo(model: nn.Module, x: torch.Tensor, batch_axis: int, path: Path) -> None:
    batch = torch.export.Dim("N", min=1, max=1024)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            model,
            (x,),
            dynamo=True,
            opset_version=OPSET,
            input_names=["x"],
            output_names=["y"],
            dynamic_shapes={"x": {batch_axis: batch}},
            external_data=False,
            verbose=False,
        )
        prog.save(str(path), external_data=False)


def shape_of(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def op_types(model: onnx.ModelProto) -> collections.Counter:
    """Op types of the main graph and of any subgraphs (If/Loop/Scan bodies)."""
    counts: collections.Counter = collections.Counter()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[node.op_type if not node.domain else f"{node.domain}::{node.op_type}"] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model.graph)
    for fn in model.functions:  # local functions, if any were left un-inlined
        counts[f"<function {fn.domain}::{fn.name}>"] += 1
    return counts


def verify(model: nn.Module, batch_axis: int, example: torch.Tensor, path: Path) -> None:
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    (inp,) = m.graph.input
    (out,) = m.graph.output
    in_shape, out_shape = shape_of(inp), shape_of(out)
    assert isinstance(in_shape[batch_axis], str), f"{path.name}: batch dim not symbolic {in_shape}"
    assert isinstance(out_shape[0], str), f"{path.name}: output batch not symbolic {out_shape}"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 8):
        shape = list(example.shape)
        shape[batch_axis] = n
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x).numpy()
        (got,) = sess.run(None, {inp.name: x.numpy()})
        assert got.shape == ref.shape, (path.name, got.shape, ref.shape)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=path.name)
    ops = op_types(m)
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    size = path.stat().st_size
    assert size < 200_000, f"{path.name} too large: {size} bytes"
    print(f"{path.name}: {size} bytes, opset {opset}")
    print(f"  input  {inp.name} {in_shape}   output {out.name} {out_shape}")
    print(f"  ops    {dict(sorted(ops.items()))}")


# Models the dynamo exporter could not export (name -> reason); filled in by hand if needed.
DYNAMO_SKIP: dict[str, str] = {}


def main() -> None:
    torch.set_num_threads(2)
    for noisy in ("torch.onnx", "onnxscript"):  # "torchvision is not installed" etc.
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for i, name in enumerate(["mlp", "cnn", "lstm", "lstm_bi"]):
        seed_everything(SEED + i)
        model, example, batch_axis = build(name)
        for exporter in ("legacy", "dynamo"):
            path = HERE / f"{name}_{exporter}.onnx"
            if exporter == "dynamo" and name in DYNAMO_SKIP:
                print(f"{path.name}: skipped ({DYNAMO_SKIP[name]})")
                continue
            torch.manual_seed(SEED + 100 + i)  # fixed verification inputs
            export = export_legacy if exporter == "legacy" else export_dynamo
            export(model, example, batch_axis, path)
            verify(model, batch_axis, example, path)


if __name__ == "__main__":
    main()
