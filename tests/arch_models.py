"""Real architectures as architecture-only ONNX skeletons, filled with seeded weights.

`tests/data/arch/` holds torch exports of published architectures (MobileNetV3-small,
ResNet-18, EfficientNet-B0, a U-Net, a YOLOv8-style detector, CRNN with LSTM and with GRU, a
BERT encoder, a 1-D conv + GRU audio model), each by both torch exporters, with every learned
float tensor's payload removed (name, dtype and dims kept; marked as external data in a file
that does not exist). See tests/data/arch/README.md and make_architectures.py.

`filled_model(name, tmp_dir)` writes a runnable copy: every stripped tensor gets seeded values
of a realistic scale for the role it plays, found by following the tensor through the
exporters' weight plumbing (Identity, Slice, Concat, Reshape, ...) to the op that reads it:

- Conv / Gemm / MatMul weights: He-normal, std = sqrt(2 / fan_in) (ConvTranspose: fan_in
  = C_in * kernel / stride^2, what one output pixel sums over);
- LSTM / GRU W, R, B: U(-1/sqrt(H), 1/sqrt(H)), PyTorch's own initialization;
- biases, shifts, BatchNorm means, Add/Sub parameters: N(0, 0.05);
- LayerNorm / BatchNorm / InstanceNorm scales, BatchNorm variances, Mul/Div parameters:
  U(0.5, 1.5) (positive, around 1);
- embedding tables (Gather data): N(0, 1), nn.Embedding's initialization.

Everything the skeleton kept (integer tensors such as BERT's position_ids, scalars, Resize
scales) is left exactly as exported. Values depend only on (seed, tensor name), not on order.

    from arch_models import ARCH, filled_model, inputs_at
    path = filled_model("resnet18_legacy", tmp_dir)   # -> tmp_dir/resnet18_legacy.onnx
    feeds = inputs_at("resnet18", 0)                  # {"x": [1, 3, 64, 64] float32}
"""

from __future__ import annotations

import dataclasses
import math
import os
import zlib
from collections import defaultdict

import numpy as np
import onnx
from onnx import numpy_helper

ARCH_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "arch")
EXPORTERS = ("legacy", "dynamo")
SEED = 7
MAX_SKELETON_BYTES = 2_000_000  # no committed file over 2 MB
SHIFT_STD = 0.05

# Ops a weight passes through on its way to the op that reads it (exporter plumbing).
_PLUMBING = {
    "Identity", "Slice", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Transpose", "Split",
    "Cast", "Expand", "Flatten",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Arch:
    """A model: the input shapes at two settings of its symbolic dims (every symbolic dim
    differs between them), what its first output's classes axis is (for top-1 agreement;
    None: SQNR only), and for int64 inputs the vocabulary size."""

    settings: tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]
    classes_axis: int | None = -1
    vocab: int = 0
    calibration_batch: int = 4


ARCH = {
    "mobilenet_v3_small": Arch(({"x": (1, 3, 64, 64)}, {"x": (3, 3, 64, 64)})),
    "resnet18": Arch(({"x": (1, 3, 64, 64)}, {"x": (3, 3, 64, 64)})),
    "efficientnet_b0": Arch(({"x": (1, 3, 64, 64)}, {"x": (3, 3, 64, 64)})),
    "unet": Arch(({"x": (1, 3, 32, 48)}, {"x": (3, 3, 48, 64)}), classes_axis=1),
    "yolo": Arch(({"x": (1, 3, 64, 64)}, {"x": (3, 3, 96, 128)}), classes_axis=None),
    "crnn_lstm": Arch(({"x": (1, 1, 32, 64)}, {"x": (3, 1, 32, 96)})),
    "crnn_gru": Arch(({"x": (1, 1, 32, 64)}, {"x": (3, 1, 32, 96)})),
    "bert": Arch(({"input_ids": (1, 7)}, {"input_ids": (3, 12)}), classes_axis=None, vocab=100),
    "audio_gru": Arch(({"x": (1, 1, 1600)}, {"x": (3, 1, 2400)})),
}


def skeleton_path(case: str) -> str:
    """tests/data/arch/{model}_{exporter}.onnx."""
    return os.path.join(ARCH_DIR, f"{case}.onnx")


def cases() -> list[str]:
    """Every model x exporter, as "{model}_{exporter}"."""
    return [f"{m}_{e}" for m in ARCH for e in EXPORTERS]


