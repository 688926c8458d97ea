"""Train and export the LSTM MNIST sample model used by dlcc (rows as time steps).

This script is NOT part of dlcc's runtime: it needs torch, which dlcc does not depend on.
It regenerates, next to itself:

  lstm_mnist.onnx   one LSTM layer (hidden 128) reading an image's 28 rows as 28 time steps
                    of 28 pixels; the last step's hidden state -> Linear -> 10 logits

The model takes ``image`` float32 [N, 1, 28, 28] with pixel values x/255, like the other
samples, and returns ``logits`` float32 [N, 10] (no softmax); N is symbolic.

How it was run (from the repository root, torch 2.14.1+cpu, one CPU thread: about 2 minutes):

    python3 samples/train_lstm_mnist.py

It reached 98.80 % test accuracy (onnxruntime, the whole 10k MNIST test set); 82,186
parameters, a 330,890-byte ONNX file.

Training is seeded (torch, numpy, python) with a fixed shuffling generator, so repeated runs
on the same torch build give the same weights.

MNIST: Yann LeCun, Corinna Cortes and Christopher J. C. Burges, CC BY-SA 3.0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_mnist import (  # noqa: E402  (the sibling regenerator: one copy of its helpers)
    DEFAULT_DATA,
    export,
    load_mnist,
    ort_accuracy,
    seed_everything,
    train,
)

SEED = 2
HIDDEN = 128


class LSTMClassifier(nn.Module):
    """image [N, 1, 28, 28] -> rows as time steps -> LSTM(28 -> HIDDEN) -> last h -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(28, HIDDEN, batch_first=True)
        self.fc = nn.Linear(HIDDEN, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x[:, 0])
        return self.fc(y[:, -1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="path to mnist.npz")
    ap.add_argument("--out", type=Path, default=HERE, help="output directory")
    ap.add_argument("--epochs", type=int, default=6)
    args = ap.parse_args()

    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_mnist(args.data)
    seed_everything(SEED)
    model = LSTMClassifier()
    print(f"lstm_mnist: {sum(p.numel() for p in model.parameters())} parameters")
    train(
        model, x_train, y_train, epochs=args.epochs, lr=5e-3, batch=128, weight_decay=0.0,
        seed=SEED,
    )  # fmt: skip
    path = args.out / "lstm_mnist.onnx"
    export(model, path)
    acc = ort_accuracy(path, x_test, y_test)
    print(f"lstm_mnist: onnxruntime test accuracy {acc * 100:.2f}% ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
