"""Plots of systolic reports: the roofline with each layer placed on it (PNG).

matplotlib is an optional extra (`pip install matplotlib`): it is imported only when a plot
is asked for, and its absence is a DlccError, not an ImportError at import time.
"""

from __future__ import annotations

import io

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
