"""Regenerate the architecture-only ONNX skeletons in this directory.

Not part of dlcc (needs torch and torchvision). Run from anywhere:

    python3 tests/data/arch/make_architectures.py [NAME ...]

Checked with torch 2.14.1+cu130 (run on the CPU), torchvision 0.29.1, onnxscript 0.7.2,
onnx 1.23.2 and onnxruntime 1.32.0 (`pip install torch==2.14.1 torchvision==0.29.1 onnxscript`).

Each model below is built from its published definition, given seeded random weights (with
non-trivial BatchNorm statistics, and no parameter left at one constant value: see build()),
and exported twice with its dynamic dims left symbolic:

  {name}_legacy.onnx   torch.onnx.export(..., dynamo=False, dynamic_axes=...), opset 17
                       (TorchScript)
  {name}_dynamo.onnx   torch.onnx.export(..., dynamo=True, dynamic_shapes=...), opset 18
                       (torch.export; its native opset, see DYNAMO_OPSET). nn.LSTM and nn.GRU
                       go through a shim that keeps their time axis symbolic (see rnn_shim)

Every export is checked before stripping: onnx's checker, its symbolic dims, and onnxruntime
against torch at two values of every symbolic dim (max |error| <= 1e-4 of the output's max).

Then it is stripped to an ARCHITECTURE-ONLY skeleton (see README.md): each float tensor of at
least 2 elements that is not Resize geometry (so: every learned weight, bias, norm parameter
and embedding table) keeps its name, dtype and dims but loses its payload; it is marked as
ONNX external data in a file `{stem}.weights` that is never written, so
`onnx.load(path, load_external_data=False)` reads the skeleton and tests/arch_models.py fills
the payloads with seeded values. Everything else (integer and bool tensors such as position
ids, shape constants and indices; scalars; Resize scales; Pad amounts) keeps its exact value,
so the graph computes what torch's did. The exporters' debugging metadata (source stack traces,
graph signature and range constraints in metadata_props; doc strings) is dropped. The output
is byte-for-byte reproducible on the versions above.

Models (batch "batch" symbolic everywhere; the other symbols as listed):

  mobilenet_v3_small  torchvision.models.mobilenet_v3_small(), x [batch, 3, 64, 64] -> [batch, 1000]
  resnet18            torchvision.models.resnet18(),           x [batch, 3, 64, 64] -> [batch, 1000]
  efficientnet_b0     torchvision.models.efficientnet_b0() (MBConv + SqueezeExcitation),
                      x [batch, 3, 64, 64] -> [batch, 1000]
  unet                a two-level U-Net (milesial/Pytorch-UNet's DoubleConv blocks): MaxPool
                      down, up by ConvTranspose2d(k=2, s=2) then by F.interpolate(scale 2,
                      bilinear), Concat skip connections; x [batch, 3, H, W] -> [batch, 2, H, W]
  yolo                a YOLOv8-style detector at tiny width (Ultralytics' Conv/C2f/SPPF/Detect/
                      DFL): C2f's chunk(2) -> Split, Upsample(nearest) -> Resize, Concat, a
                      three-level head with DFL softmax and in-graph anchors (make_anchors:
                      arange over each level's H, W), boxes decoded with dist2bbox; x [batch, 3,
                      H, W] (H, W multiples of 32) -> [batch, 4 + 4 classes, anchors]
  crnn_lstm           meijieru/crnn.pytorch's CRNN (7 conv layers, channels scaled down, 2x
                      BidirectionalLSTM: `recurrent.view(T * b, h)` -> Linear -> `view(T, b, -1)`),
                      x [batch, 1, 32, W] -> [T = W/4 + 1, batch, 37]
  crnn_gru            the same with nn.GRU in place of nn.LSTM
  bert                a 2-layer BERT encoder after HF's BertModel (hidden 64, 4 heads, vocab 100):
                      word + position embeddings (position_ids a registered buffer sliced to the
                      sequence), LayerNorm, GELU (erf), attention MatMuls, a padding mask
                      (input_ids != 0) applied with masked_fill -> Where, a tanh pooler;
                      input_ids int64 [batch, seq] -> last_hidden_state [batch, seq, 64],
                      pooler_output [batch, 64]
  audio_gru           a 1-D conv + GRU frame classifier: F.pad reflect (centering), Conv1d
                      filterbank, BatchNorm1d, causal F.pad (constant), Conv1d, GRU, Linear,
                      sigmoid; x [batch, 1, samples] -> [batch, frames, 2]
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import math
import random
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort  # noqa: TID251  (offline fixture generator, not dlcc runtime)
import torch
import torch.nn.functional as F
import torchvision
from onnx import external_data_helper
from torch import nn

HERE = Path(__file__).resolve().parent
OPSET = 17  # legacy exporter
# The dynamo exporter's files keep its native opset 18: asked for 17 it down-converts with onnx's
# version converter, which leaves Split's `num_outputs` (opset 18 only) in yolo's C2f chunks,
# an invalid model at 17 (checker: "Unrecognized attribute: num_outputs for operator Split").
DYNAMO_OPSET = 18
SEED = 2024
MAX_BYTES = 2_000_000  # the commit-size rule; the skeletons stay far below it
# Float tensors read here are not learned weights but geometry (Resize's roi and scales):
# they keep their values. Every other float tensor of >= 2 elements is a learned weight,
# read directly (Conv, Gemm, MatMul, LayerNormalization, an embedding's Gather, a bias Add)
# or through the exporters' weight plumbing (legacy: Identity copies of shared weights;
# dynamo: Slice/Concat of torch's LSTM/GRU gate blocks into ONNX's W, R, B).
GEOMETRY_OPS = {"Resize", "Upsample"}


# --------------------------------------------------------------------------- U-Net


class DoubleConv(nn.Sequential):
    """(conv 3x3 -> BN -> ReLU) x 2, as milesial/Pytorch-UNet's unet_parts.DoubleConv."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    def __init__(self, cin: int = 3, classes: int = 2, base: int = 8) -> None:
        super().__init__()
        self.inc = DoubleConv(cin, base)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(base, 2 * base))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(2 * base, 4 * base))
        self.up1 = nn.ConvTranspose2d(4 * base, 2 * base, kernel_size=2, stride=2)
        self.conv_up1 = DoubleConv(4 * base, 2 * base)
        self.conv_up2 = DoubleConv(3 * base, base)
        self.outc = nn.Conv2d(base, classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        u = self.conv_up1(torch.cat([x2, self.up1(x3)], dim=1))
        u = F.interpolate(u, scale_factor=2.0, mode="bilinear", align_corners=False)
        u = self.conv_up2(torch.cat([x1, u], dim=1))
        return self.outc(u)


# --------------------------------------------------------------------------- YOLOv8-style


def autopad(k: int, p: int | None = None) -> int:
    return k // 2 if p is None else p


class Conv(nn.Module):
    """Ultralytics' Conv: Conv2d(bias=False) -> BatchNorm2d -> SiLU."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k), bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3)
        self.cv2 = Conv(c2, c2, 3)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C2f(nn.Module):
    """CSP bottleneck with 2 convolutions; cv1's output is chunked in two (-> Split)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = False) -> None:
        super().__init__()
        self.c = c2 // 2
        self.cv1 = Conv(c1, 2 * self.c, 1)
        self.cv2 = Conv((2 + n) * self.c, c2, 1)
        self.m = nn.ModuleList(Bottleneck(self.c, self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).chunk(2, 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1)
        self.cv2 = Conv(c_ * 4, c2, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class DFL(nn.Module):
    """Distribution focal loss integral: softmax over reg_max bins, then their expectation."""

    def __init__(self, c1: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, 1, 1, bias=False).requires_grad_(False)
        self.conv.weight.data[:] = torch.arange(c1, dtype=torch.float).view(1, c1, 1, 1)
        self.c1 = c1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        return self.conv(x.view(b, 4, self.c1, a).transpose(2, 1).softmax(1)).view(b, 4, a)


def make_anchors(feats: list[torch.Tensor], strides: tuple[int, ...], offset: float = 0.5):
    """Anchor points and strides from the feature maps' sizes (Ultralytics' tal.make_anchors)."""
    anchor_points, stride_tensor = [], []
    dtype, device = feats[0].dtype, feats[0].device
    for i, stride in enumerate(strides):
        _, _, h, w = feats[i].shape
        sx = torch.arange(end=w, device=device, dtype=dtype) + offset
        sy = torch.arange(end=h, device=device, dtype=dtype) + offset
        sy, sx = torch.meshgrid(sy, sx, indexing="ij")
        anchor_points.append(torch.stack((sx, sy), -1).view(-1, 2))
        stride_tensor.append(torch.full((h * w, 1), stride, dtype=dtype, device=device))
    return torch.cat(anchor_points), torch.cat(stride_tensor)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor, dim: int = 1) -> torch.Tensor:
    lt, rb = distance.chunk(2, dim)
    x1y1 = anchor_points - lt
    x2y2 = anchor_points + rb
    return torch.cat(((x1y1 + x2y2) / 2, x2y2 - x1y1), dim)


class Detect(nn.Module):
    def __init__(self, nc: int, ch: tuple[int, ...], strides: tuple[int, ...], reg_max: int = 8):
        super().__init__()
        self.nc, self.reg_max, self.no = nc, reg_max, nc + 4 * reg_max
        self.strides = strides
        c2, c3 = max(16, ch[0] // 4, 4 * reg_max), max(ch[0], min(nc, 100))
        self.cv2 = nn.ModuleList(
            nn.Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 * reg_max, 1))
            for x in ch
        )
        self.cv3 = nn.ModuleList(
            nn.Sequential(Conv(x, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for x in ch
        )
        self.dfl = DFL(reg_max)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        xs = [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(xs)]
        b = xs[0].shape[0]
        anchors, strides = (t.transpose(0, 1) for t in make_anchors(xs, self.strides))
        x_cat = torch.cat([xi.view(b, self.no, -1) for xi in xs], 2)
        box, cls = x_cat.split((self.reg_max * 4, self.nc), 1)
        dbox = dist2bbox(self.dfl(box), anchors.unsqueeze(0), dim=1) * strides
        return torch.cat((dbox, cls.sigmoid()), 1)


class YOLO(nn.Module):
    """A YOLOv8 layout (backbone, PAN neck, three-level Detect) at widths 8..64."""

    def __init__(self, nc: int = 4) -> None:
        super().__init__()
        self.b0 = Conv(3, 8, 3, 2)  # P1/2
        self.b1 = Conv(8, 16, 3, 2)  # P2/4
        self.b2 = C2f(16, 16, 1, True)
        self.b3 = Conv(16, 32, 3, 2)  # P3/8
        self.b4 = C2f(32, 32, 1, True)
        self.b5 = Conv(32, 64, 3, 2)  # P4/16
        self.b6 = C2f(64, 64, 1, True)
        self.b7 = Conv(64, 64, 3, 2)  # P5/32
        self.b8 = C2f(64, 64, 1, True)
        self.b9 = SPPF(64, 64, 5)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.h12 = C2f(128, 64, 1)
        self.h15 = C2f(96, 32, 1)  # P3 out
        self.h16 = Conv(32, 32, 3, 2)
        self.h18 = C2f(96, 64, 1)  # P4 out
        self.h19 = Conv(64, 64, 3, 2)
        self.h21 = C2f(128, 64, 1)  # P5 out
        self.detect = Detect(nc, (32, 64, 64), (8, 16, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b2(self.b1(self.b0(x)))
        p3 = self.b4(self.b3(x))
        p4 = self.b6(self.b5(p3))
        p5 = self.b9(self.b8(self.b7(p4)))
        h12 = self.h12(torch.cat([self.up(p5), p4], 1))
        o3 = self.h15(torch.cat([self.up(h12), p3], 1))
        o4 = self.h18(torch.cat([self.h16(o3), h12], 1))
        o5 = self.h21(torch.cat([self.h19(o4), p5], 1))
        return self.detect([o3, o4, o5])


# --------------------------------------------------------------------------- CRNN


class BidirectionalRNN(nn.Module):
    """crnn.pytorch's BidirectionalLSTM (optionally a GRU): fold T*b for the Linear."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int, rnn: type = nn.LSTM) -> None:
        super().__init__()
        self.rnn = rnn(n_in, n_hidden, bidirectional=True)
        self.embedding = nn.Linear(n_hidden * 2, n_out)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        recurrent, _ = self.rnn(input)
        T, b, h = recurrent.size()
        t_rec = recurrent.view(T * b, h)
        output = self.embedding(t_rec)  # [T * b, nOut]
        return output.view(T, b, -1)


class CRNN(nn.Module):
    """crnn.pytorch's models/crnn.py (Shi et al., 2015) with its channels divided by 4."""

    def __init__(self, img_h=32, nc=1, nclass=37, nh=32, rnn: type = nn.LSTM) -> None:
        super().__init__()
        assert img_h % 16 == 0, "imgH has to be a multiple of 16"
        ks = [3, 3, 3, 3, 3, 3, 2]
        ps = [1, 1, 1, 1, 1, 1, 0]
        ss = [1, 1, 1, 1, 1, 1, 1]
        nm = [16, 32, 64, 64, 128, 128, 128]
        cnn = nn.Sequential()

        def conv_relu(i: int, batch_normalization: bool = False) -> None:
            n_in = nc if i == 0 else nm[i - 1]
            cnn.add_module(f"conv{i}", nn.Conv2d(n_in, nm[i], ks[i], ss[i], ps[i]))
            if batch_normalization:
                cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(nm[i]))
            cnn.add_module(f"relu{i}", nn.ReLU(True))

        conv_relu(0)
        cnn.add_module("pooling0", nn.MaxPool2d(2, 2))  # 16 x W/2
        conv_relu(1)
        cnn.add_module("pooling1", nn.MaxPool2d(2, 2))  # 8 x W/4
        conv_relu(2, True)
        conv_relu(3)
        cnn.add_module("pooling2", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))  # 4 x W/4+1
        conv_relu(4, True)
        conv_relu(5)
        cnn.add_module("pooling3", nn.MaxPool2d((2, 2), (2, 1), (0, 1)))  # 2 x W/4+2
        conv_relu(6, True)  # 1 x W/4+1
        self.cnn = cnn
        self.rnn = nn.Sequential(
            BidirectionalRNN(nm[6], nh, nh, rnn), BidirectionalRNN(nh, nh, nclass, rnn)
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        conv = self.cnn(input)
        b, c, h, w = conv.size()
        assert h == 1, "the height of conv must be 1"
        conv = conv.squeeze(2)
        conv = conv.permute(2, 0, 1)  # [w, b, c]
        return self.rnn(conv)


# --------------------------------------------------------------------------- BERT


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_positions: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(0.1)
        self.register_buffer(
            "position_ids", torch.arange(max_positions).expand((1, -1)), persistent=False
        )

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        seq_length = input_ids.size(1)
        position_ids = self.position_ids[:, :seq_length]
        embeddings = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(embeddings))


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.num_attention_heads = heads
        self.attention_head_size = hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(0.1)

    def transpose_for_scores(self, x: torch.Tensor) -> torch.Tensor:
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden_states: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q = self.transpose_for_scores(self.query(hidden_states))
        k = self.transpose_for_scores(self.key(hidden_states))
        v = self.transpose_for_scores(self.value(hidden_states))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        probs = self.dropout(nn.functional.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        new_shape = context.size()[:-2] + (self.num_attention_heads * self.attention_head_size,)
        return context.view(new_shape)


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int) -> None:
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.attention_output = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-12)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention_output(self.attention(x, keep)))
        return self.output_norm(x + self.output(self.act(self.intermediate(x))))


class Bert(nn.Module):
    def __init__(self, vocab=100, hidden=64, layers=2, heads=4, intermediate=256, max_pos=64):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, hidden, max_pos)
        self.layer = nn.ModuleList(BertLayer(hidden, heads, intermediate) for _ in range(layers))
        self.pooler = nn.Linear(hidden, hidden)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keep = (input_ids != 0)[:, None, None, :]  # padding mask, [batch, 1, 1, seq]
        x = self.embeddings(input_ids)
        for layer in self.layer:
            x = layer(x, keep)
        return x, torch.tanh(self.pooler(x[:, 0]))


