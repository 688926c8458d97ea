"""One executor for independent trials: local worker processes by default, Ray when asked.

Searches (`dlcc sweep`, and any other search of independent trials) hand their trials to an
`Executor` and read the outcomes back as they finish:

    with make_executor(workers=2) as ex:          # or make_executor(ray="auto")
        inputs = ex.share(big_inputs)             # shipped once per worker, not per trial
        for key, value, error in ex.map(fn, [(key, (inputs, point)), ...]):
            ...                                   # error is None, or why the trial failed

A trial is a pure function of its arguments (a module-level function, so that it pickles by
reference). Its outcome is the value it returns; an exception it raises is its failure,
reported once (a pure function would raise again). A trial whose *worker dies* (killed, out
of memory, a crash in native code) is retried once, then reported failed: the search goes on.

- local (default): a `concurrent.futures.ProcessPoolExecutor`, at most `workers` trials in
  flight. A dead worker breaks the whole pool, failing every trial in flight: each is
  charged one death and runs again alone, in a second, one-process pool, where a death has
  one suspect. So the trial that kills its worker fails after two deaths, and the others
  of its pool pass on their retry. Workers fork from a forkserver that has imported the
  `preload` modules once (spawn where there is no forkserver).
- Ray (`ray="auto"`, `"local"`, `"HOST:PORT"` or `"ray://HOST:PORT"`): one Ray task per trial
  (`max_retries=0`: the retry is ours), at most the cluster's CPUs (or `workers`) in flight.
  Ray reports a dead worker on the task that ran there (`WorkerCrashedError`). Ray is an
  optional extra (`pip install 'dlcc[ray]'`), imported only here and only when asked.

Every worker runs its BLAS single-threaded (as Ray's workers do), so that a trial gives the
same floats on one worker, N workers or a cluster, and N workers do not oversubscribe N cores.
"""

from __future__ import annotations

import collections
import os
import pickle
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from dlcc.errors import DlccError
from dlcc.runtime.threads import blas_threads, physical_cores

RETRIES = 1  # a trial whose worker died runs once more before it is reported failed
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


class Shared:
    """A large argument shipped to the workers once (`Executor.share`), resolved in the trial."""

    def __init__(self, path: str | None = None, ref: Any = None) -> None:
        self.path, self.ref = path, ref

    def get(self) -> Any:
        if self.ref is not None:
            import ray

            return ray.get(self.ref)
        if self.path not in _LOADED:
            _LOADED.clear()  # one shared input at a time: a worker's memory stays flat
            with open(self.path, "rb") as f:
                _LOADED[self.path] = pickle.load(f)
        return _LOADED[self.path]


_LOADED: dict[str, Any] = {}  # in a worker: the Shared values it has read, by path


def _call(fn: Callable, args: tuple) -> Any:
    """Run in a worker: `fn(*args)` with every Shared argument resolved to its value, its
    BLAS on one thread (module docstring)."""
    with _single_threaded():
        return fn(*(a.get() if isinstance(a, Shared) else a for a in args))


def _single_threaded():
    """One BLAS thread for the block: the runtime's own setting, which the runs inside it
    keep (runtime/threads.py)."""
    return blas_threads(1)


