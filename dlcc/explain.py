"""What a bundle holds, as a plain dict (the `--json` form) and as text for people."""

from __future__ import annotations

import numpy as np

from dlcc.formats import isa
from dlcc.formats.bundle import BundleFile
from dlcc.runtime.loader import LoadedBundle


def describe(bundle: LoadedBundle, file_bytes: int, asm: bool = False) -> dict:
    """A JSON-ready description: model, inputs/outputs, tensors, sections and program."""
    f = bundle.file
    tensors = [
        {
            "id": i,
            "name": t.name,
            "shape": list(t.shape),
            "dtype": t.dtype,
            "encoding": t.encoding,
            "params": int(np.prod(t.shape, dtype=np.int64)),
            "bytes": t.nbytes,
        }
        for i, t in enumerate(f.tensors)
    ]
    report = {
        "path": bundle.path,
        "file_bytes": file_bytes,
        "meta": f.meta,
        "inputs": [_io(f, name, buf) for name, buf in f.inputs],
        "outputs": [_io(f, name, buf) for name, buf in f.outputs],
        "tensors": tensors,
        "params": sum(t["params"] for t in tensors),
        "sections": {kind: len(payload) for kind, payload in f.sections().items()},
        "instructions": _histogram(f.program),
    }
    if asm:
        report["program"] = [isa.disassemble(i) for i in f.program]
    return report


def _io(f: BundleFile, name: str, buf: int) -> dict:
    b = f.buffers[buf]
    dims = ["N" if i == b.batch_axis else d for i, d in enumerate(b.shape)]
    return {"name": name, "shape": dims, "dtype": b.dtype}


def _histogram(program: list[isa.Instruction]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for instr in program:
        counts[instr.opcode] = counts.get(instr.opcode, 0) + 1
    return counts


def render(report: dict) -> str:
    """The description as aligned text."""
    meta = report["meta"]
    lines = [
        f"bundle    {report['path']}  ({report['file_bytes']:,} bytes)",
        f"model     {meta.get('model')}  from {meta.get('source', '?')}  by {meta.get('producer')}",
        f"pipeline  {meta.get('pipeline') or '(none: -O0)'}",
    ]
    for kind in ("inputs", "outputs"):
        for io in report[kind]:
            dims = "×".join(str(d) for d in io["shape"])
            lines.append(f"{kind[:-1]:<9} {io['name']}  {dims}  {io['dtype']}")
    lines += ["", f"tensors   {len(report['tensors'])}, {report['params']:,} parameters"]
    rows = [("#", "name", "shape", "dtype", "encoding", "bytes")] + [
        (
            str(t["id"]),
            t["name"],
            "×".join(map(str, t["shape"])) or "scalar",
            t["dtype"],
            t["encoding"],
            f"{t['bytes']:,}",
        )
        for t in report["tensors"]
    ]
    lines += _table(rows)
    lines += ["", "sections  " + ", ".join(f"{k} {v:,} B" for k, v in report["sections"].items())]
    counts = ", ".join(f"{k} {v}" for k, v in report["instructions"].items())
    lines.append(f"program   {sum(report['instructions'].values())} instructions: {counts}")
    if "program" in report:
        lines += [""] + [f"  {i:4d}  {text}" for i, text in enumerate(report["program"])]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    right = {0, len(widths) - 1}
    return [
        "  "
        + "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))
        )
        for r in rows
    ]
