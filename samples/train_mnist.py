"""Train and export the two MNIST sample models used by dlcc.

This script is NOT part of dlcc's runtime: it needs torch, which dlcc does not depend on.
It regenerates, next to itself:

  lenet_300_100.onnx   LeNet-300-100 MLP (784-300-100-10, ReLU) of Han et al.
  lenet5.onnx          Caffe LeNet-5 used by Deep Compression (431,080 parameters)
  mnist_test_256.npz   first 256 MNIST test images (float32 [256,1,28,28], x/255) + labels

Both models take input ``image`` float32 [N, 1, 28, 28] with pixel values x/255 (no mean/std
normalisation) and return ``logits`` float32 [N, 10] (no softmax); N is symbolic.

How it was run (from the repository root, torch 2.13.0+cpu, onnx 1.23.2,
onnxruntime 1.31.1, 2 CPU cores: about 2 minutes in total, 4 on a busy machine):

    python3 samples/train_mnist.py

Accuracies it reached, measured with onnxruntime on the whole 10k MNIST test set:

    lenet_300_100.onnx   98.44 %  (Adam + one-cycle LR, 12 epochs)
    lenet5.onnx          99.36 %  (Adam + one-cycle LR, 6 epochs)

Training is seeded (torch, numpy, python) and uses a fixed shuffling generator, so repeated
runs on the same torch build give the same weights; other torch builds/CPUs may differ in the
last bits.

MNIST: Yann LeCun, Corinna Cortes and Christopher J. C. Burges, CC BY-SA 3.0.
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort  # noqa: TID251  (offline script, not dlcc runtime)
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DATA = REPO / ".." / "shared" / "data" / "mnist.npz"
SEED = 0


class LeNet300100(nn.Module):
    """LeNet-300-100 (Han et al. 2015): 784-300-100-10 fully connected, ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe LeNet (examples/mnist/lenet.prototxt), as pruned in Deep Compression.

    conv1 20@5x5 -> maxpool 2x2 -> conv2 50@5x5 -> maxpool 2x2 -> ip1 500 + ReLU -> ip2 10.
    As in Caffe there is no non-linearity after the convolutions.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def load_mnist(path: Path):
    d = np.load(path)
    x_train = (d["x_train"].astype(np.float32) / 255.0)[:, None, :, :]
    x_test = (d["x_test"].astype(np.float32) / 255.0)[:, None, :, :]
    y_train = d["y_train"].astype(np.int64)
    y_test = d["y_test"].astype(np.int64)
    return x_train, y_train, x_test, y_test


def train(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    lr: float,
    batch: int,
    weight_decay: float,
    seed: int,
) -> None:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for ep in range(epochs):
        t0 = time.time()
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"  epoch {ep + 1}/{epochs}: loss {total / len(xt):.4f} ({time.time() - t0:.1f}s)")
    model.eval()


def export(model: nn.Module, path: Path) -> None:
    model.eval()
    dummy = torch.zeros(1, 1, 28, 28)
    with warnings.catch_warnings():
        # "You are using the legacy TorchScript-based ONNX export": intended here.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
        )
    onnx.checker.check_model(onnx.load(str(path)))


def ort_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    preds = []
    for i in range(0, len(x), 1000):
        (logits,) = sess.run(["logits"], {"image": x[i : i + 1000]})
        preds.append(logits.argmax(1))
    return float((np.concatenate(preds) == y).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path to mnist.npz")
    ap.add_argument("--out", type=Path, default=HERE, help="output directory")
    args = ap.parse_args()

    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = load_mnist(args.data)
    args.out.mkdir(parents=True, exist_ok=True)

    specs = [
        ("lenet_300_100", LeNet300100, dict(epochs=12, lr=2e-3, batch=128, weight_decay=0.0)),
        ("lenet5", LeNet5, dict(epochs=6, lr=2e-3, batch=128, weight_decay=0.0)),
    ]
    results = {}
    for i, (name, cls, hp) in enumerate(specs):
        seed_everything(SEED + i)
        model = cls()
        nparams = sum(p.numel() for p in model.parameters())
        print(f"{name}: {nparams} parameters, {hp}")
        train(model, x_train, y_train, seed=SEED + i, **hp)
        path = args.out / f"{name}.onnx"
        export(model, path)
        acc = ort_accuracy(path, x_test, y_test)
        results[name] = acc
        print(
            f"{name}: onnxruntime test accuracy {acc * 100:.2f}% "
            f"({path.name}, {path.stat().st_size} bytes)"
        )

    npz = args.out / "mnist_test_256.npz"
    np.savez_compressed(
        npz, image=np.ascontiguousarray(x_test[:256]), labels=y_test[:256].astype(np.int64)
    )
    print(f"wrote {npz.name} ({npz.stat().st_size} bytes)")
    for name, acc in results.items():
        print(f"{name}.onnx: {acc * 100:.2f}%")


if __name__ == "__main__":
    main()
