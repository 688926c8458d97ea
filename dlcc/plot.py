"""Pictures (PNG): the roofline of a systolic report, where a bundle's bytes went (`dlcc
explain --plot`), and a sweep's trade-offs (`dlcc sweep --plot`). Each figure has a title,
axis labels with units and a legend; the *_figure functions return the matplotlib Figure
(for tests and notebooks), the *_png ones write it.

matplotlib is an optional extra (`pip install matplotlib`): it is imported only when a plot
is asked for, and its absence is a DlccError, not an ImportError at import time.
"""

from __future__ import annotations

import io
import math

from dlcc.errors import DlccError
from dlcc.fileio import write_atomic


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend, or a DlccError."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DlccError("plotting needs matplotlib: pip install matplotlib") from None
    return plt


def roofline_png(report: dict, path: str, title: str | None = None) -> None:
    """Write a log-log roofline of `report` (from runtime.systolic.cost.report) to `path`.

    The roof is min(peak, bandwidth * intensity) in ops per cycle against ops per DRAM byte;
    each layer sits at (its intensity, the ops per cycle it achieved, stalls included).
    Layers with no DRAM traffic have no intensity and are left off (noted in the legend).
    """
    plt = _pyplot()
    roof = report["roofline"]
    peak, bw, ridge = roof["peak_ops_per_cycle"], roof["bytes_per_cycle"], roof["ridge_intensity"]
    placed = [x for x in report["layers"] if x["roofline"]["intensity"] is not None]
    xs = [x["roofline"]["intensity"] for x in placed]
    ys = [max(x["roofline"]["achieved_ops_per_cycle"], 1e-6) for x in placed]
    lo = min([ridge / 100, *(v / 2 for v in xs)])
    hi = max([ridge * 100, *(v * 2 for v in xs)])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    try:
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        ax.loglog(grid, [min(peak, bw * i) for i in grid], color="black", label="roofline")
        ax.axvline(ridge, color="grey", linestyle=":", linewidth=1)
        ax.scatter(xs, ys, zorder=3, color="tab:red", label="layers (achieved)")
        for layer, x, y in zip(placed, xs, ys):
            ax.annotate(layer["name"], (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)  # fmt: skip
        cfg = report["config"]
        skipped = len(report["layers"]) - len(placed)
        ax.set_xlabel("operational intensity (ops per DRAM byte)")
        ax.set_ylabel("ops per cycle")
        ax.set_title(
            title
            or f"roofline: {cfg['rows']}x{cfg['cols']} {cfg['dataflow']}, {bw:.3g} B/cycle"
            + (f" ({skipped} layers without DRAM traffic)" if skipped else "")
        )
        ax.set_ylim(min([peak / 1e4, *(y / 2 for y in ys)]), peak * 2)
        ax.legend(loc="lower right")
        ax.grid(True, which="both", linewidth=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())


def _save(fig, path: str) -> None:
    """Write `fig` as a PNG to `path` atomically, then free it."""
    plt = _pyplot()
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_atomic(path, buf.getvalue())


def _bytes(x: float, sign: str = "") -> str:
    """Bytes for people, decimal: 26.4 kB, 1.72 MB (`sign` "+" shows the sign)."""
    for scale, unit, digits in ((1e6, "MB", 2), (1e3, "kB", 1)):
        if abs(x) >= scale:
            return f"{x / scale:{sign},.{digits}f} {unit}"
    return f"{x:{sign},.0f} B"


def size_figure(description: dict):
    """Where the bytes went (dlcc/sizes.py): a waterfall from the fp32 weights to the bundle
    by pass, and each tensor's fp32 and stored bytes. `description` is explain's describe()."""
    from dlcc.sizes import by_tensor, waterfall

    plt = _pyplot()
    from matplotlib.ticker import FuncFormatter

    steps, tensors = waterfall(description), by_tensor(description)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.5))
    colors = {"total": "tab:blue", "down": "tab:green", "up": "tab:red"}
    used = set()
    for i, s in enumerate(steps):
        if s["kind"] == "total":
            bottom, height, key = 0.0, s["total"], "total"
        else:
            bottom, height = s["total"] - s["delta"], s["delta"]
            key = "up" if s["delta"] > 0 else "down"
        hatch = "//" if s.get("estimated") else None
        names = {"total": "total", "down": "bytes saved", "up": "bytes added"}
        left.bar(i, height, bottom=bottom, color=colors[key], hatch=hatch, edgecolor="black",
                 linewidth=0.5, label=None if key in used else names[key])  # fmt: skip
        used.add(key)
        text = _bytes(s["total"]) if s["kind"] == "total" else _bytes(s["delta"], "+")
        left.annotate(text, (i, max(bottom, bottom + height)), ha="center", va="bottom",
                      fontsize=7, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    if any(s.get("estimated") for s in steps):
        left.bar(0, 0, color="white", hatch="//", edgecolor="black", label="estimated from the log")
    left.set_xticks(range(len(steps)), [s["step"] for s in steps], rotation=30, ha="right")
    left.set_ylabel("bytes")
    left.set_ylim(0, max(s["total"] for s in steps) * 1.1)
    left.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _bytes(v)))
    left.set_title("by pass: fp32 weights to the bundle")
    left.legend(loc="best", fontsize=8)
    y = range(len(tensors))
    right.barh([i + 0.2 for i in y], [t["fp32_bytes"] for t in tensors], height=0.4,
               color="lightgrey", edgecolor="grey", label="fp32")  # fmt: skip
    right.barh([i - 0.2 for i in y], [max(t["bytes"], 1) for t in tensors], height=0.4,
               color="tab:blue", label="in the bundle")  # fmt: skip
    for i, t in enumerate(tensors):
        ratio = t["fp32_bytes"] / t["bytes"] if t["bytes"] else math.inf
        right.annotate(f"{ratio:.1f}x", (max(t["bytes"], 1), i - 0.2), fontsize=7,
                       xytext=(3, -3), textcoords="offset points")  # fmt: skip
    right.set_yticks(list(y), [t["tensor"] for t in tensors], fontsize=7)
    right.invert_yaxis()
    right.set_xscale("log")
    _human_ticks(right, "x", "B")
    right.set_xlabel("bytes (log scale)")
    right.set_title("by tensor")
    right.legend(loc="lower right", fontsize=8)
    meta = description["meta"]
    fig.suptitle(
        f"where the bytes went: {meta.get('source') or meta.get('model', '?')}, "
        f"{steps[0]['total']:,} B fp32 -> {description['file_bytes']:,} B "
        f"({steps[0]['total'] / description['file_bytes']:.1f}x)"
    )
    return fig


