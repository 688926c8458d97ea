"""The onnx package's "light" model zoo, rewritten into runnable, batch-agnostic models.

`onnx/backend/test/data/light/` ships nine ImageNet classifiers (AlexNet ... ZFNet-512) whose
weights are mostly `ConstantOfShape` nodes filling each tensor with 0.02 (a few small real
tensors are kept as they are). `light_model(name, path)` writes a copy that tests and
benchmarks can run at any batch size:

- every weight-producing ConstantOfShape becomes a seeded random initializer sized to keep
  activations in range through deep nets: He-normal weights (std = sqrt(2 / fan_in)),
  scales and variances ~ U(0.5, 1.5), biases, shifts and means ~ N(0, 0.05); the gamma of a
  residual branch is scaled down (`_residual_factor`), so ResNet-50's and ShuffleNet's sums
  do not grow block after block. On standard-normal inputs the largest logit of each model
  is between about 1 and 4e3 in magnitude;
- dim 0 of the data input and of the output becomes the symbolic batch "N", and each Reshape
  of a computed tensor copies dim 0 from its input (0) instead of hard-coding batch 1;
- a final Softmax is removed, so the output is the logits (renamed "logits");
- unused initializers are dropped and no initializer is listed as a graph input.

    from light_models import LIGHT_MODELS, light_model, weight_bytes
    path = light_model("squeezenet", tmp_dir)  # -> tmp_dir/squeezenet.onnx
"""

from __future__ import annotations

import math
import os
import zlib

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
# Short name -> file stem in LIGHT_DIR, smallest models first.
LIGHT_MODELS = {
    "squeezenet": "light_squeezenet",
    "shufflenet": "light_shufflenet",
    "densenet121": "light_densenet121",
    "inception_v1": "light_inception_v1",
    "inception_v2": "light_inception_v2",
    "resnet50": "light_resnet50",
    "alexnet": "light_bvlc_alexnet",
    "zfnet512": "light_zfnet512",
    "vgg19": "light_vgg19",
}
SHIFT_STD = 0.05  # biases, BN shifts and means: small against unit-scale activations
RESIDUAL_GAMMA = 0.2  # gamma factor of a branch added to an identity shortcut

# How a weight is used, by (consumer op, input position).
_ROLES = {
    ("Conv", 1): "weight",
    ("Gemm", 1): "weight",
    ("MatMul", 1): "weight",
    ("Conv", 2): "shift",
    ("Gemm", 2): "shift",
    ("BatchNormalization", 1): "scale",
    ("BatchNormalization", 2): "shift",
    ("BatchNormalization", 3): "shift",
    ("BatchNormalization", 4): "scale",  # variance: positive, around 1
    ("Mul", 1): "scale",
    ("Add", 1): "shift",
}
_PASS_THROUGH = {"Unsqueeze", "Reshape"}  # follow these to the op that really uses the tensor


def light_model(name: str, path: str, seed: int = 0) -> str:
    """Rewrite light model `name` (a key of LIGHT_MODELS) into directory `path`.

    Returns the path of the written `<name>.onnx`. The result is deterministic for a seed.
    """
    model = onnx.load(os.path.join(LIGHT_DIR, LIGHT_MODELS[name] + ".onnx"))
    graph = model.graph
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    inits = {t.name: t for t in graph.initializer}
    _materialize_weights(graph, inits, rng)
    _batch_anywhere(graph, inits)
    _drop_final_softmax(graph)
    _prune_initializers(graph)
    del graph.value_info[:]
    model.ir_version = max(model.ir_version, 4)  # IR >= 4: initializers need not be inputs
    os.makedirs(path, exist_ok=True)
    out = os.path.join(path, f"{name}.onnx")
    onnx.save(model, out)
    return out


def weight_bytes(model_path: str) -> int:
    """Bytes of the float32 initializers of the ONNX file at `model_path`."""
    graph = onnx.load(model_path).graph
    return sum(4 * math.prod(t.dims) for t in graph.initializer if t.data_type == TensorProto.FLOAT)


def data_input(model_path: str) -> tuple[str, tuple[int, ...]]:
    """Name and per-sample shape (without the batch dim) of the model's one data input."""
    (inp,) = onnx.load(model_path).graph.input
    return inp.name, tuple(d.dim_value for d in inp.type.tensor_type.shape.dim[1:])


