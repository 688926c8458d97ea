"""The table of a sweep (dlcc/sweep.py): its rows, their Pareto front, the files, the text.

rows   one per point x array x dataflow (COLUMNS), sorted by grid position, array and
       dataflow; floats to 6 significant digits, no timings: the same sweep gives the
       same bytes wherever it ran
front  per array x dataflow, the rows no other row beats on all of bytes (less),
       fidelity (more) and cycles and energy (less)
files  DIR/points.csv, DIR/points.json (strict JSON: non-finite floats are null) and
       DIR/front.csv, written atomically
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

from dlcc.fileio import write_atomic
from dlcc.grid import Point

SCHEMA = "dlcc.sweep/1"
COLUMNS = (
    "point", "label", "pipeline", "status", "bytes", "ratio", "accuracy", "accuracy_original",
    "agreement", "sqnr_db", "array", "dataflow", "cycles", "utilization", "dram_bytes",
    "energy_pj", "front", "error",
)  # fmt: skip
COST_FIELDS = ("cycles", "utilization", "dram_bytes", "energy_pj")


def table(points: list[Point], results: dict, configs: tuple[str, ...], metric: str) -> list:
    """One row per point x array x dataflow (COLUMNS), in that order, the front marked."""
    rows = []
    for p in points:
        r = results[p.index]
        ok = r["status"] == "ok"
        for config in configs:
            array, dataflow = config.split("/")
            cost = r["costs"][config] if ok else {}
            row = {
                "point": p.index,
                "label": p.label,
                "pipeline": p.pipeline,
                "status": r["status"],
                "bytes": r.get("bytes"),
                "ratio": r["fp32_weight_bytes"] / r["bytes"] if ok else None,
                **{k: r.get(k) for k in ("accuracy", "accuracy_original", "agreement")},
                "sqnr_db": r.get("sqnr_db"),
                "array": array,
                "dataflow": dataflow,
                **{k: cost.get(k) for k in COST_FIELDS},
                "front": False,
                "error": r.get("error", ""),
            }
            rows.append({k: _tidy(v) for k, v in row.items()})
    mark_front(rows, metric)
    return rows


def _tidy(value):
    """Floats to 6 significant digits: tables for people, the same on every machine."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    return value


def dominates(a: tuple, b: tuple) -> bool:
    """Whether objective vector `a` (all minimized) is no worse than `b` anywhere and better
    somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def mark_front(rows: list[dict], metric: str) -> None:
    """Set row["front"] for the Pareto-optimal rows of each array x dataflow."""
    groups: dict[tuple, list] = {}
    for row in rows:
        if row["status"] == "ok" and row[metric] is not None:
            fidelity = row[metric] if math.isfinite(row[metric]) else math.inf
            vector = (row["bytes"], -fidelity, row["cycles"], row["energy_pj"])
            groups.setdefault((row["array"], row["dataflow"]), []).append((vector, row))
    for group in groups.values():
        for vector, row in group:
            row["front"] = not any(dominates(other, vector) for other, _ in group)


def header(model, data_path, metric, configs, batch, digest) -> dict:
    return {
        "schema": SCHEMA,
        "dlcc": digest["dlcc"],
        "model": model,
        "data": data_path,
        "metric": metric,
        "arrays": list(dict.fromkeys(c.split("/")[0] for c in configs)),
        "dataflows": list(dict.fromkeys(c.split("/")[1] for c in configs)),
        "batch": batch,
    }


def write(out_dir: str, rows: list[dict], header: dict) -> dict:
    files = {
        "points_csv": os.path.join(out_dir, "points.csv"),
        "points_json": os.path.join(out_dir, "points.json"),
        "front_csv": os.path.join(out_dir, "front.csv"),
    }
    write_atomic(files["points_csv"], _csv(rows))
    write_atomic(files["front_csv"], _csv([r for r in rows if r["front"]]))
    document = json.dumps(finite({**header, "rows": rows}), indent=1, allow_nan=False)
    write_atomic(files["points_json"], document.encode() + b"\n")
    return files


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buf.getvalue().encode()


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def finite(value):
    """JSON-ready: non-finite floats become None (strict JSON), recursively."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def render(summary: dict) -> str:
    """The sweep's outcome for people: what ran, the files, and the front per array."""
    metric = summary["metric"]
    lines = [
        f"sweep of {summary['model']}: {summary['points']} points x "
        f"{len(summary['arrays'])} arrays x {len(summary['dataflows'])} dataflows = "
        f"{len(summary['rows'])} rows ({summary['computed']} computed, {summary['cached']} "
        f"cached, {summary['failed']} failed) in {summary['seconds']:.1f} s",
        f"fidelity: {metric} on {summary['data']}; costs for a batch of {summary['batch']}",
        "wrote " + ", ".join(v for k, v in summary["files"].items() if isinstance(v, str)),
        "",
        f"Pareto front (bytes, {metric}, cycles, energy) per array and dataflow:",
    ]
    head = ("array", "flow", "point", "label", "bytes", "ratio", metric, "SQNR dB", "cycles",
            "util", "energy uJ")  # fmt: skip
    rows = [head]
    configs = [(a, d) for a in summary["arrays"] for d in summary["dataflows"]]
    for r in sorted(summary["front"], key=lambda r: (configs.index((r["array"], r["dataflow"])),
                                                     r["bytes"], r["point"])):  # fmt: skip
        fid = r[metric]
        rows.append(
            (r["array"], r["dataflow"], str(r["point"]), r["label"], f"{r['bytes']:,}",
             f"{r['ratio']:.1f}x", "-" if fid is None else f"{fid:.4f}",
             "-" if r["sqnr_db"] is None else f"{r['sqnr_db']:.1f}", f"{r['cycles']:,}",
             f"{r['utilization']:.1%}", f"{r['energy_pj'] * 1e-6:.3f}")
        )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        cells = [c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    failed = [r for r in summary["rows"] if r["status"] != "ok"]
    for r in {r["point"]: r for r in failed}.values():
        lines.append(f"point {r['point']} {r['label']} {r['status']}: {r['error']}")
    return "\n".join(lines)
