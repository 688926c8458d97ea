"""The before/after report of a compile: how much smaller, and how far from the original.

    sizes     fp32 weight bytes of the model, its ONNX file bytes, the bundle's bytes, ratio
    fidelity  per output: top-1 agreement with the original (onnxruntime), SQNR, cosine; with
              labels, the accuracy of both: measured by `dlcc.verify` on the data given

The report (but the bundle's own size, which it cannot hold) is stored in the bundle's META
under "report" (its form: formats/schema.REPORT), so `dlcc explain` shows it later. Without
data the report says, loudly, that nothing was checked and how to check it.
"""

from __future__ import annotations

import os

UNCHECKED = (
    "fidelity not checked: no data given. Pass --data D.npz (held inputs, optional 'labels') "
    "to measure agreement and accuracy, or run `dlcc verify MODEL BUNDLE --data D.npz`"
)


def fp32_weight_bytes(graph) -> int:
    """Bytes of the model's float weights, stored as float32."""
    return sum(4 * v.data.size for v in graph.constants() if v.data.dtype.kind == "f")


def measure(model: str, weight_bytes: int, loaded, data: dict | None, source: str) -> dict:
    """The report of `loaded` (the new bundle) against `model`, on `data` from `source`."""
    report = {"fp32_weight_bytes": weight_bytes, "onnx_bytes": os.path.getsize(model)}
    if not data:
        return report
    from dlcc.verify import verify

    checked = verify(model, loaded, data)
    report["fidelity"] = {
        "data": source,
        "samples": checked["samples"],
        "outputs": {
            name: {k: m[k] for k in ("agreement", "sqnr_db", "cosine") if k in m}
            for name, m in checked["outputs"].items()
        },
        **({"accuracy": checked["accuracy"]} if "accuracy" in checked else {}),
    }
    return report


def render(report: dict, bundle_bytes: int) -> str:
    """The report as a short table for people."""
    weights = report["fp32_weight_bytes"]
    lines = [
        f"  fp32 weights  {weights:>12,} B",
        f"  ONNX file     {report['onnx_bytes']:>12,} B",
        f"  bundle        {bundle_bytes:>12,} B   {weights / bundle_bytes:.1f}x smaller than fp32",
    ]
    fidelity = report.get("fidelity")
    if not fidelity:
        return "\n".join(lines + [f"  {UNCHECKED}"])
    lines.append(f"  fidelity on {fidelity['data']} ({fidelity['samples']:,} samples):")
    for name, m in fidelity["outputs"].items():
        parts = [f"SQNR {m['sqnr_db']:.1f} dB", f"cosine {m['cosine']:.4f}"]
        if "agreement" in m:
            parts.insert(0, f"top-1 agreement {100 * m['agreement']:.2f}%")
        lines.append(f"    {name}: " + ", ".join(parts))
    if "accuracy" in fidelity:
        acc = fidelity["accuracy"]
        lines.append(
            f"    accuracy {100 * acc['bundle']:.2f}% (original {100 * acc['original']:.2f}%, "
            f"{100 * (acc['bundle'] - acc['original']):+.2f} points)"
        )
    return "\n".join(lines)
