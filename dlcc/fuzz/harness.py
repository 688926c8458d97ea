"""Execution: run a case, classify its outcome, in worker processes with limits; reports.

`execute` loads a blob, renders `dlcc explain --asm` of it and runs it on every target at
batch 1 and 2 with zero and random inputs: ok, rejected (a DlccError), traceback (any other
exception: a bug), memory (MemoryError, or the loader accepted an input too large to build).
`run_cases` executes cases in spawned workers (address space limited to 4 GB); a worker that
dies is a crash, one that exceeds the timeout is killed and is a hang. With `trace_memory`,
each case records its tracemalloc peak against its declared need (`Result.overallocated`).
"""

from __future__ import annotations

import dataclasses
import faulthandler
import math
import multiprocessing
import os
import re
import resource
import signal
import tempfile
import time
import traceback
import tracemalloc
import warnings
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import wait

import numpy as np

from dlcc.fuzz.mutant import Seed, mutant

FAILURES = ("traceback", "crash", "hang", "memory")
OUTCOMES = ("ok", "rejected", *FAILURES, "invalid")  # invalid: the mutant could not be written
TARGETS = ("interp", "systolic")
MAX_INPUT = 1 << 26  # elements: a loaded bundle declaring a larger input is a "memory" outcome
SLACK = 16 << 20  # bytes of interpreter overhead allowed beyond 2 x the declared need
_FUZZ = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(os.path.dirname(_FUZZ))


# -- execution ----------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    """How one case went; `frame` is the innermost dlcc frame (file:line function)."""

    case: str
    outcome: str  # one of OUTCOMES
    note: str = ""  # the mutation
    stage: str = ""  # load, explain, run TARGET batch B FILL, ...
    error: str = ""  # exception type, signal or "Timeout"
    message: str = ""
    frame: str = ""
    trace: str = ""  # the traceback, or the stack faulthandler dumped (crash, hang)
    peak: int = 0  # tracemalloc peak of the case, bytes
    need: int = 0  # declared need: file + decoded weights + every buffer at batch 2, bytes

    @property
    def overallocated(self) -> bool:
        """Traced memory above twice the declared need (plus SLACK)."""
        return self.peak > 2 * self.need + SLACK

    @property
    def kind(self) -> str:
        return self.case.split(":")[0]


class _Oversize(Exception):
    """The loader accepted a bundle whose inputs are too large to build."""


def _inputs(loaded, batch: int, random: bool) -> dict[str, np.ndarray]:
    """float32 inputs by name, shaped by their buffer records at `batch` (dlcc casts them)."""
    arrays, rng = {}, np.random.default_rng(batch)
    for name, buf in loaded.file.inputs:
        record = loaded.file.buffers[buf] if buf < len(loaded.file.buffers) else None
        shape = list(record.shape) if record else [batch]
        if record and record.batch_axis is not None and 0 <= record.batch_axis < len(shape):
            shape[record.batch_axis] = batch
        if math.prod(shape) > MAX_INPUT:
            raise _Oversize(f"the loader accepted input {name!r} of shape {tuple(shape)}")
        arrays[name] = (rng.standard_normal if random else np.zeros)(shape, np.float32)
    return arrays


def _need(blob: bytes, loaded) -> int:
    need = len(blob)
    if loaded is not None:
        need += sum(w.nbytes for w in loaded.weights)
        for b in loaded.file.buffers:
            try:
                need += 2 * math.prod(b.shape) * np.dtype(b.dtype).itemsize
            except TypeError:
                need += 2 * math.prod(b.shape) * 8
    return need


def _where(filename: str, line: int, function: str) -> str | None:
    """`path:line (function)` of a frame inside dlcc (this module excluded), else None."""
    path = os.path.abspath(filename)
    if (
        filename.startswith("<")
        or not path.startswith(_ROOT + os.sep)
        or path.startswith(_FUZZ + os.sep)
    ):
        return None
    return f"{os.path.relpath(path, _ROOT)}:{line} ({function})"


