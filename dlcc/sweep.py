"""`dlcc sweep`: every point of a grid compiled, scored and costed; the table and its front.

    point  a pipeline of the grid (dlcc/grid.py), compiled with the calibration data
    score  on --data against the original on onnxruntime (dlcc/verify.py): accuracy with
           labels, top-1 agreement and SQNR of the first output
    cost   the bundle run on the systolic target on the first `batch` samples, on every
           array x dataflow (runtime/systolic/cost.py): cycles, utilization, DRAM bytes,
           energy (pJ, Horowitz's table)
    front  per array x dataflow, the rows no other row beats on all of bytes (less),
           fidelity (the accuracy with labels, else the agreement; more), cycles and energy
           (less): which pipeline to ship on that array

A point is one trial (`run_point`), a pure function of its inputs, run on an executor
(dlcc/executor.py). Its result is cached in DIR/cache/ under a content hash of the model's
and the data's bytes, the resolved pipeline, the cost batch and the dlcc version, with its
costs by array and dataflow: a rerun computes only what is missing (points, or arrays and
dataflows added since). A point whose compile fails (a DlccError, deterministic) is cached
with its error; one whose worker died twice is not (a rerun tries it again). The tables are
sorted by grid position, array and dataflow, and hold no timings: the same sweep writes the
same bytes on one worker, N workers or a Ray cluster (the table: dlcc/sweep_table.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time

from dlcc.errors import DlccError
from dlcc.fileio import write_atomic
from dlcc.grid import Point, parse_grid
from dlcc.sweep_table import finite, header, table, write

DEFAULT_ARRAYS = ("32x32", "128x128", "256x256")
DEFAULT_DATAFLOWS = ("ws", "os", "is")
# What a trial imports, imported once by the local workers' forkserver (dlcc/executor.py).
PRELOAD = ("dlcc.sweep", "dlcc.api", "dlcc.verify", "dlcc.frontend", "dlcc.passes.manager",
           "dlcc.runtime.systolic.engine", "onnxruntime")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What every trial reads, shipped to each worker once: the model (its path, and its
    bytes for a worker on another machine), the scoring and calibration data, and the
    samples the hardware cost is measured on."""

    model_path: str
    model_bytes: bytes
    model_hash: str
    data: dict
    calibration: dict
    cost_inputs: dict

    def model_file(self) -> str:
        """A path holding the model: its own if it still has these bytes, else a copy
        (under the same file name: the bundle records it)."""
        if self.model_hash not in _MODEL_FILES:
            path = self.model_path
            if not os.path.isfile(path) or _digest_file(path) != self.model_hash:
                folder = os.path.join(tempfile.gettempdir(), f"dlcc-model-{self.model_hash[:16]}")
                os.makedirs(folder, exist_ok=True)
                path = os.path.join(folder, os.path.basename(self.model_path))
                write_atomic(path, self.model_bytes)
            _MODEL_FILES[self.model_hash] = path
        return _MODEL_FILES[self.model_hash]


_MODEL_FILES: dict[str, str] = {}  # in a worker: model hash -> a path holding those bytes


def run_point(inputs: Inputs, pipeline: str, configs: tuple[str, ...]) -> dict:
    """The trial: compile `pipeline`, score it, cost it on each "RxC/dataflow" of `configs`.

    {"status": "ok", bytes, fp32_weight_bytes, accuracy, accuracy_original, agreement,
    sqnr_db, costs: {config: {cycles, utilization, dram_bytes, energy_pj}}, seconds}, or
    {"status": "error", "error": message} when dlcc refuses the point.
    """
    import dlcc
    from dlcc.api import load_bytes
    from dlcc.verify import verify

    start = time.perf_counter()
    try:
        model = inputs.model_file()
        bundle = dlcc.compile(model, passes=pipeline, calibration=inputs.calibration)
        blob = bundle.to_bytes()
        loaded = load_bytes(blob, os.path.basename(model))
        checked = verify(model, loaded, inputs.data)
        first = checked["outputs"][loaded.output_names[0]]
        accuracy = checked.get("accuracy", {})
        result = {
            "status": "ok",
            "bytes": len(blob),
            "fp32_weight_bytes": bundle.meta["report"]["fp32_weight_bytes"],
            "accuracy": accuracy.get("bundle"),
            "accuracy_original": accuracy.get("original"),
            "agreement": first.get("agreement"),
            "sqnr_db": first["sqnr_db"],
            "costs": {config: _cost(loaded, inputs.cost_inputs, config) for config in configs},
        }
    except DlccError as e:
        result = {"status": "error", "error": str(e)}
    return {**result, "seconds": time.perf_counter() - start}


def build_bundle(inputs: Inputs, pipeline: str) -> bytes:
    """The bundle of `pipeline` (what `run_point` compiled; compiles are deterministic)."""
    import dlcc

    return dlcc.compile(inputs.model_file(), passes=pipeline, calibration=inputs.calibration)\
        .to_bytes()  # fmt: skip


