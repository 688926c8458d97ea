"""`dlcc sweep`, the executor under it, and the pictures (sweep plots, `explain --plot`).

The sweeps here are tiny (3 pipelines x 2 arrays x 2 dataflows on the 256 sample images) and
run on real worker processes; the Ray run (marked slow) starts a local Ray in-process.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time

import pytest
from conftest import assert_clean_error, invoke, sample_path

from dlcc.errors import DlccError
from dlcc.executor import LocalExecutor, _check_reachable, make_executor, physical_cores
from dlcc.grid import DEFAULT_GRID, expand, parse_grid
from dlcc.sweep import Progress, run_point, sweep
from dlcc.sweep_table import dominates, mark_front

MODEL = sample_path("lenet5.onnx")
DATA = sample_path("mnist_test_256.npz")
GRID = ("{|prune(sparsity=0.5),kmeans(bits={4|3}),quantize,huffman}",)
ARRAYS, FLOWS = ("16x16", "32x32"), ("ws", "os")
PNG = b"\x89PNG\r\n\x1a\n"
K4 = "prune(sparsity=0.5),kmeans(bits=4),quantize,huffman"


def tiny_sweep(out_dir, **kwargs) -> dict:
    options = {"grid": GRID, "arrays": ARRAYS, "dataflows": FLOWS, "workers": 2}
    return sweep(MODEL, DATA, str(out_dir), **{**options, **kwargs})


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> dict:
    """The tiny sweep on 2 local workers, with plots and the front's bundles."""
    out = tmp_path_factory.mktemp("sweep")
    return tiny_sweep(out, plot=True, keep_bundles=True, stream=io.StringIO())


# -- the grid ---------------------------------------------------------------------------------
def test_grid_templates_expand_every_combination_and_drop_empty_steps():
    assert expand("prune(sparsity={0.5|0.9}),{|kmeans(bits={4|6}),}quantize") == [
        "prune(sparsity=0.5),quantize",
        "prune(sparsity=0.5),kmeans(bits=4),quantize",
        "prune(sparsity=0.5),kmeans(bits=6),quantize",
        "prune(sparsity=0.9),quantize",
        "prune(sparsity=0.9),kmeans(bits=4),quantize",
        "prune(sparsity=0.9),kmeans(bits=6),quantize",
    ]
    points = parse_grid(
        ["prune(sparsity=0.9,layers={Conv#0:0.35;Conv:0.85|fc1:0.95}),{quantize,|}huffman", "-O1"]
    )
    assert [p.label for p in points] == [
        "p.9*+int8+h",
        "p.9*+h",
        "p.9*+int8+h#2",
        "p.9*+h#3",
        "int8",
    ]
    assert points[2].pipeline == "prune(sparsity=0.9,layers=fc1:0.95),quantize,huffman"
    # the same pipeline twice (options spelled out or not) is one point
    assert len(parse_grid(["quantize", "quantize(method=minmax)", "{|}"])) == 2


def test_default_grid_has_at_least_24_pipelines_from_fp32_to_deep_compression():
    points = parse_grid()
    assert len(points) >= 24 and points[0].pipeline == "" and points[0].label == "fp32"
    assert any("prune" in p.pipeline and "kmeans" in p.pipeline for p in points)
    assert any("lowrank" in p.pipeline for p in points) and len(DEFAULT_GRID) >= 3


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("prune(sparsity={0.5|0.9),quantize", "without its '}'"),
        ("prune|quantize", "'|' outside"),
        ("prune(sparsity={0.5|2})", "out of range"),
        ("nosuch", "unknown pass"),
    ],
)
def test_a_bad_grid_is_one_clean_error(tmp_path, spec, fragment):
    result = invoke("sweep", MODEL, "--data", DATA, "--grid", spec, "-o", str(tmp_path / "s"))
    assert_clean_error(result, fragment)
    assert not os.path.exists(tmp_path / "s")  # refused before anything ran


