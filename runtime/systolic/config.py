"""SystolicConfig: what array the systolic target emulates, with its memories and costs."""

from __future__ import annotations

import dataclasses
import json
import re

from dlcc.errors import ExecutionError

DATAFLOWS = ("ws", "os", "is")  # weight-, output-, input-stationary


@dataclasses.dataclass(frozen=True)
class SystolicConfig:
    """An R x C int8 MAC array with its on-chip memories, clock and DRAM bandwidth.

    Defaults follow the TPU v1 (Jouppi et al., ISCA 2017): 256 x 256 MACs, weight-stationary,
    24 MiB unified buffer, 4 MiB of accumulators, a 4-tile weight FIFO, 700 MHz and
    34 GB/s of DRAM bandwidth (about 48 bytes per cycle).
    """

    rows: int = 256
    cols: int = 256
    dataflow: str = "ws"
    ub_bytes: int = 24 * 2**20
    acc_bytes: int = 4 * 2**20
    fifo_depth: int = 4  # weight tiles in flight (double buffering and more)
    clock_hz: float = 700e6
    dram_bytes_per_cycle: float = 34e9 / 700e6

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ExecutionError(f"array {self.rows}x{self.cols}: both sides must be >= 1")
        if self.dataflow not in DATAFLOWS:
            raise ExecutionError(
                f"dataflow {self.dataflow!r}: choose one of {', '.join(DATAFLOWS)}"
            )
        for name in ("ub_bytes", "acc_bytes", "fifo_depth", "clock_hz", "dram_bytes_per_cycle"):
            if getattr(self, name) <= 0:
                raise ExecutionError(f"systolic config: {name} must be positive")

    @classmethod
    def from_file(cls, path: str, **overrides) -> SystolicConfig:
        """A config from a JSON file of field values, then `overrides` (None values ignored)."""
        try:
            with open(path) as f:
                fields = json.load(f)
        except (OSError, ValueError) as e:
            raise ExecutionError(f"{path}: cannot read the systolic config ({e})") from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(fields) - known)
        if not isinstance(fields, dict) or unknown:
            raise ExecutionError(f"{path}: unknown config keys {unknown}; known: {sorted(known)}")
        return cls(**{**fields, **{k: v for k, v in overrides.items() if v is not None}})

    def describe(self) -> dict:
        """The configuration as a JSON-ready dict (printed with every report)."""
        return dataclasses.asdict(self)


# The largest array side --array takes: 16x the TPU's 256, past any array built, and small
# enough that tiling arithmetic and the register-level mode stay cheap to set up.
MAX_SIDE = 4096


def parse_array(text: str) -> tuple[int, int]:
    """`32x32` -> (32, 32); each side in 1..MAX_SIDE."""
    match = re.fullmatch(r"([0-9]+)x([0-9]+)", text.lower())
    if not match:
        raise ExecutionError(f"array {text!r}: expected ROWSxCOLS, e.g. 32x32")
    rows, cols = int(match[1]), int(match[2])
    if not (1 <= rows <= MAX_SIDE and 1 <= cols <= MAX_SIDE):
        raise ExecutionError(f"array {text!r}: each side must be between 1 and {MAX_SIDE}")
    return rows, cols