def execute(case: str, blob: bytes, stage: Callable[[str], None] = lambda s: None) -> Result:
    """Load `blob`, explain it and run it on TARGETS; see the module doc for the outcomes."""
    from dlcc.api import load_bytes
    from dlcc.errors import DlccError
    from dlcc.explain import describe, render

    result, loaded = Result(case, "ok"), None

    def step(name: str) -> None:
        result.stage = name
        stage(name)

    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    try:
        step("load")
        loaded = load_bytes(blob, case)
        step("explain")
        render(describe(loaded, len(blob), asm=True))
        for target in TARGETS:
            for batch in (1, 2):
                for random in (False, True):
                    step(f"run {target} batch {batch} {('zeros', 'random')[random]}")
                    loaded.run(_inputs(loaded, batch, random), target)
    except DlccError as e:
        result.outcome, result.error, result.message = "rejected", type(e).__name__, str(e)
    except Exception as e:  # any other exception is the finding
        memory = isinstance(e, MemoryError | _Oversize)
        result.outcome, result.error = "memory" if memory else "traceback", type(e).__name__
        result.message = str(e)
        frames = traceback.extract_tb(e.__traceback__)
        inside = [w for f in frames if (w := _where(f.filename, f.lineno, f.name))]
        result.frame = inside[-1] if inside else ""
        result.trace = "".join(traceback.format_exception(e))[-4000:]
    result.message = result.message[:300]
    if tracemalloc.is_tracing():
        result.peak, result.need = tracemalloc.get_traced_memory()[1] - base, _need(blob, loaded)
    return result


def run_case(case: str, seeds: list[Seed], stage: Callable[[str], None] = lambda s: None):
    """Build case `case` and execute it (an "invalid" Result if it cannot be written)."""
    stage("mutate")
    try:
        blob, note = mutant(case, seeds)
    except Exception as e:  # a fuzzer bug: reported, not fatal
        return Result(case, "invalid", stage="mutate", error=type(e).__name__, message=str(e))
    result = execute(case, blob, stage)
    result.note = note
    return result


def _worker(conn, seeds: list[Seed], limit: int, trace_memory: bool, dump_path: str) -> None:
    """A worker process: runs the case ids it receives until it receives None."""
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    with open(dump_path, "a") as dump:
        faulthandler.enable(dump)
        faulthandler.register(signal.SIGUSR1, dump, all_threads=False)  # sent at the timeout
        if trace_memory:
            tracemalloc.start()
        execute("warm-up", seeds[0].blob)  # the lazy imports, outside any case's time
        conn.send(("ready", None))
        while (case := conn.recv()) is not None:
            os.ftruncate(dump.fileno(), 0)
            result = run_case(case, seeds, lambda s: conn.send(("stage", s)))
            conn.send(("result", result))


