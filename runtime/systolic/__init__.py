"""The systolic-array target: an R x C array of int8 MACs with int32 accumulators (TPU-like).

It replaces only the interpreter's matrix engine (MATRIX_MULTIPLY / CONVOLVE); every other
instruction runs the shared kernels, so outputs are those of the interpreter, bit for bit.

    config.py   SystolicConfig: array shape, dataflow, memories, clock, bandwidth, energy
    cycles.py   closed-form compute cycles of one GEMM tile schedule per dataflow
    regsim.py   register-level simulation (small arrays): proves cycles.py and the values
    engine.py   SystolicEngine: tiles the matmuls, records a LayerRecord per instruction
    cost.py     memory overlap, stalls, traffic, energy (Horowitz 2014), roofline

Convolutions are lowered as in SCALE-Sim: M = output pixels x batch, K = kh*kw*C_in/group,
N = filters (per group).
"""