def _materialize_weights(graph: onnx.GraphProto, inits: dict, rng: np.random.Generator) -> None:
    consumers = _consumers(graph)
    producers = {o: n for n in graph.node for o in n.output}
    for node in [n for n in graph.node if n.op_type == "ConstantOfShape"]:
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
        user, pos = _user(node.output[0], consumers)
        data = _init_values(user, pos, shape, rng)
        if (user.op_type, pos) == ("BatchNormalization", 1):
            data *= np.float32(_residual_factor(user, consumers, producers))
        tensor = numpy_helper.from_array(data, node.output[0])
        graph.initializer.append(tensor)
        inits[tensor.name] = tensor
        graph.node.remove(node)
    kept = [i for i in graph.input if i.name not in inits]
    del graph.input[:]
    graph.input.extend(kept)


def _user(name: str, consumers: dict) -> tuple[onnx.NodeProto, int]:
    """The node (and input position) that uses the weight `name`, past Unsqueeze/Reshape."""
    uses = consumers.get(name, [])
    while len(uses) == 1 and uses[0][0].op_type in _PASS_THROUGH and uses[0][1] == 0:
        uses = consumers.get(uses[0][0].output[0], [])
    if len(uses) != 1 or (uses[0][0].op_type, uses[0][1]) not in _ROLES:
        raise ValueError(f"{name}: no single known use ({[(n.op_type, i) for n, i in uses]})")
    return uses[0]


def _init_values(user: onnx.NodeProto, pos: int, shape: tuple[int, ...], rng) -> np.ndarray:
    role = _ROLES[user.op_type, pos]
    if role == "weight":
        transb = any(a.name == "transB" and a.i for a in user.attribute)
        in_first = user.op_type == "MatMul" or (user.op_type == "Gemm" and not transb)
        fan_in = shape[0] if in_first else math.prod(shape[1:])
        std = math.sqrt(2.0 / fan_in)
    elif role == "scale":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    else:
        std = SHIFT_STD
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def _residual_factor(bn: onnx.NodeProto, consumers: dict, producers: dict) -> float:
    """Scale of the BatchNormalization `bn`'s gamma that keeps residual sums from growing.

    A branch added to an identity shortcut starts small (as in zero-gamma initialization);
    n normalized branches summed are each scaled by 1/sqrt(n). Anything else: 1.
    """
    uses = consumers.get(bn.output[0], [])
    if len(uses) != 1 or uses[0][0].op_type not in ("Sum", "Add"):
        return 1.0
    summands = [producers.get(i) for i in uses[0][0].input]
    if any(p is None or p.op_type == "ConstantOfShape" for p in summands):
        return 1.0  # a bias or scale add, not a residual sum
    if all(p.op_type == "BatchNormalization" for p in summands):
        return 1.0 / math.sqrt(len(summands))
    return RESIDUAL_GAMMA


def _batch_anywhere(graph: onnx.GraphProto, inits: dict) -> None:
    (data,) = graph.input
    data.type.tensor_type.shape.dim[0].dim_param = "N"
    for out in graph.output:
        out.type.tensor_type.shape.dim[0].dim_param = "N"
    for node in graph.node:
        if node.op_type == "Reshape" and node.input[0] not in inits:
            shape = numpy_helper.to_array(inits[node.input[1]]).copy()
            shape[0] = 0
            tensor = numpy_helper.from_array(shape, node.input[1] + "_any_batch")
            graph.initializer.append(tensor)
            inits[tensor.name] = tensor
            node.input[1] = tensor.name


def _drop_final_softmax(graph: onnx.GraphProto) -> None:
    (out,) = graph.output
    (last,) = [n for n in graph.node if out.name in n.output]
    if last.op_type != "Softmax":
        return
    logits = last.input[0]
    graph.node.remove(last)
    for node in graph.node:
        node.output[:] = ["logits" if o == logits else o for o in node.output]
        node.input[:] = ["logits" if i == logits else i for i in node.input]
    out.name = "logits"


def _prune_initializers(graph: onnx.GraphProto) -> None:
    used = {i for n in graph.node for i in n.input}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)


def _consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    uses: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses.setdefault(name, []).append((node, i))
    return uses