class _Process:
    """A worker and the case it is running."""

    def __init__(self, ctx, seeds: list[Seed], options: tuple[int, bool]) -> None:
        fd, self.dump = tempfile.mkstemp(prefix="dlcc-fuzz-", suffix=".txt")
        os.close(fd)
        self.conn, child = ctx.Pipe()
        args = (child, seeds, *options, self.dump)
        self.proc = ctx.Process(target=_worker, args=args, daemon=True)
        self.proc.start()
        child.close()
        self.ready, self.case, self.stage, self.started = False, None, "", 0.0

    def send(self, case: str | None) -> None:
        self.case, self.stage, self.started = case, "sent", time.monotonic()
        self.conn.send(case)

    def receive(self) -> Result | None:
        """The result of the current case once it has arrived; raises EOFError on death."""
        while self.conn.poll():
            what, value = self.conn.recv()
            if what == "ready":
                self.ready = True
            elif what == "stage":
                self.stage = value
            else:
                self.case = None
                return value
        return None

    def lost(self, outcome: str, error: str, message: str, seeds: list[Seed]) -> Result:
        """The Result of a case whose worker died or was killed; its frames come from the
        stack faulthandler dumped (on a fatal signal, or on SIGUSR1 at the timeout)."""
        with open(self.dump, errors="replace") as f:
            dump = f.read()
        frames = re.findall(r'File "([^"]+)", line (\d+) in (\S+)', dump)  # innermost first
        inside = [w for f in frames if (w := _where(f[0], int(f[1]), f[2]))]
        result = Result(self.case, outcome, mutant(self.case, seeds)[1], self.stage, error)
        result.message, result.frame, result.trace = message, (inside or [""])[0], dump
        return result

    def close(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()
        os.unlink(self.dump)


def run_cases(
    cases: Iterable[str],
    seeds: list[Seed],
    workers: int = 2,
    timeout: float = 5.0,
    address_space: int = 4 << 30,
    trace_memory: bool = False,
) -> Iterator[Result]:
    """Results of `cases` (in completion order), run in `workers` spawned processes limited to
    `address_space` bytes; a case running longer than `timeout` s is a "hang". With
    `trace_memory`, each Result has its tracemalloc peak (cases run about 1.6x slower)."""
    ctx = multiprocessing.get_context("spawn")
    options = (address_space, trace_memory)
    todo = iter(cases)
    pool = [_Process(ctx, seeds, options) for _ in range(workers)]
    try:
        while pool:
            for w in list(pool):
                if w.ready and w.case is None:
                    if (case := next(todo, None)) is None:
                        w.send(None)
                        pool.remove(w)
                        w.close()
                    else:
                        w.send(case)
            waits = [w.conn for w in pool] + [w.proc.sentinel for w in pool]
            wait(waits, timeout=0.5)
            for k, w in enumerate(pool):
                try:
                    result = w.receive()
                except (EOFError, OSError):
                    result = None
                if result is not None:
                    yield result
                    continue
                late = w.case is not None and time.monotonic() - w.started > timeout
                if w.proc.is_alive() and not late:
                    continue
                if w.case is None and not w.ready:
                    raise RuntimeError(f"a fuzz worker failed to start (exit {w.proc.exitcode})")
                if late:
                    os.kill(w.proc.pid, signal.SIGUSR1)  # dump the stack where it hangs
                    time.sleep(0.2)
                    w.proc.kill()
                    w.proc.join()
                    why = ("hang", "Timeout", f"no result in {timeout:g} s")
                else:
                    w.proc.join()
                    code = w.proc.exitcode or 0
                    name = signal.Signals(-code).name if code < 0 else f"exit {code}"
                    why = ("crash", name, f"the worker died ({name})")
                if w.case is not None:
                    yield w.lost(*why, seeds)
                w.close()
                pool[k] = _Process(ctx, seeds, options)
    finally:
        for w in pool:
            w.close()


# -- reporting ----------------------------------------------------------------------------
def failures(results: Iterable[Result]) -> list[tuple[int, Result]]:
    """Distinct failures, most frequent first: (count, first Result) per outcome, error type
    and innermost dlcc frame (stage when there is no frame)."""
    groups: dict[tuple, list] = {}
    for r in results:
        if r.outcome in FAILURES:
            key = (r.outcome, r.error.split(" ")[0], r.frame or r.stage)
            groups.setdefault(key, [0, r])[0] += 1
    return sorted(((n, r) for n, r in groups.values()), key=lambda g: -g[0])


def format_failures(groups: list[tuple[int, Result]], limit: int | None = None) -> str:
    """The distinct failures as text, each with its replay id and mutation."""
    lines = []
    for n, r in groups[:limit]:
        where = r.frame or "no dlcc frame"
        lines.append(f"{n:6d} x {r.outcome} {r.error} at {where}, during {r.stage}")
        if r.message:
            lines.append(f"         {r.message.splitlines()[-1][:160]}")
        lines.append(f"         replay {r.case}  ({r.note[:140]})")
    return "\n".join(lines)
