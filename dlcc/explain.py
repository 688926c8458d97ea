"""What a bundle holds, as a plain dict (the `--json` form) and as text for people."""

from __future__ import annotations

import numpy as np

from dlcc.formats import isa
from dlcc.formats.bundle import BundleFile
from dlcc.formats.encodings import stream_stats
from dlcc.formats.schema import header_bytes
from dlcc.passes.manager import layer_rows
from dlcc.report import render as render_report
from dlcc.runtime.loader import LoadedBundle
from dlcc.runtime.verifier import function_name


def describe(bundle: LoadedBundle, file_bytes: int, asm: bool = False) -> dict:
    """A JSON-ready description: model, inputs/outputs, tensors, sections and program."""
    f = bundle.file
    tensors = [_tensor(i, t, w, f.data) for i, (t, w) in enumerate(zip(f.tensors, bundle.weights))]
    report = {
        "path": bundle.path,
        "file_bytes": file_bytes,
        "meta": f.meta,
        "inputs": [_io(f, name, buf) for name, buf in f.inputs],
        "outputs": [_io(f, name, buf) for name, buf in f.outputs],
        "tensors": tensors,
        "params": sum(t["params"] for t in tensors),
        "sections": {kind: len(payload) for kind, payload in f.sections().items()},
        "ledger": _ledger(f, tensors, file_bytes),
        "instructions": _histogram(f.program),
    }
    if asm:
        report["program"] = [isa.disassemble(i, function_name) for i in f.program]
    return report


def _tensor(i: int, t, weight: np.ndarray, data: bytes) -> dict:
    params = int(np.prod(t.shape, dtype=np.int64))
    nonzero = int(np.count_nonzero(weight))
    codebook = sum(b[3] for b in t.blobs if b[0] == "CODEBOOK")
    return {
        "id": i,
        "name": t.name,
        "shape": list(t.shape),
        "dtype": t.dtype,
        "encoding": f"{t.values}{t.value_bits}/{t.positions}"
        + (f"{t.index_bits}" if t.positions == "csr" else ""),
        "params": params,
        "nonzero": nonzero,
        "sparsity": round(1 - nonzero / params, 4) if params else 0.0,
        "value_bits": t.value_bits,
        "index_bits": t.index_bits,
        "entries": t.entries,
        "fillers": t.entries - nonzero if t.positions == "csr" else 0,
        "codebook_bytes": codebook,
        "streams": stream_stats(t, data),
        "bytes": t.nbytes,
    }


def _ledger(f: BundleFile, tensors: list[dict], file_bytes: int) -> list[dict]:
    """Where every byte of the file goes; the rows add up to the file size exactly."""
    sections = {kind: len(payload) for kind, payload in f.sections().items()}
    rows = [{"item": t["name"], "bytes": t["bytes"]} for t in tensors]
    rows.append(
        {
            "item": "DATA alignment padding",
            "bytes": sections["DATA"] - sum(t["bytes"] for t in tensors),
        }
    )
    for kind in ("META", "TENSORS", "BUFFERS", "ATTRS", "PROGRAM"):
        rows.append({"item": f"{kind} section", "bytes": sections[kind]})
    header = header_bytes(len(sections))
    rows.append({"item": "header", "bytes": header})
    rows.append(
        {"item": "section alignment padding", "bytes": file_bytes - header - sum(sections.values())}
    )
    return rows


def _io(f: BundleFile, name: str, buf: int) -> dict:
    b = f.buffers[buf]
    dims = [label or d for d, label in zip(b.shape, b.labels(f.symbols))]
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
    for note in meta.get("notes", []):
        lines.append(f"note      {note}")
    lines += ["", f"tensors   {len(report['tensors'])}, {report['params']:,} parameters"]
    lines += render_tensors(report)
    lines += ["", "passes"] + _pass_log(meta.get("log", []))
    if "report" in meta:
        lines += ["", "compiled  before / after"] + render_report(
            meta["report"], report["file_bytes"]
        ).split("\n")
    lines += ["", "sections  " + ", ".join(f"{k} {v:,} B" for k, v in report["sections"].items())]
    counts = ", ".join(f"{k} {v}" for k, v in report["instructions"].items())
    lines.append(f"program   {sum(report['instructions'].values())} instructions: {counts}")
    if "program" in report:
        lines += [""] + [f"  {i:4d}  {text}" for i, text in enumerate(report["program"])]
    return "\n".join(lines)