# --------------------------------------------------------------------------- audio


class AudioGRU(nn.Module):
    """Waveform -> learned 1-D filterbank -> GRU -> per-frame probabilities (a VAD shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 16, kernel_size=32, stride=8)
        self.bn1 = nn.BatchNorm1d(16)
        self.conv2 = nn.Conv1d(16, 32, kernel_size=3, stride=2)
        self.gru = nn.GRU(32, 32, batch_first=True)
        self.fc = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (16, 16), mode="reflect")  # centred frames, as torch.stft(center=True)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.pad(x, (2, 0))  # causal: the frame never sees the future
        x = F.relu(self.conv2(x)).transpose(1, 2)  # [batch, frames, 32]
        y, _ = self.gru(x)
        return torch.sigmoid(self.fc(y))


# --------------------------------------------------------------------------- the table


class Spec:
    """One model: how to build it, its inputs (name, example shape, dtype), its symbolic axes
    per input (axis -> symbol), output names and axes, and the second value of each symbol."""

    def __init__(self, build, inputs, axes, outputs, out_axes, second, multiple=None):
        self.build = build
        self.inputs = inputs  # [(name, shape, "float32" | "int64")]
        self.axes = axes  # {input name: {axis: symbol}}
        self.outputs = outputs  # [name]
        self.out_axes = out_axes  # {output name: {axis: symbol}} (legacy exporter's names)
        self.second = second  # {symbol: another value}
        self.multiple = multiple or {}  # {symbol: the value must be a multiple of this}


IMAGE = [("x", (2, 3, 64, 64), "float32")]
BATCH = {"x": {0: "batch"}}
SPECS = {
    "mobilenet_v3_small": Spec(
        torchvision.models.mobilenet_v3_small, IMAGE, BATCH, ["logits"],
        {"logits": {0: "batch"}}, {"batch": 3},
    ),
    "resnet18": Spec(
        torchvision.models.resnet18, IMAGE, BATCH, ["logits"], {"logits": {0: "batch"}},
        {"batch": 3},
    ),
    "efficientnet_b0": Spec(
        torchvision.models.efficientnet_b0, IMAGE, BATCH, ["logits"], {"logits": {0: "batch"}},
        {"batch": 3},
    ),
    "unet": Spec(
        UNet, [("x", (2, 3, 32, 48), "float32")], {"x": {0: "batch", 2: "H", 3: "W"}},
        ["mask"], {"mask": {0: "batch", 2: "H", 3: "W"}}, {"batch": 3, "H": 48, "W": 64},
        {"H": 4, "W": 4},
    ),
    "yolo": Spec(
        YOLO, [("x", (2, 3, 64, 64), "float32")], {"x": {0: "batch", 2: "H", 3: "W"}},
        ["boxes"], {"boxes": {0: "batch", 2: "anchors"}}, {"batch": 3, "H": 96, "W": 128},
        {"H": 32, "W": 32},
    ),
    "crnn_lstm": Spec(
        lambda: CRNN(rnn=nn.LSTM), [("x", (2, 1, 32, 64), "float32")],
        {"x": {0: "batch", 3: "W"}}, ["logits"], {"logits": {0: "T", 1: "batch"}},
        {"batch": 3, "W": 96}, {"W": 4},
    ),
    "crnn_gru": Spec(
        lambda: CRNN(rnn=nn.GRU), [("x", (2, 1, 32, 64), "float32")],
        {"x": {0: "batch", 3: "W"}}, ["logits"], {"logits": {0: "T", 1: "batch"}},
        {"batch": 3, "W": 96}, {"W": 4},
    ),
    "bert": Spec(
        Bert, [("input_ids", (2, 7), "int64")], {"input_ids": {0: "batch", 1: "seq"}},
        ["last_hidden_state", "pooler_output"],
        {"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}},
        {"batch": 3, "seq": 12},
    ),
    "audio_gru": Spec(
        AudioGRU, [("x", (2, 1, 1600), "float32")], {"x": {0: "batch", 2: "samples"}},
        ["probs"], {"probs": {0: "batch", 1: "frames"}}, {"batch": 3, "samples": 2400},
    ),
}  # fmt: skip


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build(name: str) -> nn.Module:
    """The model with seeded weights and non-trivial BatchNorm statistics, in eval mode.

    Parameters initialized to one constant (zero biases, LayerNorm's ones) are perturbed, as
    training would: both exporters merge identical initializers (all five LayerNorms would share
    one gamma) and the dynamo exporter drops all-zero biases, neither of which a trained model
    shows."""
    model = SPECS[name].build()
    with torch.no_grad():
        for p in model.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.add_(torch.randn_like(p) * 0.05)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.1)
    return model.eval()


def example_inputs(spec: Spec, second: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs at the example shape, or with every symbol at its second value."""
    arrays = []
    for name, shape, dtype in spec.inputs:
        shape = list(shape)
        if second:
            for axis, symbol in spec.axes[name].items():
                shape[axis] = spec.second[symbol]
        if dtype == "int64":
            ids = rng.integers(1, 100, size=shape)
            ids[:, -2:] = 0  # padding at the end of every sequence: the mask matters
            arrays.append(ids.astype(np.int64))
        else:
            arrays.append(rng.standard_normal(shape).astype(np.float32))
    return arrays


def export_legacy(model: nn.Module, spec: Spec, path: Path) -> None:
    args = tuple(torch.from_numpy(a) for a in example_inputs(spec, False, np.random.default_rng(0)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[n for n, _, _ in spec.inputs],
            output_names=spec.outputs,
            dynamic_axes={**spec.axes, **spec.out_axes},
        )


# --------------------------------------------------------------------------- RNN shim
#
# torch.export cannot keep an RNN's time axis symbolic: aten.lstm / aten.gru get their output
# shapes from a decomposition that loops over the time steps, so the sequence length is
# specialized to the example's (pytorch/pytorch#115092; with a derived dim such as CRNN's
# T = W/4 + 1 it happens silently and the ONNX Reshape after the RNN hard-codes T). During a
# dynamo export, nn.LSTM and nn.GRU therefore call these custom ops instead: the same math
# (they run aten.lstm / aten.gru), a fake implementation with symbolic shapes, and as ONNX
# translation onnxscript's own aten_lstm / aten_gru, i.e. exactly the nodes the exporter emits
# for nn.LSTM / nn.GRU, only without the frozen time axis.


@torch.library.custom_op("dlcc_arch::lstm", mutates_args=())
def _lstm_op(
    input: torch.Tensor,
    hx: list[torch.Tensor],
    params: list[torch.Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out = torch.ops.aten.lstm.input(
        input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first
    )
    return tuple(t.clone() for t in out)


@_lstm_op.register_fake
def _lstm_fake(
    input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first
):
    out = _rnn_output(input, hx[0], bidirectional, batch_first)
    return out, hx[0].new_empty(hx[0].shape), hx[1].new_empty(hx[1].shape)


@torch.library.custom_op("dlcc_arch::gru", mutates_args=())
def _gru_op(
    input: torch.Tensor,
    hx: torch.Tensor,
    params: list[torch.Tensor],
    has_biases: bool,
    num_layers: int,
    dropout: float,
    train: bool,
    bidirectional: bool,
    batch_first: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.ops.aten.gru.input(
        input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first
    )
    return tuple(t.clone() for t in out)


@_gru_op.register_fake
def _gru_fake(
    input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first
):
    return _rnn_output(input, hx, bidirectional, batch_first), hx.new_empty(hx.shape)


def _rnn_output(input, h0, bidirectional, batch_first):
    width = (2 if bidirectional else 1) * h0.shape[2]
    return input.new_empty((*input.shape[:2], width))


class _RnnVF:
    """Stands in for torch._VF inside torch.nn.modules.rnn during a dynamo export."""

    def __init__(self, vf) -> None:
        self._vf = vf

    def __getattr__(self, name: str):
        return getattr(self._vf, name)

    def lstm(self, input, hx, params, *flags):
        if isinstance(params, torch.Tensor):  # the packed-sequence overload
            return self._vf.lstm(input, hx, params, *flags)
        return _lstm_op(input, list(hx), list(params), *flags)

    def gru(self, input, hx, params, *flags):
        if isinstance(params, torch.Tensor):
            return self._vf.gru(input, hx, params, *flags)
        return _gru_op(input, hx, list(params), *flags)


@contextlib.contextmanager
def rnn_shim():
    import torch.nn.modules.rnn as rnn

    saved = rnn._VF
    rnn._VF = _RnnVF(saved)
    try:
        yield
    finally:
        rnn._VF = saved


def rnn_translations() -> dict:
    from onnxscript.function_libs.torch_lib.ops.core import aten_gru, aten_lstm

    return {torch.ops.dlcc_arch.lstm.default: aten_lstm, torch.ops.dlcc_arch.gru.default: aten_gru}


def export_dynamo(model: nn.Module, spec: Spec, path: Path) -> None:
    args = tuple(torch.from_numpy(a) for a in example_inputs(spec, False, np.random.default_rng(0)))
    dims = {}
    for symbol in {s for axes in spec.axes.values() for s in axes.values()}:
        step = spec.multiple.get(symbol, 1)
        if step == 1:
            dims[symbol] = torch.export.Dim(symbol, min=1, max=4096)
        else:  # torch.export needs the divisibility spelled out as a derived dim
            dims[symbol] = step * torch.export.Dim(f"{symbol}_{step}", min=1, max=4096 // step)
    dynamic_shapes = tuple(  # positional: forward()'s own argument names vary
        {axis: dims[symbol] for axis, symbol in spec.axes[name].items()}
        for name, _, _ in spec.inputs
    )
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), rnn_shim():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(
            model,
            args,
            dynamo=True,
            custom_translation_table=rnn_translations(),
            opset_version=DYNAMO_OPSET,
            input_names=[n for n, _, _ in spec.inputs],
            output_names=spec.outputs,
            dynamic_shapes=dynamic_shapes,
            external_data=False,
            verbose=False,
        )
        prog.save(str(path), external_data=False)


def shape_of(vi: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]


def op_types(model: onnx.ModelProto) -> collections.Counter:
    return collections.Counter(n.op_type for n in model.graph.node)


def verify(model: nn.Module, spec: Spec, path: Path) -> None:
    """Checker, symbolic dims, and onnxruntime against torch at two values of every symbol."""
    m = onnx.load(str(path))
    onnx.checker.check_model(m, full_check=True)
    for vi, (name, _, _) in zip(m.graph.input, spec.inputs):
        shape = shape_of(vi)
        for axis in spec.axes[name]:
            assert isinstance(shape[axis], str), f"{path.name}: {name} axis {axis} not symbolic"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(SEED)
    for second in (False, True):
        arrays = example_inputs(spec, second, rng)
        with torch.no_grad():
            ref = model(*(torch.from_numpy(a) for a in arrays))
        refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
        got = sess.run(None, {n: a for (n, _, _), a in zip(spec.inputs, arrays)})
        assert len(got) == len(refs), path.name
        for g, r in zip(got, refs):
            r = r.numpy()
            assert g.shape == r.shape, (path.name, g.shape, r.shape)
            err = np.abs(g - r).max() / max(np.abs(r).max(), 1e-6)
            assert err <= 1e-4, f"{path.name}: onnxruntime vs torch relative error {err:.2e}"


def consumers(graph: onnx.GraphProto) -> dict[str, list[tuple[str, int]]]:
    uses = collections.defaultdict(list)
    for node in graph.node:
        for i, name in enumerate(node.input):
            uses[name].append((node.op_type, i))
    return uses


def is_weight(tensor: onnx.TensorProto, uses: list[tuple[str, int]]) -> bool:
    """A float tensor of learned values (see GEOMETRY_OPS)."""
    if tensor.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        return False
    return math.prod(tensor.dims) >= 2 and not any(op in GEOMETRY_OPS for op, _ in uses)


def strip(path: Path) -> dict[str, int]:
    """Rewrite `path` in place as a skeleton; returns {"stripped": n, "kept": m}."""
    model = onnx.load(str(path))
    graph = model.graph
    # Constant nodes holding weights become initializers, so one rule covers both.
    uses = consumers(graph)
    nodes = []
    for node in graph.node:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if (
            node.op_type == "Constant"
            and value is not None
            and is_weight(value, uses[node.output[0]])
        ):
            value = onnx.TensorProto.FromString(value.SerializeToString())
            value.name = node.output[0]
            graph.initializer.append(value)
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    location, offset, counts = f"{path.stem}.weights", 0, collections.Counter()
    for tensor in graph.initializer:
        if not is_weight(tensor, uses[tensor.name]):
            counts["kept"] += 1
            continue
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
        length = math.prod(tensor.dims) * itemsize
        tensor.raw_data = b"\0"  # set_external_data insists on a raw_data field
        external_data_helper.set_external_data(tensor, location, offset, length)
        for field in ("raw_data", "float_data", "int32_data"):
            tensor.ClearField(field)
        offset += (length + 4095) // 4096 * 4096  # onnx's own alignment of external data
        counts["stripped"] += 1
    del model.metadata_props[:]
    del graph.metadata_props[:]  # torch.export's graph signature, range constraints
    model.doc_string = ""
    graph.doc_string = ""
    for node in graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for vi in (*graph.value_info, *graph.input, *graph.output):
        del vi.metadata_props[:]
    for tensor in graph.initializer:
        del tensor.metadata_props[:]
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    assert path.stat().st_size < MAX_BYTES, f"{path.name}: {path.stat().st_size} bytes"
    return dict(counts)


def main(names: list[str]) -> None:
    torch.set_num_threads(2)
    for noisy in ("torch.onnx", "onnxscript", "torch.export", "torch._dynamo"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for name in names or list(SPECS):
        spec = SPECS[name]
        for exporter in ("legacy", "dynamo"):
            seed_everything(SEED + list(SPECS).index(name))
            model = build(name)
            path = HERE / f"{name}_{exporter}.onnx"
            (export_legacy if exporter == "legacy" else export_dynamo)(model, spec, path)
            verify(model, spec, path)
            full = path.stat().st_size
            counts = strip(path)
            m = onnx.load(str(path), load_external_data=False)
            ins = {i.name: shape_of(i) for i in m.graph.input}
            outs = {o.name: shape_of(o) for o in m.graph.output}
            print(f"{path.name}: {full} -> {path.stat().st_size} bytes, {counts}")
            print(f"  inputs {ins}  outputs {outs}")
            print(f"  ops {dict(sorted(op_types(m).items()))}")
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