# -- the executor -----------------------------------------------------------------------------
def twice_or_die(x: int, log_dir: str) -> int:
    """A trial that records each attempt, dies on 3 and raises on 5."""
    open(os.path.join(log_dir, f"{x}-{os.getpid()}-{len(os.listdir(log_dir))}"), "w").close()
    if x == 3:
        os._exit(7)
    if x == 5:
        raise ValueError("five is refused")
    return 2 * x


def test_a_dead_worker_is_charged_to_its_trial_retried_once_then_failed(tmp_path):
    with make_executor(workers=2) as ex:
        outcomes = {
            k: (v, e)
            for k, v, e in ex.map(twice_or_die, [(x, (x, str(tmp_path))) for x in range(7)])
        }
    assert {k: v for k, (v, e) in outcomes.items() if e is None} == {0: 0, 1: 2, 2: 4, 4: 8, 6: 12}
    assert "died 2 times" in outcomes[3][1] and "BrokenProcessPool" in outcomes[3][1]
    assert "ValueError: five is refused" in outcomes[5][1]
    attempts = [name.split("-")[0] for name in os.listdir(tmp_path)]
    # 3 dies twice; a trial in flight when its pool broke (5 too, if its raise was not yet
    # delivered) is charged one death and runs again: never more than twice
    assert attempts.count("3") == 2
    assert all(attempts.count(str(x)) <= 2 for x in range(7))


def test_a_raise_is_reported_once_and_not_retried(tmp_path):
    with make_executor(workers=2) as ex:
        outcomes = list(ex.map(twice_or_die, [(x, (x, str(tmp_path))) for x in (4, 5, 6)]))
    assert [e is None for _, _, e in sorted(outcomes)] == [True, False, True]
    assert sorted(name.split("-")[0] for name in os.listdir(tmp_path)) == ["4", "5", "6"]


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_an_interrupted_executor_stops_the_trials_still_running():
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt), make_executor(workers=2) as ex:
        for _ in ex.map(sleep_for, [(0, (0.1,)), (1, (120.0,))]):
            raise KeyboardInterrupt
    assert time.perf_counter() - start < 60  # the 2-minute trial was stopped


def test_executor_options(monkeypatch):
    assert 1 <= physical_cores() <= (os.cpu_count() or 1)
    with pytest.raises(DlccError, match="at least 1"):
        make_executor(workers=0)
    with LocalExecutor() as ex:
        assert ex.workers == physical_cores() and os.environ["OMP_NUM_THREADS"] == "1"
    with pytest.raises(DlccError, match="cannot reach"):
        _check_reachable("127.0.0.1:1")
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DlccError, match=r"pip install 'dlcc\[ray\]'"):
        make_executor(ray="auto")


# -- the sweep --------------------------------------------------------------------------------
def test_sweep_writes_the_table_its_front_and_pictures(local):
    assert local["points"] == 3 and local["computed"] == 3 and local["failed"] == 0
    rows = local["rows"]
    assert len(rows) == 3 * 2 * 2 and [r["point"] for r in rows] == sorted(r["point"] for r in rows)
    fp32, k4 = rows[0], rows[4]
    assert fp32["label"] == "fp32" and fp32["accuracy"] == fp32["accuracy_original"] > 0.98
    assert k4["pipeline"] == "prune(sparsity=0.5),kmeans(bits=4),quantize,huffman"
    assert k4["ratio"] > 8 and k4["bytes"] < fp32["bytes"] / 8
    for r in rows:
        assert r["cycles"] > 0 and 0 < r["utilization"] <= 1 and r["energy_pj"] > 0
        assert r["dram_bytes"] > 0 and r["agreement"] is not None and r["sqnr_db"] is not None
    by_config = {}
    for r in rows:
        by_config.setdefault((r["array"], r["dataflow"]), []).append(r)
    assert len(by_config) == 4
    for group in by_config.values():  # the compressed points are cheaper on every config
        assert group[0]["cycles"] >= group[1]["cycles"] and group[1]["front"]
    files = local["files"]
    table = read(files["points_csv"]).decode().splitlines()
    assert table[0].startswith("point,label,pipeline,status,bytes") and len(table) == 13
    front = read(files["front_csv"]).decode().splitlines()
    assert len(front) == 1 + sum(r["front"] for r in rows)
    document = json.loads(read(files["points_json"]))
    assert document["schema"] == "dlcc.sweep/1" and document["rows"] == json.loads(json.dumps(rows))
    for path in files["plots"]:
        assert read(path).startswith(PNG) and os.path.getsize(path) > 20_000
    kept = files["bundles"]
    assert kept and all(read(p).startswith(b"DLCC") for p in kept)