def render_tensors(report: dict) -> list[str]:
    """The per-tensor ledger: sparsity, bits, fillers, codebook, Huffman gain, bytes."""
    rows = [
        (
            "#",
            "name",
            "shape",
            "sparsity",
            "encoding",
            "fillers",
            "codebook",
            "huffman gain",
            "entropy",
            "bytes",
        )
    ]
    for t in report["tensors"]:
        streams = [s for s in t["streams"].values() if s["coding"] == "huffman"]
        gain = sum(s["raw_bytes"] - s["bytes"] for s in streams)
        entropy = sum(s["entropy_bytes"] for s in streams)
        rows.append(
            (
                str(t["id"]),
                t["name"],
                "×".join(map(str, t["shape"])) or "scalar",
                f"{100 * t['sparsity']:.1f}%",
                t["encoding"],
                f"{t['fillers']:,}",
                f"{t['codebook_bytes']:,}",
                f"{gain:,}" if streams else "-",
                f"{entropy:,.0f}" if streams else "-",
                f"{t['bytes']:,}",
            )
        )
    return _table(rows)


def render_ledger(report: dict) -> str:
    """Tensors and where every byte of the file goes, compactly (`compile --report`)."""
    lines = render_tensors(report) + [""]
    rows = [("item", "bytes")] + [
        (r["item"], f"{r['bytes']:,}")
        for r in report["ledger"]
        if r["item"] not in {t["name"] for t in report["tensors"]}
    ]
    total = sum(r["bytes"] for r in report["ledger"])
    rows.append(("total (= file size)", f"{total:,}"))
    return "\n".join(lines + _table(rows))


# The per-layer figure of each pass that the sensitivity table measured.
_SETTING = {"prune": "sparsity", "kmeans": "bits", "quantize": "bits"}


def _pass_log(log: list[dict]) -> list[str]:
    measured = next((e for e in log if e["pass"].startswith("sensitivity")), None)
    table = layer_rows(measured) if measured else []
    lines = []
    for entry in log:
        lines.append(f"  {entry['pass']}")
        if entry is measured:
            lines += _sensitivity(entry, table)
            continue
        kind = entry["pass"].split("(")[0]
        for layer in layer_rows(entry):
            fields = ", ".join(f"{k}={v}" for k, v in layer.items() if k != "layer")
            mark = safety(table, layer["layer"], kind, layer.get(_SETTING.get(kind, "")))
            lines.append(f"      {layer['layer']}: {fields}{f'  [{mark}]' if mark else ''}")
    return lines or ["  (none)"]


def safety(table: list[dict], layer: str, kind: str, setting) -> str:
    """'safe' or 'unsafe' for `layer` at `setting`, from the nearest measured setting."""
    rows = [r for r in table if r["layer"] == layer and r["pass"] == kind]
    if not rows or setting is None:
        return ""
    nearest = min(rows, key=lambda r: abs(r["setting"] - setting))
    return "safe" if nearest["safe"] else "unsafe"


def _sensitivity(entry: dict, table: list[dict]) -> list[str]:
    """The sensitivity table, most harmful first, each row marked safe or unsafe."""
    head = (
        f"      {entry['metric']} {entry['baseline']:.4f}, noise band "
        f"+-{entry['noise_band']:.4f} ({entry['samples']} samples); ranked, worst first:"
    )
    rows = [("layer", "pass", "setting", "change", "")] + [
        (
            r["layer"],
            r["pass"],
            f"{r['setting']:g}",
            f"{r['delta']:+.4f}",
            "safe" if r["safe"] else "UNSAFE",
        )
        for r in sorted(table, key=lambda r: r["delta"])
    ]
    return [head] + ["    " + line for line in _table(rows)]


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