def model_of(case: str) -> str:
    return case.rsplit("_", 1)[0]


def load_skeleton(case: str) -> onnx.ModelProto:
    return onnx.load(skeleton_path(case), load_external_data=False)


def stripped(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """The initializers whose payload the skeleton does not hold."""
    return [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


def inputs_at(model: str, setting: int, batch: int | None = None, seed: int = 0) -> dict:
    """Seeded inputs at setting 0 or 1 (`batch` overrides dim 0): standard-normal floats, or
    token ids in [1, vocab) whose last two positions are padding (0) in every other row."""
    spec = ARCH[model]
    rng = np.random.default_rng([seed, setting, zlib.crc32(model.encode())])
    feeds = {}
    for name, shape in spec.settings[setting].items():
        shape = (batch or shape[0], *shape[1:])
        if spec.vocab:
            ids = rng.integers(1, spec.vocab, size=shape)
            ids[::2, -2:] = 0
            feeds[name] = ids.astype(np.int64)
        else:
            feeds[name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _reader(model: onnx.ModelProto, name: str) -> tuple[onnx.NodeProto, int]:
    """The node (and input position) that reads the tensor `name`, past exporter plumbing."""
    users = defaultdict(list)
    for node in model.graph.node:
        for i, x in enumerate(node.input):
            users[x].append((node, i))
    frontier, seen = [name], {name}
    while frontier:
        value = frontier.pop(0)
        for node, i in users[value]:
            if node.op_type not in _PLUMBING:
                return node, i
            for out in node.output:
                if out not in seen:
                    seen.add(out)
                    frontier.append(out)
    raise ValueError(f"initializer {name!r}: no op reads it")


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _values(tensor: onnx.TensorProto, node: onnx.NodeProto, i: int, rng) -> np.ndarray:
    dims = tuple(tensor.dims)
    op = node.op_type
    shift = lambda: rng.normal(0.0, SHIFT_STD, dims)  # noqa: E731
    scale = lambda: rng.uniform(0.5, 1.5, dims)  # noqa: E731
    he = lambda fan_in: rng.normal(0.0, math.sqrt(2.0 / max(fan_in, 1)), dims)  # noqa: E731
    if op in ("Conv", "ConvTranspose") and i == 1:
        if op == "Conv":
            return he(math.prod(dims[1:]))
        stride = math.prod(_attr(node, "strides", [1]))
        return he(dims[0] * math.prod(dims[2:]) / stride)
    if op in ("Gemm", "MatMul") and len(dims) >= 2 and i in (0, 1):
        if op == "Gemm":
            trans = _attr(node, "transB" if i == 1 else "transA", 0)
            return he(dims[1] if trans == (i == 1) else dims[0])
        return he(dims[-2] if i == 1 else dims[-1])
    if op in ("LSTM", "GRU") and i in (1, 2, 3, 5, 6):
        bound = 1.0 / math.sqrt(_attr(node, "hidden_size", 1))
        return rng.uniform(-bound, bound, dims)
    if op == "Gather" and i == 0:
        return rng.standard_normal(dims)
    if op in ("LayerNormalization", "BatchNormalization", "InstanceNormalization"):
        return scale() if i in (1, 4) else shift()
    if op in ("Mul", "Div"):
        return scale()
    if op in ("Conv", "ConvTranspose", "Gemm", "Add", "Sub", "MatMul"):
        return shift()  # biases (Conv/Gemm input 2; dynamo's MatMul + Add)
    if op == "PRelu":
        return rng.uniform(0.1, 0.3, dims)
    raise ValueError(f"initializer {tensor.name!r}: no fill rule for {op} input {i}")


def fill(model: onnx.ModelProto, seed: int = SEED) -> onnx.ModelProto:
    """`model` (a skeleton, changed in place) with every stripped initializer filled."""
    for tensor in stripped(model):
        node, i = _reader(model, tensor.name)
        rng = np.random.default_rng([seed, zlib.crc32(tensor.name.encode())])
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)
        array = _values(tensor, node, i, rng).astype(dtype)
        tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    return model


def filled_model(case: str, directory: str, seed: int = SEED) -> str:
    """Write the skeleton `case` ("{model}_{exporter}") filled with seeded weights into
    `directory`; returns the new file's path."""
    model = fill(load_skeleton(case), seed)
    path = os.path.join(directory, f"{case}.onnx")
    onnx.save(model, path)
    return path
