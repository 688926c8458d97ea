"""How far outputs moved from their reference: running sums, batch by batch, in float64.

    SQNR       10 log10(signal / noise), the powers summed over every sample
    cosine     <ref, got> / (|ref| |got|) over every element (1 when got is ref, else 0
               when either is all zeros)
    agreement  the share of rows with the same top-1 class (2-D outputs: [batch, classes])

The sums stream: memory does not grow with the samples. dlcc/verify.py adds its batches as
they come; passes/fidelity.py scores whole arrays, and takes the standard error of the noise
power over samples from the same sums.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


@dataclasses.dataclass
class Comparison:
    """Running sums of one output (or layer) against its reference."""

    signal: float = 0.0  # sum of ref^2
    noise: float = 0.0  # sum of (ref - got)^2
    dot: float = 0.0  # sum of ref * got
    power: float = 0.0  # sum of got^2
    max_abs: float = 0.0  # largest |ref - got|
    samples: int = 0
    noise_squares: float = 0.0  # sum over samples of (the sample's noise power)^2
    agree: int = 0  # rows with the same top-1 class (2-D outputs)
    rows: int = 0

    @classmethod
    def of(cls, ref: np.ndarray, got: np.ndarray) -> Comparison:
        """The sums of one batch."""
        comparison = cls()
        comparison.add(ref, got)
        return comparison

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        """Add a batch: `ref` and `got` of one shape, samples along axis 0."""
        ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
        diff = ref - got
        per_sample = np.square(diff).reshape(len(diff) if diff.ndim else 1, -1).sum(1)
        self.signal += float(np.square(ref).sum())
        self.noise += float(per_sample.sum())
        self.dot += float(np.vdot(ref, got))
        self.power += float(np.square(got).sum())
        self.max_abs = max(self.max_abs, float(np.abs(diff).max(initial=0.0)))
        self.samples += len(per_sample)
        self.noise_squares += float(np.square(per_sample).sum())
        if ref.ndim == 2:
            self.agree += int((ref.argmax(1) == got.argmax(1)).sum())
            self.rows += len(ref)

    @property
    def nsr(self) -> float:
        """Noise power over signal power (inf: noise on an all-zero reference)."""
        if self.signal:
            return self.noise / self.signal
        return math.inf if self.noise else 0.0

    @property
    def nsr_error(self) -> float:
        """The standard error of `nsr` as a mean over samples: sqrt(n) * std(sample noise
        powers) / signal (0 without signal)."""
        if not (self.signal and self.samples):
            return 0.0
        mean = self.noise / self.samples
        variance = max(self.noise_squares / self.samples - mean * mean, 0.0)
        return math.sqrt(self.samples * variance) / self.signal

    @property
    def sqnr_db(self) -> float:
        return -10 * math.log10(self.nsr) if self.nsr else math.inf

    @property
    def cosine(self) -> float:
        if not self.noise:  # identical: exactly 1, not the sums' rounding of it
            return 1.0
        if self.signal and self.power:
            return self.dot / math.sqrt(self.signal * self.power)
        return 0.0

    @property
    def agreement(self) -> float | None:
        return self.agree / self.rows if self.rows else None

    def metrics(self) -> dict:
        """The report's figures: sqnr_db, cosine, max_abs_error (and agreement, 2-D)."""
        out = {"sqnr_db": self.sqnr_db, "cosine": self.cosine, "max_abs_error": self.max_abs}
        if self.rows:
            out["agreement"] = self.agreement
        return out