def test_a_rerun_is_cached_and_gives_the_same_bytes_as_one_worker(local, tmp_path):
    out = os.path.dirname(local["files"]["points_csv"])
    first = {k: read(local["files"][k]) for k in ("points_csv", "points_json", "front_csv")}
    again = tiny_sweep(out, workers=1, stream=io.StringIO())
    assert again["computed"] == 0 and again["cached"] == 3
    single = tiny_sweep(tmp_path, workers=1)  # computed afresh on one worker
    assert single["computed"] == 3
    for key, blob in first.items():
        assert read(again["files"][key]) == blob
        assert read(single["files"][key]) == blob


def killer_trial(inputs, pipeline: str, configs):
    """run_point, except that the worker of the 3-bit point kills itself."""
    if "bits=3" in pipeline:
        os._exit(3)
    return run_point(inputs, pipeline, configs)


def test_a_point_whose_worker_dies_is_recorded_failed_and_the_sweep_completes(local, tmp_path):
    lines = io.StringIO()
    broken = tiny_sweep(tmp_path, trial=killer_trial, stream=lines)
    failed = [r for r in broken["rows"] if r["status"] != "ok"]
    assert broken["failed"] == 1 and len(failed) == 4 and "kmeans(bits=3)" in failed[0]["pipeline"]
    assert all("the worker died 2 times" in r["error"] for r in failed)
    assert "failed" in lines.getvalue()
    rerun = tiny_sweep(tmp_path, workers=1)  # the failure was not cached: it runs again
    assert rerun["computed"] == 1 and rerun["cached"] == 2 and rerun["failed"] == 0
    assert read(rerun["files"]["points_csv"]) == read(local["files"]["points_csv"])


def test_new_arrays_cost_only_what_is_missing(local, tmp_path):
    cache = os.path.join(os.path.dirname(local["files"]["points_csv"]), "cache")
    shutil.copytree(cache, tmp_path / "cache")
    grown = tiny_sweep(
        tmp_path, grid=(K4,), arrays=(*ARRAYS, "8x8"), dataflows=("ws",), stream=io.StringIO()
    )
    assert grown["computed"] == 1 and len(grown["rows"]) == 3
    old = {(r["pipeline"], r["array"], r["dataflow"]): r for r in local["rows"]}
    same = ("bytes", "accuracy", "sqnr_db", "cycles", "energy_pj")
    for r in grown["rows"][:2]:  # 16x16 and 32x32 ws: as cached
        assert {k: r[k] for k in same} == {k: old[K4, r["array"], "ws"][k] for k in same}


def test_progress_has_an_eta_on_a_terminal_and_off_it():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, tty in ((io.StringIO(), False), (Tty(), True)):
        progress = Progress(stream, total=3, cached=1)
        progress.start("2 to compute")
        progress.point("p.5+int8", "ok")
        progress.point("p.9+int8", "failed")
        progress.close()
        text = stream.getvalue()
        assert "ETA" in text and "1 failed" in text and ("\r" in text) == tty
        if not tty:
            assert text.count("\n") == 3 and "[3/3] p.9+int8 failed" in text