class Executor:
    """Runs trials; `map` yields (key, value, error) as they finish. A context manager."""

    name = "executor"
    workers = 1
    exact = False  # whether a lost trial is always known (else: isolate, see module doc)

    def share(self, value: Any) -> Shared:
        raise NotImplementedError

    def _submit(self, fn: Callable, args: tuple, solo: bool) -> Future:
        raise NotImplementedError

    def _lost(self, error: BaseException) -> bool:
        """Whether `error` says the worker died (rather than the trial raising)."""
        raise NotImplementedError

    def _broken(self, solo: bool) -> None:
        """A worker of that lane died: make the lane usable again."""

    def close(self, abort: bool = False) -> None:
        """Free the workers; `abort` stops the trials still running (an interrupt)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, kind, *exc) -> None:
        self.close(abort=kind is not None)

    def map(
        self, fn: Callable, jobs: list[tuple[Any, tuple]], retries: int = RETRIES
    ) -> Iterator[tuple[Any, Any, str | None]]:
        """(key, fn(*args), None) for each (key, args) as it finishes, or (key, None, why)."""
        queue = collections.deque(jobs)
        solo_queue: collections.deque = collections.deque()
        deaths: collections.Counter = collections.Counter()
        flying: dict[Future, tuple[Any, tuple, bool]] = {}
        while queue or solo_queue or flying:
            solo_busy = any(solo for _, _, solo in flying.values())
            if solo_queue and not solo_busy:
                key, args = solo_queue.popleft()
                flying[self._submit(fn, args, True)] = (key, args, True)
                solo_busy = True
            room = self.workers - (1 if solo_busy and self.workers > 1 else 0)
            while queue and sum(not s for _, _, s in flying.values()) < room:
                key, args = queue.popleft()
                flying[self._submit(fn, args, False)] = (key, args, False)
            done, _ = wait(list(flying), return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: not flying[f][2]):  # the solo lane first
                if future not in flying:  # drained with its broken pool below
                    continue
                key, args, solo = flying.pop(future)
                error = future.exception()
                if error is None:
                    yield key, future.result(), None
                    continue
                if not self._lost(error):
                    yield key, None, f"{type(error).__name__}: {error}"
                    continue
                victims = [(key, args)]
                if not solo and not self.exact:  # the whole pool broke: who was in it?
                    others = [f for f, (_, _, s) in flying.items() if not s]
                    wait(others)
                    for other in others:
                        okey, oargs, _ = flying.pop(other)
                        if other.exception() is None:
                            yield okey, other.result(), None
                        else:
                            victims.append((okey, oargs))
                self._broken(solo)
                for vkey, vargs in victims:  # every trial of a broken pool is charged once
                    deaths[vkey] += 1
                    if deaths[vkey] > retries:
                        yield (
                            vkey,
                            None,
                            f"the worker died {deaths[vkey]} times ({_describe(error)})",
                        )
                    elif self.exact:
                        queue.appendleft((vkey, vargs))
                    else:  # alone from now on: a second death has one suspect
                        solo_queue.append((vkey, vargs))


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


class LocalExecutor(Executor):
    """`workers` spawned processes (module docstring: local)."""

    name = "local"

    def __init__(self, workers: int | None = None, preload: tuple[str, ...] = ()) -> None:
        self.workers = workers or physical_cores()
        self.preload = preload
        if self.workers < 1:
            raise DlccError(f"--workers {self.workers}: need at least 1")
        self._pools: dict[bool, ProcessPoolExecutor | None] = {False: None, True: None}
        self._dir = tempfile.mkdtemp(prefix="dlcc-executor-")
        self._shared = 0
        # Spawned workers inherit the environment: single-threaded BLAS (module docstring).
        self._saved_env = {k: os.environ.get(k) for k in _THREAD_VARIABLES}
        os.environ.update({k: "1" for k in _THREAD_VARIABLES})

    def share(self, value: Any) -> Shared:
        self._shared += 1
        path = os.path.join(self._dir, f"shared{self._shared}.pickle")
        with open(path, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        return Shared(path=path)

    def _pool(self, solo: bool) -> ProcessPoolExecutor:
        if self._pools[solo] is None:
            import multiprocessing

            if "forkserver" in multiprocessing.get_all_start_methods():
                context = multiprocessing.get_context("forkserver")
                context.set_forkserver_preload(list(self.preload))  # before it first starts
            else:
                context = multiprocessing.get_context("spawn")
            size = 1 if solo else self.workers
            self._pools[solo] = ProcessPoolExecutor(size, mp_context=context)
        return self._pools[solo]

    def _submit(self, fn: Callable, args: tuple, solo: bool) -> Future:
        return self._pool(solo).submit(_call, fn, args)

    def _lost(self, error: BaseException) -> bool:
        return isinstance(error, BrokenProcessPool)

    def _broken(self, solo: bool) -> None:
        pool, self._pools[solo] = self._pools[solo], None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self, abort: bool = False) -> None:
        for solo, pool in self._pools.items():
            if pool is not None and abort:  # concurrent.futures has no public way to stop them
                for process in dict(getattr(pool, "_processes", None) or {}).values():
                    process.terminate()
            if pool is not None:
                pool.shutdown(wait=not abort, cancel_futures=True)
            self._pools[solo] = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(self._dir, ignore_errors=True)


class RayExecutor(Executor):
    """Ray tasks on the cluster at `address` (module docstring: Ray)."""

    name = "ray"
    exact = True

    def __init__(self, address: str, workers: int | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise DlccError(
                "--ray needs Ray, an optional extra: pip install 'dlcc[ray]' (or pip install ray)"
            ) from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            _check_reachable(address)
            try:
                ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            except Exception as e:  # ray raises ConnectionError, RuntimeError, ValueError...
                raise DlccError(f"--ray {address}: cannot connect ({_describe(e)})") from None
            self._started = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = max(1, workers or cpus)
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_call)

    def share(self, value: Any) -> Shared:
        return Shared(ref=self._ray.put(value))

    def _submit(self, fn: Callable, args: tuple, solo: bool) -> Future:
        return self._remote.remote(fn, args).future()

    def _lost(self, error: BaseException) -> bool:
        exceptions = self._ray.exceptions
        died = (exceptions.WorkerCrashedError, exceptions.NodeDiedError, exceptions.ObjectLostError)
        killed = getattr(exceptions, "OutOfMemoryError", exceptions.WorkerCrashedError)
        return isinstance(error, died + (killed,))

    def close(self, abort: bool = False) -> None:
        if self._started:  # a shutdown also stops the tasks still running
            self._ray.shutdown()
            self._started = False


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nothing listens at (ray.init would retry for minutes)."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise DlccError(f"--ray {address!r}: expected auto, local, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise DlccError(f"--ray {address}: cannot reach the cluster ({e.strerror or e})") from None


def make_executor(
    workers: int | None = None, ray: str | None = None, preload: tuple[str, ...] = ()
) -> Executor:
    """Ray at the address `ray` when given, else `workers` local processes (default: the
    physical cores) forked from a server that has imported the `preload` modules."""
    if workers is not None and workers < 1:
        raise DlccError(f"--workers {workers}: need at least 1")
    if ray:
        return RayExecutor(ray, workers)
    return LocalExecutor(workers, preload)