def size_png(description: dict, path: str) -> None:
    """Write `size_figure(description)` to `path`."""
    _save(size_figure(description), path)


FRONT = "on the Pareto front of an array"


def _human_ticks(ax, axis: str, unit: str) -> None:
    """Log-axis labels at 1, 2, 5 x 10^k in plain SI (50 kB, 20k) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    def text(v: float, _=None) -> str:
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if v >= scale:
                return f"{v / scale:g}{' ' if unit else ''}{prefix}{unit}"
        return f"{v:g}{' ' if unit else ''}{unit}"

    low, high = ax.get_xlim() if axis == "x" else ax.get_ylim()
    decades = math.log10(max(high, 1e-300) / max(low, 1e-300))
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)))
    target.set_major_formatter(FuncFormatter(text))
    target.set_minor_formatter(NullFormatter())


def _label_points(ax, marks: list[tuple[float, float, str]]) -> None:
    """Label each mark, placing labels greedily (left to right) at the first of a few
    offsets where they stay inside the axes and overlap no label placed before; a leader
    line joins a moved label to its mark."""
    ax.autoscale_view()
    scale = ax.figure.dpi / 72  # offsets are in points, boxes in pixels
    frame = ax.bbox.extents
    placed: list[tuple[float, float, float, float]] = []
    for x, y, text in sorted(marks):
        px, py = ax.transData.transform((x, y))
        width, height = 3.4 * len(text) + 2, 8
        rises = [3, -10, 13, -20, 23, -30, 33, -40, 43, -50, 53, -60]
        tries = [(3, dy) for dy in rises] + [(-width - 3, dy) for dy in rises]
        for dx, dy in tries + [(3, 3)]:
            box = (px + dx * scale, py + dy * scale, px + (dx + width) * scale,
                   py + (dy + height) * scale)  # fmt: skip
            inside = frame[0] <= box[0] and box[2] <= frame[2] and frame[1] <= box[1] \
                and box[3] <= frame[3]  # fmt: skip
            if inside and not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3]
                                  and b[1] < box[3] for b in placed):  # fmt: skip
                break
        placed.append(box)
        line = {"arrowstyle": "-", "linewidth": 0.3, "color": "grey"} if abs(dy) > 5 else None
        ax.annotate(text, (x, y), fontsize=6, xytext=(dx, dy), textcoords="offset points",
                    arrowprops=line)  # fmt: skip


def sweep_figures(summary: dict) -> dict:
    """The sweep's pictures by file stem (dlcc/sweep.py's summary):

    accuracy_vs_bytes  the fidelity metric of each point against its bundle size, each
                       labelled; points on the Pareto front of some array and dataflow in red
    energy_vs_bytes    energy per costed batch against bundle size (one mark per point when,
                       as in the cost model, energy does not depend on the array), and the
                       cycles on each array and dataflow against size; front rows ringed
    """
    import os

    plt = _pyplot()
    metric, rows = summary["metric"], [r for r in summary["rows"] if r["status"] == "ok"]
    model, data = os.path.basename(summary["model"]), os.path.basename(summary["data"])
    scale, unit = (1, "dB") if metric == "sqnr_db" else (100, "%")
    points: dict[int, dict] = {}
    for r in rows:
        points.setdefault(r["point"], {**r, "front": False})["front"] |= r["front"]
    fig1, ax = plt.subplots(figsize=(9, 6))
    marks = []
    for on_front, color, name in ((False, "tab:grey", "pipelines"), (True, "tab:red", FRONT)):
        mine = [p for p in points.values() if p["front"] == on_front and p[metric] is not None]
        xs, ys = [p["bytes"] for p in mine], [p[metric] * scale for p in mine]
        ax.scatter(xs, ys, s=40 if on_front else 20, zorder=3, color=color, label=name)
        marks += zip(xs, ys, [p["label"] for p in mine])
    original = next((r["accuracy_original"] for r in rows if r["accuracy_original"]), None)
    if metric == "accuracy" and original is not None:
        ax.axhline(original * 100, color="black", linestyle="--", linewidth=0.8,
                   label=f"original model ({100 * original:.2f}%)")  # fmt: skip
    ax.set_xscale("log")
    _human_ticks(ax, "x", "B")
    ax.set_xlabel("bundle size (bytes, log scale)")
    ax.set_ylabel(f"{metric.replace('_db', ' ')} on {data} ({unit})")
    ax.set_title(f"{model}: {metric} vs bundle size, {len(points)} pipelines")
    ax.legend(loc="lower right")
    ax.grid(True, which="both", linewidth=0.3)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.12 * (high - low))  # room for the labels above the best points
    _label_points(ax, marks)

    fig2, (left, right) = plt.subplots(1, 2, figsize=(14, 6))
    energies, marks = {}, []
    for r in rows:
        energies.setdefault(r["point"], set()).add(r["energy_pj"])
    if all(len(e) == 1 for e in energies.values()):  # one mark per point
        for on_front, color, name in ((False, "tab:grey", "pipelines"), (True, "tab:red", FRONT)):
            mine = [p for p in points.values() if p["front"] == on_front]
            xs, ys = [p["bytes"] for p in mine], [p["energy_pj"] * 1e-6 for p in mine]
            left.scatter(xs, ys, s=40 if on_front else 20, zorder=3, color=color, label=name)
            marks += zip(xs, ys, [p["label"] for p in mine])
    else:
        _by_hardware(plt, left, summary, rows, "energy_pj", 1e-6)
    left.set_ylabel(f"energy per batch of {summary['batch']} (uJ, log scale)")
    left.set_title("energy (MACs, SRAM, DRAM: Horowitz, 45 nm)")
    _by_hardware(plt, right, summary, rows, "cycles", 1)
    right.set_ylabel(f"cycles per batch of {summary['batch']} (log scale)")
    right.set_title("cycles on each array and dataflow")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        _human_ticks(ax, "x", "B")
        _human_ticks(ax, "y", "")
        ax.set_xlabel("bundle size (bytes, log scale)")
        ax.grid(True, which="both", linewidth=0.3)
    left.legend(loc="upper left", fontsize=7)
    right.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)  # beside the marks
    _label_points(left, marks)
    fig2.suptitle(f"{model}: energy and cycles vs bundle size, {len(points)} pipelines")
    return {"accuracy_vs_bytes": fig1, "energy_vs_bytes": fig2}


def _by_hardware(plt, ax, summary: dict, rows: list[dict], key: str, scale: float) -> None:
    """Rows of `key` against bytes: a color per array, a marker per dataflow, front ringed."""
    markers = dict(zip(summary["dataflows"], "o^sDv"))
    cmap = plt.get_cmap("tab10")
    for i, array in enumerate(summary["arrays"]):
        for flow in summary["dataflows"]:
            mine = [r for r in rows if r["array"] == array and r["dataflow"] == flow]
            ax.scatter([r["bytes"] for r in mine], [r[key] * scale for r in mine],
                       color=cmap(i % 10), marker=markers.get(flow, "o"), s=24, zorder=3,
                       label=f"{array} {flow}", linewidths=1.2,
                       edgecolors=["black" if r["front"] else "none" for r in mine])  # fmt: skip
    ax.scatter([], [], facecolors="none", edgecolors="black", label="on its Pareto front")


def sweep_pngs(summary: dict, out_dir: str) -> list[str]:
    """Write `sweep_figures(summary)` into `out_dir`; returns the paths."""
    import os

    paths = []
    for stem, fig in sweep_figures(summary).items():
        paths.append(os.path.join(out_dir, f"{stem}.png"))
        _save(fig, paths[-1])
    return paths


def sensitivity_figure(description: dict):
    """The sensitivity table in a bundle's pass log as a heat map: a row per layer, a column
    per pass and setting, each cell the change of the score (points) with only that layer
    compressed so; cells beyond the noise band (unsafe) hatched. `description` is explain's
    describe(); a DlccError when the bundle holds no table."""
    from dlcc.passes.manager import layer_rows

    plt = _pyplot()
    entry = next((e for e in description["meta"].get("log", [])
                  if e["pass"].startswith("sensitivity") and e.get("layers")), None)  # fmt: skip
    if entry is None:
        raise DlccError(
            f"{description['path']}: no sensitivity table in the bundle; compile with --data"
        )
    rows = layer_rows(entry)
    program = [r["layer"] for e in description["meta"]["log"] if e is not entry
               for r in layer_rows(e) if "layer" in r]  # fmt: skip
    layers = list(dict.fromkeys(n for n in program + [r["layer"] for r in rows]
                                if any(r["layer"] == n for r in rows)))  # fmt: skip
    order = {"prune": 0, "kmeans": 1, "quantize": 2}

    def mild_first(column: tuple) -> tuple:
        kind, setting = column
        return order.get(kind, 3), setting if kind == "prune" else -setting

    columns = sorted({(r["pass"], r["setting"]) for r in rows}, key=mild_first)
    cells = {(r["layer"], r["pass"], r["setting"]): r for r in rows}
    grid = [
        [100 * cells[(name, *c)]["delta"] if (name, *c) in cells else math.nan for c in columns]
        for name in layers
    ]
    worst = max([abs(v) for row in grid for v in row if not math.isnan(v)] + [1e-3])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.6 + 0.45 * len(layers)))
    image = ax.imshow(grid, cmap="RdBu", vmin=-worst, vmax=worst, aspect="auto")
    for i, layer in enumerate(layers):
        for j, column in enumerate(columns):
            row = cells.get((layer, *column))
            if row is None:
                continue
            if not row["safe"]:
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                           edgecolor="grey", linewidth=0))  # fmt: skip
            ax.text(j, i, f"{100 * row['delta']:+.1f}", ha="center", va="center", fontsize=7,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.8,
                          "linewidth": 0})  # fmt: skip
    names = {"prune": "prune {:g}", "kmeans": "kmeans {:g} bits", "quantize": "int8"}
    ax.set_xticks(range(len(columns)),
                  [names.get(p, p + " {:g}").format(s) for p, s in columns],
                  rotation=40, ha="right")  # fmt: skip
    ax.set_yticks(range(len(layers)), layers)
    ax.set_xlabel("pass and setting (that layer alone)")
    ax.set_ylabel("layer")
    metric = entry.get("metric", "score")
    bar = fig.colorbar(image, ax=ax)
    bar.set_label(f"change in {metric} (percentage points)")
    band = 100 * entry.get("noise_band", 0.0)
    unsafe = f"unsafe: beyond the noise band +-{band:.2f} points"
    ax.add_patch(plt.Rectangle((0, 0), 0, 0, fill=False, hatch="///", edgecolor="grey",
                               label=unsafe))  # fmt: skip
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.08), fontsize=8, frameon=False)
    ax.set_title(f"sensitivity of {description['meta'].get('source', '?')}: {metric} "
                 f"{100 * entry['baseline']:.2f}% on {entry['samples']} samples")  # fmt: skip
    return fig


def sensitivity_png(description: dict, path: str) -> None:
    """Write `sensitivity_figure(description)` to `path`."""
    _save(sensitivity_figure(description), path)