def test_the_front_is_the_rows_no_other_row_beats():
    def row(point, size, acc, cycles, energy, array="a"):
        return {"point": point, "status": "ok", "bytes": size, "accuracy": acc,
                "cycles": cycles, "energy_pj": energy, "array": array, "dataflow": "ws",
                "front": False}  # fmt: skip

    rows = [row(0, 100, 0.99, 10, 5), row(1, 50, 0.95, 10, 5), row(2, 60, 0.95, 10, 5),
            row(3, 100, 0.99, 10, 5), row(4, 200, 0.99, 1, 5),
            row(5, 300, 0.5, 1, 5, "b")]  # fmt: skip
    mark_front(rows, "accuracy")
    assert [r["front"] for r in rows] == [True, True, False, True, True, True]
    assert dominates((1, 1), (1, 2)) and not dominates((1, 1), (1, 1))


def test_sweep_cli_prints_the_front_and_refuses_bad_input(local, tmp_path):
    out = os.path.dirname(local["files"]["points_csv"])
    args = ["--data", DATA, "--array", ",".join(ARRAYS), "--dataflow", ",".join(FLOWS)]
    result = invoke("sweep", MODEL, *args, "--grid", GRID[0], "-o", out)
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.stdout and "3 cached" in result.stdout
    assert "nothing to compute" in result.stderr
    summary = json.loads(
        invoke("sweep", MODEL, *args, "--grid", GRID[0], "-o", out, "--json").stdout
    )
    assert summary["cached"] == 3 and "rows" not in summary and summary["front"]
    with open(tmp_path / "grid.txt", "w") as f:
        f.write("# the fp32 point\n\nquantize\n")
    assert_clean_error(invoke("sweep", MODEL, *args, "--grid", "@nosuch.txt", "-o", out), "nosuch")
    assert_clean_error(invoke("sweep", MODEL, "--data", DATA, "--array", "0x4", "-o", out), "0x4")
    assert_clean_error(invoke("sweep", MODEL, "--data", DATA, "--dataflow", "xs", "-o", out), "xs")
    assert_clean_error(
        invoke("sweep", MODEL, "--data", DATA, "--grid", "quantize", "--workers", "0", "-o", out),
        "--workers",
    )
    assert_clean_error(
        invoke("sweep", MODEL, "--data", DATA, "-o", local["files"]["points_csv"]),
        "not a directory",
    )
    result = invoke("sweep", MODEL, "--data", DATA, "--grid", "@" + str(tmp_path / "grid.txt"),
                    "-o", str(tmp_path / "r"), "--ray", "127.0.0.1:1")  # fmt: skip
    assert_clean_error(result, "cannot reach")