def _cost(loaded, feeds: dict, config: str) -> dict:
    """The systolic cost report's totals for one run of `feeds` on `config`."""
    from dlcc.runtime.systolic.config import SystolicConfig, parse_array
    from dlcc.runtime.systolic.cost import report
    from dlcc.runtime.systolic.engine import SystolicTarget

    array, dataflow = config.split("/")
    rows, cols = parse_array(array)
    target = SystolicTarget(SystolicConfig(rows=rows, cols=cols, dataflow=dataflow))
    loaded.run(feeds, target=target)
    rep = report(target.records, target.config)
    return {
        "cycles": rep["total_cycles"],
        "utilization": rep["utilization"],
        "dram_bytes": rep["dram_bytes"],
        "energy_pj": rep["energy_pj"]["total"],
    }


def sweep(
    model: str,
    data_path: str,
    out_dir: str,
    calib_path: str | None = None,
    grid: tuple[str, ...] = (),
    arrays: tuple[str, ...] = DEFAULT_ARRAYS,
    dataflows: tuple[str, ...] = DEFAULT_DATAFLOWS,
    workers: int | None = None,
    ray: str | None = None,
    keep_bundles: bool = False,
    plot: bool = False,
    batch: int = 1,
    stream=None,
    trial=run_point,
) -> dict:
    """Run the sweep (module docstring) and write DIR/points.csv, points.json, front.csv
    (and with `plot`, accuracy_vs_bytes.png and energy_vs_bytes.png; with `keep_bundles`,
    the front's bundles in DIR/bundles/). Progress goes to `stream` (None: quiet). `trial`
    replaces `run_point` (tests). Returns the summary: the table, its front, the files."""
    from dlcc.executor import make_executor

    start = time.perf_counter()
    points = parse_grid(grid)
    configs = _configs(arrays, dataflows)
    if batch < 1:
        raise DlccError(f"--batch {batch}: need at least 1 sample")
    if workers is not None and workers < 1:
        raise DlccError(f"--workers {workers}: need at least 1")
    inputs, digest, metric = _inputs(model, data_path, calib_path, batch)
    cache = _Cache(out_dir, digest)
    results, jobs = {}, []
    for p in points:
        cached = cache.get(p)
        missing = tuple(c for c in configs if c not in (cached or {}).get("costs", {}))
        if cached and (cached["status"] == "error" or not missing):
            results[p.index] = cached
        else:
            jobs.append((p.index, (None, p.pipeline, missing)))
    progress = Progress(stream, len(points), len(points) - len(jobs))
    executor = None

    def get_executor():
        nonlocal executor
        executor = executor or make_executor(workers, ray, PRELOAD)
        return executor

    try:
        if not jobs:
            progress.start("nothing to compute")
        else:
            get_executor()
            progress.start(
                f"{len(jobs)} to compute on {executor.workers} {executor.name} worker(s)"
            )
            shared = executor.share(inputs)
            jobs = [(key, (shared, *args[1:])) for key, args in jobs]
            for index, value, error in executor.map(trial, jobs):
                point = points[index]
                if error is not None:
                    value = {"status": "failed", "error": error}
                else:
                    old = cache.get(point) if value["status"] == "ok" else None
                    if old and old["status"] == "ok":
                        value = {**value, "costs": {**old["costs"], **value["costs"]}}
                    cache.put(point, value)
                results[index] = value
                progress.point(point.label, value["status"])
        rows = table(points, results, configs, metric)
        files = write(out_dir, rows, header(model, data_path, metric, configs, batch, digest))
        if keep_bundles:
            files["bundles"] = _keep_bundles(out_dir, rows, points, inputs, get_executor)
    except BaseException:  # an interrupt or an error: stop the trials still running
        if executor is not None:
            executor.close(abort=True)
            executor = None
        raise
    finally:
        progress.close()
        if executor is not None:
            executor.close()
    summary = {
        **header(model, data_path, metric, configs, batch, digest),
        "points": len(points),
        "computed": len(jobs),
        "cached": len(points) - len(jobs),
        "failed": sum(r["status"] != "ok" for r in results.values()),
        "seconds": round(time.perf_counter() - start, 3),
        "files": files,
        "rows": rows,
        "front": [r for r in rows if r["front"]],
    }
    if plot:
        from dlcc.plot import sweep_pngs

        files["plots"] = sweep_pngs(summary, out_dir)
    return summary


def _configs(arrays, dataflows) -> tuple[str, ...]:
    """Every "RxC/dataflow" of the arrays and dataflows, in the order given, each once."""
    from dlcc.runtime.systolic.config import DATAFLOWS, parse_array

    sides = [f"{r}x{c}" for r, c in (parse_array(a.strip()) for a in arrays)]
    for d in dataflows:
        if d not in DATAFLOWS:
            raise DlccError(f"--dataflow {d!r}: choose from {', '.join(DATAFLOWS)}")
    if not sides or not dataflows:
        raise DlccError("a sweep needs at least one --array and one --dataflow")
    return tuple(dict.fromkeys(f"{a}/{d}" for a in sides for d in dataflows))


