"""Runtime profile of a systolic report: where the cycles go, distances, an Amdahl projection.

The profile vector gives the fractions of total cycles in
    compute      the matrix unit working (`compute_cycles`),
    weight_load  the matrix unit stalled waiting on weights from DRAM,
    data_load    the matrix unit stalled on activations spilled to DRAM,
    transfer     host reads/writes (not modeled by the cost model: always 0);
they sum to 1 because every cycle of the cost model is one of these.

Two bundles (say -O0 and -O3 of one model) are compared by the cosine distance of their
profiles, phi = 1 - A.B / (|A| |B|): 0 when they spend their time alike.

Amdahl projection over `cores` arrays with `vector_length`-wide lanes:
    speedup = 1 / (s + (1 - s) * (f / cores + (1 - f) / (cores * vector_length)))
s, the serial fraction, is the part more arrays cannot shorten: the memory stalls
(weight_load + data_load + transfer), since the arrays share one DRAM channel. f, the scalar
fraction of the parallel part, is the share of the compute cycles' PE slots that do no
useful MAC (1 - compute utilization: array fill/drain skew and PEs a fold leaves unmapped);
splitting folds over cores shortens it, wider lanes do not.
"""

from __future__ import annotations

import math

from dlcc.errors import ExecutionError

KEYS = ("compute", "weight_load", "data_load", "transfer")


def profile_vector(rep: dict) -> dict[str, float]:
    """Fractions of `rep`'s total cycles in compute, weight_load, data_load and transfer."""
    total = rep["total_cycles"]
    if total <= 0:
        raise ExecutionError("profile: the program runs no cycles on the matrix unit")
    transfer = rep.get("transfer_cycles", 0)
    return {
        "compute": rep["compute_cycles"] / total,
        "weight_load": rep["weight_stall_cycles"] / total,
        "data_load": rep["data_stall_cycles"] / total,
        "transfer": transfer / total,
    }


def cosine_distance(a: dict[str, float], b: dict[str, float]) -> float:
    """phi = 1 - a.b / (|a| |b|) over the keys both profiles must share; 0 means alike."""
    if set(a) != set(b):
        raise ExecutionError(f"profiles differ in keys: {sorted(a)} vs {sorted(b)}")
    keys = sorted(a)
    dot = sum(a[k] * b[k] for k in keys)
    norm = math.sqrt(sum(a[k] ** 2 for k in keys)) * math.sqrt(sum(b[k] ** 2 for k in keys))
    if norm == 0:
        raise ExecutionError("cosine distance: a profile is all zeros")
    if all(a[k] == b[k] for k in keys):
        return 0.0
    return min(2.0, max(0.0, 1.0 - dot / norm))


def amdahl(serial_fraction: float, scalar_fraction: float, cores: int, vector_length: int) -> float:
    """Amdahl speedup 1 / (s + (1 - s) * (f / cores + (1 - f) / (cores * vector_length)))."""
    for name, x in (("serial_fraction", serial_fraction), ("scalar_fraction", scalar_fraction)):
        if not 0.0 <= x <= 1.0:
            raise ExecutionError(f"amdahl: {name} {x} must be in [0, 1]")
    if cores < 1 or vector_length < 1:
        raise ExecutionError(f"amdahl: cores {cores}, vector length {vector_length}: need >= 1")
    s, f = serial_fraction, scalar_fraction
    return 1.0 / (s + (1.0 - s) * (f / cores + (1.0 - f) / (cores * vector_length)))


def amdahl_fractions(rep: dict) -> dict[str, float]:
    """The serial and scalar fractions of a report, as the module docstring defines them."""
    p = profile_vector(rep)
    serial = p["weight_load"] + p["data_load"] + p["transfer"]
    scalar = 1.0 - rep["compute_utilization"] if rep["compute_cycles"] else 0.0
    return {
        "serial_fraction": min(1.0, max(0.0, serial)),
        "scalar_fraction": min(1.0, max(0.0, scalar)),
    }


def projection(rep: dict, cores: int, vector_length: int) -> dict[str, float]:
    """Amdahl's projected speedup of `rep` on `cores` arrays with `vector_length` lanes."""
    fr = amdahl_fractions(rep)
    speedup = amdahl(fr["serial_fraction"], fr["scalar_fraction"], cores, vector_length)
    return {**fr, "cores": cores, "vector_length": vector_length, "speedup": speedup}


def compare(a: dict, b: dict) -> dict:
    """Two reports' profiles and the cosine distance phi between them (`dlcc profile --compare`)."""
    pa, pb = profile_vector(a), profile_vector(b)
    return {"profile": pa, "other_profile": pb, "cosine_distance": cosine_distance(pa, pb)}


def render_profile(p: dict[str, float], title: str = "profile") -> str:
    """A profile vector as one aligned line per component, for people."""
    width = max(len(k) for k in p)
    return "\n".join([f"{title}:"] + [f"  {k.ljust(width)}  {v:7.2%}" for k, v in p.items()])