# -- pictures ---------------------------------------------------------------------------------
def legend_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_sweep_figures_have_titles_units_and_legends(local):
    import matplotlib.pyplot as plt

    from dlcc.plot import sweep_figures

    figures = sweep_figures(local)
    try:
        (acc,) = figures["accuracy_vs_bytes"].axes
        assert "accuracy vs bundle size" in acc.get_title()
        assert acc.get_xlabel() == "bundle size (bytes, log scale)" and "(%)" in acc.get_ylabel()
        assert legend_texts(acc)[:2] == ["pipelines", "on the Pareto front of an array"]
        assert {"fp32", "p.5+k4+int8+h"} <= {t.get_text() for t in acc.texts}
        energy, cycles = figures["energy_vs_bytes"].axes
        assert "(uJ" in energy.get_ylabel() and "cycles" in cycles.get_ylabel()
        assert "16x16 ws" in legend_texts(cycles) and "on its Pareto front" in legend_texts(cycles)
        assert "energy" in figures["energy_vs_bytes"]._suptitle.get_text()
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_explain_plot_draws_where_the_bytes_went(tmp_path):
    import matplotlib.pyplot as plt

    import dlcc
    from dlcc.explain import describe
    from dlcc.plot import size_figure
    from dlcc.sizes import waterfall

    bundle, png = str(tmp_path / "b.bin"), str(tmp_path / "size.png")
    passes = "lowrank(energy=0.95),prune(sparsity=0.8),kmeans(bits=5),quantize,huffman"
    dlcc.compile(MODEL, bundle, passes=passes)
    result = invoke("explain", bundle, "--plot", png)
    assert result.exit_code == 0 and f"wrote {png}" in result.stderr
    assert read(png).startswith(PNG) and os.path.getsize(png) > 20_000
    report = describe(dlcc.load(bundle), os.path.getsize(bundle))
    steps = waterfall(report)
    assert [s["step"] for s in steps] == ["fp32 weights", "lowrank", "prune", "kmeans",
                                          "quantize", "encoding", "huffman", "container",
                                          "bundle"]  # fmt: skip
    assert steps[0]["total"] + sum(s["delta"] for s in steps[1:-1]) == steps[-1]["total"]
    assert steps[-1]["total"] == os.path.getsize(bundle)
    assert all(s["delta"] < 0 for s in steps[1:5])  # every pass saved bytes
    fig = size_figure(report)
    try:
        waterfall_ax, tensors_ax = fig.axes
        assert "where the bytes went: lenet5.onnx" in fig._suptitle.get_text()
        assert waterfall_ax.get_title().startswith("by pass") and waterfall_ax.get_ylabel()
        assert "bytes saved" in legend_texts(waterfall_ax)
        assert tensors_ax.get_xlabel() == "bytes (log scale)"
        assert legend_texts(tensors_ax) == ["fp32", "in the bundle"]
    finally:
        plt.close(fig)
    assert_clean_error(invoke("explain", bundle, "--plot", bundle), "choose another output")


def test_sensitivity_heat_map(tmp_path, sample_images):
    import matplotlib.pyplot as plt

    import dlcc
    from dlcc.explain import describe
    from dlcc.plot import sensitivity_figure

    bundle, png = str(tmp_path / "s.bin"), str(tmp_path / "heat.png")
    images, labels = sample_images
    held = {"image": images[:64], "labels": labels[:64]}
    passes = "sensitivity(quantize=false),prune(sparsity=0.5)"
    dlcc.compile(sample_path("lenet_300_100.onnx"), bundle, passes=passes, evaluation=held)
    result = invoke("explain", bundle, "--sensitivity-plot", png)
    assert result.exit_code == 0 and read(png).startswith(PNG) and os.path.getsize(png) > 20_000
    fig = sensitivity_figure(describe(dlcc.load(bundle), os.path.getsize(bundle)))
    try:
        ax = fig.axes[0]
        assert ax.get_title().startswith("sensitivity of lenet_300_100.onnx: accuracy")
        assert ax.get_xlabel().startswith("pass and setting") and ax.get_ylabel() == "layer"
        assert len(ax.get_yticklabels()) == 3  # one row per layer
        assert "prune 0.5" in [t.get_text() for t in ax.get_xticklabels()]
        assert legend_texts(ax)[0].startswith("unsafe: beyond the noise band")
        assert "percentage points" in fig.axes[1].get_ylabel()  # the colorbar
    finally:
        plt.close(fig)
    plain = str(tmp_path / "plain.bin")
    dlcc.compile(sample_path("lenet_300_100.onnx"), plain)
    result = invoke("explain", plain, "--sensitivity-plot", png)
    assert_clean_error(result, "no sensitivity table")


# -- Ray --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_gives_the_same_table_as_local_processes(local, tmp_path):
    import ray  # in the test extra: this test runs in CI

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        on_ray = tiny_sweep(tmp_path, ray="auto", workers=None)
    finally:
        if started:
            ray.shutdown()
    assert on_ray["computed"] == 3
    for key in ("points_csv", "points_json", "front_csv"):
        assert read(on_ray["files"][key]) == read(local["files"][key]), key