def _inputs(model: str, data_path: str, calib_path: str | None, batch: int):
    """(Inputs, the content digest every cache key starts from, the fidelity metric); the
    model and the data checked here, before any trial runs."""
    from dlcc import __version__
    from dlcc.data import for_graph, read
    from dlcc.frontend import import_onnx
    from dlcc.passes.calibrate import batches

    graph = import_onnx(model)
    data = for_graph(read(data_path), graph, "--data")
    calibration = for_graph(read(calib_path), graph, "--calib", nonzero=True) if calib_path \
        else for_graph(data, graph, "--data", nonzero=True)  # fmt: skip
    feeds = {k: v for k, v in data.items() if k != "labels"}
    cost_inputs = next(batches(graph, feeds, batch))
    if "labels" in data:
        metric = "accuracy"
    else:
        metric = "agreement" if len(graph.outputs[0].shape) == 2 else "sqnr_db"
    with open(model, "rb") as f:
        model_bytes = f.read()
    model_hash = hashlib.sha256(model_bytes).hexdigest()
    digest = {
        "dlcc": __version__,
        "model": model_hash,
        "data": _digest_file(data_path),
        "calibration": _digest_file(calib_path or data_path),
        "batch": batch,
    }
    inputs = Inputs(model, model_bytes, model_hash, data, calibration, cost_inputs)
    return inputs, digest, metric


def _digest_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _Cache:
    """DIR/cache/<key>.json: one trial result per point, keyed by a content hash."""

    def __init__(self, out_dir: str, digest: dict) -> None:
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise DlccError(f"-o {out_dir}: exists and is not a directory")
        self.folder = os.path.join(out_dir, "cache")
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as e:
            raise DlccError(f"-o {out_dir}: cannot create ({e.strerror or e})") from None
        self.digest = digest

    def key(self, point: Point) -> str:
        text = json.dumps({**self.digest, "pipeline": point.resolved}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, point: Point) -> dict | None:
        try:
            with open(os.path.join(self.folder, self.key(point) + ".json")) as f:
                entry = json.load(f)
            return entry["result"] if entry.get("pipeline") == point.resolved else None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or damaged (a kill mid-write cannot: writes are atomic)

    def put(self, point: Point, result: dict) -> None:
        entry = {"pipeline": point.resolved, "inputs": self.digest, "result": result}
        path = os.path.join(self.folder, self.key(point) + ".json")
        write_atomic(path, json.dumps(finite(entry), sort_keys=True).encode())


def _keep_bundles(out_dir, rows, points, inputs, get_executor) -> list[str]:
    """The front's bundles in DIR/bundles/, compiled again (deterministic) where missing."""
    folder = os.path.join(out_dir, "bundles")
    os.makedirs(folder, exist_ok=True)
    wanted = {r["point"] for r in rows if r["front"]}
    paths = {}
    for i in sorted(wanted):
        name = re.sub(r"[^\w.+-]", "_", points[i].label)
        paths[i] = os.path.join(folder, f"{i:03d}-{name}.bin")
    todo = [i for i in sorted(wanted) if not os.path.exists(paths[i])]
    if todo:
        executor = get_executor()
        shared = executor.share(inputs)
        jobs = [(i, (shared, points[i].pipeline)) for i in todo]
        for i, blob, error in executor.map(build_bundle, jobs):
            if error is None:
                write_atomic(paths[i], blob)
    return [paths[i] for i in sorted(wanted) if os.path.exists(paths[i])]


class Progress:
    """Progress with an ETA on `stream`: one line redrawn on a terminal, else one line per
    point. The ETA extrapolates the computed points' pace (cached ones cost nothing)."""

    def __init__(self, stream, total: int, cached: int) -> None:
        self.stream, self.total, self.cached = stream, total, cached
        self.done, self.failed = cached, 0
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.start_time = time.perf_counter()

    def start(self, what: str) -> None:
        self.start_time = time.perf_counter()
        self._say(f"dlcc: sweep: {self.total} points, {self.cached} cached; {what}\n")

    def point(self, label: str, status: str) -> None:
        self.done += 1
        self.failed += status != "ok"
        computed = self.done - self.cached
        left = self.total - self.done
        elapsed = time.perf_counter() - self.start_time
        eta = _clock(elapsed / computed * left) if computed else "?"
        state = f"{self.cached} cached, {self.failed} failed, {_clock(elapsed)} elapsed, ETA {eta}"
        if self.tty:
            self._say(f"\rdlcc: sweep {self.done}/{self.total} ({state}) {label}\x1b[K")
        else:
            self._say(f"dlcc: sweep [{self.done}/{self.total}] {label} {status} ({state})\n")

    def close(self) -> None:
        if self.tty and self.done > self.cached:
            self._say("\n")

    def _say(self, text: str) -> None:
        if self.stream is not None:
            self.stream.write(text)
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"  # fmt: skip
