"""LayerRecord: what the systolic engine observed for one matrix instruction."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class LayerRecord:
    """One MATRIX_MULTIPLY / CONVOLVE as a GEMM on the array (SCALE-Sim's lowering).

    A convolution is `groups` GEMMs of M x K by K x N: M = output pixels x batch,
    K = kh * kw * C_in / groups, N = filters / groups. A Dense is one GEMM with M = rows.
    """

    name: str  # the layer's weight tensor name
    op: str  # "Dense" or "Conv"
    m: int
    k: int
    n: int
    groups: int
    folds: int  # array tiles the schedule runs (per group, summed over groups)
    compute_cycles: int  # the matrix unit alone, SCALE-Sim comparable
    macs: int  # m * k * n * groups
    zero_macs: int  # MACs with a zero operand (zero-gating would skip them)
    mapping_efficiency: float  # mean fraction of the R x C PEs a fold maps work onto
    weight_bytes: int  # bytes fetched from DRAM for the weights: their size in the bundle
    input_bytes: int  # activation bytes read from the unified buffer (per pass over them)
    output_bytes: int  # accumulator bytes written (int32, or float32 on the float path)
    integer: bool  # int8 operands (the TPU path) rather than float32
